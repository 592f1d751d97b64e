"""D-Bus type signatures: splitting them into single complete types.

jeepney marshals by signature; what we need besides is the list of the
top-level types of a body (bloom filters and match rules look at string
arguments, the command line parses one value per type).
"""

from __future__ import annotations

BASIC = "ybnqiuxtdhsog"
_CLOSE = {"(": ")", "{": "}"}


def _end_of_type(sig: str, i: int) -> int:
    """The index just past the complete type starting at ``sig[i]``."""
    if i >= len(sig):
        raise ValueError(f"signature {sig!r} ends inside a type")
    c = sig[i]
    if c in BASIC or c == "v":
        return i + 1
    if c == "a":
        return _end_of_type(sig, i + 1)
    if c in _CLOSE:
        close = _CLOSE[c]
        j = i + 1
        while j < len(sig) and sig[j] != close:
            j = _end_of_type(sig, j)
        if j >= len(sig) or j == i + 1:
            raise ValueError(f"signature {sig!r}: empty or unclosed {c}")
        return j + 1
    raise ValueError(f"signature {sig!r}: unknown type code {c!r}")


def split_signature(sig: str) -> list[str]:
    """``"sa{sv}(ii)"`` -> ``["s", "a{sv}", "(ii)"]``; ValueError if malformed."""
    out = []
    i = 0
    while i < len(sig):
        j = _end_of_type(sig, i)
        out.append(sig[i:j])
        i = j
    return out


def is_valid_signature(sig: str) -> bool:
    try:
        split_signature(sig)
    except ValueError:
        return False
    return len(sig) <= 255
