"""Match entries: which signals and notifications a connection wants.

An entry's rules are ANDed, a connection's entries are ORed (ABI §6.15).
User-signal rules (bloom mask, sender name, sender id, dst id) never match
notifications and notification rules never match signals; an entry without
rules matches both.
"""

from __future__ import annotations

import errno
import struct

from ..abi import constants as K
from ..abi import limits
from ..abi.errors import KdbusError
from ..abi.names import is_well_known_name, parse_string

MAX_ENTRIES = limits.KDBUS_MATCH_MAX
ANY = K.KDBUS_MATCH_ID_ANY

_SIGNAL, _NOTIFY, _NEVER = 1, 2, 4
_NOTIFY_TYPES = (K.KDBUS_ITEM_NAME_ADD, K.KDBUS_ITEM_NAME_REMOVE, K.KDBUS_ITEM_NAME_CHANGE,
                 K.KDBUS_ITEM_ID_ADD, K.KDBUS_ITEM_ID_REMOVE)


class Signal:
    """What signal rules look at."""
    __slots__ = ("src_id", "dst_id", "bloom_generation", "bloom", "sender_names")

    def __init__(self, src_id, dst_id, bloom_generation, bloom, sender_names):
        self.src_id = src_id
        self.dst_id = dst_id
        self.bloom_generation = bloom_generation
        self.bloom = bloom                  # int, little-endian bit field
        self.sender_names = sender_names    # set of primary names


class Notification:
    """What notification rules look at."""
    __slots__ = ("type", "id", "old_id", "new_id", "name")

    def __init__(self, type, id=0, old_id=0, new_id=0, name=None):
        self.type = type
        self.id = id
        self.old_id = old_id
        self.new_id = new_id
        self.name = name


class Entry:
    __slots__ = ("cookie", "kinds", "masks", "names", "ids", "dst_ids", "notify")

    def __init__(self, cookie: int):
        self.cookie = cookie
        self.kinds = 0
        self.masks: list[list[int]] = []          # each: mask per generation
        self.names: list[str] = []
        self.ids: list[int] = []
        self.dst_ids: list[int] = []
        self.notify: list[tuple] = []             # (type, a, b, name)

    def matches_signal(self, s: Signal) -> bool:
        if self.kinds & (_NOTIFY | _NEVER):
            return False
        for gens in self.masks:
            m = gens[min(s.bloom_generation, len(gens) - 1)]
            if s.bloom & m != m:
                return False
        for n in self.names:
            if n not in s.sender_names:
                return False
        for i in self.ids:
            if i != ANY and i != s.src_id:
                return False
        for i in self.dst_ids:
            if i != ANY and i != s.dst_id:
                return False
        return True

    def matches_notification(self, n: Notification) -> bool:
        if self.kinds & (_SIGNAL | _NEVER):
            return False
        for t, a, b, name in self.notify:
            if t != n.type:
                return False
            if t in (K.KDBUS_ITEM_ID_ADD, K.KDBUS_ITEM_ID_REMOVE):
                if a != ANY and a != n.id:
                    return False
            else:
                if a != ANY and a != n.old_id:
                    return False
                if b != ANY and b != n.new_id:
                    return False
                if name is not None and name != n.name:
                    return False
        return True


def parse_entry(cookie: int, items, bloom_size: int) -> Entry:
    """Turn MATCH_ADD items into an entry (EDOM for a bad mask size)."""
    e = Entry(cookie)
    for it in items:
        t, p = it.type, it.payload
        if t == K.KDBUS_ITEM_BLOOM_MASK:
            if len(p) == 0 or len(p) % bloom_size:
                raise KdbusError(errno.EDOM, "bloom mask size")
            e.masks.append([int.from_bytes(p[i:i + bloom_size], "little")
                            for i in range(0, len(p), bloom_size)])
            e.kinds |= _SIGNAL
        elif t == K.KDBUS_ITEM_NAME:
            name = parse_string(p)
            if not is_well_known_name(name.encode("latin-1")):
                raise KdbusError(errno.EINVAL, "invalid match name")
            e.names.append(name)
            e.kinds |= _SIGNAL
        elif t == K.KDBUS_ITEM_ID:
            e.ids.append(struct.unpack_from("<Q", p)[0])
            e.kinds |= _SIGNAL
        elif t == K.KDBUS_ITEM_DST_ID:
            e.dst_ids.append(struct.unpack_from("<Q", p)[0])
            e.kinds |= _SIGNAL
        elif t in (K.KDBUS_ITEM_ID_ADD, K.KDBUS_ITEM_ID_REMOVE):
            e.notify.append((t, struct.unpack_from("<Q", p)[0], None, None))
            e.kinds |= _NOTIFY
        elif t in _NOTIFY_TYPES:
            old_id, _, new_id, _ = struct.unpack_from("<4Q", p)
            name = parse_string(p[32:]) if len(p) > 32 else None
            e.notify.append((t, old_id, new_id, name))
            e.kinds |= _NOTIFY
        elif t == K.KDBUS_ITEM_NEGOTIATE:
            # quirk kept from the kernel: a NEGOTIATE item becomes a rule
            # that never matches (§1.3).
            e.kinds |= _NEVER
    return e


class MatchDB:
    def __init__(self):
        self.entries: list[Entry] = []

    def add(self, entry: Entry, replace: bool) -> None:
        if replace:
            self.entries = [e for e in self.entries if e.cookie != entry.cookie]
        if len(self.entries) >= MAX_ENTRIES:
            raise KdbusError(errno.EMFILE, "too many matches")
        self.entries.append(entry)

    def remove(self, cookie: int) -> None:
        kept = [e for e in self.entries if e.cookie != cookie]
        if len(kept) == len(self.entries):
            raise KdbusError(errno.EBADSLT, "no match with that cookie")
        self.entries = kept

    def matches_signal(self, s: Signal) -> bool:
        return any(e.matches_signal(s) for e in self.entries)

    def matches_notification(self, n: Notification) -> bool:
        return any(e.matches_notification(n) for e in self.entries)
