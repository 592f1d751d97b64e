"""Median round trip of a 64-byte ioctl through the toy filesystem.

    python -m tests.fuse.bench_roundtrip [-n ITERATIONS]

Not a test: mounts the toy (as root), then times, from a C client (if a C
compiler is around) and from a Python client:
  echo      the kernel copies 64 bytes in and out; the server only echoes
  echo+mem  the server also reads the 64 bytes with process_vm_readv
  +write    ... and writes 48 of them elsewhere with process_vm_writev
  push      PUSH on /pool: read 64 bytes of caller memory, NOTIFY_STORE them,
            reply after the store (both through the session's writer thread)
"""

import argparse
import fcntl
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from . import ioctls as K

REPO = Path(__file__).resolve().parents[2]

C_CLIENT = r"""
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <time.h>

static int cmp(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int fd = open(argv[1], atoi(argv[4]) == 2 ? O_RDONLY : O_RDWR);
    unsigned long cmd = strtoul(argv[2], NULL, 0);
    int n = atoi(argv[3]), mode = atoi(argv[4]);
    if (fd < 0) { perror("open"); return 1; }
    static unsigned char buf[64], out[48], data[64];
    if (mode == 1) {  /* ECHO_MEM with an out buffer */
        uint64_t hdr[2] = { (uint64_t)(uintptr_t)out, sizeof out };
        memcpy(buf, hdr, sizeof hdr);
    } else if (mode == 2) {  /* PUSH: offset, address, size */
        uint64_t push[3] = { 0, (uint64_t)(uintptr_t)data, sizeof data };
        memcpy(buf, push, sizeof push);
    }
    int64_t *t = malloc(sizeof(int64_t) * n);
    for (int i = 0; i < n + n / 10; i++) {
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        if (ioctl(fd, cmd, buf) < 0) { perror("ioctl"); return 1; }
        clock_gettime(CLOCK_MONOTONIC, &b);
        if (i >= n / 10)  /* warm-up first */
            t[i - n / 10] = (b.tv_sec - a.tv_sec) * 1000000000LL + (b.tv_nsec - a.tv_nsec);
    }
    qsort(t, n, sizeof *t, cmp);
    printf("%.1f %.1f\n", t[n / 2] / 1000.0, t[n * 99 / 100] / 1000.0);
    return 0;
}
"""


def c_client(workdir):
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src = Path(workdir) / "client.c"
    exe = Path(workdir) / "client"
    src.write_text(C_CLIENT)
    subprocess.run([cc, "-O2", "-o", str(exe), str(src)], check=True)
    return exe


def run_c(exe, path, cmd, n, mode):
    out = subprocess.run([str(exe), path, hex(cmd), str(n), str(mode)],
                         check=True, capture_output=True, text=True).stdout
    median, p99 = map(float, out.split())
    return median, p99


def run_py(path, cmd, n, mode):
    fd = os.open(path, os.O_RDWR if mode < 2 else os.O_RDONLY)
    out = bytearray(48)
    if mode == 2:
        buf = bytearray(K.PUSH_STRUCT.pack(0, K.address(out), len(out)))
    else:
        hdr = K.ECHO_MEM_HDR.pack(K.address(out), len(out)) if mode == 1 else bytes(16)
        buf = bytearray(hdr + bytes(48))
    ioctl = fcntl.ioctl
    clock = time.perf_counter_ns
    times = []
    try:
        for i in range(n + n // 10):
            a = clock()
            ioctl(fd, cmd, buf, True)
            b = clock()
            if i >= n // 10:
                times.append(b - a)
    finally:
        os.close(fd)
    times.sort()
    return statistics.median(times) / 1000, times[len(times) * 99 // 100] / 1000


# name: (file, command, client mode: 0 plain, 1 with an out buffer, 2 PUSH)
CASES = {
    "echo": ("dev", K.ECHO, 0),
    "echo+mem": ("dev", K.ECHO_MEM, 0),
    "+write": ("dev", K.ECHO_MEM, 1),
    "push": ("pool", K.PUSH, 2),
}

PLACEMENTS = {
    # name: (server CPUs, client CPUs); None leaves it to the scheduler
    "any": (None, None),
    "same-cpu": ({0}, {0}),
    "two-cpus": ({0}, {1}),
}


def start_server(mp, busy_poll_us):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    if busy_poll_us is not None:
        env["TOYFS_BUSY_POLL_US"] = str(busy_poll_us)
    server = subprocess.Popen([sys.executable, "-m", "tests.fuse.toyfs", mp], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
    if not server.stdout.readline().startswith(b"ready"):
        raise SystemExit("toy server failed to start")
    return server


def stop_server(server):
    server.send_signal(signal.SIGTERM)
    server.wait(10)
    server.stdout.close()


def pin_server(pid, cpus):
    for tid in os.listdir(f"/proc/{pid}/task"):  # the writer thread too
        os.sched_setaffinity(int(tid), cpus)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=20000)
    ap.add_argument("--busy-poll-us", type=float, nargs="*", default=[None],
                    help="server busy-poll windows to compare (default: the Session's)")
    ap.add_argument("--placement", nargs="*", default=["any"], choices=list(PLACEMENTS))
    ap.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    args = ap.parse_args()
    workdir = tempfile.mkdtemp(prefix="kdbusfs-bench-")
    mp = os.path.join(workdir, "mnt")
    os.mkdir(mp)
    exe = c_client(workdir)
    clients = ([("C", run_c)] if exe is not None else []) + [("Python", lambda exe, *a: run_py(*a))]
    all_cpus = os.sched_getaffinity(0)
    print(f"64-byte ioctl round trip through the toy server, n={args.n}, median and p99 in µs")
    print(f"{'busy-poll':>9} {'placement':10} {'case':9} {'client':7} {'median':>7} {'p99':>7}")
    try:
        for busy in args.busy_poll_us:
            server = start_server(mp, busy)
            try:
                for placement in args.placement:
                    server_cpus, client_cpus = PLACEMENTS[placement]
                    pin_server(server.pid, server_cpus or all_cpus)
                    os.sched_setaffinity(0, client_cpus or all_cpus)  # inherited by the C client
                    for name in args.cases:
                        file, cmd, mode = CASES[name]
                        for client, run in clients:
                            median, p99 = run(exe, os.path.join(mp, file), cmd, args.n, mode)
                            label = "default" if busy is None else f"{busy:g}"
                            print(f"{label:>9} {placement:10} {name:9} {client:7} {median:7.1f} {p99:7.1f}",
                                  flush=True)
                    os.sched_setaffinity(0, all_cpus)
            finally:
                stop_server(server)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
