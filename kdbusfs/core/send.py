"""SEND: the checks of ABI §6.10, then routing to the receivers.

`check` runs the validation steps that need no memory access and tells
the filesystem which payload to fetch; `route` delivers the message once
the payload is in hand.  Either fails with the ABI's errno before anything
changed, or the message is delivered whole.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field

from ..abi import constants as K
from ..abi import limits
from ..abi.errors import KdbusError
from ..abi.names import is_well_known_name, parse_string
from . import metadata as md
from .connection import ORDINARY
from .effects import PoolWrite
from .match import Signal
from .message import build_user_record, payload_chunks
from .reply import MAX_PENDING, Reply

MAX_VEC_TOTAL = limits.KDBUS_MSG_MAX_PAYLOAD_VEC_SIZE
MAX_MEMFDS = limits.KDBUS_MSG_MAX_MEMFD_ITEMS
MAX_FDS = limits.KDBUS_MSG_MAX_FDS
BROADCAST = K.KDBUS_DST_ID_BROADCAST
BLOCKED = object()          # the SEND waits for its reply (SYNC_REPLY)
_U64 = 0xFFFFFFFFFFFFFFFF


@dataclass
class SendPlan:
    """What the filesystem must fetch before routing."""
    vecs: list = field(default_factory=list)        # (item index, size, address)
    memfds: list = field(default_factory=list)      # (item index, start, size, fd)
    fds: list = field(default_factory=list)         # fd numbers of the FDS item
    bloom_generation: int = 0
    bloom: int = 0
    dst_name: str | None = None


def check(conn, *, sync: bool, flags: int, dst_id: int, src_id: int, payload_type: int,
          timeout_or_reply: int, items) -> SendPlan:
    if src_id != 0 and src_id != conn.id:
        raise KdbusError(errno.EINVAL, "src_id is not ours")
    if payload_type == 0:
        raise KdbusError(errno.EINVAL, "payload_type 0 is the kernel's")
    signal = flags & K.KDBUS_MSG_SIGNAL
    expect = flags & K.KDBUS_MSG_EXPECT_REPLY
    broadcast = dst_id == BROADCAST
    if broadcast:
        if not signal:
            raise KdbusError(errno.EBADMSG, "broadcast without SIGNAL")
        if timeout_or_reply:
            raise KdbusError(errno.ENOTUNIQ, "broadcast with a timeout or reply cookie")
    if expect:
        if timeout_or_reply == 0:
            raise KdbusError(errno.EINVAL, "EXPECT_REPLY without timeout")
        if signal:
            raise KdbusError(errno.ENOTUNIQ, "a signal expects no reply")
    else:
        if sync:
            raise KdbusError(errno.EINVAL, "SYNC_REPLY without EXPECT_REPLY")
        if timeout_or_reply and signal:
            raise KdbusError(errno.EINVAL, "a signal is no reply")

    plan = SendPlan()
    vec_total = 0
    has_bloom = False
    bloom_size = conn.bus.bloom_size
    for i, it in enumerate(items):
        t, p = it.type, it.payload
        if t == K.KDBUS_ITEM_PAYLOAD_VEC:
            size, addr = struct.unpack_from("<QQ", p)
            vec_total += size
            if vec_total > MAX_VEC_TOTAL:
                raise KdbusError(errno.EMSGSIZE, "payload too large")
            plan.vecs.append((i, size, addr))
        elif t == K.KDBUS_ITEM_PAYLOAD_MEMFD:
            start, size, fd = struct.unpack_from("<QQi", p)
            if start + size > _U64:
                raise KdbusError(errno.EMSGSIZE, "memfd range overflows")
            if len(plan.memfds) >= MAX_MEMFDS:
                raise KdbusError(errno.E2BIG, "too many memfds")
            plan.memfds.append((i, start, size, fd))
        elif t == K.KDBUS_ITEM_FDS:
            n = len(p) // 4
            if n > MAX_FDS:
                raise KdbusError(errno.EMFILE, "too many fds")
            plan.fds = list(struct.unpack_from(f"<{n}i", p))
        elif t == K.KDBUS_ITEM_BLOOM_FILTER:
            data = p[8:]
            if len(data) % 8:
                raise KdbusError(errno.EFAULT, "bloom filter not in words")
            if len(data) != bloom_size:
                raise KdbusError(errno.EDOM, "bloom filter size differs from the bus")
            plan.bloom_generation = struct.unpack_from("<Q", p)[0]
            plan.bloom = int.from_bytes(data, "little")
            has_bloom = True
        elif t == K.KDBUS_ITEM_DST_NAME:
            name = parse_string(p)
            if not is_well_known_name(name.encode("latin-1")):
                raise KdbusError(errno.EINVAL, "invalid destination name")
            if broadcast:
                raise KdbusError(errno.EBADMSG, "a broadcast has no destination name")
            plan.dst_name = name
        else:
            raise KdbusError(errno.EINVAL, "item not allowed in a message")
    if bool(signal) != has_bloom:
        raise KdbusError(errno.EBADMSG, "SIGNAL and BLOOM_FILTER go together")
    if dst_id == 0 and plan.dst_name is None:
        raise KdbusError(errno.EDESTADDRREQ, "no destination")
    if broadcast and plan.fds:
        raise KdbusError(errno.ENOTUNIQ, "a broadcast carries no fds")
    return plan


def lookup_destination(bus, msg):
    """(connection, name registration or None) of a unicast message."""
    if msg.dst_name is None:
        dst = bus.conns.get(msg.dst_id)
        if dst is None or dst.kind != ORDINARY:
            raise KdbusError(errno.ENXIO, "no such connection")
        return dst, None
    e = bus.registry.lookup(msg.dst_name)
    rec = e.owner_record() if e else None
    if rec is None:
        raise KdbusError(errno.ESRCH, "name has no owner")
    if msg.dst_id != 0 and msg.dst_id != rec.conn.id:
        raise KdbusError(errno.EREMCHG, "name owner is another connection")
    if rec.activator and msg.flags & K.KDBUS_MSG_NO_AUTO_START:
        raise KdbusError(errno.EADDRNOTAVAIL, "name is only activatable")
    return rec.conn, e.reg


class MetaOnce:
    """Collects the sender's metadata once, for the union of what is needed."""

    def __init__(self, collect):
        self.collect = collect
        self.meta = None

    def get(self, mask: int):
        # reading /proc costs more than the rest of a SEND: only when asked
        if self.meta is None and self.collect is not None and mask & md.PROCESS:
            self.meta = self.collect(mask)
        return self.meta


def route(domain, conn, msg, *, sync: bool, waiter=None, collect=None):
    """Deliver `msg` from `conn`.  Returns the reply info (offset, size,
    return_flags) for the caller's `reply` field, or BLOCKED."""
    bus = conn.bus
    empty = (conn.pool.size, 0, 0)
    if sync:
        resumed = _resume(domain, conn, msg.cookie, waiter)
        if resumed is not None:
            return resumed
        if domain.clock() >= msg.timeout_or_reply:
            raise KdbusError(errno.ETIMEDOUT, "deadline already passed")
    meta = MetaOnce(collect)

    if msg.dst_id == BROADCAST:
        _broadcast(bus, conn, msg, meta)
        return empty

    dst, reg = lookup_destination(bus, msg)
    signal = msg.flags & K.KDBUS_MSG_SIGNAL
    expect = msg.flags & K.KDBUS_MSG_EXPECT_REPLY

    if not expect and msg.timeout_or_reply and not signal:
        _reply(domain, bus, conn, dst, msg, meta)
        return empty

    if signal:
        ts = bus.timestamp()
        m = meta.get(_union_mask(bus, conn, [dst] + bus.monitors))
        bus._copy_to_monitors(conn, msg, m, ts)
        if dst.matches.matches_signal(_signal(bus, conn, msg)) and bus.may_talk(dst, conn):
            try:
                bus._enqueue(dst, conn, msg, m, ts, name_reg=reg)
            except KdbusError:
                bus._lost(dst)
        return empty

    if not bus.may_talk(conn, dst):
        raise KdbusError(errno.EPERM, "policy denies TALK")
    tracker = None
    if expect:
        if conn.n_requests >= MAX_PENDING:
            raise KdbusError(errno.EMLINK, "too many pending requests")
        tracker = Reply(conn, dst, msg.cookie, msg.timeout_or_reply, sync)
    ts = bus.timestamp()
    m = meta.get(_union_mask(bus, conn, [dst] + bus.monitors))
    bus._copy_to_monitors(conn, msg, m, ts)
    entry = bus._enqueue(dst, conn, msg, m, ts, reply=tracker, name_reg=reg)
    if tracker is None:
        return empty
    tracker.entry = entry
    domain.track(tracker)
    if not sync:
        return empty
    domain.set_waiter(tracker, waiter)
    return BLOCKED


def _union_mask(bus, sender, receivers) -> int:
    m = 0
    for r in receivers:
        m |= bus.mask_for(sender, r)
    return m


def _signal(bus, conn, msg) -> Signal:
    return Signal(conn.id, msg.dst_id, msg.bloom_generation, msg.bloom,
                  {n for _, n in bus.names_of(conn)})


def _broadcast(bus, conn, msg, meta) -> None:
    sig = _signal(bus, conn, msg)
    targets = [c for c in bus.conns.values()
               if c.kind == ORDINARY and c.matches.entries and c.matches.matches_signal(sig)
               and bus.may_talk(c, conn)]
    ts = bus.timestamp()
    m = meta.get(_union_mask(bus, conn, targets + bus.monitors))
    bus._copy_to_monitors(conn, msg, m, ts)
    for c in targets:
        try:
            bus._enqueue(c, conn, msg, m, ts)
        except KdbusError:
            bus._lost(c)


def _reply(domain, bus, conn, dst, msg, meta) -> None:
    tracker = None
    for r in dst.requests.get(msg.timeout_or_reply, ()):
        if r.replier is conn and r.alive:
            tracker = r
            break
    if tracker is None:
        raise KdbusError(errno.EBADSLT, "no request with that cookie")
    # used up before queueing: a reply that fails cannot be retried (§6.10)
    domain.consume(tracker)
    ts = bus.timestamp()
    m = meta.get(_union_mask(bus, conn, [dst] + bus.monitors))
    bus._copy_to_monitors(conn, msg, m, ts)
    if not tracker.sync:
        bus._enqueue(dst, conn, msg, m, ts)
        return
    # hand the reply straight to the blocked requester, not its queue
    try:
        info = _sync_reply_slice(bus, conn, dst, msg, m, ts)
    except KdbusError as e:
        shown = errno.EREMOTEIO if e.errno == errno.ECOMM else e.errno
        _finish_sync(bus, tracker, shown, None)
        raise
    _finish_sync(bus, tracker, 0, info)


def _sync_reply_slice(bus, conn, dst, msg, meta, ts):
    """Write the reply into the requester's pool, published; its msg_info."""
    if msg.fds and not dst.accept_fd:
        raise KdbusError(errno.ECOMM, "requester does not accept fds")
    items = md.encode(meta, bus.mask_for(conn, dst, meta), names=bus.names_of(conn),
                      description=conn.description, timestamp=ts, view=md.view_of(dst))
    head, p, size = build_user_record(msg, conn.id, items)
    s = dst.pool.alloc(size)
    dst.pool.fill(s, head, p, payload_chunks(msg))
    s.kernel = False
    s.user = True
    bus._effect(PoolWrite(dst, s.offset, s.size))
    flags = 0
    if (msg.fds or msg.memfds) and not bus.domain.install_fds(dst, s.offset, msg.fds,
                                                              msg.memfds):
        flags = K.KDBUS_RECV_RETURN_INCOMPLETE_FDS
    return (s.offset, s.size, flags)


def _finish_sync(bus, tracker, error: int, info) -> None:
    if not bus.domain.wake(tracker, error, info):
        # the requester was interrupted: keep the result for its resumed SEND
        tracker.result = (error, info)
        tracker.requester.requests.setdefault(tracker.cookie, []).append(tracker)


def _resume(domain, conn, cookie, waiter):
    """Resume a SYNC_REPLY wait that a signal interrupted (same cookie)."""
    for r in conn.requests.get(cookie, ()):
        if r.sync and r.waiter is None:
            if r.result is not None:
                conn.requests[cookie].remove(r)
                if not conn.requests[cookie]:
                    del conn.requests[cookie]
                err, info = r.result
                if err:
                    raise KdbusError(err, "resumed wait failed")
                return info
            if r.alive:
                domain.set_waiter(r, waiter)
                return BLOCKED
    return None
