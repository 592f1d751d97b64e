"""An open file of the mount and the kdbus state it has taken on.

A new fd is *fresh*; BUS_MAKE, ENDPOINT_MAKE or HELLO turn it, for good,
into a bus-owner, endpoint-owner or connection fd (ABI §3).  The opener's
identity is captured here at OPEN and used for every later ioctl.
"""

from __future__ import annotations

FRESH, BUS_OWNER, ENDPOINT_OWNER, CONNECTION = "fresh", "bus-owner", "endpoint-owner", "conn"


class Handle:
    __slots__ = ("fh", "node", "file", "endpoint", "who", "state", "bus", "owned_endpoint",
                 "conn", "poll_khs", "tid", "parked", "backing")

    def __init__(self, fh: int, node, file: str, endpoint, who, tid: int):
        self.fh = fh
        self.node = node
        self.file = file                # "control" or "endpoint"
        self.endpoint = endpoint        # the Endpoint an endpoint file belongs to
        self.who = who                  # Identity of the opener
        self.tid = tid                  # the opener thread (for HELLO metadata)
        self.state = FRESH
        self.bus = None                 # the Bus a bus-owner fd created
        self.owned_endpoint = None      # the Endpoint an endpoint-owner fd created
        self.conn = None
        self.poll_khs: set[int] = set()
        self.parked: list = []          # blocked RECVs (KDBUSFS_RECV_BLOCK)
        self.backing = None             # (memfd, backing id) of a passthrough pool
