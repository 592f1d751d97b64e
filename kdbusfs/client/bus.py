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


class Bus:
    """A bus created by this process.

    ``name`` is the full bus name (``<euid>-<suffix>``), ``dir`` its
    directory in the mount and ``path`` its default endpoint file (``bus``),
    which :meth:`Connection.open` takes.
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

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("bus is closed")
        return self._fd

    def connect(self, **kwargs):
        """Connection.open(self.path, **kwargs)."""
        from .connection import Connection
        return Connection.open(self.path, **kwargs)

    def close(self) -> None:
        """Close the owner fd, which destroys the bus."""
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> "Bus":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def __repr__(self) -> str:
        state = "closed" if self.closed else f"fd={self._fd}"
        return f"<Bus {self.name} at {self.dir} {state}>"


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
    fd = os.open(os.path.join(mount_path, "control"), os.O_RDWR | os.O_CLOEXEC)
    try:
        buf = _sys.cmd_buffer(cmds.bus_make(full, bloom_size, n_hash, flags, attach_send))
        _sys.ioctl(fd, C.KDBUS_CMD_BUS_MAKE, buf)
    except BaseException:
        os.close(fd)
        raise
    return Bus(fd, mount_path, full, bloom_size, n_hash, flags)
