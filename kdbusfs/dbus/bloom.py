"""Bloom filters for D-Bus signals on kdbus, in sd-bus's scheme.

kdbus routes a broadcast signal by bloom filter: the sender attaches a
filter of the bus's size (``bloom_size`` bytes, ``n_hash`` hash functions,
both fixed at BUS_MAKE), a receiver's match entry carries a mask, and the
kernel delivers when every mask bit is set in the filter.  The filter only
narrows the traffic; the exact D-Bus match rule is checked again after
receiving, so false positives cost a wake-up and nothing else.

The scheme (sd-bus's, so filters interoperate with kdbus-era systemd):

* Each entry is the string ``"<key>:<value>"`` (UTF-8, no NUL).  For each
  of the ``n_hash`` hash functions, ``w = (log2(8*size) + 7) // 8`` bytes
  are taken, in order, from the SipHash-2-4 outputs of the entry under the
  fixed keys below (one key per 8 bytes consumed); they form a big-endian
  number whose low bits (``& (8*size - 1)``) give the bit to set.
* A signal's filter (generation 0) holds ``message-type:signal``,
  ``interface:I``, ``member:M``, ``path:P``, ``path-slash-prefix:P`` and
  ``path-slash-prefix:Q`` for every prefix Q of P ending before or after
  each ``/``; then, for each string-like argument N < 64 (s, o, g):
  ``argN:V`` plus the ``argN-dot-prefix:`` and ``argN-slash-prefix:``
  prefixes of V, and for an array of them ``argN-has:E`` per element.
  (sd-bus stopped at the first argument of another type, so a rule on a
  string after a number lost its signals; here other types are skipped.)
* A match rule's mask holds the entries its keys require: type ->
  ``message-type``, interface, member, path, path_namespace ->
  ``path-slash-prefix``, argN -> ``argN``, arg0namespace ->
  ``arg0-dot-prefix`` (N < 64).  ``argNpath`` adds nothing (unlike sd-bus): it also
  matches arguments that are prefixes of the rule's value, which a bloom
  mask cannot express without losing those signals.  ``sender`` becomes a
  kdbus NAME or ID item instead; ``destination`` is not in the filter.
"""

from __future__ import annotations

from jeepney import HeaderFields, Message

from .rules import TYPE_NAMES, MatchRule
from .siphash import siphash24
from .signature import split_signature

# sd-bus's fixed SipHash keys: 8 keys of 16 bytes, i.e. 64 bytes of hash
# output per entry at most.
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

#: The most string-like leading arguments a filter describes.
MAX_ARGS = 64


def bytes_per_index(size: int) -> int:
    """w: the hash bytes that make one bit index for a ``size``-byte filter."""
    return ((size * 8).bit_length() - 1 + 7) // 8


def valid_parameters(size: int, n_hash: int) -> bool:
    """Whether sd-bus's scheme covers these bus bloom parameters."""
    return size > 0 and n_hash > 0 and n_hash * bytes_per_index(size) <= 8 * len(HASH_KEYS)


class Bloom:
    """A bloom filter (or mask) of ``size`` bytes with ``n_hash`` functions."""

    def __init__(self, size: int, n_hash: int):
        if not valid_parameters(size, n_hash):
            raise ValueError(f"bloom size {size} with {n_hash} hash functions is beyond "
                             f"the scheme's {8 * len(HASH_KEYS)} hash bytes")
        self.size = size
        self.n_hash = n_hash
        self._bits = 0
        self._w = bytes_per_index(size)

    def add(self, entry: bytes) -> None:
        m = self.size * 8
        stream = b""
        key = 0
        pos = 0
        for _ in range(self.n_hash):
            p = 0
            for _ in range(self._w):
                if pos == len(stream):
                    stream = siphash24(HASH_KEYS[key], entry).to_bytes(8, "little")
                    key += 1
                    pos = 0
                p = (p << 8) | stream[pos]
                pos += 1
            self._bits |= 1 << (p & (m - 1))

    def add_pair(self, key: str, value: str) -> None:
        self.add(f"{key}:{value}".encode())

    def add_prefixes(self, key: str, value: str, sep: str) -> None:
        """``key:value``, then each prefix of value that ends just after and
        just before a ``sep``, from the longest down."""
        head = f"{key}:".encode()
        cur = value.encode()
        s = sep.encode()
        self.add(head + cur)
        while True:
            e = cur.rfind(s)
            if e < 0:
                break
            self.add(head + cur[:e + 1])
            if e == 0:
                break
            cur = cur[:e]
            self.add(head + cur)

    def to_bytes(self) -> bytes:
        return self._bits.to_bytes(self.size, "little")

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def message_filter(msg: Message, size: int, n_hash: int) -> bytes:
    """The bloom filter of a D-Bus message (sent with generation 0)."""
    b = Bloom(size, n_hash)
    f = msg.header.fields
    b.add_pair("message-type", TYPE_NAMES[msg.header.message_type])
    if HeaderFields.interface in f:
        b.add_pair("interface", f[HeaderFields.interface])
    if HeaderFields.member in f:
        b.add_pair("member", f[HeaderFields.member])
    if HeaderFields.path in f:
        path = f[HeaderFields.path]
        b.add_pair("path", path)
        b.add_pair("path-slash-prefix", path)
        b.add_prefixes("path-slash-prefix", path, "/")
    try:
        types = split_signature(f.get(HeaderFields.signature, ""))
    except ValueError:
        types = []
    for i, (t, value) in enumerate(zip(types[:MAX_ARGS], msg.body)):
        if t in ("s", "o", "g"):
            b.add_pair(f"arg{i}", value)
            b.add_prefixes(f"arg{i}-dot-prefix", value, ".")
            b.add_prefixes(f"arg{i}-slash-prefix", value, "/")
        elif t in ("as", "ao", "ag"):
            for element in value:
                b.add_pair(f"arg{i}-has", element)
    return b.to_bytes()


def rule_mask(rule: MatchRule, size: int, n_hash: int) -> bytes:
    """The bloom mask of a match rule (all zero: the rule narrows nothing)."""
    b = Bloom(size, n_hash)
    if rule.type is not None:
        b.add_pair("message-type", rule.type)
    if rule.interface is not None:
        b.add_pair("interface", rule.interface)
    if rule.member is not None:
        b.add_pair("member", rule.member)
    if rule.path is not None:
        b.add_pair("path", rule.path)
    if rule.path_namespace is not None:
        b.add_pair("path-slash-prefix", rule.path_namespace)
    for n, value in rule.args:
        if n < MAX_ARGS:
            b.add_pair(f"arg{n}", value)
    if rule.arg0namespace is not None:
        b.add_pair("arg0-dot-prefix", rule.arg0namespace)
    return b.to_bytes()
