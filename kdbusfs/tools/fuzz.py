"""Fuzz a live kdbusfs mount: malformed commands on every ioctl and fd kind.

    python -m kdbusfs.tools.fuzz --seconds 600        (scripts/fuzz)

What it does, for a bounded time, on a fresh mount of its own:

- Worker children (forked, `--workers` at a time, each living
  `--child-seconds`, a quarter of them as uid 65534) keep fds of every kind
  open: fresh `control`, bus owner, fresh endpoint, connection (ordinary,
  ACCEPT_FD, on their own bus and on the sentinel's), endpoint owner; and
  throw at them every kdbus ioctl (and the kdbusfs fd-channel one, and
  unknown numbers of the kdbus magic) with arguments that are broken in
  every way the ABI names: NULL, unaligned, unmapped and read-only
  pointers, commands that end at an unmapped page, boundary sizes, random
  flags, broken item lists (short, overlong, misaligned, trailing bytes),
  random and wrong item types and payloads, NEGOTIATE items, and for SEND
  messages whose vecs point to unmapped or read-only memory, whose memfd,
  FDS and CANCEL_FD items name bad fds (closed, -1, pipes, sockets, kdbus
  fds, unsealed memfds, regular files), boundary vec sizes, broadcast and
  SYNC_REPLY with short deadlines.  Every answer must be 0 or an errno of
  the fact sheet (§1.6); a call that blocks is interrupted by a timer
  (SIGALRM every 0.3 s), so a call that does not come back is a hang.
- Each child has a watchdog: past `--child-seconds` plus a grace it is a
  hang, killed with SIGKILL; one that then does not die is unkillable.
  Some children are SIGKILLed on purpose in the middle of their work.
- A sentinel child (uid 65534) keeps valid traffic going on its own bus:
  request, reply and a broadcast signal, every round checked byte for byte;
  any failure or a round slower than 5 s is reported.
- The server runs in development mode; its log is scanned for exceptions,
  errors and warnings; its death is a crash.  After the run the server's
  fd count must return to what it was with no clients, and it must exit
  cleanly when unmounted.

The summary (text, or JSON with --json) gives calls, crashes, hangs and the
rest; the exit status is 0 only if nothing went wrong.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import json
import mmap
import os
import random
import signal
import socket
import struct
import sys
import time
import traceback

from kdbusfs.abi import constants as K
from kdbusfs.abi.commands import COMMANDS
from kdbusfs.abi.items import encode_item
# imported before forking: children that drop to uid 65534 may not be able
# to read the interpreter's library any more (e.g. a Python under /root)
from kdbusfs.client import Connection, make_bus
from kdbusfs.tools.errnos import SHEET_ERRNOS
from kdbusfs.tools.server import Server, proc_state

U64 = 0xFFFFFFFFFFFFFFFF
PAGE = 4096
NOBODY = 65534
CMD_NAMES = {n: s.name.replace("KDBUS_CMD_", "") for n, s in COMMANDS.items()}
CMD_NAMES[K.KDBUSFS_CMD_FD_CHANNEL] = "FD_CHANNEL"
SERVER_GONE = (errno.ECONNABORTED, errno.ENOTCONN)

#: Server bugs found and described but not fixed yet (docs/robustness.md, "Bugs
#: found"): name -> (what the traceback must contain, every string somewhere,
#: and the (ioctl, errno) its caller sees).  They are reported apart and do
#: not fail a run; anything else does.  Empty: the one listed here (a second
#: HELLO after a late-failing one, passthrough pools: ("MemfdStore",
#: "PermissionError"), ("HELLO", "EIO")) is fixed, so it fails a run again.
KNOWN_BUGS: dict[str, tuple[tuple[str, ...], tuple[str, str]]] = {}


def classify_tracebacks(log: str) -> tuple[list[str], dict[str, int]]:
    """(tracebacks of unknown bugs, {known bug: count}) in a server log."""
    unknown, known = [], {}
    for block in log.split("Traceback (most recent call last):")[1:]:
        block = block.split("\nkdbusfs[")[0]
        for name, (marks, _) in KNOWN_BUGS.items():
            if all(m in block for m in marks):
                known[name] = known.get(name, 0) + 1
                break
        else:
            unknown.append(block.strip()[-600:])
    return unknown, known

# -- raw memory and syscalls ----------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]


def raw_ioctl(fd: int, number: int, arg: int) -> int:
    """0 or the errno; `arg` is passed as it is (any address)."""
    if _libc.ioctl(fd, number, arg) < 0:
        return ctypes.get_errno()
    return 0


def _map(pages: int, prot: int) -> int:
    addr = _libc.mmap(None, pages * PAGE, prot, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap")
    return addr


class Memory:
    """Places to put a command: ordinary, at the end of a page before an
    unmapped one, read-only, or nowhere."""

    RW = mmap.PROT_READ | mmap.PROT_WRITE

    def __init__(self):
        self.arena = _map(16, self.RW)                 # 64 KiB of ordinary memory
        self.edge = _map(2, self.RW)                   # a page, then a hole
        _libc.munmap(self.edge + PAGE, PAGE)
        self.ro = _map(1, mmap.PROT_READ)
        hole = _map(1, self.RW)
        _libc.munmap(hole, PAGE)
        self.unmapped = hole
        self.next = 0

    def put(self, data: bytes, align: int = 0) -> int:
        """Copy into the arena (8-aligned + `align`), return the address."""
        n = len(data)
        if n + 16 > 16 * PAGE:
            data, n = data[:16 * PAGE - 16], 16 * PAGE - 16
        if self.next + n + 16 > 16 * PAGE:
            self.next = 0
        addr = self.arena + self.next + align
        ctypes.memmove(addr, data, n)
        self.next = (self.next + n + 16 + 7) & ~7
        return addr

    def at_edge(self, data: bytes) -> int:
        """`data` ending exactly at the unmapped page (8-aligned start)."""
        data = data[:PAGE]
        start = (PAGE - len(data)) & ~7
        data = data[:PAGE - start]
        ctypes.memmove(self.edge + start, data, len(data))
        return self.edge + start

    def read_only(self, data: bytes) -> int:
        data = data[:PAGE]
        _libc.mprotect(self.ro, PAGE, self.RW)
        ctypes.memmove(self.ro, data, len(data))
        _libc.mprotect(self.ro, PAGE, mmap.PROT_READ)
        return self.ro

    def read_back(self, addr: int, n: int) -> bytes:
        return ctypes.string_at(addr, n)


# -- the worker ------------------------------------------------------------------
class Fd:
    __slots__ = ("fd", "kind", "conn_id", "dir")

    def __init__(self, fd, kind, conn_id=0, dir=None):
        self.fd = fd
        self.kind = kind        # control, bus_owner, endpoint, conn, ep_owner, set_up_by_fuzz
        self.conn_id = conn_id
        self.dir = dir          # a bus owner's bus directory


class Worker:
    def __init__(self, mount: str, sentinel_bus: str | None, seed: int, seconds: float,
                 report_fd: int):
        self.mount = mount
        self.sentinel_bus = sentinel_bus
        self.rng = random.Random(seed)
        self.seconds = seconds
        self.report_fd = report_fd
        self.mem = Memory()
        self.euid = os.geteuid()
        self.fds: list[Fd] = []
        self.stats = {"calls": 0, "per_cmd": {}, "per_kind": {}, "errnos": {}, "unexpected": [],
                      "slow": 0, "server_gone": False, "setup_failures": 0, "check_ok": None}
        self.ids = [1, 2, 3]
        self.ep_dir = None
        self.helpers = {}

    # -- setup ---------------------------------------------------------
    @property
    def bus_dir(self):
        dirs = [f.dir for f in self.fds if f.kind == "bus_owner"]
        return self.rng.choice(dirs) if dirs else None

    def open_kind(self, kind: str) -> Fd | None:
        try:
            if kind == "control":
                return Fd(os.open(os.path.join(self.mount, "control"), os.O_RDWR), kind)
            if kind == "bus_owner":
                name = f"fz{os.getpid()}x{self.rng.randrange(1 << 30)}"
                bus = make_bus(self.mount, name, access="world",
                               bloom_size=self.rng.choice([8, 64]))
                fd = os.dup(bus.fileno())
                bus.close()
                return Fd(fd, kind, dir=bus.dir)
            if kind == "endpoint":
                where = [os.path.join(d, "bus") for d in (self.bus_dir, self.sentinel_bus) if d]
                if self.ep_dir and self.rng.random() < 0.2:
                    where = [self.ep_dir]           # a custom endpoint
                if not where:
                    return None
                return Fd(os.open(self.rng.choice(where), os.O_RDWR), kind)
            if kind == "conn":
                where = [d for d in (self.bus_dir, self.bus_dir, self.sentinel_bus) if d]
                if self.ep_dir and self.rng.random() < 0.1:
                    where = [self.ep_dir]
                if not where:
                    return None
                where = self.rng.choice(where)
                c = Connection.open(where, pool_size=self.rng.choice([1 << 16, 1 << 20]),
                                    accept_fd=self.rng.random() < 0.5,
                                    attach_recv=self.rng.choice([0, 0x3fff]))
                if self.rng.random() < 0.5:
                    c.add_match()
                fd = os.dup(c.fileno())
                self.ids.append(c.id)
                c.close()       # the dup keeps the connection
                return Fd(fd, kind, c.id)
            if kind == "ep_owner" and self.bus_dir:
                bus_dir = self.bus_dir
                fd = os.open(os.path.join(bus_dir, "bus"), os.O_RDWR)
                name = f"{self.euid}-ep{self.rng.randrange(1 << 30)}"
                item = encode_item(K.KDBUS_ITEM_MAKE_NAME, name.encode() + b"\0")
                cmd = struct.pack("<QQQ", 24 + len(item), 0, 0) + item
                rc = raw_ioctl(fd, K.KDBUS_CMD_ENDPOINT_MAKE, self.mem.put(cmd))
                if rc:
                    os.close(fd)
                    return None
                self.ep_dir = os.path.join(bus_dir, name)
                return Fd(fd, kind)
        except OSError as e:
            if e.errno in SERVER_GONE:
                raise
            self.stats["setup_failures"] += 1
            k = f"{kind}:{errno.errorcode.get(e.errno, e.errno)}"
            fails = self.stats.setdefault("setup_errors", {})
            fails[k] = fails.get(k, 0) + 1
        return None

    def prepare_helpers(self):
        """fds to put in FDS, memfd and CANCEL_FD items."""
        h = self.helpers
        r, w = os.pipe()
        h["pipe"] = r
        h["pipe_w"] = w
        a, b = socket.socketpair()
        self._socks = (a, b)
        h["unix_socket"] = a.fileno()
        h["eventfd"] = os.eventfd(0, os.EFD_NONBLOCK)
        h["regular_file"] = os.open("/proc/self/exe", os.O_RDONLY)
        h["o_path"] = os.open("/", os.O_PATH)
        sealed = os.memfd_create("fz", os.MFD_ALLOW_SEALING)
        os.write(sealed, os.urandom(64) * 64)
        fcntl.fcntl(sealed, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK
                    | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
        h["sealed_memfd"] = sealed
        unsealed = os.memfd_create("fz2", os.MFD_ALLOW_SEALING)
        os.write(unsealed, b"x" * 100)
        h["unsealed_memfd"] = unsealed
        closed = os.open("/dev/null", os.O_RDONLY)
        os.close(closed)
        h["closed"] = closed
        h["minus_one"] = -1
        h["huge"] = 99999

    def any_fd_value(self) -> int:
        if self.fds and self.rng.random() < 0.15:
            return self.rng.choice(self.fds).fd       # a kdbus fd
        return self.helpers[self.rng.choice(list(self.helpers))]

    def refill(self):
        want = ["control", "bus_owner", "endpoint", "conn", "conn", "conn", "ep_owner"]
        have = [f.kind for f in self.fds]
        for kind in want:
            if kind == "bus_owner" and have.count(kind) >= 3:
                continue        # 16 buses per user (EMFILE), shared with the others
            if have.count(kind) < want.count(kind) or self.rng.random() < 0.05:
                f = self.open_kind(kind)
                if f is not None:
                    self.fds.append(f)
                    have.append(kind)
        while len(self.fds) > 40:
            f = self.fds.pop(self.rng.randrange(len(self.fds)))
            os.close(f.fd)

    # -- arguments ---------------------------------------------------------
    def u64(self) -> int:
        r = self.rng.random()
        if r < 0.4:
            return self.rng.choice([0, 1, 2, 7, 8, 0x3fff, 1 << 63, U64, U64 - 1, 1 << 32,
                                    4096, 32768, 32769])
        if r < 0.7:
            return self.rng.choice(self.ids)
        return self.rng.getrandbits(64)

    def string(self) -> bytes:
        return self.rng.choice([
            b"org.fuzz.Name\0", b"org.fuzz.Sentinel\0", b"org.*\0", b"a\0", b"\0", b"",
            b"org.fu\0zz\0", b"org.fuzz", b"x" * 300 + b"\0", b"1org.x\0",
            f"{self.euid}-name\0".encode(), f"{self.euid}-{'y' * 70}\0".encode(),
            bytes(self.rng.getrandbits(8) for _ in range(self.rng.randrange(24))),
        ])

    def payload(self, t: int) -> bytes:
        rng = self.rng
        if t in (K.KDBUS_ITEM_NAME, K.KDBUS_ITEM_DST_NAME, K.KDBUS_ITEM_MAKE_NAME,
                 K.KDBUS_ITEM_CONN_DESCRIPTION, K.KDBUS_ITEM_SECLABEL):
            return self.string()
        if t == K.KDBUS_ITEM_NEGOTIATE:
            return b"".join(struct.pack("<Q", rng.choice([0, 1, 2, 15, 0x1001, U64]))
                            for _ in range(rng.randrange(4)))
        if t == K.KDBUS_ITEM_BLOOM_PARAMETER:
            return struct.pack("<QQ", rng.choice([8, 64, 0, 12, 4096, 4104, U64]),
                               rng.choice([1, 0, U64]))
        if t in (K.KDBUS_ITEM_ATTACH_FLAGS_SEND, K.KDBUS_ITEM_ATTACH_FLAGS_RECV,
                 K.KDBUS_ITEM_ID, K.KDBUS_ITEM_DST_ID):
            return struct.pack("<Q", self.u64())
        if t == K.KDBUS_ITEM_POLICY_ACCESS:
            return struct.pack("<QQQ", rng.randrange(5), rng.randrange(4),
                               rng.choice([0, NOBODY, 4294967295, U64]))
        if t == K.KDBUS_ITEM_CREDS:
            return struct.pack("<8Q", *(rng.choice([0, NOBODY, U64, 4294967295])
                                        for _ in range(8)))
        if t == K.KDBUS_ITEM_PIDS:
            return struct.pack("<3Q", *(rng.choice([0, 1, os.getpid(), 1 << 30, U64])
                                        for _ in range(3)))
        if t == K.KDBUS_ITEM_CANCEL_FD:
            return struct.pack("<i", self.any_fd_value())
        if t == K.KDBUS_ITEM_BLOOM_MASK:
            return bytes([rng.choice([0, 0xFF])]) * rng.choice([8, 64, 128, 12, 0])
        if t in (K.KDBUS_ITEM_ID_ADD, K.KDBUS_ITEM_ID_REMOVE):
            return struct.pack("<QQ", self.u64(), self.u64())
        if t in (K.KDBUS_ITEM_NAME_ADD, K.KDBUS_ITEM_NAME_REMOVE, K.KDBUS_ITEM_NAME_CHANGE):
            return struct.pack("<4Q", *(self.u64() for _ in range(4))) + \
                rng.choice([b"", b"org.fuzz.Name\0", b"bad"])
        if t == K.KDBUS_ITEM_PAYLOAD_VEC:
            return struct.pack("<QQ", *self.vec())
        if t == K.KDBUS_ITEM_PAYLOAD_MEMFD:
            fd = self.helpers["sealed_memfd"] if rng.random() < 0.5 else self.any_fd_value()
            return struct.pack("<QQiI", rng.choice([0, 8, 4096, U64 - 2]),
                               rng.choice([1, 100, 4096, 4097, 0, U64]), fd, 0)
        if t == K.KDBUS_ITEM_FDS:
            n = rng.choice([0, 1, 2, 16, 17])
            return struct.pack(f"<{n}i", *(self.any_fd_value() for _ in range(n)))
        if t == K.KDBUS_ITEM_BLOOM_FILTER:
            return struct.pack("<Q", rng.choice([0, 1, U64])) + \
                bytes(rng.choice([8, 64, 12, 0, 72]))
        return bytes(rng.getrandbits(8) for _ in range(rng.choice([0, 4, 8, 16, 24, 33])))

    def vec(self) -> tuple[int, int]:
        rng = self.rng
        size = rng.choice([1, 8, 100, 4096, 70000, 2 << 20, (2 << 20) + 1, U64, 0])
        r = rng.random()
        if r < 0.4:
            size = min(size, 60000)
            return size, self.mem.put(os.urandom(min(size, 64)) + bytes(max(0, size - 64)))
        if r < 0.55:
            return size, self.mem.unmapped
        if r < 0.7:
            return min(size, PAGE), self.mem.ro
        if r < 0.8:
            return size, self.mem.edge + PAGE - rng.choice([1, 8, 100])
        if r < 0.9:
            return size, 0                                   # a NULL vec
        return size, rng.getrandbits(64)

    def item_list(self, number: int) -> bytes:
        rng = self.rng
        spec = COMMANDS.get(number)
        accepted = sorted(spec.items) if spec else [1]
        if number == K.KDBUS_CMD_SEND:
            accepted = [K.KDBUS_ITEM_CANCEL_FD]
        out = b""
        for _ in range(rng.choice([0, 0, 1, 1, 2, 3, 6])):
            r = rng.random()
            if r < 0.75:
                t = rng.choice(accepted)
            elif r < 0.9:
                t = rng.choice(sorted(K.ITEM_NAMES))
            else:
                t = rng.getrandbits(64)
            out += self.item(t)
        return out

    def item(self, t: int) -> bytes:
        rng = self.rng
        p = self.payload(t)
        item = encode_item(t, p)
        r = rng.random()
        if r < 0.85:
            return item
        if r < 0.9:      # size below the header
            return struct.pack("<QQ", rng.choice([0, 1, 8, 15]), t) + p
        if r < 0.95:     # size past the end
            return struct.pack("<QQ", (len(item) + rng.choice([8, 1000, U64 - 8])) & U64, t) + p
        return item + bytes(rng.choice([1, 4, 8]))           # trailing bytes

    def flags(self, number: int) -> int:
        spec = COMMANDS.get(number)
        ok = spec.flags if spec else 0
        r = self.rng.random()
        if r < 0.6:
            return self.rng.getrandbits(8) & ok
        if r < 0.75:
            return K.KDBUS_FLAG_NEGOTIATE | (self.rng.getrandbits(8) & ok)
        return self.u64()

    def fields(self, number: int) -> bytes:
        spec = COMMANDS[number]
        head = bytearray(spec.size)
        rng = self.rng
        for name, off in spec.field_offsets.items():
            if off < 24 or off + 8 > spec.size or "." in name or name in ("items",):
                continue
            if name == "pool_size":
                v = rng.choice([1 << 16, 1 << 20, 4096, 0, 1, 4097, 1 << 40, U64 & ~4095])
            elif name.startswith("attach_flags"):
                v = rng.choice([0, 0x3fff, U64, 1 << 14])
            elif name == "msg_address":
                v = self.msg_address()
            elif name == "priority":
                v = rng.choice([0, 1, U64, 1 << 63, (1 << 63) - 1])
            else:
                v = self.u64()
            struct.pack_into("<Q", head, off, v)
        return bytes(head)

    def msg(self) -> bytes:
        rng = self.rng
        items = b""
        for _ in range(rng.choice([0, 1, 1, 2, 3, 5])):
            t = rng.choice([K.KDBUS_ITEM_PAYLOAD_VEC] * 4 + [
                K.KDBUS_ITEM_PAYLOAD_MEMFD, K.KDBUS_ITEM_FDS, K.KDBUS_ITEM_BLOOM_FILTER,
                K.KDBUS_ITEM_DST_NAME, K.KDBUS_ITEM_NEGOTIATE, rng.getrandbits(16)])
            items += self.item(t)
        flags = rng.choice([0, 0, K.KDBUS_MSG_EXPECT_REPLY, K.KDBUS_MSG_SIGNAL,
                            K.KDBUS_MSG_NO_AUTO_START, K.KDBUS_FLAG_NEGOTIATE, self.u64()])
        now = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
        word = rng.choice([0, 0, now + 50_000_000, now - 1, U64, rng.choice(self.ids)])
        dst = rng.choice(self.ids + [K.KDBUS_DST_ID_BROADCAST, 0, U64 - 1])
        src = rng.choice([0, 0, rng.choice(self.ids)])
        size = 64 + len(items)
        if rng.random() < 0.1:
            size = rng.choice([0, 63, 64, 32769, U64, size + 8, size - 8])
        return struct.pack("<QQqQQQQQ", size & U64, flags & U64, rng.choice([0, -1, 5]),
                           dst, src, rng.choice([K.KDBUS_PAYLOAD_DBUS, 0, 1]),
                           rng.getrandbits(64), word) + items

    def msg_address(self) -> int:
        rng = self.rng
        r = rng.random()
        if r < 0.7:
            return self.mem.put(self.msg())
        if r < 0.8:
            return self.mem.read_only(self.msg())
        if r < 0.85:
            return self.mem.at_edge(self.msg())
        return rng.choice([0, self.mem.unmapped, self.mem.put(self.msg()) + 4, 8, U64 - 7])

    def command(self, number: int) -> tuple[str, int]:
        """(strategy, address) of an argument for ioctl `number`."""
        rng = self.rng
        r = rng.random()
        if r < 0.04:
            return "null", 0
        if r < 0.08:
            return "unmapped", self.mem.unmapped
        if r < 0.11:
            return "random_address", rng.getrandbits(64) & ~7
        if r < 0.16:
            return "random_bytes", self.mem.put(os.urandom(rng.choice([8, 24, 64, 200])))
        if number not in COMMANDS:
            body = struct.pack("<QQQ", 24, 0, 0) + self.item_list(number)
        else:
            spec = COMMANDS[number]
            head = bytearray(self.fields(number))
            body = bytes(head) + self.item_list(number)
            struct.pack_into("<QQQ", head, 0, len(body), self.flags(number),
                             rng.choice([0, 0, U64]))
            body = bytes(head) + body[spec.size:]
        strategy = "structured"
        if rng.random() < 0.15:
            strategy = "boundary_size"
            size = rng.choice([0, 7, len(body) - 1, len(body) + 1, len(body) + 8,
                               32768, 32769, 1 << 63, U64])
            if number in COMMANDS:
                size = rng.choice([size, COMMANDS[number].size - 1, COMMANDS[number].size])
            body = struct.pack("<Q", size & U64) + body[8:]
        r = rng.random()
        if r < 0.08:
            return strategy + "+unaligned", self.mem.put(body, align=rng.choice([1, 4]))
        if r < 0.16:
            return strategy + "+readonly", self.mem.read_only(body)
        if r < 0.24:
            return strategy + "+page_edge", self.mem.at_edge(body)
        return strategy, self.mem.put(body)

    FOR_KIND = {
        "control": [K.KDBUS_CMD_BUS_MAKE],
        "endpoint": [K.KDBUS_CMD_HELLO, K.KDBUS_CMD_HELLO, K.KDBUS_CMD_ENDPOINT_MAKE],
        "ep_owner": [K.KDBUS_CMD_ENDPOINT_UPDATE],
        "conn": [n for n in COMMANDS if n not in (
            K.KDBUS_CMD_BUS_MAKE, K.KDBUS_CMD_HELLO, K.KDBUS_CMD_ENDPOINT_MAKE,
            K.KDBUS_CMD_ENDPOINT_UPDATE)] + [K.KDBUS_CMD_SEND] * 6 + [K.KDBUS_CMD_RECV] * 2,
    }

    def number(self, kind: str) -> int:
        rng = self.rng
        r = rng.random()
        if kind in self.FOR_KIND and r < 0.7:
            return rng.choice(self.FOR_KIND[kind])
        r = rng.random()
        if r < 0.88:
            return rng.choice(sorted(COMMANDS) + [K.KDBUS_CMD_SEND] * 4)
        if r < 0.93:
            return K.KDBUSFS_CMD_FD_CHANNEL
        # the kdbus magic with another number, size or direction
        n = rng.choice(sorted(COMMANDS))
        return (n & ~0xff) | rng.getrandbits(8) if rng.random() < 0.5 else \
            (n & 0x0000ffff) | (rng.getrandbits(2) << 30) | (rng.getrandbits(12) << 16)

    # -- the loop -----------------------------------------------------------
    def call(self, f: Fd, number: int, arg: int) -> int:
        t0 = time.monotonic()
        rc = raw_ioctl(f.fd, number, arg)
        dt = time.monotonic() - t0
        if dt > 3.0:
            self.stats["slow"] += 1
        s = self.stats
        s["calls"] += 1
        name = CMD_NAMES.get(number, "unknown")
        s["per_cmd"][name] = s["per_cmd"].get(name, 0) + 1
        s["per_kind"][f.kind] = s["per_kind"].get(f.kind, 0) + 1
        key = errno.errorcode.get(rc, str(rc)) if rc else "OK"
        s["errnos"][key] = s["errnos"].get(key, 0) + 1
        if rc in SERVER_GONE:
            s["server_gone"] = True
        elif rc and rc not in SHEET_ERRNOS and len(s["unexpected"]) < 50:
            s["unexpected"].append([name, f.kind, key])
        return rc

    def report(self):
        data = (json.dumps(self.stats) + "\n").encode()
        try:
            os.write(self.report_fd, data)
        except OSError:
            pass

    def run(self):
        signal.signal(signal.SIGALRM, lambda *a: None)
        self.prepare_helpers()
        end = time.monotonic() + self.seconds
        last_report = time.monotonic()
        # one child in 20 leaves abruptly in the middle, everything open
        abrupt_at = time.monotonic() + self.rng.random() * self.seconds \
            if self.rng.random() < 0.05 else end + 3600
        self.refill()
        while time.monotonic() < end and not self.stats["server_gone"]:
            if self.rng.random() < 0.05:
                self.refill()
            if not self.fds:
                self.refill()
                if not self.fds:
                    time.sleep(0.05)
                    continue
            f = self.rng.choice(self.fds)
            number = self.number(f.kind)
            strategy, arg = self.command(number)
            # a blocked SEND or RECV comes back with EINTR when the timer fires
            signal.setitimer(signal.ITIMER_REAL, 0.3, 0.3)
            try:
                rc = self.call(f, number, arg)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            if rc == 0 and number in (K.KDBUS_CMD_HELLO, K.KDBUS_CMD_BUS_MAKE,
                                      K.KDBUS_CMD_ENDPOINT_MAKE) and f.kind in ("control",
                                                                              "endpoint"):
                f.kind = "set_up_by_fuzz"   # a connection, bus owner... (or negotiated)
            if rc == errno.ECONNRESET and self.rng.random() < 0.3:
                self.fds.remove(f)      # a dead connection: make room for a live one
                os.close(f.fd)
            if time.monotonic() - last_report > 0.5:
                self.report()
                last_report = time.monotonic()
            if time.monotonic() > abrupt_at:
                self.report()
                os._exit(0)             # an abrupt exit with everything open
        self.final_check()
        self.report()
        self.close_helpers()

    def close_helpers(self):
        for a in self._socks:
            a.close()
        for k, fd in self.helpers.items():
            if k not in ("unix_socket", "closed", "minus_one", "huge"):
                os.close(fd)

    def final_check(self):
        """After all that, this process can still talk on a fresh bus."""
        if self.stats["server_gone"]:
            return
        for f in self.fds:
            os.close(f.fd)
        self.fds = []
        try:
            with make_bus(self.mount, f"fzok{os.getpid()}") as bus:
                with Connection.open(bus.path) as a, Connection.open(bus.path) as b:
                    payload = os.urandom(100)
                    a.send(b.id, payload)
                    m = b.recv_wait(5.0)
                    self.stats["check_ok"] = m is not None and m.payload == payload
        except OSError as e:
            self.stats["check_ok"] = False
            self.stats["check_error"] = errno.errorcode.get(e.errno, str(e.errno))


# -- the sentinel: valid traffic that must keep working ----------------------------
def sentinel(mount: str, seconds: float, report_fd: int, ready_fd: int) -> None:
    stats = {"rounds": 0, "failures": [], "slowest": 0.0, "noise": 0}
    end = time.monotonic() + seconds
    bus = make_bus(mount, "sentinel", access="world")
    if True:
        os.write(ready_fd, (bus.dir + "\n").encode())
        os.close(ready_fd)
        a = Connection.open(bus.path, pool_size=1 << 20)
        b = Connection.open(bus.path, pool_size=1 << 20)
        a.acquire_name("org.fuzz.Sentinel")
        key = b.bloom("member:Tick")
        b.add_match(bloom_mask=key, sender=a.id)
        last = time.monotonic()
        while time.monotonic() < end:
            t0 = time.monotonic()
            try:
                payload = os.urandom(32) + struct.pack("<Q", stats["rounds"])
                cookie = b.send("org.fuzz.Sentinel", payload, expect_reply=True, timeout=10)
                req = _recv_from(a, lambda m: m.src_id == b.id and m.cookie == cookie, stats)
                if req is None or req.payload != payload:
                    raise AssertionError("request lost or changed")
                a.reply(req, payload[::-1])
                rep = _recv_from(b, lambda m: m.src_id == a.id and m.cookie_reply == cookie,
                                 stats)
                if rep is None or rep.payload != payload[::-1]:
                    raise AssertionError("reply lost or changed")
                a.emit(payload, bloom=key)
                sig = _recv_from(b, lambda m: m.src_id == a.id and m.payload == payload,
                                 stats)
                if sig is None:
                    raise AssertionError("signal lost")
                stats["rounds"] += 1
            except (OSError, AssertionError) as e:
                stats["failures"].append(repr(e)[:200])
                if isinstance(e, OSError) and e.errno in SERVER_GONE:
                    break
                if len(stats["failures"]) > 20:
                    break
            dt = time.monotonic() - t0
            stats["slowest"] = max(stats["slowest"], dt)
            if time.monotonic() - last > 0.5:
                os.write(report_fd, (json.dumps(stats) + "\n").encode())
                last = time.monotonic()
            time.sleep(0.01)
        for c in (a, b, bus):
            try:
                c.close()
            except OSError as e:      # ENOTCONN once the server is gone
                stats["failures"].append(f"close: {e!r}")
    os.write(report_fd, (json.dumps(stats) + "\n").encode())


def _recv_from(conn, want, stats, timeout=5.0):
    """The next message `want` accepts; others (fuzzers' noise) are skipped."""
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return None
        m = conn.recv_wait(left)
        if m is None:
            return None
        if want(m):
            return m
        stats["noise"] += 1


# -- the parent --------------------------------------------------------------------
class Child:
    def __init__(self, pid, rfd, role, deadline):
        self.pid = pid
        self.rfd = rfd
        self.role = role
        self.deadline = deadline
        self.buf = b""
        self.last = None
        self.killed_on_purpose = False
        self.hung = False
        self.killed_at = 0.0

    def pump(self):
        while True:
            try:
                chunk = os.read(self.rfd, 65536)
            except BlockingIOError:
                return
            except OSError:
                return
            if not chunk:
                return
            self.buf += chunk
            *lines, self.buf = self.buf.split(b"\n")
            for line in lines:
                if line.strip():
                    try:
                        self.last = json.loads(line)
                    except ValueError:
                        pass


def spawn(target, *args, uid: int | None = None) -> tuple[int, int]:
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            os.close(r)
            os.setpgid(0, 0)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            if uid is not None:
                os.setgroups([])
                os.setresgid(uid, uid, uid)
                os.setresuid(uid, uid, uid)
            target(*args, w)
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    os.set_blocking(r, False)
    return pid, r


def run(seconds: float, workers: int = 2, child_seconds: float = 4.0, grace: float = 10.0,
        seed: int | None = None, pushed: bool = False, log=print, kill_rate: float = 0.1,
        as_nobody: float = 0.25, inject: str | None = None) -> dict:
    """One fuzz run; the result dict (see summary()).  `inject` is for the
    tests of the fuzzer itself: "hang" makes the first worker sleep past
    its watchdog, "kill_server" SIGKILLs the server a second in."""
    seed = random.randrange(1 << 32) if seed is None else seed
    rng = random.Random(seed)
    if inject == "hang":
        kill_rate = 0.0     # a random SIGKILL would end the injected hang early
    srv = Server(pushed=pushed).start()
    t_start = time.monotonic()
    base_fds = srv.fds()
    base_rss = srv.status().get("VmRSS")
    res = {"seed": seed, "seconds": seconds, "workers": workers, "children": 0, "calls": 0,
           "per_cmd": {}, "per_kind": {}, "errnos": {}, "unexpected": [], "crashes": [],
           "hangs": [],
           "unkillable": 0, "killed_on_purpose": 0, "abrupt_exits": 0, "slow_calls": 0,
           "child_errors": 0, "final_checks_failed": 0, "sentinel": None,
           "server_fds": {"baseline": base_fds}, "server_exit": None,
           "server_log_problems": [], "mode": "pushed" if pushed else "passthrough"}
    children: list[Child] = []
    finished: list[Child] = []
    try:
        # the sentinel, as uid 65534 on its own world-accessible bus
        ready_r, ready_w = os.pipe()

        def sentinel_main(w):
            os.close(ready_r)
            sentinel(srv.path, seconds + 2 * child_seconds, w, ready_w)
        spid, srfd = spawn(sentinel_main, uid=NOBODY)
        os.close(ready_w)
        with os.fdopen(ready_r) as f:
            sentinel_bus = f.readline().strip() or None
        sent = Child(spid, srfd, "sentinel", time.monotonic() + seconds + 2 * child_seconds
                     + 30)
        end = time.monotonic() + seconds
        n = 0
        while time.monotonic() < end:
            while len(children) < workers:
                n += 1
                wseed = rng.randrange(1 << 32)
                uid = NOBODY if rng.random() < as_nobody else None

                def worker_main(w, wseed=wseed, n=n):
                    if inject == "hang" and n == 1:
                        time.sleep(3600)
                    Worker(srv.path, sentinel_bus, wseed, child_seconds, w).run()
                pid, rfd = spawn(worker_main, uid=uid)
                c = Child(pid, rfd, "worker", time.monotonic() + child_seconds + grace)
                c.seed = wseed
                children.append(c)
                res["children"] += 1
            time.sleep(0.05)
            if inject == "kill_server" and time.monotonic() > end - seconds + 1 and srv.alive():
                srv.signal(signal.SIGKILL)
            for c in list(children):
                c.pump()
                if not c.killed_on_purpose and rng.random() < kill_rate * 0.05 / child_seconds:
                    c.killed_on_purpose = True
                    os.kill(c.pid, signal.SIGKILL)
                if _reap(c, res):
                    children.remove(c)
                    finished.append(c)
                elif time.monotonic() > c.deadline and not c.hung:
                    c.hung = True
                    _hang(c, res)
            sent.pump()
            if not srv.alive():
                res["crashes"].append(f"server died (exit {srv.proc.returncode})")
                break
        # let the last workers finish
        for c in children:
            while not _reap(c, res):
                c.pump()
                now = time.monotonic()
                if now > c.deadline and not c.hung:
                    c.hung = True
                    _hang(c, res)
                if c.hung and now > c.killed_at + 5:
                    res["unkillable"] += 1      # SIGKILLed 5 s ago and still there
                    break
                time.sleep(0.05)
            finished.append(c)
        children.clear()
        while not _reap(sent, res):
            sent.pump()
            if time.monotonic() > sent.deadline:
                res["hangs"].append("sentinel")
                _hang(sent, res)
                break
            time.sleep(0.05)
        res["sentinel"] = sent.last
        for c in finished:
            st_ = c.last or {}
            res["calls"] += st_.get("calls", 0)
            for k, v in st_.get("per_cmd", {}).items():
                res["per_cmd"][k] = res["per_cmd"].get(k, 0) + v
            for k, v in st_.get("per_kind", {}).items():
                res["per_kind"][k] = res["per_kind"].get(k, 0) + v
            for k, v in st_.get("errnos", {}).items():
                res["errnos"][k] = res["errnos"].get(k, 0) + v
            res["unexpected"] += st_.get("unexpected", [])
            res["slow_calls"] += st_.get("slow", 0)
            if st_.get("check_ok") is False:
                res["final_checks_failed"] += 1
            res["killed_on_purpose"] += c.killed_on_purpose
        # no clients left: the server's descriptors must come back
        t_end = time.monotonic() + 10
        while srv.alive() and srv.fds() != base_fds and time.monotonic() < t_end:
            time.sleep(0.1)
        res["server_fds"]["after"] = srv.fds()
        st = srv.status()
        res["server_memory_kib"] = {"start_rss": base_rss, "VmHWM": st.get("VmHWM"),
                                    "end_rss": st.get("VmRSS")}
    finally:
        for c in children:
            try:
                os.kill(c.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        alive = srv.alive()
        if not alive and not res["crashes"]:
            res["crashes"].append(f"server died (exit {srv.proc.returncode})")
        res["server_exit"] = srv.stop()
        if alive and res["server_exit"] != 0:
            res["crashes"].append(f"server did not exit cleanly on unmount "
                                  f"({res['server_exit']})")
        res["server_log_problems"] = srv.problems()[:40]
        unknown, known = classify_tracebacks(srv.log())
        res["known_bugs"] = known
        if unknown:
            res["crashes"].append(f"{len(unknown)} exception(s) in the server log")
            res["tracebacks"] = unknown[:5]
        warned = [ln for ln in srv.log().splitlines() if "Warning" in ln]
        if warned:      # development mode: a resource warning is a bug too
            res["crashes"].append(f"{len(warned)} warning(s) in the server log: {warned[:3]}")
        # what the callers of a known bug saw is that bug, not a new one
        for name, n in known.items():
            cmd, err = KNOWN_BUGS[name][1]
            for u in [u for u in res["unexpected"] if (u[0], u[2]) == (cmd, err)][:n]:
                res["unexpected"].remove(u)
        res["elapsed"] = round(time.monotonic() - t_start, 1)
        res["ok"] = ok(res)
        keep = not res["ok"] or bool(res.get("known_bugs"))
        res["log"] = srv.log_path if keep else None
        srv.cleanup(keep_log=keep)
    return res


def _reap(c: Child, res) -> bool:
    try:
        pid, status = os.waitpid(c.pid, os.WNOHANG)
    except ChildProcessError:
        return True
    if pid == 0:
        return False
    c.pump()
    os.close(c.rfd)
    if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
        res["child_errors"] += 1
    if c.role == "worker" and os.WIFEXITED(status) and (c.last or {}).get("check_ok") is None \
            and not (c.last or {}).get("server_gone"):
        res["abrupt_exits"] += 1
    return True


def _hang(c: Child, res) -> None:
    """A child past its watchdog: note where it is stuck, then kill it."""
    where = ""
    try:
        with open(f"/proc/{c.pid}/wchan") as f:
            where = f.read()
    except OSError:
        pass
    res["hangs"].append(f"{c.role} {c.pid} seed {getattr(c, 'seed', '-')} state "
                        f"{proc_state(c.pid)} wchan {where}")
    c.killed_at = time.monotonic()
    try:
        os.killpg(c.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def ok(res) -> bool:
    s = res.get("sentinel") or {}
    return not (res["crashes"] or res["hangs"] or res["unkillable"] or res["unexpected"]
                or res["final_checks_failed"] or res["child_errors"]
                or not s or s.get("failures") or s.get("rounds", 0) == 0
                or res["server_fds"].get("after") != res["server_fds"]["baseline"])


def summary(res) -> str:
    s = res.get("sentinel") or {}
    lines = [
        f"kdbusfs fuzz: {res['seconds']} s, {res['workers']} workers, seed {res['seed']}, "
        f"{res['mode']} pools",
        f"  calls              {res['calls']}  ({res['children']} children, "
        f"{res['killed_on_purpose']} SIGKILLed on purpose, {res['abrupt_exits']} exited "
        f"abruptly on purpose)",
        f"  crashes            {len(res['crashes'])}  {res['crashes'] or ''}",
        f"  known bugs hit     {res.get('known_bugs') or 'none'} (docs/robustness.md)",
        f"  hangs              {len(res['hangs'])}  {res['hangs'] or ''}",
        f"  unkillable         {res['unkillable']}",
        f"  unexpected errnos  {len(res['unexpected'])}  {res['unexpected'][:10] or ''}",
        f"  slow calls (>3 s)  {res['slow_calls']}",
        f"  valid traffic      {s.get('rounds', 0)} rounds, {len(s.get('failures', []))} "
        f"failures, slowest {s.get('slowest', 0):.3f} s, {s.get('noise', 0)} foreign messages "
        f"skipped",
        f"  final checks failed {res['final_checks_failed']}, child errors "
        f"{res['child_errors']}",
        f"  server fds         {res['server_fds']}",
        f"  server memory      {res.get('server_memory_kib')}",
        f"  server exit        {res['server_exit']}; log problems "
        f"{len(res['server_log_problems'])}; log kept at {res.get('log')}",
        "  per ioctl          " + ", ".join(f"{k} {v}" for k, v in
                                           sorted(res["per_cmd"].items())),
        "  per fd kind        " + ", ".join(f"{k} {v}" for k, v in
                                           sorted(res["per_kind"].items())),
        "  answers            " + ", ".join(f"{k} {v}" for k, v in sorted(
            res["errnos"].items(), key=lambda kv: -kv[1])),
        f"  result             {'OK' if res['ok'] else 'FAILED'}",
    ]
    for p in res["server_log_problems"][:10]:
        lines.append(f"    log: {p}")
    for t in res.get("tracebacks", []):
        lines.append("    traceback: ..." + t.replace("\n", "\n      "))
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="scripts/fuzz", description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--child-seconds", type=float, default=4.0)
    p.add_argument("--seed", type=int)
    p.add_argument("--pushed", action="store_true", help="pushed pools instead of passthrough")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    a = p.parse_args(argv)
    if os.geteuid() != 0:
        print("scripts/fuzz needs root (it mounts, and runs children as uid 65534)",
              file=sys.stderr)
        return 2
    # SIGTERM (and SIGINT, even where a shell ignores it) end the run the
    # way its end does: children killed, the mount unmounted
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, lambda *_: sys.exit(130))
    res = run(a.seconds, a.workers, a.child_seconds, seed=a.seed, pushed=a.pushed)
    print(json.dumps(res, indent=1) if a.json else summary(res))
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
