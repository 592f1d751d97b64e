"""D-Bus match rules: parsing, printing and matching (D-Bus specification,
"Match Rules").

A rule is a comma-separated list of ``key='value'``.  Keys: type, sender,
interface, member, path, path_namespace, destination, arg0..arg63,
arg0path..arg63path, arg0namespace, eavesdrop.  Inside quotes a backslash
is literal; outside, ``\\'`` is an apostrophe.

Matching needs the sender's well-known names (a rule's ``sender`` may be
one): kdbus attaches them to every message as OWNED_NAME metadata.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from jeepney import HeaderFields, Message, MessageType

from .names import is_bus_name
from .signature import split_signature

MESSAGE_TYPES = {
    "signal": MessageType.signal,
    "method_call": MessageType.method_call,
    "method_return": MessageType.method_return,
    "error": MessageType.error,
}
TYPE_NAMES = {v: k for k, v in MESSAGE_TYPES.items()}

_ARG_KEY = re.compile(r"arg([0-9]{1,2})(path|namespace)?\Z")
_PATH_RE = re.compile(r"/\Z|(/[A-Za-z0-9_]+)+\Z")
_MEMBER_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_INTERFACE_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+\Z")
_NAMESPACE_RE = re.compile(r"[A-Za-z_-][A-Za-z0-9_-]*(\.[A-Za-z_-][A-Za-z0-9_-]*)*\Z")


class MatchRuleError(ValueError):
    """The rule text is not a valid match rule."""


@dataclass(frozen=True)
class MatchRule:
    """One parsed match rule; None means the key is absent.

    ``args`` maps N to the argN value; ``arg_paths`` N to argNpath.
    Equal rules (same keys and values) compare equal, whatever their text.
    """

    type: str | None = None
    sender: str | None = None
    interface: str | None = None
    member: str | None = None
    path: str | None = None
    path_namespace: str | None = None
    destination: str | None = None
    args: tuple[tuple[int, str], ...] = field(default_factory=tuple)
    arg_paths: tuple[tuple[int, str], ...] = field(default_factory=tuple)
    arg0namespace: str | None = None
    eavesdrop: bool = False

    # ------------------------------------------------------------------
    # text

    @classmethod
    def parse(cls, text: str) -> "MatchRule":
        """Parse rule text; MatchRuleError if it is malformed."""
        values: dict[str, str] = {}
        args: dict[int, str] = {}
        arg_paths: dict[int, str] = {}
        for key, value in _tokens(text):
            if key in values:
                raise MatchRuleError(f"key {key!r} given twice")
            m = _ARG_KEY.match(key)
            if m:
                n = int(m.group(1))
                if n > 63:
                    raise MatchRuleError(f"{key}: argument index above 63")
                if m.group(2) == "namespace":
                    if n != 0:
                        raise MatchRuleError(f"{key}: only arg0namespace exists")
                    if not _NAMESPACE_RE.match(value) or len(value) > 255:
                        raise MatchRuleError(f"arg0namespace {value!r} is not a name prefix")
                    values[key] = value
                elif m.group(2) == "path":
                    if n in arg_paths or n in args:
                        raise MatchRuleError(f"arg{n} given twice")
                    arg_paths[n] = value
                else:
                    if n in args or n in arg_paths:
                        raise MatchRuleError(f"arg{n} given twice")
                    args[n] = value
                continue
            if key not in _PLAIN_KEYS:
                raise MatchRuleError(f"unknown key {key!r}")
            _PLAIN_KEYS[key](value)
            values[key] = value
        if "path" in values and "path_namespace" in values:
            raise MatchRuleError("path and path_namespace cannot be combined")
        eavesdrop = values.pop("eavesdrop", "false") == "true"
        return cls(type=values.get("type"), sender=values.get("sender"),
                   interface=values.get("interface"), member=values.get("member"),
                   path=values.get("path"), path_namespace=values.get("path_namespace"),
                   destination=values.get("destination"),
                   args=tuple(sorted(args.items())), arg_paths=tuple(sorted(arg_paths.items())),
                   arg0namespace=values.get("arg0namespace"), eavesdrop=eavesdrop)

    def __str__(self) -> str:
        parts = []
        for key in ("type", "sender", "interface", "member", "path", "path_namespace",
                    "destination"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={_quote(value)}")
        parts += [f"arg{n}={_quote(v)}" for n, v in self.args]
        parts += [f"arg{n}path={_quote(v)}" for n, v in self.arg_paths]
        if self.arg0namespace is not None:
            parts.append(f"arg0namespace={_quote(self.arg0namespace)}")
        if self.eavesdrop:
            parts.append("eavesdrop='true'")
        return ",".join(parts)

    # ------------------------------------------------------------------
    # matching

    def matches(self, msg: Message, sender_names: frozenset[str] | set[str] = frozenset()) -> bool:
        """Does ``msg`` match?  ``sender_names`` are the well-known names its
        sender owned when it was sent (for a well-known ``sender`` key)."""
        h = msg.header
        f = h.fields
        if self.type is not None and MESSAGE_TYPES[self.type] != h.message_type:
            return False
        if self.sender is not None:
            sender = f.get(HeaderFields.sender)
            if sender != self.sender and self.sender not in sender_names:
                return False
        for key, hf in ((self.interface, HeaderFields.interface),
                        (self.member, HeaderFields.member),
                        (self.path, HeaderFields.path),
                        (self.destination, HeaderFields.destination)):
            if key is not None and f.get(hf) != key:
                return False
        if self.path_namespace is not None:
            path = f.get(HeaderFields.path)
            if path is None or not _in_namespace(path, self.path_namespace, "/"):
                return False
        if self.args or self.arg_paths or self.arg0namespace is not None:
            strings = string_args(msg)
            for n, value in self.args:
                if strings.get(n) != value:
                    return False
            for n, value in self.arg_paths:
                got = strings.get(n)
                if got is None or not _path_match(got, value):
                    return False
            if self.arg0namespace is not None:
                got = strings.get(0)
                if got is None or not _in_namespace(got, self.arg0namespace, "."):
                    return False
        return True


def string_args(msg: Message) -> dict[int, str]:
    """{index: value} of the top-level string and object-path arguments."""
    sig = msg.header.fields.get(HeaderFields.signature, "")
    try:
        types = split_signature(sig)
    except ValueError:
        return {}
    return {i: v for i, (t, v) in enumerate(zip(types, msg.body)) if t in ("s", "o")}


def _in_namespace(value: str, ns: str, sep: str) -> bool:
    if sep == "/" and ns == "/":
        return True
    return value == ns or value.startswith(ns + sep)


def _path_match(arg: str, value: str) -> bool:
    # argNpath: equal, or one is a '/'-terminated prefix of the other
    if arg == value:
        return True
    if value.endswith("/") and arg.startswith(value):
        return True
    return arg.endswith("/") and value.startswith(arg)


def _check_type(v: str) -> None:
    if v not in MESSAGE_TYPES:
        raise MatchRuleError(f"type {v!r} is not one of {', '.join(MESSAGE_TYPES)}")


def _check_bus_name(v: str) -> None:
    if not is_bus_name(v):
        raise MatchRuleError(f"{v!r} is not a bus name")


def _check_re(regex, what, max_len=255):
    def check(v: str) -> None:
        if len(v) > max_len or not regex.match(v):
            raise MatchRuleError(f"{v!r} is not a valid {what}")
    return check


def _check_eavesdrop(v: str) -> None:
    if v not in ("true", "false"):
        raise MatchRuleError("eavesdrop must be 'true' or 'false'")


_PLAIN_KEYS = {
    "type": _check_type,
    "sender": _check_bus_name,
    "interface": _check_re(_INTERFACE_RE, "interface"),
    "member": _check_re(_MEMBER_RE, "member"),
    "path": _check_re(_PATH_RE, "object path", 1 << 16),
    "path_namespace": _check_re(_PATH_RE, "object path", 1 << 16),
    "destination": _check_bus_name,
    "eavesdrop": _check_eavesdrop,
}


def _tokens(text: str):
    """(key, value) pairs of rule text, with the quoting rules applied."""
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n:
            break
        eq = text.find("=", i)
        if eq < 0:
            raise MatchRuleError(f"expected key=value at {text[i:]!r}")
        key = text[i:eq].strip()
        if not key:
            raise MatchRuleError("empty key")
        i = eq + 1
        value = []
        quoted = False
        while i < n:
            c = text[i]
            if quoted:
                if c == "'":
                    quoted = False
                else:
                    value.append(c)
            elif c == "'":
                quoted = True
            elif c == "\\" and i + 1 < n and text[i + 1] == "'":
                value.append("'")
                i += 1
            elif c == ",":
                break
            else:
                value.append(c)
            i += 1
        if quoted:
            raise MatchRuleError("unterminated quote")
        i += 1  # past the comma
        yield key, "".join(value)


def _quote(value: str) -> str:
    # quote everything, and write apostrophes outside the quotes as \'
    return "'" + value.replace("'", "'\\''") + "'"
