"""Builders for raw command and message bytes, as a client would lay them out."""

from __future__ import annotations

import struct

from kdbusfs.abi import COMMANDS, constants as C


def cmd_bytes(number: int, items: bytes = b"", flags: int = 0, *, size: int | None = None,
              fields: dict[str, int] | None = None, return_flags: int = 0) -> bytes:
    """A command for ioctl ``number``: fixed struct (fields by name) + items.
    ``size`` overrides the size field (the bytes are not changed)."""
    spec = COMMANDS[number]
    head = bytearray(spec.size)
    for name, value in (fields or {}).items():
        fmt = "<q" if value < 0 else "<Q"
        struct.pack_into(fmt, head, spec.field_offsets[name], value)
    raw = bytes(head) + items
    struct.pack_into("<QQQ", head, 0, len(raw) if size is None else size, flags, return_flags)
    return bytes(head) + items


def msg_bytes(items: bytes = b"", flags: int = 0, *, priority: int = 0, dst_id: int = 0,
              src_id: int = 0, payload_type: int = C.KDBUS_PAYLOAD_DBUS, cookie: int = 1,
              timeout_ns: int = 0, size: int | None = None) -> bytes:
    total = 64 + len(items) if size is None else size
    return struct.pack("<QQqQQQQQ", total, flags, priority, dst_id, src_id, payload_type,
                       cookie, timeout_ns) + items
