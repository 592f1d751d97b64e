"""Receiving fds on kdbusfs: the per-connection fd channel (kdbus.h,
KDBUSFS_CMD_FD_CHANNEL).

A FUSE server cannot install descriptors in our process, so the pool's
FDS array and memfd ``fd`` fields hold -1.  Instead, when a message that
carries fds is received (RECV, PEEK, or a call()'s reply), the server has
already sent one record on this connection's channel, a SOCK_SEQPACKET
socketpair whose other end we registered: {u64 pool offset, u32 n_fds,
u32 n_memfds} with the fds as SCM_RIGHTS.  :meth:`FdChannel.take` finds
the record of a slice by its offset (records that belong to another
thread's message wait in a small table) without ever blocking: the
record is queued before the ioctl returns, or it was never sent, which
the server reports as INCOMPLETE_FDS.

On a stock kdbus the ioctl fails with ENOTTY and no channel is used.
"""

from __future__ import annotations

import array
import errno
import os
import socket
import struct
import threading

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I

from . import _sys
from . import commands as cmds

RECORD = struct.Struct("<QII")
MAX_FDS = 32                    # 16 FDS entries + 16 memfds per message
_ANC = socket.CMSG_SPACE(MAX_FDS * 4) + socket.CMSG_SPACE(12)


def register(conn_fd: int, sock_fd: int) -> None:
    """KDBUSFS_CMD_FD_CHANNEL with ``sock_fd``; OSError with the errno."""
    item = I.encode_item(C.KDBUSFS_ITEM_FD_CHANNEL, struct.pack("<i", sock_fd))
    _sys.ioctl(conn_fd, C.KDBUSFS_CMD_FD_CHANNEL, _sys.cmd_buffer(cmds.cmd(0, item)))


class FdChannel:
    """Our end of a connection's fd channel."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._lock = threading.Lock()
        self._waiting: dict[int, list[list[int]]] = {}   # offset -> [fds], FIFO

    @classmethod
    def open(cls, conn_fd: int) -> "FdChannel":
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            register(conn_fd, theirs.fileno())
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()          # the server holds its own copy now
        ours.setblocking(False)
        return cls(ours)

    def take(self, offset: int) -> list[int] | None:
        """The fds of the message at pool ``offset`` (FDS entries, then
        memfds), or None when no record came for it."""
        with self._lock:
            queue = self._waiting.get(offset)
            if queue:
                fds = queue.pop(0)
                if not queue:
                    del self._waiting[offset]
                return fds
            while True:
                try:
                    data, anc, flags, _ = self.sock.recvmsg(RECORD.size, _ANC,
                                                            socket.MSG_CMSG_CLOEXEC)
                except (BlockingIOError, InterruptedError):
                    return None
                except OSError:
                    return None
                fds = _rights(anc)
                if len(data) != RECORD.size or flags & (socket.MSG_CTRUNC | socket.MSG_TRUNC):
                    for fd in fds:
                        os.close(fd)
                    continue
                off, n_fds, n_memfds = RECORD.unpack(data)
                fds += [-1] * (n_fds + n_memfds - len(fds))
                if off == offset:
                    return fds
                self._waiting.setdefault(off, []).append(fds)

    def close(self) -> None:
        with self._lock:
            for queue in self._waiting.values():
                for fds in queue:
                    for fd in fds:
                        if fd >= 0:
                            os.close(fd)
            self._waiting.clear()
            self.sock.close()


def _rights(anc) -> list[int]:
    fds: list[int] = []
    for level, type_, data in anc:
        if level == socket.SOL_SOCKET and type_ == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(data[:len(data) - len(data) % a.itemsize])
            fds.extend(a)
    return fds


def open_channel(conn_fd: int) -> FdChannel | None:
    """A channel for this connection, or None where there is none to have
    (a stock kdbus: ENOTTY; a policy holder: EOPNOTSUPP; the server out of
    descriptors...).  Messages then show fds as -1 with INCOMPLETE_FDS."""
    try:
        return FdChannel.open(conn_fd)
    except OSError as e:
        if e.errno in (errno.ENOTTY, errno.EOPNOTSUPP, errno.EINVAL, errno.EMFILE,
                       errno.ENFILE, errno.EPERM, errno.EBADF):
            return None
        raise


def attach(channel: FdChannel | None, msg) -> None:
    """Put the fds of a parsed message in place of its -1 entries."""
    n_fds = len(msg.fds) if msg.fds else 0
    if not n_fds and not msg.memfds:
        return
    if msg.return_flags & C.KDBUS_RECV_RETURN_INCOMPLETE_FDS:
        return
    fds = channel.take(msg.offset) if channel is not None else None
    if fds is None:
        msg.return_flags |= C.KDBUS_RECV_RETURN_INCOMPLETE_FDS
        return
    if n_fds:
        msg.fds = fds[:n_fds]
    if msg.memfds:
        rest = fds[n_fds:]
        msg.memfds = [m._replace(fd=rest[i] if i < len(rest) else -1)
                      for i, m in enumerate(msg.memfds)]
