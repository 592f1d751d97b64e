"""The D-Bus API over kdbusfs, apart from the event loop.

:class:`BusBase` holds everything the trio and asyncio front-ends
(kdbusfs.dbus.io) share: building messages, pending calls by serial,
signal subscriptions, exported objects, and turning each received message
into the right action.  A front-end supplies waiters (something a reply
completes) and a way to wait for one, queues for subscriptions (with
put_nowait(), and close() to end them), and a way to run method handlers.
"""

from __future__ import annotations

import errno
import itertools
import logging
from typing import Any

from jeepney import HeaderFields, Message, MessageFlag, MessageType

from . import errors
from .driver import machine_id
from .errors import DBusError
from .names import DRIVER_INTERFACE, DRIVER_NAME, DRIVER_PATH
from .peer import Peer
from .rules import MatchRule
from .service import Interface, ObjectTree, run_method
from .wire import DEFAULT_REPLY_TIMEOUT, error_reply, method_return, new_message, wants_reply

log = logging.getLogger("kdbusfs.dbus")

_SERIAL_MAX = (1 << 32) - 1
#: Extra time a call waits after its deadline for the kernel's REPLY_TIMEOUT.
_GRACE = 1.0
_DRIVER = (DRIVER_NAME, DRIVER_PATH, DRIVER_INTERFACE)


def reply_body(reply: Message) -> tuple:
    """The body of a method return; DBusError for an error reply."""
    if reply.header.message_type == MessageType.error:
        name = reply.header.fields.get(HeaderFields.error_name, errors.FAILED)
        text = reply.body[0] if reply.body and isinstance(reply.body[0], str) else ""
        raise DBusError(name, text)
    return reply.body


class Subscription:
    """Signals matching ``rule``, queued for one consumer (``queue``: its
    put_nowait() takes a signal, its close() ends the consumer's stream)."""

    def __init__(self, rule: MatchRule, queue):
        self.rule = rule
        self.queue = queue
        self.dropped = 0


class BusBase:
    """A D-Bus connection on a kdbus bus; see kdbusfs.dbus.io.trio / .asyncio."""

    def __init__(self, peer: Peer):
        self.peer = peer
        self.unique_name = peer.unique_name
        self._serials = itertools.count(1)
        self._pending: dict[int, Any] = {}  # serial -> front-end waiter
        self._subscriptions: list[Subscription] = []
        self.objects = ObjectTree(lambda: machine_id(bytes(peer.conn.id128)))
        self._closed_error: DBusError | None = None

    # ------------------------------------------------------------------
    # front-end hooks

    def _new_waiter(self):
        raise NotImplementedError

    def _complete(self, waiter, msg: Message) -> None:
        raise NotImplementedError

    async def _wait_reply(self, waiter, seconds: float) -> Message | None:
        """The message that completed ``waiter``, or None after ``seconds``."""
        raise NotImplementedError

    def _spawn_handler(self, msg: Message) -> None:
        raise NotImplementedError

    # ------------------------------------------------------------------
    # messages

    def next_serial(self) -> int:
        return next(self._serials) % _SERIAL_MAX or next(self._serials)

    @staticmethod
    def method_call(destination: str, path: str, interface: str | None, member: str,
                    signature: str = "", body: tuple = (), *, no_reply: bool = False,
                    no_auto_start: bool = False) -> Message:
        flags = ((MessageFlag.no_reply_expected if no_reply else 0)
                 | (MessageFlag.no_auto_start if no_auto_start else 0))
        return new_message(MessageType.method_call, {
            HeaderFields.destination: destination, HeaderFields.path: path,
            HeaderFields.interface: interface, HeaderFields.member: member},
            signature, tuple(body), flags)

    @staticmethod
    def signal_message(path: str, interface: str, member: str, signature: str = "",
                       body: tuple = (), destination: str | None = None) -> Message:
        return new_message(MessageType.signal, {
            HeaderFields.path: path, HeaderFields.interface: interface,
            HeaderFields.member: member, HeaderFields.destination: destination},
            signature, tuple(body))

    def _check_open(self) -> None:
        if self._closed_error is not None:
            raise self._closed_error

    def send_message(self, msg: Message, *, timeout: float | None = None) -> int:
        """Send a prepared message with the next serial; returns the serial."""
        self._check_open()
        msg.header.serial = self.next_serial()
        for answer in self.peer.send(msg, timeout=timeout):
            self._dispatch(answer)
        return msg.header.serial

    def _start_call(self, msg: Message, timeout: float):
        """Send a call and return the waiter its reply will complete."""
        self._check_open()
        msg.header.serial = serial = self.next_serial()
        waiter = self._pending[serial] = self._new_waiter()
        try:
            for answer in self.peer.send(msg, timeout=timeout):
                self._dispatch(answer)
        except BaseException:
            self._pending.pop(serial, None)
            raise
        return serial, waiter

    def _forget_call(self, serial: int) -> None:
        self._pending.pop(serial, None)

    # ------------------------------------------------------------------
    # the API every front-end has

    async def call_message(self, destination: str, path: str, interface: str | None,
                           member: str, signature: str = "", body: tuple = (), *,
                           timeout: float = DEFAULT_REPLY_TIMEOUT,
                           no_auto_start: bool = False) -> Message:
        """Call a method and return the reply message (a method return).

        Raises DBusError for an error reply, NoReply when none came within
        ``timeout`` seconds (or the callee went away first).
        """
        msg = self.method_call(destination, path, interface, member, signature, body,
                               no_auto_start=no_auto_start)
        serial, waiter = self._start_call(msg, timeout)
        try:
            reply = await self._wait_reply(waiter, timeout + _GRACE)
        finally:
            self._forget_call(serial)
        if reply is None:
            raise DBusError(errors.NO_REPLY, f"no reply to {member} within {timeout} s")
        reply_body(reply)  # raises for an error reply
        return reply

    async def call(self, destination: str, path: str, interface: str | None, member: str,
                   signature: str = "", body: tuple = (), *,
                   timeout: float = DEFAULT_REPLY_TIMEOUT, no_auto_start: bool = False) -> tuple:
        """Call a method and return the reply's body (a tuple of values);
        errors as for :meth:`call_message`."""
        reply = await self.call_message(destination, path, interface, member, signature, body,
                                        timeout=timeout, no_auto_start=no_auto_start)
        return reply.body

    async def emit(self, path: str, interface: str, member: str, signature: str = "",
                   body: tuple = (), *, destination: str | None = None) -> None:
        """Send a signal: broadcast, or unicast to ``destination``."""
        self.send_message(self.signal_message(path, interface, member, signature, body,
                                              destination))

    async def request_name(self, name: str, flags: int = 0) -> int:
        """RequestName; returns 1 (primary owner), 2 (in queue), 3 (exists)
        or 4 (already owner).  ``flags``: kdbusfs.dbus.driver.NAME_FLAG_*."""
        return (await self.call(*_DRIVER, "RequestName", "su", (name, flags)))[0]

    async def release_name(self, name: str) -> int:
        """ReleaseName; returns 1 (released), 2 (no such name) or 3 (not owner)."""
        return (await self.call(*_DRIVER, "ReleaseName", "s", (name,)))[0]

    async def get_name_owner(self, name: str) -> str:
        """The unique name owning ``name`` (DBusError NameHasNoOwner if none)."""
        return (await self.call(*_DRIVER, "GetNameOwner", "s", (name,)))[0]

    async def name_has_owner(self, name: str) -> bool:
        return (await self.call(*_DRIVER, "NameHasOwner", "s", (name,)))[0]

    async def list_names(self) -> list[str]:
        return (await self.call(*_DRIVER, "ListNames"))[0]

    # ------------------------------------------------------------------
    # subscriptions and objects

    def _add_subscription(self, rule: str | MatchRule, queue) -> Subscription:
        self._check_open()
        if isinstance(rule, str):
            rule = MatchRule.parse(rule)
        self.peer.matches.add(rule)
        sub = Subscription(rule, queue)
        self._subscriptions.append(sub)
        return sub

    def _remove_subscription(self, sub: Subscription) -> None:
        if sub in self._subscriptions:
            self._subscriptions.remove(sub)
            if not self.peer.closed:
                self.peer.matches.remove(sub.rule)

    def export(self, path: str, *objects: Interface) -> None:
        """Serve ``objects`` (Interface instances) at object ``path``."""
        self.objects.export(path, *objects)

    def unexport(self, path: str) -> None:
        self.objects.unexport(path)

    # ------------------------------------------------------------------
    # receiving

    def _pump(self) -> None:
        """Handle every queued message; OSError when the connection died."""
        while True:
            deliveries = self.peer.receive()
            if deliveries is None:
                return
            for d in deliveries:
                self._dispatch(d.message, d.sender_names)

    def _dispatch(self, msg: Message, sender_names: frozenset[str] = frozenset()) -> None:
        mtype = msg.header.message_type
        if mtype in (MessageType.method_return, MessageType.error):
            waiter = self._pending.pop(msg.header.fields.get(HeaderFields.reply_serial, 0), None)
            if waiter is not None:
                self._complete(waiter, msg)
        elif mtype == MessageType.signal:
            for sub in list(self._subscriptions):
                if sub.rule.matches(msg, sender_names):
                    try:
                        sub.queue.put_nowait(msg)
                    except Exception:  # a full queue: the consumer fell behind
                        sub.dropped += 1
        elif mtype == MessageType.method_call:
            self._spawn_handler(msg)

    async def _answer(self, msg: Message) -> None:
        """Run the exported method ``msg`` calls and send its answer."""
        try:
            fn, out_sig = self.objects.resolve(msg)
            body = await run_method(fn, out_sig, msg.body)
            answer = method_return(msg, out_sig, body, 0, sender=self.unique_name)
        except DBusError as e:
            answer = error_reply(msg, e.name, e.message, 0, sender=self.unique_name)
        except Exception as e:
            log.exception("exported method %s failed",
                          msg.header.fields.get(HeaderFields.member))
            answer = error_reply(msg, errors.FAILED, f"{type(e).__name__}: {e}", 0,
                                 sender=self.unique_name)
        if wants_reply(msg) and self._closed_error is None:
            self.send_message(answer)

    def _disconnected(self, e: OSError) -> None:
        """Receiving failed with ``e``: the connection is gone.  End every
        pending call with Disconnected, and every subscription's stream."""
        reason = "the bus connection was reset" if e.errno == errno.ECONNRESET else str(e)
        self._fail_all(DBusError(errors.DISCONNECTED, reason))
        for sub in self._subscriptions:
            sub.queue.close()

    def _fail_all(self, error: DBusError) -> None:
        """The connection is gone: end every pending call with ``error``."""
        self._closed_error = error
        pending, self._pending = self._pending, {}
        for serial, waiter in pending.items():
            self._complete(waiter, new_message(MessageType.error, {
                HeaderFields.error_name: error.name, HeaderFields.reply_serial: serial,
                HeaderFields.sender: DRIVER_NAME}, "s", (error.message,)))

