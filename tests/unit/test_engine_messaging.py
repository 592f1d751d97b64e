"""Unicast, names, replies, queue order and quota, driven without FUSE."""

import errno
import struct

import pytest

from kdbusfs.abi import constants as K
from kdbusfs.abi.errors import KdbusError
from kdbusfs.core import effects as fx
from kdbusfs.core.send import BLOCKED

from .engine import drain, hello, make_bus, make_domain, msg, recv


def err(fn, *a, **kw):
    with pytest.raises(KdbusError) as e:
        fn(*a, **kw)
    return e.value.errno


def test_ids_are_shared_with_buses_and_never_reused():
    d = make_domain()
    bus = make_bus(d)
    a = hello(d, bus)
    b = hello(d, bus)
    assert (bus.id, a.id, b.id) == (1, 2, 3)
    d.disconnect(a)
    assert hello(d, bus).id == 4


def test_unicast_by_id_layout():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus, recv=K.KDBUS_ATTACH_TIMESTAMP)
    assert d.send(a, msg(b.id, b"hello")) == (a.pool.size, 0, 0)
    m = recv(d, b)
    assert (m.src_id, m.dst_id, m.cookie, m.payload) == (a.id, b.id, 1, b"hello")
    assert m.types() == [K.KDBUS_ITEM_PAYLOAD_OFF, K.KDBUS_ITEM_TIMESTAMP]
    assert recv(d, b) is None


def test_effects_name_pool_writes_and_wakeups():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    d.take_effects()
    d.send(a, msg(b.id, b"x"))
    eff = d.take_effects()
    assert any(isinstance(e, fx.PoolWrite) and e.conn is b for e in eff)
    assert any(isinstance(e, fx.Readable) and e.conn is b for e in eff)


def test_destination_errors():
    d = make_domain()
    bus = make_bus(d)
    a = hello(d, bus)
    assert err(d.send, a, msg(999)) == errno.ENXIO
    assert err(d.send, a, msg(0, dst_name="org.no.One")) == errno.ESRCH


def test_names_acquire_queue_release_and_handover():
    d = make_domain()
    bus = make_bus(d)
    a, b, c = hello(d, bus), hello(d, bus), hello(d, bus)
    N = K
    f = d.name_acquire(a, "org.example.A", N.KDBUS_NAME_ALLOW_REPLACEMENT)
    assert f & N.KDBUS_NAME_PRIMARY and f & N.KDBUS_NAME_ACQUIRED
    # re-acquiring just updates flags, no ACQUIRED
    f = d.name_acquire(a, "org.example.A", N.KDBUS_NAME_ALLOW_REPLACEMENT)
    assert f & N.KDBUS_NAME_PRIMARY and not f & N.KDBUS_NAME_ACQUIRED
    assert err(d.name_acquire, b, "org.example.A", 0) == errno.EEXIST
    f = d.name_acquire(b, "org.example.A", N.KDBUS_NAME_QUEUE)
    assert f & N.KDBUS_NAME_IN_QUEUE and f & N.KDBUS_NAME_ACQUIRED
    # replacement: c jumps to the head, a (no QUEUE flag) loses its record
    f = d.name_acquire(c, "org.example.A", N.KDBUS_NAME_REPLACE_EXISTING)
    assert f & N.KDBUS_NAME_PRIMARY
    assert bus.registry.lookup("org.example.A").owner() is c
    assert err(d.name_release, a, "org.example.A") == errno.EADDRINUSE
    d.name_release(c, "org.example.A")
    assert bus.registry.lookup("org.example.A").owner() is b
    d.send(a, msg(0, b"to-b", dst_name="org.example.A"))
    assert recv(d, b).payload == b"to-b"
    d.disconnect(b)
    assert bus.registry.lookup("org.example.A") is None
    assert err(d.name_release, a, "org.example.A") == errno.ESRCH


def test_name_errors():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    assert err(d.name_acquire, a, "nodots", 0) == errno.EINVAL
    assert err(d.name_acquire, a, "org.1bad", 0) == errno.EINVAL
    d.name_acquire(a, "org.example.X", 0)
    assert err(d.send, b, msg(b.id, dst_name="org.example.X")) == errno.EREMCHG
    for i in range(255):
        d.name_acquire(a, f"org.example.n{i}", 0)
    assert err(d.name_acquire, a, "org.example.toomany", 0) == errno.E2BIG


def test_queue_order_priority_peek_drop():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    for i, prio in enumerate([5, -3, 5, -3, 0]):
        d.send(a, msg(b.id, bytes([i]), priority=prio, cookie=i))
    # PEEK leaves it; a later RECV returns the same offset
    r1 = d.recv(b, flags=K.KDBUS_RECV_PEEK)
    r2 = d.recv(b, flags=0)
    assert r1.offset == r2.offset
    d.free(b, r2.offset)
    # USE_PRIORITY: lowest value first, FIFO among equals; threshold gives EAGAIN
    m = recv(d, b, flags=K.KDBUS_RECV_USE_PRIORITY, priority=-10)
    assert m is None
    got = [recv(d, b, flags=K.KDBUS_RECV_USE_PRIORITY, priority=100).cookie for _ in range(4)]
    assert got == [1, 3, 4, 2]
    assert err(d.recv, b, flags=K.KDBUS_RECV_DROP | K.KDBUS_RECV_USE_PRIORITY) == errno.EINVAL


def test_quota_gives_sender_enobufs_and_nobody_else_loses():
    d = make_domain()
    bus = make_bus(d)
    # privileged, so policy lets them talk to the victim (uid 1000)
    flooder = hello(d, bus, uid=1001, privileged=True)
    friend = hello(d, bus, uid=1002, privileged=True)
    victim = hello(d, bus, pool_size=8192 * 4)
    sent = 0
    with pytest.raises(KdbusError) as e:
        for _ in range(1000):
            d.send(flooder, msg(victim.id, b"x" * 1000))
            sent += 1
    assert e.value.errno == errno.ENOBUFS
    assert 0 < sent < 10
    # another user still gets through, and everything queued is intact
    d.send(friend, msg(victim.id, b"friend"))
    got = drain(d, victim)
    assert len(got) == sent + 1 and got[-1].payload == b"friend"


def test_message_count_quota():
    d = make_domain()
    bus = make_bus(d)
    a = hello(d, bus, uid=1001, privileged=True)
    b = hello(d, bus, pool_size=1 << 24)
    for _ in range(256):
        d.send(a, msg(b.id, b"x"))
    assert err(d.send, a, msg(b.id, b"x")) == errno.ENOBUFS


def test_exfull_when_pool_has_no_room():
    d = make_domain()
    bus = make_bus(d)
    a = hello(d, bus)
    b = hello(d, bus, pool_size=4096)
    # same user: quota is about the queue, space is about the pool
    while True:
        try:
            d.send(a, msg(b.id, b"y" * 200))
        except KdbusError as e:
            assert e.errno in (errno.ENOBUFS, errno.EXFULL)
            break


def test_async_reply_and_unsolicited_reply():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    req = msg(b.id, b"ping", flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=7,
              timeout_or_reply=d.clock() + 10**9)
    d.send(a, req)
    assert recv(d, b).payload == b"ping"
    d.send(b, msg(a.id, b"pong", timeout_or_reply=7, cookie=8))
    m = recv(d, a)
    assert (m.payload, m.cookie_reply) == (b"pong", 7)
    # the tracker is consumed: a second reply is unsolicited
    assert err(d.send, b, msg(a.id, b"again", timeout_or_reply=7)) == errno.EBADSLT


def test_only_the_addressed_peer_may_reply():
    d = make_domain()
    bus = make_bus(d)
    a, b, c = hello(d, bus), hello(d, bus), hello(d, bus)
    d.send(a, msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=9,
                  timeout_or_reply=d.clock() + 10**9))
    assert err(d.send, c, msg(a.id, timeout_or_reply=9)) == errno.EBADSLT


def test_reply_timeout_notification():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    d.send(a, msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=5,
                  timeout_or_reply=d.clock() + 1000))
    assert d.next_deadline() == d.clock() + 1000
    d.test_clock.now += 1000
    d.expire()
    m = recv(d, a)
    assert m.src_id == 0 and m.cookie_reply == 5 and m.flags == 0
    assert m.types() == [K.KDBUS_ITEM_REPLY_TIMEOUT, K.KDBUS_ITEM_TIMESTAMP]
    assert err(d.send, b, msg(a.id, timeout_or_reply=5)) == errno.EBADSLT


def test_pending_request_limit():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus, pool_size=1 << 24)
    for i in range(128):
        d.send(a, msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=i,
                      timeout_or_reply=d.clock() + 10**9))
    assert err(d.send, a, msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=999,
                              timeout_or_reply=d.clock() + 10**9)) == errno.EMLINK


def test_sync_reply_wakes_the_waiter_with_the_slice():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    token = object()
    req = msg(b.id, b"q", flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=3,
              timeout_or_reply=d.clock() + 10**9)
    assert d.send(a, req, sync=True, waiter=token) is BLOCKED
    d.take_effects()
    recv(d, b)
    d.send(b, msg(a.id, b"answer", timeout_or_reply=3))
    done = [e for e in d.take_effects() if isinstance(e, fx.WaitDone)]
    assert len(done) == 1 and done[0].token is token and done[0].error == 0
    off, size, _ = done[0].reply
    from .engine import Received
    assert Received(a.pool.read(off, size)).payload == b"answer"
    assert recv(d, a) is None            # not queued: it went to the waiter


def test_sync_timeout_interrupt_and_resume():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    t1 = object()
    deadline = d.clock() + 500
    req = msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=4, timeout_or_reply=deadline)
    assert d.send(a, req, sync=True, waiter=t1) is BLOCKED
    d.cancel_wait(t1, errno.EINTR)       # a signal: the wait is resumable
    recv(d, b)
    d.send(b, msg(a.id, b"late", timeout_or_reply=4))
    d.take_effects()
    # the same SEND again (same cookie) picks up the reply at once
    info = d.send(a, req, sync=True, waiter=object())
    from .engine import Received
    assert Received(a.pool.read(info[0], info[1])).payload == b"late"
    # a wait that reaches its deadline ends with ETIMEDOUT
    t3 = object()
    req2 = msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=5, timeout_or_reply=deadline)
    assert d.send(a, req2, sync=True, waiter=t3) is BLOCKED
    d.take_effects()
    d.test_clock.now = deadline
    d.expire()
    done = [e for e in d.take_effects() if isinstance(e, fx.WaitDone)]
    assert [(e.token, e.error) for e in done] == [(t3, errno.ETIMEDOUT)]
    # a deadline in the past fails at once
    assert err(d.send, a, msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=6,
                              timeout_or_reply=deadline), sync=True,
               waiter=object()) == errno.ETIMEDOUT


def test_disconnect_of_replier_gives_epipe_and_reply_dead():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    t = object()
    d.send(a, msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=1,
                  timeout_or_reply=d.clock() + 10**9), sync=True, waiter=t)
    d.send(a, msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=2,
                  timeout_or_reply=d.clock() + 10**9))
    d.take_effects()
    d.disconnect(b)
    done = [e for e in d.take_effects() if isinstance(e, fx.WaitDone)]
    assert [(e.token, e.error) for e in done] == [(t, errno.EPIPE)]
    dead = drain(d, a)
    # the kernel quirk of §6.6: each still-queued request is reported dead
    # once for the queue (step 5) and the async one again for its tracker
    # (step 7); the sync one got EPIPE instead of the second notice
    assert [(m.cookie_reply, m.types()[0]) for m in dead] == \
        [(1, K.KDBUS_ITEM_REPLY_DEAD), (2, K.KDBUS_ITEM_REPLY_DEAD),
         (2, K.KDBUS_ITEM_REPLY_DEAD)]


def test_disconnect_reports_a_received_request_dead_once():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    d.send(a, msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=3,
                  timeout_or_reply=d.clock() + 10**9))
    recv(d, b)                   # no longer queued: only its tracker is left
    d.disconnect(b)
    assert [(m.cookie_reply, m.types()[0]) for m in drain(d, a)] == \
        [(3, K.KDBUS_ITEM_REPLY_DEAD)]


def test_a_failed_reply_still_uses_up_the_tracker():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus, pool_size=4096), hello(d, bus)
    d.send(a, msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=4,
                  timeout_or_reply=d.clock() + 10**9))
    recv(d, b)
    # the reply does not fit in a's pool: the replier sees the error...
    assert err(d.send, b, msg(a.id, b"r" * 3000, timeout_or_reply=4)) == errno.ENOBUFS
    # ...and the request is answered all the same (§6.10, reply steps 3-5)
    assert err(d.send, b, msg(a.id, b"r", timeout_or_reply=4)) == errno.EBADSLT
    assert a.n_requests == 0


def test_a_sync_reply_that_fails_is_still_seen_by_monitors():
    d = make_domain()
    bus = make_bus(d)
    mon = hello(d, bus, flags=K.KDBUS_HELLO_MONITOR)
    a, b = hello(d, bus, pool_size=4096), hello(d, bus)
    token = object()
    d.send(a, msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=6,
                  timeout_or_reply=d.clock() + 10**9), sync=True, waiter=token)
    recv(d, b)
    drain(d, mon)
    d.take_effects()
    assert err(d.send, b, msg(a.id, b"r" * 5000, timeout_or_reply=6)) == errno.EXFULL
    done = [e for e in d.take_effects() if isinstance(e, fx.WaitDone)]
    assert [(e.token, e.error) for e in done] == [(token, errno.EXFULL)]
    seen = drain(d, mon)
    assert [(m.src_id, m.cookie_reply, len(m.payload)) for m in seen] == [(b.id, 6, 5000)]


def test_byebye_rules():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    d.send(a, msg(b.id, b"x"))
    assert err(d.byebye, b) == errno.EBUSY
    recv(d, b)
    d.byebye(b)
    assert err(d.byebye, b) == errno.ECONNRESET
    assert err(d.send, a, msg(b.id)) == errno.ENXIO


def test_bus_teardown_disconnects_everyone():
    d = make_domain()
    bus = make_bus(d)
    a = hello(d, bus)
    d.bus_destroy(bus)
    assert not a.alive and "1000-test" not in d.buses
    assert any(isinstance(e, fx.Disconnected) for e in d.take_effects())


def test_bus_make_checks():
    d = make_domain()
    from kdbusfs.core.identity import simple_identity
    who = simple_identity(1000)
    kw = dict(flags=0, bloom_size=8, n_hash=1)
    assert err(d.bus_make, who, name="1000-x", **{**kw, "bloom_size": 12}) == errno.EINVAL
    assert err(d.bus_make, who, name="1000-x", **{**kw, "n_hash": 0}) == errno.EINVAL
    assert err(d.bus_make, who, name="1001-x", **kw) == errno.EINVAL
    assert err(d.bus_make, who, name="1000-x", attach_send=1 << 40, **kw) == errno.EINVAL
    d.bus_make(who, name="1000-x", **kw)
    assert err(d.bus_make, who, name="1000-x", **kw) == errno.EEXIST
    for i in range(15):
        d.bus_make(who, name=f"1000-b{i}", **kw)
    assert err(d.bus_make, who, name="1000-one-too-many", **kw) == errno.EMFILE


def test_hello_checks():
    d = make_domain()
    bus = make_bus(d)
    from kdbusfs.core.identity import simple_identity
    who = simple_identity(1000)
    other = simple_identity(2000)
    ep = bus.default
    assert err(d.hello, ep, who, flags=0, pool_size=100) == errno.EINVAL
    assert err(d.hello, ep, who, flags=K.KDBUS_HELLO_ACTIVATOR | K.KDBUS_HELLO_MONITOR,
               pool_size=4096) == errno.EINVAL
    assert err(d.hello, ep, who, flags=0, pool_size=4096, name="org.x.Y") == errno.EINVAL
    assert err(d.hello, ep, other, flags=K.KDBUS_HELLO_MONITOR, pool_size=4096) == errno.EPERM
    assert err(d.hello, ep, who, flags=0, pool_size=4096, attach_recv=1 << 20) == errno.EINVAL
    c = d.hello(ep, who, flags=0, pool_size=4096, attach_recv=K._KDBUS_ATTACH_ANY)
    assert c.attach_recv == K._KDBUS_ATTACH_ALL


def test_list_and_conn_info():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    d.name_acquire(a, "org.example.A", 0)
    d.name_acquire(b, "org.example.A", K.KDBUS_NAME_QUEUE)
    off, size = d.list(b, flags=K.KDBUS_LIST_UNIQUE | K.KDBUS_LIST_NAMES)
    raw = b.pool.read(off, size)
    recs = []
    pos = 0
    while pos < size:
        rsize, rid, rflags = struct.unpack_from("<QQQ", raw, pos)
        name = None
        if rsize > 24:
            name = raw[pos + 48:pos + rsize].split(b"\0")[0].decode()
        recs.append((rid, name))
        pos += rsize
    assert sorted(recs) == [(a.id, "org.example.A"), (b.id, None)]
    d.free(b, off)
    off, size = d.conn_info(b, id=0, name="org.example.A", attach_flags=0)
    assert struct.unpack_from("<QQQ", b.pool.read(off, size)) == (24, a.id, 0)
    assert err(d.conn_info, b, id=999, name=None, attach_flags=0) == errno.ENXIO
    assert err(d.conn_info, b, id=b.id, name="org.example.A", attach_flags=0) == errno.ESRCH
    assert err(d.conn_info, b, id=0, name=None, attach_flags=0) == errno.EINVAL
