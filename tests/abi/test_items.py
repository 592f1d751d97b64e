import struct
from errno import EBADF, EINVAL, ENAMETOOLONG

import pytest

from kdbusfs.abi import Item, KdbusError, check_payload, constants as C, walk_items
from kdbusfs.abi import items as I


def item(type_, payload=b""):
    return Item(type_, 0, payload)


def errno_of(fn, *args):
    with pytest.raises(KdbusError) as e:
        fn(*args)
    return e.value.errno


# --- encoding -----------------------------------------------------------------

def test_encode_item_layout():
    raw = I.encode_item(C.KDBUS_ITEM_NAME, b"a.b\0")
    assert raw == struct.pack("<QQ", 20, 15) + b"a.b\0" + b"\0" * 4
    assert len(I.encode_item(7, bytes(16))) == 32
    assert I.encode_item(C.KDBUS_ITEM_REPLY_DEAD) == struct.pack("<QQ", 16, 0x8006)


def test_item_size_and_align():
    assert [I.item_size(n) for n in (0, 1, 8, 9, 36)] == [16, 24, 24, 32, 56]
    assert [I.align8(n) for n in (0, 1, 7, 8, 9)] == [0, 8, 8, 8, 16]


def test_convenience_encoders_decode_back():
    def one(raw):
        [it] = walk_items(raw, 0, len(raw))
        check_payload(it)
        return it

    it = one(I.item_u64(C.KDBUS_ITEM_ID, 2**64 - 1))
    assert (it.type, I.decode_u64(it.payload)) == (C.KDBUS_ITEM_ID, 2**64 - 1)
    it = one(I.item_string(C.KDBUS_ITEM_NAME, "caf\xe9.x"))
    assert it.payload == b"caf\xe9.x\0" and I.decode_string(it.payload) == "caf\xe9.x"
    it = one(I.item_vec(10, 0x1234))
    assert (it.type, I.decode_vec(it.payload)) == (C.KDBUS_ITEM_PAYLOAD_VEC, (10, 0x1234))
    it = one(I.item_payload_off(10, 64))
    assert (it.type, I.decode_vec(it.payload)) == (C.KDBUS_ITEM_PAYLOAD_OFF, (10, 64))
    it = one(I.item_bloom_parameter(64, 1))
    assert it.size == 32 and I.decode_bloom_parameter(it.payload) == (64, 1)
    it = one(I.item_name(C.KDBUS_NAME_PRIMARY, "a.b"))
    assert it.type == C.KDBUS_ITEM_OWNED_NAME
    assert I.decode_owned_name(it.payload) == (C.KDBUS_NAME_PRIMARY, "a.b")
    it = one(I.item_creds(1, 2, 3, 4, 5, 6, 7, 8))
    assert it.size == 80 and I.decode_creds(it.payload) == tuple(range(1, 9))
    it = one(I.item_pids(10, 11, 1))
    assert it.size == 40 and I.decode_pids(it.payload).tid == 11
    it = one(I.item_timestamp(1, 2, 3))
    assert it.size == 40 and I.decode_timestamp(it.payload) == (1, 2, 3)
    it = one(I.item_id_change(C.KDBUS_ITEM_ID_ADD, 5, 1))
    assert it.size == 32 and I.decode_id_change(it.payload) == (5, 1)
    it = one(I.item_name_change(C.KDBUS_ITEM_NAME_CHANGE, 2, 0x20, 3, 0x60, "a.b"))
    assert I.decode_name_change(it.payload) == (2, 0x20, 3, 0x60, "a.b")
    it = one(I.item_name_change(C.KDBUS_ITEM_NAME_ADD, 0, 0, 3, 0, None))
    assert it.size == 48 and I.decode_name_change(it.payload).name is None
    it = one(I.item_audit(7, 1000))
    assert it.size == 24 and I.decode_audit(it.payload) == (7, 1000)
    it = one(I.item_policy_access(C.KDBUS_POLICY_ACCESS_USER, C.KDBUS_POLICY_OWN, 1000))
    assert it.size == 40 and I.decode_policy_access(it.payload) == (1, 2, 1000)
    it = one(I.item_memfd(0, 4096, 3))
    assert it.size == 40 and I.decode_memfd(it.payload) == (0, 4096, 3)
    it = one(I.item_fds([3, 4, -1]))
    assert it.size == 28 and I.decode_fds(it.payload) == [3, 4, -1]
    it = one(I.item_cancel_fd(9))
    assert it.size == 20 and I.decode_fds(it.payload) == [9]
    it = one(I.item_bloom_filter(1, bytes(range(8))))
    assert I.decode_bloom_filter(it.payload) == (1, bytes(range(8)))
    it = one(I.item_negotiate([1, 2, 0x8000]))
    assert I.decode_u64_array(it.payload) == [1, 2, 0x8000]
    it = one(I.item_auxgroups([10, 20]))
    assert it.type == C.KDBUS_ITEM_AUXGROUPS and I.decode_u64_array(it.payload) == [10, 20]


def test_caps_item():
    full = (1 << 64) - 1
    raw = I.item_caps(37, [0, full, 1 << 37, 1 << 38])
    [it] = walk_items(raw, 0, len(raw))
    assert it.size == 52 and len(raw) == 56  # sheet: payload 36, item size 52
    check_payload(it)
    # word w of set s at item offset 20 + 8s + 4w
    words = [struct.unpack_from("<I", raw, 20 + 8 * s + 4 * w)[0]
             for s in range(4) for w in range(2)]
    assert words == [0, 0, 0xFFFFFFFF, 0x3F, 0, 0x20, 0, 0]  # bits above 37 cleared
    assert I.decode_caps(it.payload) == (37, [0, (1 << 38) - 1, 1 << 37, 0])


# --- walking --------------------------------------------------------------------------

def test_walk_padding_included_or_omitted():
    raw = I.item_u64(C.KDBUS_ITEM_ID, 1) + I.item_string(C.KDBUS_ITEM_NAME, "a.b")
    assert len(raw) == 48  # the NAME item is 20 bytes + 4 padding
    for end in (48, 44):
        items = walk_items(raw, 0, end)
        assert [(i.type, i.offset, i.size) for i in items] == [(14, 0, 24), (15, 24, 20)]
    for end in (40, 43, 45, 47):  # cuts into the item, or leaves partial padding
        if end < 44:
            assert errno_of(walk_items, raw, 0, end) == EINVAL
        else:
            assert len(walk_items(raw, 0, end)) == 2  # padding need not be complete


def test_walk_at_offset():
    raw = bytes(24) + I.item_u64(C.KDBUS_ITEM_ID, 1)
    assert walk_items(raw, 24, len(raw)) == [Item(14, 24, struct.pack("<Q", 1))]
    assert walk_items(raw, 24, 24) == []


@pytest.mark.parametrize("region", [
    struct.pack("<QQ", 15, 1),                          # size < 16
    struct.pack("<QQ", 0, 1),                           # size 0
    struct.pack("<QQ", 32, 1) + bytes(8),               # ends outside the region
    struct.pack("<QQ", 16, 1) + bytes(8),               # 8 trailing bytes
    struct.pack("<QQ", 20, 15) + b"abc\0" + bytes(4) + bytes(1),  # garbage after padding
    struct.pack("<QQ", 2**64 - 1, 1),                   # huge size
    bytes(8),                                           # truncated header
    struct.pack("<QQ", 20, 15) + b"abc\0" + bytes(4) + struct.pack("<QQ", 24, 1) + bytes(4),
])
def test_walk_layout_errors(region):
    assert errno_of(walk_items, region, 0, len(region)) == EINVAL


def test_walk_region_outside_buffer():
    assert errno_of(walk_items, bytes(16), 0, 32) == EINVAL


def test_walk_accepts_bytearray_and_memoryview():
    raw = I.item_u64(C.KDBUS_ITEM_ID, 5)
    for buf in (bytearray(raw), memoryview(raw)):
        [it] = walk_items(buf, 0, len(raw))
        assert type(it.payload) is bytes and it.payload == struct.pack("<Q", 5)


def test_walk_does_not_check_payloads():
    raw = I.encode_item(C.KDBUS_ITEM_ID, b"x")
    assert walk_items(raw, 0, len(raw))[0].payload == b"x"


# --- payload checks --------------------------------------------------------------------

GOOD = [
    (C.KDBUS_ITEM_NEGOTIATE, b""),
    (C.KDBUS_ITEM_NEGOTIATE, bytes(16)),
    (C.KDBUS_ITEM_PAYLOAD_VEC, struct.pack("<QQ", 1, 0)),
    (C.KDBUS_ITEM_PAYLOAD_OFF, struct.pack("<QQ", 1, 2**64 - 1)),
    (C.KDBUS_ITEM_PAYLOAD_MEMFD, struct.pack("<QQiI", 0, 1, 0, 0)),
    (C.KDBUS_ITEM_FDS, b""),
    (C.KDBUS_ITEM_FDS, struct.pack("<2i", -1, 5)),
    (C.KDBUS_ITEM_CANCEL_FD, struct.pack("<i", -1)),
    (C.KDBUS_ITEM_BLOOM_PARAMETER, bytes(16)),  # values are checked by BUS_MAKE
    (C.KDBUS_ITEM_BLOOM_FILTER, bytes(8)),
    (C.KDBUS_ITEM_BLOOM_FILTER, bytes(13)),     # length vs bloom size: SEND's job
    (C.KDBUS_ITEM_BLOOM_MASK, b"x"),            # not checked
    (C.KDBUS_ITEM_MAKE_NAME, b"1000-x\0"),
    (C.KDBUS_ITEM_CONN_DESCRIPTION, b"x\0"),
    (C.KDBUS_ITEM_ATTACH_FLAGS_SEND, bytes(8)),
    (C.KDBUS_ITEM_ATTACH_FLAGS_RECV, bytes(8)),
    (C.KDBUS_ITEM_ID, bytes(8)),
    (C.KDBUS_ITEM_DST_ID, bytes(8)),
    (C.KDBUS_ITEM_NAME, b"not a valid name but a string\0"),  # syntax: command's job
    (C.KDBUS_ITEM_DST_NAME, b"\0"),
    (C.KDBUS_ITEM_TID_COMM, b"x\0"),
    (C.KDBUS_ITEM_PID_COMM, b"x\0"),
    (C.KDBUS_ITEM_EXE, b"/x\0"),
    (C.KDBUS_ITEM_CMDLINE, b"x\0"),
    (C.KDBUS_ITEM_CGROUP, b"/\0"),
    (C.KDBUS_ITEM_SECLABEL, b"unconfined\0"),
    (C.KDBUS_ITEM_CREDS, bytes(64)),
    (C.KDBUS_ITEM_PIDS, b""),                   # not checked
    (C.KDBUS_ITEM_PIDS, bytes(5)),
    (C.KDBUS_ITEM_TIMESTAMP, bytes(24)),
    (C.KDBUS_ITEM_AUDIT, bytes(8)),
    (C.KDBUS_ITEM_POLICY_ACCESS, bytes(24)),
    (C.KDBUS_ITEM_AUXGROUPS, bytes(4)),
    (C.KDBUS_ITEM_AUXGROUPS, b""),
    (C.KDBUS_ITEM_CAPS, struct.pack("<I", 31)),  # 4 + 16*0
    (C.KDBUS_ITEM_CAPS, struct.pack("<I", 37) + bytes(16)),  # 4 + 16*1
    (C.KDBUS_ITEM_CAPS, struct.pack("<I", 37) + bytes(32)),
    (C.KDBUS_ITEM_OWNED_NAME, b""),             # not checked
    (C.KDBUS_ITEM_NAME_ADD, bytes(32)),
    (C.KDBUS_ITEM_NAME_REMOVE, bytes(32) + b"a.b\0"),
    (C.KDBUS_ITEM_NAME_CHANGE, bytes(32) + b"\0"),
    (C.KDBUS_ITEM_ID_ADD, bytes(16)),
    (C.KDBUS_ITEM_ID_REMOVE, bytes(16)),
    (C.KDBUS_ITEM_REPLY_TIMEOUT, b""),
    (C.KDBUS_ITEM_REPLY_DEAD, b""),
    (0, b"anything"),
    (0x7777, b"anything"),
]

BAD = [
    (C.KDBUS_ITEM_NEGOTIATE, bytes(4), EINVAL),
    (C.KDBUS_ITEM_NEGOTIATE, bytes(12), EINVAL),
    (C.KDBUS_ITEM_PAYLOAD_VEC, struct.pack("<QQ", 0, 1), EINVAL),  # size 0
    (C.KDBUS_ITEM_PAYLOAD_VEC, bytes(8), EINVAL),
    (C.KDBUS_ITEM_PAYLOAD_VEC, struct.pack("<QQQ", 1, 1, 1), EINVAL),
    (C.KDBUS_ITEM_PAYLOAD_OFF, struct.pack("<QQ", 0, 1), EINVAL),
    (C.KDBUS_ITEM_PAYLOAD_MEMFD, struct.pack("<QQiI", 0, 0, 3, 0), EINVAL),  # size 0
    (C.KDBUS_ITEM_PAYLOAD_MEMFD, struct.pack("<QQiI", 0, 1, -1, 0), EBADF),
    (C.KDBUS_ITEM_PAYLOAD_MEMFD, struct.pack("<QQiI", 0, 0, -1, 0), EINVAL),  # size first
    (C.KDBUS_ITEM_PAYLOAD_MEMFD, struct.pack("<QQi", 0, 1, 3), EINVAL),  # 20 bytes
    (C.KDBUS_ITEM_PAYLOAD_MEMFD, bytes(32), EINVAL),
    (C.KDBUS_ITEM_FDS, bytes(3), EINVAL),
    (C.KDBUS_ITEM_CANCEL_FD, b"", EINVAL),
    (C.KDBUS_ITEM_CANCEL_FD, bytes(8), EINVAL),
    (C.KDBUS_ITEM_BLOOM_PARAMETER, bytes(8), EINVAL),
    (C.KDBUS_ITEM_BLOOM_PARAMETER, bytes(24), EINVAL),
    (C.KDBUS_ITEM_BLOOM_FILTER, bytes(7), EINVAL),
    (C.KDBUS_ITEM_MAKE_NAME, b"\0", EINVAL),
    (C.KDBUS_ITEM_MAKE_NAME, b"-x\0", EINVAL),
    (C.KDBUS_ITEM_MAKE_NAME, b"x" * 64 + b"\0", ENAMETOOLONG),
    (C.KDBUS_ITEM_CONN_DESCRIPTION, b"a b\0", EINVAL),
    (C.KDBUS_ITEM_CONN_DESCRIPTION, b"x" * 64 + b"\0", ENAMETOOLONG),
    (C.KDBUS_ITEM_ATTACH_FLAGS_SEND, bytes(4), EINVAL),
    (C.KDBUS_ITEM_ATTACH_FLAGS_RECV, bytes(16), EINVAL),
    (C.KDBUS_ITEM_ID, b"", EINVAL),
    (C.KDBUS_ITEM_DST_ID, bytes(9), EINVAL),
    (C.KDBUS_ITEM_NAME, b"a.b", EINVAL),
    (C.KDBUS_ITEM_NAME, b"", EINVAL),
    (C.KDBUS_ITEM_DST_NAME, b"a\0b\0", EINVAL),
    (C.KDBUS_ITEM_TID_COMM, b"x", EINVAL),
    (C.KDBUS_ITEM_PID_COMM, b"\0\0", EINVAL),
    (C.KDBUS_ITEM_EXE, b"", EINVAL),
    (C.KDBUS_ITEM_CMDLINE, b"a\0b\0", EINVAL),  # a raw argv is not a string
    (C.KDBUS_ITEM_CGROUP, b"/", EINVAL),
    (C.KDBUS_ITEM_SECLABEL, b"x", EINVAL),
    (C.KDBUS_ITEM_CREDS, bytes(32), EINVAL),   # the docs' u32 creds
    (C.KDBUS_ITEM_CREDS, bytes(72), EINVAL),
    (C.KDBUS_ITEM_TIMESTAMP, bytes(16), EINVAL),
    (C.KDBUS_ITEM_AUDIT, bytes(16), EINVAL),
    (C.KDBUS_ITEM_POLICY_ACCESS, bytes(16), EINVAL),
    (C.KDBUS_ITEM_AUXGROUPS, bytes(6), EINVAL),
    (C.KDBUS_ITEM_CAPS, bytes(3), EINVAL),
    (C.KDBUS_ITEM_CAPS, struct.pack("<I", 37) + bytes(15), EINVAL),
    (C.KDBUS_ITEM_CAPS, struct.pack("<I", 0xFFFFFFFF) + bytes(64), EINVAL),
    (C.KDBUS_ITEM_NAME_ADD, bytes(31), EINVAL),
    (C.KDBUS_ITEM_NAME_REMOVE, bytes(32) + b"a.b", EINVAL),
    (C.KDBUS_ITEM_NAME_CHANGE, bytes(32) + b"a\0b\0", EINVAL),
    (C.KDBUS_ITEM_ID_ADD, bytes(8), EINVAL),
    (C.KDBUS_ITEM_ID_REMOVE, bytes(24), EINVAL),
    (C.KDBUS_ITEM_REPLY_TIMEOUT, bytes(8), EINVAL),
    (C.KDBUS_ITEM_REPLY_DEAD, b"\0", EINVAL),
]


@pytest.mark.parametrize("type_,payload", GOOD)
def test_payload_ok(type_, payload):
    check_payload(item(type_, payload))


@pytest.mark.parametrize("type_,payload,err", BAD)
def test_payload_errors(type_, payload, err):
    assert errno_of(check_payload, item(type_, payload)) == err


def test_every_item_type_has_a_payload_case():
    covered = {t for t, _ in GOOD} | {t for t, _, _ in BAD}
    assert set(C.ITEM_NAMES) <= covered


def test_item_repr_names_the_type():
    assert "KDBUS_ITEM_NAME" in repr(item(C.KDBUS_ITEM_NAME, b"a\0"))
