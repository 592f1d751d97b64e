"""D-Bus baselines with jeepney (pure Python, blocking API) on both ends.

Same protocol as src/sdbus_bench.c:
  service: owns NAME, /org/bench/Echo org.bench.Echo: Echo(ay)->ay, Sync()->t, Quit()
           and AddMatch on signal org.bench.Signals.Blob at /org/bench/Signals
  echo:    synchronous Echo round trips, one sample per call
  signal:  Blob(ay) broadcasts in windows of W, Sync() after each window
  quit:    ask the service to exit
  load:    open --conns idle connections, or request --names names / add --matches match
           rules spread over --spread connections, then hold them until SIGTERM
  memory:  VmRSS of --rss-pid before and after opening --conns idle connections

Usage: python jeepney_bench.py MODE --address unix:path=... [--name N] [--size S]
                              [--iters I] [--reps R] [--warmup W] [--window W] [--bus-label L]

Copied from shared/bench/py/jeepney_bench.py (our harness); load and memory are new.
"""
import argparse
import json
import os
import sys
import time

from jeepney import (DBusAddress, HeaderFields, MatchRule, MessageType, message_bus,
                     new_error, new_method_call, new_method_return, new_signal)
from jeepney.io.blocking import open_dbus_connection

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchstats import (emit_result, hold_until_signal, raise_nofile_limit,  # noqa: E402
                        read_status_kib)

OBJ_PATH = "/org/bench/Echo"
IFACE = "org.bench.Echo"
SIG_PATH = "/org/bench/Signals"
SIG_IFACE = "org.bench.Signals"
CALL_TIMEOUT = 30.0
IMPL = "Python jeepney %s" % __import__("jeepney").__version__


def connect(address):
    return open_dbus_connection(bus=address, auth_timeout=5.0)


def run_service(args):
    conn = connect(args.address)
    rule = MatchRule(type="signal", path=SIG_PATH, interface=SIG_IFACE, member="Blob")
    reply = conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=CALL_TIMEOUT)
    if reply.header.message_type != MessageType.method_return:
        sys.exit("AddMatch failed: %r" % (reply.body,))
    reply = conn.send_and_get_reply(message_bus.RequestName(args.name, 4), timeout=CALL_TIMEOUT)
    if reply.header.message_type != MessageType.method_return or reply.body[0] != 1:
        sys.exit("RequestName failed: %r" % (reply.body,))
    if args.ready_file:
        with open(args.ready_file, "w") as f:
            f.write("%d\n" % os.getpid())
    count = 0
    t_sig, t_call = MessageType.signal, MessageType.method_call
    F_MEMBER = HeaderFields.member
    while True:
        msg = conn.receive()
        hdr = msg.header
        mtype = hdr.message_type
        if mtype == t_sig:
            if hdr.fields.get(F_MEMBER) == "Blob":
                count += 1
            continue
        if mtype != t_call:
            continue
        member = hdr.fields.get(F_MEMBER)
        if member == "Echo":
            conn.send(new_method_return(msg, "ay", (msg.body[0],)))
        elif member == "Sync":
            conn.send(new_method_return(msg, "t", (count,)))
        elif member == "Quit":
            conn.send(new_method_return(msg))
            break
        else:
            conn.send(new_error(msg, "org.freedesktop.DBus.Error.UnknownMethod"))
    conn.close()


def call(conn, msg):
    reply = conn.send_and_get_reply(msg, timeout=CALL_TIMEOUT)
    if reply.header.message_type != MessageType.method_return:
        sys.exit("call failed: %r" % (reply.body,))
    return reply


def run_echo(args):
    conn = connect(args.address)
    dest = DBusAddress(OBJ_PATH, bus_name=args.name, interface=IFACE)
    payload = bytes(i & 0xFF for i in range(args.size))
    size = args.size
    perf = time.perf_counter_ns

    def once():
        reply = call(conn, new_method_call(dest, "Echo", "ay", (payload,)))
        if len(reply.body[0]) != size:
            sys.exit("bad echo length")

    for _ in range(args.warmup):
        once()
    rep_samples, rep_rate = [], []
    for _ in range(args.reps):
        s = []
        t_start = perf()
        t1 = t_start
        for _ in range(args.iters):
            t0 = perf()
            once()
            t1 = perf()
            s.append(t1 - t0)
        rep_samples.append(s)
        rep_rate.append(args.iters / ((t1 - t_start) / 1e9))
    emit_result("echo-rtt", IMPL, args.bus_label, size, args.iters, rep_samples, rep_rate, "calls/s")
    conn.close()


def run_signal(args):
    conn = connect(args.address)
    dest = DBusAddress(OBJ_PATH, bus_name=args.name, interface=IFACE)
    emitter = DBusAddress(SIG_PATH, interface=SIG_IFACE)
    payload = bytes(i & 0xFF for i in range(args.size))
    window = args.window
    windows = -(-args.iters // window)
    iters = windows * window
    perf = time.perf_counter_ns

    def sync():
        return call(conn, new_method_call(dest, "Sync")).body[0]

    def send_window():
        for _ in range(window):
            conn.send(new_signal(emitter, "Blob", "ay", (payload,)))

    before = sync()
    send_window()
    if sync() - before != window:
        sys.exit("warm-up signals lost")
    rep_samples, rep_rate = [], []
    sent = lost = 0
    for _ in range(args.reps):
        s = []
        before = sync()
        t_start = perf()
        t1 = t_start
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
    conn = connect(args.address)
    call(conn, new_method_call(DBusAddress(OBJ_PATH, bus_name=args.name, interface=IFACE), "Quit"))
    conn.close()


def open_conns(address, n):
    conns = []
    try:
        for _ in range(n):
            conns.append(connect(address))
    except BaseException:
        for c in conns:
            c.close()
        raise
    return conns


def run_load(args):
    raise_nofile_limit()
    t0 = time.monotonic()
    if args.conns is not None:
        conns = open_conns(args.address, args.conns)
        what = {"conns": args.conns}
    else:
        conns = open_conns(args.address, args.spread)
        n = args.names if args.names is not None else args.matches
        for i in range(n):
            c = conns[i % len(conns)]
            if args.names is not None:
                msg = message_bus.RequestName("org.bench.load.N%d" % i, 4)
            else:
                msg = message_bus.AddMatch(MatchRule(
                    type="signal", interface="org.bench.Load%d" % (i // 64), member="M%d" % i))
            reply = c.send_and_get_reply(msg, timeout=CALL_TIMEOUT)
            if reply.header.message_type != MessageType.method_return:
                sys.exit("load %d failed: %r" % (i, reply.body))
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
    conns = open_conns(args.address, args.conns)
    setup = time.monotonic() - t0
    time.sleep(args.settle)
    after = read_status_kib(args.rss_pid)
    for c in conns:
        c.close()
    out = {"bench": "rss-idle", "impl": args.bus_label.split()[0] + " server",
           "bus": args.bus_label, "conns": args.conns, "rss_before_kib": before["VmRSS"],
           "rss_after_kib": after["VmRSS"],
           "per_conn_kib": round((after["VmRSS"] - before["VmRSS"]) / args.conns, 3),
           "status_before_kib": before, "status_after_kib": after,
           "setup_s": round(setup, 3)}
    print(json.dumps(out), flush=True)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["service", "echo", "signal", "quit", "load", "memory"])
    p.add_argument("--address", required=True)
    p.add_argument("--name", default="org.bench.PyEcho")
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--iters", type=int, default=1000)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--window", type=int, default=64)
    p.add_argument("--bus-label", default="?")
    p.add_argument("--ready-file")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--conns", type=int)
    g.add_argument("--names", type=int)
    g.add_argument("--matches", type=int)
    p.add_argument("--spread", type=int, default=40,
                   help="load: connections that share the names or matches")
    p.add_argument("--rss-pid", type=int)
    p.add_argument("--settle", type=float, default=1.0)
    args = p.parse_args()
    if args.mode == "load" and args.conns is None and args.names is None and args.matches is None:
        p.error("load needs --conns, --names or --matches")
    if args.mode == "memory" and (args.conns is None or args.rss_pid is None):
        p.error("memory needs --conns and --rss-pid")
    {"service": run_service, "echo": run_echo, "signal": run_signal, "quit": run_quit,
     "load": run_load, "memory": run_memory}[args.mode](args)


if __name__ == "__main__":
    main()
