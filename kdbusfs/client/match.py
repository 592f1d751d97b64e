"""Match rules: which signals and notifications reach a connection (§6.15).

An entry is a list of rules that must all hold; a message is admitted when
any entry admits it.  An entry without rules admits every signal and every
notification.  Signal rules (bloom mask, sender id or name, dst id) never
match notifications, and notification rules never match signals, so
:meth:`MatchMixin.add_match` puts each notification rule in its own entry
(all under the same cookie).

Notification rules are built with :func:`notify_id` / :func:`notify_name`,
or named by kind: "id_add", "id_remove", "name_add", "name_remove",
"name_change", or "all" for the five of them, every id wildcarded with
KDBUS_MATCH_ID_ANY.

    cookie = conn.add_match(sender_name="org.example.Sensor",
                            bloom_mask=conn.bloom("member:Changed"))
    conn.add_match(notify=notify_name("name_change", "org.example.Sensor"))
    ...
    conn.remove_match(cookie)

Without a cookie, add_match picks a fresh one (from AUTO_COOKIE_BASE up)
and returns it; pick your own below that base if you mix the two.
"""

from __future__ import annotations

from typing import Iterable, Iterator, NamedTuple, Sequence, Union

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I

from . import _sys
from . import bloom as bloommod
from . import commands as cmds

ANY = C.KDBUS_MATCH_ID_ANY
#: Cookies that add_match() chooses itself start here.
AUTO_COOKIE_BASE = 1 << 32

BloomMask = Union[bytes, bytearray, Sequence[Union[bytes, bytearray]]]


class NotifyRule(NamedTuple):
    """One notification match item: ``type`` and its encoded payload."""

    type: int
    payload: bytes

    def encode(self) -> bytes:
        return I.encode_item(self.type, self.payload)


_ID_KINDS = {"id_add": C.KDBUS_ITEM_ID_ADD, "id_remove": C.KDBUS_ITEM_ID_REMOVE}
_NAME_KINDS = {"name_add": C.KDBUS_ITEM_NAME_ADD, "name_remove": C.KDBUS_ITEM_NAME_REMOVE,
               "name_change": C.KDBUS_ITEM_NAME_CHANGE}


def _kind(kind: str | int, table: dict[str, int]) -> int:
    if isinstance(kind, int):
        if kind not in table.values():
            raise ValueError(f"not a valid item type here: {kind:#x}")
        return kind
    try:
        return table[kind]
    except KeyError:
        raise ValueError(f"unknown notification kind {kind!r}; one of {sorted(table)}") from None


def notify_id(kind: str | int, id: int = ANY) -> NotifyRule:
    """ID_ADD / ID_REMOVE rule for connection ``id`` (default: any)."""
    t = _kind(kind, _ID_KINDS)
    return NotifyRule(t, cmds.U64.pack(id) + cmds.U64.pack(0))


def notify_name(kind: str | int, name: str | None = None, *, old_id: int = ANY,
                new_id: int = ANY) -> NotifyRule:
    """NAME_ADD / NAME_REMOVE / NAME_CHANGE rule.

    Ids compare exactly unless ANY (0 is literal: NAME_ADD has old_id 0,
    NAME_REMOVE new_id 0); ``name`` None matches every name.
    """
    t = _kind(kind, _NAME_KINDS)
    payload = cmds.U64.pack(old_id) + cmds.U64.pack(0) + cmds.U64.pack(new_id) + cmds.U64.pack(0)
    if name is not None:
        payload += name.encode("latin-1") + b"\0"
    return NotifyRule(t, payload)


def all_notifications() -> list[NotifyRule]:
    """A wildcard rule for each of ID_ADD, ID_REMOVE, NAME_ADD, NAME_REMOVE, NAME_CHANGE."""
    return ([notify_id(k) for k in _ID_KINDS] + [notify_name(k) for k in _NAME_KINDS])


NotifySpec = Union[str, NotifyRule, Iterable[Union[str, NotifyRule]], None]


def notify_rules(spec: NotifySpec) -> list[NotifyRule]:
    """Expand ``notify=`` of add_match into rules (see the module docs)."""
    if spec is None:
        return []
    if isinstance(spec, NotifyRule):
        return [spec]
    if isinstance(spec, str):
        spec = [spec]
    out: list[NotifyRule] = []
    for s in spec:
        if isinstance(s, NotifyRule):
            out.append(s)
        elif s == "all":
            out.extend(all_notifications())
        elif s in _ID_KINDS:
            out.append(notify_id(s))
        elif s in _NAME_KINDS:
            out.append(notify_name(s))
        else:
            raise ValueError(f"unknown notification kind {s!r}")
    return out


def mask_bytes(mask: BloomMask, bloom_size: int | None = None) -> bytes:
    """One BLOOM_MASK payload: bytes as given, or a list of per-generation
    masks (generation 0 first; filters of later generations use the last)."""
    if isinstance(mask, (bytes, bytearray, memoryview)):
        return bytes(mask)
    parts = [bytes(m) for m in mask]
    if not parts:
        raise ValueError("a bloom mask needs at least one generation")
    if bloom_size is not None and any(len(p) != bloom_size for p in parts):
        raise ValueError(f"each generation of a mask must be {bloom_size} bytes")
    return b"".join(parts)


def signal_rules(*, bloom_mask: BloomMask | None = None, sender: int | None = None,
                 sender_name: str | None = None, dst_id: int | None = None,
                 bloom_size: int | None = None) -> bytes:
    """The encoded items of one signal-rule entry."""
    items = b""
    if bloom_mask is not None:
        items += I.item_bloom_mask(mask_bytes(bloom_mask, bloom_size))
    if sender_name is not None:
        items += I.item_string(C.KDBUS_ITEM_NAME, sender_name)
    if sender is not None:
        items += I.item_u64(C.KDBUS_ITEM_ID, sender)
    if dst_id is not None:
        items += I.item_u64(C.KDBUS_ITEM_DST_ID, dst_id)
    return items


class MatchMixin:
    _fd: int
    bloom_size: int
    bloom_n_hash: int
    _match_cookies: Iterator[int]

    def bloom(self, *keys: str | bytes) -> bytes:
        """A filter (for emit) or mask (for add_match) of this bus's bloom
        size with the bits of ``keys`` set (sd-bus's scheme; see bloom.py).

        A message matches when its filter has every bit of the mask, so a
        mask of some of a filter's keys matches it; no keys: all zeros.
        """
        return bloommod.bloom(self.bloom_size, self.bloom_n_hash, keys)

    def add_match(self, cookie: int | None = None, *, bloom_mask: BloomMask | None = None,
                  sender: int | None = None, sender_name: str | None = None,
                  dst_id: int | None = None, notify: NotifySpec = None,
                  replace: bool = False) -> int:
        """MATCH_ADD under ``cookie`` (chosen here when None); returns the cookie.

        Signal rules, all of which must hold: ``bloom_mask`` (bytes of the
        bus bloom size, e.g. from :meth:`bloom`, or a list of them, one per
        generation; the signal's filter must contain every mask bit),
        ``sender`` (its id, or ANY), ``sender_name`` (a name the sender owns
        as primary), ``dst_id`` (the destination id as sent; ``self.id``
        selects signals sent to this connection by id.  BROADCAST is the same
        value as ANY, so it matches every destination).
        ``notify``: notification rules, each added as its own entry (see
        module docs); it cannot be combined with signal rules.  No rules at
        all: match every signal and notification.  Entries under one cookie
        are alternatives.  ``replace`` first removes the entries with this
        cookie.  Raises OSError: EMFILE beyond 256 entries, EDOM for a mask
        of the wrong size, EINVAL for a bad name.
        """
        sig = signal_rules(bloom_mask=bloom_mask, sender=sender, sender_name=sender_name,
                           dst_id=dst_id, bloom_size=self.bloom_size or None)
        rules = notify_rules(notify)
        if rules and sig:
            raise ValueError("notification rules and signal rules never match together; "
                             "add them as separate entries")
        fresh = cookie is None
        if fresh:
            cookie = next(self._match_cookies)
        entries = [r.encode() for r in rules] if rules else [sig]
        flags = C.KDBUS_MATCH_REPLACE if replace else 0
        added = 0
        try:
            for items in entries:
                buf = _sys.cmd_buffer(cmds.match(cookie, flags, items))
                _sys.ioctl(self._fd, C.KDBUS_CMD_MATCH_ADD, buf)
                added += 1
                flags = 0  # REPLACE only before the first entry
        except OSError:
            if fresh and added:
                # all or nothing for a cookie that is ours alone
                try:
                    self.remove_match(cookie)
                except OSError:
                    pass
            raise
        return cookie

    def remove_match(self, cookie: int) -> None:
        """MATCH_REMOVE: delete every entry with ``cookie`` (EBADSLT: none)."""
        buf = _sys.cmd_buffer(cmds.match(cookie))
        _sys.ioctl(self._fd, C.KDBUS_CMD_MATCH_REMOVE, buf)
