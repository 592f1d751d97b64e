"""A connection's receive pool: the read-only shared mapping of its fd.

Only the server writes the pool.  The client reads slices that a command
(HELLO, RECV, SEND with SYNC_REPLY, CONN_INFO, BUS_CREATOR_INFO, LIST)
published, copies them out, and releases them with FREE.
"""

from __future__ import annotations

from . import _sys


class Pool:
    __slots__ = ("address", "size")

    def __init__(self, fd: int, size: int):
        self.size = size
        self.address = _sys.mmap_readonly(fd, size)

    @property
    def mapped(self) -> bool:
        return self.address != 0

    def read(self, offset: int, size: int) -> bytes:
        """A copy of ``size`` bytes of the pool at ``offset``."""
        if not self.address:
            raise ValueError("pool is unmapped")
        if offset < 0 or size < 0 or offset + size > self.size:
            raise ValueError(f"slice {offset}+{size} outside the {self.size}-byte pool")
        return _sys.read_memory(self.address + offset, size)

    def close(self) -> None:
        if self.address:
            addr, self.address = self.address, 0
            _sys.munmap(addr, self.size)
