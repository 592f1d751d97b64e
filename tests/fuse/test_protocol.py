"""Struct layouts and numbers of kdbusfs.fuse.protocol (the live checks are
the mount tests; these pin sizes and a few values from fuse.h)."""

import pytest

from kdbusfs.fuse import protocol as p


@pytest.mark.parametrize(
    "name,size",
    [
        ("IN_HEADER", 40), ("OUT_HEADER", 16), ("INIT_IN", 64), ("INIT_OUT", 64),
        ("ATTR", 88), ("ENTRY_OUT", 128), ("ATTR_OUT", 104), ("GETATTR_IN", 16),
        ("OPEN_IN", 8), ("OPEN_OUT", 16), ("READ_IN", 40), ("RELEASE_IN", 24),
        ("FLUSH_IN", 24), ("FORGET_IN", 8), ("BATCH_FORGET_IN", 8), ("FORGET_ONE", 16),
        ("INTERRUPT_IN", 8), ("IOCTL_IN", 32), ("IOCTL_OUT", 16), ("POLL_IN", 24),
        ("POLL_OUT", 8), ("KSTATFS", 80), ("DIRENT", 24), ("NOTIFY_POLL_WAKEUP_OUT", 8),
        ("NOTIFY_STORE_OUT", 24), ("NOTIFY_INVAL_INODE_OUT", 24), ("NOTIFY_INVAL_ENTRY_OUT", 16),
        ("NOTIFY_DELETE_OUT", 24), ("NOTIFY_RETRIEVE_OUT", 32), ("BACKING_MAP", 16),
    ],
)
def test_struct_sizes(name, size):
    assert getattr(p, name).size == size


def test_header_round_trip():
    raw = p.IN_HEADER.pack(72, p.IOCTL, 1234, 5, 1000, 1001, 4242, 0, 0)
    assert p.IN_HEADER.unpack(raw) == (72, p.IOCTL, 1234, 5, 1000, 1001, 4242, 0, 0)
    assert raw[:4] == (72).to_bytes(4, "little")  # little-endian, len first
    assert p.OUT_HEADER.pack(16, -2, 7)[4:8] == (-2).to_bytes(4, "little", signed=True)


def test_init_out_field_offsets():
    raw = p.INIT_OUT.pack(7, 45, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11)
    u32 = lambda off: int.from_bytes(raw[off : off + 4], "little")  # noqa: E731
    u16 = lambda off: int.from_bytes(raw[off : off + 2], "little")  # noqa: E731
    assert (u32(0), u32(4), u32(8), u32(12)) == (7, 45, 1, 2)
    assert (u16(16), u16(18), u32(20), u32(24)) == (3, 4, 5, 6)  # max_background.. time_gran
    assert (u16(28), u16(30), u32(32), u32(36), u16(40)) == (7, 8, 9, 10, 11)


def test_flag_values():
    assert p.INIT_EXT == 1 << 30
    assert p.NO_EXPORT_SUPPORT >> 32 == 1 << 6  # flags2 bit 6
    assert p.PASSTHROUGH >> 32 == 1 << 5
    assert p.FOPEN_PASSTHROUGH == 1 << 7
    assert (p.NOTIFY_POLL, p.NOTIFY_STORE, p.NOTIFY_RESEND) == (1, 4, 7)
    assert p.OPCODE_NAMES[p.IOCTL] == "IOCTL" and p.OPCODE_NAMES[p.STATX] == "STATX"


def test_ioctl_numbers():
    assert p.ior(229, 0, 4) == p.DEV_IOC_CLONE
    assert p.iow(229, 1, 16) == p.DEV_IOC_BACKING_OPEN
    assert p.iow(229, 2, 4) == p.DEV_IOC_BACKING_CLOSE
    cmd = p.iowr("K", 1, 64)
    assert p.ioc_size(cmd) == 64 and p.ioc_dir(cmd) == p.IOC_READ | p.IOC_WRITE


def test_dirent_size():
    assert [p.dirent_size(n) for n in (0, 1, 8, 9)] == [24, 32, 32, 40]
