"""A bus connection: open an endpoint, HELLO, map the pool (fact sheet §6.4-6.7).

The methods for messages (messaging.py), names (names.py), introspection
(info.py) and matches (match.py) live in their own modules as mixins; this
module holds the connection's lifetime and the small commands (FREE,
UPDATE, BYEBYE).
"""

from __future__ import annotations

import itertools
import os
import uuid
from typing import Iterable

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I

from . import _sys
from . import commands as cmds
from . import fds as fdchan
from .info import InfoMixin
from .match import AUTO_COOKIE_BASE, MatchMixin
from .messaging import MessagingMixin
from .names import NamesMixin
from .pool import Pool

DEFAULT_POOL_SIZE = 16 * 1024 * 1024


class Connection(MessagingMixin, NamesMixin, InfoMixin, MatchMixin, _sys.OwnedFd):
    """One connection to a bus.  Create it with :meth:`Connection.open`.

    Attributes: ``id`` (the unique id), ``id128`` (the bus UUID, 16 bytes),
    ``bus_flags`` (the BUS_MAKE flags), ``bloom_size`` / ``bloom_n_hash``
    (the bus bloom parameters), ``pool_size``, ``flags`` (the HELLO flags),
    ``dropped`` (messages lost so far, as reported by RECV).

    Threads may share a connection (e.g. one blocked in :meth:`call` while
    another receives), but it must not be closed while another thread is
    still inside one of its methods: close() unmaps the pool.
    """

    def __init__(self, fd: int, path: str):
        # Use Connection.open(); this only sets the fields.
        self._fd = fd
        self.path = path
        self.id = 0
        self.id128 = bytes(16)
        self.bus_flags = 0
        self.flags = 0
        self.attach_flags_send = 0
        self.attach_flags_recv = 0
        self.bloom_size = 0
        self.bloom_n_hash = 0
        self.pool_size = 0
        self.pool: Pool | None = None
        self.dropped = 0
        self.last_dropped = 0
        self._cookies = itertools.count(1)
        self._match_cookies = itertools.count(AUTO_COOKIE_BASE)
        self._fd_channel = None         # fds.FdChannel: how received fds arrive

    # ------------------------------------------------------------------
    # lifetime

    @classmethod
    def open(cls, bus_path: str, *, pool_size: int = DEFAULT_POOL_SIZE,
             attach_recv: int = 0, attach_send: int = 0, accept_fd: bool = False,
             description: str | None = None, monitor: bool = False,
             activator: str | None = None, policy_holder: str | None = None,
             policy: Iterable[tuple[int, int, int]] = (),
             creds: tuple[int, ...] | None = None,
             pids: tuple[int, int, int] | None = None) -> "Connection":
        """Open ``bus_path`` (an endpoint file, or a bus directory for its
        ``bus``), HELLO and map the pool.

        ``attach_recv``: the metadata (KDBUS_ATTACH_*) wanted on received
        messages; ``attach_send``: what this connection lets others see.
        ``accept_fd``: receive FDS.  ``description``: CONN_DESCRIPTION.
        ``monitor`` / ``activator=NAME`` / ``policy_holder=NAME`` make a
        special connection (bus owner only); ``policy`` gives their
        POLICY_ACCESS entries as (type, access, id).
        ``creds`` (uid, euid, suid, fsuid, gid, egid, sgid, fsgid) and
        ``pids`` (pid, tid, ppid) fake the connection's credentials (bus
        owner only; -1 / 0 leave one unset), as a proxy acting for another
        process does.
        Raises OSError with the errno of open() or HELLO.
        """
        if os.path.isdir(bus_path):
            bus_path = os.path.join(bus_path, "bus")
        flags = 0
        items = b""
        if accept_fd:
            flags |= C.KDBUS_HELLO_ACCEPT_FD
        if monitor:
            flags |= C.KDBUS_HELLO_MONITOR
        if activator is not None:
            flags |= C.KDBUS_HELLO_ACTIVATOR
            items += I.item_string(C.KDBUS_ITEM_NAME, activator)
        if policy_holder is not None:
            flags |= C.KDBUS_HELLO_POLICY_HOLDER
            items += I.item_string(C.KDBUS_ITEM_NAME, policy_holder)
        for type_, access, id_ in policy:
            items += I.item_policy_access(type_, access, id_)
        if description is not None:
            items += I.item_string(C.KDBUS_ITEM_CONN_DESCRIPTION, description)
        if creds is not None:
            items += I.item_creds(*(c & 0xFFFFFFFF for c in creds))
        if pids is not None:
            items += I.item_pids(*pids)

        fd = os.open(bus_path, os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        conn = cls(fd, bus_path)
        try:
            buf = _sys.cmd_buffer(cmds.hello(flags, attach_send, attach_recv, pool_size, items))
            _sys.ioctl(fd, C.KDBUS_CMD_HELLO, buf)
            (_size, conn.flags, _rf, conn.attach_flags_send, conn.attach_flags_recv,
             conn.bus_flags, conn.id, conn.pool_size, offset, items_size,
             conn.id128) = cmds.HELLO.unpack_from(buf)
            conn.flags = flags
            conn.pool = Pool(fd, conn.pool_size)
            if items_size:
                # policy holders cannot FREE (EOPNOTSUPP): their slice stays
                holder = bool(flags & C.KDBUS_HELLO_POLICY_HOLDER)
                data = conn._read_slice(offset, items_size, holder)
                for item in I.walk_items(data, 0, len(data)):
                    if item.type == C.KDBUS_ITEM_BLOOM_PARAMETER:
                        conn.bloom_size, conn.bloom_n_hash = I.decode_bloom_parameter(item.payload)
            if not flags & C.KDBUS_HELLO_POLICY_HOLDER:
                conn._fd_channel = fdchan.open_channel(fd)
        except BaseException:
            conn.close()
            raise
        return conn

    @property
    def bus_uuid(self) -> uuid.UUID:
        return uuid.UUID(bytes=bytes(self.id128))

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("connection is closed")
        return self._fd

    def close(self) -> None:
        """Unmap the pool and close the fd (which disconnects)."""
        if self._fd_channel is not None:
            ch, self._fd_channel = self._fd_channel, None
            ch.close()
        if self.pool is not None:
            pool, self.pool = self.pool, None
            pool.close()
        super().close()

    def __repr__(self) -> str:
        return f"<Connection {self.id} on {self.path} {self._fd_state()}>"

    # ------------------------------------------------------------------
    # pool

    def _next_cookie(self) -> int:
        # next() on a count is atomic under the GIL: threads may share a connection
        return next(self._cookies) & ((1 << 64) - 1) or next(self._cookies)

    def _read_slice(self, offset: int, size: int, keep: bool) -> bytes:
        """Copy a published slice out of the pool, then FREE it unless ``keep``."""
        if self.pool is None:
            raise ValueError("connection is closed")
        try:
            return self.pool.read(offset, size)
        finally:
            if not keep:
                self.free(offset)

    def free(self, offset: int) -> None:
        """FREE the pool slice at ``offset`` (ENXIO if it is not a published slice)."""
        _sys.ioctl(self._fd, C.KDBUS_CMD_FREE, _sys.cmd_buffer(cmds.free(offset)))

    # ------------------------------------------------------------------
    # small commands

    def update(self, *, attach_send: int | None = None, attach_recv: int | None = None) -> None:
        """UPDATE the attach flags (None leaves one unchanged)."""
        items = b""
        if attach_send is not None:
            items += I.item_u64(C.KDBUS_ITEM_ATTACH_FLAGS_SEND, attach_send)
        if attach_recv is not None:
            items += I.item_u64(C.KDBUS_ITEM_ATTACH_FLAGS_RECV, attach_recv)
        _sys.ioctl(self._fd, C.KDBUS_CMD_UPDATE, _sys.cmd_buffer(cmds.cmd(0, items)))
        if attach_send is not None:
            self.attach_flags_send = attach_send
        if attach_recv is not None:
            self.attach_flags_recv = attach_recv

    def byebye(self) -> None:
        """BYEBYE: disconnect now, if nothing is queued (EBUSY otherwise).

        The fd stays open (close() it); later commands give ECONNRESET.
        """
        _sys.ioctl(self._fd, C.KDBUS_CMD_BYEBYE, _sys.cmd_buffer(cmds.cmd()))
