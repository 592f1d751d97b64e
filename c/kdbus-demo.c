/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kdbus-demo - a minimal kdbus service and client in C.
 *
 *   kdbus-demo [-b BUS] serve NAME        own NAME and answer every message
 *                                         with "echo: <payload>", until a
 *                                         message whose payload is "quit"
 *   kdbus-demo [-b BUS] call NAME TEXT    send TEXT to NAME, wait for the
 *                                         reply (SYNC_REPLY) and print it
 *
 * BUS is a bus endpoint file (<mount>/<uid>-<name>/bus); without -b the
 * environment variable KDBUS_BUS is used.  Options: -t SECONDS (call
 * timeout, default 5), -q (call: print only the reply payload).
 */
#include <getopt.h>
#include <signal.h>

#include "kdbus-client.h"

#define REPLY_PREFIX "echo: "

static int quiet;

static int serve(const char *bus, const char *name)
{
	struct kc_conn c;
	struct kdbus_msg *msg;
	uint64_t rflags, dropped;
	int r, done = 0;

	r = kc_hello(&c, bus, KC_DEFAULT_POOL_SIZE, 0, 0);
	if (r < 0) {
		fprintf(stderr, "kdbus-demo: HELLO on %s: %s\n", bus, strerror(-r));
		return 1;
	}
	r = kc_acquire_name(&c, name, 0, &rflags);
	if (r < 0) {
		fprintf(stderr, "kdbus-demo: NAME_ACQUIRE %s: %s\n", name, strerror(-r));
		kc_close(&c);
		return 1;
	}
	printf("    [C service %llu] owns %s\n", (unsigned long long)c.id, name);
	fflush(stdout);

	while (!done) {
		uint8_t *data, *out;
		size_t len;

		r = kc_recv(&c, &msg, &dropped);
		if (r == -EAGAIN) {
			r = kc_wait(&c, -1);
			if (r < 0)
				break;
			continue;
		}
		if (r < 0)
			break;
		if (msg->src_id == KDBUS_SRC_ID_KERNEL) {	/* a notification */
			kc_free(&c, kc_offset(&c, msg));
			continue;
		}
		r = kc_payload(msg, kc_slice_limit(&c, msg), &data, &len);
		if (r < 0)
			break;
		done = len == 4 && memcmp(data, "quit", 4) == 0;
		printf("    [C service %llu] '%.*s' from %llu\n", (unsigned long long)c.id,
		       (int)len, (const char *)data, (unsigned long long)msg->src_id);
		fflush(stdout);
		if (msg->flags & KDBUS_MSG_EXPECT_REPLY) {
			/* The reply's data is copied out of the pool first: the
			 * server reads vecs during SEND, and they must not point
			 * into our own mapping. */
			struct iovec v;
			struct kc_send s = {
				.dst_id = msg->src_id,
				.cookie_reply = msg->cookie,
				.vecs = &v,
				.n_vecs = 1,
			};
			out = malloc(sizeof(REPLY_PREFIX) + len);
			if (!out) {
				free(data);
				r = -ENOMEM;
				break;
			}
			memcpy(out, REPLY_PREFIX, sizeof(REPLY_PREFIX) - 1);
			memcpy(out + sizeof(REPLY_PREFIX) - 1, data, len);
			v.iov_base = out;
			v.iov_len = sizeof(REPLY_PREFIX) - 1 + len;
			r = kc_send(&c, &s, NULL);
			if (r < 0)
				fprintf(stderr, "kdbus-demo: reply to %llu: %s\n",
					(unsigned long long)msg->src_id, strerror(-r));
			free(out);
		}
		free(data);
		kc_free(&c, kc_offset(&c, msg));
		r = 0;
	}
	if (r < 0 && r != -ECONNRESET)
		fprintf(stderr, "kdbus-demo: %s\n", strerror(-r));
	kc_close(&c);
	return r < 0 && r != -ECONNRESET ? 1 : 0;
}

static int call(const char *bus, const char *name, const char *text, double timeout)
{
	struct kc_conn c;
	struct kdbus_msg *reply;
	struct iovec v = { .iov_base = (void *)text, .iov_len = strlen(text) };
	uint8_t *data;
	size_t len;
	int r;

	r = kc_hello(&c, bus, KC_DEFAULT_POOL_SIZE, 0, 0);
	if (r < 0) {
		fprintf(stderr, "kdbus-demo: HELLO on %s: %s\n", bus, strerror(-r));
		return 1;
	}
	struct kc_send s = {
		.dst_name = name,
		.flags = KDBUS_MSG_EXPECT_REPLY,
		.timeout_ns = kc_now_ns() + (uint64_t)(timeout * 1e9),
		.vecs = &v,
		.n_vecs = 1,
		.sync = 1,
	};
	r = kc_send(&c, &s, &reply);
	if (r < 0) {
		if (!quiet)
			printf("C client %llu -> %s: '%s' ... failed\n", (unsigned long long)c.id,
			       name, text);
		fprintf(stderr, "kdbus-demo: SEND to %s: %s\n", name, strerror(-r));
		kc_close(&c);
		return 1;
	}
	r = kc_payload(reply, kc_slice_limit(&c, reply), &data, &len);
	if (r == 0) {
		if (quiet)
			printf("%.*s\n", (int)len, (const char *)data);
		else
			printf("C client %llu -> %s: '%s' ... got reply '%.*s' from %llu\n",
			       (unsigned long long)c.id, name, text, (int)len, (const char *)data,
			       (unsigned long long)reply->src_id);
		free(data);
	}
	kc_free(&c, kc_offset(&c, reply));
	kc_close(&c);
	return r < 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: kdbus-demo [-b BUS] [-t SECONDS] [-q] serve NAME\n"
		   "       kdbus-demo [-b BUS] [-t SECONDS] [-q] call NAME TEXT\n"
		   "BUS defaults to $KDBUS_BUS.\n");
}

int main(int argc, char **argv)
{
	const char *bus = getenv("KDBUS_BUS");
	double timeout = 5.0;
	int opt;

	while ((opt = getopt(argc, argv, "+b:t:qh")) != -1) {
		switch (opt) {
		case 'b':
			bus = optarg;
			break;
		case 't':
			timeout = atof(optarg);
			break;
		case 'q':
			quiet = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	argc -= optind;
	argv += optind;
	if (!bus || argc < 1) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(argv[0], "serve") == 0 && argc == 2)
		return serve(bus, argv[1]);
	if (strcmp(argv[0], "call") == 0 && argc == 3)
		return call(bus, argv[1], argv[2], timeout);
	usage(stderr);
	return 2;
}
