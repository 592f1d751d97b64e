"""Passthrough pools: the client's mapping IS the server's memory.

When the server runs as root in the initial user namespace, FUSE can hand
an open file's mmap() straight to a backing file (FUSE_PASSTHROUGH).  Each
connection's pool then is a memfd the server has mapped read-write: a
message written into it is visible to the receiver at once, with no page
push through the kernel and no writer thread on the path.
"""

from __future__ import annotations

import mmap
import os

from ..core.pool import MappedStore



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
    return os.memfd_create("kdbusfs-pool", os.MFD_CLOEXEC)


class MemfdStore(MappedStore):
    """A pool store over the connection's memfd.

    Not sealed: seals would not stop a writable mapping (mmap checks them
    against the FUSE file, not the memfd), and a HELLO that fails after
    making the store must leave the fd fresh, its memfd resizable for the
    next HELLO (ABI §3)."""

    def __init__(self, fd: int, size: int):
        os.ftruncate(fd, size)
        super().__init__(mmap.mmap(fd, size, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE), size)
