"""The syscalls the client needs: ioctl, mmap/munmap, clocks, raw addresses,
and the fds the client owns (a bus, an endpoint, a connection).

Everything here is plain libc through the standard library (fcntl, os,
select, time) and ctypes/cffi for the two things Python lacks: a mapping that
ignores st_size, and stable addresses of buffers that commands point to.
"""

from __future__ import annotations

import ctypes
import errno
import os
import time
from typing import Callable, Self

import cffi

_ffi = cffi.FFI()

# fcntl.ioctl copies arguments of up to this many bytes into an (aligned)
# stack buffer and back; larger ones are passed in place.
_IOCTL_BUFSZ = 1024


_libc = ctypes.CDLL(None, use_errno=True)
_libc_ioctl = _libc.ioctl
_libc_ioctl.restype = ctypes.c_int
_libc_ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)

# --------------------------------------------------------------------------
# command buffers


def cmd_buffer(data: bytes | bytearray):
    """A mutable, 8-byte aligned buffer holding ``data`` for fcntl.ioctl.

    Small commands are plain bytearrays: fcntl.ioctl copies them to an
    aligned stack buffer and back.  Large ones are passed to the kernel in
    place, so they get a ctypes u64 array, which is 8-aligned by type.
    """
    if len(data) <= _IOCTL_BUFSZ:
        return bytearray(data)
    buf = (ctypes.c_uint64 * ((len(data) + 7) // 8))()
    ctypes.memmove(buf, bytes(data), len(data))
    return buf


def ioctl(fd: int, request: int, buf) -> None:
    """ioctl(fd, request, buf) with ``buf`` updated in place.

    Raises OSError with the errno of the call; ``buf`` is updated even then.
    kdbus needs an 8-aligned argument (EFAULT otherwise): fcntl.ioctl copies
    small buffers to a stack array whose alignment depends on how Python
    was built, so the call goes to libc with an address we know is aligned.
    """
    if isinstance(buf, ctypes.Array):
        arg, tmp = ctypes.addressof(buf), None
    else:
        n = len(buf)
        tmp = (ctypes.c_uint64 * max(1, (n + 7) // 8))()
        ctypes.memmove(tmp, bytes(buf), n)
        arg = ctypes.addressof(tmp)
    rc = _libc_ioctl(fd, request, arg)
    err = ctypes.get_errno()
    if tmp is not None:
        buf[:] = ctypes.string_at(tmp, len(buf))
    if rc < 0:
        raise OSError(err, os.strerror(err))


class AlignedBytes:
    """A copy of ``data`` in 8-aligned memory that lives as long as this object.

    Used for the kdbus_msg that SEND's ``msg_address`` points to.
    """

    __slots__ = ("_buf", "address", "size")

    def __init__(self, data: bytes | bytearray):
        self.size = len(data)
        self._buf = (ctypes.c_uint64 * max(1, (len(data) + 7) // 8))()
        ctypes.memmove(self._buf, bytes(data), len(data))
        self.address = ctypes.addressof(self._buf)


def pin(data) -> tuple[object, int]:
    """(keepalive, address) of a bytes-like object's data, without copying.

    The address stays valid while ``keepalive`` is referenced.  Used for
    PAYLOAD_VEC addresses: the server reads them during the SEND ioctl.
    """
    cdata = _ffi.from_buffer("char[]", data)
    return cdata, int(_ffi.cast("uintptr_t", cdata))


# --------------------------------------------------------------------------
# owned fds


def open_command(path: str, request: int, command: Callable[[], bytes]) -> int:
    """A fresh fd on ``path`` (O_RDWR | O_CLOEXEC) on which the ioctl
    ``request`` with the command ``command()`` builds succeeded: BUS_MAKE or
    ENDPOINT_MAKE, whose result lives as long as this fd.  If building the
    command or the ioctl fails, the fd is closed again and the error raised
    (OSError with the errno of open() or of the ioctl)."""
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    try:
        ioctl(fd, request, cmd_buffer(command()))
    except BaseException:
        os.close(fd)
        raise
    return fd


class OwnedFd:
    """The lifetime of an object that owns one fd, ``self._fd`` (-1 once
    closed): :meth:`close` closes it once, a ``with`` block closes it at its
    end, and so does garbage collection."""

    _fd: int

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def _fd_state(self) -> str:
        """``closed`` or ``fd=N``, for __repr__."""
        return "closed" if self.closed else f"fd={self._fd}"


# --------------------------------------------------------------------------
# the pool mapping


_mmap = _libc.mmap
_mmap.restype = ctypes.c_void_p
_mmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                  ctypes.c_int, ctypes.c_long)
_munmap = _libc.munmap
_munmap.restype = ctypes.c_int
_munmap.argtypes = (ctypes.c_void_p, ctypes.c_size_t)

PROT_READ = 0x1
MAP_SHARED = 0x01
_MAP_FAILED = ctypes.c_void_p(-1).value


def mmap_readonly(fd: int, size: int) -> int:
    """mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0); returns the address.

    Python's mmap module refuses lengths beyond st_size, and an endpoint
    file need not report its pool as its size, so this calls libc directly.
    """
    addr = _mmap(None, size, PROT_READ, MAP_SHARED, fd, 0)
    if addr is None or addr == _MAP_FAILED:
        err = ctypes.get_errno() or errno.EINVAL
        raise OSError(err, os.strerror(err))
    return addr


def munmap(addr: int, size: int) -> None:
    if _munmap(addr, size) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def read_memory(addr: int, size: int) -> bytes:
    """A copy of ``size`` bytes at ``addr`` (inside a live mapping)."""
    return ctypes.string_at(addr, size)


# --------------------------------------------------------------------------
# time


def monotonic_deadline_ns(timeout: float) -> int:
    """The absolute CLOCK_MONOTONIC time ``timeout`` seconds from now, in ns."""
    if timeout < 0:
        raise ValueError("timeout must be >= 0")
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) + max(1, int(timeout * 1e9))
