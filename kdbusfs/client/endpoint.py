"""Custom endpoints: ENDPOINT_MAKE and ENDPOINT_UPDATE (fact sheet §6.3).

A custom endpoint is another file in a bus directory, ``<euid>-<name>``,
whose connections see and talk to only what its own policy grants (it
starts empty: nothing).  It lives as long as the fd that made it, the
:class:`Endpoint` object.
"""

from __future__ import annotations

import os
from typing import Iterable

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I

from . import _sys
from . import commands as cmds
from .bus import access_flags

#: (name, [(access type, access level, uid or gid), ...]) per policy entry.
PolicyEntry = tuple[str, Iterable[tuple[int, int, int]]]


def policy_items(entries: Iterable[PolicyEntry]) -> bytes:
    """NAME + POLICY_ACCESS items for ENDPOINT_UPDATE (a name then its grants)."""
    out = b""
    for name, grants in entries:
        out += I.item_string(C.KDBUS_ITEM_NAME, name)
        for type_, access, id_ in grants:
            out += I.item_policy_access(type_, access, id_)
    return out


class Endpoint(_sys.OwnedFd):
    """A custom endpoint made by this process; ``path`` is its file.

    Closing it (close(), the end of a ``with`` block) closes the owner fd,
    which removes the endpoint and disconnects its connections.
    """

    def __init__(self, fd: int, bus_dir: str, name: str, flags: int):
        self._fd = fd
        self.bus_dir = bus_dir
        self.name = name
        self.path = os.path.join(bus_dir, name)
        self.flags = flags

    def update_policy(self, entries: Iterable[PolicyEntry]) -> None:
        """ENDPOINT_UPDATE: replace the whole policy with ``entries``."""
        buf = _sys.cmd_buffer(cmds.cmd(0, policy_items(entries)))
        _sys.ioctl(self._fd, C.KDBUS_CMD_ENDPOINT_UPDATE, buf)

    def __repr__(self) -> str:
        return f"<Endpoint {self.path} {self._fd_state()}>"


def make_endpoint(bus_dir: str, name: str, *, access: str | None = None,
                  policy: Iterable[PolicyEntry] = ()) -> Endpoint:
    """Create the custom endpoint ``<euid>-<name>`` in ``bus_dir`` (bus owner
    only), then set its ``policy`` if given.  ``access`` as for make_bus.
    Raises OSError with the errno of ENDPOINT_MAKE / ENDPOINT_UPDATE."""
    full = f"{os.geteuid()}-{name}"
    flags = access_flags(access)
    fd = _sys.open_command(os.path.join(bus_dir, "bus"), C.KDBUS_CMD_ENDPOINT_MAKE,
                           lambda: cmds.cmd(flags, I.item_string(C.KDBUS_ITEM_MAKE_NAME, full)))
    ep = Endpoint(fd, bus_dir, full, flags)
    policy = list(policy)
    if policy:
        try:
            ep.update_policy(policy)
        except BaseException:
            ep.close()
            raise
    return ep
