"""Broadcasts, matches and bloom filters, notifications, activators, monitors."""

import errno
import struct

import pytest

from kdbusfs.abi import constants as K
from kdbusfs.abi.errors import KdbusError

from .engine import (drain, hello, make_bus, make_domain, match_items, msg, notify_id_rule,
                     notify_name_rule, recv, signal)

ANY = K.KDBUS_MATCH_ID_ANY


def err(fn, *a, **kw):
    with pytest.raises(KdbusError) as e:
        fn(*a, **kw)
    return e.value.errno


def mask(bits):
    return (K.KDBUS_ITEM_BLOOM_MASK, bits.to_bytes(8, "little"))


def test_broadcast_reaches_matching_receivers_including_sender():
    d = make_domain()
    bus = make_bus(d)
    a, b, c = hello(d, bus), hello(d, bus), hello(d, bus)
    d.match_add(a, cookie=1, items=match_items(mask(0b0011)), replace=False)
    d.match_add(b, cookie=1, items=match_items(mask(0b0100)), replace=False)
    # c has no match at all
    d.send(a, signal(b"sig", bloom=(0b0111).to_bytes(8, "little")))
    assert [m.payload for m in drain(d, a)] == [b"sig"]
    assert [m.payload for m in drain(d, b)] == [b"sig"]
    assert drain(d, c) == []
    d.send(a, signal(b"sig2", bloom=(0b0011).to_bytes(8, "little")))
    assert drain(d, a) and not drain(d, b)


def test_bloom_generations_and_edom():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    # two generations: gen 0 needs bit 0, gen >= 1 needs bit 1
    m = (K.KDBUS_ITEM_BLOOM_MASK, (1).to_bytes(8, "little") + (2).to_bytes(8, "little"))
    d.match_add(b, cookie=1, items=match_items(m), replace=False)
    d.send(a, signal(b"g0", bloom=(1).to_bytes(8, "little"), bloom_gen=0))
    d.send(a, signal(b"g5", bloom=(1).to_bytes(8, "little"), bloom_gen=5))
    d.send(a, signal(b"g5ok", bloom=(2).to_bytes(8, "little"), bloom_gen=5))
    assert [x.payload for x in drain(d, b)] == [b"g0", b"g5ok"]
    bad = (K.KDBUS_ITEM_BLOOM_MASK, bytes(12))
    assert err(d.match_add, b, cookie=2, items=match_items(bad), replace=False) == errno.EDOM


def test_match_rules_and_remove():
    d = make_domain()
    bus = make_bus(d)
    a, b, c = hello(d, bus), hello(d, bus), hello(d, bus)
    d.name_acquire(a, "org.example.Sender", 0)
    rule = [(K.KDBUS_ITEM_NAME, b"org.example.Sender\0"),
            (K.KDBUS_ITEM_ID, struct.pack("<Q", a.id))]
    d.match_add(c, cookie=5, items=match_items(*rule), replace=False)
    d.send(a, signal(b"from-a"))
    d.send(b, signal(b"from-b"))
    assert [m.payload for m in drain(d, c)] == [b"from-a"]
    d.match_remove(c, cookie=5)
    assert err(d.match_remove, c, cookie=5) == errno.EBADSLT
    d.send(a, signal(b"none"))
    assert drain(d, c) == []
    for i in range(256):
        d.match_add(c, cookie=i, items=[], replace=False)
    assert err(d.match_add, c, cookie=999, items=[], replace=False) == errno.EMFILE
    d.match_add(c, cookie=3, items=[], replace=True)   # REPLACE frees a slot first


def test_unicast_signal_needs_a_match():
    d = make_domain()
    bus = make_bus(d)
    a, b = hello(d, bus), hello(d, bus)
    d.send(a, signal(b"x", dst_id=b.id))       # no match: silently not queued
    assert drain(d, b) == []
    d.match_add(b, cookie=1, items=[], replace=False)
    d.send(a, signal(b"y", dst_id=b.id))
    assert [m.payload for m in drain(d, b)] == [b"y"]


def test_id_and_name_notifications():
    d = make_domain()
    bus = make_bus(d)
    w = hello(d, bus)
    d.match_add(w, cookie=1, items=match_items(notify_id_rule(K.KDBUS_ITEM_ID_ADD)),
                replace=False)
    d.match_add(w, cookie=2, items=match_items(notify_id_rule(K.KDBUS_ITEM_ID_REMOVE)),
                replace=False)
    for t in (K.KDBUS_ITEM_NAME_ADD, K.KDBUS_ITEM_NAME_REMOVE, K.KDBUS_ITEM_NAME_CHANGE):
        d.match_add(w, cookie=3, items=match_items(notify_name_rule(t)), replace=False)
    a = hello(d, bus)
    b = hello(d, bus)
    d.name_acquire(a, "org.example.N", K.KDBUS_NAME_ALLOW_REPLACEMENT)
    d.name_acquire(b, "org.example.N", K.KDBUS_NAME_REPLACE_EXISTING)
    d.name_release(b, "org.example.N")
    d.disconnect(a)
    got = drain(d, w)
    kinds = [m.types()[0] for m in got]
    assert kinds == [K.KDBUS_ITEM_ID_ADD, K.KDBUS_ITEM_ID_ADD, K.KDBUS_ITEM_NAME_ADD,
                     K.KDBUS_ITEM_NAME_CHANGE, K.KDBUS_ITEM_NAME_REMOVE,
                     K.KDBUS_ITEM_ID_REMOVE]
    first = got[0]
    assert first.size == 136 and first.src_id == 0 and first.dst_id == K.KDBUS_DST_ID_BROADCAST
    assert first.flags == K.KDBUS_MSG_SIGNAL
    old_id, _, new_id, _ = struct.unpack_from("<4Q", got[3].item(K.KDBUS_ITEM_NAME_CHANGE))
    assert (old_id, new_id) == (a.id, b.id)
    seqs = [struct.unpack_from("<Q", m.item(K.KDBUS_ITEM_TIMESTAMP))[0] for m in got]
    assert seqs == sorted(seqs)


def test_notifications_only_through_matches():
    d = make_domain()
    bus = make_bus(d)
    w = hello(d, bus)
    hello(d, bus)
    assert drain(d, w) == []


def test_activator_hands_messages_to_the_implementer_and_back():
    d = make_domain()
    bus = make_bus(d)
    act = hello(d, bus, flags=K.KDBUS_HELLO_ACTIVATOR, name="org.example.Svc")
    client = hello(d, bus)
    d.send(client, msg(0, b"early", dst_name="org.example.Svc"))
    assert err(d.send, client, msg(0, b"x", dst_name="org.example.Svc",
                                   flags=K.KDBUS_MSG_NO_AUTO_START)) == errno.EADDRNOTAVAIL
    svc = hello(d, bus)
    f = d.name_acquire(svc, "org.example.Svc", 0)
    assert f & K.KDBUS_NAME_PRIMARY
    assert [m.payload for m in drain(d, svc)] == [b"early"]
    assert drain(d, act) == []
    d.send(client, msg(0, b"while-up", dst_name="org.example.Svc"))
    d.name_release(svc, "org.example.Svc")
    assert [m.payload for m in drain(d, act)] == [b"while-up"]


def test_monitor_sees_everything_and_is_invisible():
    d = make_domain()
    bus = make_bus(d)
    mon = hello(d, bus, flags=K.KDBUS_HELLO_MONITOR)
    a, b = hello(d, bus), hello(d, bus)
    d.send(a, msg(b.id, b"private"))
    d.send(a, signal(b"sig-nobody-wants"))
    got = drain(d, mon)
    # monitors see the ID_ADD notifications too (src_id 0)
    assert [m.src_id for m in got[:2]] == [0, 0]
    assert [m.payload for m in got[2:]] == [b"private", b"sig-nobody-wants"]
    assert err(d.send, a, msg(mon.id)) == errno.ENXIO
    assert err(d.send, mon, msg(a.id)) == errno.EOPNOTSUPP
    assert err(d.name_acquire, mon, "org.x.Y", 0) == errno.EOPNOTSUPP
    off, size = d.list(a, flags=K.KDBUS_LIST_UNIQUE)
    ids = [struct.unpack_from("<QQ", a.pool.read(off, size), p)[1] for p in range(0, size, 24)]
    assert mon.id not in ids


def test_monitor_sees_reply_notifications():
    d = make_domain()
    bus = make_bus(d)
    mon = hello(d, bus, flags=K.KDBUS_HELLO_MONITOR)
    a, b = hello(d, bus), hello(d, bus)
    d.send(a, msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=8,
                  timeout_or_reply=d.clock() + 1000))
    d.send(a, msg(b.id, flags=K.KDBUS_MSG_EXPECT_REPLY, cookie=9,
                  timeout_or_reply=d.clock() + 10**9))
    drain(d, mon)
    d.test_clock.now += 1000
    d.expire()
    assert recv(d, b) is not None       # cookie 8, already timed out
    d.recv(b, flags=K.KDBUS_RECV_DROP)  # cookie 9: dropped, so it is dead
    got = [(m.dst_id, m.cookie_reply, m.types()[0]) for m in drain(d, mon)]
    assert got == [(a.id, 8, K.KDBUS_ITEM_REPLY_TIMEOUT), (a.id, 9, K.KDBUS_ITEM_REPLY_DEAD)]
    assert [m.types()[0] for m in drain(d, a)] == [K.KDBUS_ITEM_REPLY_TIMEOUT,
                                                   K.KDBUS_ITEM_REPLY_DEAD]


def test_broadcast_to_full_pool_counts_dropped():
    d = make_domain()
    bus = make_bus(d)
    a = hello(d, bus)
    b = hello(d, bus, pool_size=4096)
    d.match_add(b, cookie=1, items=[], replace=False)
    for _ in range(10):
        d.send(a, signal(b"z" * 400))
    res = d.recv(b, flags=0)
    assert res.dropped > 0 and res.return_flags & K.KDBUS_RECV_RETURN_DROPPED_MSGS
    again = d.recv(b, flags=K.KDBUS_RECV_PEEK)
    assert again.dropped == 0


def test_policy_talk_own_and_holders():
    d = make_domain()
    bus = make_bus(d, uid=0)
    svc = hello(d, bus, uid=0)
    user = hello(d, bus, uid=1000)
    d.name_acquire(svc, "org.example.P", 0)
    # different uid and no policy: TALK denied, OWN denied
    assert err(d.send, user, msg(0, dst_name="org.example.P")) == errno.EPERM
    assert err(d.name_acquire, user, "org.example.Q", 0) == errno.EPERM
    holder = hello(d, bus, uid=0, flags=K.KDBUS_HELLO_POLICY_HOLDER, name="org.example.*",
                   policy=[("access", K.KDBUS_POLICY_ACCESS_WORLD, K.KDBUS_POLICY_TALK, 0)])
    d.send(user, msg(0, b"ok", dst_name="org.example.P"))
    assert drain(d, svc)[0].payload == b"ok"
    assert err(d.name_acquire, user, "org.example.Q", 0) == errno.EPERM
    d.update(holder, policy=[("name", "org.example.Q"),
                             ("access", K.KDBUS_POLICY_ACCESS_USER, K.KDBUS_POLICY_OWN, 1000)])
    d.name_acquire(user, "org.example.Q", 0)
    # the wildcard entry was replaced atomically: TALK to P is gone again
    assert err(d.send, user, msg(0, dst_name="org.example.P")) == errno.EPERM
    d.disconnect(holder)
    assert not bus.policy


def test_custom_endpoint_policy_denies_by_default():
    d = make_domain()
    bus = make_bus(d, uid=1000)
    from kdbusfs.core.identity import simple_identity
    owner = simple_identity(1000)
    ep = d.endpoint_make(bus, owner, flags=K.KDBUS_MAKE_ACCESS_WORLD, name="1000-sandbox")
    svc = hello(d, bus, uid=1000)
    d.name_acquire(svc, "org.example.Open", 0)
    boxed = hello(d, bus, uid=1000, ep=ep)
    # same uid, but the endpoint policy is empty: nothing is reachable or visible
    assert err(d.send, boxed, msg(svc.id)) == errno.EPERM
    assert err(d.conn_info, boxed, id=svc.id, name=None, attach_flags=0) == errno.ENXIO
    d.endpoint_update(ep, [("name", "org.example.Open"),
                           ("access", K.KDBUS_POLICY_ACCESS_WORLD, K.KDBUS_POLICY_TALK, 0)])
    d.send(boxed, msg(svc.id, b"through"))
    assert drain(d, svc)[0].payload == b"through"
    assert err(d.hello, ep, owner, flags=K.KDBUS_HELLO_MONITOR, pool_size=4096) == errno.EOPNOTSUPP
    d.endpoint_destroy(ep)
    assert not boxed.alive and svc.alive
