"""One D-Bus connection on kdbus: what dbus-daemon would do for a client.

A :class:`Peer` owns a kdbus connection and speaks D-Bus on it: sending
maps a message onto SEND (kdbusfs.dbus.wire), calls to org.freedesktop.DBus
are answered here (kdbusfs.dbus.driver), match rules become kdbus match
entries (kdbusfs.dbus.matches), and receiving yields the D-Bus messages
this connection is due.  It is synchronous and never blocks: the bridge
and the trio/asyncio APIs wait for the fd to become readable themselves.
"""

from __future__ import annotations

from jeepney import HeaderFields, Message, MessageType

from kdbusfs.abi import constants as C
from kdbusfs.client import ATTACH_ALL, Connection

from .driver import Driver
from .errors import DBusError
from .matches import MatchSet
from .names import DRIVER_NAME, unique_name
from .wire import DEFAULT_REPLY_TIMEOUT, Delivery, Wire, error_reply, wants_reply

# Received messages carry the sender's names (for match rules on them) and
# the time they were sent.
ATTACH_RECV = C.KDBUS_ATTACH_NAMES | C.KDBUS_ATTACH_TIMESTAMP


class Peer:
    """A D-Bus connection over the kdbus connection ``conn`` (now owned)."""

    def __init__(self, conn: Connection, *, reply_timeout: float = DEFAULT_REPLY_TIMEOUT):
        self.conn = conn
        self.id = conn.id
        self.unique_name = unique_name(conn.id)
        self.reply_timeout = reply_timeout
        self.wire = Wire(conn.id, conn.bloom_size, conn.bloom_n_hash)
        self.matches = MatchSet(conn)
        self.driver = Driver(conn, self.matches, self.wire)

    @classmethod
    def open(cls, bus_path: str, *, description: str | None = None,
             reply_timeout: float = DEFAULT_REPLY_TIMEOUT, attach_recv: int = 0,
             **connection_options) -> "Peer":
        """HELLO on ``bus_path`` (a bus directory or endpoint file).

        The connection shows all its metadata to peers (as sd-bus did), so
        GetConnectionUnixUser and friends can answer about it.  Extra
        ``connection_options`` go to Connection.open (e.g. faked creds).
        """
        conn = Connection.open(bus_path, attach_send=ATTACH_ALL,
                               attach_recv=ATTACH_RECV | attach_recv,
                               description=description, **connection_options)
        try:
            return cls(conn, reply_timeout=reply_timeout)
        except BaseException:
            conn.close()
            raise

    def fileno(self) -> int:
        return self.conn.fileno()

    @property
    def closed(self) -> bool:
        return self.conn.closed

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> "Peer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def send(self, msg: Message, *, timeout: float | None = None) -> list[Message]:
        """Send ``msg`` from this connection (its sender field is set here).

        Returns what is due back at once: the driver's answer to a call to
        org.freedesktop.DBus, or the error for a call that could not be
        delivered.  ``timeout``: the reply deadline of a method call.
        """
        msg.header.fields[HeaderFields.sender] = self.unique_name
        if msg.header.fields.get(HeaderFields.destination) == DRIVER_NAME:
            if msg.header.message_type != MessageType.method_call:
                return []  # the driver takes calls only, as dbus-daemon's does
            answer = self.driver.handle(msg)
            return [] if answer is None else [answer]
        try:
            self.wire.send(self.conn, msg,
                           timeout=self.reply_timeout if timeout is None else timeout)
        except DBusError as e:
            if wants_reply(msg):
                return [error_reply(msg, e.name, e.message, self.wire.driver_serial())]
        return []

    def receive(self) -> list[Delivery] | None:
        """The D-Bus messages of the next queued kdbus message (maybe none,
        when no match rule wants them); None once the queue is empty.
        Raises OSError (ECONNRESET) when the connection is gone."""
        kmsg = self.conn.recv()
        if kmsg is None:
            return None
        return [d for d in self.wire.receive(kmsg)
                if d.addressed or self.matches.admits(d.message, d.sender_names)]

