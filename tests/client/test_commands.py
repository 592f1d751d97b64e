"""Unit tests of the client's command building, no mount needed: the bytes that
SEND, HELLO and MATCH_ADD would hand to the server, the pinned payload
addresses, and the pool mapping (over a memfd)."""

from __future__ import annotations

import ctypes
import os
import struct
import time

import pytest

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I
from kdbusfs.client import BROADCAST, Connection, all_notifications, notify_id, notify_name
from kdbusfs.client import _sys
from kdbusfs.client import commands as cmds
from kdbusfs.client.match import notify_rules, signal_rules
from kdbusfs.client.messaging import _pin_payload
from kdbusfs.client.pool import Pool


def fake_connection(bloom_size: int = 16) -> Connection:
    c = Connection(-1, "/nonexistent")
    c.id = 5
    c.bloom_size = bloom_size
    return c


def built(conn: Connection, dst, payload=b"", **kw):
    """(cmd bytes, msg bytes, items of the msg, keepalive) of a SEND being built."""
    defaults = dict(cookie=None, priority=0, expect_reply=False, timeout=None, reply_to=None,
                    signal=False, bloom=None, no_auto_start=False, fds=None, memfds=(),
                    payload_type=C.KDBUS_PAYLOAD_DBUS, sync=False, cancel_fd=None)
    defaults.update(kw)
    cookie, buf, keep = conn._build_send(dst, payload, **defaults)
    cmd = bytes(buf)
    size, flags, _rf, address = struct.unpack_from("<QQQQ", cmd)
    assert address % 8 == 0
    msg_size = struct.unpack("<Q", ctypes.string_at(address, 8))[0]
    msg = ctypes.string_at(address, msg_size)
    items = I.walk_items(msg, cmds.MSG.size, msg_size)
    return cookie, cmd, msg, items, keep


def test_send_by_id_layout():
    conn = fake_connection()
    cookie, cmd, msg, items, keep = built(conn, 9, [b"hello", b"", b" world"], priority=-2)
    size, flags = struct.unpack_from("<QQ", cmd)
    assert size == cmds.SEND.size and flags == 0
    (msize, mflags, prio, dst, src, ptype, mcookie, word) = cmds.MSG.unpack_from(msg)
    assert (msize, mflags, prio, dst, src, ptype, mcookie, word) == \
        (len(msg), 0, -2, 9, 0, C.KDBUS_PAYLOAD_DBUS, cookie, 0)
    assert [i.type for i in items] == [C.KDBUS_ITEM_PAYLOAD_VEC] * 2
    vecs = [I.decode_vec(i.payload) for i in items]
    assert [ctypes.string_at(v.address, v.size) for v in vecs] == [b"hello", b" world"]
    assert cookie == 1 and built(conn, 9)[0] == 2


def test_send_by_name_layout():
    conn = fake_connection()
    _, _, msg, items, _ = built(conn, "org.example.X", b"p", no_auto_start=True)
    assert cmds.MSG.unpack_from(msg)[3] == C.KDBUS_DST_ID_NAME
    assert cmds.MSG.unpack_from(msg)[1] == C.KDBUS_MSG_NO_AUTO_START
    assert items[0].type == C.KDBUS_ITEM_DST_NAME
    assert items[0].payload == b"org.example.X\0"


def test_expect_reply_sets_absolute_deadline():
    conn = fake_connection()
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    _, cmd, msg, _, _ = built(conn, 9, expect_reply=True, timeout=2.5, sync=True)
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    flags, word = cmds.MSG.unpack_from(msg)[1], cmds.MSG.unpack_from(msg)[7]
    assert flags == C.KDBUS_MSG_EXPECT_REPLY
    assert before + 2_500_000_000 <= word <= after + 2_500_000_000
    assert struct.unpack_from("<Q", cmd, 8)[0] == C.KDBUS_SEND_SYNC_REPLY


def test_reply_sets_cookie_reply():
    conn = fake_connection()
    _, _, msg, _, _ = built(conn, 9, b"r", reply_to=77)
    assert cmds.MSG.unpack_from(msg)[1] == 0 and cmds.MSG.unpack_from(msg)[7] == 77


def test_broadcast_is_a_signal_with_zero_bloom():
    conn = fake_connection(bloom_size=16)
    _, _, msg, items, _ = built(conn, BROADCAST, b"sig")
    assert cmds.MSG.unpack_from(msg)[1] == C.KDBUS_MSG_SIGNAL
    assert cmds.MSG.unpack_from(msg)[3] == C.KDBUS_DST_ID_BROADCAST
    assert items[-1].type == C.KDBUS_ITEM_BLOOM_FILTER
    assert I.decode_bloom_filter(items[-1].payload) == (0, bytes(16))
    _, _, _, items, _ = built(conn, BROADCAST, bloom=(3, b"\xff" * 16))
    assert I.decode_bloom_filter(items[-1].payload) == (3, b"\xff" * 16)


def test_fds_memfds_and_cancel_fd():
    conn = fake_connection()
    _, cmd, _, items, _ = built(conn, 9, b"x", fds=[3, 4], memfds=[(7, 0, 100)], cancel_fd=6,
                                sync=True, expect_reply=True)
    types = [i.type for i in items]
    assert types == [C.KDBUS_ITEM_PAYLOAD_VEC, C.KDBUS_ITEM_PAYLOAD_MEMFD, C.KDBUS_ITEM_FDS]
    assert I.decode_fds(items[2].payload) == [3, 4]
    assert I.decode_memfd(items[1].payload) == (0, 100, 7)
    cmd_items = I.walk_items(cmd, cmds.SEND.size, len(cmd))
    assert [(i.type, i.payload) for i in cmd_items] == [(C.KDBUS_ITEM_CANCEL_FD,
                                                         struct.pack("<i", 6))]


def test_bad_destination_and_payload_types():
    conn = fake_connection()
    with pytest.raises(TypeError):
        built(conn, 1.5)
    with pytest.raises(TypeError):
        built(conn, True)
    with pytest.raises(TypeError):
        _pin_payload([b"ok", 5])


def test_pinned_payload_is_not_copied():
    data = bytearray(b"mutable")
    keep, vecs = _pin_payload(data)
    data[0:1] = b"M"
    assert ctypes.string_at(vecs[0][1], vecs[0][0]) == b"Mutable"
    del keep


def test_large_command_buffer_is_aligned():
    small = _sys.cmd_buffer(b"\1" * 24)
    assert isinstance(small, bytearray)
    big = _sys.cmd_buffer(b"\2" * 2000)
    assert ctypes.addressof(big) % 8 == 0 and bytes(big)[:2000] == b"\2" * 2000


def test_hello_and_small_commands():
    h = cmds.hello(C.KDBUS_HELLO_ACCEPT_FD, 1, 2, 1 << 20,
                   I.item_string(C.KDBUS_ITEM_CONN_DESCRIPTION, "d"))
    fields = cmds.HELLO.unpack_from(h)
    assert fields[0] == len(h) and fields[1] == C.KDBUS_HELLO_ACCEPT_FD
    assert (fields[3], fields[4], fields[7]) == (1, 2, 1 << 20)
    assert cmds.free(4096) == struct.pack("<QQQQ", 32, 0, 0, 4096)
    assert cmds.recv(C.KDBUS_RECV_PEEK, -1)[:32] == struct.pack("<QQQq", 64, 1, 0, -1)
    b = cmds.bus_make("0-x", 64, 1, C.KDBUS_MAKE_ACCESS_WORLD)
    items = I.walk_items(b, 24, len(b))
    assert [i.type for i in items] == [C.KDBUS_ITEM_BLOOM_PARAMETER, C.KDBUS_ITEM_MAKE_NAME]


def test_match_rules_encoding():
    assert len(all_notifications()) == 5
    assert [r.type for r in notify_rules("all")] == [
        C.KDBUS_ITEM_ID_ADD, C.KDBUS_ITEM_ID_REMOVE, C.KDBUS_ITEM_NAME_ADD,
        C.KDBUS_ITEM_NAME_REMOVE, C.KDBUS_ITEM_NAME_CHANGE]
    r = notify_id("id_add")
    assert r.payload == struct.pack("<QQ", C.KDBUS_MATCH_ID_ANY, 0)
    n = notify_name("name_add", "a.b", old_id=0)
    assert n.payload == struct.pack("<QQQQ", 0, 0, C.KDBUS_MATCH_ID_ANY, 0) + b"a.b\0"
    assert I.walk_items(n.encode(), 0, len(n.encode()))[0].type == C.KDBUS_ITEM_NAME_ADD
    with pytest.raises(ValueError):
        notify_id("name_add")
    enc = signal_rules(bloom_mask=bytes(8), sender=3, sender_name="a.b", dst_id=4)
    rules = I.walk_items(enc, 0, len(enc))
    assert [i.type for i in rules] == [C.KDBUS_ITEM_BLOOM_MASK, C.KDBUS_ITEM_NAME,
                                       C.KDBUS_ITEM_ID, C.KDBUS_ITEM_DST_ID]


def test_pool_maps_beyond_st_size_and_checks_bounds():
    fd = os.memfd_create("pool")
    try:
        os.ftruncate(fd, 8192)
        os.pwrite(fd, b"slice!", 4096)
        pool = Pool(fd, 8192)
        try:
            assert pool.read(4096, 6) == b"slice!"
            with pytest.raises(ValueError):
                pool.read(8190, 8)
        finally:
            pool.close()
        assert not pool.mapped
        with pytest.raises(ValueError):
            pool.read(0, 1)
    finally:
        os.close(fd)


def test_deadline():
    now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    assert _sys.monotonic_deadline_ns(0) > now
    with pytest.raises(ValueError):
        _sys.monotonic_deadline_ns(-1)
