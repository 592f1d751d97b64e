"""A connection: one HELLO on one endpoint file, with its pool and queue."""

from __future__ import annotations

from ..abi import constants as K
from .match import MatchDB
from .pool import Pool
from .queue import MessageQueue

ORDINARY, ACTIVATOR, POLICY_HOLDER, MONITOR = "ordinary", "activator", "holder", "monitor"


def kind_of(hello_flags: int) -> str:
    if hello_flags & K.KDBUS_HELLO_ACTIVATOR:
        return ACTIVATOR
    if hello_flags & K.KDBUS_HELLO_POLICY_HOLDER:
        return POLICY_HOLDER
    if hello_flags & K.KDBUS_HELLO_MONITOR:
        return MONITOR
    return ORDINARY


class Connection:
    def __init__(self, id: int, endpoint, who, flags: int, pool_size: int, *,
                 attach_send: int, attach_recv: int, description=None, meta=None,
                 user_key=None, store_factory=None):
        self.id = id
        self.endpoint = endpoint
        self.bus = endpoint.bus
        self.who = who                  # opener identity (never the caller's)
        self.flags = flags
        self.kind = kind_of(flags)
        self.owner = endpoint.is_owner(who)
        self.attach_send = attach_send
        self.attach_recv = attach_recv
        self.description = description
        self.meta = meta                # HELLO snapshot (CONN_INFO)
        self.user_key = user_key        # accounting user
        self.pool = Pool(pool_size, store_factory) if store_factory else Pool(pool_size)
        self.queue = MessageQueue(pool_size)
        self.matches = MatchDB()
        self.names: list = []           # NameRecords in acquisition order
        self.requests: dict[int, list] = {}   # cookie -> Reply trackers we wait on
        self.n_requests = 0
        self.expected: list = []        # Reply trackers that we must answer
        self.dropped = 0                # lost counter (dropped_msgs)
        self.alive = True
        self.policy_name = None         # activator / policy-holder NAME

    @property
    def ordinary(self) -> bool:
        return self.kind == ORDINARY

    @property
    def accept_fd(self) -> bool:
        return bool(self.flags & K.KDBUS_HELLO_ACCEPT_FD)

    def readable(self) -> bool:
        return bool(self.queue.entries) or self.dropped > 0

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.kind} on {self.bus.name}>"
