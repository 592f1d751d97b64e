"""Session behaviour seen from inside: a mount served by this test process,
with the blocking client calls made from worker threads."""

import errno
import logging
import os
import stat
import threading

import pytest
import trio

from kdbusfs.fuse import (
    DEFERRED,
    Attr,
    DirEntry,
    Entry,
    FuseError,
    IoctlReply,
    OpenReply,
    Operations,
    Reply,
    Session,
    mount,
    unmount,
)
from kdbusfs.fuse.ops import DT_REG
from kdbusfs.fuse.protocol import io

from .conftest import is_mounted, mount_entry
from .ioctls import raw_ioctl

pytestmark = pytest.mark.timeout(60)

WRITER = "kdbusfs-fuse-writer"
NAMES = [b"entry-%04d-" % i + b"x" * (i % 50) for i in range(1000)]


class Probe(Operations):
    """Root with one file `f`; misbehaving handlers chosen by ioctl number."""

    def __init__(self):
        self.session = None
        self.destroyed = 0
        self.kept = []

    def init(self, session):
        self.session = session

    def destroy(self):
        self.destroyed += 1

    def getattr(self, req, nodeid, fh):
        if nodeid == 1:
            return Attr(1, stat.S_IFDIR | 0o755, nlink=2)
        return Attr(2, stat.S_IFREG | 0o666)

    def lookup(self, req, parent, name):
        if name == b"f":
            return Entry(2, Attr(2, stat.S_IFREG | 0o666), entry_valid=60, attr_valid=60)
        if name == b"none":
            return None  # a bug: must come back as EIO, not a hang
        raise FuseError(errno.ENOENT)

    def open(self, req, nodeid, flags):
        return OpenReply(7)

    def opendir(self, req, nodeid, flags):
        return OpenReply(0)

    def readdir(self, req, nodeid, fh, offset):
        # More than one READDIR's worth: the session stops when the buffer is full.
        for i in range(offset, len(NAMES)):
            yield DirEntry(NAMES[i], 100 + i, DT_REG, i + 1)

    def ioctl(self, req, nodeid, fh, cmd, arg, in_data, out_size, flags):
        nr = cmd & 0xFF
        if nr == 1:
            return DEFERRED  # without req.defer(): a bug, answered EIO
        if nr == 2:
            req.reply_ioctl(5)
            req.reply_ioctl(6)  # ignored
            return IoctlReply(7)  # ignored too
        if nr == 3:
            raise FuseError(99999)  # not an errno the kernel accepts
        if nr == 4:
            return IoctlReply(0, b"too long")  # out_size is 0
        if nr == 5:
            self.kept.append(req)
            return req.defer()  # left for the session to end
        if nr == 6:
            self.session.notify_store(2, 0, b"x")  # queued; fine at any time
            return IoctlReply(3, after_stores=True)
        if nr == 7:
            return Reply("not bytes")  # fails on the trio thread
        if nr == 8:
            return Reply("not bytes", after_stores=True)  # fails on the writer thread
        raise FuseError(errno.ENOTTY)


async def serve(mountpoint, ops, client):
    """Mount, serve, run client(session) in a thread, stop; returns its result."""
    m = mount(mountpoint)
    try:
        session = Session(m.fd, ops)
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            assert any(t.name == WRITER for t in threading.enumerate())
            try:
                return await trio.to_thread.run_sync(client, session)
            finally:
                session.stop()
    finally:
        # Close the connection first: a request made after stop() (a close()
        # sends FLUSH) would otherwise hang this very process.
        m.close()
        if is_mounted(mountpoint):
            unmount(mountpoint, lazy=True)


def test_mount_as_root_and_stop_leaves_no_threads(tmp_path):
    mp = str(tmp_path)
    ops = Probe()

    def client(session):
        assert mount_entry(mp) == (
            "fuse.kdbusfs", "kdbusfs",
            "rw,user_id=0,group_id=0,default_permissions,allow_other",
        )
        assert stat.S_ISREG(os.stat(os.path.join(mp, "f")).st_mode)
        return session

    session = trio.run(serve, mp, ops, client)
    assert session.proto_minor == 45
    assert session.flags & (1 << 38)  # NO_EXPORT_SUPPORT, a flags2 bit
    assert not any(t.name == WRITER for t in threading.enumerate())
    assert ops.destroyed == 1
    assert not is_mounted(mp)


def test_readdir_many_entries(tmp_path):
    mp = str(tmp_path)

    def client(session):
        return [(e.name, e.inode()) for e in os.scandir(mp)]

    entries = trio.run(serve, mp, Probe(), client)
    assert entries == [(n.decode(), 100 + i) for i, n in enumerate(NAMES)]


def test_unmount_ends_run(tmp_path):
    """ENODEV: run() returns by itself and destroy() is called."""
    mp = str(tmp_path)
    ops = Probe()

    async def main():
        m = mount(mp)
        session = Session(m.fd, ops)
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(session.run)
                await trio.to_thread.run_sync(os.stat, os.path.join(mp, "f"))
                await trio.to_thread.run_sync(unmount, mp)
        m.close()

    trio.run(main)
    assert ops.destroyed == 1
    assert not any(t.name == WRITER for t in threading.enumerate())


def test_every_path_is_answered(tmp_path, caplog):
    mp = str(tmp_path)
    ops = Probe()

    def client(session):
        fd = os.open(os.path.join(mp, "f"), os.O_RDWR)
        results = {}
        try:
            for nr in (1, 2, 3, 4, 6, 7, 8, 6):
                try:
                    results[nr] = raw_ioctl(fd, io("P", nr))
                except OSError as e:
                    results[nr] = errno.errorcode[e.errno]
            try:
                os.stat(os.path.join(mp, "none"))
            except OSError as e:
                results["lookup"] = errno.errorcode[e.errno]
            try:
                os.getxattr(mp, "user.x")
            except OSError as e:
                results["getxattr"] = errno.errorcode[e.errno]
        finally:
            os.close(fd)
        return results

    with caplog.at_level(logging.DEBUG, logger="kdbusfs.fuse"):
        results = trio.run(serve, mp, ops, client)
    assert results == {1: "EIO", 2: 5, 3: "EIO", 4: "EIO", 6: 3, 7: "EIO", 8: "EIO", "lookup": "EIO",
                       "getxattr": errno.errorcode[errno.EOPNOTSUPP]}
    text = caplog.text
    assert "DEFERRED without req.defer()" in text
    assert "ignoring second reply" in text
    assert "invalid errno 99999" in text
    assert "lookup returned None" in text
    assert "queued write for unique" in text  # ... and the writer thread lived on


def test_stop_answers_deferred_requests(tmp_path):
    mp = str(tmp_path)
    ops = Probe()
    outcome = {}
    answered = threading.Event()

    def blocked():
        fd = os.open(os.path.join(mp, "f"), os.O_RDWR)
        try:
            raw_ioctl(fd, io("P", 5))
        except OSError as e:
            outcome["errno"] = e.errno
        answered.set()
        try:
            os.close(fd)  # FLUSH: fails once the connection is closed
        except OSError:
            pass

    t = threading.Thread(target=blocked)

    def client(session):
        t.start()
        while not ops.kept:
            answered.wait(0.01)
        trio.from_thread.run_sync(session.stop)
        return answered.wait(5)

    try:
        assert trio.run(serve, mp, ops, client)
    finally:
        t.join(10)
    assert outcome["errno"] == errno.ECONNABORTED
    assert ops.kept[0].answered
    assert ops.kept[0].reply_error(errno.EIO) is False  # too late: ignored
