"""Bus creation and connections (HELLO, pool, UPDATE, BYEBYE) on a real mount."""

from __future__ import annotations

import errno
import os
import stat
import uuid

import pytest

from kdbusfs.abi import constants as C
from kdbusfs.client import ATTACH_ALL, Connection, make_bus

from .conftest import eventually


def test_make_bus_creates_directory_and_endpoint(mount):
    with make_bus(mount.path, "alpha") as bus:
        assert bus.name == f"{os.geteuid()}-alpha"
        assert bus.dir == os.path.join(mount.path, bus.name)
        assert bus.path == os.path.join(bus.dir, "bus")
        assert os.listdir(bus.dir) == ["bus"]
        st = os.stat(bus.path)
        assert stat.S_ISREG(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o600
        assert stat.S_IMODE(os.stat(bus.dir).st_mode) == 0o500
    # the bus lives exactly as long as the creating fd
    gone = os.path.join(mount.path, f"{os.geteuid()}-alpha")
    assert eventually(lambda: os.path.exists(gone), False) is False


@pytest.mark.parametrize("access,dir_mode,ep_mode", [("group", 0o550, 0o660),
                                                     ("world", 0o555, 0o666)])
def test_make_bus_access(mount, access, dir_mode, ep_mode):
    with make_bus(mount.path, "acc", access=access) as bus:
        assert stat.S_IMODE(os.stat(bus.dir).st_mode) == dir_mode
        assert stat.S_IMODE(os.stat(bus.path).st_mode) == ep_mode


def test_make_bus_twice_is_eexist(mount):
    with make_bus(mount.path, "dup"):
        with pytest.raises(OSError) as e:
            make_bus(mount.path, "dup")
        assert e.value.errno == errno.EEXIST


def test_make_bus_bad_bloom_is_einval(mount):
    with pytest.raises(OSError) as e:
        make_bus(mount.path, "bloom", bloom_size=12)
    assert e.value.errno == errno.EINVAL


def test_hello(bus):
    with Connection.open(bus.path) as a, Connection.open(bus.dir) as b:
        # one id counter per domain: bus 1, then its connections
        assert (a.id, b.id) == (2, 3)
        assert a.id128 == b.id128 and len(a.id128) == 16
        assert a.bus_uuid.version == 4 and isinstance(a.bus_uuid, uuid.UUID)
        assert a.bus_flags == C.KDBUS_MAKE_ACCESS_WORLD
        assert (a.bloom_size, a.bloom_n_hash) == (64, 1)
        assert a.pool_size == 16 * 1024 * 1024
        assert a.fileno() >= 0 and not a.closed
        assert "Connection 2" in repr(a)
    assert a.closed
    with pytest.raises(ValueError):
        a.fileno()


def test_hello_custom_bloom(mount):
    with make_bus(mount.path, "bl", bloom_size=128, n_hash=3) as bus:
        with bus.connect(pool_size=1 << 20) as c:
            assert (c.bloom_size, c.bloom_n_hash, c.pool_size) == (128, 3, 1 << 20)


def test_hello_bad_pool_size(bus):
    with pytest.raises(OSError) as e:
        Connection.open(bus.path, pool_size=4097)
    assert e.value.errno == errno.EINVAL


def test_bus_creator_info(mount):
    with make_bus(mount.path, "creator", access="group", attach_send=ATTACH_ALL) as bus:
        with bus.connect() as c:
            info = c.bus_creator_info()
            assert info.id == 1
            assert info.name == bus.name
            assert info.flags == C.KDBUS_MAKE_ACCESS_GROUP
            assert info.creds is not None and info.creds.euid == os.geteuid()
            assert info.pids is not None and info.pids.pid == os.getpid()
            bare = c.bus_creator_info(attach=0)
            assert bare.name == bus.name and bare.creds is None


def test_conn_info_metadata_and_description(connect):
    a = connect(attach_send=ATTACH_ALL, description="conn-a")
    b = connect()
    info = b.conn_info(a.id)
    assert (info.id, info.flags) == (a.id, 0)
    assert info.description == "conn-a"
    assert info.creds.uid == os.getuid()
    assert info.pids.pid == os.getpid()
    assert info.timestamp is None  # CONN_INFO never carries one
    # what the target does not allow is not revealed
    info_b = a.conn_info(b.id)
    assert info_b.creds is None and info_b.description is None
    with pytest.raises(OSError) as e:
        a.conn_info(999)
    assert e.value.errno == errno.ENXIO


def test_conn_info_accept_fd_flag(connect):
    a = connect(accept_fd=True)
    b = connect()
    assert b.conn_info(a.id, attach=0).flags == C.KDBUS_HELLO_ACCEPT_FD


def test_update_attach_flags(connect):
    a = connect()
    b = connect()
    b.send(a.id, b"x")
    a.wait(5)
    assert a.recv().timestamp is None
    a.update(attach_recv=C.KDBUS_ATTACH_TIMESTAMP)
    assert a.attach_flags_recv == C.KDBUS_ATTACH_TIMESTAMP
    b.send(a.id, b"y")
    a.wait(5)
    m = a.recv()
    assert m.timestamp is not None and m.timestamp.seqnum > 0
    with pytest.raises(OSError) as e:
        a.update(attach_recv=1 << 40)
    assert e.value.errno == errno.EINVAL


def test_byebye(connect):
    a = connect()
    b = connect()
    b.send(a.id, b"pending")
    with pytest.raises(OSError) as e:
        a.byebye()
    assert e.value.errno == errno.EBUSY
    assert a.drop()
    a.byebye()
    with pytest.raises(OSError) as e:
        a.recv()
    assert e.value.errno == errno.ECONNRESET
    with pytest.raises(OSError) as e:
        b.send(a.id, b"gone")
    assert e.value.errno == errno.ENXIO


def test_closing_bus_disconnects(mount):
    bus = make_bus(mount.path, "closing")
    c = bus.connect()
    try:
        bus.close()
        assert bus.closed
        assert c.wait(5)  # POLLHUP
        with pytest.raises(OSError) as e:
            c.recv()
        assert e.value.errno == errno.ECONNRESET
    finally:
        c.close()
