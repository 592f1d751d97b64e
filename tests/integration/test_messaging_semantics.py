"""Matches, broadcasts, notifications, replies, activators, monitors and queue
accounting on a real mount, against fact sheet §6 (mainly §6.6, §6.10-6.15,
§6.18-6.20), with several client processes at once.

Other tests cover the basics (tests/client/test_matches.py,
tests/client/test_messaging.py, tests/integration/test_delivery.py); these
add what they leave out.  Peers in other processes are `Agent`s: a
connection in a child process that runs the commands the test sends it.
"""

from __future__ import annotations

import errno
import os
import select
import signal
import struct
import threading
import time

import pytest

from kdbusfs.abi import constants as C
from kdbusfs.client import (ANY, BROADCAST, Canceller, Connection, make_bus, notify_id,
                            notify_name)

from .peers import Agent, Peer
from .rawabi import Conn, cmd, ioctl

PRIMARY = C.KDBUS_NAME_PRIMARY
IN_QUEUE = C.KDBUS_NAME_IN_QUEUE
ACTIVATOR = C.KDBUS_NAME_ACTIVATOR
ALLOW = C.KDBUS_NAME_ALLOW_REPLACEMENT
QUEUE = C.KDBUS_NAME_QUEUE


# -- fixtures and helpers ------------------------------------------------------------


@pytest.fixture
def agents(bus):
    """agents(**open_kw) -> an Agent on ``bus``; every one killed afterwards."""
    started: list[Peer] = []

    def _agent(path=None, **kw) -> Agent:
        a = Agent(path or bus.path, **kw)
        started.append(a)
        return a

    _agent.started = started
    try:
        yield _agent
    finally:
        for a in started:
            a.kill()


def errno_of(fn, *a, **kw) -> int:
    try:
        fn(*a, **kw)
    except OSError as e:
        return e.errno
    return 0


def drain(conn: Connection, idle: float = 0.3) -> list:
    """Every message that arrives until ``idle`` seconds pass without one."""
    return list(conn.messages(idle))


def payloads(msgs) -> list[bytes]:
    return [m.payload for m in msgs if m.notification is None]


def agent_payloads(msgs) -> list[str]:
    return [m["payload"] for m in msgs if "n" not in m]


def eventually(fn, timeout: float = 10.0, step: float = 0.02):
    """Poll fn() until it is truthy (close() reaches the server later)."""
    end = time.monotonic() + timeout
    while True:
        got = fn()
        if got or time.monotonic() > end:
            return got
        time.sleep(step)


# -- 1. matches (§6.15) -------------------------------------------------------------------
def test_match_limit_replace_and_remove_by_cookie(connect):
    c, sender = connect(), connect()
    # cookie 1 has two entries (alternatives), cookie 2 one
    c.add_match(1, sender=sender.id, bloom_mask=c.bloom("k:a"))
    c.add_match(1, sender=sender.id, bloom_mask=c.bloom("k:b"))
    c.add_match(2, sender=sender.id, bloom_mask=c.bloom("k:c"))
    for i in range(253):
        c.add_match(100 + i, sender=0xDEAD0000 + i)        # never matches
    assert errno_of(c.add_match, 999, sender=ANY) == errno.EMFILE      # the 257th
    # REPLACE deletes both cookie-1 entries before it counts
    c.add_match(1, sender=sender.id, bloom_mask=c.bloom("k:d"), replace=True)
    c.add_match(3, sender=sender.id, bloom_mask=c.bloom("k:e"))
    assert errno_of(c.add_match, 4, sender=ANY) == errno.EMFILE
    for k in "abcde":
        sender.emit(k.encode(), bloom=sender.bloom("k:" + k))
    assert payloads(drain(c)) == [b"c", b"d", b"e"]
    c.remove_match(2)
    assert errno_of(c.remove_match, 2) == errno.EBADSLT
    assert errno_of(c.remove_match, 4) == errno.EBADSLT
    # REPLACE of a cookie nobody used only adds
    c.add_match(5, sender=sender.id, replace=True)
    sender.emit(b"c again", bloom=sender.bloom("k:c"))
    sender.emit(b"plain")
    assert payloads(drain(c)) == [b"c again", b"plain"]


def test_rules_are_anded_within_an_entry_and_entries_ored(connect, agents):
    listener, wildcard = connect(), connect()
    a, b, c = agents(), agents(), agents()
    a.do("conn.acquire_name('org.example.A')")
    listener.add_match(1, sender_name="org.example.A", bloom_mask=listener.bloom("member:Ping"))
    listener.add_match(2, sender=c.id, dst_id=listener.id)
    listener.add_match(3, sender=ANY, bloom_mask=listener.bloom("member:Both"))
    # BROADCAST and ANY are the same number: this dst_id rule matches all
    wildcard.add_match(1, sender=c.id, dst_id=BROADCAST)
    a.do("conn.emit(b'a ping', bloom=conn.bloom('member:Ping', 'interface:x.Y'))")
    a.do("conn.emit(b'a pong', bloom=conn.bloom('member:Pong'))")       # mask fails
    b.do("conn.emit(b'b ping', bloom=conn.bloom('member:Ping'))")       # name fails
    c.do("conn.emit(b'c plain')")                                        # dst_id fails
    c.do(f"conn.send({listener.id}, b'c unicast', signal=True)")         # entry 2
    b.do(f"conn.send({listener.id}, b'b unicast', signal=True)")         # sender fails
    c.do(f"conn.send({listener.id}, b'c both', signal=True, bloom=conn.bloom('member:Both'))")
    b.do("conn.emit(b'b both', bloom=conn.bloom('member:Both'))")       # entry 3
    c.do(f"conn.send({wildcard.id}, b'c to wildcard', signal=True)")
    got = drain(listener)
    # entries 2 and 3 both admit "c both": still one copy
    assert payloads(got) == [b"a ping", b"c unicast", b"c both", b"b both"]
    assert [(m.src_id, m.dst_id) for m in got] == [(a.id, BROADCAST), (c.id, listener.id),
                                                   (c.id, listener.id), (b.id, BROADCAST)]
    assert payloads(drain(wildcard)) == [b"c plain", b"c to wildcard"]


def test_bloom_mask_generations_and_sizes(connect):
    listener, everything, both, sender = connect(), connect(), connect(), connect()
    size = listener.bloom_size
    g0, g1, g2 = (listener.bloom(f"gen:{i}") for i in range(3))
    listener.add_match(1, bloom_mask=[g0, g1, g2])
    everything.add_match(1, bloom_mask=bytes(size))      # all zeros: matches any filter
    # a mask of two keys needs both of them in the filter, not just one
    two = both.bloom("gen:1", "gen:2")
    assert sum(bin(x).count("1") for x in two) == 2
    both.add_match(1, bloom_mask=two)
    cases = [(0, "gen:0", True), (0, "gen:1", False), (1, "gen:1", True),
             (2, "gen:2", True), (9, "gen:2", True), (9, "gen:1", False)]
    for gen, key, _ in cases:
        sender.emit(f"{gen}/{key}", bloom=(gen, sender.bloom(key)))
    got = drain(listener)
    assert [m.payload.decode() for m in got] == [f"{g}/{k}" for g, k, ok in cases if ok]
    assert [m.bloom[0] for m in got] == [g for g, _, ok in cases if ok]
    assert len(payloads(drain(everything))) == len(cases)
    assert payloads(drain(both)) == []
    sender.emit(b"1+2", bloom=sender.bloom("gen:1", "gen:2", "gen:0"))
    assert payloads(drain(both)) == [b"1+2"]
    assert payloads(drain(everything)) == [b"1+2"]
    # the mask length must be a whole number of bus-sized generations
    for bad in (8, size - 8, size + 8, 2 * size + 16):
        assert errno_of(listener.add_match, 2, bloom_mask=bytes(bad)) == errno.EDOM, bad
    # and a filter must be exactly the bus size
    for bad in (8, size + 8):
        assert errno_of(sender.emit, b"x", bloom=bytes(bad)) == errno.EDOM, bad
    assert drain(everything, 0.1) == []


def test_sender_name_rule_needs_primary_ownership(connect, agents):
    listener = connect()
    a, b = agents(), agents()
    assert a.do("conn.acquire_name('org.example.Owner')") & PRIMARY
    assert b.do("conn.acquire_name('org.example.Owner', queue=True)") & IN_QUEUE
    listener.add_match(1, sender_name="org.example.Owner")
    a.do("conn.emit(b'a1')")
    b.do("conn.emit(b'b1')")               # only queued for the name
    a.do("conn.release_name('org.example.Owner')")
    a.do("conn.emit(b'a2')")
    b.do("conn.emit(b'b2')")               # primary now
    assert payloads(drain(listener)) == [b"a1", b"b2"]
    assert errno_of(listener.add_match, 2, sender_name="nodots") == errno.EINVAL


def test_notification_rules_compare_ids_literally_or_as_wildcard(connect, agents):
    w_rules, w_signals, w_all = connect(), connect(), connect()
    x = agents()
    w_rules.add_match(1, notify=notify_name("name_add", "org.example.Lit", old_id=0))
    w_rules.add_match(2, notify=notify_name("name_add", old_id=5))          # never: old is 0
    w_rules.add_match(3, notify=notify_name("name_remove", new_id=x.id))    # never: new is 0
    w_rules.add_match(4, notify=notify_name("name_change", old_id=x.id))
    w_rules.add_match(5, notify=notify_id("id_remove", x.id))
    w_rules.add_match(6, notify=notify_name("name_remove", "org.example.Lit"))  # ids: ANY
    w_signals.add_match(1, sender=ANY)          # signal rules never match notifications
    w_all.add_match(1)                          # no rules: everything
    t0 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    x.do("conn.emit(b'signal')")
    y = agents()
    x.do("conn.acquire_name('org.example.Lit', allow_replacement=True)")
    x.do("conn.acquire_name('org.example.Other')")
    y.do("conn.acquire_name('org.example.Lit', replace_existing=True)")
    y.do("conn.release_name('org.example.Lit')")
    x.finish()
    assert w_all.recv_wait(10) is not None      # wait for the server to see the close
    rest = drain(w_all)
    t1 = time.clock_gettime_ns(time.CLOCK_MONOTONIC)

    got = [(m.kind, m.notification[1:]) for m in drain(w_rules)]
    assert got == [("name_add", ("org.example.Lit", 0, 0, x.id, PRIMARY | ALLOW)),
                   ("name_change", ("org.example.Lit", x.id, PRIMARY | ALLOW, y.id, PRIMARY)),
                   ("name_remove", ("org.example.Lit", y.id, PRIMARY, 0, 0)),
                   ("id_remove", (x.id, 0))]
    assert [m.payload for m in drain(w_signals)] == [b"signal"]
    # w_all: the signal, then every notification in order (its first message
    # was taken by recv_wait above)
    everything = rest
    kinds = [m.kind for m in everything]
    assert kinds == ["id_add", "name_add", "name_add", "name_change", "name_remove",
                     "name_remove", "id_remove"]
    for m in everything:
        assert (m.src_id, m.cookie, m.payload_type, m.cookie_reply) == (0, 0, 0, 0)
        assert m.flags == C.KDBUS_MSG_SIGNAL and m.dst_id == BROADCAST
        assert t0 <= m.timestamp.monotonic_ns <= t1
    seqs = [m.timestamp.seqnum for m in everything]
    assert seqs == sorted(set(seqs))
    # x's names go before its ID_REMOVE
    assert everything[-2].notification[1:4] == ("org.example.Other", x.id, PRIMARY)


# -- 2. broadcasts (§6.10, §6.16) --------------------------------------------------------
def test_broadcast_reaches_each_matching_process_once(agents):
    r1, r2, quiet, unmatched, sender = (agents() for _ in range(5))
    r1.do("conn.add_match(bloom_mask=conn.bloom('member:Tick'))")
    r2.do(f"conn.add_match(1, sender={sender.id})")
    r2.do("conn.add_match(2, bloom_mask=conn.bloom('member:Tick'))")
    quiet.do("conn.add_match(bloom_mask=conn.bloom('member:Tock'))")
    sender.do("conn.add_match(sender=conn.id)")        # a sender hears itself
    for i in range(5):
        sender.do(f"conn.emit(b'tick{i}', bloom=conn.bloom('member:Tick'))")
    expected = [f"tick{i}" for i in range(5)]
    for who in (r1, r2, sender):
        got = who.do("drain(conn)")
        assert agent_payloads(got) == expected
        assert {(m["src"], m["dst"], m["kind"]) for m in got} == {(sender.id, BROADCAST,
                                                                     "signal")}
    assert quiet.do("drain(conn, 0.1)") == []
    assert unmatched.do("drain(conn, 0.1)") == []


def test_broadcast_needs_talk_from_receiver_to_sender(mount, agents):
    """Receivers of other uids only get a broadcast when the bus policy lets
    them talk to the sender (the TALK check runs from receiver to sender)."""
    with make_bus(mount.path, "talk", access="world") as bus:
        sender = agents(bus.path, uid=1001)
        same_uid = agents(bus.path, uid=1001)
        other_uid = agents(bus.path, uid=1002)
        with Connection.open(bus.path) as owner:
            for r in (same_uid, other_uid):
                r.do("conn.add_match(sender=ANY)")
            owner.add_match(sender=ANY)
            sender.do("conn.emit(b'first')")
            assert agent_payloads(same_uid.do("drain(conn)")) == ["first"]
            assert other_uid.do("drain(conn, 0.1)") == []
            assert payloads(drain(owner)) == [b"first"]      # the owner may talk to all
            # a policy holder lets everyone own (and so talk to) the sender's name
            holder = Connection.open(bus.path, policy_holder="org.example.Emitter",
                                     policy=[(C.KDBUS_POLICY_ACCESS_WORLD,
                                              C.KDBUS_POLICY_OWN, 0)])
            sender.do("conn.acquire_name('org.example.Emitter')")
            sender.do("conn.emit(b'second')")
            assert agent_payloads(other_uid.do("drain(conn)")) == ["second"]
            assert agent_payloads(same_uid.do("drain(conn)")) == ["second"]
            holder_id = holder.id
            holder.close()
            assert eventually(lambda: holder_id not in {e.id for e in owner.list()})
            sender.do("conn.emit(b'third')")
            assert other_uid.do("drain(conn, 0.1)") == []
            assert agent_payloads(same_uid.do("drain(conn)")) == ["third"]


def test_broadcasts_carry_no_fds_and_expect_no_reply(bus, connect):
    listener, sender = connect(), connect()
    listener.add_match(sender=ANY)
    r, w = os.pipe()
    try:
        assert errno_of(sender.send, BROADCAST, b"x", fds=[r]) == errno.ENOTUNIQ
    finally:
        os.close(r)
        os.close(w)
    assert errno_of(sender.send, BROADCAST, b"x", expect_reply=True) == errno.ENOTUNIQ
    assert errno_of(sender.send, BROADCAST, b"x", reply_to=7) == errno.ENOTUNIQ
    raw = Conn(bus.dir)
    try:
        zero = bytes(listener.bloom_size)
        rc, _ = raw.send(BROADCAST, b"x", flags=C.KDBUS_MSG_SIGNAL, bloom=zero,
                         dst_name="org.example.Any")
        assert rc == errno.EBADMSG
        assert raw.send(BROADCAST, b"x", flags=C.KDBUS_MSG_SIGNAL)[0] == errno.EBADMSG
        assert raw.send(BROADCAST, b"ok", flags=C.KDBUS_MSG_SIGNAL, bloom=zero)[0] == 0
    finally:
        raw.close()
    assert payloads(drain(listener)) == [b"ok"]


# -- 3. kernel notifications (§6.14, §6.18, §6.6) ----------------------------------
def _names(msgs):
    """(kind, name, old id, old flags, new id, new flags) of NAME_* notifications."""
    return [(m.kind,) + tuple(m.notification[1:]) for m in msgs
            if m.kind.startswith("name_")]


def test_name_notifications_follow_queue_hand_over_and_replacement(connect, agents):
    watcher = connect()
    watcher.add_match(notify="all")
    a, b = agents(), agents()
    c = connect()
    n = "org.example.Queue"
    assert a.do(f"conn.acquire_name({n!r}, allow_replacement=True, queue=True)") & PRIMARY
    assert b.do(f"conn.acquire_name({n!r}, queue=True)") & IN_QUEUE           # silent
    assert c.acquire_name(n, replace_existing=True) & PRIMARY   # a stays, queued
    c.release_name(n)                                           # back to a
    a_id = a.id
    a.kill()                                                    # disconnect: to b
    assert eventually(lambda: c.name_owner(n) == b.id)
    b.do(f"conn.release_name({n!r})")
    # replacement of an owner that did not ask to queue drops its record
    m = "org.example.Gone"
    c.acquire_name(m, allow_replacement=True)
    b.do(f"conn.acquire_name({m!r}, replace_existing=True)")
    b.do(f"conn.release_name({m!r})")
    got = drain(watcher)
    assert _names(got) == [
        ("name_add", n, 0, 0, a_id, PRIMARY | ALLOW | QUEUE),
        ("name_change", n, a_id, PRIMARY | ALLOW | QUEUE, c.id, PRIMARY),
        ("name_change", n, c.id, PRIMARY, a_id, PRIMARY | ALLOW | QUEUE),
        ("name_change", n, a_id, PRIMARY | ALLOW | QUEUE, b.id, PRIMARY | QUEUE),
        ("name_remove", n, b.id, PRIMARY | QUEUE, 0, 0),
        ("name_add", m, 0, 0, c.id, PRIMARY | ALLOW),
        ("name_change", m, c.id, PRIMARY | ALLOW, b.id, PRIMARY),
        ("name_remove", m, b.id, PRIMARY, 0, 0),
    ]
    # a's disconnect: its hand-over comes right before its ID_REMOVE
    gone = [i for i, x in enumerate(got) if x.kind == "id_remove" and x.notification.id == a_id]
    assert len(gone) == 1
    before = got[gone[0] - 1]
    assert before.kind == "name_change" and before.notification[2:5:2] == (a_id, b.id)
    assert c.name_owner(m) is None


def test_notifications_skip_connections_without_a_match(connect, agents):
    silent, watcher = connect(), connect()
    watcher.add_match(notify=notify_id("id_add"))
    x = agents()
    x.do("conn.acquire_name('org.example.Quiet')")
    got = drain(watcher)
    assert [(m.kind, m.notification.id) for m in got] == [("id_add", x.id)]
    assert drain(silent, 0.1) == []
    # BYEBYE refuses while a notification is queued (§6.6)
    y = agents()
    assert watcher.wait(5)
    assert errno_of(watcher.byebye) == errno.EBUSY
    assert watcher.recv().notification.id == y.id
    watcher.byebye()
    assert errno_of(watcher.recv) == errno.ECONNRESET


def test_custom_endpoint_sees_only_names_its_policy_shows(bus, connect, agents):
    """NAME_* notifications need SEE of the name, ID_* never do (§6.18), and
    a broadcast needs TALK from the receiver's endpoint to one of the
    sender's names, so a nameless sender is unheard there (§6.16)."""
    from kdbusfs.client.endpoint import make_endpoint
    world = C.KDBUS_POLICY_ACCESS_WORLD
    policy = [("org.example.Visible", [(world, C.KDBUS_POLICY_SEE, 0)]),
              ("org.example.Talker", [(world, C.KDBUS_POLICY_TALK, 0)])]
    with make_endpoint(bus.dir, "limited", access="world", policy=policy) as ep:
        boxed = Connection.open(ep.path)
        try:
            everyone = connect()
            for w in (boxed, everyone):
                w.add_match(1, notify="all")
                w.add_match(2, sender=ANY)
            x = agents()
            x.do("conn.emit(b'nameless')")
            for n in ("Visible", "Hidden"):
                x.do(f"conn.acquire_name('org.example.{n}')")
            x.do("conn.emit(b'see only')")
            x.do("conn.acquire_name('org.example.Talker')")
            x.do("conn.emit(b'talker')")
            x.do("conn.release_name('org.example.Hidden')")
            x.kill()
            assert eventually(lambda: x.id not in {e.id for e in everyone.list()})

            def seen(conn):
                return [(m.kind, m.payload.decode() if m.notification is None else
                         (m.notification.id if m.kind.startswith("id_")
                          else m.notification.name)) for m in drain(conn)]

            assert seen(boxed) == [
                ("id_add", x.id), ("name_add", "org.example.Visible"),
                ("name_add", "org.example.Talker"), ("signal", "talker"),
                ("name_remove", "org.example.Visible"), ("name_remove", "org.example.Talker"),
                ("id_remove", x.id)]
            assert seen(everyone) == [
                ("id_add", x.id), ("signal", "nameless"),
                ("name_add", "org.example.Visible"), ("name_add", "org.example.Hidden"),
                ("signal", "see only"), ("name_add", "org.example.Talker"),
                ("signal", "talker"), ("name_remove", "org.example.Hidden"),
                ("name_remove", "org.example.Visible"), ("name_remove", "org.example.Talker"),
                ("id_remove", x.id)]
        finally:
            boxed.close()


def test_disconnect_reports_queued_requests_dead_twice(connect, agents):
    """§6.6 quirk: a still-queued request is reported dead for the queue
    (step 5) and again for its tracker (step 7); a request already received
    only once; a sync caller gets EPIPE plus one REPLY_DEAD message."""
    requester = connect()
    monitor = connect(monitor=True)         # tells when the sync request is queued
    service = agents()
    caller = agents()
    c1 = requester.send(service.id, b"received", expect_reply=True, timeout=30)
    assert service.do("brief(conn.recv_wait(5))")["cookie"] == c1
    caller.start(f"conn.call({service.id}, b'sync', timeout=30, cookie=77)")
    assert eventually(lambda: any(m.cookie == 77 for m in drain(monitor, 0.05)))
    c2 = requester.send(service.id, b"queued", expect_reply=True, timeout=30)
    service.kill()
    assert errno_of(caller.result) == errno.EPIPE
    got = [requester.recv_wait(10) for _ in range(3)]
    assert [(m.kind, m.cookie_reply) for m in got if m] == \
        [("reply_dead", c2), ("reply_dead", c1), ("reply_dead", c2)]
    assert drain(requester, 0.2) == []
    left = caller.do("drain(conn)")
    assert [(m["kind"], m["reply"]) for m in left] == [("reply_dead", 77)]


# -- 4. reply tracking and SYNC_REPLY (§6.10, §6.13) ------------------------------
def test_pending_request_limit_is_128_per_requester(connect):
    requester, other, service = connect(), connect(), connect()
    cookies = [requester.send(service.id, b"q", expect_reply=True, timeout=60)
               for _ in range(128)]
    assert errno_of(requester.send, service.id, b"one too many", expect_reply=True,
                    timeout=60) == errno.EMLINK
    # a synchronous call counts too, and fails before blocking
    t0 = time.monotonic()
    assert errno_of(requester.call, service.id, b"sync", timeout=30) == errno.EMLINK
    assert time.monotonic() - t0 < 5
    # the limit is per requester, and plain messages are not limited
    other.send(service.id, b"other", expect_reply=True, timeout=60)
    requester.send(service.id, b"no reply expected")
    first = service.recv_wait(5)
    assert first.cookie == cookies[0]
    service.reply(first, b"answer")
    assert requester.recv_wait(5).cookie_reply == cookies[0]
    requester.send(service.id, b"room again", expect_reply=True, timeout=60)
    assert errno_of(requester.send, service.id, b"full again", expect_reply=True,
                    timeout=60) == errno.EMLINK


def test_replies_need_a_live_request_from_the_replier(connect, agents):
    requester, service, stranger = connect(), connect(), connect()
    plain = requester.send(service.id, b"no reply wanted")
    req_cookie = requester.send(service.id, b"q", expect_reply=True, timeout=30)
    short = requester.send(service.id, b"short", expect_reply=True, timeout=0.2)
    msgs = drain(service)
    assert [m.cookie for m in msgs] == [plain, req_cookie, short]
    # unsolicited: unknown cookie, a message that wanted no reply, wrong replier
    assert errno_of(service.send, requester.id, b"r", reply_to=424242) == errno.EBADSLT
    assert errno_of(service.reply, msgs[0], b"r") == errno.EBADSLT
    assert errno_of(stranger.send, requester.id, b"r", reply_to=req_cookie) == errno.EBADSLT
    assert errno_of(service.send, 999999, b"r", reply_to=req_cookie) == errno.ENXIO
    # the short request times out: REPLY_TIMEOUT without any match, and no reply after
    t = requester.recv_wait(5)
    assert (t.kind, t.cookie_reply, t.src_id, t.dst_id) == ("reply_timeout", short, 0,
                                                            requester.id)
    assert t.timestamp is not None and t.timestamp.monotonic_ns >= msgs[2].timeout_ns
    assert errno_of(service.reply, msgs[2], b"late") == errno.EBADSLT
    service.reply(msgs[1], b"in time")
    r = requester.recv_wait(5)
    assert (r.kind, r.cookie_reply, r.payload) == ("reply", req_cookie, b"in time")
    assert errno_of(service.reply, msgs[1], b"twice") == errno.EBADSLT


SERVICE = """
conn = Connection.open(sys.argv[1])
conn.acquire_name(sys.argv[2])
say("ready", conn.id)
served = 0
while True:
    if not conn.wait(30):
        break
    m = conn.recv()
    if m is None:
        continue
    if m.payload == b"stop":
        break
    conn.reply(m, b"re:" + m.payload)
    served += 1
say("served", served)
"""


def test_sync_reply_lands_in_the_pool_and_fills_reply(bus, spawn_service):
    svc_id = spawn_service("org.example.Sync")
    raw = Conn(bus.dir)
    try:
        deadline = time.monotonic_ns() + 10 * 10**9
        rc, s = raw.send(0, b"ping", dst_name="org.example.Sync", cookie=41,
                         flags=C.KDBUS_MSG_EXPECT_REPLY, timeout_or_reply=deadline, sync=True)
        assert rc == 0
        offset, size, rflags = struct.unpack_from("<QQQ", s.raw, 32)
        assert 0 < size and offset + size <= raw.pool_size and rflags == 0
        from .rawabi import parse
        m = parse(raw.pool, offset)
        assert (m["src_id"], m["cookie_reply"], m["payload"]) == (svc_id, 41, b"re:ping")
        assert size == (((m["size"] + 7) & ~7) + len(b"re:ping") + 7) & ~7
        assert raw.recv()[0] == errno.EAGAIN           # not queued
        assert raw.free(offset) == 0                   # published: ours to FREE
        assert raw.free(offset) == errno.ENXIO
        # an async send reports "no reply": {pool_size, 0, 0}
        rc, s = raw.send(svc_id, b"async", cookie=42, flags=C.KDBUS_MSG_EXPECT_REPLY,
                         timeout_or_reply=deadline)
        assert rc == 0 and struct.unpack_from("<QQQ", s.raw, 32) == (raw.pool_size, 0, 0)
    finally:
        raw.close()


@pytest.fixture
def spawn_service(bus):
    """spawn_service(name) -> id of a process answering every request on ``name``."""
    started = []

    def _spawn(name: str) -> int:
        p = Peer(SERVICE, bus.path, name)
        started.append(p)
        return int(p.expect("ready")[0])

    try:
        yield _spawn
    finally:
        for p in started:
            p.kill()


def test_concurrent_sync_callers_get_their_own_replies(bus, agents, spawn_service):
    spawn_service("org.example.Many")
    callers = [agents() for _ in range(4)]
    for i, c in enumerate(callers):
        c.start(f"[conn.call('org.example.Many', b'%d-%d' % ({i}, k), timeout=20).payload"
                f".decode() for k in range(15)]")
    for i, c in enumerate(callers):
        assert c.result(60) == [f"re:{i}-{k}" for k in range(15)]
        assert c.do("drain(conn, 0.05)") == []        # every reply went to the pool


def test_cancel_fd_made_readable_by_another_process(connect):
    caller, service = connect(), connect()
    with Canceller() as stop:
        writer = Peer("""
            fd = int(sys.argv[1])
            time.sleep(0.4)
            os.eventfd_write(fd, 1)
            say("written")
        """, stop.fileno(), pass_fds=[stop.fileno()])
        try:
            t0 = time.monotonic()
            assert errno_of(caller.call, service.id, b"x", timeout=20,
                            cancel_fd=stop) == errno.ECANCELED
            assert 0.3 < time.monotonic() - t0 < 10
            writer.expect("written")
        finally:
            writer.finish()
        assert stop.cancelled
    # the request itself was delivered; its tracker is gone with the wait
    req = service.recv_wait(5)
    assert req is not None and req.expects_reply
    assert errno_of(service.reply, req, b"too late") == errno.EBADSLT
    assert caller.recv() is None


def test_cancel_fd_that_cannot_be_polled_is_einval(connect):
    caller, service = connect(), connect()
    with open("/etc/hostname", "rb") as f:
        assert errno_of(caller.call, service.id, b"x", timeout=5,
                        cancel_fd=f.fileno()) == errno.EINVAL
    assert service.recv() is None                 # nothing was sent
    caller.send(service.id, b"still serving")
    assert service.recv_wait(5).payload == b"still serving"


def test_cancel_fd_on_a_fuse_mount_is_refused(connect, mount):
    """Polling a FUSE file asks that file's server, which may never answer:
    such a cancel fd is refused (EINVAL, as for any fd that cannot be
    polled) instead of being allowed to stall the bus."""
    caller, service = connect(), connect()
    fd = os.open(mount.control, os.O_RDWR)
    try:
        assert errno_of(caller.call, service.id, b"x", timeout=5, cancel_fd=fd) == errno.EINVAL
    finally:
        os.close(fd)
    assert service.recv() is None


def test_blocked_call_ends_with_econnreset_when_its_connection_goes(connect):
    caller, service = connect(), connect()
    result = {}

    def call():
        result["errno"] = errno_of(caller.call, service.id, b"x", timeout=20)

    t = threading.Thread(target=call, daemon=True)
    t.start()
    assert service.wait(5)                 # the request is queued: the call blocks
    caller.byebye()                        # from this thread
    t.join(10)
    assert not t.is_alive() and result["errno"] == errno.ECONNRESET
    # the replier's request is dead for good: it cannot reply any more
    req = service.recv()
    assert errno_of(service.reply, req, b"x") == errno.ENXIO


def test_call_resumes_its_wait_after_a_signal(connect):
    caller, service = connect(), connect()
    hits = []
    old = signal.signal(signal.SIGALRM, lambda *a: hits.append(time.monotonic()))
    try:
        def serve():
            req = service.recv_wait(5)
            time.sleep(0.6)                # the caller gets SIGALRM meanwhile
            service.reply(req, b"after the signal")

        t = threading.Thread(target=serve, daemon=True)
        t.start()
        signal.setitimer(signal.ITIMER_REAL, 0.3)
        reply = caller.call(service.id, b"x", timeout=20)
        t.join(10)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
    assert len(hits) == 1 and reply.payload == b"after the signal"
    # the interrupted SEND was resumed, not sent again
    assert service.recv() is None


def test_undeliverable_sync_reply_fails_on_both_sides(connect):
    caller, service = connect(), connect()        # the caller does not accept fds
    result = {}
    t = threading.Thread(target=lambda: result.update(
        errno=errno_of(caller.call, service.id, b"x", timeout=20)), daemon=True)
    t.start()
    req = service.recv_wait(5)
    r, w = os.pipe()
    try:
        assert errno_of(service.reply, req, b"fd", fds=[r]) == errno.ECOMM
    finally:
        os.close(r)
        os.close(w)
    t.join(10)
    assert result["errno"] == errno.EREMOTEIO
    assert errno_of(service.reply, req, b"again") == errno.EBADSLT


def test_killed_sync_caller_blocks_nobody(bus, agents, connect, spawn_service):
    service = connect()
    victim = agents()
    victim.start(f"conn.call({service.id}, b'never finished', timeout=60)")
    req = service.recv_wait(5)
    assert req is not None
    victim.kill()                          # dies inside the blocked SEND
    assert eventually(lambda: errno_of(service.reply, req, b"late") == errno.ENXIO)
    # everyone else carries on
    spawn_service("org.example.After")
    with Connection.open(bus.path) as other:
        assert other.call("org.example.After", b"ok", timeout=10).payload == b"re:ok"


# -- 5. activators and monitors (§6.14, §6.19) -------------------------------------
def test_activator_queue_moves_to_the_implementer_and_back(connect, agents):
    name = "org.example.Lazy"
    act = connect(activator=name)
    client = connect()
    c1 = client.send(name, b"m1", expect_reply=True, timeout=30)
    c2 = client.send(name, b"m2", expect_reply=True, timeout=30)
    c3 = client.send(name, b"m3", priority=-5)
    assert errno_of(client.send, name, b"x", no_auto_start=True) == errno.EADDRNOTAVAIL
    head = act.recv(peek=True)                   # the activator may look
    assert (head.cookie, head.dst_name, head.src_id) == (c1, name, client.id)

    impl1 = agents()
    assert impl1.do(f"conn.acquire_name({name!r})") & C.KDBUS_NAME_ACQUIRED
    assert act.recv(peek=True) is None           # the queue went with the name
    impl1.do("me.update(m=conn.recv_wait(5))")
    assert impl1.do("brief(me['m'])")["cookie"] == c1
    impl1.do("conn.reply(me['m'], b'one')")      # the tracker moved along
    r1 = client.recv_wait(5)
    assert (r1.kind, r1.cookie_reply, r1.src_id) == ("reply", c1, impl1.id)
    c4 = client.send(name, b"m4")                # straight to the implementer
    client.send(impl1.id, b"by id")              # not addressed to the name
    impl1.kill()                                 # m2, m3, m4 go back; "by id" dies
    assert eventually(lambda: act.recv(peek=True) is not None)
    assert eventually(lambda: errno_of(client.send, name, b"x", no_auto_start=True)
                      == errno.EADDRNOTAVAIL)

    impl2 = agents()
    impl2.do(f"conn.acquire_name({name!r})")
    got = impl2.do("drain(conn)")
    assert [(m["cookie"], m["payload"], m["src"], m.get("dst_name"), m["priority"])
            for m in got] == [(c2, "m2", client.id, name, 0), (c3, "m3", client.id, name, -5),
                              (c4, "m4", client.id, name, 0)]
    impl2.do(f"conn.send({client.id}, b'two', reply_to={c2})")
    r2 = client.recv_wait(5)
    assert (r2.kind, r2.cookie_reply, r2.src_id) == ("reply", c2, impl2.id)
    assert drain(client, 0.2) == []              # no REPLY_DEAD for moved requests


def test_activator_notifications_and_what_it_may_not_do(bus, connect, agents):
    name = "org.example.OnDemand"
    watcher = connect()
    watcher.add_match(notify="all")
    act = connect(activator=name)
    # a second activator for the name fails, after its ID_ADD (then ID_REMOVE)
    assert errno_of(Connection.open, bus.path, activator=name) == errno.EEXIST
    impl = agents()
    impl.do(f"conn.acquire_name({name!r})")
    impl.do(f"conn.release_name({name!r})")
    for fn, a, kw in ((act.send, (impl.id, b"x"), {}), (act.emit, (b"x",), {}),
                      (act.add_match, (), {}), (act.acquire_name, ("org.example.X",), {}),
                      (act.byebye, (), {})):
        assert errno_of(fn, *a, **kw) == errno.EOPNOTSUPP, fn.__name__
    assert impl.errno(f"conn.send({act.id}, b'by id')") == errno.ENXIO
    impl.do("conn.emit(b'signal')")
    assert act.recv() is None                   # no broadcasts for activators
    act_id = act.id
    act.close()
    seen = []
    deadline = time.monotonic() + 10
    while ("id_remove", act_id) not in seen[-1:] and time.monotonic() < deadline:
        m = watcher.recv_wait(1)
        if m is not None:
            n = m.notification
            seen.append((m.kind, n.id) if m.kind.startswith("id_") else
                        (m.kind,) + tuple(n[1:]))
    failed = seen[2][1]
    assert failed > act_id
    assert seen == [
        ("id_add", act_id), ("name_add", name, 0, 0, act_id, ACTIVATOR | PRIMARY),
        ("id_add", failed), ("id_remove", failed),
        ("id_add", impl.id),
        ("name_change", name, act_id, ACTIVATOR | PRIMARY, impl.id, PRIMARY),
        ("name_change", name, impl.id, PRIMARY, act_id, ACTIVATOR | PRIMARY),
        ("name_remove", name, act_id, ACTIVATOR | PRIMARY, 0, 0),
        ("id_remove", act_id),
    ]
    assert drain(watcher, 0.1) == []


def test_monitor_sees_all_traffic_and_stays_invisible(connect, agents):
    watcher = connect()
    watcher.add_match(notify=["id_add", "id_remove"])
    mon = connect(monitor=True)
    p1, p2 = agents(), agents()
    p1.do(f"conn.send({p2.id}, b'unicast')")
    p1.do(f"conn.send({p2.id}, b'ignored signal', signal=True)")   # p2 has no match
    p2.do("conn.emit(b'broadcast')")                                # nobody matches
    assert p2.do("brief(conn.recv_wait(5))")["payload"] == "unicast"
    p1.start(f"conn.call({p2.id}, b'question', timeout=20).payload.decode()")
    p2.do("me.update(q=conn.recv_wait(5))")
    p2.do("conn.reply(me['q'], b'answer')")
    assert p1.result() == "answer"
    p1.do(f"conn.send({p2.id}, b'short', expect_reply=True, timeout=0.1)")
    assert p1.do("brief(conn.recv_wait(5))")["kind"] == "reply_timeout"
    p1.do("conn.acquire_name('org.example.Seen')")
    seen = drain(mon)
    assert [(m.kind, m.src_id, m.payload) for m in seen] == [
        ("id_add", 0, b""), ("id_add", 0, b""),
        ("message", p1.id, b"unicast"),
        ("signal", p1.id, b"ignored signal"),
        ("signal", p2.id, b"broadcast"),
        ("message", p1.id, b"question"),
        ("reply", p2.id, b"answer"),
        ("message", p1.id, b"short"),
        ("reply_timeout", 0, b""),
        ("name_add", 0, b""),
    ]
    assert [m.notification.id for m in seen[:2]] == [p1.id, p2.id]
    assert seen[8].dst_id == p1.id
    assert p2.do("[m['payload'] for m in drain(conn)]") == ["short"]
    # invisible: no ID_ADD, not listed, not addressable; CONN_INFO finds it
    assert [m.notification.id for m in drain(watcher)] == [p1.id, p2.id]
    assert mon.id not in {e.id for e in watcher.list(C.KDBUS_LIST_UNIQUE)}
    assert watcher.conn_info(mon.id).flags == C.KDBUS_HELLO_MONITOR
    assert p1.errno(f"conn.send({mon.id}, b'x')") == errno.ENXIO
    assert p1.errno(f"conn.send({mon.id}, b'x', signal=True)") == errno.ENXIO
    for fn, a in ((mon.send, (p1.id, b"x")), (mon.emit, (b"x",)), (mon.add_match, ()),
                  (mon.acquire_name, ("org.example.Mon",)), (mon.byebye, ())):
        assert errno_of(fn, *a) == errno.EOPNOTSUPP, fn.__name__
    mon.close()
    p1.kill()
    last = watcher.recv_wait(10)
    assert (last.kind, last.notification.id) == ("id_remove", p1.id)
    assert drain(watcher, 0.2) == []              # nothing for the monitor's close


# -- 6. queue accounting (§6.7, §6.12, §6.20) ---------------------------------------
def _raw_recv(conn: Conn, flags: int = 0):
    """RECV without FREE: (errno, offset, dropped_msgs, return_flags)."""
    r = cmd(64, flags=flags)
    rc = ioctl(conn.fd, C.KDBUS_CMD_RECV, r)
    return rc, r.u64(40), r.u64(32), r.u64(16)


def _pollin(fd: int, timeout_ms: int) -> bool:
    p = select.poll()
    p.register(fd, select.POLLIN)
    return any(ev & select.POLLIN for _, ev in p.poll(timeout_ms))


def test_messages_lost_to_a_full_pool_are_counted_and_polled(bus, connect):
    receiver = Conn(bus.dir, pool_size=8192)
    sender = connect()
    try:
        match = cmd(32, fields={24: 1})
        assert ioctl(receiver.fd, C.KDBUS_CMD_MATCH_ADD, match) == 0
        kept = []
        for _ in range(20):
            sender.emit(b"x" * 1000)
            assert _pollin(receiver.fd, 5000)          # a message, or a loss
            rc, off, dropped, rflags = _raw_recv(receiver)
            if rc == 0:
                assert dropped == 0
                kept.append(off)                       # received, never freed
                continue
            # the pool is full of unfreed slices: the broadcast was lost
            assert rc == errno.EAGAIN and len(kept) >= 2
            assert dropped == 1 and rflags & C.KDBUS_RECV_RETURN_DROPPED_MSGS
            break
        else:
            pytest.fail("the pool never filled up")
        assert sender.recv() is None                   # the sender heard nothing
        assert not _pollin(receiver.fd, 0)
        rc, _, dropped, rflags = _raw_recv(receiver)
        assert (rc, dropped, rflags & C.KDBUS_RECV_RETURN_DROPPED_MSGS) == (errno.EAGAIN, 0, 0)
        for off in kept:
            assert receiver.free(off) == 0
        sender.emit(b"room again")
        rc, m = receiver.recv()
        assert rc == 0 and m["payload"] == b"room again" and m["dropped"] == 0
    finally:
        receiver.close()


def test_broadcast_quota_is_per_sending_user(bus, connect, agents):
    receiver = connect(pool_size=1 << 20)
    receiver.add_match(sender=ANY)
    mon = connect(monitor=True, pool_size=1 << 20)
    sender = connect()
    for i in range(300):
        sender.emit(b"%d" % i)              # never an error: losses are the receivers'
    other_user = agents(uid=1001)           # another user has a quota of its own
    for i in range(5):
        other_user.do(f"conn.emit(b'other {i}')")
    first = receiver.recv()
    assert receiver.last_dropped == 300 - 256
    got = [first] + drain(receiver)
    assert payloads(got) == [b"%d" % i for i in range(256)] + [b"other %d" % i
                                                              for i in range(5)]
    assert receiver.dropped == 44
    mine = [m for m in drain(mon) if m.src_id == sender.id]
    assert len(mine) == 256 and mon.dropped == 44

