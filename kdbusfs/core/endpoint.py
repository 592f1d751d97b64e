"""Endpoints: the files through which connections reach a bus.

`bus` is the default endpoint; custom endpoints carry their own policy,
deny everything by default, and make nobody an owner (ABI §6.1, §6.3).
"""

from __future__ import annotations

from ..abi import constants as K
from .policy import PolicyDB


def node_mode(flags: int, base: int) -> int:
    """Mode bits from MAKE flags: base, +group for GROUP/WORLD, +other for WORLD."""
    mode = base
    if flags & (K.KDBUS_MAKE_ACCESS_GROUP | K.KDBUS_MAKE_ACCESS_WORLD):
        mode |= (base >> 3) & 0o070
    if flags & K.KDBUS_MAKE_ACCESS_WORLD:
        mode |= (base >> 6) & 0o007
    return mode


class Endpoint:
    def __init__(self, bus, name: str, uid: int, gid: int, flags: int, *, default: bool,
                 user_key=None):
        self.bus = bus
        self.name = name
        self.uid = uid
        self.gid = gid
        self.flags = flags
        self.default = default
        self.mode = node_mode(flags, 0o600)
        # custom endpoints: their own policy, and one accounting user for all
        self.policy = None if default else PolicyDB()
        self.user_key = user_key
        self.conns: set = set()
        self.alive = True

    def is_owner(self, who) -> bool:
        """Owner of the bus through this endpoint (never on a custom one)."""
        return self.default and (who.euid == self.bus.uid or who.privileged)
