"""Messages across processes and uids on a real mount: by id and by name,
synchronous calls, poll wake-ups, pool isolation, signals on blocked calls."""

import errno
import os
import select
import signal
import subprocess
import sys
import struct
import time

import pytest

from kdbusfs.abi import constants as K
from kdbusfs.abi.items import encode_item

from .procs import ENV, ROOT, actor, finish, line, run_actor
from .rawabi import Conn, cmd, ioctl, make_bus, name_item


@pytest.fixture
def bus(any_mount):
    fd, path = make_bus(any_mount.path)
    yield path
    os.close(fd)


def test_call_by_name_across_processes(bus):
    svc = actor("echo", bus, "org.example.Echo")
    try:
        assert line(svc)[0] == "ready"
        out = run_actor("call", bus, "org.example.Echo", "hello")
        assert out == [["reply", "2", "echo:", "hello"]]
    finally:
        finish(svc)


def test_clients_as_different_uids_need_policy(mount):
    """uid 1000 owns the bus; uid 1001 may only talk to it once a policy
    holder (the bus owner) grants TALK; replies need no policy."""
    owner = actor("makebus", mount.path, "shared", uid=1000)
    try:
        _, bus = line(owner)
        svc = actor("echo", bus, "org.example.Shared", "2", uid=1000)
        assert line(svc)[0] == "ready"
        out = run_actor("call", bus, "org.example.Shared", "first", uid=1001)
        assert out == [["error", str(errno.EPERM)]]
        holder = _policy_holder(bus, "org.example.Shared")
        out = run_actor("call", bus, "org.example.Shared", "second", uid=1001)
        assert out[0][0] == "reply" and out[0][-1] == "second"
        holder.close()
        finish(svc)
    finally:
        finish(owner)


def _policy_holder(bus, name):
    items = name_item(K.KDBUS_ITEM_NAME, name) + encode_item(
        K.KDBUS_ITEM_POLICY_ACCESS,
        (K.KDBUS_POLICY_ACCESS_WORLD).to_bytes(8, "little")
        + (K.KDBUS_POLICY_TALK).to_bytes(8, "little") + bytes(8))
    # root opens it: privileged, so it counts as owner of the bus
    return Conn(bus, flags=K.KDBUS_HELLO_POLICY_HOLDER, items=items)


def test_mapping_shows_only_its_own_pool(bus):
    a, b, c = Conn(bus), Conn(bus), Conn(bus)
    secret = b"only-for-b-" + os.urandom(8).hex().encode()
    assert a.send(b.id, secret)[0] == 0
    assert a.send(c.id, b"for-c")[0] == 0
    rc, m = b.recv(K.KDBUS_RECV_PEEK)
    assert rc == 0 and m["payload"] == secret
    assert secret in bytes(b.pool)
    for other in (a, c):
        assert secret not in bytes(other.pool)
    # after the kernel drops its cached pages, faults are served from our copy
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3")
    assert secret in bytes(b.pool) and secret not in bytes(c.pool)
    for x in (a, b, c):
        x.close()


def test_poll_reports_pollin_when_a_message_is_queued(bus):
    a, b = Conn(bus), Conn(bus)
    p = select.poll()
    p.register(b.fd, select.POLLIN)
    assert p.poll(0) == []
    child = subprocess.Popen([sys.executable, "-c", f"""
import time, sys
sys.path.insert(0, {ROOT!r})
from tests.integration.rawabi import Conn
c = Conn({bus!r})
time.sleep(0.3)
assert c.send({b.id}, b"wake up")[0] == 0
"""], env=ENV)
    t0 = time.monotonic()
    ev = p.poll(10_000)
    assert ev and ev[0][1] & select.POLLIN
    assert 0.2 < time.monotonic() - t0 < 5
    assert b.recv()[1]["payload"] == b"wake up"
    assert child.wait(10) == 0
    # epoll too
    ep = select.epoll()
    ep.register(b.fd, select.EPOLLIN)
    assert ep.poll(0) == []
    a.send(b.id, b"again")
    assert ep.poll(5)
    ep.close()
    a.close()
    b.close()


def test_poll_on_a_dead_connection_is_hup(bus):
    a = Conn(bus)
    assert ioctl(a.fd, K.KDBUS_CMD_BYEBYE, cmd(24)) == 0
    p = select.poll()
    p.register(a.fd, select.POLLIN)
    ev = p.poll(1000)
    assert ev and ev[0][1] & (select.POLLHUP | select.POLLERR)
    a.close()


BLOCKED_CALL = r"""
import errno, signal, sys, time
sys.path.insert(0, {root!r})
from kdbusfs.abi import constants as K
from tests.integration.rawabi import Conn
signal.signal(signal.SIGUSR1, lambda *a: None)
c = Conn({bus!r})
print("ready", flush=True)
t0 = time.monotonic()
rc, _ = c.send({dst}, b"never answered", flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=5,
               timeout_or_reply=time.monotonic_ns() + 60 * 10**9, sync=True)
print(rc, round(time.monotonic() - t0, 2), flush=True)
"""


def test_a_signal_releases_a_blocked_sync_call_with_eintr(bus):
    silent = Conn(bus)
    p = subprocess.Popen([sys.executable, "-c", BLOCKED_CALL.format(root=ROOT, bus=bus,
                                                                     dst=silent.id)],
                         env=ENV, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.5)
    os.kill(p.pid, signal.SIGUSR1)
    out = p.stdout.readline().split()
    p.wait(10)
    p.stdout.close()
    assert int(out[0]) == errno.EINTR and float(out[1]) < 5
    silent.close()


def test_sync_call_to_a_peer_that_dies_gets_epipe(bus):
    silent = Conn(bus)
    p = subprocess.Popen([sys.executable, "-c", BLOCKED_CALL.format(root=ROOT, bus=bus,
                                                                     dst=silent.id)],
                         env=ENV, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    silent.close()
    out = p.stdout.readline().split()
    p.wait(10)
    p.stdout.close()
    assert int(out[0]) == errno.EPIPE


def test_sync_call_times_out(bus):
    silent = Conn(bus)
    caller = Conn(bus)
    t0 = time.monotonic()
    rc, _ = caller.send(silent.id, b"x", flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=1,
                        timeout_or_reply=time.monotonic_ns() + 300_000_000, sync=True)
    assert rc == errno.ETIMEDOUT and 0.25 < time.monotonic() - t0 < 3
    silent.close()
    caller.close()


def test_large_payload_round_trip(bus):
    a, b = Conn(bus, pool_size=8 << 20), Conn(bus, pool_size=8 << 20)
    data = os.urandom(1 << 20)
    assert a.send(b.id, data)[0] == 0
    rc, m = b.recv()
    assert rc == 0 and m["payload"] == data
    a.close()
    b.close()


def test_blocking_recv_extension(bus):
    """KDBUSFS_RECV_BLOCK parks the RECV until a message arrives; a signal
    releases it with EINTR; a dying connection with ECONNRESET."""
    import threading
    a, b = Conn(bus), Conn(bus)
    got = {}

    def receiver():
        got["rc"], got["msg"] = b.recv(K.KDBUSFS_RECV_BLOCK)

    t = threading.Thread(target=receiver)
    t.start()
    time.sleep(0.3)
    assert t.is_alive()                 # parked: nothing to receive yet
    assert a.send(b.id, b"unblock")[0] == 0
    t.join(5)
    assert got["rc"] == 0 and got["msg"]["payload"] == b"unblock"
    # a message already queued is returned at once
    a.send(b.id, b"queued")
    assert b.recv(K.KDBUSFS_RECV_BLOCK)[1]["payload"] == b"queued"
    p = subprocess.Popen([sys.executable, "-c", f"""
import signal, sys
sys.path.insert(0, {ROOT!r})
from kdbusfs.abi import constants as K
from tests.integration.rawabi import Conn
signal.signal(signal.SIGUSR1, lambda *a: None)
c = Conn({bus!r})
print("ready", flush=True)
print(c.recv(K.KDBUSFS_RECV_BLOCK)[0], flush=True)
"""], env=ENV, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    os.kill(p.pid, signal.SIGUSR1)
    assert int(p.stdout.readline()) == errno.EINTR
    p.wait(10)
    p.stdout.close()
    a.close()
    b.close()


def test_large_vec_from_unmapped_memory_is_efault_and_leaves_nothing(bus):
    """Large vecs are copied straight from the sender into the receiver's
    pool; a sender whose memory is not there gets EFAULT, and the receiver's
    pool and queue show no trace of the attempt."""
    from .rawabi import unmapped_address
    a, b = Conn(bus), Conn(bus, pool_size=8 << 20)
    vec = encode_item(K.KDBUS_ITEM_PAYLOAD_VEC, struct.pack("<QQ", 1 << 20, unmapped_address()))
    assert a.send(b.id, extra_items=vec)[0] == errno.EFAULT
    assert b.recv()[0] == errno.EAGAIN
    data = os.urandom(1 << 20)
    for _ in range(3):   # the space was given back: many 1 MiB messages still fit
        assert a.send(b.id, data)[0] == 0
        assert b.recv()[1]["payload"] == data
    a.close()
    b.close()


def test_a_writable_mapping_changes_nothing_for_anyone_else(any_mount):
    """kdbus refused writable pool mappings (EPERM).  A FUSE server is never
    asked about mmap, so it cannot refuse one (seals on a passthrough memfd
    are checked against the FUSE file, not the memfd).  What matters holds:
    a client scribbling on its mapping reaches only its own pool; nobody
    else's messages and no later delivery change."""
    import mmap
    fd, path = make_bus(any_mount.path)
    a, b = Conn(path), Conn(path)
    a.send(b.id, b"original")
    rc, m = b.recv(K.KDBUS_RECV_PEEK)
    try:
        w = mmap.mmap(b.fd, b.pool_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    except PermissionError:
        w = None
    if w is not None:
        start = m["offset"]
        w[start:start + 4096] = b"X" * 4096
        w.close()
    c = Conn(path)
    a.send(c.id, b"original")
    a.send(b.id, b"second")
    assert c.recv()[1]["payload"] == b"original"
    b.free(m["offset"])
    b.recv()                    # the PEEKed one
    assert b.recv()[1]["payload"] == b"second"
    for x in (a, b, c):
        x.close()
    os.close(fd)
