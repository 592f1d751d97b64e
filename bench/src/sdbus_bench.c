/* Copied from shared/bench/src/ (our company harness) for kdbusfs bench/.
 *
 * sdbus_bench - D-Bus baselines with sd-bus (libsystemd).
 *
 *   sdbus_bench service --address A --name N [--ready-file F]
 *       Owns well-known name N, serves on /org/bench/Echo, interface org.bench.Echo:
 *         Echo(ay) -> ay     returns its argument
 *         Sync()   -> t      number of org.bench.Signals.Blob signals received so far
 *         Quit()   -> ()     exit the service
 *       and subscribes (AddMatch) to signal org.bench.Signals.Blob on /org/bench/Signals.
 *
 *   sdbus_bench echo --address A --name N --size S --iters I --reps R [--warmup W] [--bus-label L]
 *       Synchronous Echo round trips; one sample per call (build message, call, read reply).
 *
 *   sdbus_bench signal --address A --name N --size S --iters I --reps R --window W [--bus-label L]
 *       Broadcasts I Blob(ay) signals per rep in windows of W; after each window it calls
 *       Sync() on the subscriber (ordered after the signals), so at most W signals are in
 *       flight and every signal is verified as delivered.  One sample per window, divided
 *       by W (= per-message cost); rate = I / rep time.
 *
 *   sdbus_bench quit --address A --name N
 *
 * Results: one JSON line on stdout per benchmark.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <systemd/sd-bus.h>
#include "benchcommon.h"

#define OBJ_PATH "/org/bench/Echo"
#define IFACE "org.bench.Echo"
#define SIG_PATH "/org/bench/Signals"
#define SIG_IFACE "org.bench.Signals"
#define CALL_TIMEOUT_US (30ULL * 1000000ULL)

static uint64_t g_sig_count;
static bool g_quit;

static void fail(const char *what, int r, const sd_bus_error *e) {
        fprintf(stderr, "sdbus_bench: %s: %s%s%s\n", what, strerror(r < 0 ? -r : r),
                e && e->message ? " / " : "", e && e->message ? e->message : "");
        exit(1);
}

static sd_bus *connect_bus(const char *address) {
        sd_bus *bus = NULL;
        int r = sd_bus_new(&bus);
        if (r >= 0) r = sd_bus_set_address(bus, address);
        if (r >= 0) r = sd_bus_set_bus_client(bus, 1);
        if (r >= 0) r = sd_bus_start(bus);
        if (r < 0)
                fail("connect", r, NULL);
        return bus;
}

/* ---------------- service ---------------- */

static int method_echo(sd_bus_message *m, void *ud, sd_bus_error *err) {
        sd_bus_message *reply = NULL;
        const void *p;
        size_t n;
        int r;
        (void)ud; (void)err;
        r = sd_bus_message_read_array(m, 'y', &p, &n);
        if (r < 0)
                return r;
        r = sd_bus_message_new_method_return(m, &reply);
        if (r >= 0) r = sd_bus_message_append_array(reply, 'y', p, n);
        if (r >= 0) r = sd_bus_send(NULL, reply, NULL);
        sd_bus_message_unref(reply);
        return r < 0 ? r : 1;
}

static int method_sync(sd_bus_message *m, void *ud, sd_bus_error *err) {
        (void)ud; (void)err;
        return sd_bus_reply_method_return(m, "t", g_sig_count);
}

static int method_quit(sd_bus_message *m, void *ud, sd_bus_error *err) {
        (void)ud; (void)err;
        g_quit = true;
        return sd_bus_reply_method_return(m, "");
}

static int on_blob(sd_bus_message *m, void *ud, sd_bus_error *err) {
        const void *p;
        size_t n;
        (void)ud; (void)err;
        if (sd_bus_message_read_array(m, 'y', &p, &n) >= 0)
                g_sig_count++;
        return 0;
}

static const sd_bus_vtable echo_vtable[] = {
        SD_BUS_VTABLE_START(0),
        SD_BUS_METHOD("Echo", "ay", "ay", method_echo, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Sync", "", "t", method_sync, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_METHOD("Quit", "", "", method_quit, SD_BUS_VTABLE_UNPRIVILEGED),
        SD_BUS_VTABLE_END
};

static int run_service(const char *address, const char *name, const char *ready_file) {
        sd_bus *bus = connect_bus(address);
        int r;

        r = sd_bus_add_object_vtable(bus, NULL, OBJ_PATH, IFACE, echo_vtable, NULL);
        if (r < 0)
                fail("add vtable", r, NULL);
        r = sd_bus_match_signal(bus, NULL, NULL, SIG_PATH, SIG_IFACE, "Blob", on_blob, NULL);
        if (r < 0)
                fail("AddMatch", r, NULL);
        r = sd_bus_request_name(bus, name, 0);
        if (r < 0)
                fail("RequestName", r, NULL);
        if (ready_file) {
                FILE *f = fopen(ready_file, "w");
                if (f) {
                        fprintf(f, "%d\n", (int)getpid());
                        fclose(f);
                }
        }
        while (!g_quit) {
                r = sd_bus_process(bus, NULL);
                if (r < 0)
                        fail("process", r, NULL);
                if (r > 0)
                        continue;
                r = sd_bus_wait(bus, (uint64_t)-1);
                if (r < 0 && r != -EINTR)
                        fail("wait", r, NULL);
        }
        sd_bus_flush_close_unref(bus);
        return 0;
}

/* ---------------- clients ---------------- */

static void echo_once(sd_bus *bus, const char *name, const void *buf, size_t size) {
        sd_bus_error err = SD_BUS_ERROR_NULL;
        sd_bus_message *m = NULL, *reply = NULL;
        const void *p;
        size_t n;
        int r;

        r = sd_bus_message_new_method_call(bus, &m, name, OBJ_PATH, IFACE, "Echo");
        if (r >= 0) r = sd_bus_message_append_array(m, 'y', buf, size);
        if (r < 0)
                fail("build Echo", r, NULL);
        r = sd_bus_call(bus, m, CALL_TIMEOUT_US, &err, &reply);
        if (r < 0)
                fail("Echo", r, &err);
        r = sd_bus_message_read_array(reply, 'y', &p, &n);
        if (r < 0 || n != size)
                fail("Echo reply", r < 0 ? r : EBADMSG, NULL);
        sd_bus_message_unref(reply);
        sd_bus_message_unref(m);
}

static uint64_t call_sync(sd_bus *bus, const char *name) {
        sd_bus_error err = SD_BUS_ERROR_NULL;
        sd_bus_message *reply = NULL;
        uint64_t count = 0;
        int r = sd_bus_call_method(bus, name, OBJ_PATH, IFACE, "Sync", &err, &reply, "");
        if (r < 0)
                fail("Sync", r, &err);
        r = sd_bus_message_read(reply, "t", &count);
        if (r < 0)
                fail("Sync reply", r, NULL);
        sd_bus_message_unref(reply);
        return count;
}

static void send_blob(sd_bus *bus, const void *buf, size_t size) {
        sd_bus_message *m = NULL;
        int r = sd_bus_message_new_signal(bus, &m, SIG_PATH, SIG_IFACE, "Blob");
        if (r >= 0) r = sd_bus_message_append_array(m, 'y', buf, size);
        if (r >= 0) r = sd_bus_send(bus, m, NULL);
        if (r < 0)
                fail("send signal", r, NULL);
        sd_bus_message_unref(m);
}

static int run_echo(const char *address, const char *name, size_t size, size_t iters,
                    int reps, size_t warmup, const char *bus_label) {
        sd_bus *bus = connect_bus(address);
        uint64_t *samples = malloc(sizeof(uint64_t) * iters * (size_t)reps);
        double *rep_med = calloc((size_t)reps, sizeof(double));
        double *rep_rate = calloc((size_t)reps, sizeof(double));
        unsigned char *buf = malloc(size ? size : 1);
        size_t i;
        int rep;

        for (i = 0; i < size; i++)
                buf[i] = (unsigned char)i;
        for (i = 0; i < warmup; i++)
                echo_once(bus, name, buf, size);
        for (rep = 0; rep < reps; rep++) {
                uint64_t *s = samples + (size_t)rep * iters;
                uint64_t t_start = now_ns(), t0, t1 = t_start;
                for (i = 0; i < iters; i++) {
                        t0 = now_ns();
                        echo_once(bus, name, buf, size);
                        t1 = now_ns();
                        s[i] = t1 - t0;
                }
                rep_rate[rep] = (double)iters / ((double)(t1 - t_start) / 1e9);
                rep_med[rep] = rep_median(s, iters);
        }
        emit_result("echo-rtt", "C sd-bus", bus_label, size, iters, reps, samples,
                    iters * (size_t)reps, rep_med, rep_rate, "calls/s", NULL);
        sd_bus_flush_close_unref(bus);
        return 0;
}

static int run_signal(const char *address, const char *name, size_t size, size_t iters,
                      int reps, size_t window, const char *bus_label) {
        sd_bus *bus = connect_bus(address);
        size_t windows = (iters + window - 1) / window;
        uint64_t *samples = malloc(sizeof(uint64_t) * windows * (size_t)reps);
        double *rep_med = calloc((size_t)reps, sizeof(double));
        double *rep_rate = calloc((size_t)reps, sizeof(double));
        unsigned char *buf = malloc(size ? size : 1);
        uint64_t before, after;
        char extra[128];
        size_t i, w, sent_total = 0, lost = 0;
        int rep;

        iters = windows * window;
        for (i = 0; i < size; i++)
                buf[i] = (unsigned char)i;
        /* warm-up: one window */
        before = call_sync(bus, name);
        for (i = 0; i < window; i++)
                send_blob(bus, buf, size);
        after = call_sync(bus, name);
        if (after - before != window)
                fail("warm-up signals lost", EPROTO, NULL);

        for (rep = 0; rep < reps; rep++) {
                uint64_t *s = samples + (size_t)rep * windows;
                uint64_t t_start, t0, t1 = 0;
                before = call_sync(bus, name);
                t_start = now_ns();
                for (w = 0; w < windows; w++) {
                        t0 = now_ns();
                        for (i = 0; i < window; i++)
                                send_blob(bus, buf, size);
                        (void)call_sync(bus, name);
                        t1 = now_ns();
                        s[w] = (t1 - t0) / window;
                }
                after = call_sync(bus, name);
                sent_total += iters;
                lost += iters - (size_t)(after - before);
                rep_rate[rep] = (double)iters / ((double)(t1 - t_start) / 1e9);
                rep_med[rep] = rep_median(s, windows);
        }
        snprintf(extra, sizeof(extra), "\"window\":%zu,\"sent\":%zu,\"lost\":%zu", window, sent_total, lost);
        emit_result("signal-tput", "C sd-bus", bus_label, size, iters, reps, samples,
                    windows * (size_t)reps, rep_med, rep_rate, "msgs/s", extra);
        sd_bus_flush_close_unref(bus);
        return lost ? 1 : 0;
}

static int run_quit(const char *address, const char *name) {
        sd_bus *bus = connect_bus(address);
        sd_bus_error err = SD_BUS_ERROR_NULL;
        int r = sd_bus_call_method(bus, name, OBJ_PATH, IFACE, "Quit", &err, NULL, "");
        sd_bus_flush_close_unref(bus);
        return r < 0 ? 1 : 0;
}

int main(int argc, char **argv) {
        static const struct option opts[] = {
                { "address", required_argument, NULL, 'a' },
                { "name", required_argument, NULL, 'n' },
                { "size", required_argument, NULL, 's' },
                { "iters", required_argument, NULL, 'i' },
                { "reps", required_argument, NULL, 'r' },
                { "warmup", required_argument, NULL, 'w' },
                { "window", required_argument, NULL, 'W' },
                { "bus-label", required_argument, NULL, 'b' },
                { "ready-file", required_argument, NULL, 'f' },
                {}
        };
        const char *mode, *address = NULL, *name = "org.bench.CEcho", *bus_label = "?", *ready = NULL;
        size_t size = 8, iters = 1000, warmup = 100, window = 64;
        int reps = 5, c;

        if (argc < 2) {
                fprintf(stderr, "usage: sdbus_bench service|echo|signal|quit --address A [...]\n");
                return 2;
        }
        mode = argv[1];
        optind = 2;
        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                switch (c) {
                case 'a': address = optarg; break;
                case 'n': name = optarg; break;
                case 's': size = strtoull(optarg, NULL, 0); break;
                case 'i': iters = strtoull(optarg, NULL, 0); break;
                case 'r': reps = atoi(optarg); break;
                case 'w': warmup = strtoull(optarg, NULL, 0); break;
                case 'W': window = strtoull(optarg, NULL, 0); break;
                case 'b': bus_label = optarg; break;
                case 'f': ready = optarg; break;
                default: return 2;
                }
        }
        if (!address || reps < 1 || iters < 1 || window < 1) {
                fprintf(stderr, "sdbus_bench: bad arguments\n");
                return 2;
        }
        if (!strcmp(mode, "service"))
                return run_service(address, name, ready);
        if (!strcmp(mode, "echo"))
                return run_echo(address, name, size, iters, reps, warmup, bus_label);
        if (!strcmp(mode, "signal"))
                return run_signal(address, name, size, iters, reps, window, bus_label);
        if (!strcmp(mode, "quit"))
                return run_quit(address, name);
        fprintf(stderr, "sdbus_bench: unknown mode %s\n", mode);
        return 2;
}
