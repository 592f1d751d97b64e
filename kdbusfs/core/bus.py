"""A bus: its connections, names, policy, and the delivery of messages.

Everything that puts bytes into a receiver's pool goes through `_enqueue`
(or `_enqueue_record` for copies and kernel messages), so quota, space and
fd rules are checked in one place and a failure leaves nothing behind.
"""

from __future__ import annotations

import errno
import struct

from ..abi import constants as K
from ..abi.errors import KdbusError
from . import fdref
from . import metadata as md
from .connection import MONITOR, ORDINARY
from .effects import PoolWrite, Readable, ReleaseFds
from .endpoint import Endpoint
from .match import Notification, Signal
from .message import Outgoing, build_kernel_record, build_user_record, payload_chunks
from .names import Registry
from .policy import OWN, SEE, TALK, PolicyDB
from .queue import QueueEntry

KERNEL_USER = "kernel"      # quota bucket of kernel messages


class Bus:
    def __init__(self, domain, id: int, name: str, who, flags: int, bloom_size: int,
                 n_hash: int, id128: bytes, attach_send: int, creator_meta):
        self.domain = domain
        self.id = id
        self.name = name
        self.uid = who.euid
        self.gid = who.egid
        self.creator = who
        self.flags = flags
        self.bloom_size = bloom_size
        self.n_hash = n_hash
        self.id128 = id128
        self.attach_send = attach_send
        self.creator_meta = creator_meta
        self.mode = 0o500 | (0o050 if flags & (K.KDBUS_MAKE_ACCESS_GROUP
                                               | K.KDBUS_MAKE_ACCESS_WORLD) else 0) \
            | (0o005 if flags & K.KDBUS_MAKE_ACCESS_WORLD else 0)
        self.default = Endpoint(self, "bus", who.euid, who.egid, flags, default=True)
        self.endpoints: dict[str, Endpoint] = {"bus": self.default}
        self.conns: dict[int, object] = {}
        self.monitors: list = []
        self.registry = Registry(self)
        self.policy = PolicyDB()
        self.seqnum = 0
        self.notes: list = []
        self.alive = True

    # -- time and effects -------------------------------------------------
    def timestamp(self):
        self.seqnum += 1
        d = self.domain
        return (self.seqnum, d.clock(), d.realtime())

    def _effect(self, e) -> None:
        self.domain.effects.append(e)

    # -- policy (§6.16) ---------------------------------------------------
    def names_of(self, conn):
        return self.registry.primary_names(conn)

    def can_see_name(self, viewer, name: str) -> bool:
        pol = viewer.endpoint.policy
        return pol is None or pol.allows(name, viewer.who, SEE)

    def can_see_conn(self, viewer, target) -> bool:
        pol = viewer.endpoint.policy
        if pol is None:
            return True
        return any(pol.allows(r.entry.name, viewer.who, SEE) for r in target.names)

    def may_talk(self, src, dst) -> bool:
        names = None
        pol = src.endpoint.policy
        if pol is not None:
            names = [n for _, n in self.names_of(dst)]
            if not any(pol.allows(n, src.who, TALK) for n in names):
                return False
        if src.owner or src.who.euid == dst.who.uid:
            return True
        if names is None:
            names = [n for _, n in self.names_of(dst)]
        return any(self.policy.allows(n, src.who, TALK) for n in names)

    def may_own(self, conn, name: str) -> bool:
        pol = conn.endpoint.policy
        if pol is not None and not pol.allows(name, conn.who, OWN):
            return False
        return conn.owner or self.policy.allows(name, conn.who, OWN)

    # -- delivery primitives ------------------------------------------------
    def _enqueue_record(self, dst, head: bytes, payload_at: int, chunks, size: int, user,
                        *, priority=0, fds=(), memfds=(), reply=None, name_reg=None,
                        sender=None) -> QueueEntry:
        if not dst.alive:
            raise KdbusError(errno.ECONNRESET, "destination is gone")
        if fds and not dst.accept_fd and dst.kind != MONITOR:
            raise KdbusError(errno.ECOMM, "receiver does not accept fds")
        dst.queue.check_quota(user, size, len(fds))
        s = dst.pool.alloc(size)
        dst.pool.fill(s, head, payload_at, chunks)
        e = QueueEntry(s, priority, user, fds, memfds, reply, name_reg, sender=sender)
        dst.queue.push(e)
        self._effect(PoolWrite(dst, s.offset, s.size))
        self._effect(Readable(dst))
        return e

    def _enqueue(self, dst, sender, msg: Outgoing, meta, ts, *, reply=None,
                 name_reg=None) -> QueueEntry:
        mask = self.mask_for(sender, dst, meta)
        items = md.encode(meta, mask, names=self.names_of(sender),
                          description=sender.description, timestamp=ts, view=md.view_of(dst))
        head, p, size = build_user_record(msg, sender.id, items)
        e = self._enqueue_record(dst, head, p, payload_chunks(msg), size, sender.user_key,
                                 priority=msg.priority, fds=msg.fds, memfds=msg.memfds,
                                 reply=reply, name_reg=name_reg, sender=sender)
        fdref.hold(msg.fds)         # each queue entry holds the fds it shows
        fdref.hold(msg.memfds)
        return e

    def mask_for(self, sender, dst, meta=None) -> int:
        """§6.17; without the collected `meta` the process items count as
        visible (the union of these masks says what to collect)."""
        allowed = sender.attach_send | md.ALWAYS
        if self.domain.proc_visible(sender, dst) and md.proc_visible(meta, md.view_of(dst)):
            allowed |= md.PROC_VISIBLE
        mask = dst.attach_recv & allowed
        if sender.meta is not None and sender.meta.faked:
            mask &= ~md.PROCESS
        return mask

    def _lost(self, dst) -> None:
        dst.dropped += 1
        self._effect(Readable(dst))

    def _copy_to_monitors(self, sender, msg, meta, ts) -> None:
        for m in self.monitors:
            try:
                self._enqueue(m, sender, msg, meta, ts)
            except KdbusError:
                self._lost(m)

    # -- kernel notifications (§6.18) ---------------------------------------
    def notify_id(self, type_: int, conn) -> None:
        item = struct.pack("<QQQQ", 32, type_, conn.id, conn.flags)
        self.notes.append((None, item, Notification(type_, id=conn.id), None, self.timestamp()))

    def notify_name(self, type_: int, name: str, old, old_flags: int, new,
                    new_flags: int) -> None:
        old_id = old.id if old else 0
        new_id = new.id if new else 0
        raw = name.encode("latin-1") + b"\0"
        payload = struct.pack("<4Q", old_id, old_flags if old else 0, new_id,
                              new_flags if new else 0) + raw
        item = struct.pack("<QQ", 16 + len(payload), type_) + payload
        item += bytes(-len(item) % 8)
        self.notes.append((None, item, Notification(type_, old_id=old_id, new_id=new_id,
                                                    name=name), name, self.timestamp()))

    def notify_reply(self, type_: int, requester, cookie: int) -> None:
        item = struct.pack("<QQ", 16, type_)
        self.notes.append((requester, item, cookie, None, self.timestamp()))

    def flush_notifications(self) -> None:
        while self.notes:
            notes, self.notes = self.notes, []
            for target, item, what, name, ts in notes:
                if target is not None:
                    # REPLY_TIMEOUT / REPLY_DEAD: unicast, lost on failure;
                    # monitors see them like any other message (§6.19)
                    if not target.alive:
                        continue
                    rec = build_kernel_record(flags=0, dst_id=target.id, cookie_reply=what,
                                              item=item, timestamp=ts)
                    for m in self.monitors:
                        self._kernel_deliver(m, rec)
                    self._kernel_deliver(target, rec, lose_silently=True)
                    continue
                rec = build_kernel_record(flags=K.KDBUS_MSG_SIGNAL,
                                          dst_id=K.KDBUS_DST_ID_BROADCAST, cookie_reply=0,
                                          item=item, timestamp=ts)
                for m in self.monitors:
                    self._kernel_deliver(m, rec)
                for c in list(self.conns.values()):
                    if c.kind != ORDINARY or not c.matches.matches_notification(what):
                        continue
                    if name is not None and not self.can_see_name(c, name):
                        continue
                    self._kernel_deliver(c, rec)

    def _kernel_deliver(self, dst, rec: bytes, lose_silently=False) -> None:
        try:
            self._enqueue_record(dst, rec, len(rec), (), (len(rec) + 7) & ~7, KERNEL_USER)
        except KdbusError:
            if not lose_silently:
                self._lost(dst)

    # -- reply trackers ---------------------------------------------------------
    def end_tracker(self, r, error: int, *, notify_type: int | None = None) -> None:
        """Finish tracker `r` without a reply: wake a sync waiter with `error`,
        or tell an async requester with a REPLY_* notification."""
        if not r.alive:
            return
        # consume() marks it dead and gives the requester its slot back
        # (marking it dead here first leaked one of the 128, ABI §1.4)
        self.domain.consume(r)
        if r.sync:
            self.domain.wake(r, error, None)
        elif notify_type is not None and r.requester.alive:
            self.notify_reply(notify_type, r.requester, r.cookie)

    # -- activator moves (§6.14) -------------------------------------------------
    def move_name_messages(self, src, dst, reg: int) -> None:
        for e in [e for e in src.queue.entries if e.name_reg == reg]:
            src.queue.remove(e)
            data = src.pool.read(e.slice.offset, e.slice.size)
            src.pool.drop_kernel_hold(e.slice)
            r = e.reply
            try:
                if e.fds and not dst.accept_fd:
                    raise KdbusError(errno.ECOMM, "no fds")
                ne = self._enqueue_record(dst, data, len(data), (), e.slice.size, e.user,
                                          priority=e.priority, fds=e.fds, memfds=e.memfds,
                                          reply=r, name_reg=reg, sender=e.sender)
            except KdbusError:
                self._lost(dst)
                if e.fds or e.memfds:
                    self._effect(ReleaseFds(tuple(e.fds) + tuple(e.memfds)))
                if r is not None:
                    self.end_tracker(r, errno.EPIPE, notify_type=K.KDBUS_ITEM_REPLY_DEAD)
                continue
            if r is not None and r.alive:
                if r in src.expected:
                    src.expected.remove(r)
                r.replier = dst
                r.entry = ne
                dst.expected.append(r)

    # -- endpoints ----------------------------------------------------------------
    def add_endpoint(self, name: str, who, flags: int) -> Endpoint:
        if name in self.endpoints:
            raise KdbusError(errno.EEXIST, "endpoint exists")
        ep = Endpoint(self, name, who.euid, who.egid, flags, default=False,
                      user_key=("endpoint", self.id, name, object()))
        self.endpoints[name] = ep
        return ep
