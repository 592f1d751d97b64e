"""SEND / RECV / replies / call() on a real mount."""

from __future__ import annotations

import errno
import fcntl
import os
import threading
import time

import pytest

from kdbusfs.abi import constants as C
from kdbusfs.client import ANY_PRIORITY, ATTACH_ALL, Connection


def recv1(conn: Connection, timeout: float = 5.0, **kw):
    msg = conn.recv_wait(timeout, **kw)
    assert msg is not None, "no message arrived"
    return msg


def serve_once(conn: Connection, prefix: bytes = b"echo: ", timeout: float = 10.0):
    """A thread answering one request on ``conn``."""
    result = {}

    def run():
        try:
            msg = recv1(conn, timeout)
            result["request"] = msg
            conn.reply(msg, prefix + msg.payload)
        except BaseException as e:  # surfaced by the test
            result["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, result


def test_send_by_id(connect):
    a, b = connect(), connect()
    cookie = b.send(a.id, b"hello")
    m = recv1(a)
    assert (m.src_id, m.dst_id, m.cookie, m.payload) == (b.id, a.id, cookie, b"hello")
    assert m.payload_type == C.KDBUS_PAYLOAD_DBUS
    assert m.kind == "message" and m.dst_name is None
    assert a.recv() is None


def test_cookies_increase_and_can_be_chosen(connect):
    a, b = connect(), connect()
    c1 = b.send(a.id, b"1")
    c2 = b.send(a.id, b"2")
    c3 = b.send(a.id, b"3", cookie=0xFEEDFACE)
    assert c2 == c1 + 1 and c3 == 0xFEEDFACE
    assert [recv1(a).cookie for _ in range(3)] == [c1, c2, 0xFEEDFACE]


def test_multipart_and_str_payload(connect):
    a, b = connect(), connect()
    b.send(a.id, [b"ab", b"", bytearray(b"cde"), memoryview(b"fgh"), "ij"])
    m = recv1(a)
    assert m.payload == b"abcdefghij"
    assert len(m.vecs) == 4  # the empty part is not sent
    b.send(a.id)  # no payload at all
    assert recv1(a).payload == b""


def test_large_payload(connect):
    a, b = connect(), connect()
    data = os.urandom(1024 * 1024)
    b.send(a.id, data)
    assert recv1(a).payload == data


def test_send_by_name(connect):
    a, b = connect(), connect()
    a.acquire_name("org.example.Target")
    b.send("org.example.Target", b"by name")
    m = recv1(a)
    assert m.dst_id == 0 and m.dst_name == "org.example.Target"
    assert m.payload == b"by name" and m.src_id == b.id


def test_send_errors(connect):
    a = connect()
    with pytest.raises(OSError) as e:
        a.send("org.example.Nobody", b"x")
    assert e.value.errno == errno.ESRCH
    with pytest.raises(OSError) as e:
        a.send(12345, b"x")
    assert e.value.errno == errno.ENXIO
    with pytest.raises(OSError) as e:
        a.send("not-a-name", b"x")
    assert e.value.errno == errno.EINVAL
    with pytest.raises(TypeError):
        a.send(1.5, b"x")


def test_async_request_and_reply(connect):
    client, service = connect(), connect()
    cookie = client.send(service.id, b"ping", expect_reply=True, timeout=5)
    req = recv1(service)
    assert req.expects_reply and req.cookie == cookie
    assert req.timeout_ns > time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    service.reply(req, b"pong")
    rep = recv1(client)
    assert rep.is_reply and rep.kind == "reply"
    assert (rep.cookie_reply, rep.src_id, rep.payload) == (cookie, service.id, b"pong")
    # the reply slot is consumed
    with pytest.raises(OSError) as e:
        service.reply(req, b"again")
    assert e.value.errno == errno.EBADSLT


def test_call(connect):
    client, service = connect(), connect()
    service.acquire_name("org.example.Echo")
    t, result = serve_once(service)
    reply = client.call("org.example.Echo", b"hello", timeout=10)
    t.join(10)
    assert "error" not in result
    assert reply.payload == b"echo: hello"
    assert reply.src_id == service.id
    assert reply.cookie_reply == result["request"].cookie
    # the reply went to the pool, not the queue, and was freed already
    assert client.recv() is None


def test_call_by_id_many(connect):
    client, service = connect(), connect()
    for i in range(20):
        t, _ = serve_once(service, prefix=b"")
        assert client.call(service.id, str(i).encode(), timeout=10).payload == str(i).encode()
        t.join(10)


def test_call_timeout(connect):
    client, service = connect(), connect()
    start = time.monotonic()
    with pytest.raises(OSError) as e:
        client.call(service.id, b"nobody answers", timeout=0.3)
    assert e.value.errno == errno.ETIMEDOUT
    assert time.monotonic() - start >= 0.25
    # no REPLY_TIMEOUT message for a sync call
    assert client.recv() is None


def test_call_peer_dies(connect, bus):
    client = connect()
    service = Connection.open(bus.path)

    def die():
        assert service.wait(5)
        service.close()

    t = threading.Thread(target=die, daemon=True)
    t.start()
    with pytest.raises(OSError) as e:
        client.call(service.id, b"x", timeout=10)
    t.join(10)
    assert e.value.errno == errno.EPIPE


def test_call_cancel_fd(connect):
    client, service = connect(), connect()
    r, w = os.pipe()
    try:
        threading.Timer(0.2, os.write, (w, b"!")).start()
        with pytest.raises(OSError) as e:
            client.call(service.id, b"x", timeout=10, cancel_fd=r)
        assert e.value.errno == errno.ECANCELED
    finally:
        os.close(r)
        os.close(w)


def test_reply_timeout_notification(connect):
    client, service = connect(), connect()
    cookie = client.send(service.id, b"x", expect_reply=True, timeout=0.1)
    m = recv1(client, 5)
    assert m.kind == "reply_timeout" and m.is_kernel
    assert m.notification.cookie == cookie and m.cookie_reply == cookie
    assert m.dst_id == client.id and m.flags == 0


def test_reply_dead_notification(connect, bus):
    client = connect()
    service = Connection.open(bus.path)
    cookie = client.send(service.id, b"x", expect_reply=True, timeout=10)
    service.close()
    m = recv1(client, 5)
    assert m.kind == "reply_dead" and m.notification.cookie == cookie


def test_recv_peek(connect):
    a, b = connect(), connect()
    cookie = b.send(a.id, b"peeked")
    assert a.wait(5)
    p = a.recv(peek=True)
    assert p.cookie == cookie and p.payload == b"peeked"
    again = a.recv(peek=True)
    assert again.cookie == cookie and again.offset == p.offset
    m = a.recv()
    assert m.cookie == cookie
    assert a.recv() is None and a.recv(peek=True) is None


def test_recv_keep_and_free(connect):
    a, b = connect(), connect()
    b.send(a.id, b"kept")
    m = recv1(a, keep=True)
    assert m.payload == b"kept"
    a.free(m.offset)
    with pytest.raises(OSError) as e:
        a.free(m.offset)
    assert e.value.errno == errno.ENXIO
    a.free(a.pool_size)  # the "no slice" offset is a no-op


def test_recv_drop(connect):
    a, b = connect(), connect()
    b.send(a.id, b"first")
    b.send(a.id, b"second")
    assert a.wait(5)
    assert a.recv(drop=True) is None
    assert a.drop() is True
    assert a.drop() is False
    assert a.recv() is None


def test_drop_of_request_kills_reply(connect):
    client, service = connect(), connect()
    cookie = client.send(service.id, b"x", expect_reply=True, timeout=10)
    assert service.wait(5) and service.drop()
    m = recv1(client)
    assert m.kind == "reply_dead" and m.cookie_reply == cookie


def test_priorities(connect):
    a, b = connect(), connect()
    for prio in (5, -3, 0, -3, 7):
        b.send(a.id, str(prio).encode(), priority=prio)
    assert a.wait(5)
    # threshold: only priorities <= -4 -> nothing
    assert a.recv(priority=-4) is None
    got = [a.recv(priority=ANY_PRIORITY) for _ in range(3)]
    assert [(m.priority, m.payload) for m in got] == [(-3, b"-3"), (-3, b"-3"), (0, b"0")]
    # without USE_PRIORITY: oldest first
    assert [a.recv().priority for _ in range(2)] == [5, 7]


def test_wait(connect):
    a, b = connect(), connect()
    start = time.monotonic()
    assert a.wait(0.2) is False
    assert time.monotonic() - start >= 0.15
    threading.Timer(0.1, b.send, (a.id, b"wake")).start()
    assert a.wait(5) is True
    assert recv1(a).payload == b"wake"
    assert a.recv_wait(0.1) is None


def test_metadata_on_messages(connect):
    receiver = connect(attach_recv=ATTACH_ALL)
    sender = connect(attach_send=ATTACH_ALL, description="the-sender")
    sender.acquire_name("org.example.Sender")
    sender.send(receiver.id, b"meta")
    m = recv1(receiver)
    assert m.timestamp is not None and m.timestamp.monotonic_ns > 0
    assert m.creds.uid == os.getuid() and m.creds.egid == os.getegid()
    assert m.pids.pid == os.getpid()
    assert m.pid_comm and m.tid_comm
    assert m.names == [("org.example.Sender", C.KDBUS_NAME_PRIMARY)]
    assert m.description == "the-sender"
    assert m.caps is not None and m.caps.last_cap > 0
    assert m.exe and m.cgroup is not None


def test_fds_are_passed(connect):
    receiver = connect(accept_fd=True)
    sender = connect()
    r, w = os.pipe()
    try:
        sender.send(receiver.id, b"fd", fds=[r])
        m = recv1(receiver)
        assert m.fds is not None and len(m.fds) == 1
        assert not m.return_flags & C.KDBUS_RECV_RETURN_INCOMPLETE_FDS
        assert m.fds[0] >= 0
        os.write(w, b"through the bus")
        assert os.read(m.fds[0], 100) == b"through the bus"
        os.close(m.fds[0])
    finally:
        os.close(r)
        os.close(w)


def test_memfd_payload(connect):
    receiver, sender = connect(), connect()
    fd = os.memfd_create("payload", os.MFD_ALLOW_SEALING)
    try:
        os.write(fd, b"0123456789" * 100)
        seals = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE
        with pytest.raises(OSError) as e:  # not sealed yet
            sender.send(receiver.id, b"head", memfds=[fd])
        assert e.value.errno == errno.ETXTBSY
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
        sender.send(receiver.id, [b"head"], memfds=[(fd, 10, 20)])
        m = recv1(receiver)
        assert m.payload == b"head"
        assert len(m.memfds) == 1
        got = m.memfds[0]
        assert (got.start, got.size) == (10, 20)
        assert not m.return_flags & C.KDBUS_RECV_RETURN_INCOMPLETE_FDS and got.fd >= 0
        assert os.pread(got.fd, 20, 10) == (b"0123456789" * 2)
        os.close(got.fd)
    finally:
        os.close(fd)


def test_fds_refused_without_accept_fd(connect):
    receiver, sender = connect(), connect()
    r, w = os.pipe()
    try:
        with pytest.raises(OSError) as e:
            sender.call(receiver.id, b"fd", fds=[r], timeout=5)
        assert e.value.errno == errno.ECOMM
    finally:
        os.close(r)
        os.close(w)


def test_broadcast_overflow_counts_dropped(connect):
    receiver = connect(pool_size=16 * 4096)
    receiver.add_match(1)
    sender = connect()
    for _ in range(64):
        sender.emit(b"x" * 2048)
    total = 0
    while (m := receiver.recv()) is not None:
        if m.notification is not None:  # the match admits notifications too
            continue
        assert m.is_broadcast and m.src_id == sender.id
        assert m.payload == b"x" * 2048
        total += 1
    assert receiver.dropped > 0
    assert total + receiver.dropped == 64


def test_call_cancelled_by_a_canceller(connect):
    from kdbusfs.client import Canceller
    client, service = connect(), connect()
    with Canceller() as stop:
        assert not stop.cancelled
        threading.Timer(0.2, stop.cancel).start()
        t0 = time.monotonic()
        with pytest.raises(OSError) as e:
            client.call(service.id, b"x", timeout=10, cancel_fd=stop)
        assert e.value.errno == errno.ECANCELED and time.monotonic() - t0 < 5
        assert stop.cancelled
        # it stays cancelled: the next call with it ends at once
        with pytest.raises(OSError) as e:
            client.call(service.id, b"y", timeout=10, cancel_fd=stop)
        assert e.value.errno == errno.ECANCELED
    with pytest.raises(ValueError):
        stop.fileno()
