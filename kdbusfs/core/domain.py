"""A domain: one mount's whole kdbus world, and the engine's API.

Every mount gets its own Domain (the devpts `newinstance` model the 2014
review asked for): its own id counter, buses, per-user limits.  Methods
here are the commands; each leaves effects for the filesystem to apply
(`take_effects`) and delivers the notifications it caused before it
returns, in order (ABI §6.18).
"""

from __future__ import annotations

import errno
import heapq
import itertools
import os
import struct
import time
import uuid
from collections import Counter
from dataclasses import dataclass

from ..abi import constants as K
from ..abi import limits
from ..abi.errors import KdbusError
from ..abi.items import encode_item
from ..abi.names import is_well_known_name
from . import metadata as md
from . import send as sendmod
from .bus import Bus
from .connection import ACTIVATOR, MONITOR, ORDINARY, POLICY_HOLDER, Connection
from .effects import Disconnected, NodeRemoved, PoolWrite, ReleaseFds, WaitDone
from .match import parse_entry
from .policy import parse_policy
from .pool import AnonymousStore

MAX_BUSES_PER_USER = limits.KDBUS_USER_MAX_BUSES
MAX_CONNS_PER_USER = limits.KDBUS_USER_MAX_CONN
# kdbusfs: pools are the server's memory, so the pool bytes of one real uid
# are capped (HELLO gives ENOMEM beyond).  Every byte the server keeps for
# messages and results lives in some pool, so this bounds what one user
# can make the server hold (the server's KDBUSFS_USER_POOL_BYTES overrides it).
MAX_POOL_BYTES_PER_USER = 4 << 30
_INFO = struct.Struct("<QQQ")
_SPECIAL = K.KDBUS_HELLO_ACTIVATOR | K.KDBUS_HELLO_POLICY_HOLDER | K.KDBUS_HELLO_MONITOR


@dataclass
class RecvResult:
    error: int                  # 0 or EAGAIN
    dropped: int
    return_flags: int           # DROPPED_MSGS
    offset: int
    size: int
    msg_return_flags: int       # INCOMPLETE_FDS


def _info_record(id_: int, flags: int, items: list[bytes]) -> bytes:
    body = b"".join(items)
    return _INFO.pack(24 + len(body), id_, flags) + body


class Domain:
    def __init__(self, *, clock=time.monotonic_ns, realtime=time.time_ns,
                 random_bytes=os.urandom, store_factory=AnonymousStore, proc_visible=None,
                 max_pool_bytes=MAX_POOL_BYTES_PER_USER):
        self.clock = clock
        self.realtime = realtime
        self.random_bytes = random_bytes
        self.store_factory = store_factory
        self.proc_visible = proc_visible or (lambda sender, receiver: True)
        # install_fds(conn, slice offset, fds, memfds) -> bool: hand a
        # message's fds to its receiver (kdbusfs/fs/fdpass.py); False means
        # not installed, reported as INCOMPLETE_FDS (ABI §6.11).
        self.install_fds = lambda conn, offset, fds, memfds: False
        self.buses: dict[str, Bus] = {}
        self._ids = itertools.count(1)
        self.bus_count: Counter = Counter()
        self.conn_count: Counter = Counter()
        self.pool_bytes: Counter = Counter()     # per real uid, until RELEASE
        self.max_pool_bytes = max_pool_bytes
        self.effects: list = []
        self._timers: list = []
        self._timer_seq = itertools.count()
        self._waiting: dict = {}          # waiter token -> Reply
        self.alive = True

    def take_effects(self) -> list:
        e, self.effects = self.effects, []
        return e

    def _flush(self, bus) -> None:
        if bus is not None:
            bus.flush_notifications()

    # -- buses --------------------------------------------------------------
    def bus_make(self, who, *, flags: int, name: str, bloom_size: int, n_hash: int,
                 attach_send: int = 0, meta=None) -> Bus:
        if not (8 <= bloom_size <= 4096) or bloom_size % 8 or n_hash < 1:
            raise KdbusError(errno.EINVAL, "bad bloom parameters")
        attach_send = md.check_attach_mask(attach_send)
        if not name.startswith(f"{who.euid}-"):
            raise KdbusError(errno.EINVAL, "bus name must start with <euid>-")
        if name in self.buses:
            raise KdbusError(errno.EEXIST, "bus exists")
        if self.bus_count[who.uid] >= MAX_BUSES_PER_USER:
            raise KdbusError(errno.EMFILE, "too many buses")
        if not self.alive:
            raise KdbusError(errno.ESHUTDOWN, "domain is going away")
        id128 = uuid.UUID(bytes=self.random_bytes(16), version=4).bytes
        bus = Bus(self, next(self._ids), name, who, flags, bloom_size, n_hash, id128,
                  attach_send, meta)
        self.buses[name] = bus
        self.bus_count[who.uid] += 1
        return bus

    def bus_destroy(self, bus: Bus) -> None:
        if not bus.alive:
            return
        bus.alive = False
        for ep in list(bus.endpoints.values()):
            self._end_endpoint(ep)
        del self.buses[bus.name]
        self.bus_count[bus.creator.uid] -= 1
        self.effects.append(NodeRemoved(bus))

    # -- endpoints ------------------------------------------------------------
    def endpoint_make(self, bus: Bus, who, *, flags: int, name: str):
        if not bus.default.is_owner(who):
            raise KdbusError(errno.EPERM, "only the bus owner makes endpoints")
        if not name.startswith(f"{who.euid}-") and not name.startswith("ep."):
            raise KdbusError(errno.EINVAL, "endpoint name must start with <euid>-")
        if not bus.alive:
            raise KdbusError(errno.ESHUTDOWN, "bus is going away")
        return bus.add_endpoint(name, who, flags)

    def endpoint_update(self, ep, pairs) -> None:
        ep.policy.replace_all(parse_policy(pairs, allow_wildcard=True))

    def endpoint_destroy(self, ep) -> None:
        if ep.alive and not ep.default:
            self._end_endpoint(ep)
            del ep.bus.endpoints[ep.name]
            self.effects.append(NodeRemoved(ep))

    def _end_endpoint(self, ep) -> None:
        ep.alive = False
        for c in list(ep.conns):
            self.disconnect(c)

    # -- HELLO ------------------------------------------------------------------
    def hello(self, ep, who, *, flags: int, pool_size: int, attach_send: int = 0,
              attach_recv: int = 0, name: str | None = None, policy=(),
              description: str | None = None, faked=None, meta=None,
              store_factory=None) -> Connection:
        """`faked` lists which of CREDS, PIDS, SECLABEL the caller supplied."""
        bus = ep.bus
        if pool_size == 0 or pool_size % 4096:
            raise KdbusError(errno.EINVAL, "pool size must be a multiple of 4096")
        special = flags & _SPECIAL
        if special & (special - 1):
            raise KdbusError(errno.EINVAL, "more than one special connection flag")
        wants_name = flags & (K.KDBUS_HELLO_ACTIVATOR | K.KDBUS_HELLO_POLICY_HOLDER)
        if bool(wants_name) != (name is not None):
            raise KdbusError(errno.EINVAL, "NAME goes with ACTIVATOR or POLICY_HOLDER")
        if name is not None and not is_well_known_name(name.encode("latin-1"),
                                                       allow_wildcard=True):
            raise KdbusError(errno.EINVAL, "invalid name")
        if flags & K.KDBUS_HELLO_MONITOR and not ep.default:
            raise KdbusError(errno.EOPNOTSUPP, "no monitors on custom endpoints")
        owner = ep.is_owner(who)
        if special and not owner:
            raise KdbusError(errno.EPERM, "special connections need the bus owner")
        if faked and not owner:
            raise KdbusError(errno.EPERM, "faked credentials need the bus owner")
        attach_send = md.check_attach_mask(attach_send)
        attach_recv = md.check_attach_mask(attach_recv)
        user = ep.user_key if not ep.default else who.uid
        if self.conn_count[user] >= MAX_CONNS_PER_USER:
            raise KdbusError(errno.EMFILE, "too many connections")
        if self.pool_bytes[who.uid] + pool_size > self.max_pool_bytes:
            raise KdbusError(errno.ENOMEM, "pool memory of this user exhausted")
        if not bus.alive or not ep.alive:
            raise KdbusError(errno.ESHUTDOWN, "bus is going away")
        conn = Connection(next(self._ids), ep, who, flags, pool_size,
                          attach_send=attach_send, attach_recv=attach_recv,
                          description=description, meta=meta, user_key=user,
                          store_factory=store_factory or self.store_factory)
        self.conn_count[user] += 1
        self.pool_bytes[who.uid] += pool_size
        bus.conns[conn.id] = conn
        ep.conns.add(conn)
        try:
            if conn.kind == MONITOR:
                bus.monitors.append(conn)
            else:
                bus.notify_id(K.KDBUS_ITEM_ID_ADD, conn)
            if name is not None:
                conn.policy_name = name
                entries = parse_policy([("name", name)] + list(policy),
                                       allow_wildcard=conn.kind == POLICY_HOLDER)
                if conn.kind == ACTIVATOR:
                    bus.registry.add_activator(conn, name)
                bus.policy.set_owned(conn, entries)
            item = encode_item(K.KDBUS_ITEM_BLOOM_PARAMETER,
                               struct.pack("<QQ", bus.bloom_size, bus.n_hash))
            s = conn.pool.publish_result(item)
            conn.hello_slice = (s.offset, s.size)
            self.effects.append(PoolWrite(conn, s.offset, s.size))
        except KdbusError:
            self.disconnect(conn)
            self.close_pool(conn)
            raise
        finally:
            self._flush(bus)
        return conn

    # -- disconnect (§6.6) ---------------------------------------------------------
    def close_pool(self, conn) -> None:
        """The connection's file is released: its pool memory goes (a dead
        connection's mapping stays readable until then, so it counts)."""
        if not getattr(conn, "pool_closed", False):
            conn.pool_closed = True
            self.pool_bytes[conn.who.uid] -= conn.pool.size
            conn.pool.close()

    def byebye(self, conn) -> None:
        if conn.kind != ORDINARY:
            raise KdbusError(errno.EOPNOTSUPP, "BYEBYE is for ordinary connections")
        if not conn.alive:
            raise KdbusError(errno.ECONNRESET, "connection is gone")
        if conn.queue.entries:
            raise KdbusError(errno.EBUSY, "messages are queued")
        self.disconnect(conn)

    def disconnect(self, conn) -> None:
        if not conn.alive:
            return
        bus = conn.bus
        conn.alive = False
        bus.policy.remove_owner(conn)
        bus.conns.pop(conn.id, None)
        conn.endpoint.conns.discard(conn)
        if conn.kind == MONITOR:
            bus.monitors.remove(conn)
        self.conn_count[conn.user_key] -= 1
        if not self.conn_count[conn.user_key]:
            # a custom endpoint's accounting user is unique: drop its entry
            del self.conn_count[conn.user_key]
        bus.registry.release_all(conn)
        # queued requests will never be answered.  Their trackers end below
        # with the others we owe, so an async requester hears REPLY_DEAD
        # twice and a sync one gets EPIPE plus a REPLY_DEAD (kernel quirk, §6.6)
        for e in list(conn.queue.entries):
            r = e.reply
            if r is not None and r.alive and r.requester.alive:
                bus.notify_reply(K.KDBUS_ITEM_REPLY_DEAD, r.requester, r.cookie)
            self._discard(conn, e)
        # our own requests vanish; a blocked SEND of ours ends with ECONNRESET
        for rs in list(conn.requests.values()):
            for r in list(rs):
                if r.alive:
                    self.wake(r, errno.ECONNRESET, None)
                    self.consume(r)
        conn.requests.clear()
        for r in list(conn.expected):
            bus.end_tracker(r, errno.EPIPE, notify_type=K.KDBUS_ITEM_REPLY_DEAD)
        if conn.kind != MONITOR:
            bus.notify_id(K.KDBUS_ITEM_ID_REMOVE, conn)
        self.effects.append(Disconnected(conn))
        bus.flush_notifications()

    def _discard(self, conn, e) -> None:
        conn.queue.remove(e)
        conn.pool.drop_kernel_hold(e.slice)
        if e.fds or e.memfds:
            self.effects.append(ReleaseFds(tuple(e.fds) + tuple(e.memfds)))

    # -- UPDATE -----------------------------------------------------------------
    def update(self, conn, *, attach_send=None, attach_recv=None, policy=None) -> None:
        k = conn.kind
        if attach_send is not None and k not in (ORDINARY, MONITOR):
            raise KdbusError(errno.EOPNOTSUPP, "cannot change send flags")
        if attach_recv is not None and k not in (ORDINARY, MONITOR, ACTIVATOR):
            raise KdbusError(errno.EOPNOTSUPP, "cannot change receive flags")
        if policy is not None and k != POLICY_HOLDER:
            raise KdbusError(errno.EOPNOTSUPP, "only policy holders carry policy")
        send_mask = md.check_attach_mask(attach_send) if attach_send is not None else None
        recv_mask = md.check_attach_mask(attach_recv) if attach_recv is not None else None
        entries = None
        if policy is not None:
            if sum(1 for p in policy if p[0] == "name") > 1:
                raise KdbusError(errno.E2BIG, "a policy holder has one name")
            entries = parse_policy(policy, allow_wildcard=True)
        if entries is not None:
            conn.bus.policy.set_owned(conn, entries)
        if send_mask is not None:
            conn.attach_send = send_mask
        if recv_mask is not None:
            conn.attach_recv = recv_mask

    # -- pool queries -----------------------------------------------------------
    def free(self, conn, offset: int) -> None:
        if conn.kind == POLICY_HOLDER:
            raise KdbusError(errno.EOPNOTSUPP, "policy holders have no pool to free")
        conn.pool.free(offset)

    def _publish(self, conn, data: bytes) -> tuple[int, int]:
        s = conn.pool.publish_result(data)
        self.effects.append(PoolWrite(conn, s.offset, s.size))
        return s.offset, s.size

    def conn_info(self, conn, *, id: int, name: str | None, attach_flags: int):
        mask = md.check_attach_mask(attach_flags)
        bus = conn.bus
        if name is not None:
            e = bus.registry.lookup(name)
            target = e.owner() if e else None
            if target is None or not bus.can_see_name(conn, name) or \
                    (id and id != target.id):
                raise KdbusError(errno.ESRCH, "no such name")
        elif id:
            target = bus.conns.get(id)
            if target is None or not bus.can_see_conn(conn, target):
                raise KdbusError(errno.ENXIO, "no such connection")
        else:
            raise KdbusError(errno.EINVAL, "neither id nor name")
        mask &= target.attach_send & ~K.KDBUS_ATTACH_TIMESTAMP
        items = md.encode(target.meta, mask, names=bus.names_of(target),
                          description=target.description, view=md.view_of(conn))
        return self._publish(conn, _info_record(target.id, target.flags, items))

    def bus_creator_info(self, conn, *, attach_flags: int):
        mask = md.check_attach_mask(attach_flags)
        bus = conn.bus
        mask &= bus.attach_send & md.PROCESS
        items = [encode_item(K.KDBUS_ITEM_MAKE_NAME, bus.name.encode("latin-1") + b"\0")]
        items += md.encode(bus.creator_meta, mask, view=md.view_of(conn))
        return self._publish(conn, _info_record(bus.id, bus.flags, items))

    def list(self, conn, *, flags: int):
        bus = conn.bus
        records = []
        for c in bus.conns.values():
            if c.kind == MONITOR:
                continue
            matched = False
            for r in c.names:
                st = r.state()
                if r.activator:
                    want = flags & K.KDBUS_LIST_ACTIVATORS
                elif st & K.KDBUS_NAME_IN_QUEUE:
                    want = flags & K.KDBUS_LIST_QUEUED
                else:
                    want = flags & K.KDBUS_LIST_NAMES
                if not want:
                    continue
                matched = True       # quirk kept: counts even when SEE skips it
                if not bus.can_see_name(conn, r.entry.name):
                    continue
                item = encode_item(K.KDBUS_ITEM_OWNED_NAME, struct.pack("<Q", st)
                                   + r.entry.name.encode("latin-1") + b"\0")
                records.append(_info_record(c.id, c.flags, [item]))
            if flags & K.KDBUS_LIST_UNIQUE and not matched:
                records.append(_info_record(c.id, c.flags, []))
        if not records:
            return conn.pool.size, 0
        data = b"".join(records)
        off, _ = self._publish(conn, data)
        return off, len(data)

    # -- SEND and RECV ----------------------------------------------------------------
    def send(self, conn, msg, *, sync: bool = False, waiter=None, collect=None):
        if conn.kind != ORDINARY:
            raise KdbusError(errno.EOPNOTSUPP, "only ordinary connections send")
        try:
            return sendmod.route(self, conn, msg, sync=sync, waiter=waiter, collect=collect)
        finally:
            conn.bus.flush_notifications()

    def recv(self, conn, *, flags: int, priority: int = 0) -> RecvResult:
        if conn.kind == POLICY_HOLDER:
            raise KdbusError(errno.EOPNOTSUPP, "policy holders receive nothing")
        if flags & K.KDBUS_RECV_DROP and flags & K.KDBUS_RECV_USE_PRIORITY:
            raise KdbusError(errno.EINVAL, "DROP with USE_PRIORITY")
        dropped, conn.dropped = conn.dropped, 0
        rflags = K.KDBUS_RECV_RETURN_DROPPED_MSGS if dropped else 0
        res = RecvResult(0, dropped, rflags, conn.pool.size, 0, 0)
        bus = conn.bus
        try:
            e = conn.queue.peek(bool(flags & K.KDBUS_RECV_USE_PRIORITY), priority)
        except KdbusError as err:
            res.error = err.errno
            return res
        try:
            if flags & K.KDBUS_RECV_DROP:
                if e.reply is not None:
                    bus.end_tracker(e.reply, errno.EPIPE,
                                    notify_type=K.KDBUS_ITEM_REPLY_DEAD)
                self._discard(conn, e)
                return res
            # fds go on every RECV, PEEK included (kernel quirk, §6.11); a
            # FUSE server hands them over the receiver's fd channel, and
            # what it cannot hand over is missing (-1, INCOMPLETE_FDS)
            if (e.fds or e.memfds) and not self.install_fds(conn, e.slice.offset, e.fds,
                                                            e.memfds):
                res.msg_return_flags = K.KDBUS_RECV_RETURN_INCOMPLETE_FDS
            conn.pool.publish(e.slice)
            res.offset, res.size = e.slice.offset, e.slice.size
            if not flags & K.KDBUS_RECV_PEEK:
                if e.reply is not None:
                    e.reply.entry = None
                self._discard(conn, e)
            return res
        finally:
            bus.flush_notifications()

    # -- names and matches -----------------------------------------------------------
    def name_acquire(self, conn, name: str, flags: int) -> int:
        if conn.kind != ORDINARY:
            raise KdbusError(errno.EOPNOTSUPP, "only ordinary connections own names")
        if not is_well_known_name(name.encode("latin-1")):
            raise KdbusError(errno.EINVAL, "invalid name")
        if not conn.bus.may_own(conn, name):
            raise KdbusError(errno.EPERM, "policy denies OWN")
        try:
            return conn.bus.registry.acquire(conn, name, flags)
        finally:
            conn.bus.flush_notifications()

    def name_release(self, conn, name: str) -> None:
        if conn.kind != ORDINARY:
            raise KdbusError(errno.EOPNOTSUPP, "only ordinary connections own names")
        try:
            conn.bus.registry.release(conn, name)
        finally:
            conn.bus.flush_notifications()

    def match_add(self, conn, *, cookie: int, items, replace: bool) -> None:
        if conn.kind != ORDINARY:
            raise KdbusError(errno.EOPNOTSUPP, "only ordinary connections match")
        conn.matches.add(parse_entry(cookie, items, conn.bus.bloom_size), replace)

    def match_remove(self, conn, *, cookie: int) -> None:
        if conn.kind != ORDINARY:
            raise KdbusError(errno.EOPNOTSUPP, "only ordinary connections match")
        conn.matches.remove(cookie)

    # -- reply trackers and waits ----------------------------------------------------
    def track(self, r) -> None:
        r.requester.requests.setdefault(r.cookie, []).append(r)
        r.requester.n_requests += 1
        r.replier.expected.append(r)
        heapq.heappush(self._timers, (r.deadline, next(self._timer_seq), r))

    def consume(self, r) -> None:
        """Forget tracker r's bookkeeping (idempotent)."""
        if r.alive:
            r.alive = False
            r.requester.n_requests -= 1
        rs = r.requester.requests.get(r.cookie)
        if rs and r in rs:
            rs.remove(r)
            if not rs:
                del r.requester.requests[r.cookie]
        if r in r.replier.expected:
            r.replier.expected.remove(r)
        if r.entry is not None:
            r.entry.reply = None
            r.entry = None

    def set_waiter(self, r, token) -> None:
        r.waiter = token
        self._waiting[token] = r

    def wake(self, r, error: int, info) -> bool:
        """End r's blocked SEND, if there is one."""
        if r.waiter is None:
            return False
        self._waiting.pop(r.waiter, None)
        self.effects.append(WaitDone(r.waiter, error, info))
        r.waiter = None
        return True

    def cancel_wait(self, token, error: int) -> None:
        """A blocked SEND was interrupted (EINTR: resumable) or cancelled."""
        r = self._waiting.pop(token, None)
        if r is None:
            return
        r.waiter = None
        if error != errno.EINTR:
            self.consume(r)

    def next_deadline(self) -> int | None:
        while self._timers and not self._timers[0][2].alive:
            heapq.heappop(self._timers)
        return self._timers[0][0] if self._timers else None

    def expire(self, now: int | None = None) -> None:
        now = self.clock() if now is None else now
        buses = set()
        while self._timers and self._timers[0][0] <= now:
            _, _, r = heapq.heappop(self._timers)
            if not r.alive:
                continue
            bus = r.requester.bus
            buses.add(bus)
            if r.sync:
                self.wake(r, errno.ETIMEDOUT, None)
                self.consume(r)
            else:
                self.consume(r)
                bus.notify_reply(K.KDBUS_ITEM_REPLY_TIMEOUT, r.requester, r.cookie)
        for bus in buses:
            bus.flush_notifications()

    # -- teardown -------------------------------------------------------------------
    def shutdown(self) -> None:
        self.alive = False
        for bus in list(self.buses.values()):
            self.bus_destroy(bus)
