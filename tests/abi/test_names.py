from errno import EINVAL, ENAMETOOLONG

import pytest
from hypothesis import given, strategies as st

from kdbusfs.abi import KdbusError, check_bus_prefix, check_sysname, parse_string
from kdbusfs.abi.names import is_valid_string, is_well_known_name, is_wildcard_name


def kernel_isalpha(c: int) -> bool:
    return (0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A
            or (0xC0 <= c <= 0xFF and c not in (0xD7, 0xF7)))


def reference_name_is_valid(name: bytes, allow_wildcard: bool) -> bool:
    """A character loop in the kernel's style, as the independent oracle."""
    dot, found_dot = True, False
    for i, c in enumerate(name):
        if c == ord("."):
            if dot:
                return False
            found_dot = dot = True
        else:
            good = (kernel_isalpha(c) or (not dot and 0x30 <= c <= 0x39)
                    or c in b"_-"
                    or (allow_wildcard and dot and c == ord("*") and i == len(name) - 1))
            if not good:
                return False
            dot = False
    return len(name) <= 255 and not dot and found_dot


def reference_sysname_is_valid(name: bytes) -> bool:
    if not name:
        return False
    for i, c in enumerate(name):
        if kernel_isalpha(c) or 0x30 <= c <= 0x39 or c == ord("_"):
            continue
        if c in b"-." and 0 < i < len(name) - 1:
            continue
        return False
    return True


@pytest.mark.parametrize("name", [
    b"a.b", b"org.freedesktop.DBus", b"com.example.foo-bar", b"_a._b", b"-a.-b",
    b"a.b1", b"a1.b2.c3", b"\xc0.\xff", b"caf\xe9.na\xefve", b"a." + b"b" * 253,
])
def test_valid_names(name):
    assert is_well_known_name(name)
    assert is_well_known_name(name.decode("latin-1"))


@pytest.mark.parametrize("name", [
    b"", b"a", b".a.b", b"a.b.", b"a..b", b"1a.b", b"a.1b", b"a.b c", b"a/b.c",
    b"a.b\0", b"a.\xd7", b"a.\xf7x", b"a.b\xbf", b"a.*", b"a.b*", b"a." + b"b" * 254,
    b"*.a", b":1.42",
])
def test_invalid_names(name):
    assert not is_well_known_name(name)


def test_length_limit_is_255_bytes():
    assert is_well_known_name(b"a." + b"b" * 253)  # 255
    assert not is_well_known_name(b"a." + b"b" * 254)  # 256


@pytest.mark.parametrize("name,ok", [
    (b"a.*", True), (b"a.b.*", True), (b"a.b", True), (b"*", False), (b"*.a", False),
    (b"a.*.b", False), (b"a.**", False), (b"a.b*", False), (b"a.*.", False),
])
def test_wildcards(name, ok):
    assert is_well_known_name(name, allow_wildcard=True) is ok
    assert is_wildcard_name(name) is (ok and name.endswith(b"*"))


def test_str_outside_latin1_is_invalid():
    assert not is_well_known_name("a.\u0100")


@given(st.binary(max_size=300), st.booleans())
def test_names_match_reference(name, wildcard):
    assert is_well_known_name(name, wildcard) == reference_name_is_valid(name, wildcard)


@given(st.text(alphabet="ab1_-.*\xd7\xe9", max_size=12), st.booleans())
def test_names_match_reference_dense(name, wildcard):
    b = name.encode("latin-1")
    assert is_well_known_name(b, wildcard) == reference_name_is_valid(b, wildcard)


# --- strings ------------------------------------------------------------------

@pytest.mark.parametrize("payload,value", [
    (b"\0", ""), (b"abc\0", "abc"), (b"\xc0\xff\0", "\xc0\xff"),
])
def test_parse_string(payload, value):
    assert parse_string(payload) == value
    assert is_valid_string(payload)


@pytest.mark.parametrize("payload", [b"", b"abc", b"a\0b\0", b"\0\0", b"a\0b"])
def test_parse_string_errors(payload):
    assert not is_valid_string(payload)
    with pytest.raises(KdbusError) as e:
        parse_string(payload)
    assert e.value.errno == EINVAL


# --- sysnames -------------------------------------------------------------------

@pytest.mark.parametrize("name", [
    b"a", b"1", b"_", b"1000-foo", b"a.b", b"a-.b", b"x" * 63, b"\xe9t\xe9", b"a..b",
])
def test_valid_sysnames(name):
    assert check_sysname(name + b"\0") == name.decode("latin-1")


@pytest.mark.parametrize("payload,err", [
    (b"", EINVAL),                        # < 2 bytes
    (b"\0", EINVAL),                      # < 2 bytes (empty name)
    (b"a", EINVAL),                       # < 2 bytes, no NUL
    (b"ab", EINVAL),                      # no NUL
    (b"a\0b\0", EINVAL),                  # inner NUL
    (b"-a\0", EINVAL), (b"a-\0", EINVAL), (b".a\0", EINVAL), (b"a.\0", EINVAL),
    (b"a b\0", EINVAL), (b"a/b\0", EINVAL), (b"a*\0", EINVAL), (b"\xd7\0", EINVAL),
    (b"x" * 64 + b"\0", ENAMETOOLONG),    # 64 characters
    (b"x" * 63 + b"\0\0", ENAMETOOLONG),  # 65-byte payload: size checked first
    (b"\0" * 100, ENAMETOOLONG),
])
def test_sysname_errors(payload, err):
    with pytest.raises(KdbusError) as e:
        check_sysname(payload)
    assert e.value.errno == err


@given(st.binary(max_size=80))
def test_sysname_matches_reference(payload):
    try:
        name = check_sysname(payload)
    except KdbusError as e:
        if len(payload) < 2:
            assert e.errno == EINVAL
        elif len(payload) > 64:
            assert e.errno == ENAMETOOLONG
        else:
            assert e.errno == EINVAL
            assert not (is_valid_string(payload)
                        and reference_sysname_is_valid(payload[:-1]))
    else:
        assert 2 <= len(payload) <= 64 and is_valid_string(payload)
        assert reference_sysname_is_valid(payload[:-1])
        assert name.encode("latin-1") + b"\0" == payload


# --- <uid>- prefix -------------------------------------------------------------------

def test_bus_prefix():
    check_bus_prefix("1000-foo", 1000)
    check_bus_prefix("0-x", 0)
    for name, euid in [("1000-foo", 100), ("100-foo", 1000), ("1000foo", 1000),
                       ("foo", 0), ("01000-foo", 1000), ("4294967295-a", 0xFFFFFFFF),
                       ("x-a", None), ("-1-a", -1)]:
        with pytest.raises(KdbusError) as e:
            check_bus_prefix(name, euid)
        assert e.value.errno == EINVAL
