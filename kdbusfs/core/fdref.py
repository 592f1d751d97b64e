"""Server-side file descriptors carried by messages, shared by reference.

A message's fds (FDS and PAYLOAD_MEMFD) are taken from the sender once and
may sit in several queues at the same time: the receiver's and every
monitor's.  Each holder counts: the SEND that imported them holds one
reference until it returns, each queue entry one more from its creation
until it is discarded.  The descriptor is closed when the last reference
goes, never while a queue still shows it to a receiver.

The engine only calls `hold`; the filesystem creates references when it
imports fds and releases them (it owns the descriptors and the syscalls).
Anything that is not an FdRef (plain ints in engine tests) is ignored here.
"""

from __future__ import annotations


class FdRef:
    __slots__ = ("fd", "refs", "user", "closer")

    def __init__(self, fd: int, user=None, closer=None):
        self.fd = fd            # the descriptor in the server
        self.refs = 1           # the importing SEND's reference
        self.user = user        # the sending user it is accounted to
        self.closer = closer    # called once with this ref when refs reach 0

    def release(self) -> None:
        self.refs -= 1
        if self.refs == 0 and self.closer is not None:
            closer, self.closer = self.closer, None
            closer(self)

    def __repr__(self) -> str:
        return f"<FdRef {self.fd} refs={self.refs}>"


def hold(refs) -> None:
    """A new holder (a queue entry) of every FdRef in `refs`."""
    for r in refs:
        if type(r) is FdRef:
            r.refs += 1


def release(refs) -> None:
    """A holder of every FdRef in `refs` is gone."""
    for r in refs:
        if type(r) is FdRef:
            r.release()
