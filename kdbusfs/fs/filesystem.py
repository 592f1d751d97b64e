"""The kdbusfs filesystem: FUSE operations over one engine Domain.

It owns the node tree and the open files, hands ioctls to `ioctl.dispatch`,
and applies what the engine asks for after every command: pool bytes are
pushed to the kernel page cache (NOTIFY_STORE, on the session's writer
thread), pollers are woken, blocked SENDs are answered.
"""

from __future__ import annotations

import errno
import itertools
import logging
import os
import select
import time

import trio

from ..core import effects as fx
from ..core.bus import Bus
from ..core.domain import MAX_POOL_BYTES_PER_USER, Domain, ReleaseFds
from ..fuse.ops import (DEFERRED, DT_DIR, DT_REG, AttrReply, DirEntry, Entry, FuseError,
                        OpenReply, Operations, StatFs)
from . import fdpass
from . import ioctl as ioctlmod
from . import passthrough
from . import procinfo
from .handle import BUS_OWNER, CONNECTION, ENDPOINT_OWNER, Handle
from .tree import BUSDIR, CONTROL, CONTROL_ID, ENDPOINT, ROOT, ROOT_ID, Tree

log = logging.getLogger("kdbusfs.fs")

KDBUS_SUPER_MAGIC = 0x44427573
POLLIN_BITS = select.POLLIN | select.POLLRDNORM
POLLOUT_BITS = select.POLLOUT | select.POLLWRNORM
POLLHUP_BITS = select.POLLERR | select.POLLHUP
PAGE = 4096


def _pool_bytes_limit() -> int:
    """Pool bytes one uid may hold (a kdbusfs limit; see core/domain.py)."""
    return int(os.environ.get("KDBUSFS_USER_POOL_BYTES", MAX_POOL_BYTES_PER_USER))


class KdbusFS(Operations):
    def __init__(self, domain: Domain | None = None):
        self.domain = domain or Domain(max_pool_bytes=_pool_bytes_limit())
        self.domain.install_fds = fdpass.install     # receivers' fd channels
        fdpass.raise_fd_limit()
        self.tree = Tree()
        self.handles: dict[int, Handle] = {}
        self._fhs = itertools.count(1)
        self.session = None
        self._timer_wake = None
        self._timer_target = None
        self.passthrough = False        # pools as passthrough memfds (passthrough.py)

    # -- session life -----------------------------------------------------
    def init(self, session) -> None:
        self.session = session
        self.passthrough = session.passthrough
        self._timer_wake = trio.Event()
        session.nursery.start_soon(self._timer_loop)

    def destroy(self) -> None:
        self.domain.shutdown()
        self.domain.take_effects()

    # -- lookups and attributes ---------------------------------------------
    def _node(self, nodeid: int):
        n = self.tree.get(nodeid)
        if n is None:
            raise FuseError(errno.ENOENT)
        return n

    def lookup(self, req, parent: int, name: bytes) -> Entry:
        p = self._node(parent)
        try:
            name_s = name.decode("latin-1")
        except UnicodeDecodeError:
            raise FuseError(errno.ENOENT) from None
        if p.kind == ROOT:
            if name_s == "control":
                n = self.tree.get(CONTROL_ID)
            else:
                bus = self.domain.buses.get(name_s)
                if bus is None:
                    raise FuseError(errno.ENOENT)
                n = self.tree.bus_dir(bus)
        elif p.kind == BUSDIR:
            bus = p.obj
            ep = bus.endpoints.get(name_s) if bus.alive else None
            if ep is None:
                raise FuseError(errno.ENOENT)
            # a fresh inode for every lookup: each open gets its own pool mapping
            n = self.tree.new_node(ENDPOINT, ep)
        else:
            raise FuseError(errno.ENOTDIR)
        n.lookups += 1
        return Entry(n.id, self.tree.attr(n), entry_valid=0.0, attr_valid=0.0)

    def forget(self, items) -> None:
        for nodeid, nlookup in items:
            self.tree.forget(nodeid, nlookup)

    def getattr(self, req, nodeid: int, fh) -> AttrReply:
        return AttrReply(self.tree.attr(self._node(nodeid)), 0.0)

    def statfs(self, req) -> StatFs:
        return StatFs(bsize=PAGE, frsize=PAGE, namelen=255)

    # -- directories -----------------------------------------------------------
    def opendir(self, req, nodeid: int, flags: int) -> OpenReply:
        n = self._node(nodeid)
        if n.kind not in (ROOT, BUSDIR):
            raise FuseError(errno.ENOTDIR)
        return OpenReply(0)

    def readdir(self, req, nodeid: int, fh: int, offset: int):
        n = self._node(nodeid)
        entries = [(b".", n.id, DT_DIR), (b"..", ROOT_ID, DT_DIR)]
        if n.kind == ROOT:
            entries.append((b"control", CONTROL_ID, DT_REG))
            for name, bus in sorted(self.domain.buses.items()):
                entries.append((name.encode("latin-1"), self.tree.bus_dir(bus).id, DT_DIR))
        elif n.kind == BUSDIR and n.obj.alive:
            for name in sorted(n.obj.endpoints):
                entries.append((name.encode("latin-1"), 0xFFFFFFFF, DT_REG))
        for i in range(offset, len(entries)):
            name, ino, t = entries[i]
            yield DirEntry(name, ino, t, i + 1)

    def releasedir(self, req, nodeid: int, fh: int) -> None:
        pass

    # -- open files ------------------------------------------------------------------
    def open(self, req, nodeid: int, flags: int) -> OpenReply:
        n = self._node(nodeid)
        if n.kind == CONTROL:
            if not self.domain.alive:
                raise FuseError(errno.ESHUTDOWN)
            file, ep = "control", None
        elif n.kind == ENDPOINT:
            ep = n.obj
            if not ep.alive or not ep.bus.alive:
                raise FuseError(errno.ESHUTDOWN)
            file = "endpoint"
        else:
            raise FuseError(errno.EISDIR)
        who = procinfo.identity(req.pid, req.uid, req.gid)
        h = Handle(next(self._fhs), n, file, ep, who, req.pid)
        self.handles[h.fh] = h
        if n.kind != ENDPOINT:
            return OpenReply(h.fh, keep_cache=True)
        n.handle = h
        backing_id = self._backing_for(h)
        # a passthrough open must not ask for the page cache (EIO otherwise)
        return OpenReply(h.fh, keep_cache=backing_id is None, backing_id=backing_id)

    def _backing_for(self, h: Handle):
        """A passthrough memfd for this open's pool, while passthrough works."""
        if not self.passthrough:
            return None
        fd = passthrough.new_pool_file()
        try:
            bid = self.session.backing_open(fd)
        except OSError as e:
            log.info("passthrough unavailable (%s): pools are pushed instead", e)
            self.passthrough = False
            os.close(fd)
            return None
        h.backing = (fd, bid)
        return bid

    def flush(self, req, nodeid: int, fh: int) -> None:
        # close() of any copy of the fd: kdbus objects end at RELEASE only
        return None

    def release(self, req, nodeid: int, fh: int, flags: int) -> None:
        h = self.handles.pop(fh, None)
        if h is None:
            return
        d = self.domain
        if h.state == BUS_OWNER:
            d.bus_destroy(h.bus)
        elif h.state == ENDPOINT_OWNER:
            d.endpoint_destroy(h.owned_endpoint)
        elif h.state == CONNECTION:
            d.disconnect(h.conn)
        self.apply_effects()
        if h.conn is not None:
            self.domain.close_pool(h.conn)
            fdpass.close_channel(h.conn)
        h.poll_khs.clear()
        if h.backing is not None:
            fd, bid = h.backing
            h.backing = None
            self.session.backing_close(bid)
            os.close(fd)

    def pool_store_for(self, h: Handle):
        """The store factory for the pool HELLO creates on this open."""
        if h.backing is None:
            return None
        fd = h.backing[0]
        return lambda size: passthrough.MemfdStore(fd, size)

    def read(self, req, nodeid: int, fh: int, offset: int, size: int):
        # Page faults on a pool mapping, also after the kernel dropped pages.
        h = self.handles.get(fh)
        if h is None or h.conn is None:
            n = self.tree.get(nodeid)
            h = n.handle if n is not None else None
            if h is None or h.conn is None:
                return b""
        pool = h.conn.pool
        if offset >= pool.size:
            return b""
        return pool.read(offset, min(size, pool.size - offset))

    def poll(self, req, nodeid: int, fh: int, kh, events: int) -> int:
        h = self.handles.get(fh)
        if h is None or h.conn is None or not h.conn.alive:
            return POLLHUP_BITS
        if kh is not None:
            h.poll_khs.add(kh)
        return POLLOUT_BITS | (POLLIN_BITS if h.conn.readable() else 0)

    def ioctl(self, req, nodeid, fh, cmd, arg, in_data, out_size, flags):
        h = self.handles.get(fh)
        if h is None:
            raise FuseError(errno.EBADF)
        try:
            return ioctlmod.dispatch(self, req, h, cmd & 0xFFFFFFFF, arg, in_data, out_size)
        finally:
            self.apply_effects()

    # -- helpers used by ioctl handlers ----------------------------------------------
    def connection_ready(self, h: Handle) -> None:
        """HELLO succeeded: the node's size becomes the pool size.

        Pushing the last page sets the inode size in the kernel, so that
        faults anywhere in the mapping reach us instead of SIGBUS.
        """
        conn = h.conn
        conn.fs_handle = h
        h.node.size = conn.pool.size
        if h.backing is None:
            self.session.notify_store(h.node.id, conn.pool.size - PAGE, bytes(PAGE))

    def close_fd(self, fd: int) -> None:
        try:
            os.close(fd)
        except OSError:
            pass

    def release_fds(self, fds) -> None:
        fdpass.release(fds)

    # fds taken from senders (fdpass.py: no fstat on them, per-user limit)
    def import_fds(self, tid: int, fds, user=None) -> list:
        return fdpass.import_fds(self, tid, fds, user)

    def import_memfds(self, tid: int, memfds, user=None) -> list:
        return fdpass.import_memfds(self, tid, memfds, user)

    mountpoint: str | None = None

    # -- blocked SENDs ----------------------------------------------------------------------
    def wait_for_reply(self, waiter) -> None:
        req = waiter.call.req

        def interrupted(_req):
            self.domain.cancel_wait(waiter, errno.EINTR)
            self._end_wait(waiter)
            waiter.call.fail_writeback()
            req.reply_error(errno.EINTR)
            self.apply_effects()

        req.defer(on_interrupt=interrupted)
        if waiter.cancel_fd is not None:
            self.session.nursery.start_soon(self._watch_cancel, waiter)
        self._poke_timer()

    def _end_wait(self, waiter) -> None:
        if waiter.cancel_scope is not None:
            waiter.cancel_scope.cancel()
        elif waiter.cancel_fd is not None:
            self.close_fd(waiter.cancel_fd)
            waiter.cancel_fd = None

    async def _watch_cancel(self, waiter) -> None:
        fd = waiter.cancel_fd
        with trio.CancelScope() as scope:
            waiter.cancel_scope = scope
            try:
                await trio.lowlevel.wait_readable(fd)
            except OSError:
                # checked pollable at SEND; should it fail anyway, the wait
                # goes on without a cancel fd rather than taking the server down
                log.warning("cannot watch cancel fd %d", fd)
                await trio.sleep_forever()
            finally:
                waiter.cancel_scope = None
                waiter.cancel_fd = None
                self.close_fd(fd)
            self.domain.cancel_wait(waiter, errno.ECANCELED)
            waiter.call.fail_writeback()
            waiter.call.req.reply_error(errno.ECANCELED)
            self.apply_effects()

    # -- blocked RECVs (KDBUSFS_RECV_BLOCK) -----------------------------------------
    def park_recv(self, call, flags: int, prio: int) -> None:
        h = call.handle
        entry = (call, flags, prio)

        def interrupted(_req):
            if entry in h.parked:
                h.parked.remove(entry)
            call.fail_writeback()
            call.req.reply_error(errno.EINTR)

        call.req.defer(on_interrupt=interrupted)
        h.parked.append(entry)

    def _retry_parked(self, h) -> None:
        """The connection became readable (or died): answer parked RECVs in
        arrival order while there is something for them."""
        from ..abi.errors import KdbusError
        while h.parked:
            call, flags, prio = h.parked[0]
            try:
                reply = ioctlmod.recv_attempt(call, flags, prio, may_block=True)
            except KdbusError as e:
                h.parked.pop(0)
                call.fail_writeback()
                call.req.reply_error(e.errno)
                continue
            except FuseError as e:
                h.parked.pop(0)
                call.req.reply_error(e.errno)
                continue
            if reply is None:
                return
            h.parked.pop(0)
            call.req.reply_ioctl(0, reply.data, after_stores=reply.after_stores)

    # -- reply deadlines ------------------------------------------------------------------
    def _poke_timer(self) -> None:
        d = self.domain.next_deadline()
        if d is not None and (self._timer_target is None or d < self._timer_target):
            self._timer_wake.set()

    async def _timer_loop(self) -> None:
        while True:
            d = self.domain.next_deadline()
            self._timer_target = d
            self._timer_wake = trio.Event()
            if d is None:
                await self._timer_wake.wait()
                continue
            delay = (d - time.monotonic_ns()) / 1e9
            if delay > 0:
                with trio.move_on_after(delay):
                    await self._timer_wake.wait()
                    continue
            self.domain.expire()
            self.apply_effects()

    # -- effects ------------------------------------------------------------------------------
    def apply_effects(self) -> None:
        # answering a parked RECV is itself a command with effects: loop
        while True:
            effects = self.domain.take_effects()
            if not effects:
                break
            self._apply(effects)
        if self._timer_wake is not None:
            self._poke_timer()

    def _apply(self, effects) -> None:
        s = self.session
        woken = set()
        for e in effects:
            t = type(e)
            if t is fx.PoolWrite:
                h = getattr(e.conn, "fs_handle", None)
                # passthrough pools need no push: the client maps our memory
                if h is not None and h.backing is None and s is not None:
                    s.notify_store(h.node.id, e.offset, e.conn.pool.read(e.offset, e.size))
            elif t is fx.Readable or t is fx.Disconnected:
                if e.conn not in woken:
                    woken.add(e.conn)
                    h = getattr(e.conn, "fs_handle", None)
                    if h is None:
                        continue
                    if h.parked:
                        self._retry_parked(h)
                    if h.poll_khs and s is not None:
                        for kh in h.poll_khs:
                            s.notify_poll(kh)
                        h.poll_khs.clear()
            elif t is fx.WaitDone:
                self._end_wait(e.token)
                e.token.complete(e.error, e.reply)
            elif t is ReleaseFds:
                self.release_fds(e.fds)
            elif t is fx.NodeRemoved:
                self._node_removed(e.node)

    def _node_removed(self, obj) -> None:
        """A bus or custom endpoint died.  The kernel keeps the dentry of a
        name it looked up, and with it the inodes under it, until told
        otherwise; our nodes for them (holding the Bus, the connections
        opened there) go only with their FORGET: invalidate the name.  A bus
        directory nobody looked up has no dentry: its node goes now."""
        if isinstance(obj, Bus):
            n = self.tree.bus_nodes.get(obj)
            if n is not None and n.lookups > 0 and self.session is not None:
                # the names in it first: invalidating the directory alone
                # leaves a child dentry whose file is still open hashed, and
                # after the close it pins its inode (no FORGET) until the
                # kernel is short of memory
                for name in obj.endpoints:
                    self.session.notify_inval_entry(n.id, name.encode("latin-1"))
                self.session.notify_inval_entry(ROOT_ID, obj.name.encode("latin-1"))
            self.tree.bus_gone(obj)
        else:       # a custom endpoint: its name lives in the bus directory
            n = self.tree.bus_nodes.get(obj.bus)
            if n is not None and self.session is not None:
                self.session.notify_inval_entry(n.id, obj.name.encode("latin-1"))
