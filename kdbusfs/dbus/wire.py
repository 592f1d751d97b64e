"""D-Bus messages on kdbus: how one is sent, and what a received one means.

The convention (sd-bus's, with the classic marshalling instead of GVariant):

* The payload is the whole D-Bus message, marshalled as D-Bus protocol
  version 1, little-endian, in one PAYLOAD_VEC; ``payload_type`` is
  KDBUS_PAYLOAD_DBUS.  The kdbus ``cookie`` is the D-Bus serial.
* Method call: unicast to the destination (``:1.N`` is connection id N,
  anything else a well-known name), EXPECT_REPLY unless NO_REPLY_EXPECTED,
  NO_AUTO_START passed on.  Method return and error: unicast with
  ``cookie_reply`` = the reply serial.  Signal: SIGNAL flag and a bloom
  filter (kdbusfs.dbus.bloom); broadcast unless it has a destination.
* On receipt the kernel's word is authoritative: the sender field becomes
  ``:1.<src_id>``, the serial the cookie, a reply's reply serial its
  ``cookie_reply``; a call sent without EXPECT_REPLY gets NO_REPLY_EXPECTED.
* Kernel notifications become the bus driver's signals: ID_ADD/ID_REMOVE
  and NAME_ADD/NAME_CHANGE/NAME_REMOVE are NameOwnerChanged (activators
  count as no owner), plus NameAcquired/NameLost for the receiver's own
  names; REPLY_TIMEOUT and REPLY_DEAD are NoReply errors.
"""

from __future__ import annotations

import errno
import itertools
from typing import NamedTuple

from jeepney import Endianness, Header, HeaderFields, Message, MessageFlag, MessageType

from kdbusfs.abi import constants as C
from kdbusfs.client import BROADCAST, Connection
from kdbusfs.client import Message as KMessage

from . import errors
from .bloom import message_filter
from .errors import DBusError
from .names import DRIVER_INTERFACE, DRIVER_NAME, DRIVER_PATH, parse_unique_name, unique_name

#: A method call's deadline when the caller names none, in seconds.
DEFAULT_REPLY_TIMEOUT = 25.0

_SERIAL_MAX = (1 << 32) - 1
# HELLO flags of connections that are no D-Bus peer
_NOT_A_PEER = C.KDBUS_HELLO_ACTIVATOR | C.KDBUS_HELLO_POLICY_HOLDER | C.KDBUS_HELLO_MONITOR


class Delivery(NamedTuple):
    """A D-Bus message as received.

    ``sender_names``: the well-known names its sender owned when sending
    (for match rules on them).  ``addressed``: it was sent to this
    connection itself, so it is delivered without a match rule.  ``kdbus``:
    the kdbus message it came from (metadata, timestamp...).
    """

    message: Message
    sender_names: frozenset[str]
    addressed: bool
    kdbus: KMessage | None = None


def new_message(mtype: MessageType, fields: dict, signature: str = "", body: tuple = (),
                flags: int = 0, serial: int = 1) -> Message:
    """A little-endian message with these header fields."""
    fields = {k: v for k, v in fields.items() if v is not None}
    if signature:
        fields[HeaderFields.signature] = signature
    return Message(Header(Endianness.little, mtype, flags, 1, 0, serial, fields), tuple(body))


def _driver_signal(member: str, signature: str, body: tuple, serial: int,
                   destination: str | None = None) -> Message:
    return new_message(MessageType.signal, {
        HeaderFields.path: DRIVER_PATH, HeaderFields.interface: DRIVER_INTERFACE,
        HeaderFields.member: member, HeaderFields.sender: DRIVER_NAME,
        HeaderFields.destination: destination}, signature, body, serial=serial)


def error_reply(to: Message, name: str, text: str, serial: int,
                sender: str = DRIVER_NAME) -> Message:
    """An error answering ``to`` (destination: its sender)."""
    return new_message(MessageType.error, {
        HeaderFields.error_name: name, HeaderFields.reply_serial: to.header.serial,
        HeaderFields.destination: to.header.fields.get(HeaderFields.sender),
        HeaderFields.sender: sender}, "s", (text,), MessageFlag.no_reply_expected, serial)


def method_return(to: Message, signature: str, body: tuple, serial: int,
                  sender: str = DRIVER_NAME) -> Message:
    """A method return answering ``to``."""
    return new_message(MessageType.method_return, {
        HeaderFields.reply_serial: to.header.serial,
        HeaderFields.destination: to.header.fields.get(HeaderFields.sender),
        HeaderFields.sender: sender}, signature, body, MessageFlag.no_reply_expected, serial)


def wants_reply(msg: Message) -> bool:
    return (msg.header.message_type == MessageType.method_call
            and not msg.header.flags & MessageFlag.no_reply_expected)


def destination_of(name: str) -> int | str:
    """The kdbus destination of a D-Bus bus name: an id or a well-known name.
    DBusError ServiceUnknown for a unique name no kdbus connection can have."""
    conn_id = parse_unique_name(name)
    if conn_id is not None:
        return conn_id
    if name.startswith(":"):
        raise DBusError(errors.SERVICE_UNKNOWN, f"The name {name} is not a kdbus unique name "
                        "(those are :1.<connection id>)")
    return name


class Wire:
    """Translation for one kdbus connection (``own_id``; None for a monitor).

    It keeps the serials of the messages the emulated bus driver makes.
    """

    def __init__(self, own_id: int | None, bloom_size: int, bloom_n_hash: int):
        self.own_id = own_id
        self.own_name = None if own_id is None else unique_name(own_id)
        self.bloom_size = bloom_size
        self.bloom_n_hash = bloom_n_hash
        self._driver_serials = itertools.count(1)

    def driver_serial(self) -> int:
        return next(self._driver_serials) % _SERIAL_MAX or next(self._driver_serials)

    # ------------------------------------------------------------------
    # sending

    def send(self, conn: Connection, msg: Message, *,
             timeout: float = DEFAULT_REPLY_TIMEOUT) -> None:
        """SEND ``msg`` on ``conn``.  Raises DBusError when a method call
        cannot be delivered; undeliverable replies and signals are dropped
        silently, as dbus-daemon drops them."""
        h = msg.header
        f = h.fields
        mtype = h.message_type
        if f.get(HeaderFields.unix_fds):
            raise DBusError(errors.NOT_SUPPORTED, "kdbusfs D-Bus does not pass unix fds")
        if not 0 < h.serial <= _SERIAL_MAX:
            raise DBusError(errors.INCONSISTENT_MESSAGE, "serial 0")
        dest = f.get(HeaderFields.destination)
        h.endianness = Endianness.little
        h.protocol_version = 1
        if self.own_name is not None:
            f[HeaderFields.sender] = self.own_name
        kwargs: dict = {"cookie": h.serial}
        if mtype == MessageType.method_call:
            if dest is None:
                raise DBusError(errors.FAILED, "a method call needs a destination")
            if not h.flags & MessageFlag.no_reply_expected:
                kwargs.update(expect_reply=True, timeout=timeout)
            if h.flags & MessageFlag.no_auto_start:
                kwargs["no_auto_start"] = True
        elif mtype in (MessageType.method_return, MessageType.error):
            if dest is None or HeaderFields.reply_serial not in f:
                return  # a reply to nobody
            kwargs["reply_to"] = f[HeaderFields.reply_serial]
        else:
            kwargs["signal"] = True
            kwargs["bloom"] = message_filter(msg, self.bloom_size, self.bloom_n_hash)
        try:
            dst = BROADCAST if dest is None else destination_of(dest)
        except DBusError:
            if mtype == MessageType.method_call:
                raise
            return  # a reply or signal for nobody
        try:
            conn.send(dst, msg.serialise(), **kwargs)
        except OSError as e:
            if mtype == MessageType.method_call:
                raise errors.from_send_errno(e, dest) from None
            if e.errno in (errno.EBADSLT, errno.ENXIO, errno.ESRCH, errno.ECONNRESET,
                           errno.ENOBUFS, errno.EXFULL, errno.EPERM):
                return  # the caller gave up or went away; a lost signal is fine too
            raise

    # ------------------------------------------------------------------
    # receiving

    def receive(self, kmsg: KMessage) -> list[Delivery]:
        """The D-Bus messages a received kdbus message stands for (none for
        a payload that is no D-Bus message)."""
        if kmsg.notification is not None:
            return self._notification(kmsg)
        if kmsg.payload_type != C.KDBUS_PAYLOAD_DBUS or not 0 < kmsg.cookie <= _SERIAL_MAX:
            return []
        try:
            msg = Message.from_buffer(kmsg.payload)
        except Exception:  # jeepney raises several types on bad input
            return []
        h = msg.header
        f = h.fields
        h.serial = kmsg.cookie
        f[HeaderFields.sender] = unique_name(kmsg.src_id)
        if h.message_type in (MessageType.method_return, MessageType.error):
            if not kmsg.cookie_reply or kmsg.expects_reply:
                return []  # a reply the kernel did not match to a request
            f[HeaderFields.reply_serial] = kmsg.cookie_reply & _SERIAL_MAX
        elif h.message_type == MessageType.method_call and not kmsg.expects_reply:
            h.flags |= MessageFlag.no_reply_expected
        if HeaderFields.destination not in f and not kmsg.is_broadcast:
            f[HeaderFields.destination] = (kmsg.dst_name if kmsg.dst_name is not None
                                           else unique_name(kmsg.dst_id))
        names = frozenset(n.name for n in kmsg.names)
        addressed = not kmsg.is_broadcast and self.own_id is not None
        return [Delivery(msg, names, addressed, kmsg)]

    def _notification(self, kmsg: KMessage) -> list[Delivery]:
        n = kmsg.notification
        kind = n.kind
        out: list[Delivery] = []

        def signal(member, sig, body, dest=None):
            out.append(Delivery(_driver_signal(member, sig, body, self.driver_serial(), dest),
                                frozenset({DRIVER_NAME}), dest is not None, kmsg))

        if kind in ("reply_timeout", "reply_dead"):
            text = ("Method call timed out" if kind == "reply_timeout"
                    else "The peer disconnected or dropped the call before it replied")
            err = new_message(MessageType.error, {
                HeaderFields.error_name: errors.NO_REPLY,
                HeaderFields.reply_serial: n.cookie & _SERIAL_MAX,
                HeaderFields.destination: unique_name(kmsg.dst_id),  # the requester
                HeaderFields.sender: DRIVER_NAME},
                "s", (text,), MessageFlag.no_reply_expected, self.driver_serial())
            out.append(Delivery(err, frozenset({DRIVER_NAME}), True, kmsg))
        elif kind in ("id_add", "id_remove"):
            if n.flags & _NOT_A_PEER:
                return []
            name = unique_name(n.id)
            old, new = ("", name) if kind == "id_add" else (name, "")
            signal("NameOwnerChanged", "sss", (name, old, new))
        else:
            old_id = n.old_id if n.old_id and not n.old_flags & C.KDBUS_NAME_ACTIVATOR else 0
            new_id = n.new_id if n.new_id and not n.new_flags & C.KDBUS_NAME_ACTIVATOR else 0
            if old_id == new_id:
                return []  # an activator came or went: no owner before or after
            old = unique_name(old_id) if old_id else ""
            new = unique_name(new_id) if new_id else ""
            signal("NameOwnerChanged", "sss", (n.name, old, new))
            if self.own_id is not None and old_id == self.own_id:
                signal("NameLost", "s", (n.name,), self.own_name)
            if self.own_id is not None and new_id == self.own_id:
                signal("NameAcquired", "s", (n.name,), self.own_name)
        return out
