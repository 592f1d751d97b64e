"""Metadata: what a sender reveals about itself, and in which order.

The engine never looks at processes itself: the filesystem hands it a
`Metadata` snapshot (at BUS_MAKE, HELLO, or lazily at SEND through a
collector callback that is told which items are wanted).  The engine
decides which items each receiver gets (ABI §6.17) and encodes them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..abi import constants as K
from ..abi.items import encode_item

# Items every sender reveals whatever its ATTACH_FLAGS_SEND say (§6.17).
ALWAYS = (K.KDBUS_ATTACH_TIMESTAMP | K.KDBUS_ATTACH_CREDS | K.KDBUS_ATTACH_PIDS
          | K.KDBUS_ATTACH_AUXGROUPS | K.KDBUS_ATTACH_NAMES
          | K.KDBUS_ATTACH_CONN_DESCRIPTION)
# Items read from the sending process (everything but names, description, time).
PROCESS = (K._KDBUS_ATTACH_ALL & ~(K.KDBUS_ATTACH_TIMESTAMP | K.KDBUS_ATTACH_NAMES
                                   | K.KDBUS_ATTACH_CONN_DESCRIPTION))
# The process items a receiver could read from /proc anyway (`proc` in §6.17).
PROC_VISIBLE = PROCESS & ~(K.KDBUS_ATTACH_CREDS | K.KDBUS_ATTACH_PIDS
                           | K.KDBUS_ATTACH_AUXGROUPS)

_U64x8 = struct.Struct("<8Q")
_U64x3 = struct.Struct("<3Q")
_U32x2 = struct.Struct("<II")
_TS = struct.Struct("<3Q")


def check_attach_mask(mask: int) -> int:
    """Validate an attach mask (EINVAL for unknown bits); ANY means ALL."""
    import errno

    from ..abi.errors import KdbusError
    if mask == K._KDBUS_ATTACH_ANY:
        return K._KDBUS_ATTACH_ALL
    if mask & ~K._KDBUS_ATTACH_ALL:
        raise KdbusError(errno.EINVAL, "unknown attach flags")
    return mask


@dataclass(slots=True)
class Metadata:
    """Process metadata; None means unavailable (the item is omitted)."""
    creds: tuple[int, ...] | None = None        # uid euid suid fsuid gid egid sgid fsgid
    pids: tuple[int, int, int] | None = None    # pid tid ppid
    auxgroups: tuple[int, ...] | None = None
    tid_comm: str | None = None
    pid_comm: str | None = None
    exe: str | None = None
    cmdline: str | None = None
    cgroup: str | None = None
    caps: bytes | None = None                   # CAPS payload (last_cap + 4 sets)
    seclabel: str | None = None
    audit: tuple[int, int] | None = None        # sessionid, loginuid
    faked: bool = False                         # HELLO with faked credentials

    def available(self) -> int:
        m = 0
        for flag, value in (
                (K.KDBUS_ATTACH_CREDS, self.creds), (K.KDBUS_ATTACH_PIDS, self.pids),
                (K.KDBUS_ATTACH_AUXGROUPS, self.auxgroups),
                (K.KDBUS_ATTACH_TID_COMM, self.tid_comm),
                (K.KDBUS_ATTACH_PID_COMM, self.pid_comm), (K.KDBUS_ATTACH_EXE, self.exe),
                (K.KDBUS_ATTACH_CMDLINE, self.cmdline),
                (K.KDBUS_ATTACH_CGROUP, self.cgroup), (K.KDBUS_ATTACH_CAPS, self.caps),
                (K.KDBUS_ATTACH_SECLABEL, self.seclabel),
                (K.KDBUS_ATTACH_AUDIT, self.audit)):
            if value is not None:
                m |= flag
        return m


def _string(t: int, s: str) -> bytes:
    return encode_item(t, s.encode("latin-1", "replace") + b"\0")


def encode(meta: Metadata | None, mask: int, *, names=(), description: str | None = None,
           timestamp: tuple[int, int, int] | None = None) -> list[bytes]:
    """Metadata items (each padded) for `mask`, in the emission order of §6.17.

    `names` is a sequence of (flags, name) of the sender's primary names.
    """
    out = []
    if meta is not None:
        if mask & K.KDBUS_ATTACH_CREDS and meta.creds is not None:
            out.append(encode_item(K.KDBUS_ITEM_CREDS, _U64x8.pack(*meta.creds)))
        if mask & K.KDBUS_ATTACH_PIDS and meta.pids is not None:
            out.append(encode_item(K.KDBUS_ITEM_PIDS, _U64x3.pack(*meta.pids)))
        if mask & K.KDBUS_ATTACH_AUXGROUPS and meta.auxgroups is not None:
            out.append(encode_item(K.KDBUS_ITEM_AUXGROUPS,
                                   struct.pack(f"<{len(meta.auxgroups)}Q", *meta.auxgroups)))
        for flag, t, v in (
                (K.KDBUS_ATTACH_TID_COMM, K.KDBUS_ITEM_TID_COMM, meta.tid_comm),
                (K.KDBUS_ATTACH_PID_COMM, K.KDBUS_ITEM_PID_COMM, meta.pid_comm),
                (K.KDBUS_ATTACH_EXE, K.KDBUS_ITEM_EXE, meta.exe),
                (K.KDBUS_ATTACH_CMDLINE, K.KDBUS_ITEM_CMDLINE, meta.cmdline),
                (K.KDBUS_ATTACH_CGROUP, K.KDBUS_ITEM_CGROUP, meta.cgroup)):
            if mask & flag and v is not None:
                out.append(_string(t, v))
        if mask & K.KDBUS_ATTACH_CAPS and meta.caps is not None:
            out.append(encode_item(K.KDBUS_ITEM_CAPS, meta.caps))
        if mask & K.KDBUS_ATTACH_SECLABEL and meta.seclabel is not None:
            out.append(_string(K.KDBUS_ITEM_SECLABEL, meta.seclabel))
        if mask & K.KDBUS_ATTACH_AUDIT and meta.audit is not None:
            out.append(encode_item(K.KDBUS_ITEM_AUDIT, _U32x2.pack(*meta.audit)))
    if mask & K.KDBUS_ATTACH_NAMES:
        for flags, name in names:
            out.append(encode_item(K.KDBUS_ITEM_OWNED_NAME,
                                   struct.pack("<Q", flags) + name.encode("latin-1") + b"\0"))
    if mask & K.KDBUS_ATTACH_CONN_DESCRIPTION and description is not None:
        out.append(_string(K.KDBUS_ITEM_CONN_DESCRIPTION, description))
    if mask & K.KDBUS_ATTACH_TIMESTAMP and timestamp is not None:
        out.append(encode_item(K.KDBUS_ITEM_TIMESTAMP, _TS.pack(*timestamp)))
    return out
