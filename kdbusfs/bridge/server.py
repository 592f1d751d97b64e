"""The bridge's listening side: accept D-Bus clients, one Session each."""

from __future__ import annotations

import logging
import os
import signal
import uuid

import trio

from kdbusfs.client import Connection

from .address import UnixAddress, listen
from .session import BridgeConfig, Session

log = logging.getLogger("kdbusfs.bridge")


def check_bus(bus_path: str) -> None:
    """Fail early, with the errno, if no connection can be made to the bus."""
    Connection.open(bus_path, pool_size=4096).close()


async def _serve_client(stream: trio.SocketStream, config: BridgeConfig) -> None:
    try:
        session = Session(stream, config)
    except OSError as e:  # the client vanished before we saw its credentials
        log.debug("dropping a client: %s", e)
        await trio.aclose_forcefully(stream)
        return
    try:
        await session.run()
    except Exception:
        # one client's failure must never take the bridge down
        log.exception("%r: unexpected error", session)


async def serve(config: BridgeConfig, addresses: list[UnixAddress], *,
                task_status=trio.TASK_STATUS_IGNORED) -> None:
    """Listen on ``addresses`` until cancelled (or SIGTERM/SIGINT/SIGHUP);
    ``task_status.started()`` gets the addresses as clients should write them."""
    sockets = []
    try:
        for a in addresses:
            sockets.append(listen(a))
        listeners = [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in sockets]
        async with trio.open_nursery() as nursery:
            # the handler is in place before we say we are listening
            await nursery.start(_stop_on_signals, nursery.cancel_scope)
            for listener in listeners:
                nursery.start_soon(trio.serve_listeners, _handler(config), [listener])
            task_status.started([f"{a},guid={config.guid}" for a in addresses])
    finally:
        for s in sockets:
            s.close()
        for a in addresses[:len(sockets)]:
            if not a.abstract:
                try:
                    os.unlink(a.path)
                except OSError:
                    pass


def _handler(config: BridgeConfig):
    async def handle(stream: trio.SocketStream) -> None:
        await _serve_client(stream, config)
    return handle


async def _stop_on_signals(scope: trio.CancelScope,
                           task_status=trio.TASK_STATUS_IGNORED) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            log.info("%s: stopping", signal.Signals(signum).name)
            scope.cancel()
            return


def new_guid() -> str:
    """A server GUID: 32 hex digits, as D-Bus addresses carry them."""
    return uuid.uuid4().hex
