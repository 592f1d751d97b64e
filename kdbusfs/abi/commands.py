"""Generic command parsing (fact sheet §1.2 steps 2 and 5-8, §1.3, §6).

The filesystem reads the caller's memory (steps 1 and 3) and zeroes
return_flags (step 4): it reads the u64 size, may call
:func:`check_command_size` before copying, copies ``size`` bytes and hands
them to :func:`parse_command`.  What comes back is fully
validated at the generic level; command-specific rules (§6) belong to the
engine.  Nothing here touches user memory: negotiation results are returned
as patches for the caller to write.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from errno import EINVAL, EMSGSIZE, ENOTTY
from types import MappingProxyType
from typing import Mapping

from . import constants as C
from .errors import KdbusError
from .ffi import ffi
from .items import Item, parse_items
from .limits import KDBUS_CMD_MAX_SIZE

NEGOTIATE = C.KDBUS_FLAG_NEGOTIATE

_U64 = struct.Struct("<Q")
_ZERO64 = bytes(8)

#: Offset of ``return_flags`` in every command struct (not in kdbus_msg).
RETURN_FLAGS_OFFSET = 16
#: Offset of ``flags`` in every command struct and in kdbus_msg.
FLAGS_OFFSET = 8
# Command-specific fields follow size, flags and return_flags.
_FIELDS_START = 24


@dataclass(frozen=True, slots=True)
class CommandSpec:
    number: int
    name: str                    # "KDBUS_CMD_HELLO"
    struct_name: str             # "kdbus_cmd_hello"
    size: int                    # fixed struct size == offsetof(items)
    flags: int                   # accepted command flags, NEGOTIATE excluded
    items: Mapping[int, bool]    # accepted item type -> repeatable (NEGOTIATE included)
    mandatory: frozenset[int]    # step 8
    field_offsets: Mapping[str, int]  # every named field, nested as "reply.offset"
    _fields: tuple[str, ...] = field(repr=False)
    _decoder: struct.Struct = field(repr=False)

    def decode_fields(self, buf: bytes) -> dict[str, int]:
        return dict(zip(self._fields, self._decoder.unpack_from(buf, _FIELDS_START)))


def _field_layout(struct_name: str):
    """(names, struct.Struct) decoding every scalar field after size, flags
    and return_flags; nested structs flattened as "outer.inner"; arrays
    skipped.  Also the offset of every named field."""
    offsets: dict[str, int] = {}
    scalars: list[tuple[int, str, str]] = []

    def visit(ctype, base: int, prefix: str) -> None:
        for name, f in ctype.fields:
            if name.startswith("_kdbusfs"):
                continue
            off, full = base + f.offset, prefix + name
            offsets[full] = off
            kind = f.type.kind
            if kind == "struct":
                visit(f.type, off, full + ".")
            elif kind == "primitive":
                if ffi.sizeof(f.type) != 8:
                    raise TypeError(f"unexpected field {full} in {struct_name}")
                scalars.append((off, full, "q" if f.type.cname.startswith("int") else "Q"))

    visit(ffi.typeof(f"struct {struct_name}"), 0, "")
    fmt, names, pos = "<", [], _FIELDS_START
    for off, name, code in sorted(scalars):
        if off < _FIELDS_START:
            continue  # size, flags, return_flags
        fmt += f"{off - pos}x{code}" if off > pos else code
        names.append(name)
        pos = off + 8
    return tuple(names), struct.Struct(fmt), MappingProxyType(offsets)


def _spec(name: str, struct_name: str, flags: int, items=(), repeatable=(),
          mandatory=()) -> CommandSpec:
    accepted = {C.KDBUS_ITEM_NEGOTIATE: False}
    for t in items:
        accepted[t] = t in repeatable
    names, decoder, offsets = _field_layout(struct_name)
    return CommandSpec(
        number=C.VALUES[name], name=name, struct_name=struct_name,
        size=ffi.offsetof(f"struct {struct_name}", "items"), flags=flags,
        items=MappingProxyType(accepted), mandatory=frozenset(mandatory),
        field_offsets=offsets, _fields=names, _decoder=decoder)


_MATCH_RULES = (C.KDBUS_ITEM_BLOOM_MASK, C.KDBUS_ITEM_NAME, C.KDBUS_ITEM_ID,
                C.KDBUS_ITEM_DST_ID, C.KDBUS_ITEM_NAME_ADD, C.KDBUS_ITEM_NAME_REMOVE,
                C.KDBUS_ITEM_NAME_CHANGE, C.KDBUS_ITEM_ID_ADD, C.KDBUS_ITEM_ID_REMOVE)
_MAKE_FLAGS = C.KDBUS_MAKE_ACCESS_GROUP | C.KDBUS_MAKE_ACCESS_WORLD
_POLICY = (C.KDBUS_ITEM_NAME, C.KDBUS_ITEM_POLICY_ACCESS)

#: Per ioctl number: what the generic parser accepts (§6).
COMMANDS: Mapping[int, CommandSpec] = MappingProxyType({s.number: s for s in (
    _spec("KDBUS_CMD_BUS_MAKE", "kdbus_cmd", _MAKE_FLAGS,
          (C.KDBUS_ITEM_MAKE_NAME, C.KDBUS_ITEM_BLOOM_PARAMETER, C.KDBUS_ITEM_ATTACH_FLAGS_SEND),
          mandatory=(C.KDBUS_ITEM_MAKE_NAME, C.KDBUS_ITEM_BLOOM_PARAMETER)),
    _spec("KDBUS_CMD_ENDPOINT_MAKE", "kdbus_cmd", _MAKE_FLAGS,
          (C.KDBUS_ITEM_MAKE_NAME,), mandatory=(C.KDBUS_ITEM_MAKE_NAME,)),
    _spec("KDBUS_CMD_ENDPOINT_UPDATE", "kdbus_cmd", 0, _POLICY, repeatable=_POLICY),
    _spec("KDBUS_CMD_HELLO", "kdbus_cmd_hello",
          C.KDBUS_HELLO_ACCEPT_FD | C.KDBUS_HELLO_ACTIVATOR
          | C.KDBUS_HELLO_POLICY_HOLDER | C.KDBUS_HELLO_MONITOR,
          (C.KDBUS_ITEM_NAME, C.KDBUS_ITEM_CREDS, C.KDBUS_ITEM_PIDS, C.KDBUS_ITEM_SECLABEL,
           C.KDBUS_ITEM_CONN_DESCRIPTION, C.KDBUS_ITEM_POLICY_ACCESS),
          repeatable=(C.KDBUS_ITEM_POLICY_ACCESS,)),
    # Several NAMEs parse; the engine answers E2BIG (one name per holder).
    _spec("KDBUS_CMD_UPDATE", "kdbus_cmd", 0,
          (C.KDBUS_ITEM_ATTACH_FLAGS_SEND, C.KDBUS_ITEM_ATTACH_FLAGS_RECV) + _POLICY,
          repeatable=_POLICY),
    _spec("KDBUS_CMD_BYEBYE", "kdbus_cmd", 0),
    _spec("KDBUS_CMD_FREE", "kdbus_cmd_free", 0),
    _spec("KDBUS_CMD_CONN_INFO", "kdbus_cmd_info", 0, (C.KDBUS_ITEM_NAME,)),
    _spec("KDBUS_CMD_BUS_CREATOR_INFO", "kdbus_cmd_info", 0),
    _spec("KDBUS_CMD_LIST", "kdbus_cmd_list",
          C.KDBUS_LIST_UNIQUE | C.KDBUS_LIST_NAMES | C.KDBUS_LIST_ACTIVATORS
          | C.KDBUS_LIST_QUEUED),
    _spec("KDBUS_CMD_SEND", "kdbus_cmd_send", C.KDBUS_SEND_SYNC_REPLY,
          (C.KDBUS_ITEM_CANCEL_FD,)),
    _spec("KDBUS_CMD_RECV", "kdbus_cmd_recv",
          C.KDBUS_RECV_PEEK | C.KDBUS_RECV_DROP | C.KDBUS_RECV_USE_PRIORITY
          | C.KDBUSFS_RECV_BLOCK),
    _spec("KDBUS_CMD_NAME_ACQUIRE", "kdbus_cmd",
          C.KDBUS_NAME_REPLACE_EXISTING | C.KDBUS_NAME_ALLOW_REPLACEMENT | C.KDBUS_NAME_QUEUE,
          (C.KDBUS_ITEM_NAME,), mandatory=(C.KDBUS_ITEM_NAME,)),
    _spec("KDBUS_CMD_NAME_RELEASE", "kdbus_cmd", 0,
          (C.KDBUS_ITEM_NAME,), mandatory=(C.KDBUS_ITEM_NAME,)),
    _spec("KDBUS_CMD_MATCH_ADD", "kdbus_cmd_match", C.KDBUS_MATCH_REPLACE,
          _MATCH_RULES, repeatable=_MATCH_RULES),
    _spec("KDBUS_CMD_MATCH_REMOVE", "kdbus_cmd_match", 0),
)})


@dataclass(slots=True)
class Command:
    """A command that passed steps 2 and 5-7.

    ``flags`` has the NEGOTIATE bit removed (see ``negotiating``).
    ``negotiate_patches`` are (offset from the command start, bytes) to
    write into user memory, whether or not ``negotiating``; the NEGOTIATE
    item in ``items`` already shows the zeroed payload.  When
    ``negotiating``, the caller writes ``supported_flags`` over the user's
    ``flags`` (offset 8) and returns 0 without anything else.
    """

    number: int
    name: str
    size: int
    flags: int
    fields: dict[str, int]
    items: list[Item]
    negotiating: bool
    negotiate_patches: list[tuple[int, bytes]]
    supported_flags: int

    @property
    def spec(self) -> CommandSpec:
        return COMMANDS[self.number]

    def item(self, type: int) -> Item | None:
        """The first item of ``type``, or None."""
        for it in self.items:
            if it.type == type:
                return it
        return None

    def items_of(self, type: int) -> list[Item]:
        return [it for it in self.items if it.type == type]


def command_spec(number: int) -> CommandSpec:
    """The spec of ioctl ``number``; ENOTTY for unknown numbers."""
    spec = COMMANDS.get(number)
    if spec is None:
        raise KdbusError(ENOTTY, f"unknown ioctl {number:#x}")
    return spec


def _check_size(size: int, base: int) -> None:
    if size < base:
        raise KdbusError(EINVAL, f"size {size} below the fixed size {base}")
    if size > KDBUS_CMD_MAX_SIZE:
        raise KdbusError(EMSGSIZE, f"size {size} above {KDBUS_CMD_MAX_SIZE}")


def check_command_size(number: int, size: int) -> int:
    """Step 2 alone, for the caller to run before copying ``size`` bytes.
    ENOTTY (unknown number), EINVAL (too small), EMSGSIZE (above 32768)."""
    _check_size(size, command_spec(number).size)
    return size


def _read_head(buf: bytes, base: int, expected_size: int | None) -> tuple[int, int]:
    if len(buf) < 8:
        raise KdbusError(EINVAL, "buffer cannot hold the size field")
    (size,) = _U64.unpack_from(buf)
    _check_size(size, base)
    if expected_size is not None and size != expected_size:
        raise KdbusError(EINVAL, "size changed between the two reads")
    if len(buf) < size:
        raise KdbusError(EINVAL, f"buffer holds {len(buf)} of {size} bytes")
    return size, _U64.unpack_from(buf, FLAGS_OFFSET)[0]


def parse_command(number: int, buf, expected_size: int | None = None) -> Command:
    """Steps 2, 5, 6 and 7 for the command bytes ``buf``.

    ``buf`` holds at least the ``size`` bytes the size field announces
    (extra bytes are ignored).  ``expected_size`` is the size the caller
    read in step 1; a different size field now fails with EINVAL (step 3).
    Raises KdbusError: ENOTTY, EINVAL, EMSGSIZE, or an item's own errno
    (EBADF, ENAMETOOLONG).
    """
    spec = command_spec(number)
    buf = buf if type(buf) is bytes else bytes(buf)
    size, flags = _read_head(buf, spec.size, expected_size)
    if flags & ~(spec.flags | NEGOTIATE):
        raise KdbusError(EINVAL, f"unsupported flags {flags & ~(spec.flags | NEGOTIATE):#x}")
    items = parse_items(buf, spec.size, size, spec.items)
    patches: list[tuple[int, bytes]] = []
    for i, it in enumerate(items):
        if it.type == C.KDBUS_ITEM_NEGOTIATE:
            patches, items[i] = _negotiate(it, spec.items)
            break  # not repeatable: there is at most one
    return Command(number, spec.name, size, flags & ~NEGOTIATE, spec.decode_fields(buf),
                   items, bool(flags & NEGOTIATE), patches, spec.flags)


def _negotiate(item: Item, accepted: Mapping[int, bool]) -> tuple[list[tuple[int, bytes]], Item]:
    """Zero every u64 of a NEGOTIATE item that is not an accepted type."""
    payload = item.payload
    patches = []
    words = []
    base = item.offset + 16
    for k in range(len(payload) // 8):
        (t,) = _U64.unpack_from(payload, 8 * k)
        if t not in accepted:
            patches.append((base + 8 * k, _ZERO64))
            t = 0
        words.append(t)
    if patches:
        item = Item(item.type, item.offset, struct.pack(f"<{len(words)}Q", *words))
    return patches, item


def check_mandatory(cmd: Command) -> None:
    """Step 8: EINVAL when a mandatory item is missing (not when negotiating)."""
    if cmd.negotiating:
        return
    missing = COMMANDS[cmd.number].mandatory.difference(it.type for it in cmd.items)
    if missing:
        names = ", ".join(sorted(C.ITEM_NAMES[t] for t in missing))
        raise KdbusError(EINVAL, f"{cmd.name}: missing {names}")


# --------------------------------------------------------------------------
# the kdbus_msg behind SEND

MSG_SIZE = ffi.sizeof("struct kdbus_msg")
#: What a negotiating msg's flags become in user memory.
MSG_FLAGS = C.KDBUS_MSG_EXPECT_REPLY | C.KDBUS_MSG_NO_AUTO_START | C.KDBUS_MSG_SIGNAL
MSG_ITEMS: Mapping[int, bool] = MappingProxyType({
    C.KDBUS_ITEM_PAYLOAD_VEC: True,
    C.KDBUS_ITEM_PAYLOAD_MEMFD: True,
    C.KDBUS_ITEM_FDS: False,
    C.KDBUS_ITEM_BLOOM_FILTER: False,
    C.KDBUS_ITEM_DST_NAME: False,
})
_MSG_ITEMS_NEG = MappingProxyType({C.KDBUS_ITEM_NEGOTIATE: False, **MSG_ITEMS})
_MSG_HEAD = struct.Struct("<QQqQQQQQ")


@dataclass(slots=True)
class Msg:
    """A kdbus_msg that passed the generic steps.  ``flags`` has the
    NEGOTIATE bit removed (see ``negotiating``); ``timeout_ns`` and
    ``cookie_reply`` are the same storage."""

    size: int
    flags: int
    negotiating: bool
    priority: int
    dst_id: int
    src_id: int
    payload_type: int
    cookie: int
    timeout_ns: int
    items: list[Item]

    @property
    def cookie_reply(self) -> int:
        return self.timeout_ns

    @property
    def supported_flags(self) -> int:
        return MSG_FLAGS


def check_msg_size(size: int) -> int:
    """Step 2 for the msg: EINVAL below 64 bytes, EMSGSIZE above 32768."""
    _check_size(size, MSG_SIZE)
    return size


def parse_msg(buf, expected_size: int | None = None, *,
              allow_negotiate_item: bool = False) -> Msg:
    """Steps 2, 5 and 6 for the kdbus_msg bytes ``buf`` (no return_flags).

    Flags: EXPECT_REPLY, NO_AUTO_START, SIGNAL (NEGOTIATE is reported, the
    engine decides).  Items: PAYLOAD_VEC and PAYLOAD_MEMFD repeatable;
    FDS, BLOOM_FILTER and DST_NAME once (a repeat is EINVAL).  A NEGOTIATE
    item is EINVAL; with ``allow_negotiate_item`` it is left in ``items``
    so the engine can reject it at its place in §6.10 (step 11, after the
    header checks of steps 6-10).  The send rules of §6.10 stay with the
    engine.
    """
    buf = buf if type(buf) is bytes else bytes(buf)
    size, flags = _read_head(buf, MSG_SIZE, expected_size)
    if flags & ~(MSG_FLAGS | NEGOTIATE):
        raise KdbusError(EINVAL, f"unsupported msg flags {flags & ~(MSG_FLAGS | NEGOTIATE):#x}")
    items = parse_items(buf, MSG_SIZE, size,
                        _MSG_ITEMS_NEG if allow_negotiate_item else MSG_ITEMS)
    _, _, priority, dst_id, src_id, payload_type, cookie, timeout = _MSG_HEAD.unpack_from(buf)
    return Msg(size, flags & ~NEGOTIATE, bool(flags & NEGOTIATE), priority, dst_id, src_id,
               payload_type, cookie, timeout, items)
