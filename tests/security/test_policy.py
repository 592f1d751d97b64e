"""Bus policy between real processes of different uids (ABI §6.16):
USER/GROUP/WORLD entries, OWN > TALK > SEE, policy holders and UPDATE,
wildcards, the implicit rules of the default endpoint, broadcasts."""

from __future__ import annotations

import errno
import os

import pytest

from kdbusfs.abi import constants as K
from kdbusfs.client import Connection

USER, GROUP, WORLD = (K.KDBUS_POLICY_ACCESS_USER, K.KDBUS_POLICY_ACCESS_GROUP,
                      K.KDBUS_POLICY_ACCESS_WORLD)
SEE, TALK, OWN = K.KDBUS_POLICY_SEE, K.KDBUS_POLICY_TALK, K.KDBUS_POLICY_OWN

CLIENT = """
from kdbusfs.client import Connection
c = Connection.open(p)
def talk(dst):
    try:
        c.send(dst, b'hi')
        return 0
    except OSError as e:
        return e.errno
def own(name):
    try:
        c.acquire_name(name)
        return 0
    except OSError as e:
        return e.errno
_ = c.id
"""


@pytest.fixture
def bus(agent, mount):
    """A world-accessible bus of uid 1000, and its owner agent."""
    owner = agent(uid=1000)
    d = owner.run("fd, d = make_bus(mp, 'pol'); _ = d", mp=mount.path)
    return d + "/bus", owner


def client(agent, path, uid, **kw):
    a = agent(uid=uid, **kw)
    a.run(CLIENT, p=path)
    return a


def test_own_implies_talk_implies_see_for_user_group_and_world(bus, agent):
    path, owner = bus
    owner.run("from kdbusfs.client import Connection\n"
              "h = Connection.open(p, policy_holder='org.example.*', policy=pol)",
              p=path, pol=[[USER, OWN, 1001], [GROUP, TALK, 2000], [WORLD, SEE, 0]])
    svc = client(agent, path, 1001)
    assert svc.run("_ = own('org.example.Svc')") == 0            # USER OWN
    grp = client(agent, path, 1002, groups=(2000,))
    nogrp = client(agent, path, 1003)
    world = client(agent, path, 1004)
    assert grp.run("_ = talk('org.example.Svc')") == 0            # GROUP TALK, supplementary
    assert grp.run("_ = own('org.example.Other')") == errno.EPERM  # TALK is not OWN
    assert nogrp.run("_ = talk('org.example.Svc')") == errno.EPERM
    assert world.run("_ = talk('org.example.Svc')") == errno.EPERM  # SEE is not TALK
    # OWN implies TALK: 1001 may talk to another uid's owner of such a name
    root = client(agent, path, None)
    assert root.run("_ = own('org.example.Far')") == 0
    assert svc.run("_ = talk('org.example.Far')") == 0
    assert world.run("_ = talk('org.example.Far')") == errno.EPERM


def test_holder_update_replaces_its_policy_atomically(bus, agent):
    path, owner = bus
    owner.run("from kdbusfs.client import Connection\n"
              "from kdbusfs.abi.items import item_policy_access, item_string\n"
              "h = Connection.open(p, policy_holder='org.example.A', policy=[[3, 1, 0]])\n"
              "def update(items):\n"
              "    b = cmd(24, items)\n"
              "    return ioctl(h.fileno(), K.KDBUS_CMD_UPDATE, b)", p=path)
    svc = client(agent, path, 1000)
    svc.run("c.acquire_name('org.example.A'); c.acquire_name('org.example.B')")
    cl = client(agent, path, 1001)
    assert cl.run("_ = talk('org.example.A')") == 0
    # a bad update (unknown access type) changes nothing
    assert owner.run("_ = update(item_string(K.KDBUS_ITEM_NAME, 'org.example.B')"
                     " + item_policy_access(9, 1, 0))") == errno.EINVAL
    assert cl.run("_ = talk('org.example.A')") == 0
    # two names for one holder: E2BIG, nothing changes
    assert owner.run("_ = update(item_string(K.KDBUS_ITEM_NAME, 'org.example.A')"
                     " + item_string(K.KDBUS_ITEM_NAME, 'org.example.B'))") == errno.E2BIG
    assert cl.run("_ = talk('org.example.A')") == 0
    # a good one replaces the whole entry: A is closed again
    assert owner.run("_ = update(item_string(K.KDBUS_ITEM_NAME, 'org.example.C')"
                     " + item_policy_access(3, 1, 0))") == 0
    assert cl.run("_ = talk('org.example.A')") == errno.EPERM
    # the holder goes, its policy goes
    owner.run("h.close()")
    svc.run("c.acquire_name('org.example.C')")
    assert cl.run("_ = talk('org.example.C')") == errno.EPERM


def test_wildcards_cover_one_more_element_and_exact_entries_win(bus, agent):
    path, owner = bus
    owner.run("from kdbusfs.client import Connection\n"
              "h1 = Connection.open(p, policy_holder='org.example.*', policy=[[3, 2, 0]])\n"
              "h2 = Connection.open(p, policy_holder='org.example.Closed', policy=[])",
              p=path)
    cl = client(agent, path, 1001)
    assert cl.run("_ = own('org.example.Mine')") == 0
    assert cl.run("_ = own('org.example.Mine.Deeper')") == errno.EPERM
    assert cl.run("_ = own('org.Mine')") == errno.EPERM
    assert cl.run("_ = own('org.example.Closed')") == errno.EPERM   # exact entry, no access
    # another holder cannot take over an installed entry
    err = owner.run("try:\n"
                    "    Connection.open(p, policy_holder='org.example.*', policy=[])\n"
                    "    _ = 0\n"
                    "except OSError as e:\n"
                    "    _ = e.errno", p=path)
    assert err == errno.EEXIST


def test_implicit_rules_of_the_default_endpoint(bus, agent):
    """Same-uid peers and privileged connections need no policy; anybody
    else can own nothing and talk to nobody of another uid."""
    path, owner = bus
    a1 = client(agent, path, 1001)
    a2 = client(agent, path, 1001)
    b = client(agent, path, 1002)
    root = client(agent, path, None)
    a2id = a2.run("_ = c.id")
    assert a1.run("_ = talk(i)", i=a2id) == 0
    assert b.run("_ = talk(i)", i=a2id) == errno.EPERM
    assert root.run("_ = talk(i)", i=a2id) == 0                   # privileged
    assert a1.run("_ = own('org.example.Free')") == errno.EPERM
    assert root.run("_ = own('org.example.Root')") == 0
    assert owner.run("from kdbusfs.client import Connection\n"
                     "o = Connection.open(p); o.acquire_name('org.example.Owner'); _ = 0",
                     p=path) == 0                                # the bus owner owns
    # the receiver's side of a unicast: to a privileged peer still needs TALK
    rid = root.run("_ = c.id")
    assert b.run("_ = talk(i)", i=rid) == errno.EPERM


def test_talk_through_any_name_the_peer_owns(bus, agent):
    path, owner = bus
    owner.run("from kdbusfs.client import Connection\n"
              "h = Connection.open(p, policy_holder='org.example.Public', policy=[[3, 1, 0]])",
              p=path)
    svc = client(agent, path, 1000)
    svc.run("c.acquire_name('org.example.Private')")
    cl = client(agent, path, 1001)
    sid = svc.run("_ = c.id")
    assert cl.run("_ = talk('org.example.Private')") == errno.EPERM
    svc.run("c.acquire_name('org.example.Public')")
    assert cl.run("_ = talk('org.example.Private')") == 0
    assert cl.run("_ = talk(i)", i=sid) == 0
    svc.run("c.release_name('org.example.Public')")
    assert cl.run("_ = talk(i)", i=sid) == errno.EPERM


def test_broadcasts_need_talk_toward_the_sender(bus, agent):
    path, owner = bus
    owner.run("from kdbusfs.client import Connection\n"
              "h = Connection.open(p, policy_holder='org.example.Talkative',"
              " policy=[[1, 1, 1002]])", p=path)
    sender = client(agent, path, 1000)
    same = client(agent, path, 1000)
    other = client(agent, path, 1001)
    granted = client(agent, path, 1002)
    for a in (same, other, granted):
        a.run("c.add_match(1)")
    sender.run("c.emit(b'one')")
    sender.run("c.acquire_name('org.example.Talkative')")
    sender.run("c.emit(b'two')")

    def signals(a):
        return a.run("out = []\n"
                     "while (m := c.recv_wait(0.5)) is not None:\n"
                     "    if m.kind == 'signal': out.append(m.payload.decode())\n"
                     "_ = out")
    assert signals(same) == ["one", "two"]
    assert signals(other) == []
    assert signals(granted) == ["two"]          # TALK through the name, once owned


def test_policy_ids_are_the_uploaders_namespace_ids(bus, agent):
    """A holder in a user namespace writes ids as that namespace knows them
    (inside 1 = host 1001 here); an id it cannot map is EINVAL."""
    import time

    from .agents import wrap_uid
    path, owner = bus
    holder = agent(prefix=[*wrap_uid(1000), "unshare", "--user"], ns_python=True)
    for _ in range(200):
        if os.readlink(f"/proc/{holder.pid}/ns/user") != os.readlink("/proc/self/ns/user"):
            break
        time.sleep(0.01)
    for which in ("uid_map", "gid_map"):
        with open(f"/proc/{holder.pid}/{which}", "w") as f:
            f.write("0 1000 1\n1 1001 1\n")
    assert holder.run("_ = os.getuid()") == 0
    hold = ("from kdbusfs.client import Connection\n"
            "try:\n"
            "    h = Connection.open(p, policy_holder='org.example.P', policy=pol); _ = 0\n"
            "except OSError as e:\n"
            "    _ = e.errno")
    assert holder.run(hold, p=path, pol=[[USER, TALK, 7]]) == errno.EINVAL
    assert holder.run(hold, p=path, pol=[[USER, TALK, 1]]) == 0
    root = client(agent, path, None)
    assert root.run("_ = own('org.example.P')") == 0
    assert client(agent, path, 1001).run("_ = talk('org.example.P')") == 0
    assert client(agent, path, 1002).run("_ = talk('org.example.P')") == errno.EPERM
