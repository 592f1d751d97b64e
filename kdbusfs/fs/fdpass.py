"""File descriptors through kdbusfs: taken from senders, handed to receivers.

Taking is easy: the server reads a sender's fds with pidfd_getfd while the
sender is blocked in SEND (it already needs ptrace access to read the
message).  Giving is the problem: a FUSE server has no way to install a
descriptor in another process.  kdbusfs hands them over a per-connection
side channel instead (kdbus.h, KDBUSFS_CMD_FD_CHANNEL):

- the receiver makes socketpair(AF_UNIX, SOCK_SEQPACKET) and registers one
  end with the extension ioctl on its connection fd; the server takes that
  end with pidfd_getfd, exactly as it takes FDS items.  Nothing is bound or
  addressable (no abstract name, no path), so it works across network and
  mount namespaces and needs no secret: the socket comes from the process
  that issued an ioctl on that very connection;
- every RECV (and every SYNC_REPLY reply) whose message carries fds sends
  one SEQPACKET record {offset, n_fds, n_memfds} with the fds as SCM_RIGHTS
  before it answers, so the record is waiting when the ioctl returns.

Why not passthrough opens: they need root in the initial user namespace
(not a container's root), give a new open of a FUSE inode instead of the
sent file (no shared offset, no seals to check, no pipes, sockets or
eventfds), and would still need this channel for everything else.

The server is careful with what it holds:
- a channel must be an AF_UNIX SOCK_SEQPACKET socket whose SO_PEERCRED is
  the registering process (a socketpair it made), so nobody can point the
  server at a socket connected to a third party; records also carry
  SCM_CREDENTIALS of that process, never the server's, so the server cannot
  be used to speak to a credential-trusting peer with its own identity;
- sends never block (MSG_DONTWAIT): a receiver that does not read loses
  fds (INCOMPLETE_FDS), it cannot stall the server;
- imported fds are examined through /proc only (readlink, fdinfo,
  mountinfo), never with fstat/fstatfs: on a FUSE file those are requests
  to that file's server, which could be this one (deadlock) or a hostile
  one that never answers.  FUSE files are closed on a helper thread, since
  close() sends a FLUSH and waits for it;
- each sending user may keep at most MAX_HELD_PER_USER fds in the server
  (EMFILE beyond), so nobody can exhaust the server's descriptor table.
"""

from __future__ import annotations

import array
import errno
import fcntl
import os
import socket
import struct
import threading
from collections import Counter

from ..abi import constants as K
from ..abi.commands import _negotiate
from ..abi.errors import KdbusError
from ..abi.items import parse_items
from ..abi.limits import KDBUS_CMD_MAX_SIZE
from ..core.connection import POLICY_HOLDER
from ..core.fdref import FdRef
from ..fuse import caller
from ..fuse.ops import FuseError, IoctlReply

F_GET_SEALS = 1034
ALL_SEALS = 0xF             # SEAL | SHRINK | GROW | WRITE
RECORD = struct.Struct("<QII")
MAX_HELD_PER_USER = 4096
_U64 = struct.Struct("<Q")
_ITEMS = {K.KDBUS_ITEM_NEGOTIATE: False, K.KDBUSFS_ITEM_FD_CHANNEL: False}


# -- what an fd is, without asking any filesystem --------------------------
def _link(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _mnt_id(fd: int) -> int | None:
    try:
        with open(f"/proc/self/fdinfo/{fd}") as f:
            for line in f:
                if line.startswith("mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def _fstype(mnt_id: int, tid: int) -> str | None:
    """The filesystem type of mount `mnt_id`, from our mount table or the
    sender's (mount ids are unique system-wide)."""
    for path in ("/proc/self/mountinfo", f"/proc/{tid}/mountinfo"):
        try:
            with open(path) as f:
                for line in f:
                    head, _, tail = line.partition(" - ")
                    if head.split(" ", 1)[0] == str(mnt_id):
                        return tail.split(" ", 1)[0]
        except OSError:
            continue
    return None


def on_fuse(fd: int, tid: int) -> bool:
    """Whether fd is a file of some FUSE mount: polling it would ask that
    mount's server, which may never answer."""
    mnt = _mnt_id(fd)
    fstype = _fstype(mnt, tid) if mnt is not None else None
    return bool(fstype and fstype.startswith("fuse"))


def _tgid(tid: int) -> int:
    try:
        with open(f"/proc/{tid}/status") as f:
            for line in f:
                if line.startswith("Tgid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return -1


# -- the server's own accounting of held fds ---------------------------------
def raise_fd_limit() -> int:
    """Let the server use every descriptor it may (the soft limit is often
    1024, below what channels and held fds of many users need)."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


class FdTable:
    def __init__(self, limit: int = MAX_HELD_PER_USER):
        self.limit = limit
        self.held: Counter = Counter()

    def reserve(self, user, n: int) -> None:
        if self.held[user] + n > self.limit:
            raise KdbusError(errno.EMFILE, "too many fds held for this user")

    def ref(self, fd: int, user, *, fuse: bool) -> FdRef:
        self.held[user] += 1

        def closer(r: FdRef) -> None:
            self.held[r.user] -= 1
            if self.held[r.user] <= 0:
                del self.held[r.user]
            close_fd(r.fd, fuse=fuse)
        return FdRef(fd, user, closer)


def table(fs) -> FdTable:
    t = getattr(fs, "_fd_table", None)
    if t is None:
        t = fs._fd_table = FdTable()
    return t


def close_fd(fd: int, *, fuse: bool = False) -> None:
    if fuse:
        # close() of a FUSE file waits for that server's FLUSH answer
        threading.Thread(target=_close_quietly, args=(fd,), daemon=True,
                         name="kdbusfs-close").start()
    else:
        _close_quietly(fd)


def _close_quietly(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass


def release(items) -> None:
    """Drop one reference of each FdRef; plain ints are closed."""
    for r in items:
        if type(r) is FdRef:
            r.release()
        else:
            _close_quietly(r)


# -- import at SEND -----------------------------------------------------------
def import_fds(fs, tid: int, fds, user) -> list:
    """Take the FDS item's fds from the sender: EBADF, EOPNOTSUPP for a
    kdbus fd (of any kdbusfs mount) or an AF_UNIX socket, EMFILE over quota."""
    t = table(fs)
    t.reserve(user, len(fds))
    out = []
    try:
        for fd in fds:
            try:
                got = caller.take_fd(tid, fd)
            except OSError:
                raise KdbusError(errno.EBADF, "bad fd") from None
            link = _link(got)
            mnt = _mnt_id(got)
            fstype = _fstype(mnt, tid) if mnt is not None else None
            fuse = bool(fstype and fstype.startswith("fuse"))
            out.append(t.ref(got, user, fuse=fuse))
            if fstype is not None and fstype.split(".", 1)[-1] == "kdbusfs":
                raise KdbusError(errno.EOPNOTSUPP, "kdbus fds cannot be passed")
            if link.startswith("socket:"):
                s = socket.socket(fileno=os.dup(got))
                try:
                    unix = s.family == socket.AF_UNIX
                finally:
                    s.close()
                if unix:
                    raise KdbusError(errno.EOPNOTSUPP, "unix sockets cannot be passed")
    except BaseException:
        release(out)
        raise
    return out


def import_memfds(fs, tid: int, memfds, user) -> list:
    """Take the PAYLOAD_MEMFD fds: EBADF, EMEDIUMTYPE (not shmem), ETXTBSY
    (not fully sealed), EFAULT (range beyond the end)."""
    t = table(fs)
    t.reserve(user, len(memfds))
    out = []
    try:
        for _, start, size, fd in memfds:
            if fd < 0:
                raise KdbusError(errno.EBADF, "bad memfd")
            try:
                got = caller.take_fd(tid, fd)
            except OSError:
                raise KdbusError(errno.EBADF, "bad memfd") from None
            # a FUSE file (our own mount's too) must be closed off the loop
            out.append(t.ref(got, user, fuse=on_fuse(got, tid)))
            try:
                # answered by shmem itself: safe on any file, EINVAL if not shmem
                seals = fcntl.fcntl(got, F_GET_SEALS)
            except OSError:
                raise KdbusError(errno.EMEDIUMTYPE, "not a memfd") from None
            if seals & ALL_SEALS != ALL_SEALS:
                raise KdbusError(errno.ETXTBSY, "memfd not sealed")
            if start + size > os.fstat(got).st_size:       # shmem: no FUSE request
                raise KdbusError(errno.EFAULT, "memfd range beyond its end")
    except BaseException:
        release(out)
        raise
    return out


# -- the channel ------------------------------------------------------------------
class FdChannel:
    """The server's end of a receiver's fd channel."""

    def __init__(self, sock: socket.socket, peer: tuple[int, int, int]):
        self.sock = sock
        pid, uid, gid = peer
        # SCM_CREDENTIALS: the receiver's own, else our pid with its ids,
        # else (a server without CAP_SETUID/CAP_SYS_ADMIN) none.
        self._creds = [struct.pack("iII", pid, uid, gid),
                       struct.pack("iII", os.getpid(), uid, gid), None]

    def send(self, offset: int, fds, memfds) -> bool:
        nums = [r.fd if type(r) is FdRef else r for r in (*fds, *memfds)]
        data = RECORD.pack(offset, len(fds), len(memfds))
        rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", nums).tobytes())
        while self._creds:
            creds = self._creds[0]
            anc = [rights] if creds is None else \
                [rights, (socket.SOL_SOCKET, socket.SCM_CREDENTIALS, creds)]
            try:
                self.sock.sendmsg([data], anc, socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL)
                return True
            except PermissionError:
                if creds is None:
                    return False
                self._creds.pop(0)      # not allowed to claim those: try the next
            except OSError:
                return False            # full, closed, too many fds in flight...
        return False

    def close(self) -> None:
        self.sock.close()


def install(conn, offset: int, fds, memfds) -> bool:
    """The engine's hook: hand a message's fds to `conn` (False: not done)."""
    ch = getattr(conn, "fd_channel", None)
    return ch is not None and ch.send(offset, fds, memfds)


def close_channel(conn) -> None:
    ch = getattr(conn, "fd_channel", None)
    if ch is not None:
        conn.fd_channel = None
        ch.close()


def fd_channel_ioctl(fs, req, handle, arg: int):
    """KDBUSFS_CMD_FD_CHANNEL (kdbus.h): register the receiver's channel."""
    from .ioctl import _state_check
    tid = req.pid
    copied = False
    try:
        _state_check(handle, K.KDBUSFS_CMD_FD_CHANNEL)
        if handle.conn.kind == POLICY_HOLDER:
            raise KdbusError(errno.EOPNOTSUPP, "policy holders receive nothing")
        if arg % 8 or arg == 0:
            raise KdbusError(errno.EFAULT, "argument not 8-byte aligned")
        size = _U64.unpack(_read(tid, arg, 8))[0]
        if size < 24:
            raise KdbusError(errno.EINVAL, "command smaller than kdbus_cmd")
        if size > KDBUS_CMD_MAX_SIZE:
            raise KdbusError(errno.EMSGSIZE, "command too large")
        buf = _read(tid, arg, size)
        if _U64.unpack_from(buf)[0] != size:
            raise KdbusError(errno.EINVAL, "size changed under us")
        copied = True
        flags = _U64.unpack_from(buf, 8)[0]
        if flags & ~K.KDBUS_FLAG_NEGOTIATE:
            raise KdbusError(errno.EINVAL, "no flags are defined")
        items = parse_items(buf, 24, size, _ITEMS)
        for it in items:
            if it.type == K.KDBUS_ITEM_NEGOTIATE:
                patches, _ = _negotiate(it, _ITEMS)
                for off, data in patches:
                    _write(tid, arg + off, data)
            elif len(it.payload) != 4:
                raise KdbusError(errno.EINVAL, "FD_CHANNEL carries one __s32")
        if flags & K.KDBUS_FLAG_NEGOTIATE:
            _write(tid, arg + 8, _U64.pack(0))
            return IoctlReply(0, b"")
        it = next((i for i in items if i.type == K.KDBUSFS_ITEM_FD_CHANNEL), None)
        if it is None:
            raise KdbusError(errno.EINVAL, "missing KDBUSFS_ITEM_FD_CHANNEL")
        fd = struct.unpack_from("<i", it.payload)[0]
        sock = _take_channel(tid, fd)
        close_channel(handle.conn)
        handle.conn.fd_channel = sock
        _clear_return_flags(tid, arg, buf)
        return IoctlReply(0, b"")
    except KdbusError as e:
        if copied:
            try:
                _clear_return_flags(tid, arg, buf)
            except KdbusError:
                pass
        raise FuseError(e.errno) from None


def _take_channel(tid: int, fd: int) -> FdChannel:
    if fd < 0:
        raise KdbusError(errno.EBADF, "bad fd")
    try:
        got = caller.take_fd(tid, fd)
    except OSError:
        raise KdbusError(errno.EBADF, "bad fd") from None
    if not _link(got).startswith("socket:"):
        close_fd(got, fuse=on_fuse(got, tid))
        raise KdbusError(errno.EINVAL, "not a socket")
    sock = socket.socket(fileno=got)
    try:
        if sock.family != socket.AF_UNIX or sock.type != socket.SOCK_SEQPACKET:
            raise KdbusError(errno.EINVAL, "not an AF_UNIX SOCK_SEQPACKET socket")
        pid, uid, gid = struct.unpack("iII", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
        if pid <= 0 or pid != _tgid(tid):
            raise KdbusError(errno.EINVAL, "the channel's peer is not the caller")
    except BaseException:
        sock.close()
        raise
    return FdChannel(sock, (pid, uid, gid))


def _read(tid: int, addr: int, size: int) -> bytes:
    try:
        return caller.read_memory(tid, addr, size)
    except OSError:
        raise KdbusError(errno.EFAULT, "cannot read caller memory") from None


def _write(tid: int, addr: int, data: bytes) -> None:
    try:
        caller.write_memory(tid, addr, data)
    except OSError:
        raise KdbusError(errno.EFAULT, "cannot write caller memory") from None


def _clear_return_flags(tid: int, arg: int, buf: bytes) -> None:
    if buf[16:24] != bytes(8):
        _write(tid, arg + 16, bytes(8))
