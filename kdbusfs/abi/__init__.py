"""The kdbus ABI: kdbus.h (the single source of truth, shipped for C
clients), cffi declarations and Python constants built from it, names,
item and command parsing.

Submodules: constants, ffi, errors, limits, names, items, commands.
"""

import os as _os

from . import constants, limits
from .commands import (
    COMMANDS,
    MSG_FLAGS,
    MSG_ITEMS,
    MSG_SIZE,
    RETURN_FLAGS_OFFSET,
    Command,
    CommandSpec,
    Msg,
    check_command_size,
    check_mandatory,
    check_msg_size,
    command_spec,
    parse_command,
    parse_msg,
)
from .constants import IOCTL_NAMES, ITEM_NAMES
from .errors import KdbusError, fail
from .ffi import ffi, offsetof, sizeof
from .items import (
    HEADER_SIZE,
    Item,
    align8,
    check_payload,
    encode_item,
    encode_items,
    item_size,
    parse_items,
    walk_items,
)
from .names import (
    check_bus_prefix,
    check_sysname,
    is_valid_string,
    is_well_known_name,
    is_wildcard_name,
    parse_string,
)

HEADER_PATH = _os.path.join(_os.path.dirname(__file__), "kdbus.h")

__all__ = [
    "COMMANDS", "Command", "CommandSpec", "HEADER_PATH", "HEADER_SIZE", "IOCTL_NAMES",
    "ITEM_NAMES", "Item", "KdbusError", "MSG_FLAGS", "MSG_ITEMS", "MSG_SIZE", "Msg",
    "RETURN_FLAGS_OFFSET", "align8", "check_bus_prefix", "check_command_size",
    "check_mandatory", "check_msg_size", "check_payload", "check_sysname", "command_spec",
    "constants", "encode_item", "encode_items", "fail", "ffi", "is_valid_string",
    "is_well_known_name", "is_wildcard_name", "item_size", "limits", "offsetof",
    "parse_command", "parse_items", "parse_msg", "parse_string", "sizeof", "walk_items",
]
