"""kdbusfs side of the benchmark, written with our Python client library.

The same roles as jeepney_bench.py plays on the D-Bus brokers, on a kdbusfs
bus, with kdbusfs.client on both ends:

  bus      create a bus on a mount and hold it (the bus lives while its owner
           fd is open) until SIGTERM; the ready file gets the bus path
  service  owns NAME and answers, by payload:
             a request with a payload        -> the same payload   (Echo)
             a request with an empty payload -> u64 LE signal count (Sync)
             a message that expects no reply -> exit               (Quit)
           and counts the signals its match admits: a bloom mask of
           "interface:org.bench.Signals" and "member:Blob".
           With KDBUSFS_RECV_BLOCK (a kdbusfs extension) it parks in RECV
           instead of poll() + RECV, unless --no-block.
  echo     synchronous calls to NAME (SEND with SYNC_REPLY), one sample each
  signal   Blob broadcasts in windows of W, a Sync() call after each window
  quit     ask the service to exit
  load     open connections / own names / install matches, then hold them
           until SIGTERM (the scaling cases)
  memory   VmRSS of a pid before and after opening N idle connections
  waitidle wait until the bus has at most N connections (after a load)

kdbus payloads are plain bytes: there is no D-Bus message header to marshal,
unlike jeepney and sd-bus on the brokers.  Results are JSON lines in the
format of benchstats.emit_result.
"""
import argparse
import errno
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchstats import (emit_result, hold_until_signal, raise_nofile_limit,  # noqa: E402
                        read_status_kib)

from kdbusfs.abi import constants as C  # noqa: E402
from kdbusfs.client import Connection, make_bus  # noqa: E402

IMPL = "Python kdbusfs.client"
SIG_KEYS = ("interface:org.bench.Signals", "member:Blob")
CALL_TIMEOUT = 30.0
POOL = 64 * 1024 * 1024
QUIT = b"quit"


def connect(bus, pool=POOL):
    return Connection.open(bus, pool_size=pool)


# ---------------------------------------------------------------- bus holder

def run_bus(args):
    bus = make_bus(args.mount, "%s-%d" % (args.name, os.getpid()))
    try:
        hold_until_signal(args.ready_file, bus.path)
    finally:
        bus.close()


# ------------------------------------------------------------------- service

class Receiver:
    """recv() that blocks in the server (KDBUSFS_RECV_BLOCK) when it can."""

    def __init__(self, conn, block):
        self.conn = conn
        self.block = block and hasattr(conn, "_recv") and hasattr(conn, "_take_message")

    def next(self):
        conn = self.conn
        while self.block:
            try:
                info = conn._recv(C.KDBUSFS_RECV_BLOCK, 0)
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                print("kdbusfs_bench: RECV_BLOCK unsupported (%s); polling" % e,
                      file=sys.stderr)
                self.block = False
                break
            if info is None:        # EAGAIN: only a dropped-count report
                continue
            offset, size, rflags = info
            if size == 0:
                continue
            return conn._take_message(offset, size, rflags, False)
        return conn.recv_wait(None)


def run_service(args):
    conn = connect(args.bus)
    conn.add_match(bloom_mask=conn.bloom(*SIG_KEYS))
    conn.acquire_name(args.name)
    if args.ready_file:
        with open(args.ready_file + ".tmp", "w") as f:
            f.write("%d\n" % os.getpid())
        os.rename(args.ready_file + ".tmp", args.ready_file)
    rx = Receiver(conn, not args.no_block)
    count = 0
    while True:
        msg = rx.next()
        if msg is None or msg.is_kernel:
            continue
        if msg.is_signal:
            count += 1
        elif msg.expects_reply:
            if msg.payload:
                conn.reply(msg, msg.payload)
            else:
                conn.reply(msg, count.to_bytes(8, "little"))
        elif msg.payload == QUIT:
            break
    if conn.dropped:
        print("kdbusfs_bench: service saw %d dropped messages" % conn.dropped, file=sys.stderr)
    conn.close()


# ------------------------------------------------------------------- clients

def run_echo(args):
    conn = connect(args.bus)
    name, size = args.name, args.size
    payload = bytes(i & 0xFF for i in range(size))
    perf = time.perf_counter_ns
    call = conn.call

    def once():
        reply = call(name, payload, timeout=CALL_TIMEOUT)
        if len(reply.payload) != size:
            sys.exit("bad echo length %d != %d" % (len(reply.payload), size))

    for _ in range(args.warmup):
        once()
    rep_samples, rep_rate = [], []
    for _ in range(args.reps):
        s = []
        t_start = t1 = perf()
        for _ in range(args.iters):
            t0 = perf()
            once()
            t1 = perf()
            s.append(t1 - t0)
        rep_samples.append(s)
        rep_rate.append(args.iters / ((t1 - t_start) / 1e9))
    emit_result("echo-rtt", IMPL, args.bus_label, size, args.iters, rep_samples, rep_rate,
                "calls/s")
    conn.close()


def run_signal(args):
    conn = connect(args.bus)
    name = args.name
    payload = bytes(i & 0xFF for i in range(args.size))
    bloom = conn.bloom(*SIG_KEYS)
    window = args.window
    windows = -(-args.iters // window)
    iters = windows * window
    perf = time.perf_counter_ns
    emit = conn.emit

    def sync():
        return int.from_bytes(conn.call(name, b"", timeout=CALL_TIMEOUT).payload, "little")

    def send_window():
        for _ in range(window):
            emit(payload, bloom=bloom)

    before = sync()
    send_window()
    if sync() - before != window:
        sys.exit("warm-up signals lost")
    rep_samples, rep_rate = [], []
    sent = lost = 0
    for _ in range(args.reps):
        s = []
        before = sync()
        t_start = t1 = perf()
        for _ in range(windows):
            t0 = perf()
            send_window()
            sync()
            t1 = perf()
            s.append((t1 - t0) // window)
        after = sync()
        sent += iters
        lost += iters - (after - before)
        rep_samples.append(s)
        rep_rate.append(iters / ((t1 - t_start) / 1e9))
    emit_result("signal-tput", IMPL, args.bus_label, args.size, iters, rep_samples, rep_rate,
                "msgs/s", {"window": window, "sent": sent, "lost": lost})
    conn.close()
    if lost:
        sys.exit(1)


def run_quit(args):
    conn = connect(args.bus, 1024 * 1024)
    try:
        conn.send(args.name, QUIT)
    finally:
        conn.close()


# ------------------------------------------------------------ load / memory

def open_conns(bus, n, pool):
    conns = []
    try:
        for _ in range(n):
            conns.append(Connection.open(bus, pool_size=pool))
    except BaseException:
        for c in conns:
            c.close()
        raise
    return conns


def run_load(args):
    """Open --conns idle connections, or own --names names / install
    --matches matches spread over --spread connections; hold until SIGTERM."""
    raise_nofile_limit()
    t0 = time.monotonic()
    if args.conns is not None:
        conns = open_conns(args.bus, args.conns, args.pool)
        what = {"conns": args.conns}
    else:
        conns = open_conns(args.bus, args.spread, args.pool)
        n = args.names if args.names is not None else args.matches
        for i in range(n):
            c = conns[i % len(conns)]
            if args.names is not None:
                c.acquire_name("org.bench.load.N%d" % i)
            else:
                # a signal rule per entry, like a client subscribing to one
                # member of one interface; none of them admits the benchmark
                c.add_match(bloom_mask=c.bloom("interface:org.bench.Load%d" % (i // 64),
                                               "member:M%d" % i))
        what = {"names" if args.names is not None else "matches": n, "spread": len(conns)}
    what["setup_s"] = round(time.monotonic() - t0, 3)
    try:
        hold_until_signal(args.ready_file, json.dumps(what))
    finally:
        for c in conns:
            c.close()


def run_memory(args):
    raise_nofile_limit()
    before = read_status_kib(args.rss_pid)
    t0 = time.monotonic()
    conns = open_conns(args.bus, args.conns, args.pool)
    setup = time.monotonic() - t0
    time.sleep(args.settle)
    after = read_status_kib(args.rss_pid)
    for c in conns:
        c.close()
    out = {"bench": "rss-idle", "impl": "kdbusfs server", "bus": args.bus_label,
           "conns": args.conns, "pool_size": args.pool, "rss_before_kib": before["VmRSS"],
           "rss_after_kib": after["VmRSS"],
           "per_conn_kib": round((after["VmRSS"] - before["VmRSS"]) / args.conns, 3),
           "status_before_kib": before, "status_after_kib": after,
           "setup_s": round(setup, 3)}
    print(json.dumps(out), flush=True)


def run_waitidle(args):
    """Poll LIST until the bus has at most --max-conns connections other than ours."""
    deadline = time.monotonic() + args.timeout
    conn = connect(args.bus, 1024 * 1024)
    try:
        while True:
            n = len([e for e in conn.list(C.KDBUS_LIST_UNIQUE) if e.id != conn.id])
            if n <= args.max_conns:
                return
            if time.monotonic() > deadline:
                sys.exit("bus still has %d connections" % n)
            time.sleep(0.05)
    finally:
        conn.close()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["bus", "service", "echo", "signal", "quit", "load",
                                    "memory", "waitidle"])
    p.add_argument("--bus", help="the bus endpoint file")
    p.add_argument("--mount", help="bus: the kdbusfs mount")
    p.add_argument("--name", default="org.bench.PyEcho")
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--window", type=int, default=128)
    p.add_argument("--bus-label", default="kdbusfs")
    p.add_argument("--ready-file")
    p.add_argument("--no-block", action="store_true", help="service: poll(), no RECV_BLOCK")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--conns", type=int)
    g.add_argument("--names", type=int)
    g.add_argument("--matches", type=int)
    p.add_argument("--spread", type=int, default=40,
                   help="load: connections that share the names or matches "
                        "(kdbus allows 256 of each per connection)")
    p.add_argument("--pool", type=int, default=1024 * 1024,
                   help="load/memory: pool size of each connection (1 MiB: kdbusfs caps the "
                        "pool bytes of one uid at 4 GiB, so 1000 connections cannot all have "
                        "sd-bus's 16 MiB; the server only backs the pages it writes anyway)")
    p.add_argument("--rss-pid", type=int)
    p.add_argument("--settle", type=float, default=1.0)
    p.add_argument("--max-conns", type=int, default=0)
    p.add_argument("--timeout", type=float, default=30.0)
    args = p.parse_args()
    if args.mode == "bus" and not args.mount:
        p.error("bus needs --mount")
    if args.mode not in ("bus",) and not args.bus:
        p.error("%s needs --bus" % args.mode)
    if args.mode == "load" and args.conns is None and args.names is None and args.matches is None:
        p.error("load needs --conns, --names or --matches")
    if args.mode == "memory" and (args.conns is None or args.rss_pid is None):
        p.error("memory needs --conns and --rss-pid")
    {"bus": run_bus, "service": run_service, "echo": run_echo, "signal": run_signal,
     "quit": run_quit, "load": run_load, "memory": run_memory,
     "waitidle": run_waitidle}[args.mode](args)


if __name__ == "__main__":
    main()
