"""Faults (issue 7, part 3): clients killed in the middle of a command, clients
that misbehave, and a mount or server that goes away under its callers.

Every client runs in its own process with timeouts on every read
(tests/integration/peers.py); "killed in the middle" means the process was
seen waiting inside a FUSE request (/proc/PID/wchan) when SIGKILL hit it.
After each test the server must still answer, log no exception, and (unless
the test stopped it) give back every descriptor and exit cleanly.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import threading
import time

import pytest

from kdbusfs.abi import constants as C
from kdbusfs.client import Connection, make_bus
from kdbusfs.tools.server import Server, is_mounted, proc_state

from tests.integration.peers import Peer

NOBODY = 65534
BIG = 1536 * 1024
# a test stuck in a syscall cannot be stopped by a signal: the thread method
# dumps every stack and ends the run instead of letting it hang
pytestmark = pytest.mark.timeout(90, method="thread")


def in_request(pid: int) -> bool:
    """Whether a thread of `pid` waits for a FUSE answer."""
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/wchan") as f:
                w = f.read()
            if w.startswith(("request_wait_answer", "fuse_")):
                return True
    except OSError:
        pass
    return False


def wait_in_request(pid: int, timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if in_request(pid):
            return True
        time.sleep(0.001)
    return False


def sigkill_and_reap(peer: Peer, timeout: float = 5.0) -> float:
    """SIGKILL; the process must be gone within `timeout` (an unanswered
    FUSE request would leave it in D state, unkillable)."""
    t0 = time.monotonic()
    os.kill(peer.pid, signal.SIGKILL)
    try:
        peer.proc.wait(timeout)
    except Exception:
        raise AssertionError(f"peer {peer.pid} still there {timeout}s after SIGKILL, state "
                             f"{proc_state(peer.pid)}") from None
    peer._close_pipes()
    return time.monotonic() - t0


def healthy(path: str) -> None:
    """A fresh bus and a request/reply round trip work."""
    with make_bus(path, f"ok{time.monotonic_ns()}") as bus:
        with Connection.open(bus.path) as a, Connection.open(bus.path) as b:
            cookie = a.send(b.id, b"ping", expect_reply=True, timeout=5)
            req = b.recv_wait(5)
            assert req is not None and req.cookie == cookie and req.payload == b"ping"
            b.reply(req, b"pong")
            rep = a.recv_wait(5)
            assert rep is not None and rep.payload == b"pong"


def id_removals(conn: Connection, ids: set[int], timeout: float = 5.0) -> set[int]:
    seen = set()
    end = time.monotonic() + timeout
    while ids - seen and time.monotonic() < end:
        m = conn.recv_wait(max(0.0, end - time.monotonic()))
        if m is not None and m.kind == "id_remove":
            seen.add(m.notification.id)
    return seen


_PEERS: list[Peer] = []


def peer(*a, **kw) -> Peer:
    p = Peer(*a, **kw)
    _PEERS.append(p)
    return p


def close_quietly(*objs) -> None:
    """close() of a file whose server is gone fails (ENOTCONN) after
    releasing the descriptor; that is not what these tests look at."""
    for o in objs:
        with contextlib.suppress(OSError):
            o.close()


@pytest.fixture
def srv():
    s = Server().start()
    s.base_fds = s.fds()
    s.base_threads = s.status().get("Threads")
    s.expect_clean_exit = True
    try:
        yield s
    finally:
        while _PEERS:
            p = _PEERS.pop()
            if p.proc.poll() is None:
                p.kill()
            else:
                p._close_pipes()
        alive = s.alive()
        if alive and s.expect_clean_exit:
            end = time.monotonic() + 10
            while s.fds() != s.base_fds and time.monotonic() < end:
                time.sleep(0.05)
            fds = s.fds()
        rc = s.stop()
        problems = s.problems()
        log = s.log()
        s.cleanup()
        assert "Traceback" not in log, log
        if alive and s.expect_clean_exit:
            assert fds == s.base_fds, f"server fds {fds}, {s.base_fds} before; {log}"
            assert rc == 0, f"server exit {rc}: {log}"
            assert not problems, problems


# -- clients killed in the middle ------------------------------------------------------

SENDER = f"""
conn = Connection.open(sys.argv[1], pool_size=1 << 20)
dst = int(sys.argv[2])
payload = bytes(range(256)) * ({BIG} // 256)
say("ready", conn.id)
while True:
    try:
        conn.send(dst, payload)
    except OSError as e:
        if e.errno not in (errno.ENOBUFS, errno.EXFULL):
            raise
"""


def test_sigkill_in_the_middle_of_send(srv):
    """Senders of 1.5 MiB messages are killed inside SEND: the receiver only
    ever sees whole messages, each sender's disconnect is announced, and the
    server goes on."""
    expected = bytes(range(256)) * (BIG // 256)
    with make_bus(srv.path, "send", access="world") as bus:
        rx = Connection.open(bus.path, pool_size=64 << 20)
        rx.add_match(notify=["id_remove"])
        got = {"whole": 0, "torn": 0}
        removed = set()
        stop = threading.Event()

        def drain():
            while not stop.is_set():
                m = rx.recv_wait(0.2)
                if m is None:
                    continue
                if m.kind == "id_remove":
                    removed.add(m.notification.id)
                elif m.payload == expected:
                    got["whole"] += 1
                else:
                    got["torn"] += 1
        t = threading.Thread(target=drain)
        t.start()
        killed, inside = set(), 0
        try:
            for _ in range(5):
                p = peer(SENDER, bus.path, rx.id)
                killed.add(int(p.expect("ready")[0]))
                time.sleep(0.05)
                inside += wait_in_request(p.pid, 5)
                sigkill_and_reap(p)
            end = time.monotonic() + 5
            while killed - removed and time.monotonic() < end:
                time.sleep(0.05)
        finally:
            stop.set()
            t.join(10)
        assert killed <= removed, f"no ID_REMOVE for {killed - removed}"
        assert got["torn"] == 0 and got["whole"] > 0, got
        assert inside >= 4, f"only {inside} of 5 kills landed inside a request"
        listed = {e.id for e in rx.list()}
        assert not killed & listed
        rx.close()
    healthy(srv.path)


RECEIVER = """
conn = Connection.open(sys.argv[1])
say("ready", conn.id)
conn._recv(C.KDBUSFS_RECV_BLOCK, 0)
say("returned")
"""


def test_sigkill_in_the_middle_of_a_blocking_recv(srv):
    with make_bus(srv.path, "recv", access="world") as bus:
        watch = Connection.open(bus.path)
        watch.add_match(notify=["id_remove"])
        p = peer(RECEIVER, bus.path)
        pid_conn = int(p.expect("ready")[0])
        assert wait_in_request(p.pid), "the RECV did not park"
        sigkill_and_reap(p)
        assert pid_conn in id_removals(watch, {pid_conn})
        with pytest.raises(OSError) as e:
            watch.send(pid_conn, b"late")
        assert e.value.errno == errno.ENXIO
        # parked RECVs of others still wake
        other = Connection.open(bus.path)
        res = {}
        t = threading.Thread(target=lambda: res.update(
            info=other._recv(C.KDBUSFS_RECV_BLOCK, 0)))
        t.start()
        time.sleep(0.2)
        watch.send(other.id, b"wake up")
        t.join(5)
        assert not t.is_alive() and res["info"] is not None
        other.close()
        watch.close()
    healthy(srv.path)


CALLER = """
conn = Connection.open(sys.argv[1])
say("ready", conn.id)
conn.call("org.robust.Slow", b"are you there", timeout=60)
say("returned")
"""


def test_sigkill_in_the_middle_of_a_synchronous_call(srv):
    with make_bus(srv.path, "call", access="world") as bus:
        service = Connection.open(bus.path)
        service.acquire_name("org.robust.Slow")
        service.add_match(notify=["id_remove"])
        p = peer(CALLER, bus.path)
        caller_id = int(p.expect("ready")[0])
        req = service.recv_wait(5)
        assert req is not None and req.src_id == caller_id
        assert wait_in_request(p.pid), "the call did not block"
        took = sigkill_and_reap(p)
        assert took < 5
        assert caller_id in id_removals(service, {caller_id})
        with pytest.raises(OSError) as e:
            service.reply(req, b"too late")
        assert e.value.errno == errno.ENXIO
        # the service still answers callers that stay
        with Connection.open(bus.path) as c2:
            res = {}
            t = threading.Thread(target=lambda: res.update(
                r=c2.call("org.robust.Slow", b"again", timeout=10)))
            t.start()
            req2 = None
            end = time.monotonic() + 5
            while time.monotonic() < end:
                req2 = service.recv_wait(1)
                if req2 is not None and req2.src_id == c2.id:
                    break
            service.reply(req2, b"here")
            t.join(10)
            assert res["r"].payload == b"here"
        service.close()
    healthy(srv.path)


# -- clients that misbehave ---------------------------------------------------------------

def test_a_client_that_never_frees_its_pool(srv):
    """Received but never freed slices fill the pool: senders get EXFULL
    (ABI §6.7), the server's memory stays bounded by the pool, nobody else
    notices, and one FREE makes room again."""
    with make_bus(srv.path, "nofree", access="world") as bus:
        rss0 = srv.status()["VmRSS"]
        hoarder = Connection.open(bus.path, pool_size=64 * 1024)
        tx = Connection.open(bus.path)
        kept = []
        for i in range(10_000):
            try:
                tx.send(hoarder.id, bytes(1000))
            except OSError as e:
                assert e.errno == errno.EXFULL, e
                break
            m = hoarder.recv(keep=True)
            kept.append(m.offset)
        else:
            pytest.fail("the pool never filled")
        assert 40 <= len(kept) <= 64, len(kept)
        assert srv.status()["VmRSS"] - rss0 < 8 * 1024      # KiB
        healthy(srv.path)
        hoarder.free(kept.pop())
        tx.send(hoarder.id, bytes(1000))
        tx.close()
        hoarder.close()


VICTIM = """
conn = Connection.open(sys.argv[1])
say("ready", conn.id)
ask()                                   # read nothing until told
got = []
for m in conn.messages(1.0):
    got.append(m.payload[:6].decode())
send_json("got", got)
"""

OTHER = """
conn = Connection.open(sys.argv[1])
dst = int(sys.argv[2])
ok = 0
for i in range(5):
    conn.send(dst, b"other%d" % i)
    ok += 1
say("sent", ok)
"""


def test_a_client_that_floods_another(srv):
    """A flood from one user fills only that user's share of the victim's
    queue: the flooder gets ENOBUFS at once, never blocks, and another user
    still reaches the victim (quota per sending user, ABI §6.7)."""
    with make_bus(srv.path, "flood", access="world") as bus:
        victim = peer(VICTIM, bus.path, uid=NOBODY)
        vid = int(victim.expect("ready")[0])
        flooder = Connection.open(bus.path)
        rss0 = srv.status()["VmRSS"]
        ok = refused = 0
        t0 = time.monotonic()
        for i in range(2000):
            try:
                flooder.send(vid, b"flood%d" % (i % 10))
                ok += 1
            except OSError as e:
                assert e.errno == errno.ENOBUFS, e
                refused += 1
        took = time.monotonic() - t0
        assert ok <= 256 and refused >= 2000 - 256, (ok, refused)
        assert took < 20
        grew = srv.status()["VmRSS"] - rss0
        other = peer(OTHER, bus.path, vid, uid=NOBODY)
        assert other.expect("sent") == ["5"]
        other.finish()
        victim.tell("go")
        got = victim.json("got", timeout=30)
        victim.finish()
        assert sum(1 for g in got if g.startswith("flood")) == ok
        assert sorted(g for g in got if g.startswith("other")) == [f"other{i}" for i in range(5)]
        assert grew < 16 * 1024, grew           # KiB: the flood is bounded by the quota
        flooder.close()


def test_a_slow_reader_loses_broadcasts_and_is_told(srv):
    """Broadcasts to a reader that does not keep up are dropped at that
    reader and counted (dropped_msgs); the sender and a fast reader are not
    affected."""
    with make_bus(srv.path, "slow", access="world") as bus:
        tx = Connection.open(bus.path)
        fast = Connection.open(bus.path)
        slow = Connection.open(bus.path, pool_size=64 * 1024)
        key = tx.bloom("member:Tick")
        for c in (fast, slow):
            c.add_match(bloom_mask=key)
        n = 1000
        fast_got = 0
        for i in range(n):
            tx.emit(b"tick%d" % i, bloom=key)
            while (m := fast.recv()) is not None:
                assert m.payload == b"tick%d" % fast_got
                fast_got += 1
        slow_got = [m for m in slow.messages(0.5)]
        assert fast_got == n and fast.dropped == 0
        assert 0 < len(slow_got) < n
        assert len(slow_got) + slow.dropped == n, (len(slow_got), slow.dropped)
        # what it got is the beginning, in order
        assert [m.payload for m in slow_got] == [b"tick%d" % i for i in range(len(slow_got))]
        for c in (tx, fast, slow):
            c.close()


# -- the mount or the server goes away ---------------------------------------------------

BLOCKED = """
conn = Connection.open(sys.argv[1])
mode = sys.argv[2]
say("ready", conn.id)
t0 = time.monotonic()
try:
    if mode == "recv":
        conn._recv(C.KDBUSFS_RECV_BLOCK, 0)
    else:
        conn.call("org.robust.Silent", b"hello", timeout=60)
    say("result", 0, round(time.monotonic() - t0, 3))
except OSError as e:
    say("result", e.errno, round(time.monotonic() - t0, 3))
try:
    conn.send(conn.id, b"after")
    say("after", 0)
except OSError as e:
    say("after", e.errno)
"""

GONE = {errno.ECONNABORTED, errno.ENOTCONN}


def _blocked_callers(bus_path):
    silent = Connection.open(bus_path)
    silent.acquire_name("org.robust.Silent")
    peers = [peer(BLOCKED, bus_path, mode) for mode in ("recv", "call")]
    for p in peers:
        p.expect("ready")
    for p in peers:
        assert wait_in_request(p.pid), "caller did not block"
    return silent, peers


def _results(peers, timeout=10.0):
    out = []
    for p in peers:
        rc, took = p.expect("result", timeout)
        after = p.expect("after", timeout)[0]
        p.finish()
        out.append((int(rc), float(took), int(after)))
    return out


def test_server_stopped_with_sigterm(srv):
    """SIGTERM: the server unmounts and exits 0; blocked callers get an
    error at once, later calls too, and nobody is left stuck."""
    bus = make_bus(srv.path, "term", access="world")
    silent, peers = _blocked_callers(bus.path)
    srv.signal(signal.SIGTERM)
    results = _results(peers)
    assert srv.proc.wait(10) == 0, srv.log()
    assert not is_mounted(srv.path)
    for rc, took, after in results:
        assert rc in GONE, results
        assert after in GONE, results
    srv.expect_clean_exit = False
    close_quietly(silent, bus)


def test_server_killed(srv):
    """SIGKILL: blocked callers get ECONNABORTED, later calls ENOTCONN
    (fuse-notes: server death); every caller can still exit."""
    bus = make_bus(srv.path, "kill", access="world")
    silent, peers = _blocked_callers(bus.path)
    srv.signal(signal.SIGKILL)
    results = _results(peers)
    for rc, took, after in results:
        assert rc in GONE and took < 10, results
        assert after == errno.ENOTCONN, results
    with pytest.raises(OSError) as e:
        silent.send(silent.id, b"x")
    assert e.value.errno == errno.ENOTCONN
    srv.expect_clean_exit = False
    close_quietly(silent, bus)


def test_mount_unmounted_while_busy(srv):
    """umount -l while callers are blocked and a sender is busy: the mount
    leaves the namespace at once; the callers keep their files and can
    still be killed (none unkillable); when the last one is gone the
    server sees the end of its mount and exits 0."""
    bus = make_bus(srv.path, "busy", access="world")
    silent, peers = _blocked_callers(bus.path)
    busy = peer(SENDER, bus.path, silent.id)
    busy.expect("ready")
    probe = Connection.open(bus.path)
    srv.unmount(lazy=True)
    assert not is_mounted(srv.path)
    assert srv.alive()
    # the old files still work for whoever holds them
    silent.send(probe.id, b"still here")
    assert probe.recv_wait(5).payload == b"still here"
    for p in peers + [busy]:
        sigkill_and_reap(p)
    close_quietly(probe, silent, bus)
    assert srv.proc.wait(15) == 0, srv.log()
    srv.expect_clean_exit = False
