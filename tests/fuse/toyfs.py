"""A tiny filesystem for the tests of kdbusfs.fuse (not part of kdbusfs).

    python -m tests.fuse.toyfs MOUNTPOINT

mounts, serves, prints "ready <method>" once INIT is answered, and on
SIGTERM/SIGINT stops, unmounts and exits.

/hello  a readable file
/dev    ioctls and poll (see ioctls.py)
/pool   a fresh inode per LOOKUP (entry_valid 0), so each open gets its own
        page cache; PUSH stores bytes into it with NOTIFY_STORE, and READ is
        served from the server's copy.
"""

import errno
import logging
import os
import select
import signal
import stat
import sys
import zlib

import trio

from kdbusfs.fuse import caller
from kdbusfs.fuse.mount import mount
from kdbusfs.fuse.ops import (
    DEFERRED,
    DT_DIR,
    DT_REG,
    Attr,
    AttrReply,
    DirEntry,
    Entry,
    FuseError,
    IoctlReply,
    OpenReply,
    Operations,
    StatFs,
)
from kdbusfs.fuse.session import Session

from . import ioctls as K

ROOT, HELLO, DEV = 1, 2, 3
FIRST_POOL = 1000
HELLO_DATA = b"hello world\n"
POOL_SIZE = 16 * 4096
# Distinct values in every field, so the tests can check the struct layout.
HELLO_ATTR = Attr(HELLO, stat.S_IFREG | 0o444, nlink=3, uid=123, gid=456, size=len(HELLO_DATA),
                  blocks=7, atime=1.25e9 + 0.5, mtime=1.5e9, ctime=1.75e9 + 0.25, blksize=8192)
STATFS = StatFs(blocks=1000, bfree=500, bavail=400, files=300, ffree=200, bsize=8192, namelen=200,
                frsize=2048)


def _memory_error(e):
    return FuseError(e.errno or errno.EFAULT)


class ToyFS(Operations):
    def __init__(self):
        self.session = None
        self.next_nodeid = FIRST_POOL
        self.next_fh = 1
        self.pools = {}  # nodeid -> bytearray, the authoritative copy
        self.nlookup = {}  # pool nodeid -> lookup count
        self.pollers = {}  # fh -> kh
        self.readable = False
        self.deferred = []
        self.interrupt_callbacks = 0
        self.pool_reads = 0
        self.requests = 0
        self.hello = HELLO_DATA
        self.hello_lookups = 0
        self.forgotten = 0

    def init(self, session):
        self.session = session

    def _attr(self, nodeid):
        if nodeid == ROOT:
            return Attr(ROOT, stat.S_IFDIR | 0o755, nlink=2)
        if nodeid == HELLO:
            return HELLO_ATTR
        if nodeid == DEV:
            return Attr(DEV, stat.S_IFREG | 0o666)
        if nodeid in self.pools:
            return Attr(nodeid, stat.S_IFREG | 0o444, size=POOL_SIZE)
        raise FuseError(errno.ENOENT)

    def lookup(self, req, parent, name):
        if parent != ROOT:
            raise FuseError(errno.ENOENT)
        if name == b"hello":
            self.hello_lookups += 1
            return Entry(HELLO, self._attr(HELLO), entry_valid=1.0, attr_valid=1.0)
        if name == b"dev":
            return Entry(DEV, self._attr(DEV), entry_valid=1.0, attr_valid=1.0)
        if name == b"pool":
            nodeid = self.next_nodeid
            self.next_nodeid += 1
            self.pools[nodeid] = bytearray(POOL_SIZE)
            self.nlookup[nodeid] = 1
            return Entry(nodeid, self._attr(nodeid), entry_valid=0.0, attr_valid=60.0)
        raise FuseError(errno.ENOENT)

    def forget(self, items):
        for nodeid, n in items:
            self.forgotten += 1
            if nodeid in self.nlookup:
                self.nlookup[nodeid] -= n
                if self.nlookup[nodeid] <= 0:
                    del self.nlookup[nodeid], self.pools[nodeid]

    def getattr(self, req, nodeid, fh):
        return AttrReply(self._attr(nodeid), valid=1.0)

    def opendir(self, req, nodeid, flags):
        if nodeid != ROOT:
            raise FuseError(errno.ENOTDIR)
        return OpenReply(0)

    def readdir(self, req, nodeid, fh, offset):
        entries = [(b".", ROOT, DT_DIR), (b"..", ROOT, DT_DIR), (b"hello", HELLO, DT_REG),
                   (b"dev", DEV, DT_REG), (b"pool", FIRST_POOL, DT_REG)]
        for i, (name, ino, type_) in enumerate(entries[offset:], offset):
            yield DirEntry(name, ino, type_, i + 1)

    def releasedir(self, req, nodeid, fh):
        pass

    def open(self, req, nodeid, flags):
        self._attr(nodeid)
        fh = self.next_fh
        self.next_fh += 1
        return OpenReply(fh, keep_cache=True)

    def read(self, req, nodeid, fh, offset, size):
        if nodeid == HELLO:
            return self.hello[offset : offset + size]
        if nodeid in self.pools:
            self.pool_reads += 1
            return bytes(self.pools[nodeid][offset : offset + size])
        raise FuseError(errno.EINVAL)

    def flush(self, req, nodeid, fh):
        pass

    def release(self, req, nodeid, fh, flags):
        self.pollers.pop(fh, None)

    def poll(self, req, nodeid, fh, kh, events):
        if kh is not None:
            self.pollers[fh] = kh
        return select.POLLIN if nodeid == DEV and self.readable else 0

    def statfs(self, req):
        return STATFS

    def ioctl(self, req, nodeid, fh, cmd, arg, in_data, out_size, flags):
        self.requests += 1
        if nodeid in self.pools and cmd == K.PUSH:
            return self._push(req, nodeid, in_data)
        if nodeid != DEV:
            raise FuseError(errno.ENOTTY)
        if cmd == K.ECHO:
            return IoctlReply(0, in_data)
        if cmd == K.ECHO_MEM:
            return self._echo_mem(req, arg, in_data)
        if cmd == K.DEFER:
            self.deferred.append(req)
            return req.defer()
        if cmd == K.DEFER_CB:
            self.deferred.append(req)
            return req.defer(on_interrupt=self._interrupted)
        if cmd == K.LATER:
            req.defer()
            self.session.nursery.start_soon(self._later, req)
            return DEFERRED
        if cmd == K.RAISE:
            raise RuntimeError("toyfs: deliberate failure")
        if cmd == K.MAKE_READABLE:
            self.readable = True
            for kh in self.pollers.values():
                self.session.notify_poll(kh)
            return IoctlReply()
        if cmd == K.CLEAR_READABLE:
            self.readable = False
            return IoctlReply()
        if cmd == K.STATS:
            pending = sum(not r.answered for r in self.deferred)
            data = K.STATS_STRUCT.pack(pending, self.interrupt_callbacks, self.pool_reads, self.requests,
                                       self.hello_lookups, len(self.pools), self.forgotten)
            return IoctlReply(0, data)
        if cmd == K.SET_HELLO:
            self.hello = in_data
            return IoctlReply()
        if cmd == K.INVAL_HELLO:
            self.session.notify_inval_inode(HELLO)
            self.session.notify_inval_entry(ROOT, b"hello")
            return IoctlReply(after_stores=True)
        raise FuseError(errno.ENOTTY)

    def _echo_mem(self, req, arg, in_data):
        try:
            mem = caller.read_memory(req.pid, arg, 64)
        except OSError as e:
            raise _memory_error(e) from None
        if mem != in_data:  # the kernel's copy and the caller's memory agree
            raise FuseError(errno.EPROTO)
        out_addr, out_len = K.ECHO_MEM_HDR.unpack_from(mem)
        if out_addr:
            try:
                caller.write_memory(req.pid, out_addr, mem[16 : 16 + min(out_len, 48)])
            except OSError as e:
                raise _memory_error(e) from None
        return IoctlReply(zlib.crc32(mem) & 0x7FFFFFFF, mem)

    def _push(self, req, nodeid, in_data):
        offset, addr, size = K.PUSH_STRUCT.unpack(in_data)
        if offset + size > POOL_SIZE:
            raise FuseError(errno.EINVAL)
        try:
            data = caller.read_memory(req.pid, addr, size)
        except OSError as e:
            raise _memory_error(e) from None
        self.pools[nodeid][offset : offset + size] = data
        self.session.notify_store(nodeid, offset, data)
        # The caller may look at its mapping as soon as the ioctl returns.
        return IoctlReply(0, after_stores=True)

    def _interrupted(self, req):
        self.interrupt_callbacks += 1
        req.reply_error(errno.EINTR)

    async def _later(self, req):
        await trio.sleep(0.05)
        req.reply_ioctl(42, after_stores=True)


async def serve(mountpoint, fs=None):
    fs = fs or ToyFS()
    m = mount(mountpoint)
    # Benchmarks compare busy-poll windows.
    busy = os.environ.get("TOYFS_BUSY_POLL_US")
    session = Session(m.fd, fs, **({"busy_poll_us": float(busy)} if busy else {}))
    try:
        async with trio.open_nursery() as nursery:

            async def run(task_status):
                try:
                    await session.run(task_status=task_status)
                finally:
                    nursery.cancel_scope.cancel()

            async def on_signal():
                with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                    async for _ in signals:
                        session.stop()

            nursery.start_soon(on_signal)
            await nursery.start(run)
            print("ready", m.method, flush=True)
    finally:
        try:
            m.unmount(lazy=True)
        except OSError as e:
            if e.errno not in (errno.EINVAL, errno.ENOENT):  # not gone already
                logging.getLogger("toyfs").error("unmount failed: %s", e)
        m.close()


def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="toyfs %(levelname)s %(name)s: %(message)s")
    trio.run(serve, sys.argv[1])


if __name__ == "__main__":
    main()
