"""What a filesystem implements: the Operations base class and its reply types.

Handlers run synchronously on the session's trio thread and return their
reply value; raising FuseError(errno) answers with that errno, any other
exception answers EIO (and is logged). A handler that cannot answer at once
calls ``req.defer()`` and returns DEFERRED, then answers later through the
request object.
"""

import errno as _errno
import os
from dataclasses import dataclass

# d_type values for DirEntry.type
DT_UNKNOWN = 0
DT_FIFO = 1
DT_CHR = 2
DT_DIR = 4
DT_BLK = 6
DT_REG = 8
DT_LNK = 10
DT_SOCK = 12


class FuseError(Exception):
    """Answer the request with this (positive) errno."""

    def __init__(self, errno, message=None):
        super().__init__(errno, message or os.strerror(errno))
        self.errno = errno


class _Deferred:
    __slots__ = ()

    def __repr__(self):
        return "DEFERRED"


# Returned by a handler that called req.defer(): the reply comes later.
DEFERRED = _Deferred()


@dataclass(slots=True)
class Attr:
    ino: int
    mode: int  # including the file type bits (stat.S_IFREG | 0o644)
    nlink: int = 1
    uid: int = 0
    gid: int = 0
    size: int = 0
    blocks: int = 0  # in 512-byte units
    atime: float = 0.0
    mtime: float = 0.0
    ctime: float = 0.0
    blksize: int = 4096
    rdev: int = 0


@dataclass(slots=True)
class Entry:
    """LOOKUP reply. nodeid 0 caches a negative entry for entry_valid seconds."""

    nodeid: int
    attr: Attr
    entry_valid: float = 0.0
    attr_valid: float = 0.0
    generation: int = 0


@dataclass(slots=True)
class AttrReply:
    attr: Attr
    valid: float = 0.0  # seconds the kernel may cache the attributes


@dataclass(slots=True)
class OpenReply:
    fh: int
    keep_cache: bool = False  # keep the page cache across opens (needed for pushed pages)
    direct_io: bool = False  # bypass the page cache (such a file cannot be mmapped)
    nonseekable: bool = False
    backing_id: int | None = None  # passthrough: a FUSE_DEV_IOC_BACKING_OPEN id
    flags: int = 0  # further FOPEN_* bits


@dataclass(slots=True)
class DirEntry:
    name: bytes
    ino: int
    type: int  # DT_*
    offset: int  # the readdir offset of the entry after this one


@dataclass(slots=True)
class IoctlReply:
    result: int = 0  # the ioctl's return value
    data: bytes = b""  # at most out_size bytes, copied to the caller's arg
    after_stores: bool = False  # send only after all notify_store()s queued before


@dataclass(slots=True)
class Reply:
    """A preformatted reply payload (for any opcode), bypassing the packing."""

    payload: bytes = b""
    after_stores: bool = False


@dataclass(slots=True)
class StatFs:
    blocks: int = 0
    bfree: int = 0
    bavail: int = 0
    files: int = 0
    ffree: int = 0
    bsize: int = 4096
    namelen: int = 255
    frsize: int = 4096


def _nosys():
    raise FuseError(_errno.ENOSYS)


class Operations:
    """Default handlers: ENOSYS, which the kernel remembers for most opcodes."""

    def init(self, session):
        """Called once INIT is answered; `session` can notify and start tasks."""

    def destroy(self):
        """Called once when the session ends, whatever the reason."""

    def lookup(self, req, parent: int, name: bytes) -> Entry:
        _nosys()

    def forget(self, items: list[tuple[int, int]]) -> None:
        """(nodeid, nlookup) pairs from FORGET and BATCH_FORGET; never answered."""

    def getattr(self, req, nodeid: int, fh: int | None) -> AttrReply | Attr:
        _nosys()

    def opendir(self, req, nodeid: int, flags: int) -> OpenReply:
        _nosys()

    def readdir(self, req, nodeid: int, fh: int, offset: int):
        """Yield DirEntry items from `offset` on; the session stops when full."""
        _nosys()

    def releasedir(self, req, nodeid: int, fh: int) -> None:
        _nosys()

    def open(self, req, nodeid: int, flags: int) -> OpenReply:
        _nosys()

    def read(self, req, nodeid: int, fh: int, offset: int, size: int):
        _nosys()

    def flush(self, req, nodeid: int, fh: int) -> None:
        _nosys()

    def release(self, req, nodeid: int, fh: int, flags: int) -> None:
        _nosys()

    def ioctl(self, req, nodeid, fh, cmd, arg, in_data, out_size, flags):
        _nosys()

    def poll(self, req, nodeid: int, fh: int, kh: int | None, events: int) -> int:
        _nosys()

    def statfs(self, req) -> StatFs:
        _nosys()
