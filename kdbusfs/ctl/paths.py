"""Finding mounts, buses and endpoints from what the user typed, and saying
clearly what went wrong when a path is none of them."""

from __future__ import annotations

import errno
import os

ENV_BUS = "KDBUSCTL_BUS"


class CtlError(Exception):
    """A failure to report as ``kdbusctl: <message>`` with exit ``status``."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


def is_mount(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "control"))


def is_bus_dir(path: str) -> bool:
    return os.path.isdir(path) and os.path.isfile(os.path.join(path, "bus"))


def buses_in(mount: str) -> list[str]:
    """The bus directories of a mount, sorted by name."""
    try:
        names = sorted(os.listdir(mount))
    except OSError as e:
        raise CtlError(f"{mount}: {e.strerror}") from None
    return [os.path.join(mount, n) for n in names if is_bus_dir(os.path.join(mount, n))]


def resolve_bus(path: str | None) -> str:
    """The endpoint file to connect to for ``path`` (a bus directory or an
    endpoint file), defaulting to $KDBUSCTL_BUS."""
    if not path:
        path = os.environ.get(ENV_BUS)
        if not path:
            raise CtlError(f"no bus given: use --bus BUS (a bus directory such as "
                           f"MOUNT/0-name) or set ${ENV_BUS}", 2)
    if is_bus_dir(path):
        return os.path.join(path, "bus")
    if os.path.isfile(path) and is_bus_dir(os.path.dirname(os.path.abspath(path))):
        return path
    if is_mount(path):
        found = [os.path.basename(b) for b in buses_in(path)]
        hint = f"; its buses: {', '.join(found)}" if found else "; it has no bus yet"
        raise CtlError(f"{path} is a kdbusfs mount, not a bus{hint}", 2)
    if not os.path.exists(path):
        raise CtlError(f"{path}: no such bus (expected MOUNT/<uid>-<name>)", 2)
    raise CtlError(f"{path} is neither a bus directory nor an endpoint file", 2)


def explain(e: OSError, what: str) -> CtlError:
    """A CtlError that says what an errno means for ``what``."""
    hints = {
        errno.EACCES: "permission denied (a bus is private to its owner unless made with "
                      "--access group or world)",
        errno.EPERM: "not allowed: only the bus owner (or root) may do this",
        errno.ENOENT: "no such bus or endpoint",
        errno.ESHUTDOWN: "the bus is shutting down",
        errno.ECONNRESET: "the bus went away",
        errno.EEXIST: "that name is taken",
        errno.EMFILE: "a kdbus limit was reached (16 buses per user, 1024 connections)",
    }
    return CtlError(f"{what}: {hints.get(e.errno, e.strerror or str(e))}")
