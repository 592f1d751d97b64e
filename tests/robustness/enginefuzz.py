"""A random-program driver for the engine (issue 7, part 1).

A `World` is one Domain with one bus, a custom endpoint now and then, and
connections of several uids.  Each step draws a command, lays it out as the
bytes a client would pass (kdbusfs.abi parses them, as the ioctl layer does)
and hands the parsed command to the engine the way kdbusfs/fs/ioctl.py does.
The only outcomes allowed are success or a KdbusError with an errno of the
fact sheet (§1.6); after every step the invariants of `check()` must hold:

- pool accounting: `used` is the sum of the live slices, slices and free
  ranges tile the pool exactly, every slice is held (kernel hold <=> it is
  a queued message; user hold <=> the model saw it published and not freed);
- queue accounting: the queued bytes (A) and every per-user quota counter
  are the sums over the queued entries, and a drained queue has no counter;
- reply trackers: a live tracker is known to both ends, both alive; the
  pending-request count is the number of live trackers; every waiting SEND
  is a live synchronous tracker;
- every message is delivered at most once to each receiver (each carries a
  unique serial in its first payload vec), and every blocked SEND ends once.

`finish()` then lets every deadline pass, drains and frees everything (the
quota counters and the pools must return to zero), checks that every
tracker ever made has ended, and tears the domain down.
"""

from __future__ import annotations

import errno
import itertools
import struct

from hypothesis import strategies as st

from kdbusfs.abi import constants as K
from kdbusfs.abi.commands import COMMANDS, check_mandatory, parse_command, parse_msg
from kdbusfs.abi.errors import KdbusError
from kdbusfs.abi.items import encode_item
from kdbusfs.abi.names import parse_string
from kdbusfs.core import metadata as md
from kdbusfs.core import send as sendmod
from kdbusfs.core.connection import POLICY_HOLDER
from kdbusfs.core.domain import Domain
from kdbusfs.core.effects import WaitDone
from kdbusfs.core.identity import simple_identity
from kdbusfs.core.message import Outgoing
from kdbusfs.tools.errnos import SHEET_ERRNOS

U64 = 0xFFFFFFFFFFFFFFFF
OWNER_UID = 1000
UIDS = (1000, 1001, 1002)
NAMES = ("org.a.One", "org.a.Two", "org.b.Three", "com.x.y.Z")
TAG = struct.Struct("<QQ")          # the serial vec's payload: magic, serial
MAGIC = 0x7E57_F022_5E71_A100


class Clock:
    def __init__(self):
        self.now = 10**12

    def __call__(self):
        return self.now


class Token:
    """A blocked SEND (the engine's waiter)."""
    __slots__ = ("conn", "cookie", "state")

    def __init__(self, conn, cookie):
        self.conn = conn
        self.cookie = cookie
        self.state = "waiting"      # -> done | interrupted | cancelled


class Violation(AssertionError):
    pass


def u64s(draw):
    return draw(st.one_of(st.integers(0, 8), st.integers(0, U64),
                          st.sampled_from([U64, U64 - 1, 1 << 63, 1 << 32])))


def cmd_bytes(number, flags=0, fields=None, items=b"", size=None):
    spec = COMMANDS[number]
    head = bytearray(spec.size)
    for name, value in (fields or {}).items():
        struct.pack_into("<Q", head, spec.field_offsets[name], value & U64)
    raw = bytes(head) + items
    struct.pack_into("<QQ", head, 0, len(raw) if size is None else size, flags & U64)
    return bytes(head) + items


def string_item(t, s: str) -> bytes:
    return encode_item(t, s.encode("latin-1", "replace") + b"\0")


class World:
    def __init__(self, data):
        self.data = data
        self.clock = Clock()
        self.d = Domain(clock=self.clock, realtime=lambda: 42,
                        random_bytes=lambda n: bytes(n))
        self.owner = simple_identity(OWNER_UID)
        self.bus = self.d.bus_make(self.owner, flags=K.KDBUS_MAKE_ACCESS_WORLD,
                                   name=f"{OWNER_UID}-fuzz",
                                   bloom_size=self.draw(st.sampled_from([8, 16, 64])),
                                   n_hash=1)
        self.conns = []                 # every connection ever made
        self.published = {}             # conn -> offsets the model saw published
        self.received = set()           # (receiver id, serial)
        self.serials = itertools.count(1)
        self.cookies = itertools.count(1000)
        self.tokens: list[Token] = []
        self.trackers = []              # every Reply tracker ever made
        self.endpoints = []
        self.kept = set()
        self.calls = 0
        self.errors = {}
        self.op_counts = {}
        orig_track = self.d.track

        def track(r):
            self.trackers.append(r)
            orig_track(r)
        self.d.track = track
        # a start that can deliver: ordinary connections, most of them the
        # bus owner's (others need policy to talk), some matching everything
        for uid in (OWNER_UID, OWNER_UID, OWNER_UID, 1001):
            c = self.d.hello(self.bus.default, simple_identity(uid), flags=0,
                             pool_size=self.draw(st.sampled_from([16384, 4096, 65536])),
                             attach_send=0x3fff, attach_recv=self.draw(st.sampled_from(
                                 [0, K.KDBUS_ATTACH_TIMESTAMP | K.KDBUS_ATTACH_NAMES])))
            self.conns.append(c)
            self.published[c] = {c.hello_slice[0]}
            if self.draw(st.booleans()):
                self.d.match_add(c, cookie=1, items=[], replace=False)
        self.d.take_effects()

    # -- drawing ---------------------------------------------------------
    def draw(self, strategy):
        return self.data.draw(strategy)

    def rare(self, percent=8) -> bool:
        return self.draw(st.integers(1, 100)) <= percent

    def pick(self, seq):
        return seq[self.draw(st.integers(0, len(seq) - 1))]

    def live(self, pred=lambda c: True):
        return [c for c in self.conns if c.alive and pred(c)]

    def any_conn(self):
        c = self.live()
        return self.pick(c) if c else None

    def name(self):
        if not self.rare(15):
            return self.pick(NAMES)
        return self.draw(st.one_of(st.text(st.characters(max_codepoint=255), max_size=12),
                                   st.sampled_from(["org.*", "a", "org..x", "1a.b", "x" * 256])))

    def some_id(self):
        ids = [c.id for c in self.conns]
        if self.draw(st.integers(0, 4)) != 4:
            return self.pick(ids)
        return self.draw(st.one_of(st.sampled_from([0, self.bus.id, U64, 999999]),
                                   st.integers(0, U64)))

    def deadline(self):
        now = self.clock.now
        return self.draw(st.sampled_from([now + 10**9, now + 10**6, now + 10**12, now + 1,
                                          0, now - 1, now, U64]))

    # -- running one command -------------------------------------------------
    def run(self, fn, *a, **kw):
        self.calls += 1
        key = getattr(fn, "__name__", "?")
        self.op_counts[key] = self.op_counts.get(key, 0) + 1
        try:
            out = fn(*a, **kw)
        except KdbusError as e:
            if e.errno not in SHEET_ERRNOS:
                raise Violation(f"{fn.__name__}: errno {e.errno} is not in the sheet") from e
            self.errors[e.errno] = self.errors.get(e.errno, 0) + 1
            self.errors[(key, e.errno)] = self.errors.get((key, e.errno), 0) + 1
            out = None
        self.effects()
        return out

    def parse(self, number, raw):
        cmd = parse_command(number, raw)
        if cmd.negotiating:
            return None
        check_mandatory(cmd)
        return cmd

    def effects(self):
        # a reply that reached an interrupted SEND waits, published, for the
        # resumed SEND (the ABI's "same cookie resumes the same wait")
        for r in self.trackers:
            if r.result is not None and r.result[1] is not None and id(r) not in self.kept:
                self.kept.add(id(r))
                self.published.setdefault(r.requester, set()).add(r.result[1][0])
        for e in self.d.take_effects():
            if isinstance(e, WaitDone):
                tok = e.token
                if tok.state != "waiting":
                    raise Violation(f"a SEND ended twice ({tok.state}, then {e.error})")
                tok.state = "done"
                if e.error == 0:
                    off, size, _ = e.reply
                    self._receipt(tok.conn, off, size)
                    self.published.setdefault(tok.conn, set()).add(off)
                elif e.error not in SHEET_ERRNOS:
                    raise Violation(f"blocked SEND ended with errno {e.error}")

    def _receipt(self, conn, off, size):
        raw = conn.pool.read(off, size)
        msize = struct.unpack_from("<Q", raw)[0]
        pos = 64
        while pos + 16 <= msize:
            isz, ity = struct.unpack_from("<QQ", raw, pos)
            if ity == K.KDBUS_ITEM_PAYLOAD_OFF:
                n, o = struct.unpack_from("<QQ", raw, pos + 16)
                if n == TAG.size and o + n <= len(raw):
                    magic, serial = TAG.unpack_from(raw, o)
                    if magic == MAGIC:
                        key = (conn.id, serial)
                        if key in self.received:
                            raise Violation(f"message {serial} delivered twice to {conn.id}")
                        self.received.add(key)
                break
            pos += (isz + 7) & ~7

    # -- the commands ------------------------------------------------------
    def step(self):
        ops = [self.op_hello, self.op_hello, self.op_send, self.op_send, self.op_send,
               self.op_recv, self.op_recv, self.op_free, self.op_name, self.op_match,
               self.op_info, self.op_update, self.op_close, self.op_byebye, self.op_time,
               self.op_interrupt, self.op_endpoint]
        self.pick(ops)()

    def op_hello(self):
        flags = self.draw(st.sampled_from([0, 0, 0, K.KDBUS_HELLO_ACCEPT_FD,
                                           K.KDBUS_HELLO_ACTIVATOR, K.KDBUS_HELLO_MONITOR,
                                           K.KDBUS_HELLO_POLICY_HOLDER]))
        if self.rare(3):
            flags |= self.draw(st.sampled_from([K.KDBUS_HELLO_MONITOR, 1 << 10]))
        items = b""
        if bool(flags & (K.KDBUS_HELLO_ACTIVATOR | K.KDBUS_HELLO_POLICY_HOLDER)) != \
                self.rare(5):
            items += string_item(K.KDBUS_ITEM_NAME, self.name())
        for _ in range(self.draw(st.integers(0, 2))):
            items += encode_item(K.KDBUS_ITEM_POLICY_ACCESS, struct.pack(
                "<QQQ", self.draw(st.integers(0, 4)), self.draw(st.integers(0, 3)),
                self.pick(UIDS)))
        if self.draw(st.integers(0, 5)) == 0:
            items += string_item(K.KDBUS_ITEM_CONN_DESCRIPTION, self.draw(
                st.sampled_from(["desc", "a-b.c", "-bad", "x" * 64])))
        faked = {}
        if self.draw(st.integers(0, 8)) == 0:
            creds = tuple(self.pick(UIDS) for _ in range(8))
            items += encode_item(K.KDBUS_ITEM_CREDS, struct.pack("<8Q", *creds))
            faked["creds"] = creds
        pool = self.draw(st.sampled_from([0, 5000] if self.rare(5) else [16384, 4096, 65536]))
        attach = self.draw(st.sampled_from([U64, 1 << 20] if self.rare(5) else
                                           [0, K.KDBUS_ATTACH_TIMESTAMP, 0x3fff]))
        raw = cmd_bytes(K.KDBUS_CMD_HELLO, flags, {"pool_size": pool, "attach_flags_send": 0x3fff,
                                                   "attach_flags_recv": attach}, items)
        eps = [self.bus.default] + [e for e in self.endpoints if e.alive]
        ep = self.pick(eps)
        who = simple_identity(self.draw(st.sampled_from((OWNER_UID,) * 3 + UIDS)),
                              privileged=self.draw(st.integers(0, 9)) == 9)

        def hello():
            cmd = self.parse(K.KDBUS_CMD_HELLO, raw)
            if cmd is None:
                return None
            name = cmd.item(K.KDBUS_ITEM_NAME)
            policy = []
            for it in cmd.items:
                if it.type == K.KDBUS_ITEM_POLICY_ACCESS:
                    policy.append(("access",) + md.policy_access_to_domain(
                        *struct.unpack_from("<QQQ", it.payload), None))
            desc = cmd.item(K.KDBUS_ITEM_CONN_DESCRIPTION)
            meta = md.Metadata(faked=True, **faked) if faked else None
            f = cmd.fields
            return self.d.hello(ep, who, flags=cmd.flags, pool_size=f["pool_size"],
                                attach_send=f["attach_flags_send"],
                                attach_recv=f["attach_flags_recv"],
                                name=parse_string(name.payload) if name else None,
                                policy=policy,
                                description=parse_string(desc.payload) if desc else None,
                                faked=bool(faked), meta=meta)
        conn = self.run(hello)
        if conn is not None:
            self.conns.append(conn)
            self.published[conn] = {conn.hello_slice[0]}

    def _msg_items(self, conn):
        items = b""
        vecs = []           # the data of each PAYLOAD_VEC, in order (None: NULL vec)
        if self.draw(st.integers(0, 5)) != 5:
            serial = next(self.serials)
            vecs.append(TAG.pack(MAGIC, serial))
            items += encode_item(K.KDBUS_ITEM_PAYLOAD_VEC, struct.pack("<QQ", TAG.size, 0x1000))
        for _ in range(self.draw(st.sampled_from([0, 0, 0, 1, 1, 2]))):
            kind = self.draw(st.integers(0, 9))
            if kind <= 3:
                size = self.draw(st.sampled_from([1, 7, 8, 100, 3000, 20000]))
                vecs.append(bytes(size))
                items += encode_item(K.KDBUS_ITEM_PAYLOAD_VEC, struct.pack("<QQ", size, 0x2000))
            elif kind == 4:       # a NULL vec (padding), or an oversized one
                size = self.draw(st.sampled_from([3, 16, (2 << 20) + 1, U64]))
                vecs.append(None)
                items += encode_item(K.KDBUS_ITEM_PAYLOAD_VEC, struct.pack("<QQ", size, 0))
            elif kind == 5:
                items += encode_item(K.KDBUS_ITEM_DST_NAME, self.name().encode("latin-1",
                                                                               "replace") + b"\0")
            elif kind == 6:
                n = self.draw(st.integers(0, 18))
                items += encode_item(K.KDBUS_ITEM_FDS, struct.pack(f"<{n}i", *([3] * n)))
            elif kind == 7:
                items += encode_item(K.KDBUS_ITEM_PAYLOAD_MEMFD, struct.pack(
                    "<QQiI", self.draw(st.integers(0, 16)), self.draw(st.integers(1, 100)), 5, 0))
            else:
                n = self.draw(st.sampled_from([conn.bus.bloom_size, 8, 12, 64]))
                items += encode_item(K.KDBUS_ITEM_BLOOM_FILTER, struct.pack(
                    "<Q", self.draw(st.integers(0, 2))) + bytes(self.draw(
                        st.sampled_from([0, 0xFF]))) * n)
        return items, vecs

    def op_send(self):
        conn = self.any_conn()
        if conn is None:
            return
        kind = self.draw(st.integers(0, 6))
        flags = 0
        word = 0
        targets = [c.id for c in self.live(lambda c: c.ordinary)]
        dst = self.pick(targets) if targets and not self.rare(20) else self.some_id()
        items, vecs = self._msg_items(conn)
        bloom = encode_item(K.KDBUS_ITEM_BLOOM_FILTER, struct.pack("<Q", 0)
                            + bytes(conn.bus.bloom_size))
        if kind == 0:           # a request, maybe synchronous
            flags = K.KDBUS_MSG_EXPECT_REPLY
            word = self.deadline()
        elif kind == 1:         # a reply to someone's request
            reqs = [r for r in self.trackers if r.alive and r.replier is conn]
            if reqs and self.draw(st.booleans()):
                r = self.pick(reqs)
                dst, word = r.requester.id, r.cookie
            else:
                word = self.draw(st.integers(0, 2000))
        elif kind == 2:         # a broadcast
            dst = U64
            flags = K.KDBUS_MSG_SIGNAL
            items += bloom
        elif kind == 3:         # by name
            dst = self.draw(st.sampled_from([0, 0, dst]))
            items += string_item(K.KDBUS_ITEM_DST_NAME, self.pick(NAMES))
        elif kind == 4:         # a unicast signal
            flags = K.KDBUS_MSG_SIGNAL
            items += bloom
        if self.draw(st.integers(0, 5)) == 5:
            flags |= self.draw(st.sampled_from([K.KDBUS_MSG_NO_AUTO_START,
                                                K.KDBUS_MSG_SIGNAL, K.KDBUS_MSG_EXPECT_REPLY]))
        sync = kind == 0 and self.draw(st.booleans())
        cookie = next(self.cookies)
        resume = [t for t in self.tokens if t.state == "interrupted" and t.conn is conn]
        if sync and resume and self.draw(st.booleans()):
            cookie = self.pick(resume).cookie        # a SEND restarted after EINTR
        prio = self.draw(st.integers(-3, 3))
        src = conn.id + 1 if self.rare(3) else self.draw(st.sampled_from([0, conn.id]))
        ptype = self.draw(st.sampled_from([0, 7])) if self.rare(3) else K.KDBUS_PAYLOAD_DBUS
        msg_raw = struct.pack("<QQqQQQQQ", 64 + len(items), flags, prio, dst, src, ptype,
                              cookie, word) + items
        cmd_raw = cmd_bytes(K.KDBUS_CMD_SEND, K.KDBUS_SEND_SYNC_REPLY if sync else 0,
                            {"msg_address": 0x4000})
        token = Token(conn, cookie) if sync else None

        def send():
            cmd = self.parse(K.KDBUS_CMD_SEND, cmd_raw)
            msg = parse_msg(msg_raw, allow_negotiate_item=False)
            plan = sendmod.check(conn, sync=sync, flags=msg.flags, dst_id=msg.dst_id,
                                 src_id=msg.src_id, payload_type=msg.payload_type,
                                 timeout_or_reply=msg.timeout_ns, items=msg.items)
            parts = []
            k = 0
            for it in msg.items:
                data = None
                if it.type == K.KDBUS_ITEM_PAYLOAD_VEC:
                    data = vecs[k]
                    k += 1
                parts.append((it.type, it.payload, data))
            out = Outgoing(flags=msg.flags, priority=msg.priority, dst_id=msg.dst_id,
                           src_id=msg.src_id, payload_type=msg.payload_type, cookie=msg.cookie,
                           timeout_or_reply=msg.timeout_ns, parts=parts,
                           fds=tuple(plan.fds), memfds=tuple(m[3] for m in plan.memfds),
                           bloom_generation=plan.bloom_generation, bloom=plan.bloom,
                           dst_name=plan.dst_name)
            assert cmd is not None
            return self.d.send(conn, out, sync=sync, waiter=token)
        for t in resume:
            if t.cookie == cookie:
                t.state = "resumed"
        res = self.run(send)
        if res is sendmod.BLOCKED:
            self.tokens.append(token)
        elif res is not None and res[1]:     # a resumed wait that had its reply
            self.published.setdefault(conn, set()).add(res[0])
            self._receipt(conn, res[0], res[1])

    def op_recv(self):
        conn = self.any_conn()
        if conn is None:
            return
        if self.rare(10):
            flags = self.draw(st.sampled_from([K.KDBUS_RECV_DROP | K.KDBUS_RECV_USE_PRIORITY,
                                               1 << 40, K.KDBUSFS_RECV_BLOCK]))
        else:
            flags = self.draw(st.sampled_from([0, 0, 0, K.KDBUS_RECV_PEEK, K.KDBUS_RECV_DROP,
                                               K.KDBUS_RECV_USE_PRIORITY]))
        prio = self.draw(st.integers(-4, 4))
        raw = cmd_bytes(K.KDBUS_CMD_RECV, flags, {"priority": prio & U64})

        def recv():
            if conn.kind == POLICY_HOLDER:
                raise KdbusError(errno.EOPNOTSUPP, "policy holder")
            cmd = self.parse(K.KDBUS_CMD_RECV, raw)
            if cmd is None:
                return None
            p = cmd.fields["priority"]
            p = p - (1 << 64) if p >= 1 << 63 else p
            return self.d.recv(conn, flags=cmd.flags & ~K.KDBUSFS_RECV_BLOCK, priority=p)
        res = self.run(recv)
        if res is None or res.error:
            return
        if res.size:
            self.published.setdefault(conn, set()).add(res.offset)
            if not flags & K.KDBUS_RECV_PEEK:
                self._receipt(conn, res.offset, res.size)
            if self.draw(st.integers(0, 3)):
                self._free(conn, res.offset)

    def _free(self, conn, offset):
        raw = cmd_bytes(K.KDBUS_CMD_FREE, 0, {"offset": offset})

        def free():
            cmd = self.parse(K.KDBUS_CMD_FREE, raw)
            if cmd is not None:
                self.d.free(conn, cmd.fields["offset"])
                return True
        if self.run(free):
            self.published.get(conn, set()).discard(offset)

    def op_free(self):
        conns = self.live() + [c for c in self.conns if not getattr(c, "pool_closed", False)]
        if not conns:
            return
        conn = self.pick(conns)
        if not conn.alive:
            return      # ECONNRESET at the ioctl layer
        pub = sorted(self.published.get(conn, ()))
        off = self.draw(st.one_of(st.sampled_from(pub or [0]), st.integers(0, conn.pool.size + 8),
                                  st.just(conn.pool.size)))
        self._free(conn, off)

    def op_name(self):
        conn = self.any_conn()
        if conn is None:
            return
        number = self.draw(st.sampled_from([K.KDBUS_CMD_NAME_ACQUIRE, K.KDBUS_CMD_NAME_ACQUIRE,
                                            K.KDBUS_CMD_NAME_RELEASE]))
        flags = self.draw(st.integers(0, 15 if self.rare(10) else 7))
        items = b"" if self.rare(5) else string_item(K.KDBUS_ITEM_NAME, self.name())
        raw = cmd_bytes(number, flags, {}, items)

        def name():
            cmd = self.parse(number, raw)
            if cmd is None:
                return
            n = parse_string(cmd.item(K.KDBUS_ITEM_NAME).payload)
            if number == K.KDBUS_CMD_NAME_ACQUIRE:
                return self.d.name_acquire(conn, n, cmd.flags)
            return self.d.name_release(conn, n)
        self.run(name)

    def op_match(self):
        conn = self.any_conn()
        if conn is None:
            return
        if self.draw(st.integers(0, 4)) == 0:
            raw = cmd_bytes(K.KDBUS_CMD_MATCH_REMOVE, 0, {"cookie": self.draw(st.integers(0, 3))})
            self.run(lambda: self.d.match_remove(conn, cookie=self.parse(
                K.KDBUS_CMD_MATCH_REMOVE, raw).fields["cookie"]))
            return
        items = b""
        bs = conn.bus.bloom_size
        for _ in range(self.draw(st.integers(0, 3))):
            k = self.draw(st.integers(0, 6))
            if k == 0:
                items += encode_item(K.KDBUS_ITEM_BLOOM_MASK, bytes(self.draw(
                    st.sampled_from([0, 1]))) * self.draw(st.sampled_from([bs, 2 * bs, 8, 0])))
            elif k == 1:
                items += string_item(K.KDBUS_ITEM_NAME, self.name())
            elif k == 2:
                items += encode_item(self.draw(st.sampled_from([K.KDBUS_ITEM_ID,
                                                                K.KDBUS_ITEM_DST_ID])),
                                     struct.pack("<Q", self.some_id()))
            elif k == 3:
                items += encode_item(self.draw(st.sampled_from([K.KDBUS_ITEM_ID_ADD,
                                                                K.KDBUS_ITEM_ID_REMOVE])),
                                     struct.pack("<QQ", self.some_id(), 0))
            elif k == 4:
                t = self.draw(st.sampled_from([K.KDBUS_ITEM_NAME_ADD, K.KDBUS_ITEM_NAME_REMOVE,
                                               K.KDBUS_ITEM_NAME_CHANGE]))
                tail = self.draw(st.sampled_from([b"", b"org.a.One\0"]))
                items += encode_item(t, struct.pack("<4Q", self.some_id(), 0, self.some_id(), 0)
                                     + tail)
            else:
                items += encode_item(self.draw(st.integers(0, 0x8010)),
                                     self.draw(st.binary(max_size=40)))
        raw = cmd_bytes(K.KDBUS_CMD_MATCH_ADD, self.draw(st.integers(0, 1)),
                        {"cookie": self.draw(st.integers(0, 3))}, items)

        def add():
            cmd = self.parse(K.KDBUS_CMD_MATCH_ADD, raw)
            if cmd is None:
                return
            its = [it for it in cmd.items if it.type != K.KDBUS_ITEM_NEGOTIATE] + \
                [it for it in cmd.items if it.type == K.KDBUS_ITEM_NEGOTIATE]
            self.d.match_add(conn, cookie=cmd.fields["cookie"], items=its,
                             replace=bool(cmd.flags & K.KDBUS_MATCH_REPLACE))
        self.run(add)

    def op_info(self):
        conn = self.any_conn()
        if conn is None:
            return
        k = self.draw(st.integers(0, 2))
        attach = self.draw(st.sampled_from([0, 0x3fff, U64, 1 << 30]))
        if k == 0:
            items = string_item(K.KDBUS_ITEM_NAME, self.name()) if self.draw(st.booleans()) \
                else b""
            raw = cmd_bytes(K.KDBUS_CMD_CONN_INFO, 0, {"id": self.some_id(),
                                                       "attach_flags": attach}, items)

            def info():
                cmd = self.parse(K.KDBUS_CMD_CONN_INFO, raw)
                n = cmd.item(K.KDBUS_ITEM_NAME)
                return self.d.conn_info(conn, id=cmd.fields["id"],
                                        name=parse_string(n.payload) if n else None,
                                        attach_flags=cmd.fields["attach_flags"])
        elif k == 1:
            def info():
                return self.d.bus_creator_info(conn, attach_flags=attach)
        else:
            flags = self.draw(st.integers(0, 15))

            def info():
                return self.d.list(conn, flags=flags)
        res = self.run(info)
        if res is not None and res[1]:
            self.published.setdefault(conn, set()).add(res[0])
            if self.draw(st.booleans()):
                self._free(conn, res[0])

    def op_update(self):
        conn = self.any_conn()
        if conn is None:
            return
        items = b""
        for t in (K.KDBUS_ITEM_ATTACH_FLAGS_SEND, K.KDBUS_ITEM_ATTACH_FLAGS_RECV):
            if self.draw(st.booleans()):
                items += encode_item(t, struct.pack("<Q", self.draw(
                    st.sampled_from([0, 0x3fff, U64, 1 << 40]))))
        for _ in range(self.draw(st.integers(0, 2))):
            if self.draw(st.booleans()):
                items += string_item(K.KDBUS_ITEM_NAME, self.name())
            else:
                items += encode_item(K.KDBUS_ITEM_POLICY_ACCESS, struct.pack(
                    "<QQQ", self.draw(st.integers(0, 4)), self.draw(st.integers(0, 3)), 1001))
        raw = cmd_bytes(K.KDBUS_CMD_UPDATE, 0, {}, items)

        def update():
            cmd = self.parse(K.KDBUS_CMD_UPDATE, raw)
            pairs = []
            for it in cmd.items:
                if it.type == K.KDBUS_ITEM_NAME:
                    pairs.append(("name", parse_string(it.payload)))
                elif it.type == K.KDBUS_ITEM_POLICY_ACCESS:
                    pairs.append(("access",) + md.policy_access_to_domain(
                        *struct.unpack_from("<QQQ", it.payload), None))

            def u64(t):
                it = cmd.item(t)
                return struct.unpack_from("<Q", it.payload)[0] if it else None
            self.d.update(conn, attach_send=u64(K.KDBUS_ITEM_ATTACH_FLAGS_SEND),
                          attach_recv=u64(K.KDBUS_ITEM_ATTACH_FLAGS_RECV),
                          policy=pairs or None)
        self.run(update)

    def op_close(self):
        """RELEASE of a connection's file: disconnect, then the pool goes."""
        conns = [c for c in self.conns if not getattr(c, "pool_closed", False)]
        if conns:
            c = self.pick(conns)
            self.run(self.d.disconnect, c)
            self.d.close_pool(c)
            self.published.pop(c, None)

    def op_byebye(self):
        conn = self.any_conn()
        if conn is not None:
            self.run(self.d.byebye, conn)

    def op_time(self):
        self.clock.now += self.draw(st.sampled_from([1, 10**6, 10**9, 10**12]))
        self.run(self.d.expire)

    def op_interrupt(self):
        waiting = [t for t in self.tokens if t.state == "waiting"]
        if waiting:
            t = self.pick(waiting)
            err = self.draw(st.sampled_from([errno.EINTR, errno.ECANCELED]))
            self.run(self.d.cancel_wait, t, err)
            if t.state == "waiting":
                t.state = "interrupted" if err == errno.EINTR else "cancelled"

    def op_endpoint(self):
        k = self.draw(st.integers(0, 2))
        if k == 0 or not self.endpoints:
            who = simple_identity(self.draw(st.sampled_from([OWNER_UID, 1001])))
            name = f"{who.euid}-ep{len(self.endpoints)}"
            ep = self.run(self.d.endpoint_make, self.bus, who, flags=0, name=name)
            if ep is not None:
                self.endpoints.append(ep)
        elif k == 1:
            ep = self.pick(self.endpoints)
            pairs = [("name", self.name()), ("access", self.draw(st.integers(1, 3)),
                                             self.draw(st.integers(0, 2)), 1001)]
            if ep.alive:
                self.run(self.d.endpoint_update, ep, pairs)
        else:
            self.run(self.d.endpoint_destroy, self.pick(self.endpoints))

    # -- invariants ------------------------------------------------------------
    def check(self):
        d = self.d
        counts = {}
        for c in self.conns:
            if c.alive:
                counts[c.user_key] = counts.get(c.user_key, 0) + 1
            if not getattr(c, "pool_closed", False):
                self._check_pool(c)
            self._check_queue(c)
            live = [r for rs in c.requests.values() for r in rs if r.alive]
            if c.n_requests != len(live):
                raise Violation(f"conn {c.id}: n_requests {c.n_requests} != {len(live)} live")
            for r in c.expected:
                if not r.alive or r.replier is not c:
                    raise Violation(f"conn {c.id} expects a dead or foreign tracker")
            if not c.alive and (c.queue.entries or c.expected or live or c.names):
                raise Violation(f"dead conn {c.id} still holds messages, trackers or names")
        for key, n in d.conn_count.items():
            if n != counts.get(key, 0):
                raise Violation(f"conn_count[{key}] = {n}, but {counts.get(key, 0)} alive")
        for r in self.trackers:
            if r.alive:
                if not (r.requester.alive and r.replier.alive):
                    raise Violation("a live tracker with a dead end")
                if r not in r.replier.expected or r not in r.requester.requests.get(r.cookie, ()):
                    raise Violation("a live tracker unknown to one of its ends")
        for tok, r in d._waiting.items():
            if not (r.alive and r.sync and r.waiter is tok and tok.state == "waiting"):
                raise Violation("a waiting SEND without its live sync tracker")
        for t in self.tokens:
            if t.state == "waiting" and t not in d._waiting:
                raise Violation("a SEND still blocked that the engine forgot")

    def _check_pool(self, c):
        p = c.pool
        pos = 0
        used = 0
        ranges = sorted([(s.offset, s.size, "slice") for s in p.slices.values()]
                        + [(o, n, "free") for o, n in zip(p._free_off, p._free_len)])
        prev_free = False
        for off, size, kind in ranges:
            if off != pos or size <= 0 or size % 8:
                raise Violation(f"conn {c.id}: pool does not tile at {off} (expected {pos})")
            if kind == "free" and prev_free:
                raise Violation(f"conn {c.id}: adjacent free ranges at {off}")
            prev_free = kind == "free"
            pos += size
            if kind == "slice":
                used += size
        if pos != p.size:
            raise Violation(f"conn {c.id}: pool ends at {pos}, size {p.size}")
        if used != p.used:
            raise Violation(f"conn {c.id}: used {p.used} != {used} in live slices")
        queued = {e.slice.offset for e in c.queue.entries}
        for s in p.slices.values():
            if not (s.kernel or s.user):
                raise Violation(f"conn {c.id}: slice {s.offset} held by nobody")
            if s.kernel != (s.offset in queued):
                raise Violation(f"conn {c.id}: slice {s.offset} kernel hold {s.kernel}")
        users = {s.offset for s in p.slices.values() if s.user}
        if users != self.published.get(c, set()):
            raise Violation(f"conn {c.id}: published slices {sorted(users)} but the "
                            f"model has {sorted(self.published.get(c, set()))}")

    def _check_queue(self, c):
        q = c.queue
        if q.accounted != sum(e.size for e in q.entries):
            raise Violation(f"conn {c.id}: accounted {q.accounted} != queued bytes")
        per = {}
        for e in q.entries:
            b, m, f = per.get(e.user, (0, 0, 0))
            per[e.user] = (b + e.size, m + 1, f + len(e.fds))
        got = {u: (x.bytes, x.msgs, x.fds) for u, x in q.quota.items()}
        if got != per:
            raise Violation(f"conn {c.id}: quota {got} != queued {per}")

    # -- the end -------------------------------------------------------------
    def finish(self):
        d = self.d
        # every deadline passes: all trackers must end
        self.clock.now = U64
        self.run(d.expire)
        self.check()
        for r in self.trackers:
            if r.alive:
                raise Violation(f"tracker {r.cookie} outlived its deadline")
        if d._waiting:
            raise Violation("SENDs still blocked after every deadline")
        # drain and free everything: quota and pools return to zero
        for _ in range(3):
            for c in self.live(lambda c: c.kind != POLICY_HOLDER):
                while True:
                    res = self.run(d.recv, c, flags=0)
                    if res is None or res.error:
                        break
                    self.published.setdefault(c, set()).add(res.offset)
                    self._receipt(c, res.offset, res.size)
                for off in sorted(self.published.get(c, ())):
                    self._free(c, off)
        self.check()
        for c in self.live(lambda c: c.kind != POLICY_HOLDER):
            if c.queue.entries or c.queue.quota or c.queue.accounted:
                raise Violation(f"conn {c.id}: queue not empty after draining")
            if c.pool.used or c.pool.slices:
                raise Violation(f"conn {c.id}: {c.pool.used} pool bytes left after FREE")
        self.run(d.shutdown)
        self.check()
        for c in self.conns:
            d.close_pool(c)
        if any(d.conn_count.values()) or any(d.pool_bytes.values()) or any(
                d.bus_count.values()):
            raise Violation(f"counters left: {dict(d.conn_count)} {dict(d.pool_bytes)} "
                            f"{dict(d.bus_count)}")
        for t in self.tokens:
            if t.state == "waiting":
                raise Violation("a SEND never ended")
