"""Reply trackers: a request that expects an answer (ABI §6.13).

A tracker lives at the requester, names the one connection allowed to
answer, and ends with the reply, its deadline, or the death of either side.
A synchronous tracker also carries the waiter (the blocked SEND) and, when
that wait was interrupted by a signal, the result for the resumed SEND.
"""

from __future__ import annotations

from ..abi import limits

MAX_PENDING = limits.KDBUS_CONN_MAX_REQUESTS_PENDING


class Reply:
    __slots__ = ("requester", "replier", "cookie", "deadline", "sync", "waiter",
                 "result", "alive", "entry")

    def __init__(self, requester, replier, cookie: int, deadline: int, sync: bool):
        self.requester = requester
        self.replier = replier
        self.cookie = cookie
        self.deadline = deadline
        self.sync = sync
        self.waiter = None        # token of the blocked SEND, when sync
        self.result = None        # (errno, reply info) kept for a resumed SEND
        self.alive = True
        self.entry = None         # the queue entry of the request, while queued
