"""Per-user limits between real uids (ABI §1.4, §6.7): buses, names,
pending replies, matches, a receiver's pool shares; and the server's
memory: pool bytes per user (a kdbusfs limit, KDBUSFS_USER_POOL_BYTES)."""

from __future__ import annotations

import errno
import os

import pytest

from kdbusfs.abi import constants as K
from kdbusfs.client import Connection, make_bus
from tests.integration.conftest import start_mount

WORLD, TALK = K.KDBUS_POLICY_ACCESS_WORLD, K.KDBUS_POLICY_TALK


def test_buses_per_user(mount, agent):
    a = agent(uid=1000)
    got = a.run("from kdbusfs.client import make_bus\n"
                "buses = []\n"
                "try:\n"
                "    for i in range(20):\n"
                "        buses.append(make_bus(mp, f'b{i}'))\n"
                "except OSError as e:\n"
                "    err = e.errno\n"
                "n = len(buses)\n"
                "buses.pop().close()\n"
                "buses.append(make_bus(mp, 'again'))\n"
                "_ = [n, err]", mp=mount.path)
    assert got == [16, errno.EMFILE]
    b = agent(uid=1001)
    assert b.run("from kdbusfs.client import make_bus\n"
                 "x = make_bus(mp, 'mine'); _ = x.name", mp=mount.path) == "1001-mine"


def test_names_pending_replies_and_matches_per_connection(mount):
    bus = make_bus(mount.path, "lim", access="world")
    c = Connection.open(bus.path)
    peer = Connection.open(bus.path)
    try:
        for i in range(256):
            c.acquire_name(f"org.example.N{i}")
        with pytest.raises(OSError) as e:
            c.acquire_name("org.example.TooMany")
        assert e.value.errno == errno.E2BIG
        for i in range(128):
            c.send(peer.id, b"?", expect_reply=True, timeout=60)
        with pytest.raises(OSError) as e:
            c.send(peer.id, b"?", expect_reply=True, timeout=60)
        assert e.value.errno == errno.EMLINK
        for i in range(256):
            c.add_match(i + 1)
        with pytest.raises(OSError) as e:
            c.add_match(999)
        assert e.value.errno == errno.EMFILE
    finally:
        c.close()
        peer.close()
        bus.close()


def test_one_user_cannot_fill_another_users_pool(mount, agent):
    bus = make_bus(mount.path, "share", access="world")
    holder = Connection.open(bus.path, policy_holder="org.example.Rx", policy=[
        (WORLD, TALK, 0), (K.KDBUS_POLICY_ACCESS_USER, K.KDBUS_POLICY_OWN, 1000)])
    rx = agent(uid=1000)
    rid = rx.run("from kdbusfs.client import Connection\n"
                 "c = Connection.open(p, pool_size=256 * 1024)\n"
                 "c.acquire_name('org.example.Rx'); _ = c.id", p=bus.path)
    flood = ("from kdbusfs.client import Connection\n"
             "c = Connection.open(p)\n"
             "n, err = 0, 0\n"
             "try:\n"
             "    while n < 10000:\n"
             "        c.send(rid, b'x' * 1000); n += 1\n"
             "except OSError as e:\n"
             "    err = e.errno\n"
             "_ = [n, err]")
    try:
        a, b = agent(uid=1001), agent(uid=1002)
        n1, e1 = a.run(flood, p=bus.path, rid=rid)
        assert e1 == errno.ENOBUFS and 10 < n1 < 100
        # the pool's owner half and the other users' shares are untouched
        n2, e2 = b.run(flood, p=bus.path, rid=rid)
        assert e2 == errno.ENOBUFS and 5 < n2 <= n1
        assert rx.run("c.send(c.id, b'to myself'); _ = 1") == 1
        # once the receiver reads, the flooder may send as much again
        rx.run("while c.recv() is not None: pass")
        n3, e3 = a.run(flood, p=bus.path, rid=rid)
        assert (n3, e3) == (n1, errno.ENOBUFS)
    finally:
        holder.close()
        bus.close()


def test_pool_memory_per_user_is_capped(mount_base, agent, monkeypatch):
    """Pools are the server's memory: one uid's pools together may not pass
    KDBUSFS_USER_POOL_BYTES; closing a connection gives its share back."""
    monkeypatch.setenv("KDBUSFS_USER_POOL_BYTES", str(1 << 20))
    m = start_mount(os.path.join(mount_base, "capped"))
    try:
        bus = make_bus(m.path, "mem", access="world")
        conns = [Connection.open(bus.path, pool_size=256 * 1024) for _ in range(4)]
        with pytest.raises(OSError) as e:
            Connection.open(bus.path, pool_size=4096)
        assert e.value.errno == errno.ENOMEM
        # BYEBYE is not enough: the dead connection's mapping still counts
        conns[0].byebye()
        with pytest.raises(OSError) as e:
            Connection.open(bus.path, pool_size=4096)
        assert e.value.errno == errno.ENOMEM
        conns.pop(0).close()
        import time
        for _ in range(100):        # RELEASE reaches the server after close()
            try:
                conns.append(Connection.open(bus.path, pool_size=4096))
                break
            except OSError:
                time.sleep(0.02)
        assert len(conns) == 4
        # another uid has its own budget
        other = agent(uid=1000)
        assert other.run("from kdbusfs.client import Connection\n"
                         "c = Connection.open(p, pool_size=1 << 20); _ = c.pool_size",
                         p=bus.path) == 1 << 20
        other.close()
        for c in conns:
            c.close()
        bus.close()
    finally:
        m.stop()
