"""Metadata (ABI §6.17) between real processes: the sender decides what it
reveals beyond the always-allowed items, items are taken at SEND, and ids
and pids are translated into the receiver's user and pid namespaces."""

from __future__ import annotations

import os

import pytest

from kdbusfs.abi import constants as K
from kdbusfs.client import ATTACH_ALL, Connection, make_bus

from .agents import wrap_uid

ALWAYS = {"timestamp", "creds", "pids", "auxgroups", "names", "description"}
with open("/proc/sys/kernel/cap_last_cap") as _f:
    LAST_CAP = int(_f.read())
ALL_CAPS = (1 << (LAST_CAP + 1)) - 1

# a receiver in its own user namespace (owned by host uid 1000, whose root
# is host uid 1000) and pid namespace, with its own /proc
NS_RECEIVER = [*wrap_uid(1000), "unshare", "--user", "--map-root-user", "--pid", "--fork",
               "--mount-proc"]

SUMMARY = """
def summary(m):
    out = {k: getattr(m, k) is not None for k in
           ('timestamp', 'creds', 'pids', 'auxgroups', 'tid_comm', 'pid_comm', 'exe',
            'cmdline', 'cgroup', 'caps', 'seclabel', 'audit', 'description')}
    out['names'] = bool(m.names)
    present = sorted(k for k, v in out.items() if v)
    return {'present': present, 'creds': list(m.creds) if m.creds else None,
            'pids': list(m.pids) if m.pids else None,
            'auxgroups': m.auxgroups, 'tid_comm': m.tid_comm, 'pid_comm': m.pid_comm,
            'caps': list(m.caps[1:]) if m.caps else None, 'exe': m.exe}
"""


@pytest.fixture
def bus(mount):
    b = make_bus(mount.path, "meta", access="world", attach_send=ATTACH_ALL)
    yield b
    b.close()


def own_caps() -> list[int]:
    with open("/proc/self/status") as f:
        st = dict(line.split(":\t", 1) for line in f if ":\t" in line)
    return [int(st[k], 16) & ALL_CAPS for k in ("CapInh", "CapPrm", "CapEff", "CapBnd")]


def receiver(agent, bus, **kw):
    a = agent(**kw)
    a.run(SUMMARY + "from kdbusfs.client import Connection, ATTACH_ALL\n"
          "c = Connection.open(p, attach_recv=ATTACH_ALL, description='rx')", p=bus.path)
    return a, a.run("_ = c.id")


def test_the_sender_decides_what_a_receiver_that_cannot_see_it_gets(bus, agent):
    """A receiver in another pid namespace cannot read the sender's /proc:
    it gets the always-allowed items, plus what the sender allows."""
    rx, rid = receiver(agent, bus, prefix=NS_RECEIVER, ns_python=True)
    mute = Connection.open(bus.path, attach_send=0, description="mute")
    mute.acquire_name("org.example.Mute")
    loud = Connection.open(bus.path, attach_send=ATTACH_ALL)
    try:
        mute.send(rid, b"1")
        loud.send(rid, b"2")
        got = [rx.run("_ = summary(c.recv_wait(5))") for _ in range(2)]
        assert set(got[0]["present"]) == ALWAYS
        assert got[0]["pids"] == [0, 0, 0]              # not visible there
        assert set(got[1]["present"]) >= {"timestamp", "creds", "pids", "auxgroups",
                                          "tid_comm", "pid_comm", "cmdline", "cgroup", "caps"}
        # EXE names a path from the sender's root, and the receiver's differs
        assert "exe" not in got[1]["present"]
        # a receiver in the sender's own namespaces may read /proc anyway
        local = Connection.open(bus.path, attach_recv=ATTACH_ALL)
        mute.send(local.id, b"3")
        m = local.recv_wait(5)
        assert m.pid_comm is not None and m.pids.pid == os.getpid()
        local.close()
        # and a receiver gets no more than it asked for
        few = Connection.open(bus.path, attach_recv=K.KDBUS_ATTACH_CREDS)
        loud.send(few.id, b"4")
        m = few.recv_wait(5)
        meta = [t for t, _ in m.items if t & 0xF000 == 0x1000]
        assert meta == [K.KDBUS_ITEM_CREDS]
        few.close()
    finally:
        mute.close()
        loud.close()


def test_ids_pids_and_caps_are_translated_into_the_receivers_namespaces(bus, agent):
    rx, rid = receiver(agent, bus, prefix=NS_RECEIVER, ns_python=True)
    tx = Connection.open(bus.path, attach_send=ATTACH_ALL)     # host root
    try:
        tx.send(rid, b"from the host")
        got = rx.run("_ = summary(c.recv_wait(5))")
        # host uid 0 has no mapping there: the overflow ids, not dropped
        assert got["creds"] == [65534] * 8
        assert got["pids"] == [0, 0, 0]
        # CAPS: the receiver's namespace is below the sender's: the real sets
        assert got["caps"] == own_caps()
        # the other way: the host sees the namespaced sender as the host does
        host_rx = agent(uid=1000)
        host_rx.run(SUMMARY + "from kdbusfs.client import Connection, ATTACH_ALL\n"
                    "c = Connection.open(p, attach_recv=ATTACH_ALL)", p=bus.path)
        hid = host_rx.run("_ = c.id")
        nspid = rx.run("c2 = Connection.open(p, attach_send=ATTACH_ALL)\n"
                       "c2.send(hid, b'from inside'); _ = os.getpid()", p=bus.path, hid=hid)
        seen = host_rx.run("_ = summary(c.recv_wait(5))")
        assert seen["creds"] == [1000] * 8          # inside root is host 1000
        assert nspid == 1 and seen["pids"][0] > 1   # its host pid, not 1
        assert seen["caps"] == [0, 0, 0, 0]         # caps of a child namespace: none here
        # ... and a receiver inside sees a sender inside with its own ids
        rx.run("c2.send(c.id, b'self')")
        me = rx.run("_ = summary(c.recv_wait(5))")
        assert me["creds"] == [0] * 8 and me["pids"][0] == 1
    finally:
        tx.close()


def test_caps_of_a_namespace_owner(bus, agent):
    """A receiver in a user namespace that the sender's euid owns sees the
    sender with every capability but inheritable (§6.17 CAPS rule)."""
    rx, rid = receiver(agent, bus, prefix=NS_RECEIVER, ns_python=True)
    owner = agent(uid=1000)        # owns rx's namespace; no capabilities at all
    got = owner.run("from kdbusfs.client import Connection, ATTACH_ALL\n"
                    "c = Connection.open(p, attach_send=ATTACH_ALL)\n"
                    "c.send(rid, b'x')", p=bus.path, rid=rid)
    assert got is None
    seen = rx.run("_ = summary(c.recv_wait(5))")
    assert seen["caps"] == [0, ALL_CAPS, ALL_CAPS, ALL_CAPS]
    assert seen["creds"] == [0] * 8


def test_auxgroups_are_mapped(bus, agent):
    tx = agent(uid=1000, groups=(2000, 3000))
    rx, rid = receiver(agent, bus, prefix=NS_RECEIVER, ns_python=True)
    got = tx.run("from kdbusfs.client import Connection, ATTACH_ALL\n"
                 "c = Connection.open(p, attach_recv=ATTACH_ALL)\n"
                 "c.send(rid, b'x'); c.send(c.id, b'y')\n"
                 "_ = sorted(c.recv_wait(5).auxgroups)", p=bus.path, rid=rid)
    assert got == [2000, 3000]
    assert rx.run("_ = summary(c.recv_wait(5))")["auxgroups"] == [65534, 65534]


def test_items_are_taken_at_send_time(bus, agent):
    """Each message shows its sender as it was in that SEND (comm, ids);
    CONN_INFO keeps the HELLO snapshot."""
    rx = Connection.open(bus.path, attach_recv=ATTACH_ALL)
    tx = agent()
    try:
        tid = tx.run("from kdbusfs.client import Connection, ATTACH_ALL\n"
                     "set_comm('first-name')\n"
                     "c = Connection.open(p, attach_send=ATTACH_ALL)\n"
                     "c.send(rid, b'1')\n"
                     "set_comm('second-name')\n"
                     "os.setresgid(0, 4242, 0); os.setresuid(0, 4343, 0)\n"
                     "c.send(rid, b'2'); _ = c.id", p=bus.path, rid=rx.id)
        m1, m2 = rx.recv_wait(5), rx.recv_wait(5)
        assert (m1.tid_comm, m2.tid_comm) == ("first-name", "second-name")
        assert m1.creds.euid == 0 and (m2.creds.euid, m2.creds.egid) == (4343, 4242)
        assert m1.timestamp.seqnum < m2.timestamp.seqnum
        info = rx.conn_info(tid)
        assert info.tid_comm == "first-name" and info.creds.euid == 0
    finally:
        rx.close()


def test_conn_info_and_bus_creator_info_are_translated_too(bus, agent):
    rx, rid = receiver(agent, bus, prefix=NS_RECEIVER, ns_python=True)
    target = Connection.open(bus.path, attach_send=ATTACH_ALL, description="target")
    try:
        got = rx.run("i = c.conn_info(t)\n"
                     "b = c.bus_creator_info()\n"
                     "_ = [summary(i), summary(b)]", t=target.id)
        info, creator = got
        assert info["creds"] == [65534] * 8 and info["pids"] == [0, 0, 0]
        assert "description" in info["present"] and "caps" in info["present"]
        assert creator["creds"] == [65534] * 8
        # the host sees them untranslated
        mine = target.conn_info(target.id)
        assert list(mine.creds) == [0] * 8 and mine.pids.pid == os.getpid()
        # CONN_INFO reveals only what the target allows
        shy = Connection.open(bus.path, attach_send=0)
        assert target.conn_info(shy.id).creds is None
        shy.close()
    finally:
        target.close()
