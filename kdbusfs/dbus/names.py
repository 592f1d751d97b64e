"""D-Bus names on a kdbus bus.

A kdbus connection id N is the D-Bus unique name ``:1.N``, as sd-bus named
kdbus peers.  Well-known names are kdbus names unchanged (both follow the
same syntax).  ``org.freedesktop.DBus`` is nobody on kdbus: the bus driver
is emulated by whoever speaks D-Bus (kdbusfs.dbus.driver).
"""

from __future__ import annotations

import re

DRIVER_NAME = "org.freedesktop.DBus"
DRIVER_PATH = "/org/freedesktop/DBus"
DRIVER_INTERFACE = "org.freedesktop.DBus"

_UNIQUE_RE = re.compile(r":1\.([1-9][0-9]*)\Z")
_ELEMENT = r"[A-Za-z_-][A-Za-z0-9_-]*"
_WELL_KNOWN_RE = re.compile(rf"{_ELEMENT}(?:\.{_ELEMENT})+\Z")
_UNIQUE_ANY_RE = re.compile(r":[A-Za-z0-9_-]+(?:\.[A-Za-z0-9_-]+)+\Z")


def unique_name(conn_id: int) -> str:
    """The unique name of kdbus connection ``conn_id``."""
    return f":1.{conn_id}"


def parse_unique_name(name: str) -> int | None:
    """The connection id of ``:1.N``, or None for anything else."""
    m = _UNIQUE_RE.match(name)
    if m is None:
        return None
    conn_id = int(m.group(1))
    return conn_id if conn_id < (1 << 64) - 1 else None


def is_unique_name(name: str) -> bool:
    """Unique-name syntax (``:`` then dot-separated elements)."""
    return len(name) <= 255 and _UNIQUE_ANY_RE.match(name) is not None


def is_well_known_name(name: str) -> bool:
    """Well-known bus name syntax: >= 2 elements, none starting with a digit."""
    return len(name) <= 255 and _WELL_KNOWN_RE.match(name) is not None


def is_bus_name(name: str) -> bool:
    return is_unique_name(name) or is_well_known_name(name)
