/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kdbus-echo-bench - round-trip latency of echo calls over one kdbus bus.
 *
 *   kdbus-echo-bench (-b BUS | -c CONTROL) [-s SIZE[,SIZE...]] [-n PER_REP]
 *                    [-r REPS] [-w WARMUP] [-p POOL_SIZE] [-N] [-B]
 *
 * A forked service connection echoes every request's payload back; the
 * client times synchronous calls (SEND with EXPECT_REPLY|SYNC_REPLY, reply
 * read from the pool and freed).  One sample covers building the message,
 * the SEND, the blocked wait and reading the reply.  With -c, a private bus
 * is created on that control file for the run.  -N addresses the service
 * by its well-known name instead of its id.
 *
 * Prints one JSON line per payload size, in the format of the bench
 * harness: {"bench":"echo-rtt","impl":"C kdbusfs",...,"median_us":...,
 * "p99_us":...,"rep_median_us":[...],"rep_rate":[...]} (nearest-rank
 * percentiles over all samples of all reps; rate = median rep rate).
 */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "kdbus-client.h"

#define BENCH_NAME "org.kdbusfs.EchoBench"

static size_t pool_size = 64u * 1024 * 1024;
static int block_recv;

static void die(const char *what, int r)
{
	fprintf(stderr, "kdbus-echo-bench: %s: %s\n", what, strerror(-r));
	exit(1);
}

/* ---------------------------------------------------------------- service */

static int service(const char *bus, int ready_fd, int by_name)
{
	struct kc_conn c;
	struct kdbus_msg *msg;
	uint8_t *buf = NULL;
	size_t cap = 0;
	int r;

	prctl(PR_SET_PDEATHSIG, SIGTERM);
	r = kc_hello(&c, bus, pool_size, 0, 0);
	if (r < 0)
		die("service HELLO", r);
	if (by_name) {
		r = kc_acquire_name(&c, BENCH_NAME, 0, NULL);
		if (r < 0)
			die("service NAME_ACQUIRE", r);
	}
	if (write(ready_fd, &c.id, sizeof(c.id)) != sizeof(c.id))
		die("service ready pipe", -errno);
	close(ready_fd);

	for (;;) {
		const struct kdbus_item *it;
		uint64_t p, len = 0;

		/* with -B, block in RECV (a kdbusfs extension) instead of poll */
		r = kc_recv_flags(&c, &msg, NULL, block_recv ? KDBUSFS_RECV_BLOCK : 0);
		if (r == -EAGAIN) {
			r = kc_wait(&c, -1);
			if (r < 0)
				break;
			continue;
		}
		if (r < 0)
			break;
		if (msg->src_id == KDBUS_SRC_ID_KERNEL) {
			kc_free(&c, kc_offset(&c, msg));
			continue;
		}
		if (!(msg->flags & KDBUS_MSG_EXPECT_REPLY)) {	/* the stop message */
			kc_free(&c, kc_offset(&c, msg));
			break;
		}
		/* Copy the payload out of the pool (vecs of a SEND must not
		 * point into our own mapping), then echo it. */
		p = KC_ALIGN8(msg->size);
		KC_FOREACH_ITEM(it, msg->items, (const uint8_t *)msg + msg->size) {
			if (it->type != KDBUS_ITEM_PAYLOAD_OFF || it->vec.offset < p)
				continue;
			if (len + it->vec.size > cap) {
				cap = (len + it->vec.size) * 2;
				buf = realloc(buf, cap);
				if (!buf)
					die("service", -ENOMEM);
			}
			memcpy(buf + len, (const uint8_t *)msg + it->vec.offset, it->vec.size);
			len += it->vec.size;
		}
		struct iovec v = { .iov_base = buf, .iov_len = len };
		struct kc_send s = {
			.dst_id = msg->src_id,
			.cookie_reply = msg->cookie,
			.vecs = &v,
			.n_vecs = 1,
		};
		kc_free(&c, kc_offset(&c, msg));
		r = kc_send(&c, &s, NULL);
		if (r < 0)
			fprintf(stderr, "kdbus-echo-bench: service reply: %s\n", strerror(-r));
	}
	free(buf);
	kc_close(&c);
	return 0;
}

/* ------------------------------------------------------------------ stats */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile of sorted samples, in microseconds. */
static double percentile_us(const uint64_t *sorted, size_t n, double q)
{
	size_t rank;

	if (!n)
		return NAN;
	rank = (size_t)ceil(q * (double)n);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return (double)sorted[rank - 1] / 1e3;
}

static double median_of(double *v, size_t n)
{
	size_t i, j;

	for (i = 1; i < n; i++)
		for (j = i; j > 0 && v[j - 1] > v[j]; j--) {
			double t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	if (!n)
		return NAN;
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* ----------------------------------------------------------------- client */

struct target {
	uint64_t id;
	const char *name;
};

static uint64_t one_call(struct kc_conn *c, const struct target *t, const uint8_t *data,
			 size_t size)
{
	struct iovec v = { .iov_base = (void *)data, .iov_len = size };
	struct kdbus_msg *reply;
	const struct kdbus_item *it;
	uint64_t t0, t1, got = 0;
	int r;

	t0 = kc_now_ns();
	struct kc_send s = {
		.dst_id = t->id,
		.dst_name = t->name,
		.flags = KDBUS_MSG_EXPECT_REPLY,
		.timeout_ns = t0 + 10000000000ull,
		.vecs = &v,
		.n_vecs = 1,
		.sync = 1,
	};
	r = kc_send(c, &s, &reply);
	if (r < 0)
		die("SEND", r);
	KC_FOREACH_ITEM(it, reply->items, (const uint8_t *)reply + reply->size)
		if (it->type == KDBUS_ITEM_PAYLOAD_OFF && it->vec.offset >= KC_ALIGN8(reply->size))
			got += it->vec.size;
	r = kc_free(c, kc_offset(c, reply));
	t1 = kc_now_ns();
	if (r < 0)
		die("FREE", r);
	if (got != size) {
		fprintf(stderr, "kdbus-echo-bench: reply of %llu bytes to %zu\n",
			(unsigned long long)got, size);
		exit(1);
	}
	return t1 - t0;
}

static void run_size(struct kc_conn *c, const struct target *t, size_t size, size_t per_rep,
		     int reps, size_t warmup)
{
	uint8_t *data = malloc(size ? size : 1);
	uint64_t *samples = calloc(per_rep * (size_t)reps, sizeof(uint64_t));
	uint64_t *rep_sorted = calloc(per_rep, sizeof(uint64_t));
	double *rep_med = calloc((size_t)reps, sizeof(double));
	double *rep_rate = calloc((size_t)reps, sizeof(double));
	double *tmp = calloc((size_t)reps, sizeof(double));
	size_t i, n = per_rep * (size_t)reps;
	double mean = 0;
	int rep;

	if (!data || !samples || !rep_sorted || !rep_med || !rep_rate || !tmp)
		die("malloc", -ENOMEM);
	for (i = 0; i < size; i++)
		data[i] = (uint8_t)(i * 131 + 7);
	for (i = 0; i < warmup; i++)
		one_call(c, t, data, size);
	for (rep = 0; rep < reps; rep++) {
		uint64_t start = kc_now_ns();
		uint64_t *s = samples + (size_t)rep * per_rep;

		for (i = 0; i < per_rep; i++)
			s[i] = one_call(c, t, data, size);
		rep_rate[rep] = (double)per_rep / ((double)(kc_now_ns() - start) / 1e9);
		memcpy(rep_sorted, s, per_rep * sizeof(uint64_t));
		qsort(rep_sorted, per_rep, sizeof(uint64_t), cmp_u64);
		rep_med[rep] = percentile_us(rep_sorted, per_rep, 0.5);
	}
	qsort(samples, n, sizeof(uint64_t), cmp_u64);
	for (i = 0; i < n; i++)
		mean += (double)samples[i];
	mean = n ? mean / (double)n / 1e3 : NAN;
	memcpy(tmp, rep_rate, sizeof(double) * (size_t)reps);
	double rate = median_of(tmp, (size_t)reps);

	printf("{\"bench\":\"echo-rtt\",\"impl\":\"C kdbusfs\",\"bus\":\"kdbusfs\","
	       "\"payload\":%zu,\"per_rep\":%zu,\"reps\":%d,\"n\":%zu,"
	       "\"median_us\":%.3f,\"p99_us\":%.3f,\"mean_us\":%.3f,\"max_us\":%.3f,"
	       "\"rate\":%.1f,\"rate_unit\":\"calls/s\",\"mbps\":%.3f,\"rep_median_us\":[",
	       size, per_rep, reps, n, percentile_us(samples, n, 0.5),
	       percentile_us(samples, n, 0.99), mean, n ? (double)samples[n - 1] / 1e3 : NAN,
	       rate, rate * (double)size / 1e6);
	for (rep = 0; rep < reps; rep++)
		printf("%s%.3f", rep ? "," : "", rep_med[rep]);
	printf("],\"rep_rate\":[");
	for (rep = 0; rep < reps; rep++)
		printf("%s%.1f", rep ? "," : "", rep_rate[rep]);
	printf("]}\n");
	fflush(stdout);
	free(data);
	free(samples);
	free(rep_sorted);
	free(rep_med);
	free(rep_rate);
	free(tmp);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: kdbus-echo-bench (-b BUS | -c CONTROL) [-s SIZE[,SIZE...]] "
		   "[-n PER_REP] [-r REPS] [-w WARMUP] [-p POOL_SIZE] [-N] [-B]\n"
		   "  -B  the service blocks in RECV (KDBUSFS_RECV_BLOCK) instead of poll()\n");
}

int main(int argc, char **argv)
{
	const char *bus = NULL, *control = NULL, *sizes = "8";
	size_t per_rep = 2000, warmup = 100;
	int reps = 5, by_name = 0, bus_fd = -1, pipefd[2], opt, r, status;
	char bus_path[4096], busname[32], *list, *tok, *save;
	struct kc_conn c;
	struct target t = { 0 };
	uint64_t service_id;
	pid_t pid;

	while ((opt = getopt(argc, argv, "b:c:s:n:r:w:p:NBh")) != -1) {
		switch (opt) {
		case 'b': bus = optarg; break;
		case 'c': control = optarg; break;
		case 's': sizes = optarg; break;
		case 'n': per_rep = strtoull(optarg, NULL, 0); break;
		case 'r': reps = atoi(optarg); break;
		case 'w': warmup = strtoull(optarg, NULL, 0); break;
		case 'p': pool_size = strtoull(optarg, NULL, 0); break;
		case 'N': by_name = 1; break;
		case 'B': block_recv = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!!bus == !!control || per_rep < 1 || reps < 1 || pool_size % 4096) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (control) {
		snprintf(busname, sizeof(busname), "echo-bench-%d", (int)getpid());
		r = kc_make_bus(control, busname, 64, &bus_fd, bus_path, sizeof(bus_path));
		if (r < 0)
			die("BUS_MAKE", r);
		bus = bus_path;
	}

	if (pipe(pipefd) < 0)
		die("pipe", -errno);
	pid = fork();
	if (pid < 0)
		die("fork", -errno);
	if (pid == 0) {
		close(pipefd[0]);
		if (bus_fd >= 0)
			close(bus_fd);
		_exit(service(bus, pipefd[1], by_name));
	}
	close(pipefd[1]);
	if (read(pipefd[0], &service_id, sizeof(service_id)) != sizeof(service_id)) {
		fprintf(stderr, "kdbus-echo-bench: the service did not start\n");
		waitpid(pid, &status, 0);
		return 1;
	}
	close(pipefd[0]);

	r = kc_hello(&c, bus, pool_size, 0, 0);
	if (r < 0)
		die("client HELLO", r);
	t.id = service_id;
	t.name = by_name ? BENCH_NAME : NULL;

	list = strdup(sizes);
	for (tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
		run_size(&c, &t, strtoull(tok, NULL, 0), per_rep, reps, warmup);
	free(list);

	/* Stop the service: a message that expects no reply. */
	struct kc_send stop = { .dst_id = service_id };
	r = kc_send(&c, &stop, NULL);
	if (r < 0)
		kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
	kc_close(&c);
	if (bus_fd >= 0)
		close(bus_fd);
	return 0;
}
