"""Byte layouts of the kdbus command structs and pure builders for them.

The formats are checked against kdbus.h (through the ABI module's cffi view)
at import time, so a header change that moves a field fails loudly here
instead of corrupting commands.
"""

from __future__ import annotations

import struct
from typing import Iterable, Sequence

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I
from kdbusfs.abi.ffi import offsetof, sizeof

# kdbus_cmd: size, flags, return_flags
CMD = struct.Struct("<QQQ")
# kdbus_cmd_hello: size, flags, return_flags, attach_flags_send,
# attach_flags_recv, bus_flags, id, pool_size, offset, items_size, id128
HELLO = struct.Struct("<QQQQQQQQQQ16s")
# kdbus_cmd_free: size, flags, return_flags, offset
FREE = struct.Struct("<QQQQ")
# kdbus_cmd_info: size, flags, return_flags, id, attach_flags, offset, info_size
INFO = struct.Struct("<QQQQQQQ")
# kdbus_cmd_list: size, flags, return_flags, offset, list_size
LIST = struct.Struct("<QQQQQ")
# kdbus_cmd_send: size, flags, return_flags, msg_address,
# reply.offset, reply.msg_size, reply.return_flags
SEND = struct.Struct("<QQQQQQQ")
# kdbus_cmd_recv: size, flags, return_flags, priority, dropped_msgs,
# msg.offset, msg.msg_size, msg.return_flags
RECV = struct.Struct("<QQQqQQQQ")
# kdbus_cmd_match: size, flags, return_flags, cookie
MATCH = struct.Struct("<QQQQ")
# kdbus_msg: size, flags, priority, dst_id, src_id, payload_type, cookie,
# timeout_ns / cookie_reply
MSG = struct.Struct("<QQqQQQQQ")
# kdbus_info: size, id, flags
INFO_RECORD = struct.Struct("<QQQ")

U64 = struct.Struct("<Q")

# Offsets of the fields written back, used with unpack_from.
HELLO_BUS_FLAGS = offsetof("kdbus_cmd_hello", "bus_flags")
SEND_REPLY = offsetof("kdbus_cmd_send", "reply")
RECV_DROPPED = offsetof("kdbus_cmd_recv", "dropped_msgs")
RECV_MSG = offsetof("kdbus_cmd_recv", "msg")
INFO_OFFSET = offsetof("kdbus_cmd_info", "offset")
LIST_OFFSET = offsetof("kdbus_cmd_list", "offset")
RETURN_FLAGS = offsetof("kdbus_cmd", "return_flags")

MSG_INFO = struct.Struct("<QQQ")  # kdbus_msg_info: offset, msg_size, return_flags


def _check_layouts() -> None:
    for fmt, name in ((CMD, "kdbus_cmd"), (HELLO, "kdbus_cmd_hello"),
                      (FREE, "kdbus_cmd_free"), (INFO, "kdbus_cmd_info"),
                      (LIST, "kdbus_cmd_list"), (SEND, "kdbus_cmd_send"),
                      (RECV, "kdbus_cmd_recv"), (MATCH, "kdbus_cmd_match"),
                      (MSG, "kdbus_msg"), (INFO_RECORD, "kdbus_info"),
                      (MSG_INFO, "kdbus_msg_info")):
        if fmt.size != sizeof(name):
            raise ImportError(f"client layout of {name} ({fmt.size}) "
                              f"disagrees with kdbus.h ({sizeof(name)})")
    expected = {
        ("kdbus_cmd_hello", "id"): 48, ("kdbus_cmd_hello", "pool_size"): 56,
        ("kdbus_cmd_hello", "offset"): 64, ("kdbus_cmd_hello", "id128"): 80,
        ("kdbus_cmd_send", "msg_address"): 24, ("kdbus_cmd_send", "reply"): 32,
        ("kdbus_cmd_recv", "priority"): 24, ("kdbus_cmd_recv", "msg"): 40,
        ("kdbus_cmd_info", "attach_flags"): 32, ("kdbus_cmd_match", "cookie"): 24,
        ("kdbus_msg", "cookie_reply"): 56, ("kdbus_msg", "timeout_ns"): 56,
        ("kdbus_msg", "payload_type"): 40,
    }
    for (s, f), off in expected.items():
        if offsetof(s, f) != off:
            raise ImportError(f"client layout of {s}.{f} disagrees with kdbus.h")


_check_layouts()

HELLO_SIZE = HELLO.size
MSG_HEADER_SIZE = MSG.size


# --------------------------------------------------------------------------
# builders (pure: bytes in, bytes out)


def cmd(flags: int = 0, items: bytes = b"") -> bytes:
    """A kdbus_cmd with ``items`` (already encoded) appended."""
    return CMD.pack(CMD.size + len(items), flags, 0) + items


def bus_make(name: str, bloom_size: int, n_hash: int, flags: int = 0,
             attach_send: int = 0) -> bytes:
    items = I.item_bloom_parameter(bloom_size, n_hash) + I.item_string(C.KDBUS_ITEM_MAKE_NAME, name)
    if attach_send:
        items += I.item_u64(C.KDBUS_ITEM_ATTACH_FLAGS_SEND, attach_send)
    return cmd(flags, items)


def hello(flags: int, attach_send: int, attach_recv: int, pool_size: int,
          items: bytes = b"") -> bytes:
    return HELLO.pack(HELLO.size + len(items), flags, 0, attach_send, attach_recv,
                      0, 0, pool_size, 0, 0, bytes(16)) + items


def free(offset: int) -> bytes:
    return FREE.pack(FREE.size, 0, 0, offset)


def recv(flags: int, priority: int = 0) -> bytes:
    return RECV.pack(RECV.size, flags, 0, priority, 0, 0, 0, 0)


def send(flags: int, msg_address: int, items: bytes = b"") -> bytes:
    return SEND.pack(SEND.size + len(items), flags, 0, msg_address, 0, 0, 0) + items


def info(id: int, attach: int, items: bytes = b"") -> bytes:
    return INFO.pack(INFO.size + len(items), 0, 0, id, attach, 0, 0) + items


def list_(flags: int) -> bytes:
    return LIST.pack(LIST.size, flags, 0, 0, 0)


def match(cookie: int, flags: int = 0, items: bytes = b"") -> bytes:
    return MATCH.pack(MATCH.size + len(items), flags, 0, cookie) + items


def message(*, dst_id: int, src_id: int = 0, flags: int = 0, priority: int = 0,
            payload_type: int = C.KDBUS_PAYLOAD_DBUS, cookie: int = 0,
            timeout_or_reply: int = 0, dst_name: str | bytes | None = None,
            vecs: Sequence[tuple[int, int]] = (), fds: Sequence[int] | None = None,
            memfds: Sequence[tuple[int, int, int]] = (),
            bloom: tuple[int, bytes] | None = None) -> bytes:
    """A kdbus_msg with its items, in the order the kernel keeps them.

    ``vecs`` are (size, address) pairs (address 0 = a NULL padding vec);
    ``memfds`` are (fd, start, size); ``bloom`` is (generation, filter bytes).
    """
    parts: list[bytes] = []
    if dst_name is not None:
        parts.append(I.item_string(C.KDBUS_ITEM_DST_NAME, dst_name))
    for size, address in vecs:
        parts.append(I.item_vec(size, address))
    for fd, start, size in memfds:
        parts.append(I.item_memfd(start, size, fd))
    if fds is not None:
        parts.append(I.item_fds(fds))
    if bloom is not None:
        parts.append(I.item_bloom_filter(bloom[0], bloom[1]))
    items = b"".join(parts)
    return MSG.pack(MSG.size + len(items), flags, priority, dst_id, src_id,
                    payload_type, cookie, timeout_or_reply) + items


def items_of(pairs: Iterable[tuple[int, bytes]]) -> bytes:
    return I.encode_items(pairs)
