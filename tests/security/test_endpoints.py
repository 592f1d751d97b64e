"""Custom endpoints (ABI §6.3, §6.16): named <uid>-<name> or ep.<name>,
deny by default for everybody, SEE filters LIST, CONN_INFO and name
notifications, no monitors, gone with their creator's fd."""

from __future__ import annotations

import errno
import os
import stat

import pytest

from kdbusfs.abi import constants as K
from kdbusfs.abi.items import item_policy_access, item_string
from kdbusfs.client import Connection, make_bus
from tests.integration.rawabi import cmd, ioctl, name_item

WORLD, USER = K.KDBUS_POLICY_ACCESS_WORLD, K.KDBUS_POLICY_ACCESS_USER
SEE, TALK, OWN = K.KDBUS_POLICY_SEE, K.KDBUS_POLICY_TALK, K.KDBUS_POLICY_OWN


def endpoint_make(bus_path, name, flags=K.KDBUS_MAKE_ACCESS_WORLD):
    fd = os.open(bus_path, os.O_RDWR)
    rc = ioctl(fd, K.KDBUS_CMD_ENDPOINT_MAKE,
               cmd(24, name_item(K.KDBUS_ITEM_MAKE_NAME, name), flags=flags))
    if rc:
        os.close(fd)
        raise OSError(rc, os.strerror(rc))
    return fd


def endpoint_update(fd, *entries):
    """entries: (name, [(type, access, id), ...])"""
    items = b"".join(item_string(K.KDBUS_ITEM_NAME, n)
                     + b"".join(item_policy_access(*a) for a in acc) for n, acc in entries)
    return ioctl(fd, K.KDBUS_CMD_ENDPOINT_UPDATE, cmd(24, items))


@pytest.fixture
def bus(mount):
    b = make_bus(mount.path, "eps", access="world")
    yield b
    b.close()


def test_names_modes_and_who_may_make_them(bus, agent):
    a = endpoint_make(bus.path, "0-app")
    b = endpoint_make(bus.path, "ep.web", flags=0)
    try:
        assert sorted(os.listdir(bus.dir)) == ["0-app", "bus", "ep.web"]
        st = os.stat(os.path.join(bus.dir, "0-app"))
        assert stat.S_IMODE(st.st_mode) == 0o666 and st.st_uid == 0
        assert stat.S_IMODE(os.stat(os.path.join(bus.dir, "ep.web")).st_mode) == 0o600
        with pytest.raises(OSError) as e:
            endpoint_make(bus.path, "0-app")
        assert e.value.errno == errno.EEXIST
        for bad in ("1000-app", "app", "bus"):
            with pytest.raises(OSError) as e:
                endpoint_make(bus.path, bad)
            assert e.value.errno == errno.EINVAL, bad
        # not the bus owner: EPERM, whatever the name; on a custom endpoint: EPERM
        u = agent(uid=1000)
        mk = ("f = os.open(p, os.O_RDWR)\n"
              "_ = ioctl(f, K.KDBUS_CMD_ENDPOINT_MAKE, cmd(24, name_item("
              "K.KDBUS_ITEM_MAKE_NAME, n)))")
        assert u.run(mk, p=bus.path, n="1000-mine") == errno.EPERM
        assert u.run(mk, p=bus.path, n="ep.mine") == errno.EPERM
        assert u.run(mk, p=os.path.join(bus.dir, "0-app"), n="ep.x") == errno.EPERM
        # open() checks the mode: 0600 root's ep.web is closed to uid 1000
        assert u.errno_of("os.open(p, os.O_RDWR)",
                          p=os.path.join(bus.dir, "ep.web")) == errno.EACCES
    finally:
        os.close(a)
        os.close(b)


def test_deny_by_default_even_for_root_and_the_same_uid(bus):
    ep = endpoint_make(bus.path, "ep.box")
    box = os.path.join(bus.dir, "ep.box")
    svc = Connection.open(bus.path)
    svc.acquire_name("org.example.Open")
    svc.acquire_name("org.example.Hidden")
    nameless = Connection.open(bus.path)
    boxed = Connection.open(box)
    try:
        def err(fn, *a):
            try:
                fn(*a)
            except OSError as e:
                return e.errno
            return 0
        assert err(boxed.send, svc.id, b"x") == errno.EPERM
        assert err(boxed.send, "org.example.Open", b"x") == errno.EPERM
        assert err(boxed.acquire_name, "org.example.Boxed") == errno.EPERM
        assert endpoint_update(ep, ("org.example.Open", [(WORLD, TALK, 0)]),
                               ("org.example.Boxed", [(USER, OWN, 0)])) == 0
        assert err(boxed.send, "org.example.Open", b"x") == 0
        assert err(boxed.send, svc.id, b"y") == 0          # via its other name
        assert err(boxed.send, nameless.id, b"z") == errno.EPERM   # no name, no way
        # OWN needs the endpoint's grant and then the bus policy (root: owner? no)
        assert err(boxed.acquire_name, "org.example.Boxed") == errno.EPERM
        # replies need no policy, signals need the endpoint's TALK
        assert [m.payload for m in iter(lambda: svc.recv_wait(1), None)] == [b"x", b"y"]
        # a bad update keeps the old policy
        assert endpoint_update(ep, ("org.example.Open", [(7, TALK, 0)])) == errno.EINVAL
        assert err(boxed.send, "org.example.Open", b"again") == 0
        # no monitors, no special connections: nobody is owner here
        with pytest.raises(OSError) as e:
            Connection.open(box, monitor=True)
        assert e.value.errno == errno.EOPNOTSUPP
        with pytest.raises(OSError) as e:
            Connection.open(box, policy_holder="org.example.Mine")
        assert e.value.errno == errno.EPERM
    finally:
        for c in (svc, nameless, boxed):
            c.close()
        os.close(ep)


def test_see_filters_list_conn_info_and_name_notifications(bus):
    ep = endpoint_make(bus.path, "ep.see")
    box = os.path.join(bus.dir, "ep.see")
    assert endpoint_update(ep, ("org.example.Seen", [(WORLD, SEE, 0)]),
                           ("org.example.wild.*", [(WORLD, SEE, 0)])) == 0
    watcher = Connection.open(box)
    watcher.add_match(1)            # no rules: every signal and notification
    svc = Connection.open(bus.path)
    try:
        for n in ("org.example.Seen", "org.example.Unseen", "org.example.wild.Card"):
            svc.acquire_name(n)
        names = {e_name for e in watcher.list(K.KDBUS_LIST_NAMES) for e_name in
                 [n.name for n in e.names]}
        assert names == {"org.example.Seen", "org.example.wild.Card"}
        assert watcher.conn_info("org.example.Seen").id == svc.id
        with pytest.raises(OSError) as e:
            watcher.conn_info("org.example.Unseen")
        assert e.value.errno == errno.ESRCH
        seen = []
        while (m := watcher.recv_wait(1)) is not None:
            if m.notification is not None and m.kind.startswith("name"):
                seen.append(m.notification.name)
        assert sorted(seen) == ["org.example.Seen", "org.example.wild.Card"]
        # ID_* are never filtered
        other = Connection.open(bus.path)
        kinds = [m.kind for m in iter(lambda: watcher.recv_wait(1), None)]
        assert "id_add" in kinds
        other.close()
        # without SEE a connection is not found by id either
        hidden = Connection.open(bus.path)
        hidden.acquire_name("org.example.Unseen2")
        with pytest.raises(OSError) as e:
            watcher.conn_info(hidden.id)
        assert e.value.errno == errno.ENXIO
        hidden.close()
    finally:
        watcher.close()
        svc.close()
        os.close(ep)


def test_endpoint_goes_with_its_creators_fd(bus, agent):
    ep = endpoint_make(bus.path, "ep.tmp")
    box = os.path.join(bus.dir, "ep.tmp")
    boxed = Connection.open(box)
    plain = Connection.open(bus.path)
    os.close(ep)
    deadline = 50
    while os.path.exists(box) and deadline:
        import time
        time.sleep(0.05)
        deadline -= 1
    assert not os.path.exists(box)
    with pytest.raises(OSError) as e:
        boxed.recv()
    assert e.value.errno == errno.ECONNRESET
    plain.send(plain.id, b"still here")
    assert plain.recv_wait(5).payload == b"still here"
    boxed.close()
    plain.close()


def test_custom_endpoint_connections_are_one_accounting_user(bus, agent):
    """uid 1000 at its connection limit on `bus` can still connect through a
    custom endpoint, whose connections are counted apart."""
    ep = endpoint_make(bus.path, "ep.count")
    u = agent(uid=1000)
    try:
        got = u.run(
            "import resource\n"
            "resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))\n"
            "fds = []\n"
            "rc = 0\n"
            "while rc == 0 and len(fds) < 2000:\n"
            "    f = os.open(p, os.O_RDWR)\n"
            "    rc = ioctl(f, K.KDBUS_CMD_HELLO, cmd(96, fields={56: 4096}))\n"
            "    fds.append(f)\n"
            "n = len(fds) - 1\n"
            "g = os.open(box, os.O_RDWR)\n"
            "rc2 = ioctl(g, K.KDBUS_CMD_HELLO, cmd(96, fields={56: 4096}))\n"
            "for f in fds: os.close(f)\n"
            "_ = [n, rc, rc2]", p=bus.path, box=os.path.join(bus.dir, "ep.count"),
            timeout=120)
        assert got == [1024, errno.EMFILE, 0]
    finally:
        os.close(ep)
