"""Policy databases: who may SEE, TALK to and OWN which well-known names.

Two kinds exist (ABI §6.16): the bus database, filled by activators and
policy holders (each owns the entries it installed), and one database per
custom endpoint, replaced whole by ENDPOINT_UPDATE.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from ..abi import constants as K
from ..abi.errors import KdbusError
from ..abi.names import is_well_known_name

NONE = -1
SEE = K.KDBUS_POLICY_SEE
TALK = K.KDBUS_POLICY_TALK
OWN = K.KDBUS_POLICY_OWN


@dataclass(frozen=True, slots=True)
class Access:
    type: int       # USER, GROUP or WORLD
    access: int     # SEE, TALK or OWN
    id: int


@dataclass(slots=True)
class Entry:
    name: str               # the exact name, or the prefix of a wildcard
    wildcard: bool
    access: tuple[Access, ...]
    owner: object = None    # the installing connection (bus database only)


def parse_policy(pairs, *, allow_wildcard: bool) -> list[Entry]:
    """Build entries from decoded items: ('name', str) and ('access', t, a, id).

    Raises EINVAL for an access record before any name, bad values or names.
    """
    entries: list[Entry] = []
    cur_name = None
    cur: list[Access] = []

    def close():
        if cur_name is not None:
            wild = cur_name.endswith(".*")
            entries.append(Entry(cur_name[:-2] if wild else cur_name, wild, tuple(cur)))

    for p in pairs:
        if p[0] == "name":
            name = p[1]
            if not is_well_known_name(name.encode("latin-1"), allow_wildcard=allow_wildcard):
                raise KdbusError(errno.EINVAL, "invalid policy name")
            close()
            cur_name, cur = name, []
        else:
            _, t, a, ident = p
            if cur_name is None:
                raise KdbusError(errno.EINVAL, "policy access before a name")
            if t not in (K.KDBUS_POLICY_ACCESS_USER, K.KDBUS_POLICY_ACCESS_GROUP,
                         K.KDBUS_POLICY_ACCESS_WORLD) or a not in (SEE, TALK, OWN):
                raise KdbusError(errno.EINVAL, "bad policy access")
            cur.append(Access(t, a, ident))
    close()
    return entries


def _grant(entry: Entry, who) -> int:
    best = NONE
    for acc in entry.access:
        if acc.access <= best:
            continue
        if (acc.type == K.KDBUS_POLICY_ACCESS_WORLD
                or (acc.type == K.KDBUS_POLICY_ACCESS_USER and acc.id == who.euid)
                or (acc.type == K.KDBUS_POLICY_ACCESS_GROUP and who.in_group(acc.id))):
            best = acc.access
    return best


class PolicyDB:
    def __init__(self):
        self.exact: dict[str, Entry] = {}
        self.wild: dict[str, Entry] = {}

    def __bool__(self) -> bool:
        return bool(self.exact or self.wild)

    def lookup(self, name: str, who) -> int:
        """The access `who` has to `name`: the exact entry wins, then x.y.*"""
        e = self.exact.get(name)
        if e is None:
            dot = name.rfind(".")
            e = self.wild.get(name[:dot]) if dot > 0 else None
            if e is None:
                return NONE
        return _grant(e, who)

    def allows(self, name: str, who, level: int) -> bool:
        return self.lookup(name, who) >= level

    # -- endpoint databases: replaced whole ------------------------------
    def replace_all(self, entries: list[Entry]) -> None:
        exact, wild = {}, {}
        for e in entries:
            (wild if e.wildcard else exact)[e.name] = e
        self.exact, self.wild = exact, wild

    # -- the bus database: entries owned by connections -------------------
    def set_owned(self, owner, entries: list[Entry]) -> None:
        """Atomically replace `owner`'s entries (EEXIST if another owns one)."""
        for e in entries:
            table = self.wild if e.wildcard else self.exact
            other = table.get(e.name)
            if other is not None and other.owner is not owner:
                raise KdbusError(errno.EEXIST, "policy entry owned by another")
        self.remove_owner(owner)
        for e in entries:
            e.owner = owner
            (self.wild if e.wildcard else self.exact)[e.name] = e

    def remove_owner(self, owner) -> None:
        for table in (self.exact, self.wild):
            for k in [k for k, e in table.items() if e.owner is owner]:
                del table[k]
