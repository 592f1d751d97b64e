"""D-Bus values on the command line, in busctl's notation.

A SIGNATURE is followed by one token per basic value; an array gives its
element count first, a variant its signature first, a struct or dict entry
its fields in order:

    s hello                    "hello"
    ai 3 1 2 3                 [1, 2, 3]
    a{sv} 2 one s x two i 2    {"one": ("s", "x"), "two": ("i", 2)}
    (sb) hi true               ("hi", True)

Output uses the same notation, with strings quoted: ``s "hello"``.
"""

from __future__ import annotations

import math

from kdbusfs.dbus.signature import split_signature

_INT_RANGES = {
    "y": (0, 0xFF), "n": (-(1 << 15), (1 << 15) - 1), "q": (0, 0xFFFF),
    "i": (-(1 << 31), (1 << 31) - 1), "u": (0, 0xFFFFFFFF),
    "x": (-(1 << 63), (1 << 63) - 1), "t": (0, (1 << 64) - 1),
}
_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}


class ValueSyntaxError(ValueError):
    pass


class _Tokens:
    def __init__(self, tokens: list[str]):
        self.tokens = tokens
        self.pos = 0

    def next(self, what: str) -> str:
        if self.pos >= len(self.tokens):
            raise ValueSyntaxError(f"missing {what}")
        token = self.tokens[self.pos]
        self.pos += 1
        return token


def parse_values(signature: str, tokens: list[str]) -> tuple:
    """Values for ``signature`` from command-line ``tokens``."""
    try:
        types = split_signature(signature)
    except ValueError as e:
        raise ValueSyntaxError(str(e)) from None
    stream = _Tokens(tokens)
    values = tuple(_parse(t, stream) for t in types)
    if stream.pos != len(tokens):
        raise ValueSyntaxError(f"too many arguments for signature {signature!r}: "
                               f"{' '.join(tokens[stream.pos:])}")
    return values


def _parse(t: str, s: _Tokens):
    c = t[0]
    if c in _INT_RANGES:
        token = s.next(f"a value of type {t}")
        try:
            value = int(token, 0)
        except ValueError:
            raise ValueSyntaxError(f"{token!r} is not an integer (type {t})") from None
        lo, hi = _INT_RANGES[c]
        if not lo <= value <= hi:
            raise ValueSyntaxError(f"{value} is out of range for type {t}")
        return value
    if c == "b":
        token = s.next("a boolean").lower()
        if token in _TRUE:
            return True
        if token in _FALSE:
            return False
        raise ValueSyntaxError(f"{token!r} is not a boolean (true/false)")
    if c == "d":
        token = s.next("a double")
        try:
            return float(token)
        except ValueError:
            raise ValueSyntaxError(f"{token!r} is not a number") from None
    if c in "sog":
        return s.next(f"a value of type {t}")
    if c == "h":
        raise ValueSyntaxError("unix fds (type h) cannot be given on the command line")
    if c == "v":
        inner = s.next("a variant's signature")
        try:
            if len(split_signature(inner)) != 1:
                raise ValueError
        except ValueError:
            raise ValueSyntaxError(f"{inner!r} is not a single complete type") from None
        return (inner, _parse(inner, s))
    if c == "a":
        token = s.next(f"the element count of {t}")
        try:
            n = int(token)
        except ValueError:
            raise ValueSyntaxError(f"{token!r} is not an element count (for {t})") from None
        if n < 0:
            raise ValueSyntaxError("negative element count")
        elem = t[1:]
        if elem == "y":
            return bytes(_parse("y", s) for _ in range(n))
        if elem.startswith("{"):
            key_t, value_t = split_signature(elem[1:-1])
            return {_parse(key_t, s): _parse(value_t, s) for _ in range(n)}
        return [_parse(elem, s) for _ in range(n)]
    if c == "(":
        return tuple(_parse(f, s) for f in split_signature(t[1:-1]))
    raise ValueSyntaxError(f"unknown type {t!r}")


def format_values(signature: str, values) -> str:
    """``signature`` then each value in busctl's notation."""
    parts = [signature] if signature else []
    for t, v in zip(split_signature(signature), values):
        parts.append(_format(t, v))
    return " ".join(parts)


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _format(t: str, v) -> str:
    c = t[0]
    if c in _INT_RANGES:
        return str(v)
    if c == "b":
        return "true" if v else "false"
    if c == "d":
        return repr(v) if math.isfinite(v) else str(v)
    if c in "sog":
        return _quote(v)
    if c == "h":
        return str(v)
    if c == "v":
        inner, value = v
        return f"{inner} {_format(inner, value)}"
    if c == "a":
        elem = t[1:]
        if elem.startswith("{"):
            key_t, value_t = split_signature(elem[1:-1])
            items = [f"{_format(key_t, k)} {_format(value_t, x)}" for k, x in v.items()]
        else:
            items = [_format(elem, x) for x in v]
        return " ".join([str(len(items))] + items)
    if c == "(":
        return " ".join(_format(f, x) for f, x in zip(split_signature(t[1:-1]), v))
    return repr(v)
