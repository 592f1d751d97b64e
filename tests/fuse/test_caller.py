"""kdbusfs.fuse.caller against real processes (no FUSE needed)."""

import ctypes
import errno
import json
import os
import subprocess

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdbusfs.fuse import caller

from .conftest import PYTHON, run_client

# A child that exposes a buffer, a memfd, an unmapped page and a second
# thread, then waits for a line on stdin.
CHILD = r"""
import ctypes, json, mmap, os, sys, threading
buf = ctypes.create_string_buffer(b"child memory " * 20, 260)
m = mmap.mmap(-1, 8192)
base = ctypes.addressof(ctypes.c_char.from_buffer(m))
libc = ctypes.CDLL(None)
libc.munmap(ctypes.c_void_p(base + 4096), ctypes.c_size_t(4096))  # second page: a hole
mfd = os.memfd_create("caller-test")
os.write(mfd, b"memfd contents")
ready = threading.Event()
tid = []
def worker():
    tid.append(threading.get_native_id()); ready.set(); sys.stdin.readline()
t = threading.Thread(target=worker); t.start(); ready.wait()
print(json.dumps({"pid": os.getpid(), "tid": tid[0], "buf": ctypes.addressof(buf),
                  "page_end": base + 4096, "memfd": mfd}), flush=True)
t.join()
print(buf.raw[:16].hex(), flush=True)
"""


@pytest.fixture
def child():
    proc = subprocess.Popen([PYTHON, "-c", CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    info = json.loads(proc.stdout.readline())
    info["proc"] = proc
    yield info
    if proc.poll() is None:
        proc.kill()
    proc.wait()
    proc.stdin.close()
    proc.stdout.close()


@pytest.mark.timeout(30)
def test_read_write_other_process(child):
    pid, addr = child["pid"], child["buf"]
    assert caller.read_memory(pid, addr, 13) == b"child memory "
    out = bytearray(26)
    caller.read_into(pid, addr, out)
    assert out == b"child memory child memory "
    caller.write_memory(pid, addr, b"written by server")
    assert caller.read_memory(pid, addr, 17) == b"written by server"
    # A non-main thread id reaches the same memory.
    assert caller.read_memory(child["tid"], addr, 7) == b"written"
    child["proc"].stdin.write(b"\n")
    child["proc"].stdin.flush()
    assert child["proc"].stdout.readline().strip() == b"written by server"[:16].hex().encode()


@pytest.mark.timeout(30)
def test_efault(child):
    pid, end = child["pid"], child["page_end"]
    with pytest.raises(OSError) as e:
        caller.read_memory(pid, 16, 8)
    assert e.value.errno == errno.EFAULT
    # Crossing into the hole is a short transfer: EFAULT, not a partial result.
    with pytest.raises(OSError) as e:
        caller.read_memory(pid, end - 8, 16)
    assert e.value.errno == errno.EFAULT
    assert caller.read_memory(pid, end - 8, 8) == bytes(8)
    with pytest.raises(OSError) as e:
        caller.write_memory(pid, end - 4, b"12345678")
    assert e.value.errno == errno.EFAULT
    with pytest.raises(OSError) as e:
        caller.read_into(pid, end, bytearray(4))
    assert e.value.errno == errno.EFAULT


@pytest.mark.timeout(30)
def test_esrch():
    proc = subprocess.Popen([PYTHON, "-c", "pass"])
    proc.wait()
    with pytest.raises(OSError) as e:
        caller.read_memory(proc.pid, 4096, 8)
    assert e.value.errno == errno.ESRCH
    with pytest.raises(OSError) as e:
        caller.take_fd(0, 0)
    assert e.value.errno == errno.ESRCH


@pytest.mark.timeout(30)
def test_take_fd(child):
    for tid in (child["pid"], child["tid"]):  # leader, then a thread (PIDFD_THREAD)
        fd = caller.take_fd(tid, child["memfd"])
        try:
            assert os.pread(fd, 64, 0) == b"memfd contents"
            assert not os.get_inheritable(fd)
        finally:
            os.close(fd)
    with pytest.raises(OSError) as e:
        caller.take_fd(child["pid"], 999)
    assert e.value.errno == errno.EBADF


@pytest.mark.timeout(30)
def test_eperm_without_ptrace_access(child):
    code = (
        "import errno\nfrom kdbusfs.fuse import caller\n"
        f"try:\n    caller.read_memory({child['pid']}, {child['buf']}, 8)\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
        f"try:\n    caller.take_fd({child['pid']}, {child['memfd']})\n"
        "except OSError as e:\n    print(errno.errorcode[e.errno])\n"
    )
    prefix = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]
    out = run_client(code, prefix=prefix).stdout.decode().split()
    assert out == ["EPERM", "EPERM"]


_buffer = (ctypes.c_char * 65536)()
_base = ctypes.addressof(_buffer)


@settings(max_examples=200, deadline=None)
@given(offset=st.integers(0, 60000), data=st.binary(min_size=0, max_size=5536))
def test_round_trip_self(offset, data):
    pid = os.getpid()
    caller.write_memory(pid, _base + offset, data)
    assert caller.read_memory(pid, _base + offset, len(data)) == data
    assert _buffer.raw[offset : offset + len(data)] == data


def test_large_read_self():
    src = bytearray(os.urandom(256 * 1024))  # beyond the scratch buffer
    addr = ctypes.addressof((ctypes.c_char * len(src)).from_buffer(src))
    assert caller.read_memory(os.getpid(), addr, len(src)) == src
