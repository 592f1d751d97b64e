"""Well-known names: NAME_ACQUIRE, NAME_RELEASE and LIST (fact sheet §6.9, §6.14).

A mixin of :class:`kdbusfs.client.Connection`.
"""

from __future__ import annotations

import errno
from typing import NamedTuple

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I

from . import _sys
from . import commands as cmds
from .info import parse_info_records
from .metadata import OwnedName

#: Every LIST category.
LIST_ALL = (C.KDBUS_LIST_UNIQUE | C.KDBUS_LIST_NAMES | C.KDBUS_LIST_ACTIVATORS
            | C.KDBUS_LIST_QUEUED)


class ListEntry(NamedTuple):
    """One connection of a LIST result: its id, HELLO flags and the name
    records LIST reported for it, as (name, record flags)."""

    id: int
    flags: int
    names: list[OwnedName]


class NamesMixin:
    _fd: int


    def acquire_name(self, name: str, *, replace_existing: bool = False,
                     allow_replacement: bool = False, queue: bool = False) -> int:
        """NAME_ACQUIRE; returns the return_flags (KDBUS_NAME_PRIMARY or
        KDBUS_NAME_IN_QUEUE, | KDBUS_NAME_ACQUIRED when this call acquired
        or queued it, | the stored ALLOW_REPLACEMENT/QUEUE).

        Raises OSError (EEXIST when taken and not queueing, EPERM without
        OWN policy...); the error carries ``return_flags`` too.
        """
        flags = 0
        if replace_existing:
            flags |= C.KDBUS_NAME_REPLACE_EXISTING
        if allow_replacement:
            flags |= C.KDBUS_NAME_ALLOW_REPLACEMENT
        if queue:
            flags |= C.KDBUS_NAME_QUEUE
        buf = _sys.cmd_buffer(cmds.cmd(flags, I.item_string(C.KDBUS_ITEM_NAME, name)))
        try:
            _sys.ioctl(self._fd, C.KDBUS_CMD_NAME_ACQUIRE, buf)
        except OSError as e:
            e.return_flags = cmds.U64.unpack_from(buf, cmds.RETURN_FLAGS)[0]
            raise
        return cmds.U64.unpack_from(buf, cmds.RETURN_FLAGS)[0]

    def release_name(self, name: str) -> None:
        """NAME_RELEASE (ESRCH: unknown name; EADDRINUSE: not ours)."""
        buf = _sys.cmd_buffer(cmds.cmd(0, I.item_string(C.KDBUS_ITEM_NAME, name)))
        _sys.ioctl(self._fd, C.KDBUS_CMD_NAME_RELEASE, buf)

    def list(self, flags: int = C.KDBUS_LIST_UNIQUE | C.KDBUS_LIST_NAMES) -> list[ListEntry]:
        """LIST: the bus's connections and names, one entry per connection id
        (records of one connection merged, in the order LIST returned them).

        ``flags`` selects the records: KDBUS_LIST_UNIQUE (connections without
        a matching name record), _NAMES (primary owners), _ACTIVATORS,
        _QUEUED; LIST_ALL for everything.
        """
        buf = _sys.cmd_buffer(cmds.list_(flags))
        _sys.ioctl(self._fd, C.KDBUS_CMD_LIST, buf)
        offset, size = cmds.LIST.unpack_from(buf)[3:5]
        if size == 0:
            return []
        data = self._read_slice(offset, size, False)
        merged: dict[int, ListEntry] = {}
        for rec in parse_info_records(data):
            entry = merged.get(rec.id)
            if entry is None:
                entry = merged[rec.id] = ListEntry(rec.id, rec.flags, [])
            entry.names.extend(rec.names)
        return [*merged.values()]

    list_connections = list

    def name_owner(self, name: str) -> int | None:
        """The id of the primary owner (or activator) of ``name``, or None."""
        try:
            return self.conn_info(name, attach=0).id
        except OSError as e:
            if e.errno == errno.ESRCH:
                return None
            raise
