"""Creating a bus: BUS_MAKE on a fresh fd of a mount's ``control`` file.

The bus lives exactly as long as that fd (the :class:`Bus` object) is open;
closing it removes the bus directory and disconnects every connection.
"""

from __future__ import annotations

import os

from kdbusfs.abi import constants as C

from . import _sys
from . import commands as cmds

_ACCESS = {
    None: 0,
    "owner": 0,
    "group": C.KDBUS_MAKE_ACCESS_GROUP,
    "world": C.KDBUS_MAKE_ACCESS_WORLD,
}


def access_flags(access: str | None) -> int:
    try:
        return _ACCESS[access]
    except KeyError:
        raise ValueError(f"access must be 'world', 'group' or None, not {access!r}") from None


class Bus(_sys.OwnedFd):
    """A bus created by this process.

    ``name`` is the full bus name (``<euid>-<suffix>``), ``dir`` its
    directory in the mount and ``path`` its default endpoint file (``bus``),
    which :meth:`Connection.open` takes.  Closing it (close(), the end of a
    ``with`` block) closes the owner fd, which destroys the bus.
    """

    def __init__(self, fd: int, mount_path: str, name: str, bloom_size: int, n_hash: int,
                 flags: int):
        self._fd = fd
        self.mount_path = mount_path
        self.name = name
        self.dir = os.path.join(mount_path, name)
        self.path = os.path.join(self.dir, "bus")
        self.bloom_size = bloom_size
        self.n_hash = n_hash
        self.flags = flags

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("bus is closed")
        return self._fd

    def connect(self, **kwargs):
        """Connection.open(self.path, **kwargs)."""
        from .connection import Connection
        return Connection.open(self.path, **kwargs)

    def __repr__(self) -> str:
        return f"<Bus {self.name} at {self.dir} {self._fd_state()}>"


def make_bus(mount_path: str, name: str, *, bloom_size: int = 64, n_hash: int = 1,
             access: str | None = None, attach_send: int = 0) -> Bus:
    """Create the bus ``<euid>-<name>`` in the kdbusfs mounted at ``mount_path``.

    ``access`` opens the bus directory and endpoint to the owner's group
    ("group") or to everyone ("world"); None keeps them private.
    ``attach_send`` is the creator metadata BUS_CREATOR_INFO may reveal.
    Raises OSError with the errno of BUS_MAKE (EEXIST for a taken name...).
    """
    full = f"{os.geteuid()}-{name}"
    flags = access_flags(access)
    fd = _sys.open_command(os.path.join(mount_path, "control"), C.KDBUS_CMD_BUS_MAKE,
                           lambda: cmds.bus_make(full, bloom_size, n_hash, flags, attach_send))
    return Bus(fd, mount_path, full, bloom_size, n_hash, flags)
