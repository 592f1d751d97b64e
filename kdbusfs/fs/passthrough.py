"""Passthrough pools: the client's mapping IS the server's memory.

When the server runs as root in the initial user namespace, FUSE can hand
an open file's mmap() straight to a backing file (FUSE_PASSTHROUGH).  Each
connection's pool then is a memfd the server has mapped read-write: a
message written into it is visible to the receiver at once, with no page
push through the kernel and no writer thread on the path.  The memfd is
sealed against growing, shrinking and new writable mappings, so a client
can never map its pool writable (the ABI's EPERM) while the server keeps
writing through the mapping it made first.
"""

from __future__ import annotations

import fcntl
import mmap
import os

from ..core.pool import MappedStore

F_ADD_SEALS = 1033
F_SEAL_SHRINK = 0x2
F_SEAL_GROW = 0x4
F_SEAL_FUTURE_WRITE = 0x10


def in_initial_user_namespace() -> bool:
    try:
        with open("/proc/self/uid_map") as f:
            return f.read().split() == ["0", "0", "4294967295"]
    except OSError:
        return False


def wanted() -> bool:
    """Passthrough needs real root (EPERM in a user namespace)."""
    return os.geteuid() == 0 and in_initial_user_namespace() \
        and os.environ.get("KDBUSFS_PASSTHROUGH", "1") != "0"


def new_pool_file() -> int:
    return os.memfd_create("kdbusfs-pool", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)


class MemfdStore(MappedStore):
    """A pool store over the connection's memfd, sealed once mapped."""

    def __init__(self, fd: int, size: int):
        os.ftruncate(fd, size)
        super().__init__(mmap.mmap(fd, size, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE), size)
        fcntl.fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_FUTURE_WRITE)
