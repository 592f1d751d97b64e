"""Unit tests: the Message and info parsers against slices laid out per the
fact sheet (§4, §6.11).  No mount needed."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I
from kdbusfs.client import (IdNotification, NameNotification, ReplyNotification, parse_info,
                            parse_info_records, parse_message)

from .poolbytes import MSG, build_info, build_message

BCAST = C.KDBUS_DST_ID_BROADCAST


def ts(seq=7, mono=1000, real=2000):
    return I.item_timestamp(seq, mono, real)


def test_header_fields_and_single_vec():
    data = build_message(flags=0, priority=-5, dst_id=9, src_id=4, cookie=77, word=0,
                         vecs=[b"hello"], metadata=[ts()])
    m = parse_message(data, offset=4096)
    assert (m.flags, m.priority, m.dst_id, m.src_id, m.cookie) == (0, -5, 9, 4, 77)
    assert m.payload_type == C.KDBUS_PAYLOAD_DBUS
    assert m.payload == b"hello"
    assert m.text == "hello"
    assert m.offset == 4096 and m.size == len(data)
    assert m.timestamp == (7, 1000, 2000)
    assert m.kind == "message" and not m.is_kernel and not m.is_reply
    assert [t for t, _ in m.items] == [C.KDBUS_ITEM_PAYLOAD_OFF, C.KDBUS_ITEM_TIMESTAMP]


def test_payload_offsets_are_message_relative_and_unpadded():
    data = build_message(src_id=3, dst_id=5, vecs=[b"ab", b"cde", b"f"], metadata=[ts()])
    size = struct.unpack_from("<Q", data)[0]
    p = (size + 7) & ~7
    m = parse_message(data)
    assert m.payload == b"abcdef"
    assert m.vecs == [(p, 2), (p + 2, 3), (p + 5, 1)]
    assert len(data) == (p + 6 + 7) & ~7


@pytest.mark.parametrize("null_offset", [(1 << 64) - 1, None])
def test_null_vec_contributes_no_payload(null_offset):
    data = build_message(src_id=3, dst_id=5, vecs=[b"abc", 13, b"xyz"], metadata=[ts()],
                         null_offset=null_offset)
    size = struct.unpack_from("<Q", data)[0]
    p = (size + 7) & ~7
    m = parse_message(data)
    assert m.payload == b"abcxyz"
    # the NULL vec's 13 % 8 = 5 zero bytes sit between the data vecs
    assert m.vecs == [(p, 3), (p + 3 + 5, 3)]


def test_no_items_at_all():
    data = build_message(src_id=3, dst_id=5)
    m = parse_message(data)
    assert m.payload == b"" and m.items == [] and m.timestamp is None


def test_expect_reply_word_is_timeout():
    data = build_message(flags=C.KDBUS_MSG_EXPECT_REPLY, src_id=3, dst_id=5, cookie=1,
                         word=123456789, vecs=[b"q"])
    m = parse_message(data)
    assert m.expects_reply and m.timeout_ns == 123456789 and m.cookie_reply == 0


def test_reply_word_is_cookie_reply():
    data = build_message(src_id=5, dst_id=3, cookie=2, word=1, vecs=[b"r"])
    m = parse_message(data)
    assert m.is_reply and m.kind == "reply" and m.cookie_reply == 1 and m.timeout_ns == 0


def test_user_items_kept():
    before = [I.item_string(C.KDBUS_ITEM_DST_NAME, "org.example.Echo")]
    after = [I.item_fds([5, 6, -1]), I.item_memfd(0, 4096, 9),
             I.item_bloom_filter(1, b"\x01" + bytes(7))]
    data = build_message(flags=C.KDBUS_MSG_SIGNAL, src_id=3, dst_id=0, vecs=[b"x" * 9],
                         before=before, after=after, metadata=[ts()])
    m = parse_message(data)
    assert m.dst_name == "org.example.Echo"
    assert m.fds == [5, 6, -1]
    assert m.memfds == [(9, 0, 4096)]
    assert m.memfds[0].fd == 9
    assert m.bloom == (1, b"\x01" + bytes(7))
    assert m.payload == b"x" * 9
    assert m.is_signal and m.kind == "signal"


def test_metadata_decoded():
    caps_sets = [0, (1 << 40) - 1, 0x5, 1 << 33]
    meta = [
        I.item_creds(1000, 1001, 1002, 1003, 100, 101, 102, 103),
        I.item_pids(42, 43, 1),
        I.item_auxgroups([4, 24, 27]),
        I.item_string(C.KDBUS_ITEM_TID_COMM, "worker"),
        I.item_string(C.KDBUS_ITEM_PID_COMM, "python3"),
        I.item_string(C.KDBUS_ITEM_EXE, "/usr/bin/python3.11"),
        I.item_string(C.KDBUS_ITEM_CMDLINE, "python3"),
        I.item_string(C.KDBUS_ITEM_CGROUP, "/user.slice"),
        I.item_caps(40, caps_sets),
        I.item_string(C.KDBUS_ITEM_SECLABEL, "unconfined"),
        I.item_audit(3, 1000),
        I.item_name(C.KDBUS_NAME_PRIMARY, "org.example.A"),
        I.item_name(C.KDBUS_NAME_PRIMARY | C.KDBUS_NAME_ALLOW_REPLACEMENT, "org.example.B"),
        I.item_string(C.KDBUS_ITEM_CONN_DESCRIPTION, "my-conn"),
        ts(11, 5, 6),
    ]
    m = parse_message(build_message(src_id=3, dst_id=5, vecs=[b"p"], metadata=meta))
    assert m.creds == (1000, 1001, 1002, 1003, 100, 101, 102, 103)
    assert m.creds.euid == 1001 and m.creds.gid == 100
    assert m.pids == (42, 43, 1) and m.pids.ppid == 1
    assert m.auxgroups == [4, 24, 27]
    assert (m.tid_comm, m.pid_comm, m.comm) == ("worker", "python3", "python3")
    assert m.exe == "/usr/bin/python3.11"
    assert m.cmdline == "python3"
    assert m.cgroup == "/user.slice"
    assert m.caps.last_cap == 40
    assert (m.caps.inheritable, m.caps.permitted, m.caps.effective, m.caps.bounding) == \
        tuple(caps_sets)
    assert m.seclabel == "unconfined"
    assert m.audit == (3, 1000)
    assert m.names == [("org.example.A", C.KDBUS_NAME_PRIMARY),
                       ("org.example.B", C.KDBUS_NAME_PRIMARY | C.KDBUS_NAME_ALLOW_REPLACEMENT)]
    assert m.names[0].name == "org.example.A"
    assert m.description == "my-conn"
    assert m.timestamp.seqnum == 11
    assert m.payload == b"p"


def test_id_add_notification_layout():
    # §6.11: "ID_ADD has msg.size 64+32+40 = 136"
    data = build_message(flags=C.KDBUS_MSG_SIGNAL, dst_id=BCAST, src_id=0, payload_type=0,
                         before=[I.item_id_change(C.KDBUS_ITEM_ID_ADD, 12, C.KDBUS_HELLO_ACCEPT_FD)],
                         metadata=[ts(3)])
    assert struct.unpack_from("<Q", data)[0] == 136
    m = parse_message(data)
    assert m.is_kernel and m.is_broadcast and m.kind == "id_add"
    assert m.notification == IdNotification(C.KDBUS_ITEM_ID_ADD, 12, C.KDBUS_HELLO_ACCEPT_FD)
    assert m.notification.id == 12
    assert m.timestamp.seqnum == 3


def test_id_remove_notification():
    data = build_message(flags=C.KDBUS_MSG_SIGNAL, dst_id=BCAST, payload_type=0,
                         before=[I.item_id_change(C.KDBUS_ITEM_ID_REMOVE, 8, 0)], metadata=[ts()])
    m = parse_message(data)
    assert m.kind == "id_remove" and m.notification.id == 8


@pytest.mark.parametrize("type_,kind", [(C.KDBUS_ITEM_NAME_ADD, "name_add"),
                                        (C.KDBUS_ITEM_NAME_REMOVE, "name_remove"),
                                        (C.KDBUS_ITEM_NAME_CHANGE, "name_change")])
def test_name_notifications(type_, kind):
    P = C.KDBUS_NAME_PRIMARY
    item = I.item_name_change(type_, 4, P, 5, P | C.KDBUS_NAME_QUEUE, "org.example.Name")
    data = build_message(flags=C.KDBUS_MSG_SIGNAL, dst_id=BCAST, payload_type=0,
                         before=[item], metadata=[ts()])
    m = parse_message(data)
    assert m.kind == kind
    assert m.notification == NameNotification(type_, "org.example.Name", 4, P, 5,
                                              P | C.KDBUS_NAME_QUEUE)


@pytest.mark.parametrize("type_,kind", [(C.KDBUS_ITEM_REPLY_TIMEOUT, "reply_timeout"),
                                        (C.KDBUS_ITEM_REPLY_DEAD, "reply_dead")])
def test_reply_notifications(type_, kind):
    data = build_message(flags=0, dst_id=6, src_id=0, payload_type=0, word=99,
                         before=[I.encode_item(type_)], metadata=[ts()])
    m = parse_message(data)
    assert m.kind == kind and not m.is_reply
    assert m.notification == ReplyNotification(type_, 99)
    assert m.cookie_reply == 99


def test_malformed_slices_raise_valueerror():
    good = build_message(src_id=1, dst_id=2, vecs=[b"abc"], metadata=[ts()])
    with pytest.raises(ValueError):
        parse_message(good[:40])
    with pytest.raises(ValueError):
        parse_message(struct.pack("<Q", len(good) + 8) + good[8:])
    bad_item = bytearray(good)
    struct.pack_into("<Q", bad_item, MSG.size, 8)  # item size < 16
    with pytest.raises(ValueError):
        parse_message(bytes(bad_item))


payload_parts = st.lists(st.one_of(st.binary(min_size=1, max_size=40),
                                   st.integers(min_value=1, max_value=30)), max_size=6)


@settings(max_examples=200, deadline=None)
@given(parts=payload_parts, with_meta=st.booleans(), cookie=st.integers(0, 2**64 - 1),
       priority=st.integers(-2**63, 2**63 - 1))
def test_payload_roundtrip(parts, with_meta, cookie, priority):
    meta = [ts(), I.item_string(C.KDBUS_ITEM_PID_COMM, "x")] if with_meta else []
    data = build_message(src_id=2, dst_id=3, cookie=cookie, priority=priority, vecs=parts,
                         metadata=meta)
    m = parse_message(data)
    assert m.payload == b"".join(p for p in parts if isinstance(p, bytes))
    assert m.cookie == cookie and m.priority == priority
    assert len(m.vecs) == sum(isinstance(p, bytes) for p in parts)


# --------------------------------------------------------------------------
# kdbus_info records


def test_parse_conn_info_record():
    rec = build_info(7, C.KDBUS_HELLO_ACCEPT_FD, [
        I.item_creds(1, 2, 3, 4, 5, 6, 7, 8),
        I.item_name(C.KDBUS_NAME_PRIMARY, "org.example.X"),
        I.item_string(C.KDBUS_ITEM_CONN_DESCRIPTION, "desc"),
    ])
    info, size = parse_info(rec)
    assert size == len(rec)
    assert (info.id, info.flags) == (7, C.KDBUS_HELLO_ACCEPT_FD)
    assert info.creds.uid == 1 and info.names == [("org.example.X", C.KDBUS_NAME_PRIMARY)]
    assert info.description == "desc" and info.name is None


def test_parse_bus_creator_info_record():
    rec = build_info(1, C.KDBUS_MAKE_ACCESS_WORLD, [
        I.item_string(C.KDBUS_ITEM_MAKE_NAME, "0-mybus"),
        I.item_pids(10, 10, 1),
    ])
    info, _ = parse_info(rec)
    assert info.name == "0-mybus" and info.pids.pid == 10
    assert info.flags == C.KDBUS_MAKE_ACCESS_WORLD


def test_parse_list_records():
    recs = [
        build_info(2, 0, [I.item_name(C.KDBUS_NAME_PRIMARY, "a.b")]),
        build_info(3, 0),
        build_info(2, 0, [I.item_name(C.KDBUS_NAME_IN_QUEUE, "c.dd")]),
    ]
    out = parse_info_records(b"".join(recs))
    assert [(i.id, i.names) for i in out] == [
        (2, [("a.b", C.KDBUS_NAME_PRIMARY)]), (3, []), (2, [("c.dd", C.KDBUS_NAME_IN_QUEUE)])]


def test_parse_info_rejects_overrun():
    rec = build_info(2, 0, [I.item_name(C.KDBUS_NAME_PRIMARY, "a.b")])
    with pytest.raises(ValueError):
        parse_info(rec[:-8])
