"""Raw kdbus commands for tests that need malformed input or exact bytes.

Commands live in ctypes buffers so their addresses stay valid during the
ioctl; fcntl.ioctl(fd, cmd, address) passes the address unchanged.
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct

from kdbusfs.abi import constants as K
from kdbusfs.abi.items import encode_item


class Buf:
    """A command (or message) in ctypes memory, readable after the call."""

    def __init__(self, data: bytes, size: int | None = None):
        self.mem = ctypes.create_string_buffer(bytes(data), size or max(len(data), 8))
        self.addr = ctypes.addressof(self.mem)

    def u64(self, off: int) -> int:
        return struct.unpack_from("<Q", self.mem.raw, off)[0]

    @property
    def raw(self) -> bytes:
        return self.mem.raw


def cmd(fixed: bytes | int, items: bytes = b"", *, flags: int = 0, size: int | None = None,
        fields: dict[int, int] | None = None) -> Buf:
    head = bytearray(fixed if isinstance(fixed, bytes) else bytes(fixed))
    body = bytes(head) + items
    b = bytearray(body)
    struct.pack_into("<QQ", b, 0, len(b) if size is None else size, flags)
    for off, v in (fields or {}).items():
        struct.pack_into("<Q", b, off, v & 0xFFFFFFFFFFFFFFFF)
    return Buf(bytes(b), max(len(b), 8))


_libc_ioctl = ctypes.CDLL(None, use_errno=True).ioctl
_libc_ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]


def ioctl(fd: int, number: int, buf: Buf | int) -> int:
    """Returns 0 or the errno (the argument is passed as a raw address)."""
    addr = buf.addr if isinstance(buf, Buf) else buf
    if _libc_ioctl(fd, number, addr) < 0:
        return ctypes.get_errno()
    return 0


def name_item(t: int, s: str) -> bytes:
    return encode_item(t, s.encode() + b"\0")


def make_bus(mount: str, name: str = "test", *, flags: int = K.KDBUS_MAKE_ACCESS_WORLD,
             bloom=(64, 1)) -> tuple[int, str]:
    fd = os.open(os.path.join(mount, "control"), os.O_RDWR | os.O_CLOEXEC)
    full = f"{os.geteuid()}-{name}"
    items = name_item(K.KDBUS_ITEM_MAKE_NAME, full) + \
        encode_item(K.KDBUS_ITEM_BLOOM_PARAMETER, struct.pack("<QQ", *bloom))
    rc = ioctl(fd, K.KDBUS_CMD_BUS_MAKE, cmd(24, items, flags=flags))
    if rc:
        os.close(fd)
        raise OSError(rc, os.strerror(rc))
    return fd, os.path.join(mount, full)


class Conn:
    """A minimal connection: HELLO, mmap, send, recv."""

    def __init__(self, bus_dir: str, *, pool_size: int = 1 << 20, flags: int = 0,
                 attach_recv: int = 0, endpoint: str = "bus", items: bytes = b""):
        self.fd = os.open(os.path.join(bus_dir, endpoint), os.O_RDWR | os.O_CLOEXEC)
        h = cmd(96, items, flags=flags,
                fields={24: K._KDBUS_ATTACH_ALL, 32: attach_recv, 56: pool_size})
        rc = ioctl(self.fd, K.KDBUS_CMD_HELLO, h)
        if rc:
            os.close(self.fd)
            raise OSError(rc, os.strerror(rc))
        self.id = h.u64(48)
        self.pool_size = pool_size
        self.pool = mmap.mmap(self.fd, pool_size, mmap.MAP_SHARED, mmap.PROT_READ)
        self.free(h.u64(64))
        self._keep = []

    def free(self, off: int) -> int:
        return ioctl(self.fd, K.KDBUS_CMD_FREE, cmd(32, fields={24: off}))

    def send(self, dst: int = 0, payload: bytes = b"", *, flags: int = 0, cookie: int = 1,
             dst_name: str | None = None, timeout_or_reply: int = 0, sync: bool = False,
             extra_items: bytes = b"", payload_type: int = K.KDBUS_PAYLOAD_DBUS,
             bloom: bytes | None = None) -> tuple[int, Buf]:
        items = b""
        if payload:
            data = ctypes.create_string_buffer(payload, len(payload))
            self._keep = [data]
            items += encode_item(K.KDBUS_ITEM_PAYLOAD_VEC,
                                 struct.pack("<QQ", len(payload), ctypes.addressof(data)))
        if dst_name is not None:
            items += name_item(K.KDBUS_ITEM_DST_NAME, dst_name)
        if bloom is not None:
            items += encode_item(K.KDBUS_ITEM_BLOOM_FILTER, struct.pack("<Q", 0) + bloom)
        items += extra_items
        m = bytearray(64) + items
        struct.pack_into("<QQqQQQQQ", m, 0, len(m), flags, 0, dst, 0, payload_type, cookie,
                         timeout_or_reply)
        mb = Buf(bytes(m))
        s = cmd(56, flags=K.KDBUS_SEND_SYNC_REPLY if sync else 0, fields={24: mb.addr})
        s._msg = mb
        return ioctl(self.fd, K.KDBUS_CMD_SEND, s), s

    def recv(self, flags: int = 0) -> tuple[int, dict | None]:
        r = cmd(64, flags=flags)
        rc = ioctl(self.fd, K.KDBUS_CMD_RECV, r)
        if rc:
            return rc, None
        off, size = r.u64(40), r.u64(48)
        m = parse(self.pool, off)
        m["offset"], m["slice"], m["dropped"] = off, size, r.u64(32)
        if not flags & K.KDBUS_RECV_PEEK:
            self.free(off)
        return 0, m

    def close(self) -> None:
        try:
            self.pool.close()
        except Exception:
            pass
        os.close(self.fd)


def parse(pool, off: int) -> dict:
    size, flags, prio, dst, src, ptype, cookie, reply = struct.unpack_from("<QQqQQQQQ", pool, off)
    items, payload = [], b""
    pos = off + 64
    while pos < off + size:
        isz, ity = struct.unpack_from("<QQ", pool, pos)
        body = bytes(pool[pos + 16:pos + isz])
        items.append((ity, body))
        if ity == K.KDBUS_ITEM_PAYLOAD_OFF:
            n, o = struct.unpack_from("<QQ", body)
            payload += bytes(pool[off + o:off + o + n])
        pos += (isz + 7) & ~7
    return dict(size=size, flags=flags, priority=prio, dst_id=dst, src_id=src,
                payload_type=ptype, cookie=cookie, cookie_reply=reply, items=items,
                payload=payload)


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]


def _anon(prot: int) -> int:
    return _libc.mmap(None, 4096, prot, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)


def unmapped_address() -> int:
    """An address that was mapped a moment ago and is not any more."""
    addr = _anon(mmap.PROT_READ | mmap.PROT_WRITE)
    _libc.munmap(addr, 4096)
    return addr


def readonly_address(data: bytes = b"") -> int:
    """A page the caller can read but not write, holding `data`."""
    addr = _anon(mmap.PROT_READ | mmap.PROT_WRITE)
    ctypes.memmove(addr, data, len(data))
    _libc.mprotect(ctypes.c_void_p(addr), 4096, mmap.PROT_READ)
    return addr
