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
  are taken, in order, from the SipHash-2-4 outputs of the entry under
  sd-bus's fixed keys (one key per 8 bytes consumed); they form a big-endian
  number whose low bits (``& (8*size - 1)``) give the bit to set.  That
  core is the client library's (kdbusfs.client.bloom: HASH_KEYS,
  siphash24, hash_bits); this module chooses the entries.
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

# HASH_KEYS, bytes_per_index and valid_parameters are also this module's API.
from kdbusfs.client.bloom import HASH_KEYS, bytes_per_index, hash_bits, set_bits, valid_parameters

from .rules import TYPE_NAMES, MatchRule
from .signature import split_signature

#: The most string-like leading arguments a filter describes.
MAX_ARGS = 64


class Bloom:
    """A bloom filter (or mask) of ``size`` bytes with ``n_hash`` functions."""

    def __init__(self, size: int, n_hash: int):
        if not valid_parameters(size, n_hash):
            raise ValueError(f"bloom size {size} with {n_hash} hash functions is beyond "
                             f"the scheme's {8 * len(HASH_KEYS)} hash bytes")
        self.size = size
        self.n_hash = n_hash
        self._buf = bytearray(size)

    def add(self, entry: bytes) -> None:
        set_bits(self._buf, hash_bits(entry, self.size, self.n_hash))

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
        return bytes(self._buf)

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
