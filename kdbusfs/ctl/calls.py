"""`kdbusctl call` and `kdbusctl emit`: D-Bus method calls and signals on a
bus, natively (no bridge), through kdbusfs.dbus."""

from __future__ import annotations

import sys
from typing import TextIO

import trio
from jeepney import HeaderFields

from kdbusfs.dbus.errors import DBusError
from kdbusfs.dbus.io.trio import open_bus

from .paths import CtlError, explain, resolve_bus
from .values import ValueSyntaxError, format_values, parse_values


def _values(signature: str | None, args: list[str]) -> tuple[str, tuple]:
    if signature is None:
        return "", ()
    try:
        return signature, parse_values(signature, args)
    except ValueSyntaxError as e:
        raise CtlError(f"arguments for signature {signature!r}: {e}", 2) from None


def _run(fn) -> None:
    try:
        trio.run(fn)
    except DBusError as e:
        raise CtlError(f"{e.name}: {e.message}" if e.message else e.name) from None
    except OSError as e:
        raise explain(e, "the bus") from None


def call_command(bus: str | None, destination: str, path: str, interface: str, member: str,
                 signature: str | None, args: list[str], timeout: float, quiet: bool,
                 out: TextIO = sys.stdout) -> int:
    endpoint = resolve_bus(bus)
    sig, body = _values(signature, args)

    async def run() -> None:
        async with open_bus(endpoint, description="kdbusctl") as conn:
            reply = await conn.call_message(destination, path, interface or None, member,
                                            sig, body, timeout=timeout)
        reply_sig = reply.header.fields.get(HeaderFields.signature, "")
        if not quiet and reply_sig:
            out.write(format_values(reply_sig, reply.body) + "\n")

    _run(run)
    return 0


def emit_command(bus: str | None, path: str, interface: str, member: str,
                 signature: str | None, args: list[str], destination: str | None) -> int:
    endpoint = resolve_bus(bus)
    sig, body = _values(signature, args)

    async def run() -> None:
        async with open_bus(endpoint, description="kdbusctl") as conn:
            await conn.emit(path, interface, member, sig, body, destination=destination)

    _run(run)
    return 0
