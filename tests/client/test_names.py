"""Well-known names, queueing, LIST and name lookups on a real mount."""

from __future__ import annotations

import errno

import pytest

from kdbusfs.abi import constants as C
from kdbusfs.client import LIST_ALL

from .conftest import eventually

PRIMARY = C.KDBUS_NAME_PRIMARY
IN_QUEUE = C.KDBUS_NAME_IN_QUEUE
ACQUIRED = C.KDBUS_NAME_ACQUIRED
QUEUE = C.KDBUS_NAME_QUEUE
ALLOW = C.KDBUS_NAME_ALLOW_REPLACEMENT
NAME = "org.example.Name"


def test_acquire_and_reacquire(connect):
    a = connect()
    assert a.acquire_name(NAME) == PRIMARY | ACQUIRED
    # again: only the flags are updated, no ACQUIRED
    assert a.acquire_name(NAME, allow_replacement=True) == PRIMARY | ALLOW
    assert a.name_owner(NAME) == a.id
    assert a.conn_info(NAME, attach=0).id == a.id


def test_taken_name_is_eexist(connect):
    a, b = connect(), connect()
    a.acquire_name(NAME)
    with pytest.raises(OSError) as e:
        b.acquire_name(NAME)
    assert e.value.errno == errno.EEXIST
    assert e.value.return_flags & ACQUIRED == 0


def test_queueing_and_handover(connect):
    a, b, c = connect(), connect(), connect()
    assert a.acquire_name(NAME) == PRIMARY | ACQUIRED
    assert b.acquire_name(NAME, queue=True) == IN_QUEUE | QUEUE | ACQUIRED
    assert c.acquire_name(NAME, queue=True) == IN_QUEUE | QUEUE | ACQUIRED
    # already queued: keeps its place, no ACQUIRED
    assert b.acquire_name(NAME, queue=True) == IN_QUEUE | QUEUE
    queued = {e.id: e.names for e in a.list(C.KDBUS_LIST_QUEUED)}
    assert queued == {b.id: [(NAME, IN_QUEUE | QUEUE)], c.id: [(NAME, IN_QUEUE | QUEUE)]}
    a.release_name(NAME)
    assert a.name_owner(NAME) == b.id
    b.close()
    assert eventually(lambda: a.name_owner(NAME), c.id) == c.id
    c.release_name(NAME)
    assert a.name_owner(NAME) is None


def test_replacement(connect):
    a, b = connect(), connect()
    a.acquire_name(NAME, allow_replacement=True, queue=True)
    assert b.acquire_name(NAME, replace_existing=True) == PRIMARY | ACQUIRED
    assert a.name_owner(NAME) == b.id
    # the old owner asked for QUEUE, so it waits second in line
    queued = a.list(C.KDBUS_LIST_QUEUED)
    assert [(e.id, e.names) for e in queued] == [(a.id, [(NAME, IN_QUEUE | ALLOW | QUEUE)])]


def test_replacement_refused(connect):
    a, b = connect(), connect()
    a.acquire_name(NAME)
    with pytest.raises(OSError) as e:
        b.acquire_name(NAME, replace_existing=True)
    assert e.value.errno == errno.EEXIST


def test_release_errors(connect):
    a, b = connect(), connect()
    with pytest.raises(OSError) as e:
        a.release_name(NAME)
    assert e.value.errno == errno.ESRCH
    a.acquire_name(NAME)
    with pytest.raises(OSError) as e:
        b.release_name(NAME)
    assert e.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize("bad", ["noelements", "org..example", ".org.example", "org.1x",
                                 "org.example.", "a" * 250 + ".bcdefg"])
def test_invalid_names(connect, bad):
    a = connect()
    with pytest.raises(OSError) as e:
        a.acquire_name(bad)
    assert e.value.errno == errno.EINVAL


def test_list(connect):
    a, b, c = connect(), connect(), connect()
    a.acquire_name("org.example.A")
    a.acquire_name("org.example.AA")
    b.acquire_name("org.example.A", queue=True)

    names = {e.id: sorted(e.names) for e in c.list(C.KDBUS_LIST_NAMES)}
    assert names == {a.id: [("org.example.A", PRIMARY), ("org.example.AA", PRIMARY)]}

    unique = {e.id: e.names for e in c.list(C.KDBUS_LIST_UNIQUE)}
    assert set(unique) == {a.id, b.id, c.id}
    assert all(names == [] for names in unique.values())

    everything = {e.id: sorted(e.names) for e in c.list(LIST_ALL)}
    assert everything[a.id] == [("org.example.A", PRIMARY), ("org.example.AA", PRIMARY)]
    assert everything[b.id] == [("org.example.A", IN_QUEUE | QUEUE)]
    assert everything[c.id] == []
    assert all(e.flags == 0 for e in c.list(LIST_ALL))


def test_list_empty_selection(connect):
    a = connect()
    assert a.list(C.KDBUS_LIST_ACTIVATORS) == []
    assert a.list(C.KDBUS_LIST_NAMES) == []


def test_conn_info_by_unowned_name(connect):
    a = connect()
    with pytest.raises(OSError) as e:
        a.conn_info("org.example.Free")
    assert e.value.errno == errno.ESRCH
    assert a.name_owner("org.example.Free") is None


def test_activator_holds_name(bus, connect):
    act = connect(activator="org.example.Lazy")
    assert act.flags == C.KDBUS_HELLO_ACTIVATOR
    client = connect()
    acts = {e.id: e.names for e in client.list(C.KDBUS_LIST_ACTIVATORS)}
    assert acts == {act.id: [("org.example.Lazy", PRIMARY | C.KDBUS_NAME_ACTIVATOR)]}
    client.send("org.example.Lazy", b"wake up")
    with pytest.raises(OSError) as e:
        client.send("org.example.Lazy", b"x", no_auto_start=True)
    assert e.value.errno == errno.EADDRNOTAVAIL
    # the real service takes over, with the queued message
    service = connect()
    assert service.acquire_name("org.example.Lazy") & ACQUIRED
    m = service.recv_wait(5)
    assert m is not None and m.payload == b"wake up"
