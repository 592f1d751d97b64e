"""A connection's pool: a best-fit slice allocator over a sparse byte store.

The pool is the only way data reaches a receiver: every message, query
result and HELLO reply is a slice in it.  A slice has two holds (ABI §6.7):
the kernel hold lasts while a message is queued, the user hold from the
moment RECV (or a query) publishes the slice until FREE.  Space returns to
the free list when both holds are gone; free neighbours merge.
"""

from __future__ import annotations

import bisect
import errno
import mmap

from ..abi.errors import KdbusError
from ..abi.items import align8

ALIGN = 8


class MappedStore:
    """The authoritative copy of a pool: a shared mapping of pool_size bytes.

    Memory in use follows what was written, not pool_size, because the
    kernel only backs the pages that are touched.
    """

    def __init__(self, buf: mmap.mmap, size: int):
        self.size = size
        self.buf = buf
        self.view = memoryview(buf)

    def write(self, offset: int, data) -> None:
        self.view[offset:offset + len(data)] = data

    def read(self, offset: int, size: int) -> bytes:
        end = min(offset + size, self.size)
        return bytes(self.view[offset:end]) if offset < end else b""

    def close(self) -> None:
        self.view.release()
        self.buf.close()


class AnonymousStore(MappedStore):
    """A pool store in anonymous memory (pools pushed to the page cache)."""

    def __init__(self, size: int):
        super().__init__(mmap.mmap(-1, size), size)


class Slice:
    __slots__ = ("offset", "size", "kernel", "user")

    def __init__(self, offset: int, size: int):
        self.offset = offset
        self.size = size
        self.kernel = True      # held by a queue entry (or being built)
        self.user = False       # published to userspace, awaiting FREE


class Pool:
    def __init__(self, size: int, store_factory=AnonymousStore):
        self.size = size
        self.store = store_factory(size)
        # Free ranges as two parallel sorted lists (offset -> size).
        self._free_off: list[int] = [0]
        self._free_len: list[int] = [size]
        self.slices: dict[int, Slice] = {}
        self.used = 0

    # -- allocation -------------------------------------------------------
    def alloc(self, size: int) -> Slice:
        """Best fit for `size` bytes (rounded up to 8); EXFULL if none fits."""
        size = align8(max(size, ALIGN))
        best = -1
        best_len = 0
        for i, length in enumerate(self._free_len):
            if length >= size and (best < 0 or length < best_len):
                best, best_len = i, length
                if length == size:
                    break
        if best < 0:
            raise KdbusError(errno.EXFULL, "pool full")
        off = self._free_off[best]
        if best_len == size:
            del self._free_off[best]
            del self._free_len[best]
        else:
            self._free_off[best] = off + size
            self._free_len[best] = best_len - size
        s = Slice(off, size)
        self.slices[off] = s
        self.used += size
        return s

    def _release(self, s: Slice) -> None:
        del self.slices[s.offset]
        self.used -= s.size
        off, length = s.offset, s.size
        i = bisect.bisect_left(self._free_off, off)
        # merge with the right neighbour
        if i < len(self._free_off) and off + length == self._free_off[i]:
            length += self._free_len[i]
            del self._free_off[i]
            del self._free_len[i]
        # merge with the left neighbour
        if i > 0 and self._free_off[i - 1] + self._free_len[i - 1] == off:
            self._free_len[i - 1] += length
        else:
            self._free_off.insert(i, off)
            self._free_len.insert(i, length)

    # -- holds ------------------------------------------------------------
    def write(self, s: Slice, data, at: int = 0) -> None:
        copy_into = getattr(data, "copy_into", None)
        if copy_into is None:
            self.store.write(s.offset + at, data)
        else:
            # a payload still in the sender's memory, copied straight in
            start = s.offset + at
            copy_into(self.store.view[start:start + len(data)])

    def fill(self, s: Slice, head: bytes, payload_at: int, chunks) -> None:
        """Write a record into a fresh slice.  If a copy fails (the sender's
        memory went away), the slice is given back and the error raised:
        nothing of a failed delivery stays behind."""
        try:
            self.store.write(s.offset, head)
            for off, data in chunks:
                self.write(s, data, payload_at + off)
        except BaseException:
            s.user = False
            self.drop_kernel_hold(s)
            raise

    def publish(self, s: Slice) -> None:
        s.user = True

    def drop_kernel_hold(self, s: Slice) -> None:
        s.kernel = False
        if not s.user:
            self._release(s)

    def free(self, offset: int) -> None:
        """FREE: release the user hold on a published slice (ENXIO otherwise)."""
        if offset == self.size:
            return
        s = self.slices.get(offset)
        if s is None or not s.user:
            raise KdbusError(errno.ENXIO, "no published slice at that offset")
        s.user = False
        if not s.kernel:
            self._release(s)

    def publish_result(self, data: bytes) -> Slice:
        """Allocate, fill and publish a query result (HELLO, INFO, LIST)."""
        s = self.alloc(len(data))
        self.write(s, data)
        s.kernel = False
        s.user = True
        return s

    def read(self, offset: int, size: int) -> bytes:
        return self.store.read(offset, size)

    def close(self) -> None:
        self.store.close()
