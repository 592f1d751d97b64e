"""The D-Bus API on asyncio.

    from kdbusfs.dbus.io.asyncio import open_bus

    async with open_bus("/mnt/kdbus/0-demo") as bus:
        await bus.request_name("org.example.Echo")
        bus.export("/org/example/Echo", Echo())
        (text,) = await bus.call("org.example.Other", "/", "org.example.Other", "Hi", "s", ("x",))
        async with bus.subscribe("type='signal',interface='org.example.Other'") as signals:
            msg = await signals.get()

The loop watches the connection's fd (add_reader): replies complete calls,
signals go to subscriptions, and each call of an exported method runs as a
task of its own.
"""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from typing import AsyncIterator

from jeepney import Message

from ..bus import BusBase
from ..peer import Peer
from ..rules import MatchRule


class SignalQueue(asyncio.Queue):
    """The signals of one subscription; ``async for`` ends when the bus closes."""

    _CLOSED = object()

    def close(self) -> None:
        self.put_nowait(self._CLOSED)

    def __aiter__(self):
        return self

    async def __anext__(self) -> Message:
        msg = await self.get()
        if msg is self._CLOSED:
            self.put_nowait(msg)  # later readers see the end too
            raise StopAsyncIteration
        return msg


class AsyncioBus(BusBase):
    """A D-Bus connection on kdbusfs, used from asyncio; make it with :func:`open_bus`."""

    def __init__(self, peer: Peer, loop: asyncio.AbstractEventLoop):
        super().__init__(peer)
        self._loop = loop
        self._tasks: set[asyncio.Task] = set()

    def _new_waiter(self) -> asyncio.Future:
        return self._loop.create_future()

    def _complete(self, waiter: asyncio.Future, msg: Message) -> None:
        if not waiter.done():
            waiter.set_result(msg)

    async def _wait_reply(self, waiter: asyncio.Future, seconds: float) -> Message | None:
        try:
            return await asyncio.wait_for(waiter, seconds)
        except asyncio.TimeoutError:
            return None

    def _spawn_handler(self, msg: Message) -> None:
        task = self._loop.create_task(self._answer(msg))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _on_readable(self) -> None:
        try:
            self._pump()
        except OSError as e:
            self._loop.remove_reader(self.peer.fileno())
            self._disconnected(e)

    @asynccontextmanager
    async def subscribe(self, rule: str | MatchRule, *, max_buffer: int = 0
                        ) -> AsyncIterator[SignalQueue]:
        """Receive the signals matching ``rule`` (D-Bus match rule text or a
        MatchRule) on a queue, while the block runs (``max_buffer`` 0: no
        bound; signals that find it full are dropped and counted)."""
        queue = SignalQueue(max_buffer)
        sub = self._add_subscription(rule, queue)
        try:
            yield queue
        finally:
            self._remove_subscription(sub)

    async def _close(self) -> None:
        if not self.peer.closed:
            self._loop.remove_reader(self.peer.fileno())
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self.peer.close()


@asynccontextmanager
async def open_bus(bus_path: str, **options) -> AsyncIterator[AsyncioBus]:
    """Connect to the kdbus bus at ``bus_path`` (a bus directory or endpoint
    file) for the duration of the block.  ``options`` go to Peer.open."""
    loop = asyncio.get_running_loop()
    bus = AsyncioBus(Peer.open(bus_path, **options), loop)
    loop.add_reader(bus.peer.fileno(), bus._on_readable)
    try:
        yield bus
    finally:
        await bus._close()
