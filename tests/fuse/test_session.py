"""The session against a real mount of the toy filesystem (tests/fuse/toyfs.py)."""

import errno
import fcntl
import mmap
import os
import select
import signal
import subprocess
import threading
import time
import zlib

import pytest

from kdbusfs.fuse import libc

from . import ioctls as K
from .conftest import PYTHON, REPO, child_env, is_mounted
from .toyfs import HELLO_ATTR, HELLO_DATA, POOL_SIZE, STATFS

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def toy(fuse_server):
    return fuse_server()


def open_dev(toy):
    return os.open(toy.path("dev"), os.O_RDWR | os.O_CLOEXEC)


def wait_pending(toy, n=1, timeout=5.0):
    """Wait until the toy holds n unanswered deferred requests."""
    fd = open_dev(toy)
    try:
        deadline = time.monotonic() + timeout
        while K.stats(fd)["pending"] < n:
            assert time.monotonic() < deadline, "request never reached the server"
            time.sleep(0.01)
    finally:
        os.close(fd)


# A caller that blocks in a deferred ioctl and reports how it came back.
BLOCKED_CALLER = r"""
import errno, os, signal, sys, time
from tests.fuse import ioctls as K
signal.signal(signal.SIGUSR1, lambda *a: None)
fd = os.open(sys.argv[1], os.O_RDWR)
print("blocking", flush=True)
try:
    K.raw_ioctl(fd, int(sys.argv[2]))
    print("returned", flush=True)
except OSError as e:
    print(errno.errorcode[e.errno], flush=True)
    try:
        K.raw_ioctl(fd, K.CLEAR_READABLE)  # a fresh request
        print("again ok", flush=True)
    except OSError as e:
        print("again", errno.errorcode[e.errno], flush=True)
"""


def start_blocked_caller(toy, cmd):
    proc = subprocess.Popen(
        [PYTHON, "-c", BLOCKED_CALLER, toy.path("dev"), str(cmd)],
        cwd=REPO, env=child_env(), stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    assert proc.stdout.readline() == b"blocking\n"
    return proc


def finish(proc, timeout=5.0):
    out, _ = proc.communicate(timeout=timeout)
    return out.decode().split("\n")


def test_read_and_list(toy):
    with open(toy.path("hello"), "rb") as f:
        assert f.read() == HELLO_DATA
    with pytest.raises(FileNotFoundError):
        os.stat(toy.path("missing"))


def test_struct_layouts_seen_by_the_kernel(toy):
    a = HELLO_ATTR

    def check(st):
        assert (st.st_ino, st.st_mode, st.st_nlink) == (a.ino, a.mode, a.nlink)
        assert (st.st_uid, st.st_gid) == (a.uid, a.gid)
        assert (st.st_size, st.st_blocks, st.st_blksize) == (a.size, a.blocks, a.blksize)
        assert (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns) == (
            1_250_000_000_500_000_000, 1_500_000_000_000_000_000, 1_750_000_000_250_000_000)

    fd = os.open(toy.path("hello"), os.O_RDONLY)
    try:
        check(os.stat(toy.path("hello")))  # attr inside entry_out (LOOKUP)
        time.sleep(1.1)  # attr_valid is 1 s
        check(os.fstat(fd))  # attr_out (GETATTR with a file handle)
    finally:
        os.close(fd)
    # dirents
    entries = {e.name: (e.inode(), e.is_dir(follow_symlinks=False), e.is_file(follow_symlinks=False))
               for e in os.scandir(toy.mountpoint)}
    assert entries == {"hello": (2, False, True), "dev": (3, False, True), "pool": (1000, False, True)}
    # kstatfs
    v = os.statvfs(toy.mountpoint)
    s = STATFS
    assert (v.f_bsize, v.f_frsize, v.f_blocks, v.f_bfree, v.f_bavail) == (s.bsize, s.frsize, s.blocks,
                                                                          s.bfree, s.bavail)
    assert (v.f_files, v.f_ffree, v.f_namemax) == (s.files, s.ffree, s.namelen)


def test_ioctl_echo(toy):
    fd = open_dev(toy)
    try:
        for i in range(200):
            data = os.urandom(64)
            assert K.echo(fd, data) == data
    finally:
        os.close(fd)


def test_ioctl_caller_memory(toy):
    fd = open_dev(toy)
    try:
        out = bytearray(48)
        payload = b"read from the caller, written back" + bytes(14)
        result, echoed = K.echo_mem(fd, payload, out)
        assert echoed[16:] == payload
        assert result == zlib.crc32(echoed) & 0x7FFFFFFF  # the server saw our bytes
        assert out == payload  # write_memory reached the out buffer
        # A bad out pointer is the server's EFAULT, and the server goes on.
        bad = bytearray(K.ECHO_MEM_HDR.pack(16, 8) + bytes(48))
        with pytest.raises(OSError) as e:
            K.raw_ioctl(fd, K.ECHO_MEM, K.address(bad))
        assert e.value.errno == errno.EFAULT
        assert K.echo(fd, b"x" * 64) == b"x" * 64
    finally:
        os.close(fd)


@pytest.mark.parametrize("cmd", [K.DEFER, K.DEFER_CB], ids=["session-eintr", "on_interrupt"])
def test_signal_interrupts_deferred_ioctl(toy, cmd):
    proc = start_blocked_caller(toy, cmd)
    try:
        wait_pending(toy)
        t0 = time.monotonic()
        proc.send_signal(signal.SIGUSR1)
        lines = finish(proc)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
        proc.wait()
    assert lines[0] == "EINTR"
    assert elapsed < 1.0
    fd = open_dev(toy)
    try:
        s = K.stats(fd)
        assert s["pending"] == 0
        assert s["interrupts"] == (1 if cmd == K.DEFER_CB else 0)
    finally:
        os.close(fd)


def test_deferred_reply_from_timer_task(toy):
    fd = open_dev(toy)
    try:
        t0 = time.monotonic()
        assert K.raw_ioctl(fd, K.LATER) == 42
        assert 0.04 < time.monotonic() - t0 < 2.0
    finally:
        os.close(fd)


def test_exception_is_eio_and_server_survives(toy):
    fd = open_dev(toy)
    try:
        for _ in range(3):
            with pytest.raises(OSError) as e:
                K.raw_ioctl(fd, K.RAISE)
            assert e.value.errno == errno.EIO
        assert K.echo(fd, bytes(64)) == bytes(64)
        with pytest.raises(OSError) as e:
            K.raw_ioctl(fd, 0x1234)  # unknown command
        assert e.value.errno == errno.ENOTTY
    finally:
        os.close(fd)
    assert "deliberate failure" in toy.log()  # logged with its traceback
    assert "Traceback" in toy.log()


def test_poll_wakeup(toy):
    fd = open_dev(toy)
    waker = open_dev(toy)
    try:
        p = select.poll()
        p.register(fd, select.POLLIN)
        assert p.poll(0) == []
        result = {}

        def wait():
            t = time.monotonic()
            result["events"] = p.poll(5000)
            result["woke"] = time.monotonic()
            result["waited"] = time.monotonic() - t

        t = threading.Thread(target=wait)
        t.start()
        time.sleep(0.2)  # let the poller block with a kernel handle
        assert "events" not in result
        t_wake = time.monotonic()
        K.raw_ioctl(waker, K.MAKE_READABLE)
        t.join(5)
        assert result["events"] == [(fd, select.POLLIN)]
        assert result["woke"] - t_wake < 1.0
        K.raw_ioctl(waker, K.CLEAR_READABLE)
        assert p.poll(0) == []
    finally:
        os.close(fd)
        os.close(waker)


def test_epoll_wakeup(toy):
    fd = open_dev(toy)
    waker = open_dev(toy)
    ep = select.epoll()
    try:
        ep.register(fd, select.EPOLLIN)
        assert ep.poll(0) == []
        threading.Timer(0.1, K.raw_ioctl, (waker, K.MAKE_READABLE)).start()
        assert ep.poll(5) == [(fd, select.EPOLLIN)]
    finally:
        ep.close()
        os.close(fd)
        os.close(waker)


def drop_caches():
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def test_store_shows_in_mmap(toy):
    fd = os.open(toy.path("pool"), os.O_RDONLY)
    other = os.open(toy.path("pool"), os.O_RDONLY)  # a second open: its own inode
    dev = open_dev(toy)
    try:
        assert os.fstat(fd).st_ino != os.fstat(other).st_ino
        m = mmap.mmap(fd, POOL_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        m2 = mmap.mmap(other, POOL_SIZE, mmap.MAP_SHARED, mmap.PROT_READ)
        reads0 = K.stats(dev)["pool_reads"]
        page = os.urandom(4096)
        K.push(fd, 4096, page)
        assert m[4096:8192] == page  # no syscall: the stored page is mapped
        assert K.stats(dev)["pool_reads"] == reads0  # ... and it took no READ
        K.push(fd, 3 * 4096 + 100, b"partial page")
        assert m[3 * 4096 + 100 : 3 * 4096 + 112] == b"partial page"
        assert m2[4096:8192] == bytes(4096)  # the other open's pool is untouched
        # Dropped pages come back through READ from the server's copy.
        drop_caches()
        assert m[4096:8192] == page
        assert m[3 * 4096 + 100 : 3 * 4096 + 112] == b"partial page"
        assert K.stats(dev)["pool_reads"] > reads0
        m.close()
        m2.close()
    finally:
        os.close(fd)
        os.close(other)
        os.close(dev)


def test_invalidation(toy):
    def read_hello():
        with open(toy.path("hello"), "rb") as f:
            return f.read()

    dev = open_dev(toy)
    try:
        assert read_hello() == HELLO_DATA
        lookups = K.stats(dev)["hello_lookups"]
        fcntl.ioctl(dev, K.SET_HELLO, b"HELLO WORLD\n")
        assert read_hello() == HELLO_DATA  # cached pages and dentry (1 s) still used
        assert K.stats(dev)["hello_lookups"] == lookups
        K.raw_ioctl(dev, K.INVAL_HELLO)  # returns after both invalidations
        assert read_hello() == b"HELLO WORLD\n"
        assert K.stats(dev)["hello_lookups"] == lookups + 1
    finally:
        os.close(dev)


def test_forget_frees_per_open_inodes(toy):
    dev = open_dev(toy)
    fds = []
    try:
        before = K.stats(dev)
        fds = [os.open(toy.path("pool"), os.O_RDONLY) for _ in range(50)]
        assert len({os.fstat(fd).st_ino for fd in fds}) == 50  # one inode per open
        assert K.stats(dev)["pools"] >= before["pools"] + 50
        for fd in fds:
            os.close(fd)
        fds = []
        # Their dentries were replaced at each LOOKUP: the last close of each
        # inode makes the kernel FORGET it.
        deadline = time.monotonic() + 5
        while K.stats(dev)["pools"] > before["pools"] + 1:
            assert time.monotonic() < deadline, K.stats(dev)
            time.sleep(0.05)
        assert K.stats(dev)["forgotten"] >= before["forgotten"] + 49
    finally:
        for fd in fds:
            os.close(fd)
        os.close(dev)


def test_unimplemented_operations_fail_fast(toy):
    hello = toy.path("hello")
    t0 = time.monotonic()
    for _ in range(2):  # the second round hits the kernel's memory of ENOSYS
        with pytest.raises(OSError) as e:
            os.getxattr(hello, "user.test")
        assert e.value.errno in (errno.ENOTSUP, errno.ENODATA)
        with pytest.raises(OSError) as e:
            os.listxattr(hello)
        assert e.value.errno == errno.ENOTSUP
        with pytest.raises(OSError) as e:
            os.mkdir(toy.path("newdir"))
        assert e.value.errno == errno.ENOSYS
        with pytest.raises(OSError) as e:
            os.symlink("x", toy.path("link"))
        assert e.value.errno == errno.ENOSYS
        with pytest.raises(OSError) as e:
            os.truncate(hello, 0)  # SETATTR
        assert e.value.errno == errno.ENOSYS
        fd = os.open(hello, os.O_WRONLY)  # root passes default_permissions
        try:
            with pytest.raises(OSError) as e:
                os.write(fd, b"x")
            assert e.value.errno == errno.ENOSYS
        finally:
            os.close(fd)
    assert time.monotonic() - t0 < 5.0
    with open(hello, "rb") as f:  # still serving
        assert f.read() == HELLO_DATA


def test_sigterm_answers_pending_requests(fuse_server):
    toy = fuse_server()
    proc = start_blocked_caller(toy, K.DEFER)
    try:
        wait_pending(toy)
        toy.proc.send_signal(signal.SIGTERM)
        lines = finish(proc)
        assert toy.proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()
    assert lines[0] == "ECONNABORTED"  # answered by the session on its way out
    assert not is_mounted(toy.mountpoint)
    assert "Traceback" not in toy.log()


def test_server_death_aborts_blocked_caller(fuse_server):
    toy = fuse_server()
    proc = start_blocked_caller(toy, K.DEFER)
    try:
        wait_pending(toy)
        toy.kill(signal.SIGKILL)
        toy.proc.wait(timeout=5)
        lines = finish(proc)
    finally:
        proc.kill()
        proc.wait()
    assert lines[0] == "ECONNABORTED"
    assert lines[1] == "again ENOTCONN"
    assert is_mounted(toy.mountpoint)  # the mount outlives its server ...
    libc.umount2(toy.mountpoint)  # ... until unmounted (not even lazily)
    assert not is_mounted(toy.mountpoint)
