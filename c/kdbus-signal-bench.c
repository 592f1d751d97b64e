/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kdbus-signal-bench - one-way broadcast throughput to one subscriber.
 *
 *   kdbus-signal-bench (-b BUS | -c CONTROL) [-s SIZE] [-n PER_REP] [-r REPS]
 *                      [-W WINDOW] [-p POOL_SIZE] [-B]
 *
 * The same method as the D-Bus baselines (bench/src/sdbus_bench.c signal):
 * a forked subscriber adds a bloom-mask match for the benchmark's signal;
 * the emitter broadcasts PER_REP signals per repetition in windows of
 * WINDOW, and after each window it calls the subscriber synchronously
 * ("Sync": a request with an empty payload, answered with the number of
 * signals received so far as a little-endian u64).  The bus queues that
 * call behind the window's signals, so at most WINDOW signals are in
 * flight, nothing has to be dropped, and every signal is counted: lost =
 * sent - (count after - count before) must be 0.  One sample is one
 * window's time divided by WINDOW (per-message cost, Sync included); rate
 * = messages / repetition time.  kdbus caps the messages one user may have
 * queued on a receiver at 256, the Sync call included, so WINDOW <= 255.
 *
 * -B makes the subscriber block in RECV (KDBUSFS_RECV_BLOCK, a kdbusfs
 * extension) instead of poll().  With -c, a private bus is created on that
 * control file for the run.
 *
 * Prints one JSON line in the format of the bench harness:
 * {"bench":"signal-tput","impl":"C kdbusfs",...,"window":W,"sent":N,"lost":0}
 */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>

#include "kdbus-client.h"

#define BLOOM_SIZE	64
#define MATCH_COOKIE	0x5b10b

static size_t pool_size = 64u * 1024 * 1024;
static int block_recv;
/*
 * The signal's bloom filter, which is also the subscriber's mask: a fixed
 * pattern standing for "interface:org.bench.Signals member:Blob" (the bus
 * only tests mask bits against filter bits, whatever hashed them).
 */
static uint8_t bloom[BLOOM_SIZE];

static void die(const char *what, int r)
{
	fprintf(stderr, "kdbus-signal-bench: %s: %s\n", what, strerror(-r));
	exit(1);
}

static void make_bloom(uint64_t bloom_size)
{
	static const unsigned bits[] = { 3, 77, 130, 201, 256, 311, 402, 509 };
	size_t i;

	memset(bloom, 0, sizeof(bloom));
	for (i = 0; i < sizeof(bits) / sizeof(bits[0]); i++)
		if (bits[i] / 8 < bloom_size)
			bloom[bits[i] / 8] |= (uint8_t)(1u << (bits[i] % 8));
}

/* ------------------------------------------------------------- subscriber */

static int subscriber(const char *bus, int ready_fd)
{
	struct kc_conn c;
	struct kdbus_msg *msg;
	uint64_t count = 0, dropped_total = 0, dropped;
	int r;

	prctl(PR_SET_PDEATHSIG, SIGTERM);
	r = kc_hello(&c, bus, pool_size, 0, 0);
	if (r < 0)
		die("subscriber HELLO", r);
	if (c.bloom_size > BLOOM_SIZE)
		die("bus bloom size", -EINVAL);
	make_bloom(c.bloom_size);
	r = kc_add_bloom_match(&c, MATCH_COOKIE, bloom, c.bloom_size);
	if (r < 0)
		die("subscriber MATCH_ADD", r);
	if (write(ready_fd, &c.id, sizeof(c.id)) != sizeof(c.id))
		die("subscriber ready pipe", -errno);
	close(ready_fd);

	for (;;) {
		r = kc_recv_flags(&c, &msg, &dropped, block_recv ? KDBUSFS_RECV_BLOCK : 0);
		dropped_total += dropped;
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
		if (msg->flags & KDBUS_MSG_SIGNAL) {
			count++;
			kc_free(&c, kc_offset(&c, msg));
			continue;
		}
		if (!(msg->flags & KDBUS_MSG_EXPECT_REPLY)) {	/* the stop message */
			kc_free(&c, kc_offset(&c, msg));
			break;
		}
		/* Sync: answer with the count */
		struct iovec v = { .iov_base = &count, .iov_len = sizeof(count) };
		struct kc_send s = {
			.dst_id = msg->src_id,
			.cookie_reply = msg->cookie,
			.vecs = &v,
			.n_vecs = 1,
		};
		kc_free(&c, kc_offset(&c, msg));
		r = kc_send(&c, &s, NULL);
		if (r < 0)
			fprintf(stderr, "kdbus-signal-bench: subscriber reply: %s\n", strerror(-r));
	}
	if (dropped_total)
		fprintf(stderr, "kdbus-signal-bench: subscriber saw %llu dropped messages\n",
			(unsigned long long)dropped_total);
	kc_close(&c);
	return 0;
}

/* ------------------------------------------------------------------ stats */

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

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

/* ----------------------------------------------------------------- emitter */

static uint64_t sync_call(struct kc_conn *c, uint64_t sub_id)
{
	struct kdbus_msg *reply;
	const struct kdbus_item *it;
	uint64_t count = 0;
	size_t got = 0;
	int r;
	struct kc_send s = {
		.dst_id = sub_id,
		.flags = KDBUS_MSG_EXPECT_REPLY,
		.timeout_ns = kc_now_ns() + 30000000000ull,
		.sync = 1,
	};

	r = kc_send(c, &s, &reply);
	if (r < 0)
		die("Sync", r);
	KC_FOREACH_ITEM(it, reply->items, (const uint8_t *)reply + reply->size)
		if (it->type == KDBUS_ITEM_PAYLOAD_OFF && it->vec.offset >= KC_ALIGN8(reply->size) &&
		    it->vec.size == sizeof(count) && !got) {
			memcpy(&count, (const uint8_t *)reply + it->vec.offset, sizeof(count));
			got = 1;
		}
	r = kc_free(c, kc_offset(c, reply));
	if (r < 0)
		die("FREE", r);
	if (!got)
		die("Sync reply without a count", -EBADMSG);
	return count;
}

static void emit(struct kc_conn *c, const uint8_t *data, size_t size)
{
	struct iovec v = { .iov_base = (void *)data, .iov_len = size };
	struct kc_send s = {
		.dst_id = KDBUS_DST_ID_BROADCAST,
		.flags = KDBUS_MSG_SIGNAL,
		.vecs = &v,
		.n_vecs = 1,
		.bloom = bloom,
		.bloom_size = c->bloom_size,
	};
	int r = kc_send(c, &s, NULL);

	if (r < 0)
		die("SEND signal", r);
}

static int run(struct kc_conn *c, uint64_t sub_id, size_t size, size_t per_rep, int reps,
	       size_t window)
{
	size_t windows = (per_rep + window - 1) / window, i, w, n, sent = 0, lost = 0;
	uint8_t *data = malloc(size ? size : 1);
	uint64_t *samples, *rep_sorted, before, after;
	double *rep_med, *rep_rate, *tmp, mean = 0, rate;
	int rep;

	per_rep = windows * window;
	n = windows * (size_t)reps;
	samples = calloc(n, sizeof(uint64_t));
	rep_sorted = calloc(windows, sizeof(uint64_t));
	rep_med = calloc((size_t)reps, sizeof(double));
	rep_rate = calloc((size_t)reps, sizeof(double));
	tmp = calloc((size_t)reps, sizeof(double));
	if (!data || !samples || !rep_sorted || !rep_med || !rep_rate || !tmp)
		die("malloc", -ENOMEM);
	for (i = 0; i < size; i++)
		data[i] = (uint8_t)(i * 131 + 7);

	/* warm-up: one window, which must arrive whole */
	before = sync_call(c, sub_id);
	for (i = 0; i < window; i++)
		emit(c, data, size);
	after = sync_call(c, sub_id);
	if (after - before != window) {
		fprintf(stderr, "kdbus-signal-bench: warm-up lost %llu of %zu signals\n",
			(unsigned long long)(window - (after - before)), window);
		return 1;
	}

	for (rep = 0; rep < reps; rep++) {
		uint64_t *s = samples + (size_t)rep * windows, start, t0, t1 = 0;

		before = sync_call(c, sub_id);
		start = kc_now_ns();
		for (w = 0; w < windows; w++) {
			t0 = kc_now_ns();
			for (i = 0; i < window; i++)
				emit(c, data, size);
			(void)sync_call(c, sub_id);
			t1 = kc_now_ns();
			s[w] = (t1 - t0) / window;
		}
		after = sync_call(c, sub_id);
		sent += per_rep;
		lost += per_rep - (size_t)(after - before);
		rep_rate[rep] = (double)per_rep / ((double)(t1 - start) / 1e9);
		memcpy(rep_sorted, s, windows * sizeof(uint64_t));
		qsort(rep_sorted, windows, sizeof(uint64_t), cmp_u64);
		rep_med[rep] = percentile_us(rep_sorted, windows, 0.5);
	}
	qsort(samples, n, sizeof(uint64_t), cmp_u64);
	for (i = 0; i < n; i++)
		mean += (double)samples[i];
	mean = n ? mean / (double)n / 1e3 : NAN;
	memcpy(tmp, rep_rate, sizeof(double) * (size_t)reps);
	rate = median_of(tmp, (size_t)reps);

	printf("{\"bench\":\"signal-tput\",\"impl\":\"C kdbusfs\",\"bus\":\"kdbusfs\","
	       "\"payload\":%zu,\"per_rep\":%zu,\"reps\":%d,\"n\":%zu,"
	       "\"median_us\":%.3f,\"p99_us\":%.3f,\"mean_us\":%.3f,\"max_us\":%.3f,"
	       "\"rate\":%.1f,\"rate_unit\":\"msgs/s\",\"mbps\":%.3f,\"rep_median_us\":[",
	       size, per_rep, reps, n, percentile_us(samples, n, 0.5),
	       percentile_us(samples, n, 0.99), mean, n ? (double)samples[n - 1] / 1e3 : NAN,
	       rate, rate * (double)size / 1e6);
	for (rep = 0; rep < reps; rep++)
		printf("%s%.3f", rep ? "," : "", rep_med[rep]);
	printf("],\"rep_rate\":[");
	for (rep = 0; rep < reps; rep++)
		printf("%s%.1f", rep ? "," : "", rep_rate[rep]);
	printf("],\"window\":%zu,\"sent\":%zu,\"lost\":%zu}\n", window, sent, lost);
	fflush(stdout);
	free(data);
	free(samples);
	free(rep_sorted);
	free(rep_med);
	free(rep_rate);
	free(tmp);
	return lost ? 1 : 0;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: kdbus-signal-bench (-b BUS | -c CONTROL) [-s SIZE] [-n PER_REP] "
		   "[-r REPS] [-W WINDOW] [-p POOL_SIZE] [-B]\n"
		   "  -B  the subscriber blocks in RECV (KDBUSFS_RECV_BLOCK) instead of poll()\n");
}

int main(int argc, char **argv)
{
	const char *bus = NULL, *control = NULL;
	size_t size = 64, per_rep = 4096, window = 128;
	int reps = 5, bus_fd = -1, pipefd[2], opt, r, rc, status;
	char bus_path[4096], busname[32];
	struct kc_conn c;
	uint64_t sub_id;
	pid_t pid;

	while ((opt = getopt(argc, argv, "b:c:s:n:r:W:p:Bh")) != -1) {
		switch (opt) {
		case 'b': bus = optarg; break;
		case 'c': control = optarg; break;
		case 's': size = strtoull(optarg, NULL, 0); break;
		case 'n': per_rep = strtoull(optarg, NULL, 0); break;
		case 'r': reps = atoi(optarg); break;
		case 'W': window = strtoull(optarg, NULL, 0); break;
		case 'p': pool_size = strtoull(optarg, NULL, 0); break;
		case 'B': block_recv = 1; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (!!bus == !!control || per_rep < 1 || reps < 1 || window < 1 || window > 255 ||
	    pool_size % 4096) {
		usage(stderr);
		return 2;
	}
	signal(SIGPIPE, SIG_IGN);
	if (control) {
		snprintf(busname, sizeof(busname), "signal-bench-%d", (int)getpid());
		r = kc_make_bus(control, busname, BLOOM_SIZE, &bus_fd, bus_path, sizeof(bus_path));
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
		_exit(subscriber(bus, pipefd[1]));
	}
	close(pipefd[1]);
	if (read(pipefd[0], &sub_id, sizeof(sub_id)) != sizeof(sub_id)) {
		fprintf(stderr, "kdbus-signal-bench: the subscriber did not start\n");
		waitpid(pid, &status, 0);
		return 1;
	}
	close(pipefd[0]);

	/* the emitter has no match, so it receives no broadcasts */
	r = kc_hello(&c, bus, pool_size, 0, 0);
	if (r < 0) {
		kill(pid, SIGTERM);
		die("emitter HELLO", r);
	}
	if (c.bloom_size > BLOOM_SIZE || c.bloom_size % 8)
		die("bus bloom size", -EINVAL);
	make_bloom(c.bloom_size);

	rc = run(&c, sub_id, size, per_rep, reps, window);

	/* Stop the subscriber: a message that expects no reply. */
	struct kc_send stop = { .dst_id = sub_id };
	r = kc_send(&c, &stop, NULL);
	if (r < 0)
		kill(pid, SIGTERM);
	waitpid(pid, &status, 0);
	kc_close(&c);
	if (bus_fd >= 0)
		close(bus_fd);
	return rc;
}
