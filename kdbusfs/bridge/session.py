"""One client of the bridge: a D-Bus socket on one side, a kdbus connection
on the other.

The client authenticates (sasl.py) and says Hello; only then is its kdbus
connection made, so its unique name ``:1.N`` is its kdbus id.  From then on
three tasks run: client messages go out through the Peer (which answers
calls to org.freedesktop.DBus itself), received kdbus messages come back
as D-Bus messages, and one writer sends everything to the socket in order.
BecomeMonitor swaps the connection for a kdbus monitor connection.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import socket
import struct
from dataclasses import dataclass, field

import trio
from jeepney import HeaderFields, Message, MessageType, Parser

from kdbusfs.client import Connection
from kdbusfs.dbus import errors
from kdbusfs.dbus.names import DRIVER_INTERFACE, DRIVER_NAME, DRIVER_PATH
from kdbusfs.dbus.peer import ATTACH_RECV, Peer
from kdbusfs.dbus.rules import MatchRule, MatchRuleError
from kdbusfs.dbus.wire import (DEFAULT_REPLY_TIMEOUT, Wire, error_reply, method_return,
                               new_message, wants_reply)

from .sasl import AuthError, SaslServer

log = logging.getLogger("kdbusfs.bridge")

#: The largest D-Bus message the bridge accepts (the specification's limit).
MAX_MESSAGE = 128 * 1024 * 1024
#: Messages queued towards one client before the bridge stops reading its
#: kdbus connection (the kernel then queues, up to the pool's quota).
OUT_QUEUE = 1024
_READ_SIZE = 65536
MONITORING_INTERFACE = "org.freedesktop.DBus.Monitoring"


@dataclass
class BridgeConfig:
    bus_path: str
    guid: str
    allowed_uids: frozenset[int] = field(default_factory=lambda: frozenset({0, os.geteuid()}))
    reply_timeout: float = DEFAULT_REPLY_TIMEOUT
    auth_timeout: float = 30.0


class ClientGone(Exception):
    """The client closed its socket, broke the protocol, or was dropped."""


def peer_credentials(sock) -> tuple[int, int, int]:
    """(pid, uid, gid) of the process at the other end of a unix socket."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", raw)


def _description(pid: int) -> str:
    """A CONN_DESCRIPTION naming the client: ``bridge.<comm>.<pid>``."""
    try:
        with open(f"/proc/{pid}/comm") as f:
            comm = f.read().strip()
    except OSError:
        comm = ""
    comm = re.sub(r"[^A-Za-z0-9_-]", "_", comm)[:40].strip("-") or "client"
    return f"bridge.{comm}.{pid}"


def _is_driver_call(msg: Message, member: str, interface: str = DRIVER_INTERFACE) -> bool:
    f = msg.header.fields
    return (msg.header.message_type == MessageType.method_call
            and f.get(HeaderFields.destination) == DRIVER_NAME
            and f.get(HeaderFields.interface, interface) == interface
            and f.get(HeaderFields.member) == member)


class Session:
    def __init__(self, stream: trio.SocketStream, config: BridgeConfig):
        self.stream = stream
        self.config = config
        self.pid, self.uid, self.gid = peer_credentials(stream.socket)
        self.parser = Parser()
        self.peer: Peer | None = None
        self.monitor: Connection | None = None
        self._out_send, self._out_recv = trio.open_memory_channel(OUT_QUEUE)
        self._pump_lock = trio.Lock()
        self._monitor_rules: list[MatchRule] = []

    def __repr__(self) -> str:
        who = self.peer.unique_name if self.peer else "unregistered"
        return f"<client pid={self.pid} uid={self.uid} {who}>"

    # ------------------------------------------------------------------
    # socket side

    async def _receive(self) -> bytes:
        data = await self.stream.receive_some(_READ_SIZE)
        if not data:
            raise ClientGone("the client closed the connection")
        return data

    async def _authenticate(self) -> None:
        sasl = SaslServer(self.uid, self.config.guid, self.config.allowed_uids)
        while not sasl.done:
            try:
                answer = sasl.feed(await self._receive())
            except AuthError as e:
                raise ClientGone(f"authentication failed: {e}") from None
            if answer:
                await self.stream.send_all(answer)
        self.parser.add_data(sasl.leftover)

    async def _next_message(self) -> Message:
        while True:
            try:
                msg = self.parser.get_next_message()
            except Exception as e:  # jeepney raises several types on bad input
                raise ClientGone(f"malformed D-Bus message: {e}") from None
            if msg is not None:
                return msg
            if self.parser.bytes_desired() and (self.parser.next_msg_size or 0) > MAX_MESSAGE:
                raise ClientGone("message larger than 128 MiB")
            self.parser.add_data(await self._receive())

    async def _writer(self) -> None:
        async for msg in self._out_recv:
            await self.stream.send_all(msg.serialise())

    # ------------------------------------------------------------------
    # lifetime

    async def run(self) -> None:
        try:
            with trio.fail_after(self.config.auth_timeout):
                await self._authenticate()
                hello = await self._next_message()
            if not _is_driver_call(hello, "Hello"):
                raise ClientGone("the first message was not Hello")
            self.peer = self._open_peer()
            log.debug("%r connected", self)
            await self._welcome(hello)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._until_done, self._writer, nursery)
                nursery.start_soon(self._until_done, self._from_client, nursery)
                nursery.start_soon(self._until_done, self._from_bus, nursery)
        except ClientGone as e:
            log.debug("%r: %s", self, e)
        except trio.TooSlowError:
            log.debug("%r: authentication timed out", self)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            log.debug("%r: the socket broke", self)
        finally:
            self._close_kdbus()
            await trio.aclose_forcefully(self.stream)

    async def _until_done(self, task, nursery: trio.Nursery) -> None:
        # whichever side ends first ends the session
        try:
            await task()
        except ClientGone as e:
            log.debug("%r: %s", self, e)
        except (trio.BrokenResourceError, trio.ClosedResourceError, ConnectionError):
            log.debug("%r: the socket broke", self)
        finally:
            nursery.cancel_scope.cancel()

    def _open_peer(self) -> Peer:
        """HELLO for the client, showing its credentials where kdbus lets us
        (faked creds need the bus owner; without them peers see ours)."""
        creds = (self.uid,) * 4 + (self.gid,) * 4
        attempts = ({"creds": creds, "pids": (self.pid, 0, 0)}, {"creds": creds}, {})
        for options in attempts:
            try:
                return Peer.open(self.config.bus_path, description=_description(self.pid),
                                 reply_timeout=self.config.reply_timeout, **options)
            except OSError as e:
                # EPERM: not the bus owner; EINVAL: the client's pid is gone
                if not options or e.errno not in (errno.EPERM, errno.EINVAL):
                    raise ClientGone(f"HELLO on {self.config.bus_path} failed: {e}") from None
        raise AssertionError("unreachable")

    def _close_kdbus(self) -> None:
        for conn in (self.peer.conn if self.peer else None, self.monitor):
            if conn is not None and not conn.closed:
                trio.lowlevel.notify_closing(conn.fileno())
                conn.close()

    def _next_serial(self) -> int:
        # the driver's messages share one serial counter, the peer's
        return self.peer.wire.driver_serial()

    def _own_name_signal(self, member: str, name: str) -> Message:
        return new_message(MessageType.signal, {
            HeaderFields.path: DRIVER_PATH, HeaderFields.interface: DRIVER_INTERFACE,
            HeaderFields.member: member, HeaderFields.destination: name,
            HeaderFields.sender: DRIVER_NAME}, "s", (name,), serial=self._next_serial())

    async def _welcome(self, hello: Message) -> None:
        name = self.peer.unique_name
        hello.header.fields[HeaderFields.sender] = name
        await self._out_send.send(method_return(hello, "s", (name,), self._next_serial()))
        await self._out_send.send(self._own_name_signal("NameAcquired", name))

    # ------------------------------------------------------------------
    # the two directions

    async def _from_client(self) -> None:
        while True:
            msg = await self._next_message()
            if self.monitor is not None:
                raise ClientGone("a monitor sent a message")
            if _is_driver_call(msg, "BecomeMonitor", MONITORING_INTERFACE):
                await self._become_monitor(msg)
                continue
            to_driver = msg.header.fields.get(HeaderFields.destination) == DRIVER_NAME
            answers = self.peer.send(msg)
            if to_driver:
                # what the call caused (NameAcquired...) goes first, as with dbus-daemon
                await self._pump()
            for answer in answers:
                await self._out_send.send(answer)

    async def _from_bus(self) -> None:
        while self.monitor is None:
            await self._pump()
            try:
                await trio.lowlevel.wait_readable(self.peer.fileno())
            except trio.ClosedResourceError:
                if self.monitor is None:
                    raise
        await self._monitor_loop()

    async def _pump(self) -> None:
        async with self._pump_lock:
            if self.monitor is not None or self.peer.closed:
                return
            while True:
                try:
                    deliveries = self.peer.receive()
                except OSError as e:
                    raise ClientGone(f"the bus connection ended: {e}") from None
                if deliveries is None:
                    return
                for d in deliveries:
                    await self._out_send.send(d.message)

    # ------------------------------------------------------------------
    # monitoring

    async def _become_monitor(self, msg: Message) -> None:
        try:
            rules = [MatchRule.parse(r) for r in msg.body[0]] if msg.body else []
        except (MatchRuleError, IndexError, TypeError) as e:
            await self._out_send.send(error_reply(msg, errors.MATCH_RULE_INVALID, str(e),
                                                  self._next_serial()))
            return
        try:
            monitor = Connection.open(self.config.bus_path, monitor=True, attach_recv=ATTACH_RECV)
        except OSError as e:
            await self._out_send.send(error_reply(
                msg, errors.ACCESS_DENIED, f"kdbus refused a monitor connection: {e.strerror}",
                self._next_serial()))
            return
        async with self._pump_lock:
            self.monitor = monitor
            self._monitor_rules = rules
            msg.header.fields[HeaderFields.sender] = self.peer.unique_name
            if wants_reply(msg):
                await self._out_send.send(method_return(msg, "", (), self._next_serial()))
            # as with dbus-daemon, a monitor gives up its names, its unique name too
            await self._out_send.send(self._own_name_signal("NameLost", self.peer.unique_name))
            peer, self.peer = self.peer, None
            trio.lowlevel.notify_closing(peer.fileno())
            peer.close()
        log.debug("%r became a monitor", self)

    async def _monitor_loop(self) -> None:
        wire = Wire(None, 0, 1)
        while True:
            await trio.lowlevel.wait_readable(self.monitor.fileno())
            while True:
                try:
                    kmsg = self.monitor.recv()
                except OSError as e:
                    raise ClientGone(f"the monitor connection ended: {e}") from None
                if kmsg is None:
                    break
                for d in wire.receive(kmsg):
                    if not self._monitor_rules or any(
                            r.matches(d.message, d.sender_names) for r in self._monitor_rules):
                        await self._out_send.send(d.message)

