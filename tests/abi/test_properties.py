"""Property tests: arbitrary input never escapes as anything but KdbusError
with one of the parsing errnos of the fact sheet, and encode/walk agree."""

import struct
from errno import EBADF, EINVAL, EMSGSIZE, ENAMETOOLONG, ENOTTY

from hypothesis import HealthCheck, given, settings, strategies as st

from kdbusfs.abi import (COMMANDS, Item, KdbusError, check_mandatory, check_payload,
                         constants as C, parse_command, parse_msg, walk_items)
from kdbusfs.abi import items as I
from kdbusfs.abi.commands import MSG_ITEMS

from .build import cmd_bytes, msg_bytes
from .test_commands import SAMPLE

# §1.2 / §1.1: what generic parsing may answer.
COMMAND_ERRNOS = {EINVAL, EMSGSIZE, ENOTTY, EBADF, ENAMETOOLONG}
MSG_ERRNOS = {EINVAL, EMSGSIZE, EBADF}
PAYLOAD_ERRNOS = {EINVAL, EBADF, ENAMETOOLONG}

SETTINGS = settings(deadline=None, max_examples=300,
                    suppress_health_check=[HealthCheck.too_slow])

u64 = st.integers(0, 2**64 - 1)
item_types = st.one_of(st.sampled_from(sorted(C.ITEM_NAMES)), u64)
numbers = st.one_of(st.sampled_from(sorted(COMMANDS)), st.integers(0, 2**32 - 1))


@st.composite
def payloads(draw, type_):
    if type_ == C.KDBUS_ITEM_NEGOTIATE and draw(st.booleans()):
        return struct.pack("<3Q", *draw(st.lists(item_types, min_size=3, max_size=3)))
    if type_ in SAMPLE and draw(st.integers(0, 3)) != 1:
        return SAMPLE[type_]
    return draw(st.binary(max_size=80))


def types_for(accepted):
    """Mostly the accepted types, sometimes anything."""
    return st.one_of(st.sampled_from(sorted(accepted)), st.sampled_from(sorted(accepted)),
                     st.sampled_from(sorted(accepted)), item_types)


@st.composite
def item_lists(draw, types=item_types, max_size=6):
    out = []
    for type_ in draw(st.lists(types, max_size=max_size)):
        out.append((type_, draw(payloads(type_))))
    return out


def flag_words(accepted):
    """Mostly accepted flags (NEGOTIATE now and then), sometimes anything."""
    good = st.integers(0, accepted).map(lambda f: f & accepted)
    neg = good.map(lambda f: f | C.KDBUS_FLAG_NEGOTIATE)
    return st.one_of(good, good, good, neg, u64)


@st.composite
def mangled(draw, raw: bytes):
    """Sometimes cut the last item's padding, truncate or extend."""
    choice = draw(st.integers(0, 7))  # 0 (hypothesis' favourite) and 4-7: untouched
    if choice == 1 and raw:
        return raw[:draw(st.integers(0, len(raw)))]
    if choice == 2:
        return raw + draw(st.binary(min_size=1, max_size=16))
    if choice == 3 and len(raw) >= 8:
        # overwrite one aligned u64 with something
        off = draw(st.integers(0, len(raw) // 8 - 1)) * 8
        return raw[:off] + struct.pack("<Q", draw(u64)) + raw[off + 8:]
    return raw


def _check_parsed_items(buf: bytes, items, patches=()):
    patched = bytearray(buf)
    for off, data in patches:
        patched[off:off + len(data)] = data
    for item in items:
        check_payload(item)
        assert patched[item.offset:item.offset + item.size] == \
            I.encode_item(item.type, item.payload)[:item.size]


@SETTINGS
@given(numbers, st.binary(max_size=200))
def test_random_bytes_into_parse_command(number, raw):
    try:
        cmd = parse_command(number, raw)
    except KdbusError as e:
        assert e.errno in COMMAND_ERRNOS
    else:
        _check_parsed_items(raw, cmd.items, cmd.negotiate_patches)


@SETTINGS
@given(st.sampled_from(sorted(COMMANDS)), st.data())
def test_structured_commands(number, data):
    spec = COMMANDS[number]
    items = data.draw(item_lists(types_for(spec.items), max_size=4))
    flags = data.draw(flag_words(spec.flags))
    raw = data.draw(mangled(cmd_bytes(number, I.encode_items(items), flags)))
    try:
        cmd = parse_command(number, raw)
    except KdbusError as e:
        assert e.errno in COMMAND_ERRNOS
        return
    assert cmd.flags & ~spec.flags == 0
    seen = set()
    for item in cmd.items:
        assert item.type in spec.items
        if not spec.items[item.type]:
            assert item.type not in seen
            seen.add(item.type)
    neg = cmd.item(C.KDBUS_ITEM_NEGOTIATE)
    for off, _data in cmd.negotiate_patches:
        assert neg.offset + 16 <= off < neg.offset + neg.size
    _check_parsed_items(raw, cmd.items, cmd.negotiate_patches)
    try:
        check_mandatory(cmd)
    except KdbusError as e:
        assert e.errno == EINVAL and not cmd.negotiating


@SETTINGS
@given(st.binary(max_size=200))
def test_random_bytes_into_parse_msg(raw):
    try:
        msg = parse_msg(raw)
    except KdbusError as e:
        assert e.errno in MSG_ERRNOS
    else:
        _check_parsed_items(raw, msg.items)


msg_types = types_for(list(MSG_ITEMS) + [C.KDBUS_ITEM_NEGOTIATE])


@SETTINGS
@given(item_lists(msg_types), flag_words(0x7), st.integers(-2**63, 2**63 - 1), st.booleans(),
       st.data())
def test_structured_msgs(items, flags, priority, allow_negotiate, data):
    raw = data.draw(mangled(msg_bytes(I.encode_items(items), flags, priority=priority)))
    try:
        msg = parse_msg(raw, allow_negotiate_item=allow_negotiate)
    except KdbusError as e:
        assert e.errno in MSG_ERRNOS
        return
    assert msg.priority == struct.unpack_from("<q", raw, 16)[0]
    assert msg.flags & ~0x7 == 0
    counts = {}
    for item in msg.items:
        counts[item.type] = counts.get(item.type, 0) + 1
        assert item.type in MSG_ITEMS or (allow_negotiate and item.type == 1)
    for t in (C.KDBUS_ITEM_FDS, C.KDBUS_ITEM_BLOOM_FILTER, C.KDBUS_ITEM_DST_NAME, 1):
        assert counts.get(t, 0) <= 1
    _check_parsed_items(raw, msg.items)


@SETTINGS
@given(st.binary(max_size=160), st.integers(0, 170), st.integers(0, 170))
def test_random_bytes_into_walk_items(raw, start, end):
    try:
        items = walk_items(raw, start, end)
    except KdbusError as e:
        assert e.errno == EINVAL
        return
    pos = start
    for item in items:
        assert item.offset == pos and item.size >= 16
        assert raw[pos + 16:pos + item.size] == item.payload
        pos += I.align8(item.size)
    assert pos == start + I.align8(end - start) and pos >= end


@SETTINGS
@given(st.lists(st.tuples(u64, st.binary(max_size=40)), max_size=8), st.booleans(),
       st.integers(0, 4))
def test_encode_walk_round_trip(items, cut_padding, lead):
    raw = bytes(8 * lead) + I.encode_items(items)
    end = len(raw)
    if cut_padding and items:
        end -= -len(items[-1][1]) & 7
    walked = walk_items(raw, 8 * lead, end)
    assert [(i.type, i.payload) for i in walked] == items
    offsets, pos = [], 8 * lead
    for _t, p in items:
        offsets.append(pos)
        pos += I.item_size(len(p))
    assert [i.offset for i in walked] == offsets


@SETTINGS
@given(item_types, st.binary(max_size=80))
def test_payload_checks_only_raise_kdbus_errors(type_, payload):
    try:
        check_payload(Item(type_, 0, payload))
    except KdbusError as e:
        assert e.errno in PAYLOAD_ERRNOS
