"""Bloom filters for signals and masks for matches, built from string keys.

kdbus only compares bits (fact sheet §6.15): a signal's BLOOM_FILTER passes
a match's BLOOM_MASK when every mask bit is set in the filter.  Which bits a
key sets is the senders' and receivers' business; this module uses the
scheme of sd-bus (systemd's kdbus client), so Python clients and sd-bus
clients agree on keys such as ``"interface:org.example.Sensor"`` or
``"member:Changed"``:

    filter = conn.bloom("interface:org.example.Sensor", "member:Changed")
    conn.emit(b"...", bloom=filter)
    listener.add_match(bloom_mask=listener.bloom("member:Changed"))

The scheme: for each of the bus's ``n_hash`` hash functions take ``w``
bytes (enough to index every bit of the filter) from a stream of SipHash-2-4
values of the key, computed with fixed 128-bit keys in turn; the big-endian
number they form, masked to the filter's bit count, is the bit to set.
"""

from __future__ import annotations

import struct
from typing import Iterable, Union

_M64 = (1 << 64) - 1

# The fixed SipHash keys of sd-bus's bloom filters (public constants, needed
# to set the same bits as sd-bus clients do): 8 keys of 16 bytes, i.e. 64
# bytes of hash output per key at most.
HASH_KEYS = tuple(bytes.fromhex(k) for k in (
    "b9660bf0467047c18875c49c54b9bd15",
    "aaa154a2e0714b39bfe1dd2e9fc54a3b",
    "63fdaebecd824812a16e4126cbfaa0c8",
    "23be452932d2462d82035228fe3717f5",
    "563bbfee5a4f4339afaa9408dff0fc10",
    "3180c873c7ea46d3aa25750f9e4c0929",
    "7df7184b7ba444d5853c06e06553966d",
    "f277e96f93b54e719a0c34883925bf35",
))

Key = Union[str, bytes]


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _M64


def siphash24(data: bytes, key: bytes) -> int:
    """SipHash-2-4 (Aumasson and Bernstein, 2012) of ``data`` under the
    16-byte ``key``, as a u64: the integer whose little-endian bytes are the
    reference implementation's 8 output bytes.  ValueError for another key
    length.  (hashlib has no SipHash; this is slow next to C but only hashes
    a few short strings per signal.)"""
    if len(key) != 16:
        raise ValueError("SipHash needs a 16-byte key")
    k0, k1 = struct.unpack("<QQ", key)
    v0 = k0 ^ 0x736F6D6570736575
    v1 = k1 ^ 0x646F72616E646F6D
    v2 = k0 ^ 0x6C7967656E657261
    v3 = k1 ^ 0x7465646279746573

    def rounds(n):
        nonlocal v0, v1, v2, v3
        for _ in range(n):
            v0 = (v0 + v1) & _M64
            v1 = _rotl(v1, 13) ^ v0
            v0 = _rotl(v0, 32)
            v2 = (v2 + v3) & _M64
            v3 = _rotl(v3, 16) ^ v2
            v0 = (v0 + v3) & _M64
            v3 = _rotl(v3, 21) ^ v0
            v2 = (v2 + v1) & _M64
            v1 = _rotl(v1, 17) ^ v2
            v2 = _rotl(v2, 32)

    n = len(data)
    end = n - n % 8
    for (m,) in struct.iter_unpack("<Q", data[:end]):
        v3 ^= m
        rounds(2)
        v0 ^= m
    last = int.from_bytes(data[end:], "little") | ((n & 0xFF) << 56)
    v3 ^= last
    rounds(2)
    v0 ^= last
    v2 ^= 0xFF
    rounds(4)
    return v0 ^ v1 ^ v2 ^ v3


def bytes_per_index(size: int) -> int:
    """w: the hash bytes that make one bit index for a ``size``-byte filter."""
    return ((size * 8).bit_length() - 1 + 7) // 8


def valid_parameters(size: int, n_hash: int) -> bool:
    """Whether the scheme's hash output covers ``n_hash`` indexes into a
    ``size``-byte filter."""
    return size > 0 and n_hash > 0 and n_hash * bytes_per_index(size) <= 8 * len(HASH_KEYS)


def check_parameters(size: int, n_hash: int) -> None:
    """ValueError unless keys can be hashed into filters of this bus."""
    if size <= 0 or size % 8 or n_hash <= 0:
        raise ValueError(f"bad bloom parameters: size {size}, n_hash {n_hash}")
    if not valid_parameters(size, n_hash):
        raise ValueError(f"n_hash {n_hash} needs more hash bits than the scheme has")


def hash_bits(data: bytes, size: int, n_hash: int) -> list[int]:
    """The bit numbers the entry ``data`` sets in a ``size``-byte filter: the
    core of the scheme, without checking the parameters (see
    :func:`valid_parameters`)."""
    m = size * 8
    w = bytes_per_index(size)
    out = []
    stream = b""
    used = 0
    next_key = 0
    for _ in range(n_hash):
        p = 0
        for _ in range(w):
            if used == len(stream):
                stream = siphash24(data, HASH_KEYS[next_key]).to_bytes(8, "little")
                next_key += 1
                used = 0
            p = (p << 8) | stream[used]
            used += 1
        out.append(p & (m - 1))
    return out


def set_bits(filter_: bytearray, bits: Iterable[int]) -> None:
    """Set the bit numbers ``bits`` in ``filter_`` (bit n: byte n // 8, 1 << n % 8)."""
    for bit in bits:
        filter_[bit >> 3] |= 1 << (bit & 7)


def key_bits(key: Key, size: int, n_hash: int) -> list[int]:
    """The bit numbers ``key`` sets in a ``size``-byte filter."""
    check_parameters(size, n_hash)
    data = key.encode("utf-8") if isinstance(key, str) else bytes(key)
    return hash_bits(data, size, n_hash)


def bloom(size: int, n_hash: int, keys: Iterable[Key] = ()) -> bytes:
    """A ``size``-byte filter (or mask) with the bits of every key set.

    No keys gives all zeros: as a mask it matches every signal.
    """
    buf = bytearray(size)
    for key in keys:
        set_bits(buf, key_bits(key, size, n_hash))
    return bytes(buf)


def contains(filter_: bytes, mask: bytes) -> bool:
    """True when every bit of ``mask`` is set in ``filter_`` (the kernel's test)."""
    return all(f & m == m for f, m in zip(filter_, mask))
