"""Introspection: CONN_INFO and BUS_CREATOR_INFO (fact sheet §6.8).

Both answer with a ``kdbus_info`` record in the caller's pool: id, flags and
metadata items.  LIST (names.py) answers with an array of the same records.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I
from kdbusfs.abi.errors import KdbusError

from . import _sys
from . import commands as cmds
from .metadata import Metadata

ATTACH_ALL = C._KDBUS_ATTACH_ALL


@dataclass(slots=True)
class Info(Metadata):
    """A kdbus_info record: ``id`` and ``flags`` plus its metadata.

    CONN_INFO: the connection id and its HELLO flags, metadata as the target
    allows.  BUS_CREATOR_INFO: the bus id, the BUS_MAKE flags and ``name``
    (the bus name), creator metadata.  LIST: id, HELLO flags and ``names``.
    """

    id: int = 0
    flags: int = 0
    #: MAKE_NAME (BUS_CREATOR_INFO only).
    name: str | None = None
    items: list[tuple[int, bytes]] = field(default_factory=list)


def parse_info(data: bytes, start: int = 0) -> tuple[Info, int]:
    """Parse the kdbus_info at ``data[start:]``; returns (info, its size)."""
    if len(data) - start < cmds.INFO_RECORD.size:
        raise ValueError("info record shorter than its header")
    size, id_, flags = cmds.INFO_RECORD.unpack_from(data, start)
    if size < cmds.INFO_RECORD.size or start + size > len(data):
        raise ValueError(f"info record size {size} outside the {len(data)}-byte slice")
    info = Info(id=id_, flags=flags)
    try:
        walked = I.walk_items(data, start + cmds.INFO_RECORD.size, start + size)
    except KdbusError as e:
        raise ValueError(f"malformed info items: {e}") from None
    for item in walked:
        info.items.append((item.type, item.payload))
        if item.type == C.KDBUS_ITEM_MAKE_NAME:
            info.name = item.payload[:-1].decode("latin-1")
        else:
            info._absorb(item.type, item.payload)
    return info, size


def parse_info_records(data: bytes) -> list[Info]:
    """Every kdbus_info of a LIST answer, each starting at an 8-aligned offset."""
    out = []
    pos = 0
    while pos < len(data):
        info, size = parse_info(data, pos)
        out.append(info)
        pos += (size + 7) & ~7
    return out


class InfoMixin:
    _fd: int


    def conn_info(self, target: int | str, attach: int = ATTACH_ALL) -> Info:
        """CONN_INFO about a connection id or the owner of a well-known name.

        ``attach`` asks for metadata (KDBUS_ATTACH_*); the target's
        attach_flags_send limits what comes back.  ENXIO: unknown id;
        ESRCH: name without owner.
        """
        if isinstance(target, str):
            buf = _sys.cmd_buffer(cmds.info(0, attach, I.item_string(C.KDBUS_ITEM_NAME, target)))
        else:
            buf = _sys.cmd_buffer(cmds.info(target, attach))
        return self._info(C.KDBUS_CMD_CONN_INFO, buf)

    def bus_creator_info(self, attach: int = ATTACH_ALL) -> Info:
        """BUS_CREATOR_INFO: bus id, BUS_MAKE flags, bus name, creator metadata."""
        return self._info(C.KDBUS_CMD_BUS_CREATOR_INFO, _sys.cmd_buffer(cmds.info(0, attach)))

    def _info(self, request: int, buf) -> Info:
        _sys.ioctl(self._fd, request, buf)
        offset, size = cmds.INFO.unpack_from(buf)[5:7]
        data = self._read_slice(offset, size, False)
        return parse_info(data)[0]
