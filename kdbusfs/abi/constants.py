"""Every #define and enumerator of kdbus.h as a Python int, same names.

Values are computed from the header at import time (ioctl numbers from the
_IOx() macro and the cffi struct size), so kdbus.h stays the only source.
"""

from __future__ import annotations

from . import _header
from .ffi import HEADER_TEXT, sizeof

VALUES: dict[str, int] = _header.evaluate(HEADER_TEXT, sizeof)
globals().update(VALUES)

#: {ioctl number: "KDBUS_CMD_..."}
IOCTL_NAMES: dict[int, str] = {VALUES[n]: n for n in _header.ioctl_defines(HEADER_TEXT)}

#: {item type: "KDBUS_ITEM_..."}, public names only (no _KDBUS_ITEM_*BASE).
ITEM_NAMES: dict[int, str] = {}
for _tag, _members in _header.enums(HEADER_TEXT):
    if _tag == "kdbus_item_type":
        for _name, _ in _members:
            if _name.startswith("KDBUS_ITEM_"):
                ITEM_NAMES.setdefault(VALUES[_name], _name)
ITEM_NAMES[VALUES["_KDBUS_ITEM_NULL"]] = "_KDBUS_ITEM_NULL"
del _tag, _members, _name

__all__ = sorted(VALUES) + ["VALUES", "IOCTL_NAMES", "ITEM_NAMES"]
