/* Copied from shared/bench/src/ (our company harness) for kdbusfs bench/.
 *
 * brokerctl - minimal stand-in for dbus-broker-launch.
 *
 * dbus-broker-launch cannot run on this machine: launcher_new() connects to
 * /run/systemd/journal/socket for logging and exits with ENOENT when journald
 * is absent (PID 1 here is not systemd).  The broker itself does not need
 * systemd: it is driven over a private D-Bus connection ("controller", passed
 * with --controller FD).  This program does what the launcher does at start-up:
 *
 *   1. bind + listen on a unix socket (the bus address clients use),
 *   2. fork/exec `dbus-broker --controller FD --machine-id ID ...`,
 *   3. call org.bus1.DBus.Broker.AddListener(o, h, v) on the controller
 *      connection, passing the listening socket and an allow-all policy that
 *      is equivalent to what dbus-broker-launch builds from session.conf
 *      (allow own="*", send_destination="*", receive), with the session.conf
 *      limits translated the same way the launcher does,
 *   4. serve the controller connection until SIGTERM/SIGINT, then SIGTERM the
 *      broker child (by pid) and reap it.
 *
 * No service activation is implemented (not needed for the benchmarks).
 *
 * Usage: brokerctl --listen PATH [--broker /usr/bin/dbus-broker]
 *                  [--broker-pidfile FILE] [--ready-file FILE]
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <systemd/sd-bus.h>
#include <systemd/sd-id128.h>

/* Policy wire format, as exported by dbus-broker-launch (src/launch/policy.c, v33). */
#define POLICY_T_BATCH "bt" "a(btbs)" "a(btssssuutt)" "a(btssssuutt)"
#define POLICY_T "a(u(" POLICY_T_BATCH "))" "a(buu(" POLICY_T_BATCH "))" "a(ss)" "b" "s"

/* session.conf: max_connections_per_user=100000, max_outgoing_bytes=1e9,
 * max_outgoing_unix_fds=250000000, max_match_rules_per_connection=50000;
 * the launcher multiplies them into per-user limits. */
#define MAX_BYTES   "100000000000000"
#define MAX_FDS     "25000000000000"
#define MAX_MATCHES "5000000000"

static volatile sig_atomic_t g_stop;
static void on_signal(int sig) { (void)sig; g_stop = 1; }

static void die(const char *what, int err) {
        fprintf(stderr, "brokerctl: %s: %s\n", what, strerror(err < 0 ? -err : err));
        exit(1);
}

static void write_file(const char *path, const char *text) {
        FILE *f;
        if (!path)
                return;
        f = fopen(path, "w");
        if (!f)
                die(path, errno);
        fputs(text, f);
        fclose(f);
}

static int append_allow_all_policy(sd_bus_message *m) {
        int r;
        r = sd_bus_message_open_container(m, 'v', "(" POLICY_T ")");
        if (r >= 0) r = sd_bus_message_open_container(m, 'r', POLICY_T);
        /* per-uid batches: one default batch (uid -1) */
        if (r >= 0) r = sd_bus_message_open_container(m, 'a', "(u(" POLICY_T_BATCH "))");
        if (r >= 0) r = sd_bus_message_open_container(m, 'r', "u(" POLICY_T_BATCH ")");
        if (r >= 0) r = sd_bus_message_append(m, "u", (uint32_t)-1);
        if (r >= 0) r = sd_bus_message_open_container(m, 'r', POLICY_T_BATCH);
        /* connect: allow, priority 1 */
        if (r >= 0) r = sd_bus_message_append(m, "bt", 1, (uint64_t)1);
        /* own: allow prefix "" (== own="*") */
        if (r >= 0) r = sd_bus_message_append(m, "a(btbs)", 1, 1, (uint64_t)1, 1, "");
        /* send: allow everything (empty strings are wildcards) */
        if (r >= 0) r = sd_bus_message_append(m, "a(btssssuutt)", 1,
                                              1, (uint64_t)1, "", "", "", "",
                                              (uint32_t)0, (uint32_t)0, (uint64_t)0, UINT64_MAX);
        /* receive: allow everything */
        if (r >= 0) r = sd_bus_message_append(m, "a(btssssuutt)", 1,
                                              1, (uint64_t)1, "", "", "", "",
                                              (uint32_t)0, (uint32_t)0, (uint64_t)0, UINT64_MAX);
        if (r >= 0) r = sd_bus_message_close_container(m); /* batch */
        if (r >= 0) r = sd_bus_message_close_container(m); /* (u(batch)) */
        if (r >= 0) r = sd_bus_message_close_container(m); /* array */
        /* per-gid / uid-range batches: none */
        if (r >= 0) r = sd_bus_message_append(m, "a(buu(" POLICY_T_BATCH "))", 0);
        /* selinux: none */
        if (r >= 0) r = sd_bus_message_append(m, "a(ss)", 0);
        /* apparmor: off; bus type */
        if (r >= 0) r = sd_bus_message_append(m, "bs", 0, "session");
        if (r >= 0) r = sd_bus_message_close_container(m); /* struct */
        if (r >= 0) r = sd_bus_message_close_container(m); /* variant */
        return r;
}

int main(int argc, char **argv) {
        const char *listen_path = NULL, *broker_bin = "/usr/bin/dbus-broker";
        const char *pidfile = NULL, *readyfile = NULL;
        static const struct option opts[] = {
                { "listen", required_argument, NULL, 'l' },
                { "broker", required_argument, NULL, 'b' },
                { "broker-pidfile", required_argument, NULL, 'p' },
                { "ready-file", required_argument, NULL, 'r' },
                {}
        };
        struct sockaddr_un sa = { .sun_family = AF_UNIX };
        sd_bus_error error = SD_BUS_ERROR_NULL;
        sd_bus_message *m = NULL;
        sd_bus *bus = NULL;
        struct sigaction sact = { .sa_handler = on_signal };
        char machine_id[33], fdstr[16], buf[64];
        sd_id128_t mid;
        int c, r, lfd, sp[2], status, exit_code = 0;
        pid_t pid;

        while ((c = getopt_long(argc, argv, "", opts, NULL)) >= 0) {
                switch (c) {
                case 'l': listen_path = optarg; break;
                case 'b': broker_bin = optarg; break;
                case 'p': pidfile = optarg; break;
                case 'r': readyfile = optarg; break;
                default: return 2;
                }
        }
        if (!listen_path || strlen(listen_path) >= sizeof(sa.sun_path)) {
                fprintf(stderr, "usage: brokerctl --listen PATH [--broker BIN] [--broker-pidfile F] [--ready-file F]\n");
                return 2;
        }

        sigaction(SIGTERM, &sact, NULL); /* no SA_RESTART: sd_bus_wait() returns -EINTR */
        sigaction(SIGINT, &sact, NULL);

        lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (lfd < 0)
                die("socket", errno);
        strcpy(sa.sun_path, listen_path);
        unlink(listen_path);
        if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
                die("bind", errno);
        if (listen(lfd, 256) < 0)
                die("listen", errno);

        if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0, sp) < 0)
                die("socketpair", errno);

        r = sd_id128_get_machine(&mid);
        if (r < 0)
                r = sd_id128_randomize(&mid);
        if (r < 0)
                die("machine id", r);
        sd_id128_to_string(mid, machine_id);

        pid = fork();
        if (pid < 0)
                die("fork", errno);
        if (pid == 0) {
                prctl(PR_SET_PDEATHSIG, SIGTERM);
                fcntl(sp[1], F_SETFD, 0); /* keep controller fd across exec */
                snprintf(fdstr, sizeof(fdstr), "%d", sp[1]);
                execl(broker_bin, "dbus-broker",
                      "--controller", fdstr,
                      "--machine-id", machine_id,
                      "--max-bytes", MAX_BYTES,
                      "--max-fds", MAX_FDS,
                      "--max-matches", MAX_MATCHES,
                      (char *)NULL);
                fprintf(stderr, "brokerctl: exec %s: %s\n", broker_bin, strerror(errno));
                _exit(127);
        }
        close(sp[1]);
        snprintf(buf, sizeof(buf), "%d\n", (int)pid);
        write_file(pidfile, buf);

        r = sd_bus_new(&bus);
        if (r >= 0) r = sd_bus_set_fd(bus, sp[0], sp[0]);
        if (r >= 0) r = sd_bus_start(bus);
        if (r < 0)
                die("controller connection", r);

        r = sd_bus_message_new_method_call(bus, &m, NULL, "/org/bus1/DBus/Broker",
                                           "org.bus1.DBus.Broker", "AddListener");
        if (r >= 0) r = sd_bus_message_append(m, "oh", "/org/bus1/DBus/Listener/0", lfd);
        if (r >= 0) r = append_allow_all_policy(m);
        if (r < 0)
                die("building AddListener", r);
        r = sd_bus_call(bus, m, 10 * 1000000ULL, &error, NULL);
        if (r < 0) {
                fprintf(stderr, "brokerctl: AddListener failed: %s %s\n",
                        error.name ? error.name : "", error.message ? error.message : strerror(-r));
                kill(pid, SIGTERM);
                waitpid(pid, NULL, 0);
                return 1;
        }
        sd_bus_message_unref(m);
        close(lfd); /* the broker holds its own copy now */

        snprintf(buf, sizeof(buf), "unix:path=%s\n", listen_path);
        write_file(readyfile, buf);
        fprintf(stderr, "brokerctl: dbus-broker pid %d listening on %s\n", (int)pid, listen_path);

        while (!g_stop) {
                r = sd_bus_process(bus, NULL);
                if (r < 0) {
                        fprintf(stderr, "brokerctl: controller connection ended: %s\n", strerror(-r));
                        exit_code = 1;
                        break;
                }
                if (r > 0)
                        continue;
                if (waitpid(pid, &status, WNOHANG) == pid) {
                        fprintf(stderr, "brokerctl: dbus-broker exited (status 0x%x)\n", status);
                        pid = 0;
                        exit_code = 1;
                        break;
                }
                r = sd_bus_wait(bus, 500000);
                if (r < 0 && r != -EINTR) {
                        exit_code = 1;
                        break;
                }
        }

        if (pid > 0) {
                struct timespec ts = { 0, 10 * 1000 * 1000 };
                int i;
                kill(pid, SIGTERM);
                for (i = 0; i < 300; i++) { /* up to 3 s, then SIGKILL */
                        if (waitpid(pid, &status, WNOHANG) == pid)
                                break;
                        nanosleep(&ts, NULL);
                }
                if (i == 300) {
                        kill(pid, SIGKILL);
                        waitpid(pid, &status, 0);
                }
        }
        sd_bus_flush_close_unref(bus);
        unlink(listen_path);
        return exit_code;
}
