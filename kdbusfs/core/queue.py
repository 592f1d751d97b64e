"""A receiver's incoming queue and the per-sending-user quota on it.

Every queued message owns a slice of the receiver's pool (kernel hold).
The quota (ABI §6.7) keeps half the pool for its owner and stops any one
sending user from taking more than a third of the rest, so one user can
never fill another's pool.
"""

from __future__ import annotations

import errno

from ..abi import limits
from ..abi.errors import KdbusError

MAX_MSGS_PER_USER = limits.KDBUS_CONN_MAX_MSGS_PER_USER
MAX_FDS_PER_USER = limits.KDBUS_CONN_MAX_FDS_PER_USER


class QueueEntry:
    __slots__ = ("slice", "priority", "user", "size", "fds", "memfds", "reply",
                 "name_reg", "record", "sender", "dst_name")

    def __init__(self, slice_, priority, user, fds=(), memfds=(), reply=None,
                 name_reg=None, record=b"", sender=None, dst_name=None):
        self.slice = slice_
        self.priority = priority
        self.user = user            # quota bucket: the sending user (or "kernel")
        self.size = slice_.size
        self.fds = fds              # server-side fd handles, in order
        self.memfds = memfds
        self.reply = reply          # the Reply tracker this request carries
        self.name_reg = name_reg    # name registration it was addressed to
        self.record = record        # the pool bytes, kept for activator moves
        self.sender = sender
        self.dst_name = dst_name


class Quota:
    __slots__ = ("bytes", "msgs", "fds")

    def __init__(self):
        self.bytes = 0
        self.msgs = 0
        self.fds = 0


class MessageQueue:
    def __init__(self, pool_size: int):
        self.half = pool_size // 2
        self.entries: list[QueueEntry] = []
        self.accounted = 0          # A: bytes of queued, not yet received slices
        self.quota: dict[object, Quota] = {}

    def __len__(self) -> int:
        return len(self.entries)

    def check_quota(self, user, size: int, nfds: int) -> None:
        q = self.quota.get(user)
        qb, qm, qf = (q.bytes, q.msgs, q.fds) if q else (0, 0, 0)
        if self.half < self.accounted:
            raise KdbusError(errno.ENOBUFS, "receiver pool over its share")
        if qb + size > (self.half - self.accounted + qb) // 3:
            raise KdbusError(errno.ENOBUFS, "sender over its quota")
        if qm >= MAX_MSGS_PER_USER:
            raise KdbusError(errno.ENOBUFS, "too many queued messages")
        if qf + nfds > MAX_FDS_PER_USER:
            raise KdbusError(errno.EMFILE, "too many fds in flight")

    def push(self, e: QueueEntry) -> None:
        q = self.quota.get(e.user)
        if q is None:
            q = self.quota[e.user] = Quota()
        q.bytes += e.size
        q.msgs += 1
        q.fds += len(e.fds)
        self.accounted += e.size
        self.entries.append(e)

    def remove(self, e: QueueEntry) -> None:
        self.entries.remove(e)
        self.accounted -= e.size
        q = self.quota[e.user]
        q.bytes -= e.size
        q.msgs -= 1
        q.fds -= len(e.fds)
        if not q.msgs:
            del self.quota[e.user]

    def peek(self, use_priority: bool, max_priority: int) -> QueueEntry:
        """The next message to receive; EAGAIN if none qualifies."""
        if not self.entries:
            raise KdbusError(errno.EAGAIN, "queue empty")
        if not use_priority:
            return self.entries[0]
        best = self.entries[0]
        for e in self.entries:
            if e.priority < best.priority:
                best = e
        if best.priority > max_priority:
            raise KdbusError(errno.EAGAIN, "nothing at that priority")
        return best
