"""Build pool slices the way the fact sheet (§6.11, §4) lays them out.

Used by the unit tests of the client's parsers; independent of the client
code (it uses only the ABI module's item encoders).
"""

from __future__ import annotations

import struct

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I

MSG = struct.Struct("<QQqQQQQQ")
NULL_VEC_OFFSET = (1 << 64) - 1


def align8(n: int) -> int:
    return (n + 7) & ~7


def pad8(b: bytes) -> bytes:
    return b + bytes(-len(b) & 7)


def build_message(*, flags=0, priority=0, dst_id=0, src_id=0, payload_type=C.KDBUS_PAYLOAD_DBUS,
                  cookie=0, word=0, vecs=(), before=(), after=(), metadata=(),
                  null_offset=NULL_VEC_OFFSET) -> bytes:
    """A received message slice.

    ``vecs``: each bytes (a data vec) or an int n (a NULL vec of n bytes).
    ``before``/``after``: encoded user items around the vecs (DST_NAME,
    FDS, BLOOM_FILTER...).  ``metadata``: encoded metadata items (the last
    one is left unpadded in msg.size).  ``null_offset``: what a NULL vec
    reports (~0, or P-1 for the re-basing quirk; pass None for P-1).
    """
    n_vecs = len(vecs)
    user = b"".join(before) + bytes(I.item_size(16) * n_vecs) + b"".join(after)
    meta = b"".join(metadata)
    # msg.size excludes the last item's padding
    if metadata:
        last = metadata[-1]
        last_size = struct.unpack_from("<Q", last)[0]
        size = MSG.size + len(user) + len(meta) - len(last) + last_size
    elif before or after or vecs:
        items = list(before) + [None] * n_vecs + list(after)
        last = items[-1]
        unpadded = 32 if last is None else struct.unpack_from("<Q", last)[0]
        size = MSG.size + len(user) - align8(unpadded) + unpadded
    else:
        size = MSG.size
    p = align8(size)
    stream = b""
    vec_items = []
    for v in vecs:
        if isinstance(v, int):
            off = (p - 1) if null_offset is None else null_offset
            vec_items.append(I.item_payload_off(v, off))
            stream += bytes(v % 8)
        else:
            vec_items.append(I.item_payload_off(len(v), p + len(stream)))
            stream += v
    user = b"".join(before) + b"".join(vec_items) + b"".join(after)
    header = MSG.pack(size, flags, priority, dst_id, src_id, payload_type, cookie, word)
    body = header + user + meta
    body = body + bytes(p - len(body))
    assert len(body) == p
    return pad8(body + stream)


def build_info(id_: int, flags: int, items=()) -> bytes:
    """A kdbus_info record, its size including the padding."""
    body = b"".join(items)
    rec = struct.pack("<QQQ", 0, id_, flags) + body
    rec = pad8(rec)
    return struct.pack("<Q", len(rec)) + rec[8:]
