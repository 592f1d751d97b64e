"""The toy filesystem's ioctl numbers, and client-side helpers to call them."""

import ctypes
import fcntl
import os
import struct

from kdbusfs.fuse.protocol import io, ior, iow, iowr

# On /dev: the kernel copies the 64 bytes in and the reply data back out.
ECHO = iowr("K", 1, 64)
# On /dev: struct {u64 out_addr; u64 out_len; u8 data[48]}; the server reads
# it from the caller's memory, writes data[:out_len] to out_addr, returns
# crc32 of the 64 bytes (& 0x7fffffff) and echoes them.
ECHO_MEM = iowr("K", 2, 64)
DEFER = io("K", 3)  # never answered by the server; INTERRUPT ends it
DEFER_CB = io("K", 4)  # the same, with an on_interrupt callback
RAISE = io("K", 5)  # the handler raises: EIO
MAKE_READABLE = io("K", 6)  # /dev becomes readable (NOTIFY_POLL)
CLEAR_READABLE = io("K", 7)
# pending deferred, interrupt callbacks, pool READs, requests, LOOKUPs of hello,
# live pool inodes, nodeids forgotten
STATS = ior("K", 8, 56)
LATER = io("K", 9)  # deferred, answered 42 by a timer task after 50 ms
# On /pool: struct {u64 offset; u64 addr; u64 size}: the server copies size
# bytes from addr into the pool and pushes them with NOTIFY_STORE.
PUSH = iow("K", 10, 24)
INVAL_HELLO = io("K", 11)  # NOTIFY_INVAL_INODE and _ENTRY for /hello, replies after them
SET_HELLO = iow("K", 12, 12)  # new contents for /hello (same size), no invalidation

ECHO_MEM_HDR = struct.Struct("<QQ")
STATS_STRUCT = struct.Struct("<QQQQQQQ")
PUSH_STRUCT = struct.Struct("<QQQ")


_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = (ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)


def raw_ioctl(fd, cmd, arg=0):
    """ioctl(2) without Python's buffer copy or EINTR retry; returns its result."""
    result = _libc.ioctl(fd, cmd, arg)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return result


def address(buf):
    """Address of a writable buffer (bytearray) for passing in structs."""
    return ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))


def echo(fd, data):
    buf = bytearray(data)
    fcntl.ioctl(fd, ECHO, buf, True)
    return bytes(buf)


def echo_mem(fd, data48, out=None):
    """Returns (result, echoed 64 bytes); `out` (a bytearray) receives data48."""
    hdr = ECHO_MEM_HDR.pack(address(out) if out is not None else 0, len(out) if out is not None else 0)
    buf = bytearray(hdr + data48.ljust(48, b"\0"))
    result = raw_ioctl(fd, ECHO_MEM, address(buf))  # fcntl.ioctl hides the result
    return result, bytes(buf)


def stats(fd):
    buf = bytearray(STATS_STRUCT.size)
    fcntl.ioctl(fd, STATS, buf, True)
    names = ("pending", "interrupts", "pool_reads", "requests", "hello_lookups", "pools", "forgotten")
    return dict(zip(names, STATS_STRUCT.unpack(buf)))


def push(fd, offset, data):
    src = bytearray(data)
    fcntl.ioctl(fd, PUSH, PUSH_STRUCT.pack(offset, address(src), len(src)))
