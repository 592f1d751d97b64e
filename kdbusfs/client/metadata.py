"""Metadata items (fact sheet §6.17) decoded into plain Python values.

Messages, CONN_INFO and BUS_CREATOR_INFO records all carry the same
metadata items; :class:`Metadata` is the shared base of their result types.
Every field is None (or empty) when its item was not attached.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import NamedTuple

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I

Timestamp = I.Timestamp  # (seqnum, monotonic_ns, realtime_ns)
Creds = I.Creds          # (uid, euid, suid, fsuid, gid, egid, sgid, fsgid)
Pids = I.Pids            # (pid, tid, ppid)


class Caps(NamedTuple):
    """Capability sets as int bit masks (bit n = capability n)."""

    last_cap: int
    inheritable: int
    permitted: int
    effective: int
    bounding: int


class Audit(NamedTuple):
    sessionid: int
    loginuid: int


class OwnedName(NamedTuple):
    name: str
    flags: int


@dataclass(slots=True)
class Metadata:
    timestamp: Timestamp | None = None
    creds: Creds | None = None
    pids: Pids | None = None
    auxgroups: list[int] | None = None
    tid_comm: str | None = None
    pid_comm: str | None = None
    exe: str | None = None
    cmdline: str | None = None
    cgroup: str | None = None
    caps: Caps | None = None
    seclabel: str | None = None
    audit: Audit | None = None
    #: OWNED_NAME items: the sender's primary names, in record order.
    names: list[OwnedName] = field(default_factory=list)
    description: str | None = None

    @property
    def comm(self) -> str | None:
        """The process comm (PID_COMM), else the thread comm."""
        return self.pid_comm if self.pid_comm is not None else self.tid_comm

    def _absorb(self, type_: int, payload: bytes) -> bool:
        """Take one metadata item; False if ``type_`` is not metadata."""
        handler = _HANDLERS.get(type_)
        if handler is None:
            return False
        handler(self, payload)
        return True


def _text(payload: bytes) -> str:
    """A string item as str: file-system encoding, undecodable bytes escaped."""
    end = payload.find(b"\0")
    return os.fsdecode(payload if end < 0 else payload[:end])


def _name(payload: bytes) -> str:
    # Names follow the ABI module's convention: the latin-1 view of the bytes.
    end = payload.find(b"\0")
    return (payload if end < 0 else payload[:end]).decode("latin-1")


def _caps(payload: bytes) -> Caps:
    last_cap, sets = I.decode_caps(payload)
    return Caps(last_cap, *sets)


def _set(attr, decode):
    def handler(md: Metadata, payload: bytes) -> None:
        setattr(md, attr, decode(payload))
    return handler


def _owned_name(md: Metadata, payload: bytes) -> None:
    flags = I.decode_u64(payload)
    md.names.append(OwnedName(_name(payload[8:]), flags))


_HANDLERS = {
    C.KDBUS_ITEM_TIMESTAMP: _set("timestamp", I.decode_timestamp),
    C.KDBUS_ITEM_CREDS: _set("creds", I.decode_creds),
    C.KDBUS_ITEM_PIDS: _set("pids", lambda p: I.Pids(*I.decode_u64_array(p[:24]))),
    C.KDBUS_ITEM_AUXGROUPS: _set("auxgroups", I.decode_u64_array),
    C.KDBUS_ITEM_OWNED_NAME: _owned_name,
    C.KDBUS_ITEM_TID_COMM: _set("tid_comm", _text),
    C.KDBUS_ITEM_PID_COMM: _set("pid_comm", _text),
    C.KDBUS_ITEM_EXE: _set("exe", _text),
    C.KDBUS_ITEM_CMDLINE: _set("cmdline", _text),
    C.KDBUS_ITEM_CGROUP: _set("cgroup", _text),
    C.KDBUS_ITEM_CAPS: _set("caps", _caps),
    C.KDBUS_ITEM_SECLABEL: _set("seclabel", _text),
    C.KDBUS_ITEM_AUDIT: _set("audit", lambda p: Audit(*I.decode_audit(p))),
    C.KDBUS_ITEM_CONN_DESCRIPTION: _set("description", _text),
}

METADATA_ITEM_TYPES = frozenset(_HANDLERS)
