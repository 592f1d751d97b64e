"""The bytes of a message as a receiver finds it in its pool (ABI §6.11).

Layout: the 64-byte header as sent (src_id filled in), the sender's items
in their order (PAYLOAD_VEC turned into PAYLOAD_OFF), metadata items, then
the payload stream at P = ALIGN8(msg.size).  The metadata, and so P and
every payload offset, depends on the receiver, so records are built per
receiver; the payload bytes are shared.
"""

from __future__ import annotations

import struct

from ..abi import constants as K
from ..abi.items import align8, encode_item

HEADER = struct.Struct("<QQqQQQQQ")   # size flags priority dst src type cookie timeout
_VEC = struct.Struct("<QQ")
NULL_VEC_OFFSET = 0xFFFFFFFFFFFFFFFF


class Outgoing:
    """A validated message on its way: header fields, items and payload."""
    __slots__ = ("flags", "priority", "dst_id", "src_id", "payload_type", "cookie",
                 "timeout_or_reply", "parts", "stream_len", "fds", "memfds",
                 "bloom_generation", "bloom", "dst_name")

    def __init__(self, *, flags, priority, dst_id, src_id, payload_type, cookie,
                 timeout_or_reply, parts, fds=(), memfds=(), bloom_generation=0,
                 bloom=0, dst_name=None):
        self.flags = flags
        self.priority = priority
        self.dst_id = dst_id
        self.src_id = src_id
        self.payload_type = payload_type
        self.cookie = cookie
        self.timeout_or_reply = timeout_or_reply
        # parts: (type, payload, data) in item order; data is the vec's bytes
        # (None for a NULL vec) and is only used for PAYLOAD_VEC.
        self.parts = parts
        self.stream_len = 0
        for t, payload, data in parts:
            if t == K.KDBUS_ITEM_PAYLOAD_VEC:
                size = _VEC.unpack_from(payload)[0]
                self.stream_len += size if data is not None else size % 8
            elif t == K.KDBUS_ITEM_PAYLOAD_MEMFD:
                self.stream_len += struct.unpack_from("<Q", payload, 8)[0] % 8
        self.fds = fds
        self.memfds = memfds
        self.bloom_generation = bloom_generation
        self.bloom = bloom
        self.dst_name = dst_name


def _items_block(msg: Outgoing, payload_base: int) -> list[bytes]:
    out = []
    pos = payload_base
    for t, payload, data in msg.parts:
        if t == K.KDBUS_ITEM_PAYLOAD_VEC:
            size = _VEC.unpack_from(payload)[0]
            if data is None:
                out.append(encode_item(K.KDBUS_ITEM_PAYLOAD_OFF, _VEC.pack(size, NULL_VEC_OFFSET)))
                pos += size % 8
            else:
                out.append(encode_item(K.KDBUS_ITEM_PAYLOAD_OFF, _VEC.pack(size, pos)))
                pos += size
        elif t == K.KDBUS_ITEM_PAYLOAD_MEMFD:
            # the fd is filled in at RECV
            start, size = struct.unpack_from("<QQ", payload)
            out.append(encode_item(t, struct.pack("<QQiI", start, size, -1, 0)))
            pos += size % 8
        elif t == K.KDBUS_ITEM_FDS:
            out.append(encode_item(t, struct.pack(f"<{len(payload) // 4}i",
                                                  *([-1] * (len(payload) // 4)))))
        else:
            out.append(encode_item(t, payload))
    return out


def _unpadded_end(items: list[bytes]) -> int:
    """Bytes up to the end of the last item, without its padding."""
    total = sum(len(i) for i in items)
    if items:
        last = items[-1]
        total -= len(last) - struct.unpack_from("<Q", last)[0]
    return total


def build_user_record(msg: Outgoing, src_id: int, meta_items: list[bytes]):
    """(head bytes, payload offset P, slice size) for one receiver.

    The payload stream is written separately at P (see `payload_chunks`).
    """
    # P depends only on the padded lengths, so compute it from a first pass
    # with a dummy base, then encode with the real offsets.
    items_len = sum(align8(16 + len(p)) for t, p, _ in msg.parts)
    meta_len = sum(len(i) for i in meta_items)
    payload_base = 64 + items_len + meta_len
    items = _items_block(msg, payload_base)
    allitems = items + meta_items
    size = 64 + _unpadded_end(allitems)
    head = HEADER.pack(size, msg.flags, msg.priority, msg.dst_id, src_id, msg.payload_type,
                       msg.cookie, msg.timeout_or_reply) + b"".join(allitems)
    return head, payload_base, align8(payload_base + msg.stream_len)


def payload_chunks(msg: Outgoing):
    """The payload stream as (relative offset, bytes), zero fill and the
    final padding included: a reused slice must not show old bytes."""
    pos = 0
    for t, payload, data in msg.parts:
        if t == K.KDBUS_ITEM_PAYLOAD_VEC:
            size = _VEC.unpack_from(payload)[0]
            if data is None:
                if size % 8:
                    yield pos, bytes(size % 8)
                pos += size % 8
            else:
                yield pos, data
                pos += size
        elif t == K.KDBUS_ITEM_PAYLOAD_MEMFD:
            n = struct.unpack_from("<Q", payload, 8)[0] % 8
            if n:
                yield pos, bytes(n)
            pos += n
    if pos % 8:
        yield pos, bytes(8 - pos % 8)


def build_kernel_record(*, flags, dst_id, cookie_reply, item: bytes, timestamp) -> bytes:
    """A kernel notification: one notification item, then always TIMESTAMP."""
    ts = encode_item(K.KDBUS_ITEM_TIMESTAMP, struct.pack("<3Q", *timestamp))
    body = item + ts
    size = 64 + _unpadded_end([item, ts])
    return HEADER.pack(size, flags, 0, dst_id, K.KDBUS_SRC_ID_KERNEL,
                       K.KDBUS_PAYLOAD_KERNEL, 0, cookie_reply) + body
