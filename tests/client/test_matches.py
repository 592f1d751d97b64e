"""Matches, broadcasts, unicast signals and notifications on a real mount."""

from __future__ import annotations

import errno

import pytest

from kdbusfs.abi import constants as C
from kdbusfs.client import ANY, BROADCAST, notify_id, notify_name

PRIMARY = C.KDBUS_NAME_PRIMARY


def drain(conn, timeout=0.3):
    """Every message that arrives within ``timeout`` seconds of quiet."""
    out = []
    while (m := conn.recv_wait(timeout)) is not None:
        out.append(m)
    return out


def signals(msgs):
    return [m for m in msgs if m.notification is None]


def bloom(size: int, *bits: int) -> bytes:
    b = bytearray(size)
    for bit in bits:
        b[bit // 8] |= 1 << (bit % 8)
    return bytes(b)


def test_broadcast_needs_a_match(connect):
    listener, quiet, sender = connect(), connect(), connect()
    listener.add_match(1, sender=sender.id)
    sender.send(BROADCAST, b"to all")
    got = drain(listener)
    assert [(m.payload, m.src_id, m.is_broadcast, m.is_signal) for m in got] == \
        [(b"to all", sender.id, True, True)]
    assert got[0].bloom == (0, bytes(listener.bloom_size))
    assert drain(quiet, 0.1) == []


def test_broadcast_reaches_sender_with_match(connect):
    a = connect()
    a.add_match(5)
    a.emit(b"self")
    assert [m.payload for m in signals(drain(a))] == [b"self"]


def test_bloom_mask(connect):
    listener, sender = connect(), connect()
    size = listener.bloom_size
    listener.add_match(1, bloom_mask=bloom(size, 3, 100))
    sender.emit(b"has both", bloom=bloom(size, 3, 100, 200))
    sender.emit(b"has one", bloom=bloom(size, 3))
    sender.emit(b"has none")
    assert [m.payload for m in signals(drain(listener))] == [b"has both"]


def test_bloom_mask_generations(connect):
    listener, sender = connect(), connect()
    size = listener.bloom_size
    # two generations: generation 0 needs bit 1, generation >= 1 needs bit 2
    listener.add_match(1, bloom_mask=bloom(size, 1) + bloom(size, 2))
    sender.emit(b"g0 ok", bloom=(0, bloom(size, 1)))
    sender.emit(b"g0 no", bloom=(0, bloom(size, 2)))
    sender.emit(b"g1 ok", bloom=(1, bloom(size, 2)))
    sender.emit(b"g5 ok", bloom=(5, bloom(size, 2)))
    got = signals(drain(listener))
    assert [m.payload for m in got] == [b"g0 ok", b"g1 ok", b"g5 ok"]
    assert [m.bloom[0] for m in got] == [0, 1, 5]


def test_bloom_mask_wrong_size_is_edom(connect):
    a = connect()
    with pytest.raises(OSError) as e:
        a.add_match(1, bloom_mask=bytes(a.bloom_size + 8))
    assert e.value.errno == errno.EDOM


def test_sender_name_rule(connect):
    listener, named, other = connect(), connect(), connect()
    named.acquire_name("org.example.Emitter")
    listener.add_match(1, sender_name="org.example.Emitter")
    named.emit(b"from named")
    other.emit(b"from other")
    assert [m.payload for m in signals(drain(listener))] == [b"from named"]


def test_dst_id_rule_and_unicast_signal(connect):
    listener, sender = connect(), connect()
    # unicast signals need a match at the receiver too: without one, silently skipped
    sender.send(listener.id, b"unmatched", signal=True)
    assert drain(listener, 0.1) == []
    listener.add_match(1, dst_id=listener.id)
    sender.send(listener.id, b"unicast", signal=True)
    sender.emit(b"broadcast")
    got = signals(drain(listener))
    assert [(m.payload, m.dst_id, m.is_signal) for m in got] == \
        [(b"unicast", listener.id, True)]


def test_remove_match(connect):
    listener, sender = connect(), connect()
    listener.add_match(7, sender=sender.id)
    listener.add_match(7, sender=ANY)
    sender.emit(b"one")
    assert len(signals(drain(listener))) == 1  # two entries, one delivery
    listener.remove_match(7)
    sender.emit(b"two")
    assert drain(listener, 0.1) == []
    with pytest.raises(OSError) as e:
        listener.remove_match(7)
    assert e.value.errno == errno.EBADSLT


def test_replace_match(connect):
    listener, a, b = connect(), connect(), connect()
    listener.add_match(1, sender=a.id)
    listener.add_match(1, sender=b.id, replace=True)
    a.emit(b"a")
    b.emit(b"b")
    assert [m.payload for m in signals(drain(listener))] == [b"b"]


def test_id_notifications(connect, bus):
    watcher = connect()
    watcher.add_match(1, notify=["id_add", "id_remove"])
    other = connect(accept_fd=True)
    other_id = other.id
    other.close()
    # close() returns before the server handles RELEASE: wait for both
    got = [watcher.recv_wait(10), watcher.recv_wait(10)] + drain(watcher, 0.1)
    assert [(m.kind, m.notification.id) for m in got] == [("id_add", other_id),
                                                         ("id_remove", other_id)]
    add = got[0]
    assert add.notification.flags == C.KDBUS_HELLO_ACCEPT_FD
    assert add.is_kernel and add.is_broadcast and add.is_signal
    assert add.timestamp is not None  # notifications always carry one


def test_id_notification_for_one_id(connect):
    watcher = connect()
    a, b = connect(), connect()
    watcher.add_match(1, notify=notify_id("id_remove", b.id))
    a.close()
    b.close()
    first = watcher.recv_wait(10)
    assert first is not None and first.notification.id == b.id
    # a's ID_REMOVE does not match the rule
    assert drain(watcher, 0.2) == []


def test_name_notifications(connect):
    watcher = connect()
    watcher.add_match(2, notify="all")
    a, b = connect(), connect()
    a.acquire_name("org.example.N", allow_replacement=True)
    b.acquire_name("org.example.N", replace_existing=True)
    b.release_name("org.example.N")
    got = [m for m in drain(watcher) if m.kind.startswith("name_")]
    assert [m.kind for m in got] == ["name_add", "name_change", "name_remove"]
    add, change, remove = (m.notification for m in got)
    assert (add.name, add.old_id, add.new_id) == ("org.example.N", 0, a.id)
    assert add.new_flags & PRIMARY
    assert (change.old_id, change.new_id) == (a.id, b.id)
    assert (remove.old_id, remove.new_id, remove.new_flags) == (b.id, 0, 0)


def test_name_notification_filter(connect):
    watcher = connect()
    watcher.add_match(3, notify=notify_name("name_add", "org.example.Wanted"))
    a = connect()
    a.acquire_name("org.example.Other")
    a.acquire_name("org.example.Wanted")
    got = drain(watcher)
    assert [(m.kind, m.notification.name) for m in got] == [("name_add", "org.example.Wanted")]


def test_notify_rules_cannot_mix_with_signal_rules(connect):
    a = connect()
    with pytest.raises(ValueError):
        a.add_match(1, sender=2, notify="id_add")
    with pytest.raises(ValueError):
        a.add_match(1, notify="bogus")


def test_add_match_picks_and_returns_cookies(connect):
    from kdbusfs.client import AUTO_COOKIE_BASE
    listener, a, b = connect(), connect(), connect()
    ca = listener.add_match(sender=a.id)
    cb = listener.add_match(sender=b.id)
    assert AUTO_COOKIE_BASE <= ca < cb
    assert listener.add_match(7, sender=b.id) == 7
    listener.remove_match(cb)
    a.emit(b"a")
    b.emit(b"b")
    assert [m.payload for m in signals(drain(listener))] == [b"a", b"b"]   # b via cookie 7
    listener.remove_match(7)
    b.emit(b"b2")
    assert drain(listener, 0.1) == []


def test_bloom_keys_select_signals(connect):
    listener, sender = connect(), connect()
    listener.add_match(bloom_mask=listener.bloom("member:Changed"))
    sender.emit(b"changed", bloom=sender.bloom("interface:org.example.S", "member:Changed"))
    sender.emit(b"removed", bloom=sender.bloom("interface:org.example.S", "member:Removed"))
    assert [m.payload for m in signals(drain(listener))] == [b"changed"]


def test_bloom_mask_as_a_list_of_generations(connect):
    listener, sender = connect(), connect()
    listener.add_match(bloom_mask=[listener.bloom("v0"), listener.bloom("v1")])
    sender.emit(b"old", bloom=(0, sender.bloom("v0")))
    sender.emit(b"new", bloom=(3, sender.bloom("v1")))
    sender.emit(b"mixed up", bloom=(3, sender.bloom("v0")))
    assert [m.payload for m in signals(drain(listener))] == [b"old", b"new"]
    with pytest.raises(ValueError):
        listener.add_match(bloom_mask=[bytes(8)])            # not the bus size
    with pytest.raises(ValueError):
        listener.add_match(bloom_mask=[])


def test_failed_multi_entry_add_match_leaves_nothing_behind(connect):
    a = connect()
    for i in range(254):
        a.add_match(i + 1, sender=i + 1000)
    with pytest.raises(OSError) as e:
        a.add_match(notify="all")                  # five entries, room for two
    assert e.value.errno == errno.EMFILE
    a.add_match(300, sender=1)                     # the two were taken back
    a.add_match(301, sender=1)


def test_messages_iterator(connect):
    listener, sender = connect(), connect()
    listener.add_match(sender=sender.id)
    for i in range(3):
        sender.emit(b"%d" % i)
    assert [m.payload for m in listener.messages(timeout=0.3)] == [b"0", b"1", b"2"]
    assert list(listener.messages(timeout=0.05)) == []


def test_policy_holder_connection(bus, connect):
    holder = connect(policy_holder="org.example.*",
                     policy=[(C.KDBUS_POLICY_ACCESS_WORLD, C.KDBUS_POLICY_TALK, 0)])
    assert holder.flags == C.KDBUS_HELLO_POLICY_HOLDER and holder.bloom_size > 0
    other = connect()
    assert holder.id in {e.id for e in other.list(C.KDBUS_LIST_UNIQUE)}
    with pytest.raises(OSError) as e:
        holder.recv()
    assert e.value.errno == errno.EOPNOTSUPP
