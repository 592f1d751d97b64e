"""Name and string syntax (fact sheet §1.5).

kdbus strings are byte strings.  Where a ``str`` is used, it is the latin-1
view of those bytes, so every byte value round-trips (names may use the
Latin-1 letters 0xC0-0xFF, which the kernel's isalpha() accepts).
"""

from __future__ import annotations

import re
from errno import EINVAL, ENAMETOOLONG

from .errors import KdbusError
from .limits import KDBUS_NAME_MAX_LEN, KDBUS_SYSNAME_MAX_LEN

# The kernel's isalpha(): ASCII letters plus Latin-1 0xC0-0xFF except the
# multiplication (0xD7) and division (0xF7) signs.
_ALPHA = rb"A-Za-z\xc0-\xd6\xd8-\xf6\xf8-\xff"
_ELEMENT = rb"[" + _ALPHA + rb"_\-][" + _ALPHA + rb"0-9_\-]*"
_NAME_RE = re.compile(_ELEMENT + rb"(?:\." + _ELEMENT + rb")+")
_WILDCARD_RE = re.compile(_ELEMENT + rb"(?:\." + _ELEMENT + rb")*\.\*")
# Sysnames: letters, digits and _ anywhere; - and . only inside.
_SYS = rb"[" + _ALPHA + rb"0-9_]"
_SYSNAME_RE = re.compile(_SYS + rb"(?:[" + _ALPHA + rb"0-9_.\-]*" + _SYS + rb")?")


def _as_bytes(name: bytes | str) -> bytes | None:
    if isinstance(name, str):
        try:
            return name.encode("latin-1")
        except UnicodeEncodeError:
            return None
    return bytes(name)


def is_well_known_name(name: bytes | str, allow_wildcard: bool = False) -> bool:
    """Well-known name syntax (without the NUL).

    At most 255 bytes, two or more non-empty dot-separated elements of
    letters, digits, ``_`` and ``-``, no element starting with a digit.
    With ``allow_wildcard`` (policy names only) the last element may be
    exactly ``*``.
    """
    b = _as_bytes(name)
    if b is None or len(b) > KDBUS_NAME_MAX_LEN:
        return False
    if _NAME_RE.fullmatch(b):
        return True
    return allow_wildcard and _WILDCARD_RE.fullmatch(b) is not None


def is_wildcard_name(name: bytes | str) -> bool:
    """A valid policy wildcard name ``x.y.*``."""
    b = _as_bytes(name)
    return (b is not None and len(b) <= KDBUS_NAME_MAX_LEN
            and _WILDCARD_RE.fullmatch(b) is not None)


def is_valid_string(payload: bytes) -> bool:
    """strlen + 1 == len(payload): one NUL, and it is the last byte."""
    return payload.find(b"\0") == len(payload) - 1 and len(payload) > 0


def parse_string(payload: bytes) -> str:
    """Decode a string item payload (NUL included) to its latin-1 ``str``."""
    if payload.find(b"\0") != len(payload) - 1 or not payload:
        raise KdbusError(EINVAL, "string is not NUL-terminated or has an inner NUL")
    return payload[:-1].decode("latin-1")


def check_sysname(payload: bytes) -> str:
    """Validate a MAKE_NAME / CONN_DESCRIPTION payload (NUL included).

    The size checks come first, as in the kernel: a payload below 2 bytes
    is EINVAL, above 64 (63 characters + NUL) ENAMETOOLONG, whatever its
    contents; then the string and character rules give EINVAL.
    """
    n = len(payload)
    if n < 2:
        raise KdbusError(EINVAL, "name too short")
    if n > KDBUS_SYSNAME_MAX_LEN + 1:
        raise KdbusError(ENAMETOOLONG, "name longer than 63 bytes")
    name = parse_string(payload)
    if not _SYSNAME_RE.fullmatch(payload, 0, n - 1):
        raise KdbusError(EINVAL, f"invalid name {name!r}")
    return name


def check_bus_prefix(name: str, euid: int | None) -> None:
    """Bus and custom-endpoint names start with ``<euid>-``.

    ``euid`` is the caller's euid mapped into the domain's user namespace;
    None, -1 or 0xFFFFFFFF mean unmapped, which always fails.
    """
    if euid is None or euid < 0 or euid >= 0xFFFFFFFF:
        raise KdbusError(EINVAL, "euid not mapped in the domain")
    if not name.startswith(f"{euid}-"):
        raise KdbusError(EINVAL, f"name {name!r} does not start with '{euid}-'")
