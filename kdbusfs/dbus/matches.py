"""A connection's D-Bus match rules, installed as kdbus match entries.

kdbus delivers a broadcast only to connections with a matching entry, so
each AddMatch becomes entries under a cookie of its own:

* for signals from peers: a BLOOM_MASK from the rule (kdbusfs.dbus.bloom)
  and the sender as an ID item (``:1.N``) or a NAME item (well-known);
* for the bus driver's NameOwnerChanged, which kdbus sends as
  notifications: NAME_ADD/NAME_CHANGE/NAME_REMOVE rules (for the name in
  arg0, or all) and ID_ADD/ID_REMOVE rules (for a unique name in arg0, or
  all), when the rule can match that signal at all.

Every connection also has the base entries dbus-daemon's semantics need:
unicast signals addressed to it (by id, or by name: kdbus then shows
dst_id 0, and only the name's owner ever sees such a signal), and notifications of its own names
coming and going (NameAcquired, NameLost).  Entries admit a superset; the
exact rule is checked on every received message (:meth:`MatchSet.admits`).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from jeepney import Message

from kdbusfs.client import Connection, notify_id, notify_name

from . import errors
from .bloom import rule_mask
from .errors import DBusError
from .names import DRIVER_INTERFACE, DRIVER_NAME, DRIVER_PATH, parse_unique_name
from .rules import MatchRule

BASE_COOKIE = 1
_DRIVER_MEMBERS = ("NameOwnerChanged", "NameAcquired", "NameLost")


@dataclass
class _Installed:
    cookie: int
    count: int  # AddMatch of an equal rule twice needs RemoveMatch twice


def _may_match_driver(rule: MatchRule) -> bool:
    """Can ``rule`` match a signal of the bus driver?"""
    if rule.sender not in (None, DRIVER_NAME) or rule.type not in (None, "signal"):
        return False
    if rule.interface not in (None, DRIVER_INTERFACE):
        return False
    if rule.path is not None and rule.path != DRIVER_PATH:
        return False
    if rule.path_namespace is not None and not (
            rule.path_namespace == "/" or DRIVER_PATH == rule.path_namespace
            or DRIVER_PATH.startswith(rule.path_namespace + "/")):
        return False
    return rule.member in (None, *_DRIVER_MEMBERS)


def notification_entries(rule: MatchRule):
    """The kdbus notification rules that NameOwnerChanged under ``rule`` needs."""
    if not _may_match_driver(rule) or rule.member not in (None, "NameOwnerChanged"):
        return []
    arg0 = dict(rule.args).get(0)
    if arg0 is None:
        return ([notify_name(k) for k in ("name_add", "name_change", "name_remove")]
                + [notify_id(k) for k in ("id_add", "id_remove")])
    if arg0.startswith(":"):
        conn_id = parse_unique_name(arg0)
        return [] if conn_id is None else [notify_id("id_add", conn_id),
                                           notify_id("id_remove", conn_id)]
    return [notify_name(k, arg0) for k in ("name_add", "name_change", "name_remove")]


class MatchSet:
    """The match rules of one D-Bus connection on kdbus connection ``conn``."""

    def __init__(self, conn: Connection):
        self.conn = conn
        self._rules: dict[MatchRule, _Installed] = {}
        self._next_cookie = BASE_COOKIE + 1
        own = conn.id
        # unicast signals to us: addressed by id, or by a name of ours (dst_id 0)
        conn.add_match(BASE_COOKIE, dst_id=own)
        conn.add_match(BASE_COOKIE, dst_id=0)
        conn.add_match(BASE_COOKIE, notify=[
            notify_name("name_add", new_id=own), notify_name("name_change", new_id=own),
            notify_name("name_change", old_id=own), notify_name("name_remove", old_id=own)])

    @property
    def rules(self) -> list[MatchRule]:
        return list(self._rules)

    def add(self, rule: MatchRule) -> None:
        """AddMatch: install ``rule`` (again, if it is there already)."""
        installed = self._rules.get(rule)
        if installed is not None:
            installed.count += 1
            return
        cookie = self._next_cookie
        self._next_cookie += 1
        try:
            self._install(cookie, rule)
        except OSError as e:
            try:
                self.conn.remove_match(cookie)
            except OSError:
                pass
            if e.errno == errno.EMFILE:
                raise DBusError(errors.LIMITS_EXCEEDED,
                                "kdbus allows 256 match entries per connection") from None
            raise DBusError(errors.MATCH_RULE_INVALID,
                            f"kdbus refused the match: {e.strerror}") from None
        self._rules[rule] = _Installed(cookie, 1)

    def _install(self, cookie: int, rule: MatchRule) -> None:
        notify = notification_entries(rule)
        if notify:
            self.conn.add_match(cookie, notify=notify)
        if rule.sender == DRIVER_NAME or rule.type not in (None, "signal"):
            return  # only broadcast signals from peers need a signal entry
        sender = sender_name = None
        if rule.sender is not None:
            if rule.sender.startswith(":"):
                sender = parse_unique_name(rule.sender)
                if sender is None:
                    return  # no kdbus peer has that unique name
            else:
                sender_name = rule.sender
        mask = rule_mask(rule, self.conn.bloom_size, self.conn.bloom_n_hash)
        self.conn.add_match(cookie, bloom_mask=mask, sender=sender, sender_name=sender_name)

    def remove(self, rule: MatchRule) -> None:
        """RemoveMatch: DBusError MatchRuleNotFound if it was never added."""
        installed = self._rules.get(rule)
        if installed is None:
            raise DBusError(errors.MATCH_RULE_NOT_FOUND,
                            f"The given match rule wasn't found: {rule}")
        installed.count -= 1
        if installed.count:
            return
        del self._rules[rule]
        try:
            self.conn.remove_match(installed.cookie)
        except OSError as e:
            if e.errno != errno.EBADSLT:  # a rule that needed no entry
                raise

    def admits(self, msg: Message, sender_names: frozenset[str]) -> bool:
        """Does any rule match ``msg``?"""
        return any(rule.matches(msg, sender_names) for rule in self._rules)

