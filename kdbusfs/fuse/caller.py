"""A caller's memory and file descriptors, reached through its thread id.

FUSE passes restricted ioctls only a fixed-size copy of the argument, so a
filesystem with variable-length commands reads and writes the caller's memory
itself: `tid` is the `pid` field of the request header (a thread id in the
server's pid namespace, 0 if the caller is not visible there). The server
needs ptrace access to the caller (same uid, or CAP_SYS_PTRACE).
"""

import errno
import os
import threading

from .libc import PIDFD_THREAD, ffi, lib, pidfd_getfd, pidfd_open

# Reads up to this size go through a per-thread scratch buffer (no allocation
# besides the returned bytes).
SCRATCH_SIZE = 64 * 1024

_readv = lib.process_vm_readv
_writev = lib.process_vm_writev
_from_buffer = ffi.from_buffer
_buffer = ffi.buffer


class _Scratch(threading.local):
    # Preallocated iovecs: a call only fills in lengths and the remote address.
    def __init__(self):
        self.buf = ffi.new("char[]", SCRATCH_SIZE)
        self.local = ffi.new("struct iovec *")
        self.local.iov_base = self.buf
        self.other = ffi.new("struct iovec *")  # for caller-supplied buffers
        self.remote = ffi.new("struct remote_iovec *")


_scratch = _Scratch()


def _fail(done):
    # A partial transfer means the caller's range runs into unmapped memory.
    err = ffi.errno if done < 0 else errno.EFAULT
    raise OSError(err, os.strerror(err))


def read_memory(tid, addr, size):
    """Return `size` bytes of the caller's memory at `addr`."""
    if size > SCRATCH_SIZE:
        out = bytearray(size)
        read_into(tid, addr, out)
        return bytes(out)
    s = _scratch
    s.local.iov_len = size
    remote = s.remote
    remote.iov_base = addr
    remote.iov_len = size
    n = _readv(tid, s.local, 1, remote, 1, 0)
    if n != size:
        _fail(n)
    return _buffer(s.buf, size)[:]


def read_into(tid, addr, buffer):
    """Fill the writable `buffer` from the caller's memory at `addr`."""
    s = _scratch
    cbuf = _from_buffer(buffer, require_writable=True)
    size = len(cbuf)
    local = s.other
    local.iov_base = cbuf
    local.iov_len = size
    remote = s.remote
    remote.iov_base = addr
    remote.iov_len = size
    n = _readv(tid, local, 1, remote, 1, 0)
    if n != size:
        _fail(n)


def write_memory(tid, addr, data):
    """Write the bytes-like `data` into the caller's memory at `addr`."""
    s = _scratch
    cbuf = _from_buffer(data)
    size = len(cbuf)
    local = s.other
    local.iov_base = cbuf
    local.iov_len = size
    remote = s.remote
    remote.iov_base = addr
    remote.iov_len = size
    n = _writev(tid, local, 1, remote, 1, 0)
    if n != size:
        _fail(n)


def take_fd(tid, fd):
    """Duplicate the caller's file descriptor `fd` into this process (O_CLOEXEC)."""
    if tid <= 0:
        raise OSError(errno.ESRCH, os.strerror(errno.ESRCH))
    try:
        # PIDFD_THREAD (Linux 6.9+) accepts any thread, not just a leader.
        pidfd = pidfd_open(tid, PIDFD_THREAD)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        pidfd = pidfd_open(tid, 0)
    try:
        return pidfd_getfd(pidfd, fd)
    finally:
        os.close(pidfd)
