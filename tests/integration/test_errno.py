"""Malformed commands on a real mount get exactly the ABI's errno, and the
server keeps serving everyone else (the fixture also fails on any
traceback in the server log)."""

import errno
import os
import struct

import pytest

from kdbusfs.abi import constants as K
from kdbusfs.abi.items import encode_item

from .rawabi import (Buf, Conn, cmd, ioctl, make_bus, name_item, readonly_address,
                     unmapped_address)


@pytest.fixture
def bus(mount):
    fd, path = make_bus(mount.path)
    yield path
    os.close(fd)


@pytest.fixture
def conn(bus):
    c = Conn(bus)
    yield c
    c.close()


def test_unknown_ioctl_is_enotty(conn):
    assert ioctl(conn.fd, 0x40189599, cmd(24)) == errno.ENOTTY
    assert ioctl(conn.fd, 0x5401, 0) == errno.ENOTTY          # TCGETS


def test_argument_pointer_checks(conn):
    good = cmd(64)
    assert ioctl(conn.fd, K.KDBUS_CMD_RECV, good.addr + 4) == errno.EFAULT
    assert ioctl(conn.fd, K.KDBUS_CMD_RECV, unmapped_address()) == errno.EFAULT
    assert ioctl(conn.fd, K.KDBUS_CMD_FREE, unmapped_address()) == errno.EFAULT
    # RECV writes its result back: a read-only argument cannot take it
    ro = readonly_address(struct.pack("<Q", 64) + bytes(56))
    assert ioctl(conn.fd, K.KDBUS_CMD_RECV, ro) in (errno.EFAULT, errno.EAGAIN)


def test_size_bounds(conn):
    assert ioctl(conn.fd, K.KDBUS_CMD_FREE, cmd(32, size=16)) == errno.EINVAL
    big = cmd(32, size=40000)
    assert ioctl(conn.fd, K.KDBUS_CMD_FREE, big) == errno.EMSGSIZE


def test_unknown_flags(conn):
    assert ioctl(conn.fd, K.KDBUS_CMD_FREE, cmd(32, flags=1)) == errno.EINVAL
    assert ioctl(conn.fd, K.KDBUS_CMD_RECV, cmd(64, flags=1 << 10)) == errno.EINVAL


def test_broken_item_lists(conn):
    name = name_item(K.KDBUS_ITEM_NAME, "org.example.A")
    # an item smaller than its header
    bad = struct.pack("<QQ", 8, K.KDBUS_ITEM_NAME) + bytes(8)
    assert ioctl(conn.fd, K.KDBUS_CMD_NAME_ACQUIRE, cmd(24, bad)) == errno.EINVAL
    # an item running past the end of the command
    bad = struct.pack("<QQ", 200, K.KDBUS_ITEM_NAME) + b"org.example.A\0\0\0"
    assert ioctl(conn.fd, K.KDBUS_CMD_NAME_ACQUIRE, cmd(24, bad)) == errno.EINVAL
    # trailing bytes that are not an item
    assert ioctl(conn.fd, K.KDBUS_CMD_NAME_ACQUIRE, cmd(24, name + bytes(8))) == errno.EINVAL
    # a string without its NUL, and an item not allowed for the command
    nonul = encode_item(K.KDBUS_ITEM_NAME, b"org.example.A")
    assert ioctl(conn.fd, K.KDBUS_CMD_NAME_ACQUIRE, cmd(24, nonul)) == errno.EINVAL
    wrong = encode_item(K.KDBUS_ITEM_ID, struct.pack("<Q", 1))
    assert ioctl(conn.fd, K.KDBUS_CMD_NAME_ACQUIRE, cmd(24, name + wrong)) == errno.EINVAL
    # a repeated non-repeatable item, and a missing mandatory one
    assert ioctl(conn.fd, K.KDBUS_CMD_NAME_ACQUIRE, cmd(24, name + name)) == errno.EINVAL
    assert ioctl(conn.fd, K.KDBUS_CMD_NAME_ACQUIRE, cmd(24)) == errno.EINVAL
    # the size field may omit the last item's padding, but nothing else
    odd = name_item(K.KDBUS_ITEM_NAME, "org.example.Ab")
    unpadded = struct.unpack_from("<Q", odd)[0]
    assert ioctl(conn.fd, K.KDBUS_CMD_NAME_ACQUIRE, cmd(24, odd, size=24 + unpadded)) == 0


@pytest.mark.parametrize("name", ["nodot", "org..x", ".org.x", "org.x.", "org.1x", "org.x y",
                                  "a." * 128 + "b"])
def test_invalid_well_known_names(conn, name):
    it = name_item(K.KDBUS_ITEM_NAME, name)
    assert ioctl(conn.fd, K.KDBUS_CMD_NAME_ACQUIRE, cmd(24, it)) == errno.EINVAL


def test_bus_make_errors(mount):
    fd = os.open(mount.control, os.O_RDWR)
    bloom = encode_item(K.KDBUS_ITEM_BLOOM_PARAMETER, struct.pack("<QQ", 64, 1))
    me = os.geteuid()

    def make(name, b=bloom, flags=0):
        return ioctl(fd, K.KDBUS_CMD_BUS_MAKE, cmd(24, name_item(K.KDBUS_ITEM_MAKE_NAME, name) + b,
                                                   flags=flags))
    assert make(f"{me}-x", b=b"") == errno.EINVAL                      # no bloom item
    assert make(f"{me}-x", b=encode_item(K.KDBUS_ITEM_BLOOM_PARAMETER,
                                         struct.pack("<QQ", 7, 1))) == errno.EINVAL
    assert make(f"{me + 1}-x") == errno.EINVAL                           # wrong uid prefix
    assert make(f"{me}-" + "x" * 70) == errno.ENAMETOOLONG
    assert make(f"{me}-bad/name") == errno.EINVAL
    assert make(f"{me}-x", flags=0x100) == errno.EINVAL
    assert make(f"{me}-x") == 0
    assert make(f"{me}-y") == errno.EBADFD                               # fd is no longer fresh
    fd2 = os.open(mount.control, os.O_RDWR)
    assert ioctl(fd2, K.KDBUS_CMD_BUS_MAKE,
                 cmd(24, name_item(K.KDBUS_ITEM_MAKE_NAME, f"{me}-x") + bloom)) == errno.EEXIST
    os.close(fd2)
    os.close(fd)


def test_fd_kind_rules(mount, bus):
    ctl = os.open(mount.control, os.O_RDWR)
    assert ioctl(ctl, K.KDBUS_CMD_HELLO, cmd(96, fields={56: 4096})) == errno.EBADFD
    assert ioctl(ctl, K.KDBUS_CMD_SEND, cmd(56)) == errno.EBADFD
    ep = os.open(os.path.join(bus, "bus"), os.O_RDWR)
    assert ioctl(ep, K.KDBUS_CMD_BUS_MAKE, cmd(24)) == errno.EBADFD
    assert ioctl(ep, K.KDBUS_CMD_RECV, cmd(64)) == errno.EBADFD        # fresh fd
    assert ioctl(ep, K.KDBUS_CMD_HELLO, cmd(96, fields={56: 1000})) == errno.EINVAL
    assert ioctl(ep, K.KDBUS_CMD_HELLO, cmd(96, fields={56: 4096})) == 0   # still fresh
    assert ioctl(ep, K.KDBUS_CMD_HELLO, cmd(96, fields={56: 4096})) == errno.EBADFD
    assert ioctl(ep, K.KDBUS_CMD_ENDPOINT_UPDATE, cmd(24)) == errno.EBADFD
    os.close(ep)
    os.close(ctl)


def test_return_flags_are_cleared_on_error(conn):
    c = cmd(32, fields={16: 0xDEAD, 24: 12345})
    assert ioctl(conn.fd, K.KDBUS_CMD_FREE, c) == errno.ENXIO
    assert c.u64(16) == 0


def test_negotiate(conn):
    c = cmd(64, flags=K.KDBUS_FLAG_NEGOTIATE)
    assert ioctl(conn.fd, K.KDBUS_CMD_RECV, c) == 0
    assert c.u64(8) == (K.KDBUS_RECV_PEEK | K.KDBUS_RECV_DROP | K.KDBUS_RECV_USE_PRIORITY
                        | K.KDBUSFS_RECV_BLOCK)
    types = struct.pack("<3Q", K.KDBUS_ITEM_NAME, K.KDBUS_ITEM_PAYLOAD_VEC, K.KDBUS_ITEM_NEGOTIATE)
    c = cmd(24, encode_item(K.KDBUS_ITEM_NEGOTIATE, types), flags=K.KDBUS_FLAG_NEGOTIATE)
    assert ioctl(conn.fd, K.KDBUS_CMD_NAME_ACQUIRE, c) == 0
    got = struct.unpack_from("<3Q", c.raw, 24 + 16)
    assert got == (K.KDBUS_ITEM_NAME, 0, K.KDBUS_ITEM_NEGOTIATE)


def test_send_errors(conn, bus):
    other = Conn(bus)
    try:
        assert conn.send(other.id, b"x", payload_type=0)[0] == errno.EINVAL
        assert conn.send(0, b"x")[0] == errno.EDESTADDRREQ
        assert conn.send(K.KDBUS_DST_ID_BROADCAST, b"x")[0] == errno.EBADMSG
        assert conn.send(0, b"x", dst_name="not a name")[0] == errno.EINVAL
        assert conn.send(0, b"x", dst_name="org.nobody.Home")[0] == errno.ESRCH
        assert conn.send(999999, b"x")[0] == errno.ENXIO
        assert conn.send(other.id, b"x", flags=K.KDBUS_MSG_EXPECT_REPLY)[0] == errno.EINVAL
        assert conn.send(other.id, b"x", sync=True)[0] == errno.EINVAL
        vec = encode_item(K.KDBUS_ITEM_PAYLOAD_VEC, struct.pack("<QQ", 16, unmapped_address()))
        assert conn.send(other.id, extra_items=vec)[0] == errno.EFAULT
        huge = encode_item(K.KDBUS_ITEM_PAYLOAD_VEC, struct.pack("<QQ", 3 << 20, 0))
        assert conn.send(other.id, extra_items=huge)[0] == errno.EMSGSIZE
        # a misaligned or unmapped msg pointer
        s = cmd(56, fields={24: unmapped_address()})
        assert ioctl(conn.fd, K.KDBUS_CMD_SEND, s) == errno.EFAULT
        m = Buf(bytes(80))
        s = cmd(56, fields={24: m.addr + 4})
        assert ioctl(conn.fd, K.KDBUS_CMD_SEND, s) == errno.EFAULT
        # nothing was delivered by any of that
        assert other.recv()[0] == errno.EAGAIN
        assert conn.send(other.id, b"fine")[0] == 0
        assert other.recv()[1]["payload"] == b"fine"
    finally:
        other.close()


def test_free_and_recv_errors(conn):
    assert conn.free(12345) == errno.ENXIO
    assert conn.free(conn.pool_size) == 0
    assert conn.recv()[0] == errno.EAGAIN
    assert ioctl(conn.fd, K.KDBUS_CMD_RECV,
                 cmd(64, flags=K.KDBUS_RECV_DROP | K.KDBUS_RECV_USE_PRIORITY)) == errno.EINVAL


def test_dead_connection_is_econnreset(bus):
    c = Conn(bus)
    assert ioctl(c.fd, K.KDBUS_CMD_BYEBYE, cmd(24)) == 0
    assert ioctl(c.fd, K.KDBUS_CMD_RECV, cmd(64)) == errno.ECONNRESET
    assert ioctl(c.fd, K.KDBUS_CMD_BYEBYE, cmd(24)) == errno.ECONNRESET
    c.close()
