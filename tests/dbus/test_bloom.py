"""The sd-bus bloom scheme for D-Bus: which entries filters and masks hold,
and the property that matters for delivery: a rule's mask never has a bit
its matching signal's filter lacks (no lost signals).  The hashing itself
(SipHash-2-4, the bit indexes) is kdbusfs.client.bloom's, tested with its
known values in tests/client/test_bloom.py."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kdbusfs.client import bloom as client_bloom
from kdbusfs.dbus.bloom import Bloom, bytes_per_index, message_filter, rule_mask, valid_parameters
from kdbusfs.dbus.bus import BusBase
from kdbusfs.dbus.rules import MatchRule
from tests.client.test_bloom import SENSOR_BITS


def test_index_width_and_parameters():
    assert bytes_per_index(8) == 1      # 64 bits: one byte per index
    assert bytes_per_index(64) == 2     # 512 bits
    assert bytes_per_index(4096) == 2   # 32768 bits
    assert valid_parameters(64, 32) and not valid_parameters(64, 33)
    assert not valid_parameters(0, 1) and not valid_parameters(64, 0)


def test_each_entry_sets_n_hash_bits_at_most():
    for n_hash in (1, 3, 8):
        b = Bloom(64, n_hash)
        b.add_pair("member", "Changed")
        bits = bin(int.from_bytes(b.to_bytes(), "little")).count("1")
        assert 1 <= bits <= n_hash


def test_an_entry_is_the_client_library_key_key_colon_value():
    # Bloom hashes with the client library's one implementation of the
    # scheme: add_pair(k, v) sets the known bits of the client key "k:v"
    for (size, n_hash), bits in SENSOR_BITS.items():
        ours = Bloom(size, n_hash)
        ours.add_pair("interface", "org.example.Sensor")
        assert ours.to_bytes() == client_bloom.bloom(size, n_hash,
                                                     ["interface:org.example.Sensor"])
        expected = bytearray(size)
        client_bloom.set_bits(expected, bits)
        assert ours.to_bytes() == bytes(expected)


def test_prefix_entries():
    whole = Bloom(64, 1)
    whole.add_prefixes("path-slash-prefix", "/a/b", "/")
    expected = Bloom(64, 1)
    for entry in ("/a/b", "/a/", "/a", "/"):
        expected.add_pair("path-slash-prefix", entry)
    assert whole.to_bytes() == expected.to_bytes()


def _covers(filter_: bytes, mask: bytes) -> bool:
    return all(f & m == m for f, m in zip(filter_, mask))


_elem = st.text(alphabet="abcXYZ_", min_size=1, max_size=4)
_paths = st.lists(_elem, min_size=0, max_size=4).map(lambda parts: "/" + "/".join(parts))
_names = st.lists(_elem, min_size=2, max_size=4).map(".".join)


@st.composite
def signal_and_rule(draw):
    path = draw(_paths)
    iface = draw(_names)
    member = draw(_elem)
    sig_types = draw(st.lists(st.sampled_from(["s", "o", "i", "as"]), max_size=4))
    body = []
    for t in sig_types:
        if t == "s":
            body.append(draw(_names))
        elif t == "o":
            body.append(draw(_paths))
        elif t == "i":
            body.append(draw(st.integers(-5, 5)))
        else:
            body.append(draw(st.lists(_elem, max_size=3)))
    msg = BusBase.signal_message(path, iface, member, "".join(sig_types), tuple(body))
    # a rule built from what the signal really carries, so it must match
    parts = ["type='signal'"]
    if draw(st.booleans()):
        parts.append(f"interface='{iface}'")
    if draw(st.booleans()):
        parts.append(f"member='{member}'")
    choice = draw(st.sampled_from(["none", "path", "namespace"]))
    if choice == "path":
        parts.append(f"path='{path}'")
    elif choice == "namespace":
        segments = path.strip("/").split("/") if path != "/" else []
        cut = draw(st.integers(0, len(segments)))
        parts.append(f"path_namespace='/{'/'.join(segments[:cut])}'")
    for i, (t, v) in enumerate(zip(sig_types, body)):
        # an argument is constrained once at most: argN or argNpath
        kind = draw(st.sampled_from(["none", "equal", "path"])) if t in ("s", "o") else "none"
        if kind == "equal":
            parts.append(f"arg{i}='{v}'")
        elif kind == "path" and v.startswith("/"):
            parts.append(f"arg{i}path='{v}'")
        if i == 0 and t == "s" and draw(st.booleans()):
            cut = draw(st.integers(1, len(v.split("."))))
            parts.append(f"arg0namespace='{'.'.join(v.split('.')[:cut])}'")
    return msg, MatchRule.parse(",".join(parts))


@settings(max_examples=300, deadline=None)
@given(signal_and_rule(), st.sampled_from([(8, 1), (64, 1), (64, 3), (256, 2)]))
def test_a_matching_rule_never_loses_its_signal(case, params):
    msg, rule = case
    assert rule.matches(msg)
    size, n_hash = params
    assert _covers(message_filter(msg, size, n_hash), rule_mask(rule, size, n_hash))


def test_masks_narrow():
    msg = BusBase.signal_message("/a/b", "org.example.X", "Changed", "s", ("org.x.y",))
    f = message_filter(msg, 64, 1)
    for text in ("interface='org.example.Y'", "member='Other'", "path='/a'",
                 "path_namespace='/b'", "arg0='org.x'"):
        # each of these rules misses the signal; with 512 bits and one key the
        # mask bit is almost surely absent (fixed inputs: deterministic)
        assert not _covers(f, rule_mask(MatchRule.parse(text), 64, 1)), text
    assert _covers(f, rule_mask(MatchRule.parse("arg0namespace='org.x'"), 64, 1))
    assert rule_mask(MatchRule.parse("sender=':1.5'"), 64, 1) == bytes(64)
