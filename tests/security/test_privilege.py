"""Privilege is fixed when a file is opened (the FUSE OPEN's caller) and
never re-read from whoever issues a later ioctl (the 2014 review)."""

from __future__ import annotations

import errno
import os

import pytest

from kdbusfs.abi import constants as K
from kdbusfs.client import Connection, make_bus
from tests.integration.rawabi import Conn, cmd, ioctl, name_item

from .agents import wrap_uid

HOLDER = K.KDBUS_HELLO_POLICY_HOLDER


def hello(fd, flags=0, items=b""):
    return ioctl(fd, K.KDBUS_CMD_HELLO, cmd(96, items, flags=flags, fields={56: 4096}))


@pytest.fixture
def bus(mount):
    b = make_bus(mount.path, "priv", access="world")        # root's bus
    yield b
    b.close()


def test_an_unprivileged_fd_handed_to_root_gains_nothing(bus, mount, agent):
    """uid 1000 opens the endpoint and control files and hands them to root
    over SCM_RIGHTS: root's ioctls on them act as uid 1000."""
    svc = Connection.open(bus.path)
    svc.acquire_name("org.example.RootOnly")
    a = agent(uid=1000)
    a.run("send_fd(os.open(p, os.O_RDWR)); send_fd(os.open(p, os.O_RDWR));"
          "send_fd(os.open(ctl, os.O_RDWR))", p=bus.path, ctl=mount.control)
    ep1, ep2, ctl = a.recv_fd(), a.recv_fd(), a.recv_fd()
    try:
        # owner-only things: EPERM although root calls
        name = name_item(K.KDBUS_ITEM_NAME, "org.example.Held")
        assert hello(ep1, HOLDER, name) == errno.EPERM
        mk = cmd(24, name_item(K.KDBUS_ITEM_MAKE_NAME, "0-ep"))
        assert ioctl(ep1, K.KDBUS_CMD_ENDPOINT_MAKE, mk) == errno.EPERM
        # a plain connection is uid 1000's: no TALK to root's service, no OWN
        assert hello(ep2) == 0
        c = Conn.__new__(Conn)
        c.fd, c._keep = ep2, []
        assert c.send(0, b"x", dst_name="org.example.RootOnly")[0] == errno.EPERM
        assert ioctl(ep2, K.KDBUS_CMD_NAME_ACQUIRE,
                     cmd(24, name_item(K.KDBUS_ITEM_NAME, "org.example.Mine"))) == errno.EPERM
        # BUS_MAKE through 1000's control fd: the name must be 1000's
        from kdbusfs.abi.items import encode_item
        import struct
        bloom = encode_item(K.KDBUS_ITEM_BLOOM_PARAMETER, struct.pack("<QQ", 64, 1))
        assert ioctl(ctl, K.KDBUS_CMD_BUS_MAKE,
                     cmd(24, name_item(K.KDBUS_ITEM_MAKE_NAME, "0-stolen") + bloom)) == errno.EINVAL
        assert ioctl(ctl, K.KDBUS_CMD_BUS_MAKE,
                     cmd(24, name_item(K.KDBUS_ITEM_MAKE_NAME, "1000-given") + bloom)) == 0
        assert os.stat(os.path.join(mount.path, "1000-given")).st_uid == 1000
    finally:
        for fd in (ep1, ep2, ctl):
            os.close(fd)
        svc.close()


def test_raising_privilege_after_open_gains_nothing(bus, agent):
    """A setuid-style process opens while its euid is 1000 (saved uid 0),
    then takes euid 0 back: the fd stays unprivileged."""
    a = agent()             # root, switches ids itself
    got = a.run(
        "os.setresuid(1000, 1000, 0)\n"
        "fd = os.open(p, os.O_RDWR)\n"
        "os.setresuid(0, 0, 0)\n"
        "assert os.geteuid() == 0\n"
        "fd2 = os.open(p, os.O_RDWR)\n"
        "item = name_item(K.KDBUS_ITEM_NAME, 'org.example.Held')\n"
        "h = lambda f: ioctl(f, K.KDBUS_CMD_HELLO, cmd(96, item, flags=K.KDBUS_HELLO_POLICY_HOLDER,"
        " fields={56: 4096}))\n"
        "_ = [h(fd), h(fd2)]", p=bus.path)
    assert got == [errno.EPERM, 0]


def test_dropping_privilege_after_open_keeps_the_opener_identity(bus, agent):
    """Opened as root, used after setresuid(1000): still the owner (the fd
    is the capability, as for any file opened before dropping privileges)."""
    a = agent()
    got = a.run(
        "fd = os.open(p, os.O_RDWR)\n"
        "os.setresuid(1000, 1000, 1000)\n"
        "item = name_item(K.KDBUS_ITEM_NAME, 'org.example.Held')\n"
        "rc1 = ioctl(fd, K.KDBUS_CMD_HELLO, cmd(96, item, flags=K.KDBUS_HELLO_POLICY_HOLDER,"
        " fields={56: 4096}))\n"
        "rc2 = ioctl(os.open(p, os.O_RDWR), K.KDBUS_CMD_HELLO,"
        " cmd(96, item, flags=K.KDBUS_HELLO_POLICY_HOLDER, fields={56: 4096}))\n"
        "_ = [rc1, rc2]", p=bus.path)
    assert got == [0, errno.EPERM]


def test_uid_change_between_ioctls_of_one_connection(bus, agent):
    """A connection opened as uid 1000 stays uid 1000's when its process
    becomes root: TALK to root's service is still refused."""
    svc = Connection.open(bus.path)
    svc.acquire_name("org.example.RootSvc")
    a = agent()
    try:
        got = a.run(
            "os.setresuid(1000, 1000, 0)\n"
            "c = Conn(d)\n"
            "os.setresuid(0, 0, 0)\n"
            "rc, _s = c.send(0, b'x', dst_name='org.example.RootSvc')\n"
            "c2 = Conn(d)\n"
            "rc2, _s = c2.send(0, b'y', dst_name='org.example.RootSvc')\n"
            "_ = [rc, rc2]", d=bus.dir)
        assert got == [errno.EPERM, 0]
        assert svc.recv_wait(5).payload == b"y"
    finally:
        svc.close()


def test_privilege_stops_where_the_abi_says(bus, agent):
    """Root's fd of a custom endpoint is nobody's owner: no monitors, no
    policy holders, and the endpoint's (empty) policy binds it."""
    epfd = os.open(bus.path, os.O_RDWR)
    assert ioctl(epfd, K.KDBUS_CMD_ENDPOINT_MAKE,
                 cmd(24, name_item(K.KDBUS_ITEM_MAKE_NAME, "0-box"),
                     flags=K.KDBUS_MAKE_ACCESS_WORLD)) == 0
    box = os.path.join(bus.dir, "0-box")
    svc = Connection.open(bus.path)             # root, same uid
    try:
        a, b, c = (os.open(box, os.O_RDWR) for _ in range(3))
        assert hello(a, K.KDBUS_HELLO_MONITOR) == errno.EOPNOTSUPP
        assert hello(b, HOLDER, name_item(K.KDBUS_ITEM_NAME, "org.example.X")) == errno.EPERM
        conn = Connection.open(box)
        with pytest.raises(OSError) as e:
            conn.send(svc.id, b"x")
        assert e.value.errno == errno.EPERM
        conn.close()
        for fd in (a, b, c):
            os.close(fd)
    finally:
        svc.close()
        os.close(epfd)


def test_root_of_a_user_namespace_is_not_privileged_on_a_host_mount(mount, agent):
    """CAP_IPC_OWNER counts in the domain's user namespace only."""
    owner = agent(uid=1000)
    path = owner.run("fd, p = make_bus(mp, 'owned'); _ = p", mp=mount.path)
    ns_root = agent(prefix=[*wrap_uid(1000), "unshare", "--user", "--map-root-user"],
                    ns_python=True)
    assert ns_root.run("_ = os.getuid()") == 0
    got = ns_root.run(
        "f = os.open(p + '/bus', os.O_RDWR)\n"
        "_ = ioctl(f, K.KDBUS_CMD_HELLO, cmd(96, flags=K.KDBUS_HELLO_MONITOR, fields={56: 4096}))",
        p=path)
    # the opener is uid 1000 in the domain, which owns the bus: owner, not privileged
    assert got == 0
    other = agent(prefix=[*wrap_uid(1001), "unshare", "--user", "--map-root-user"],
                    ns_python=True)
    got = other.run(
        "f = os.open(p + '/bus', os.O_RDWR)\n"
        "_ = ioctl(f, K.KDBUS_CMD_HELLO, cmd(96, flags=K.KDBUS_HELLO_MONITOR, fields={56: 4096}))",
        p=path)
    assert got == errno.EPERM
