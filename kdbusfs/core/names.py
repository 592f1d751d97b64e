"""The well-known name registry of a bus (ABI §6.14).

Each name has a FIFO queue of records whose head is the primary owner, and
at most one activator outside the queue.  Messages sent to a name remember
the registration they were addressed to, so that an activator hand-over
moves exactly those.
"""

from __future__ import annotations

import errno
import itertools

from ..abi import constants as K
from ..abi import limits
from ..abi.errors import KdbusError

MAX_RECORDS_PER_CONN = limits.KDBUS_CONN_MAX_NAMES
_STORED = K.KDBUS_NAME_ALLOW_REPLACEMENT | K.KDBUS_NAME_QUEUE


class NameRecord:
    __slots__ = ("conn", "flags", "entry", "activator")

    def __init__(self, conn, flags, entry, activator=False):
        self.conn = conn
        self.flags = flags & _STORED
        self.entry = entry
        self.activator = activator

    def state(self) -> int:
        """The record flags as userspace sees them (stored | state bits)."""
        e = self.entry
        f = self.flags
        if self.activator:
            f |= K.KDBUS_NAME_ACTIVATOR
            f |= K.KDBUS_NAME_IN_QUEUE if e.queue else K.KDBUS_NAME_PRIMARY
        elif e.queue and e.queue[0] is self:
            f |= K.KDBUS_NAME_PRIMARY
        else:
            f |= K.KDBUS_NAME_IN_QUEUE
        return f


class NameEntry:
    __slots__ = ("name", "queue", "activator", "reg")

    def __init__(self, name: str, reg: int):
        self.name = name
        self.queue: list[NameRecord] = []
        self.activator: NameRecord | None = None
        self.reg = reg            # registration id: a re-created name is another

    def owner_record(self) -> NameRecord | None:
        return self.queue[0] if self.queue else self.activator

    def owner(self):
        r = self.owner_record()
        return r.conn if r else None


class Registry:
    """Name state of one bus.  `bus` supplies notifications and moves."""

    def __init__(self, bus):
        self.bus = bus
        self.entries: dict[str, NameEntry] = {}
        self._reg = itertools.count(1)

    def lookup(self, name: str) -> NameEntry | None:
        return self.entries.get(name)

    def _entry(self, name: str) -> NameEntry:
        e = self.entries.get(name)
        if e is None:
            e = self.entries[name] = NameEntry(name, next(self._reg))
        return e

    @staticmethod
    def _check_room(conn) -> None:
        if len(conn.names) >= MAX_RECORDS_PER_CONN:
            raise KdbusError(errno.E2BIG, "too many name records")

    def _new_record(self, conn, flags, entry, activator=False) -> NameRecord:
        rec = NameRecord(conn, flags, entry, activator)
        conn.names.append(rec)
        return rec

    def _drop_record(self, rec: NameRecord) -> None:
        rec.conn.names.remove(rec)

    # -- activators -----------------------------------------------------
    def add_activator(self, conn, name: str) -> None:
        e = self._entry(name)
        if e.activator is not None:
            raise KdbusError(errno.EEXIST, "name has an activator")
        rec = self._new_record(conn, 0, e, activator=True)
        e.activator = rec
        if not e.queue:
            self.bus.notify_name(K.KDBUS_ITEM_NAME_ADD, name, None, 0, conn, rec.state())

    # -- NAME_ACQUIRE ---------------------------------------------------
    def acquire(self, conn, name: str, flags: int) -> int:
        """Returns the return_flags; raises EEXIST (with return_flags) or E2BIG."""
        e = self.entries.get(name)
        stored = flags & _STORED
        if e is None or not e.queue:
            self._check_room(conn)
            e = self._entry(name)
            rec = self._new_record(conn, stored, e)
            e.queue.append(rec)
            act = e.activator
            if act is not None:
                self.bus.move_name_messages(act.conn, conn, e.reg)
                self.bus.notify_name(K.KDBUS_ITEM_NAME_CHANGE, name, act.conn,
                                     act.flags | K.KDBUS_NAME_ACTIVATOR | K.KDBUS_NAME_PRIMARY,
                                     conn, rec.state())
            else:
                self.bus.notify_name(K.KDBUS_ITEM_NAME_ADD, name, None, 0, conn, rec.state())
            return rec.state() | K.KDBUS_NAME_ACQUIRED

        head = e.queue[0]
        mine = next((r for r in e.queue if r.conn is conn), None)
        if head.conn is conn:
            head.flags = stored
            return head.state()
        if head.flags & K.KDBUS_NAME_ALLOW_REPLACEMENT and flags & K.KDBUS_NAME_REPLACE_EXISTING:
            if mine is None:
                self._check_room(conn)
                mine = self._new_record(conn, stored, e)
            else:
                e.queue.remove(mine)
                mine.flags = stored
            old_state = head.state()
            e.queue.insert(0, mine)
            if not head.flags & K.KDBUS_NAME_QUEUE:
                e.queue.remove(head)
                self._drop_record(head)
            self.bus.notify_name(K.KDBUS_ITEM_NAME_CHANGE, name, head.conn, old_state,
                                 conn, mine.state())
            return mine.state() | K.KDBUS_NAME_ACQUIRED
        if flags & K.KDBUS_NAME_QUEUE:
            if mine is not None:
                mine.flags = stored
                return mine.state()
            self._check_room(conn)
            mine = self._new_record(conn, stored, e)
            e.queue.append(mine)
            return mine.state() | K.KDBUS_NAME_ACQUIRED
        if mine is not None:
            e.queue.remove(mine)
            self._drop_record(mine)
            return 0
        err = KdbusError(errno.EEXIST, "name is owned")
        err.return_flags = stored
        raise err

    # -- NAME_RELEASE and disconnect --------------------------------------
    def release(self, conn, name: str) -> None:
        e = self.entries.get(name)
        if e is None:
            raise KdbusError(errno.ESRCH, "no such name")
        rec = next((r for r in e.queue if r.conn is conn), None)
        if rec is None:
            raise KdbusError(errno.EADDRINUSE, "not an owner of that name")
        self._release_record(rec)

    def _release_record(self, rec: NameRecord) -> None:
        e = rec.entry
        if rec.activator:
            was_primary = not e.queue
            e.activator = None
            self._drop_record(rec)
            if was_primary:
                self.bus.notify_name(K.KDBUS_ITEM_NAME_REMOVE, e.name, rec.conn,
                                     rec.flags | K.KDBUS_NAME_ACTIVATOR | K.KDBUS_NAME_PRIMARY,
                                     None, 0)
                del self.entries[e.name]
            return
        if e.queue[0] is not rec:
            e.queue.remove(rec)
            self._drop_record(rec)
            return
        old_state = rec.state()
        e.queue.pop(0)
        self._drop_record(rec)
        nxt = e.owner_record()
        if nxt is None:
            self.bus.notify_name(K.KDBUS_ITEM_NAME_REMOVE, e.name, rec.conn, old_state, None, 0)
            del self.entries[e.name]
            return
        if nxt.activator:
            self.bus.move_name_messages(rec.conn, nxt.conn, e.reg)
        self.bus.notify_name(K.KDBUS_ITEM_NAME_CHANGE, e.name, rec.conn, old_state,
                             nxt.conn, nxt.state())

    def release_all(self, conn) -> None:
        for rec in list(conn.names):
            self._release_record(rec)

    # -- queries -----------------------------------------------------------
    def primary_names(self, conn):
        """(flags, name) of the names conn owns as primary, in record order."""
        out = []
        for r in conn.names:
            e = r.entry
            if (e.queue and e.queue[0] is r) or (r.activator and not e.queue):
                out.append((r.state(), e.name))
        return out
