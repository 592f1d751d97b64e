"""The bus driver, org.freedesktop.DBus, emulated over kdbus.

On kdbus there is no daemon: whoever speaks D-Bus for a connection (the
bridge for a socket client, kdbusfs.dbus for a native one) answers the
driver's methods itself with ioctls on that connection: RequestName is
NAME_ACQUIRE, ListNames is LIST, GetNameOwner is CONN_INFO, AddMatch is
MATCH_ADD, and so on.  Hello and BecomeMonitor change what the connection
is, so the bridge handles them before this module sees the message.
"""

from __future__ import annotations

import errno
import os
from typing import Callable

from jeepney import HeaderFields, Message

from kdbusfs.abi import constants as C
from kdbusfs.client import Connection

from . import errors
from .errors import DBusError
from .matches import MatchSet
from .names import DRIVER_INTERFACE, DRIVER_NAME, is_well_known_name, parse_unique_name, unique_name
from .rules import MatchRule, MatchRuleError
from .signature import split_signature
from .wire import Wire, error_reply, method_return, wants_reply

# RequestName flags and answers (D-Bus specification)
NAME_FLAG_ALLOW_REPLACEMENT = 0x1
NAME_FLAG_REPLACE_EXISTING = 0x2
NAME_FLAG_DO_NOT_QUEUE = 0x4
REQUEST_NAME_PRIMARY_OWNER = 1
REQUEST_NAME_IN_QUEUE = 2
REQUEST_NAME_EXISTS = 3
REQUEST_NAME_ALREADY_OWNER = 4
RELEASE_NAME_RELEASED = 1
RELEASE_NAME_NON_EXISTENT = 2
RELEASE_NAME_NOT_OWNER = 3
START_REPLY_SUCCESS = 1
START_REPLY_ALREADY_RUNNING = 2

INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
PEER = "org.freedesktop.DBus.Peer"
PROPERTIES = "org.freedesktop.DBus.Properties"
MONITORING = "org.freedesktop.DBus.Monitoring"

_NOT_A_PEER = C.KDBUS_HELLO_ACTIVATOR | C.KDBUS_HELLO_POLICY_HOLDER | C.KDBUS_HELLO_MONITOR
_ID_ATTACH = (C.KDBUS_ATTACH_CREDS | C.KDBUS_ATTACH_PIDS | C.KDBUS_ATTACH_AUXGROUPS
              | C.KDBUS_ATTACH_SECLABEL)


def machine_id(fallback: bytes) -> str:
    """This machine's D-Bus machine id (/etc/machine-id), else ``fallback`` in hex."""
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as f:
                text = f.read().strip()
        except OSError:
            continue
        if len(text) == 32:
            return text
    return fallback.hex()


def _parse_rule(text: str) -> MatchRule:
    """The rule of AddMatch/RemoveMatch; DBusError MatchRuleInvalid if malformed."""
    try:
        return MatchRule.parse(text)
    except MatchRuleError as e:
        raise DBusError(errors.MATCH_RULE_INVALID, str(e)) from None


class Driver:
    """Answers method calls to org.freedesktop.DBus for one connection."""

    def __init__(self, conn: Connection, matches: MatchSet, wire: Wire):
        self.conn = conn
        self.matches = matches
        self.wire = wire
        # (interface, member) -> (in signature, out signature, handler)
        self._methods: dict[tuple[str, str], tuple[str, str, Callable]] = {
            (DRIVER_INTERFACE, "Hello"): ("", "s", self._hello),
            (DRIVER_INTERFACE, "RequestName"): ("su", "u", self._request_name),
            (DRIVER_INTERFACE, "ReleaseName"): ("s", "u", self._release_name),
            (DRIVER_INTERFACE, "StartServiceByName"): ("su", "u", self._start_service),
            (DRIVER_INTERFACE, "UpdateActivationEnvironment"): ("a{ss}", "", self._update_env),
            (DRIVER_INTERFACE, "NameHasOwner"): ("s", "b", self._name_has_owner),
            (DRIVER_INTERFACE, "ListNames"): ("", "as", self._list_names),
            (DRIVER_INTERFACE, "ListActivatableNames"): ("", "as", self._list_activatable),
            (DRIVER_INTERFACE, "AddMatch"): ("s", "", self._add_match),
            (DRIVER_INTERFACE, "RemoveMatch"): ("s", "", self._remove_match),
            (DRIVER_INTERFACE, "GetNameOwner"): ("s", "s", self._get_name_owner),
            (DRIVER_INTERFACE, "ListQueuedOwners"): ("s", "as", self._list_queued_owners),
            (DRIVER_INTERFACE, "GetConnectionUnixUser"): ("s", "u", self._unix_user),
            (DRIVER_INTERFACE, "GetConnectionUnixProcessID"): ("s", "u", self._unix_pid),
            (DRIVER_INTERFACE, "GetConnectionCredentials"): ("s", "a{sv}", self._credentials),
            (DRIVER_INTERFACE, "GetAdtAuditSessionData"): ("s", "ay", self._audit_data),
            (DRIVER_INTERFACE, "GetConnectionSELinuxSecurityContext"): ("s", "ay",
                                                                        self._seclabel),
            (DRIVER_INTERFACE, "ReloadConfig"): ("", "", lambda: ()),
            (DRIVER_INTERFACE, "GetId"): ("", "s", lambda: (bytes(self.conn.id128).hex(),)),
            (MONITORING, "BecomeMonitor"): ("asu", "", self._become_monitor),
            (INTROSPECTABLE, "Introspect"): ("", "s", lambda: (self.introspect(),)),
            (PEER, "Ping"): ("", "", lambda: ()),
            (PEER, "GetMachineId"): ("", "s", lambda: (machine_id(bytes(self.conn.id128)),)),
            (PROPERTIES, "Get"): ("ss", "v", self._get_property),
            (PROPERTIES, "GetAll"): ("s", "a{sv}", self._get_all_properties),
        }

    # ------------------------------------------------------------------
    # dispatch

    def handle(self, msg: Message) -> Message | None:
        """The answer to a call to the driver (None if it wants none)."""
        f = msg.header.fields
        iface = f.get(HeaderFields.interface, DRIVER_INTERFACE)
        member = f.get(HeaderFields.member, "")
        sig = f.get(HeaderFields.signature, "")
        entry = self._methods.get((iface, member))
        try:
            if entry is None:
                if iface not in {i for i, _ in self._methods}:
                    raise DBusError(errors.UNKNOWN_INTERFACE, f"{iface} is not an interface "
                                    f"of {DRIVER_NAME}")
                raise DBusError(errors.UNKNOWN_METHOD,
                                f"{DRIVER_NAME} has no method {member} in {iface}")
            in_sig, out_sig, handler = entry
            if sig != in_sig:
                raise DBusError(errors.INVALID_ARGS, f"Call to {member} has wrong args "
                                f"({sig}, expected {in_sig})")
            body = handler(*msg.body)
            reply = method_return(msg, out_sig, body, self.wire.driver_serial())
        except DBusError as e:
            reply = error_reply(msg, e.name, e.message, self.wire.driver_serial())
        return reply if wants_reply(msg) else None

    # ------------------------------------------------------------------
    # names

    def _owner(self, name: str) -> int | None:
        """The connection id owning ``name`` (unique or well-known), or None."""
        conn_id = parse_unique_name(name)
        try:
            info = self.conn.conn_info(name if conn_id is None else conn_id, attach=0)
        except OSError as e:
            if e.errno in (errno.ESRCH, errno.ENXIO, errno.EINVAL):
                return None
            raise
        return None if info.flags & _NOT_A_PEER else info.id

    def _owner_or_error(self, name: str) -> int:
        if name == DRIVER_NAME:
            return 0
        owner = self._owner(name)
        if owner is None:
            raise DBusError(errors.NAME_HAS_NO_OWNER, f"Could not get owner of name '{name}': "
                            "no such name")
        return owner

    def _check_requestable(self, name: str) -> None:
        if name.startswith(":"):
            raise DBusError(errors.INVALID_ARGS,
                            f"Cannot acquire a service starting with ':' such as \"{name}\"")
        if name == DRIVER_NAME:
            raise DBusError(errors.INVALID_ARGS, f"Connection is not allowed to own {name}")
        if not is_well_known_name(name):
            raise DBusError(errors.INVALID_ARGS, f"Requested bus name \"{name}\" is not valid")

    def _hello(self):
        raise DBusError(errors.FAILED, "Already handled an Hello message")

    def _request_name(self, name: str, flags: int):
        self._check_requestable(name)
        try:
            rf = self.conn.acquire_name(
                name, allow_replacement=bool(flags & NAME_FLAG_ALLOW_REPLACEMENT),
                replace_existing=bool(flags & NAME_FLAG_REPLACE_EXISTING),
                queue=not flags & NAME_FLAG_DO_NOT_QUEUE)
        except OSError as e:
            if e.errno == errno.EEXIST:
                return (REQUEST_NAME_EXISTS,)
            raise self._name_error(e, name) from None
        if rf & C.KDBUS_NAME_IN_QUEUE:
            return (REQUEST_NAME_IN_QUEUE,)
        if rf & C.KDBUS_NAME_PRIMARY:
            return (REQUEST_NAME_PRIMARY_OWNER if rf & C.KDBUS_NAME_ACQUIRED
                    else REQUEST_NAME_ALREADY_OWNER,)
        return (REQUEST_NAME_EXISTS,)  # left the queue, as kdbus does without QUEUE

    def _release_name(self, name: str):
        self._check_requestable(name)
        try:
            self.conn.release_name(name)
        except OSError as e:
            if e.errno == errno.ESRCH:
                return (RELEASE_NAME_NON_EXISTENT,)
            if e.errno == errno.EADDRINUSE:
                return (RELEASE_NAME_NOT_OWNER,)
            raise self._name_error(e, name) from None
        return (RELEASE_NAME_RELEASED,)

    @staticmethod
    def _name_error(e: OSError, name: str) -> DBusError:
        if e.errno == errno.EPERM:
            return DBusError(errors.ACCESS_DENIED, f"The bus policy does not allow owning {name}")
        if e.errno == errno.E2BIG:
            return DBusError(errors.LIMITS_EXCEEDED, "kdbus allows 256 names per connection")
        if e.errno == errno.EINVAL:
            return DBusError(errors.INVALID_ARGS, f"\"{name}\" is not a valid kdbus name")
        return DBusError(errors.FAILED, f"{name}: {os.strerror(e.errno or 0)}")

    def _start_service(self, name: str, _flags: int):
        try:
            info = self.conn.conn_info(name, attach=0)
        except OSError:
            raise DBusError(errors.SERVICE_UNKNOWN, f"The name {name} was not provided by any "
                            ".service files") from None
        # an activator holds the name: the first message to it starts the service
        if info.flags & C.KDBUS_HELLO_ACTIVATOR:
            return (START_REPLY_SUCCESS,)
        return (START_REPLY_ALREADY_RUNNING,)

    def _update_env(self, _env):
        raise DBusError(errors.NOT_SUPPORTED, "kdbus activators have no environment to update")

    def _name_has_owner(self, name: str):
        return (name == DRIVER_NAME or self._owner(name) is not None,)

    def _get_name_owner(self, name: str):
        owner = self._owner_or_error(name)
        return (DRIVER_NAME if owner == 0 else unique_name(owner),)

    def _list_names(self):
        names = [DRIVER_NAME]
        for entry in self.conn.list(C.KDBUS_LIST_UNIQUE | C.KDBUS_LIST_NAMES):
            if entry.flags & _NOT_A_PEER:
                continue
            names.append(unique_name(entry.id))
            names += [n.name for n in entry.names if n.flags & C.KDBUS_NAME_PRIMARY
                      and not n.flags & C.KDBUS_NAME_ACTIVATOR]
        return (names,)

    def _list_activatable(self):
        names = [DRIVER_NAME]
        for entry in self.conn.list(C.KDBUS_LIST_ACTIVATORS):
            names += [n.name for n in entry.names if n.flags & C.KDBUS_NAME_ACTIVATOR]
        return (names,)

    def _list_queued_owners(self, name: str):
        if name == DRIVER_NAME:
            return ([DRIVER_NAME],)
        primary, queued = [], []
        for entry in self.conn.list(C.KDBUS_LIST_NAMES | C.KDBUS_LIST_QUEUED):
            for n in entry.names:
                if n.name != name or n.flags & C.KDBUS_NAME_ACTIVATOR:
                    continue
                (queued if n.flags & C.KDBUS_NAME_IN_QUEUE else primary).append(
                    unique_name(entry.id))
        if not primary:
            raise DBusError(errors.NAME_HAS_NO_OWNER,
                            f"Could not get owners of name '{name}': no such name")
        return (primary + queued,)

    # ------------------------------------------------------------------
    # matches

    def _add_match(self, text: str):
        self.matches.add(_parse_rule(text))
        return ()

    def _remove_match(self, text: str):
        self.matches.remove(_parse_rule(text))
        return ()

    def _become_monitor(self, _rules, _flags):
        raise DBusError(errors.NOT_SUPPORTED, "BecomeMonitor is only available to clients "
                        "of the bridge; kdbus monitors are connections of their own")

    # ------------------------------------------------------------------
    # credentials

    def _info(self, name: str):
        owner = self._owner_or_error(name)
        if owner == 0:
            return None  # the driver itself: this process
        return self.conn.conn_info(owner, attach=_ID_ATTACH)

    def _unix_user(self, name: str):
        info = self._info(name)
        if info is None:
            return (os.geteuid(),)
        if info.creds is None:
            raise DBusError(errors.FAILED, f"Could not determine UID for '{name}': the "
                            "connection does not reveal its credentials")
        return (info.creds.uid,)

    def _unix_pid(self, name: str):
        info = self._info(name)
        if info is None:
            return (os.getpid(),)
        if info.pids is None or info.pids.pid == 0:
            raise DBusError(errors.UNIX_PROCESS_ID_UNKNOWN,
                            f"Could not determine PID for '{name}'")
        return (info.pids.pid,)

    def _credentials(self, name: str):
        info = self._info(name)
        out: dict[str, tuple[str, object]] = {}
        if info is None:
            out["UnixUserID"] = ("u", os.geteuid())
            out["ProcessID"] = ("u", os.getpid())
            return (out,)
        if info.creds is not None:
            out["UnixUserID"] = ("u", info.creds.uid)
            groups = [info.creds.gid] + [g for g in info.auxgroups or () if g != info.creds.gid]
            out["UnixGroupIDs"] = ("au", groups)
        if info.pids is not None and info.pids.pid:
            out["ProcessID"] = ("u", info.pids.pid)
        if info.seclabel is not None:
            out["LinuxSecurityLabel"] = ("ay", info.seclabel.encode() + b"\0")
        return (out,)

    def _audit_data(self, name: str):
        self._owner_or_error(name)
        raise DBusError(errors.ADT_AUDIT_DATA_UNKNOWN, f"Could not determine audit data for "
                        f"'{name}'")

    def _seclabel(self, name: str):
        info = self._info(name)
        if info is None or info.seclabel is None:
            raise DBusError(errors.SELINUX_CONTEXT_UNKNOWN,
                            f"Could not determine security context for '{name}'")
        return (info.seclabel.encode(),)

    # ------------------------------------------------------------------
    # properties and introspection

    _PROPERTIES = {"Features": ("as", []), "Interfaces": ("as", [])}

    def _get_property(self, iface: str, prop: str):
        if iface != DRIVER_INTERFACE or prop not in self._PROPERTIES:
            raise DBusError(errors.UNKNOWN_PROPERTY, f"No property {prop} in {iface}")
        return (self._PROPERTIES[prop],)

    def _get_all_properties(self, iface: str):
        if iface not in (DRIVER_INTERFACE, ""):
            return ({},)
        return (dict(self._PROPERTIES),)

    def introspect(self) -> str:
        """Introspection XML of the driver object."""
        by_iface: dict[str, list[str]] = {}
        for (iface, member), (in_sig, out_sig, _) in self._methods.items():
            args = "".join(f'<arg direction="in" type="{t}"/>' for t in split_signature(in_sig))
            args += "".join(f'<arg direction="out" type="{t}"/>' for t in split_signature(out_sig))
            by_iface.setdefault(iface, []).append(f'    <method name="{member}">{args}</method>')
        by_iface[DRIVER_INTERFACE] += [
            '    <signal name="NameOwnerChanged"><arg type="s"/><arg type="s"/>'
            '<arg type="s"/></signal>',
            '    <signal name="NameLost"><arg type="s"/></signal>',
            '    <signal name="NameAcquired"><arg type="s"/></signal>',
            '    <property name="Features" type="as" access="read"/>',
            '    <property name="Interfaces" type="as" access="read"/>']
        body = "\n".join(f'  <interface name="{iface}">\n' + "\n".join(lines)
                         + "\n  </interface>" for iface, lines in by_iface.items())
        return ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"'
                '\n "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n'
                f"<node>\n{body}\n</node>\n")

