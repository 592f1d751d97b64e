"""Item lists: walking, per-type payload checks, encoding (fact sheet §1.1).

This is a hot path (every command and every message goes through it), so
it works on ``bytes`` with precompiled ``struct.Struct``s and creates one
small slotted object per item, never cffi objects.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from errno import EBADF, EINVAL
from typing import Iterable, Mapping, NamedTuple, Sequence

from . import constants as C
from .errors import KdbusError
from .names import check_sysname, is_valid_string

HEADER_SIZE = C.KDBUS_ITEM_HEADER_SIZE

_HDR = struct.Struct("<QQ")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")
_S32 = struct.Struct("<i")
_QQ = struct.Struct("<QQ")
_QQQ = struct.Struct("<QQQ")
_QQQQ = struct.Struct("<QQQQ")
_CREDS = struct.Struct("<8Q")
_MEMFD = struct.Struct("<QQiI")
_AUDIT = struct.Struct("<II")
_PAD = tuple(b"\0" * n for n in range(8))


def align8(n: int) -> int:
    return (n + 7) & ~7


def item_size(payload_len: int) -> int:
    """KDBUS_ITEM_SIZE(n): the padded size an item with n payload bytes takes."""
    return (HEADER_SIZE + payload_len + 7) & ~7


@dataclass(slots=True)
class Item:
    """One item: ``offset`` is where its header sits in the parsed buffer;
    ``payload`` is its bytes 16..size (no padding)."""

    type: int
    offset: int
    payload: bytes

    @property
    def size(self) -> int:
        """The item's size field: header + payload, padding excluded."""
        return HEADER_SIZE + len(self.payload)

    @property
    def payload_offset(self) -> int:
        return self.offset + HEADER_SIZE

    def __repr__(self) -> str:
        name = C.ITEM_NAMES.get(self.type, hex(self.type))
        return f"Item({name}, offset={self.offset}, payload={self.payload!r})"


def _bytes(buf) -> bytes:
    return buf if type(buf) is bytes else bytes(buf)


# --------------------------------------------------------------------------
# walking


def walk_items(buf, start: int, end: int) -> list[Item]:
    """Split ``buf[start:end]`` into items, enforcing the §1.1 layout rules.

    Each item has size >= 16 and ends inside the region; items are
    contiguous at 8-aligned offsets; the walk ends exactly at
    ``start + ALIGN8(end - start)`` (so the last item's padding may or may
    not be included).  Any violation raises EINVAL.  No payload checks.
    """
    return parse_items(buf, start, end, None, check=False)


def parse_items(buf, start: int, end: int, allowed: Mapping[int, bool] | None,
                check: bool = True) -> list[Item]:
    """walk_items plus the per-item command rules, in the kernel's order.

    For each item in turn: layout (EINVAL), type in ``allowed`` (a map of
    accepted type -> repeatable; None accepts any type) (EINVAL), payload
    check (its own errno), repeat of a non-repeatable type (EINVAL).  The
    first failing item decides the errno.
    """
    buf = _bytes(buf)
    if start < 0 or start > end or end > len(buf):
        raise KdbusError(EINVAL, "item region outside the buffer")
    items: list[Item] = []
    seen: set[int] = set()
    pos = start
    unpack = _HDR.unpack_from
    while pos < end:
        if end - pos < HEADER_SIZE:
            raise KdbusError(EINVAL, f"truncated item header at offset {pos}")
        size, type_ = unpack(buf, pos)
        if size < HEADER_SIZE or size > end - pos:
            raise KdbusError(EINVAL, f"bad item size {size} at offset {pos}")
        payload = buf[pos + HEADER_SIZE:pos + size]
        if allowed is not None:
            repeatable = allowed.get(type_)
            if repeatable is None:
                raise KdbusError(EINVAL, f"item type {_tname(type_)} not accepted here")
        if check:
            checker = _CHECKS.get(type_)
            if checker is not None:
                checker(type_, payload)
        if allowed is not None and not repeatable:
            if type_ in seen:
                raise KdbusError(EINVAL, f"repeated item {_tname(type_)}")
            seen.add(type_)
        items.append(Item(type_, pos, payload))
        pos += (size + 7) & ~7
    # Always true after the loop above (each step lands on an 8-multiple no
    # further than ALIGN8 of the region end); kept as the rule's statement.
    if pos - start != align8(end - start):
        raise KdbusError(EINVAL, "item list does not end at the region end")
    return items


def _tname(type_: int) -> str:
    return C.ITEM_NAMES.get(type_, hex(type_))


# --------------------------------------------------------------------------
# payload checks


def check_payload(item: Item) -> None:
    """The §1.1 per-type payload checks; EINVAL unless noted.  Types the
    table does not mention (PIDS, BLOOM_MASK, OWNED_NAME, ...) pass."""
    checker = _CHECKS.get(item.type)
    if checker is not None:
        checker(item.type, item.payload)


def _bad(type_: int, why: str) -> KdbusError:
    return KdbusError(EINVAL, f"{_tname(type_)}: {why}")


def _exact(n: int):
    def check(type_: int, p: bytes) -> None:
        if len(p) != n:
            raise _bad(type_, f"payload is {len(p)} bytes, expected {n}")
    return check


def _multiple(n: int):
    def check(type_: int, p: bytes) -> None:
        if len(p) % n:
            raise _bad(type_, f"payload is {len(p)} bytes, not a multiple of {n}")
    return check


def _string(type_: int, p: bytes) -> None:
    if not is_valid_string(p):
        raise _bad(type_, "not a NUL-terminated string without inner NUL")


def _sysname(type_: int, p: bytes) -> None:
    check_sysname(p)


def _vec(type_: int, p: bytes) -> None:
    if len(p) != 16:
        raise _bad(type_, f"payload is {len(p)} bytes, expected 16")
    if _U64.unpack_from(p)[0] == 0:
        raise _bad(type_, "vec size is 0")


def _memfd(type_: int, p: bytes) -> None:
    if len(p) != 24:
        raise _bad(type_, f"payload is {len(p)} bytes, expected 24")
    _start, size, fd, _pad = _MEMFD.unpack(p)
    if size == 0:
        raise _bad(type_, "memfd size is 0")
    if fd < 0:
        raise KdbusError(EBADF, f"memfd fd {fd} < 0")


def _bloom_filter(type_: int, p: bytes) -> None:
    if len(p) < 8:
        raise _bad(type_, "payload shorter than 8 bytes")


def _caps(type_: int, p: bytes) -> None:
    # The kernel's bound, literally: 4 sets x 4 bytes x (last_cap >> 5).
    if len(p) < 4 or len(p) < 4 + 16 * (_U32.unpack_from(p)[0] >> 5):
        raise _bad(type_, "payload too short for last_cap")


def _name_change(type_: int, p: bytes) -> None:
    if len(p) < 32:
        raise _bad(type_, "payload shorter than 32 bytes")
    if len(p) > 32 and not is_valid_string(p[32:]):
        raise _bad(type_, "name tail is not a valid string")


_CHECKS = {
    C.KDBUS_ITEM_NEGOTIATE: _multiple(8),
    C.KDBUS_ITEM_PAYLOAD_VEC: _vec,
    C.KDBUS_ITEM_PAYLOAD_OFF: _vec,
    C.KDBUS_ITEM_PAYLOAD_MEMFD: _memfd,
    C.KDBUS_ITEM_FDS: _multiple(4),
    C.KDBUS_ITEM_CANCEL_FD: _exact(4),
    C.KDBUS_ITEM_BLOOM_PARAMETER: _exact(16),
    C.KDBUS_ITEM_BLOOM_FILTER: _bloom_filter,
    C.KDBUS_ITEM_MAKE_NAME: _sysname,
    C.KDBUS_ITEM_CONN_DESCRIPTION: _sysname,
    C.KDBUS_ITEM_ATTACH_FLAGS_SEND: _exact(8),
    C.KDBUS_ITEM_ATTACH_FLAGS_RECV: _exact(8),
    C.KDBUS_ITEM_ID: _exact(8),
    C.KDBUS_ITEM_DST_ID: _exact(8),
    C.KDBUS_ITEM_NAME: _string,
    C.KDBUS_ITEM_DST_NAME: _string,
    C.KDBUS_ITEM_TID_COMM: _string,
    C.KDBUS_ITEM_PID_COMM: _string,
    C.KDBUS_ITEM_EXE: _string,
    C.KDBUS_ITEM_CMDLINE: _string,
    C.KDBUS_ITEM_CGROUP: _string,
    C.KDBUS_ITEM_SECLABEL: _string,
    C.KDBUS_ITEM_CREDS: _exact(64),
    C.KDBUS_ITEM_TIMESTAMP: _exact(24),
    C.KDBUS_ITEM_AUDIT: _exact(8),
    C.KDBUS_ITEM_POLICY_ACCESS: _exact(24),
    C.KDBUS_ITEM_AUXGROUPS: _multiple(4),
    C.KDBUS_ITEM_CAPS: _caps,
    C.KDBUS_ITEM_NAME_ADD: _name_change,
    C.KDBUS_ITEM_NAME_REMOVE: _name_change,
    C.KDBUS_ITEM_NAME_CHANGE: _name_change,
    C.KDBUS_ITEM_ID_ADD: _exact(16),
    C.KDBUS_ITEM_ID_REMOVE: _exact(16),
    C.KDBUS_ITEM_REPLY_TIMEOUT: _exact(0),
    C.KDBUS_ITEM_REPLY_DEAD: _exact(0),
}


# --------------------------------------------------------------------------
# decoding (payloads that passed check_payload)


class Vec(NamedTuple):
    size: int
    address: int  # PAYLOAD_OFF: the offset


class Memfd(NamedTuple):
    start: int
    size: int
    fd: int


class BloomParameter(NamedTuple):
    size: int
    n_hash: int


class PolicyAccess(NamedTuple):
    type: int
    access: int
    id: int


class IdChange(NamedTuple):
    id: int
    flags: int


class NameChange(NamedTuple):
    old_id: int
    old_flags: int
    new_id: int
    new_flags: int
    name: str | None  # None when the item has no name tail


class Creds(NamedTuple):
    uid: int
    euid: int
    suid: int
    fsuid: int
    gid: int
    egid: int
    sgid: int
    fsgid: int


class Pids(NamedTuple):
    pid: int
    tid: int
    ppid: int


class Timestamp(NamedTuple):
    seqnum: int
    monotonic_ns: int
    realtime_ns: int


def decode_u64(payload: bytes) -> int:
    return _U64.unpack_from(payload)[0]


def decode_u64_array(payload: bytes) -> list[int]:
    return list(struct.unpack_from(f"<{len(payload) // 8}Q", payload))


def decode_string(payload: bytes) -> str:
    return payload[:-1].decode("latin-1")


def decode_vec(payload: bytes) -> Vec:
    return Vec(*_QQ.unpack_from(payload))


def decode_memfd(payload: bytes) -> Memfd:
    return Memfd(*_MEMFD.unpack_from(payload)[:3])


def decode_fds(payload: bytes) -> list[int]:
    return list(struct.unpack_from(f"<{len(payload) // 4}i", payload))


def decode_bloom_parameter(payload: bytes) -> BloomParameter:
    return BloomParameter(*_QQ.unpack_from(payload))


def decode_bloom_filter(payload: bytes) -> tuple[int, bytes]:
    """(generation, filter bytes)"""
    return _U64.unpack_from(payload)[0], payload[8:]


def decode_policy_access(payload: bytes) -> PolicyAccess:
    return PolicyAccess(*_QQQ.unpack_from(payload))


def decode_id_change(payload: bytes) -> IdChange:
    return IdChange(*_QQ.unpack_from(payload))


def decode_name_change(payload: bytes) -> NameChange:
    name = decode_string(payload[32:]) if len(payload) > 32 else None
    return NameChange(*_QQQQ.unpack_from(payload), name)


def decode_owned_name(payload: bytes) -> tuple[int, str]:
    """OWNED_NAME: (flags, name)"""
    return _U64.unpack_from(payload)[0], decode_string(payload[8:])


def decode_creds(payload: bytes) -> Creds:
    return Creds(*_CREDS.unpack_from(payload))


def decode_pids(payload: bytes) -> Pids:
    return Pids(*_QQQ.unpack_from(payload))


def decode_timestamp(payload: bytes) -> Timestamp:
    return Timestamp(*_QQQ.unpack_from(payload))


def decode_audit(payload: bytes) -> tuple[int, int]:
    """(sessionid, loginuid)"""
    return _AUDIT.unpack_from(payload)


def decode_caps(payload: bytes) -> tuple[int, list[int]]:
    """(last_cap, [inheritable, permitted, effective, bounding]) with each
    set as an int built from its u32 words (low word first)."""
    last_cap = _U32.unpack_from(payload)[0]
    words = struct.unpack_from(f"<{(len(payload) - 4) // 4}I", payload, 4)
    per_set = len(words) // 4
    sets = []
    for s in range(4):
        v = 0
        for w, word in enumerate(words[s * per_set:(s + 1) * per_set]):
            v |= word << (32 * w)
        sets.append(v)
    return last_cap, sets


# --------------------------------------------------------------------------
# encoding


def encode_item(type: int, payload: bytes = b"") -> bytes:
    """One item: size = 16 + len(payload), zero padding up to 8."""
    n = len(payload)
    return _HDR.pack(HEADER_SIZE + n, type) + payload + _PAD[-n & 7]


def encode_items(items: Iterable[tuple[int, bytes]]) -> bytes:
    return b"".join(encode_item(t, p) for t, p in items)


def _cstr(s: str | bytes) -> bytes:
    return (s.encode("latin-1") if isinstance(s, str) else bytes(s)) + b"\0"


def item_u64(type: int, value: int) -> bytes:
    return encode_item(type, _U64.pack(value))


def item_string(type: int, s: str | bytes) -> bytes:
    """A string item; the NUL is added.  ``str`` is encoded as latin-1."""
    return encode_item(type, _cstr(s))


def item_negotiate(types: Sequence[int]) -> bytes:
    return encode_item(C.KDBUS_ITEM_NEGOTIATE, struct.pack(f"<{len(types)}Q", *types))


def item_vec(size: int, address: int, type: int = C.KDBUS_ITEM_PAYLOAD_VEC) -> bytes:
    """PAYLOAD_VEC (address), or PAYLOAD_OFF (offset) with that type."""
    return encode_item(type, _QQ.pack(size, address))


def item_payload_off(size: int, offset: int) -> bytes:
    return encode_item(C.KDBUS_ITEM_PAYLOAD_OFF, _QQ.pack(size, offset))


def item_memfd(start: int, size: int, fd: int) -> bytes:
    return encode_item(C.KDBUS_ITEM_PAYLOAD_MEMFD, _MEMFD.pack(start, size, fd, 0))


def item_fds(fds: Sequence[int]) -> bytes:
    return encode_item(C.KDBUS_ITEM_FDS, struct.pack(f"<{len(fds)}i", *fds))


def item_cancel_fd(fd: int) -> bytes:
    return encode_item(C.KDBUS_ITEM_CANCEL_FD, _S32.pack(fd))


def item_bloom_parameter(size: int, n_hash: int) -> bytes:
    return encode_item(C.KDBUS_ITEM_BLOOM_PARAMETER, _QQ.pack(size, n_hash))


def item_bloom_filter(generation: int, data: bytes) -> bytes:
    return encode_item(C.KDBUS_ITEM_BLOOM_FILTER, _U64.pack(generation) + data)


def item_bloom_mask(data: bytes) -> bytes:
    return encode_item(C.KDBUS_ITEM_BLOOM_MASK, data)


def item_name(flags: int, name: str | bytes) -> bytes:
    """OWNED_NAME: a kdbus_name (flags + string).  The input NAME item is a
    plain string: use item_string(KDBUS_ITEM_NAME, name) for that."""
    return encode_item(C.KDBUS_ITEM_OWNED_NAME, _U64.pack(flags) + _cstr(name))


def item_creds(uid: int, euid: int, suid: int, fsuid: int,
               gid: int, egid: int, sgid: int, fsgid: int) -> bytes:
    return encode_item(C.KDBUS_ITEM_CREDS,
                       _CREDS.pack(uid, euid, suid, fsuid, gid, egid, sgid, fsgid))


def item_pids(pid: int, tid: int, ppid: int) -> bytes:
    return encode_item(C.KDBUS_ITEM_PIDS, _QQQ.pack(pid, tid, ppid))


def item_auxgroups(gids: Sequence[int]) -> bytes:
    """AUXGROUPS: one u64 per gid (the kdbus docs say u32)."""
    return encode_item(C.KDBUS_ITEM_AUXGROUPS, struct.pack(f"<{len(gids)}Q", *gids))


def item_timestamp(seqnum: int, mono_ns: int, real_ns: int) -> bytes:
    return encode_item(C.KDBUS_ITEM_TIMESTAMP, _QQQ.pack(seqnum, mono_ns, real_ns))


def item_id_change(type: int, id: int, flags: int) -> bytes:
    """ID_ADD / ID_REMOVE notification (or match rule)."""
    return encode_item(type, _QQ.pack(id, flags))


def item_name_change(type: int, old_id: int, old_flags: int, new_id: int,
                     new_flags: int, name: str | bytes | None) -> bytes:
    """NAME_ADD / NAME_REMOVE / NAME_CHANGE; ``name=None`` omits the tail
    (only meaningful in match rules)."""
    tail = b"" if name is None else _cstr(name)
    return encode_item(type, _QQQQ.pack(old_id, old_flags, new_id, new_flags) + tail)


CAPS_SETS = 4
CAPS_WORDS = 2  # u32 words per set, as the kernel emits them (_KERNEL_CAPABILITY_U32S)


def item_caps(last_cap: int, sets: Sequence[int]) -> bytes:
    """CAPS: ``sets`` = (inheritable, permitted, effective, bounding) as int
    bit masks; bits above ``last_cap`` are cleared.  Payload 36 bytes."""
    if len(sets) != CAPS_SETS:
        raise ValueError("CAPS needs exactly 4 sets")
    mask = (1 << (last_cap + 1)) - 1
    words = []
    for s in sets:
        s &= mask
        words.extend((s >> (32 * w)) & 0xFFFFFFFF for w in range(CAPS_WORDS))
    return encode_item(C.KDBUS_ITEM_CAPS, struct.pack(f"<I{len(words)}I", last_cap, *words))


def item_audit(sessionid: int, loginuid: int) -> bytes:
    return encode_item(C.KDBUS_ITEM_AUDIT, _AUDIT.pack(sessionid, loginuid))


def item_policy_access(type: int, access: int, id: int) -> bytes:
    return encode_item(C.KDBUS_ITEM_POLICY_ACCESS, _QQQ.pack(type, access, id))
