"""The security rules of the engine without a mount: metadata translation
(§6.17), hidepid, and who holds a message's fds for how long."""

from __future__ import annotations

import struct

from kdbusfs.abi import constants as K
from kdbusfs.core import metadata as md
from kdbusfs.core.effects import ReleaseFds
from kdbusfs.core.fdref import FdRef
from tests.unit.engine import hello, make_bus, make_domain, msg

NS = md.UserNs(id=77, chain=((77, 1000),), uid_map=((0, 1000, 1), (1, 100000, 10)),
               gid_map=((0, 1000, 1),))


def meta(**kw):
    base = dict(creds=(0, 1000, 100005, 4242, 1000, 1000, 5, 0xFFFFFFFF),
                pids=(500, 501, 400), pid_levels=((500, 7), (501, 8), (400,)),
                pidns=(1, 2), auxgroups=(1000, 2000), audit=(3, 1000),
                caps=(40, 1, 2, 3, 4), userns=0, euid=1000, root=(9, "/"),
                exe="/usr/bin/x")
    base.update(kw)
    return md.Metadata(**base)


def items(m, view, mask=K._KDBUS_ATTACH_ALL):
    out = {}
    for it in md.encode(m, mask, view=view):
        size, t = struct.unpack_from("<QQ", it)
        out[t] = it[16:size]
    return out


def test_ids_are_mapped_or_overflow():
    got = items(meta(), md.View(userns=NS))
    assert struct.unpack("<8Q", got[K.KDBUS_ITEM_CREDS]) == (65534, 0, 6, 65534, 0, 0, 65534,
                                                             0xFFFFFFFF)
    assert struct.unpack("<2Q", got[K.KDBUS_ITEM_AUXGROUPS]) == (0, 65534)
    assert struct.unpack("<II", got[K.KDBUS_ITEM_AUDIT]) == (3, 0)
    # the domain's own view is unchanged
    plain = items(meta(), None)
    assert struct.unpack("<8Q", plain[K.KDBUS_ITEM_CREDS])[:4] == (0, 1000, 100005, 4242)


def test_pids_by_namespace():
    m = meta()
    assert md.pids_in(m, md.View(pidns=(1, 2))) == (7, 8, 0)    # the parent is above
    assert md.pids_in(m, md.View(pidns=(1, 3))) == (0, 0, 0)    # a sibling sees nothing
    assert md.pids_in(m, md.View(pidns=(1, 2, 5))) == (0, 0, 0)  # a child neither
    assert md.pids_in(m, None) == (500, 501, 400)


def test_caps_rule():
    m = meta(caps=(40, 1, 2, 3, 4), userns=0, euid=0)
    ones = (1 << 41) - 1
    # the receiver's namespace is below the sender's and owned by its euid
    owned = md.UserNs(id=5, chain=((5, 0),), uid_map=(), gid_map=())
    assert struct.unpack("<I8I", md.caps_in(m, md.View(userns=owned)))[1:] == \
        (0, 0, ones & 0xFFFFFFFF, ones >> 32, ones & 0xFFFFFFFF, ones >> 32,
         ones & 0xFFFFFFFF, ones >> 32)
    # below, owned by somebody else: the real sets
    other = md.UserNs(id=5, chain=((5, 1000),), uid_map=(), gid_map=())
    assert struct.unpack("<I8I", md.caps_in(m, md.View(userns=other)))[1::2] == (1, 2, 3, 4)
    # a sender in a child namespace, seen from the domain's: nothing
    assert struct.unpack("<I8I", md.caps_in(meta(userns=5), None))[1:] == (0,) * 8


def test_proc_visibility_and_hidepid():
    m = meta()
    assert md.proc_visible(m, md.View(pidns=(1, 2)))
    assert not md.proc_visible(m, md.View(pidns=(1, 3)))
    hidden = md.View(hidepid=2, hide_gid=50, egid=1000, tid=999)
    assert not md.proc_visible(m, hidden)
    assert md.proc_visible(m, md.View(hidepid=2, hide_gid=1000, egid=1000))
    assert md.proc_visible(m, md.View(hidepid=2, hide_gid=50, egid=1000, tid=501))  # itself
    # EXE only for the same root
    assert K.KDBUS_ITEM_EXE in items(m, md.View(root=(9, "/")))
    assert K.KDBUS_ITEM_EXE not in items(m, md.View(root=(8, "/")))


def released(d):
    out = []
    for e in d.take_effects():
        if isinstance(e, ReleaseFds):
            for r in e.fds:
                r.release()
                out.append(r)
    return out


def test_fd_references_follow_queue_entries():
    d = make_domain()
    bus = make_bus(d)
    closed = []
    mon = hello(d, bus, flags=K.KDBUS_HELLO_MONITOR)
    a = hello(d, bus, flags=K.KDBUS_HELLO_ACCEPT_FD)
    b = hello(d, bus)
    ref = FdRef(42, closer=closed.append)
    m = msg(a.id, b"x")
    m.fds = [ref]
    d.send(b, m)
    ref.release()                    # the SEND's own reference
    assert ref.refs == 2 and not closed          # the receiver's and the monitor's
    d.take_effects()
    while d.recv(mon, flags=0).error == 0:
        pass
    released(d)
    assert ref.refs == 1 and not closed
    assert d.recv(a, flags=0).error == 0
    released(d)
    assert closed == [ref]


def test_a_failed_activator_move_releases_the_fds():
    d = make_domain()
    bus = make_bus(d)
    act = hello(d, bus, flags=K.KDBUS_HELLO_ACTIVATOR | K.KDBUS_HELLO_ACCEPT_FD,
                name="org.example.Act")
    cl = hello(d, bus)
    closed = []
    ref = FdRef(7, closer=closed.append)
    m = msg(0, b"x", dst_name="org.example.Act")
    m.fds = [ref]
    d.send(cl, m)
    ref.release()
    d.take_effects()
    svc = hello(d, bus)                 # no ACCEPT_FD: the move drops the message
    d.name_acquire(svc, "org.example.Act", 0)
    released(d)
    assert closed == [ref] and svc.dropped == 1
