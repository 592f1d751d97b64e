"""Load a live kdbusfs mount and account for every message.

    python -m kdbusfs.tools.load --seconds 30          (scripts/load)

`--procs` worker processes open `--conns` connections in total on one bus
(each in one of `--groups` broadcast groups, every fifth owning a
well-known name, `--slow` percent of them reading nothing until the end,
so that their quota fills), then for `--seconds` each worker sends from its
connections, as fast as the server takes them, a mix of unicast (by id),
name-addressed and broadcast messages to connections of all workers, and
receives on its own (epoll, RECV until EAGAIN, FREE).  Each message carries
(sender, serial, kind, target) and some padding.  When time is up the
senders stop, every queue is drained, and the books are checked:

- a unicast or name-addressed message that SEND accepted is received
  exactly once, by its target, and by nobody else;
- a broadcast that SEND accepted is received at most once by each
  connection of its group (the sender included, if it is in the group) and
  by no other; each copy that a receiver did not get must be one of the
  messages its RECV reported as dropped (dropped_msgs, ABI §6.7: a
  broadcast that does not fit a receiver's quota is dropped there and
  counted), so per receiver: missing copies == dropped count;
- a refused SEND answered an errno of the fact sheet (ENOBUFS, EXFULL...)
  and its message reached nobody;
- lost = accepted messages (or broadcast copies) neither received nor
  counted as dropped; it must be 0, and so must duplicates and misdeliveries.

Memory: the server's VmRSS is sampled during the run; the growth from the
idle, connected state must stay within what the quotas allow: every
receiver's queued bytes are at most half its pool (§6.7, quota rule 1), so
conns x pool_size / 2, plus a fixed allowance for the interpreter.  The
server's fd count must come back to its baseline when all is closed.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import pickle
import random
import select
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback

from kdbusfs.abi import constants as K
from kdbusfs.client import Connection, make_bus
from kdbusfs.tools.errnos import SHEET_ERRNOS
from kdbusfs.tools.server import Server

HEAD = struct.Struct("<IIBI")       # sender index, serial, kind, target (index or group)
UNICAST, BY_NAME, BROADCAST = 0, 1, 2
KINDS = ("unicast", "by_name", "broadcast")
ALLOWANCE_KIB = 64 * 1024           # interpreter, heaps, fragmentation


def group_key(g: int) -> str:
    return f"member:G{g}"


def name_of(idx: int) -> str:
    return f"org.kdbusfs.load.N{idx}"


# -- a worker process ---------------------------------------------------------------
def worker(w: int, bus_path: str, first: int, count: int, groups: int, pool_size: int,
           slow_percent: int, seconds_fd_r: int, out_fd: int, tmpdir: str,
           seed: int) -> None:
    rng = random.Random(seed)
    cin = os.fdopen(seconds_fd_r, "r")
    out = os.fdopen(out_fd, "w", buffering=1)

    def say(obj):
        out.write(json.dumps(obj) + "\n")

    conns = []
    table = []
    for i in range(first, first + count):
        g = i % groups
        c = Connection.open(bus_path, pool_size=pool_size)
        probe = c.bloom(group_key(g))
        c.add_match(bloom_mask=probe)
        name = None
        if i % 5 == 0:
            name = name_of(i)
            c.acquire_name(name)
        conns.append(c)
        table.append((i, c.id, name, g))
    say({"table": table})
    everyone = json.loads(cin.readline())["table"]      # [[idx, id, name, group], ...]
    by_group: dict[int, list[int]] = {}
    for idx, _id, _name, g in everyone:
        by_group.setdefault(g, []).append(idx)
    named = [e for e in everyone if e[2]]
    blooms = {g: conns[0].bloom(group_key(g)) for g in range(groups)}
    ep = select.epoll()
    fd_of = {}
    for k, c in enumerate(conns):
        if (first + k) % 100 >= slow_percent:   # the slow ones read only at the end
            ep.register(c.fileno(), select.EPOLLIN)
        fd_of[c.fileno()] = k
    sent = []                # (sender idx, serial, kind, target, errno)
    received = []            # (receiver idx, sender idx, serial, kind, target)
    dropped = [0] * count
    serial = 0
    cmd = json.loads(cin.readline())
    end = time.monotonic() + cmd["seconds"]

    def drain(k):
        c = conns[k]
        me = first + k
        while True:
            m = c.recv()
            dropped[k] += c.last_dropped
            if m is None:
                return
            if m.src_id == K.KDBUS_SRC_ID_KERNEL or len(m.payload) < HEAD.size:
                received.append((me, -1, -1, -1, -1))
                continue
            s, n, kind, target = HEAD.unpack_from(m.payload)
            received.append((me, s, n, kind, target))

    def drain_ready(timeout=0):
        for fd, _ev in ep.poll(timeout):
            drain(fd_of[fd])

    while time.monotonic() < end:
        for _ in range(8):
            k = rng.randrange(count)
            c = conns[k]
            me = first + k
            serial += 1
            r = rng.random()
            if r < 0.65:
                kind = UNICAST
                t = rng.choice(everyone)
                target, dst = t[0], t[1]
            elif r < 0.9:
                kind = BY_NAME
                t = rng.choice(named)
                target, dst = t[0], t[2]
            else:
                kind = BROADCAST
                target = rng.randrange(groups)
                dst = K.KDBUS_DST_ID_BROADCAST
            payload = HEAD.pack(me, serial, kind, target) + bytes(rng.randrange(0, 200))
            try:
                if kind == BROADCAST:
                    c.emit(payload, bloom=blooms[target])
                else:
                    c.send(dst, payload)
                rc = 0
            except OSError as e:
                rc = e.errno
            sent.append((me, serial, kind, target, rc))
        drain_ready(0)
    say({"sent_done": len(sent)})
    json.loads(cin.readline())        # "drain": every worker has stopped sending
    for k in range(count):
        drain(k)
    with open(os.path.join(tmpdir, f"w{w}.pickle"), "wb") as f:
        pickle.dump({"sent": sent, "received": received,
                     "dropped": {first + k: n for k, n in enumerate(dropped)}}, f)
    say({"done": True})
    cin.readline()                    # close: after everyone is done
    for c in conns:
        c.close()
    ep.close()


# -- the coordinator -----------------------------------------------------------------
class Proc:
    def __init__(self, pid, to_child, from_child):
        self.pid = pid
        self.to = os.fdopen(to_child, "w", buffering=1)
        self.frm = os.fdopen(from_child, "r")

    def tell(self, obj):
        self.to.write(json.dumps(obj) + "\n")

    def close(self):
        for f in (self.to, self.frm):
            try:
                f.close()
            except OSError:
                pass

    def hear(self, timeout: float):
        r, _, _ = select.select([self.frm], [], [], timeout)
        if not r:
            raise TimeoutError(f"worker {self.pid} said nothing for {timeout} s")
        line = self.frm.readline()
        if not line:
            raise RuntimeError(f"worker {self.pid} ended early")
        return json.loads(line)


def run(seconds: float = 30, conns: int = 1000, procs: int = 8, groups: int = 32,
        pool_size: int = 64 * 1024, pushed: bool = False, seed: int | None = None,
        slow: int = 5, log=lambda *a: None) -> dict:
    seed = random.randrange(1 << 32) if seed is None else seed
    rng = random.Random(seed)
    srv = Server(pushed=pushed).start()
    tmpdir = tempfile.mkdtemp(prefix="kdbusfs-load-")
    res = {"seed": seed, "seconds": seconds, "connections": conns, "procs": procs,
           "groups": groups, "pool_size": pool_size, "slow_percent": slow,
           "mode": "pushed" if pushed else "passthrough", "problems": []}
    children: list[Proc] = []
    bus = None
    t0 = time.monotonic()
    try:
        base = srv.status()
        res["server_fds_baseline"] = srv.fds()
        bus = make_bus(srv.path, "load", access="world")
        per = [conns // procs + (1 if i < conns % procs else 0) for i in range(procs)]
        first = 0
        for w, n in enumerate(per):
            a_r, a_w = os.pipe()
            b_r, b_w = os.pipe()
            wseed = rng.randrange(1 << 32)
            pid = os.fork()
            if pid == 0:
                code = 0
                try:
                    os.close(a_w)
                    os.close(b_r)
                    signal.signal(signal.SIGINT, signal.SIG_DFL)
                    signal.signal(signal.SIGTERM, signal.SIG_DFL)
                    worker(w, bus.path, first, n, groups, pool_size, slow, a_r, b_w, tmpdir,
                           wseed)
                except BaseException:
                    traceback.print_exc()
                    code = 1
                finally:
                    os._exit(code)
            os.close(a_r)
            os.close(b_w)
            children.append(Proc(pid, a_w, b_r))
            first += n
        table = []
        for p in children:
            table += p.hear(120)["table"]
        res["setup_seconds"] = round(time.monotonic() - t0, 1)
        idle = srv.status()
        res["server_kib"] = {"start_rss": base.get("VmRSS"), "connected_rss": idle.get("VmRSS")}
        res["server_fds_connected"] = srv.fds()
        log(f"load: {len(table)} connections in {res['setup_seconds']} s; "
            f"sending for {seconds} s")
        for p in children:
            p.tell({"table": table})
        for p in children:
            p.tell({"seconds": seconds})
        peak = 0
        t_send = time.monotonic()
        waiting = list(children)
        done_sending = 0
        while waiting:
            peak = max(peak, srv.status().get("VmRSS", 0))
            r, _, _ = select.select([p.frm for p in waiting], [], [], 0.2)
            for p in [p for p in waiting if p.frm in r]:
                done_sending += p.hear(1)["sent_done"]
                waiting.remove(p)
            if time.monotonic() - t_send > seconds + 60:
                raise TimeoutError("workers did not stop sending")
            if not srv.alive():
                raise RuntimeError("the server died")
        res["send_seconds"] = round(time.monotonic() - t_send, 1)
        for p in children:
            p.tell({"drain": True})
        for p in children:
            p.hear(120)
        peak = max(peak, srv.status().get("VmRSS", 0))
        st = srv.status()
        res["server_kib"].update(peak_rss=peak, VmHWM=st.get("VmHWM"), end_rss=st.get("VmRSS"))
        for p in children:
            p.tell({"close": True})
        for p in children:
            _, status = os.waitpid(p.pid, 0)
            p.close()
            if status:
                res["problems"].append(f"worker {p.pid} exit status {status}")
        children = []
        bus.close()
        bus = None
        res.update(account(tmpdir, table, groups))
        # every client is gone: the server's descriptors come back
        t_end = time.monotonic() + 15
        while srv.fds() != res["server_fds_baseline"] and time.monotonic() < t_end:
            time.sleep(0.1)
        res["server_fds_after"] = srv.fds()
        if res["server_fds_after"] != res["server_fds_baseline"]:
            res["problems"].append(f"server fds {res['server_fds_after']} after the run, "
                                   f"{res['server_fds_baseline']} before")
        growth = res["server_kib"]["peak_rss"] - res["server_kib"]["connected_rss"]
        bound = conns * pool_size // 2 // 1024 + ALLOWANCE_KIB
        res["server_kib"].update(traffic_growth=growth, quota_bound=bound)
        if growth > bound:
            res["problems"].append(f"server memory grew {growth} KiB under traffic, more "
                                   f"than the quotas allow ({bound} KiB)")
    except BaseException as e:
        res["problems"].append(f"{type(e).__name__}: {e}")
        for p in children:
            try:
                os.kill(p.pid, signal.SIGKILL)
                os.waitpid(p.pid, 0)
            except OSError:
                pass
            p.close()
        if bus is not None:
            bus.close()
    finally:
        alive = srv.alive()
        res["server_exit"] = srv.stop()
        if not alive:
            res["problems"].append("the server died")
        elif res["server_exit"] != 0:
            res["problems"].append(f"server exit {res['server_exit']} on unmount")
        if srv.exceptions():
            res["problems"].append(f"{srv.exceptions()} exception(s) in the server log")
        warned = [ln for ln in srv.log().splitlines() if "Warning" in ln]
        if warned:
            res["problems"].append(f"{len(warned)} warning(s) in the server log: {warned[:3]}")
        res["server_log_problems"] = srv.problems()[:20]
        res["elapsed"] = round(time.monotonic() - t0, 1)
        res["ok"] = not res["problems"] and res.get("lost") == 0 \
            and not res.get("duplicates") and not res.get("misdelivered") \
            and not res.get("drops_over_counted") and not res.get("refused_bad_errnos") \
            and res.get("delivered", 0) > 0
        res["log"] = None if res["ok"] else srv.log_path
        srv.cleanup(keep_log=not res["ok"])
        shutil.rmtree(tmpdir, ignore_errors=True)
    return res


def account(tmpdir: str, table, groups: int) -> dict:
    sent, received, dropped = [], [], {}
    for name in sorted(os.listdir(tmpdir)):
        with open(os.path.join(tmpdir, name), "rb") as f:
            d = pickle.load(f)
        sent += d["sent"]
        received += d["received"]
        dropped.update(d["dropped"])
    members: dict[int, set] = {}
    for idx, _id, _name, g in table:
        members.setdefault(g, set()).add(idx)
    expect = {}                        # (sender, serial) -> set of receivers
    refused: dict[str, int] = {}
    bad_errnos = []
    by_kind = {k: 0 for k in KINDS}
    for s, n, kind, target, rc in sent:
        if rc:
            name = errno.errorcode.get(rc, str(rc))
            refused[name] = refused.get(name, 0) + 1
            if rc not in SHEET_ERRNOS:
                bad_errnos.append(name)
            expect[(s, n)] = (kind, set())
            continue
        by_kind[KINDS[kind]] += 1
        expect[(s, n)] = (kind, set(members[target]) if kind == BROADCAST else {target})
    got: dict[tuple, list] = {}
    foreign = 0
    for r, s, n, kind, target in received:
        if s < 0:
            foreign += 1
            continue
        got.setdefault((s, n), []).append(r)
    duplicates = misdelivered = lost = 0
    missing_bc: dict[int, int] = {}
    copies_expected = copies_received = 0
    for key, (kind, receivers) in expect.items():
        rs = got.pop(key, [])
        copies_received += len(rs)
        copies_expected += len(receivers)
        duplicates += len(rs) - len(set(rs))
        misdelivered += len(set(rs) - receivers)
        missing = receivers - set(rs)
        if kind == BROADCAST:
            for r in missing:
                missing_bc[r] = missing_bc.get(r, 0) + 1
        else:
            lost += len(missing)
    unknown = sum(len(v) for v in got.values())      # received, never sent
    over_counted = 0
    for r in set(missing_bc) | set(dropped):
        m, d = missing_bc.get(r, 0), dropped.get(r, 0)
        if m > d:
            lost += m - d
        elif d > m:
            over_counted += d - m
    return {"messages": len(sent), "accepted": len(sent) - sum(refused.values()),
            "accepted_by_kind": by_kind, "refused": refused, "refused_bad_errnos": bad_errnos,
            "copies_expected": copies_expected, "delivered": copies_received,
            "dropped_counted": sum(dropped.values()), "lost": lost, "duplicates": duplicates,
            "misdelivered": misdelivered + unknown, "drops_over_counted": over_counted,
            "kernel_or_foreign": foreign}


def summary(res) -> str:
    kib = res.get("server_kib", {})
    lines = [
        f"kdbusfs load: {res['connections']} connections in {res['procs']} processes, "
        f"{res['seconds']} s of traffic, {res['mode']} pools of {res['pool_size'] // 1024} KiB, "
        f"{res['slow_percent']}% slow readers, seed {res['seed']}",
        f"  connections      {res['connections']} (set up in {res.get('setup_seconds')} s)",
        f"  messages         {res.get('messages')} sent, {res.get('accepted')} accepted "
        f"{res.get('accepted_by_kind')}, refused {res.get('refused')}",
        f"  copies           {res.get('copies_expected')} expected, {res.get('delivered')} "
        f"delivered, {res.get('dropped_counted')} counted as dropped",
        f"  lost             {res.get('lost')}   duplicates {res.get('duplicates')}   "
        f"misdelivered {res.get('misdelivered')}   drops over-counted "
        f"{res.get('drops_over_counted')}",
        f"  server memory    start {kib.get('start_rss')} KiB, connected "
        f"{kib.get('connected_rss')} KiB, peak VmRSS {kib.get('peak_rss')} KiB, VmHWM "
        f"{kib.get('VmHWM')} KiB; growth under traffic {kib.get('traffic_growth')} KiB "
        f"(quota bound {kib.get('quota_bound')} KiB)",
        f"  server fds       {res.get('server_fds_baseline')} idle, "
        f"{res.get('server_fds_connected')} connected, {res.get('server_fds_after')} after",
        f"  server exit      {res.get('server_exit')}",
        f"  problems         {res['problems'] or 'none'}",
        f"  result           {'OK' if res['ok'] else 'FAILED'}",
    ]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scripts/load", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=30)
    p.add_argument("--conns", type=int, default=1000)
    p.add_argument("--procs", type=int, default=8)
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--pool-size", type=int, default=64 * 1024)
    p.add_argument("--slow", type=int, default=5, metavar="PERCENT",
                   help="connections that read nothing until the end (default 5%%)")
    p.add_argument("--seed", type=int)
    p.add_argument("--pushed", action="store_true", help="pushed pools instead of passthrough")
    p.add_argument("--json", action="store_true")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("scripts/load needs root (it mounts a kdbusfs)", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    res = run(a.seconds, a.conns, a.procs, a.groups, a.pool_size, a.pushed, a.seed, a.slow,
              log=lambda m: print(m, file=sys.stderr))
    print(json.dumps(res, indent=1) if a.json else summary(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
