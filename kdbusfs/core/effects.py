"""What the engine asks the outside world to do after a command.

The engine is sans-IO: it changes its own state and records effects; the
filesystem drains them (`Domain.take_effects`) and turns them into page
pushes, poll wake-ups and answers to blocked callers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class PoolWrite:
    """Bytes [offset, offset+size) of conn's pool changed: push them."""
    conn: object
    offset: int
    size: int


@dataclass(slots=True)
class Readable:
    """conn's queue (or lost counter) became non-empty: wake its pollers."""
    conn: object


@dataclass(slots=True)
class Disconnected:
    """conn is gone: pollers see POLLHUP, blocked calls must end."""
    conn: object


@dataclass(slots=True)
class WaitDone:
    """A blocked SYNC_REPLY send ends: `error` is an errno or 0 with `reply`."""
    token: object
    error: int
    reply: tuple[int, int, int] | None = None   # offset, size, return_flags


@dataclass(slots=True)
class ReleaseFds:
    """Queue entries that carried these fds are gone: drop one reference of
    each (the filesystem closes a descriptor with its last reference)."""
    fds: tuple


@dataclass(slots=True)
class NodeRemoved:
    """A bus or custom endpoint disappeared from the tree."""
    node: object
