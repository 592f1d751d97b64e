"""A small harness for driving the sans-IO engine directly, with no mount."""

from __future__ import annotations

import struct

from kdbusfs.abi import constants as K
from kdbusfs.abi.items import Item, encode_item
from kdbusfs.core.domain import Domain
from kdbusfs.core.identity import simple_identity
from kdbusfs.core.message import Outgoing

HEADER = struct.Struct("<QQqQQQQQ")


class FakeClock:
    def __init__(self):
        self.now = 1_000_000_000

    def __call__(self):
        return self.now


def make_domain():
    clock = FakeClock()
    d = Domain(clock=clock, realtime=lambda: 42, random_bytes=lambda n: bytes(n))
    d.test_clock = clock
    return d


def make_bus(d, uid=1000, name="test", bloom_size=8, flags=K.KDBUS_MAKE_ACCESS_WORLD):
    who = simple_identity(uid)
    return d.bus_make(who, flags=flags, name=f"{uid}-{name}", bloom_size=bloom_size, n_hash=1)


def hello(d, bus, uid=1000, *, flags=0, pool_size=1 << 16, recv=0, send=0, ep=None,
          privileged=False, **kw):
    who = simple_identity(uid, privileged=privileged)
    c = d.hello(ep or bus.default, who, flags=flags, pool_size=pool_size, attach_recv=recv,
                attach_send=send, **kw)
    if not flags & K.KDBUS_HELLO_POLICY_HOLDER:
        d.free(c, c.hello_slice[0])
    return c


def msg(dst_id=0, payload=b"", *, dst_name=None, flags=0, cookie=1, timeout_or_reply=0,
        priority=0, bloom=None, bloom_gen=0):
    parts = []
    if payload:
        parts.append((K.KDBUS_ITEM_PAYLOAD_VEC, struct.pack("<QQ", len(payload), 1), payload))
    if dst_name is not None:
        parts.append((K.KDBUS_ITEM_DST_NAME, dst_name.encode() + b"\0", None))
    b = 0
    if bloom is not None:
        parts.append((K.KDBUS_ITEM_BLOOM_FILTER, struct.pack("<Q", bloom_gen) + bloom, None))
        b = int.from_bytes(bloom, "little")
    return Outgoing(flags=flags, priority=priority, dst_id=dst_id, src_id=0,
                    payload_type=K.KDBUS_PAYLOAD_DBUS, cookie=cookie,
                    timeout_or_reply=timeout_or_reply, parts=parts, bloom_generation=bloom_gen,
                    bloom=b, dst_name=dst_name)


def signal(payload=b"", bloom=bytes(8), dst_id=K.KDBUS_DST_ID_BROADCAST, **kw):
    return msg(dst_id, payload, flags=K.KDBUS_MSG_SIGNAL, bloom=bloom, **kw)


class Received:
    def __init__(self, raw: bytes):
        (self.size, self.flags, self.priority, self.dst_id, self.src_id, self.payload_type,
         self.cookie, self.cookie_reply) = HEADER.unpack_from(raw)
        self.items = []
        pos = 64
        payload = b""
        while pos < self.size:
            size, t = struct.unpack_from("<QQ", raw, pos)
            body = raw[pos + 16:pos + size]
            self.items.append((t, body))
            if t == K.KDBUS_ITEM_PAYLOAD_OFF:
                n, off = struct.unpack_from("<QQ", body)
                payload += raw[off:off + n]
            pos += (size + 7) & ~7
        self.payload = payload

    def item(self, t):
        for it, body in self.items:
            if it == t:
                return body
        return None

    def types(self):
        return [t for t, _ in self.items]


def recv(d, conn, flags=0, priority=0):
    """Receive the next message (or None on EAGAIN), copy it, free it."""
    res = d.recv(conn, flags=flags, priority=priority)
    if res.error or flags & K.KDBUS_RECV_DROP:
        return None
    raw = conn.pool.read(res.offset, res.size)
    if not flags & K.KDBUS_RECV_PEEK:
        d.free(conn, res.offset)
    m = Received(raw)
    m.dropped = res.dropped
    return m


def drain(d, conn):
    out = []
    while (m := recv(d, conn)) is not None:
        out.append(m)
    return out


def match_items(*pairs):
    return [Item(t, 0, p) for t, p in pairs]


def notify_id_rule(type_, id_=K.KDBUS_MATCH_ID_ANY):
    return (type_, struct.pack("<QQ", id_, 0))


def notify_name_rule(type_, old=K.KDBUS_MATCH_ID_ANY, new=K.KDBUS_MATCH_ID_ANY, name=None):
    p = struct.pack("<4Q", old, 0, new, 0)
    if name is not None:
        p += name.encode() + b"\0"
    return (type_, p)
