"""The FUSE kernel protocol on /dev/fuse, spoken directly, on trio.

Knows nothing about kdbus: protocol (numbers and structs), libc (cffi
bindings), caller (a caller's memory and fds), mount, session (the request
loop), ops (what a filesystem implements).
"""

from .mount import Mount, mount, unmount
from .ops import (
    DEFERRED,
    Attr,
    AttrReply,
    DirEntry,
    Entry,
    FuseError,
    IoctlReply,
    OpenReply,
    Operations,
    Reply,
    StatFs,
)
from .session import Request, Session

__all__ = [
    "DEFERRED", "Attr", "AttrReply", "DirEntry", "Entry", "FuseError", "IoctlReply",
    "Mount", "OpenReply", "Operations", "Reply", "Request", "Session", "StatFs",
    "mount", "unmount",
]
