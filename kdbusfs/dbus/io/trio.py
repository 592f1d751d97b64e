"""The D-Bus API on trio.

    from kdbusfs.dbus.io.trio import open_bus

    async with open_bus("/mnt/kdbus/0-demo") as bus:
        await bus.request_name("org.example.Echo")
        bus.export("/org/example/Echo", Echo())
        (text,) = await bus.call("org.example.Other", "/", "org.example.Other", "Hi", "s", ("x",))
        async with bus.subscribe("type='signal',interface='org.example.Other'") as signals:
            async for msg in signals:
                print(msg.header.fields, msg.body)

A background task reads the connection while the block runs: it completes
calls, queues signals for subscriptions and runs exported methods (each in
a task of its own).
"""

from __future__ import annotations

import math
from contextlib import asynccontextmanager
from typing import AsyncIterator

import trio
from jeepney import Message

from ..bus import BusBase
from ..peer import Peer
from ..rules import MatchRule


class _Waiter:
    __slots__ = ("event", "message")

    def __init__(self):
        self.event = trio.Event()
        self.message: Message | None = None


class _ChannelQueue:
    """put_nowait() onto a trio memory channel, close() closes it (what
    BusBase expects of a queue)."""

    def __init__(self, channel: trio.MemorySendChannel):
        self.channel = channel

    def put_nowait(self, msg: Message) -> None:
        self.channel.send_nowait(msg)

    def close(self) -> None:
        self.channel.close()


class TrioBus(BusBase):
    """A D-Bus connection on kdbusfs, used from trio; make it with :func:`open_bus`."""

    def __init__(self, peer: Peer, nursery: trio.Nursery):
        super().__init__(peer)
        self._nursery = nursery

    def _new_waiter(self) -> _Waiter:
        return _Waiter()

    def _complete(self, waiter: _Waiter, msg: Message) -> None:
        waiter.message = msg
        waiter.event.set()

    async def _wait_reply(self, waiter: _Waiter, seconds: float) -> Message | None:
        with trio.move_on_after(seconds):
            await waiter.event.wait()
        return waiter.message

    def _spawn_handler(self, msg: Message) -> None:
        self._nursery.start_soon(self._answer, msg)

    async def _read(self) -> None:
        fd = self.peer.fileno()
        while True:
            try:
                self._pump()
            except OSError as e:
                self._disconnected(e)
                return
            await trio.lowlevel.wait_readable(fd)

    @asynccontextmanager
    async def subscribe(self, rule: str | MatchRule, *, max_buffer: float = math.inf
                        ) -> AsyncIterator[trio.MemoryReceiveChannel]:
        """Receive the signals matching ``rule`` (D-Bus match rule text or a
        MatchRule) on a memory channel, while the block runs.  Signals that
        find the channel full (``max_buffer``) are dropped and counted."""
        send, receive = trio.open_memory_channel(max_buffer)
        sub = self._add_subscription(rule, _ChannelQueue(send))
        try:
            async with receive:
                yield receive
        finally:
            send.close()
            self._remove_subscription(sub)


@asynccontextmanager
async def open_bus(bus_path: str, **options) -> AsyncIterator[TrioBus]:
    """Connect to the kdbus bus at ``bus_path`` (a bus directory or endpoint
    file) for the duration of the block.  ``options`` go to Peer.open
    (description, reply_timeout, ...)."""
    peer = Peer.open(bus_path, **options)
    body_error: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:
            bus = TrioBus(peer, nursery)
            nursery.start_soon(bus._read)
            try:
                yield bus
            except BaseException as e:
                # raised below, outside the nursery, so the caller gets it
                # as it is rather than wrapped in an exception group
                body_error = e
            finally:
                nursery.cancel_scope.cancel()
        if body_error is not None:
            raise body_error
    finally:
        if not peer.closed:
            trio.lowlevel.notify_closing(peer.fileno())
            peer.close()
