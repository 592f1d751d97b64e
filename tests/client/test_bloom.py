"""Bloom filters from keys (kdbusfs.client.bloom): pure, no mount.

This is the one implementation of SipHash-2-4 and of sd-bus's bit setting;
kdbusfs.dbus.bloom only chooses the entries (tests/dbus/test_bloom.py).
"""

from __future__ import annotations

import pytest

from kdbusfs.client.bloom import (bloom, check_parameters, contains, hash_bits, key_bits,
                                  set_bits, siphash24)

KEY = bytes(range(16))

#: The bits of "interface:org.example.Sensor" in sd-bus's scheme, per
#: (size, n_hash): what the library's two former copies of the scheme (the
#: client's and kdbusfs.dbus's) both set.
SENSOR_BITS = {
    (8, 1): [25],
    (64, 1): [368],
    (64, 4): [368, 433, 421, 506],
    (4096, 7): [6512, 8113, 6565, 14842, 26439, 1677, 220],
}


def test_siphash24_reference_vectors():
    # the SipHash paper's key 00..0f with messages 00 01 02 ... of length n
    assert siphash24(b"", KEY) == 0x726FDB47DD0E0E31
    assert siphash24(bytes(range(8)), KEY) == 0x93F5F5799A932462
    assert siphash24(bytes(range(15)), KEY) == 0xA129CA6149BE45E5
    with pytest.raises(ValueError):
        siphash24(b"", b"short")


def test_keys_set_n_hash_bits_inside_the_filter():
    for size, n_hash in ((8, 1), (64, 1), (64, 4), (512, 8), (4096, 2)):
        bits = key_bits("member:Changed", size, n_hash)
        assert len(bits) == n_hash and all(0 <= b < size * 8 for b in bits)
        f = bloom(size, n_hash, ["member:Changed"])
        assert len(f) == size
        assert sum(bin(x).count("1") for x in f) == len(set(bits))
    assert key_bits("member:Changed", 64, 1) == key_bits(b"member:Changed", 64, 1)
    assert key_bits("member:Changed", 64, 1) != key_bits("member:Other", 64, 1)


def test_known_bits_of_a_key():
    key = "interface:org.example.Sensor"
    for (size, n_hash), bits in SENSOR_BITS.items():
        assert key_bits(key, size, n_hash) == bits
        assert hash_bits(key.encode(), size, n_hash) == bits
        f = bytearray(size)
        set_bits(f, bits)
        assert bloom(size, n_hash, [key]) == bytes(f)
        assert all(f[b // 8] >> (b % 8) & 1 for b in bits)


def test_a_mask_of_some_keys_matches_a_filter_of_more():
    f = bloom(64, 2, ["interface:org.example.Sensor", "member:Changed"])
    assert contains(f, bloom(64, 2, ["member:Changed"]))
    assert contains(f, bloom(64, 2, []))                 # all zeros: the wildcard
    assert not contains(f, bloom(64, 2, ["member:Changed", "member:Other"]))


def test_bad_parameters():
    for size, n_hash in ((0, 1), (12, 1), (64, 0), (64, 33)):
        with pytest.raises(ValueError):
            check_parameters(size, n_hash)
    check_parameters(64, 32)       # 512 bits: 2 bytes per index, 64 bytes of hash
