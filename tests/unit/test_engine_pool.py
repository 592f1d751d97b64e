"""The slice allocator: best fit, holds, FREE rules, merging."""

import errno

import pytest

from kdbusfs.abi.errors import KdbusError
from kdbusfs.core.pool import Pool


def test_best_fit_and_merge():
    p = Pool(4096)
    a = p.alloc(100)
    b = p.alloc(1000)
    c = p.alloc(8)
    assert (a.offset, a.size) == (0, 104)
    assert b.offset == 104 and c.offset == 1104
    for s in (a, b, c):
        p.publish(s)
        p.drop_kernel_hold(s)
    p.free(b.offset)
    # the 1000-byte hole is the best fit for 900, not the tail
    d = p.alloc(900)
    assert d.offset == 104
    p.publish(d)
    p.drop_kernel_hold(d)
    for s in (a, c, d):
        p.free(s.offset)
    assert p.used == 0
    assert p.alloc(4096).offset == 0   # everything merged back


def test_exfull():
    p = Pool(4096)
    p.alloc(4000)
    with pytest.raises(KdbusError) as e:
        p.alloc(200)
    assert e.value.errno == errno.EXFULL


def test_free_rules():
    p = Pool(8192)
    s = p.alloc(64)
    # still held by the kernel only: not published, so FREE is ENXIO
    with pytest.raises(KdbusError) as e:
        p.free(s.offset)
    assert e.value.errno == errno.ENXIO
    p.publish(s)
    p.free(s.offset)            # PEEKed and still queued: FREE succeeds
    assert s.offset in p.slices  # the kernel hold keeps it
    with pytest.raises(KdbusError):
        p.free(s.offset)        # double free
    p.drop_kernel_hold(s)
    assert p.used == 0
    p.free(8192)                # offset == pool_size is a no-op
    with pytest.raises(KdbusError):
        p.free(12345)


def test_store_is_sparse_and_readable():
    p = Pool(1 << 30)           # a 1 GiB pool must not cost 1 GiB
    s = p.publish_result(b"abc")
    assert p.read(s.offset, 3) == b"abc"
    p.close()
