"""Test peers run as processes of their own.

``python -m tests.dbus.services native BUS NAME``: a native kdbusfs.dbus
service (trio API, no bridge) at /org/example/Echo with interface
org.example.Echo:

- Echo(s) -> s: "echo: " + the argument;
- Swap(ii) -> ii;
- Fail(): always the error org.example.Error.Failed;
- Emit(s): broadcasts the signal Pinged(s) from /org/example/Echo;
- Heard() -> as: the signals of interface org.example.Client it received so
  far, each as "<sender> <member> <first string argument>".

``python -m tests.dbus.services jeepney ADDRESS NAME``: the same Echo, Swap
and Fail served by jeepney (a stock D-Bus library) through the bridge.

Both print "ready <unique name>" once they own NAME, and run until killed.
"""

from __future__ import annotations

import sys

ECHO_PATH = "/org/example/Echo"
ECHO_IFACE = "org.example.Echo"
CLIENT_IFACE = "org.example.Client"


async def native(bus_path: str, name: str) -> None:
    import trio

    from kdbusfs.dbus.errors import DBusError
    from kdbusfs.dbus.io.trio import open_bus
    from kdbusfs.dbus.service import Interface, method, signal

    heard: list[str] = []

    class Echo(Interface, name=ECHO_IFACE):
        Pinged = signal("s")

        @method("s", "s")
        async def Echo(self, text):
            return "echo: " + text

        @method("ii", "ii")
        def Swap(self, a, b):
            return b, a

        @method()
        def Fail(self):
            raise DBusError("org.example.Error.Failed", "failing on purpose")

        @method("s")
        async def Emit(self, text):
            await Echo.Pinged.emit(bus, ECHO_PATH, text)

        @method("", "as")
        def Heard(self):
            return heard

    async with open_bus(bus_path, description="echo-service") as bus:
        bus.export(ECHO_PATH, Echo())
        assert await bus.request_name(name) == 1
        async with bus.subscribe(f"type='signal',interface='{CLIENT_IFACE}'") as signals:
            print("ready", bus.unique_name, flush=True)
            async for msg in signals:
                from jeepney import HeaderFields
                f = msg.header.fields
                first = msg.body[0] if msg.body and isinstance(msg.body[0], str) else ""
                heard.append(f"{f[HeaderFields.sender]} {f[HeaderFields.member]} {first}")
        await trio.sleep_forever()


def jeepney_service(address: str, name: str) -> None:
    from jeepney import HeaderFields, MessageType, new_error, new_method_return
    from jeepney.bus_messages import message_bus
    from jeepney.io.blocking import open_dbus_connection

    conn = open_dbus_connection(bus=address)
    reply = conn.send_and_get_reply(message_bus.RequestName(name, 4))
    assert reply.body == (1,), reply
    print("ready", conn.unique_name, flush=True)
    while True:
        msg = conn.receive()
        if msg.header.message_type != MessageType.method_call:
            continue
        member = msg.header.fields.get(HeaderFields.member)
        if member == "Echo":
            conn.send(new_method_return(msg, "s", ("jeepney echo: " + msg.body[0],)))
        elif member == "Swap":
            conn.send(new_method_return(msg, "ii", (msg.body[1], msg.body[0])))
        else:
            conn.send(new_error(msg, "org.example.Error.Failed", "s", (f"no {member}",)))


def main() -> None:
    kind, where, name = sys.argv[1:4]
    if kind == "native":
        import trio
        trio.run(native, where, name)
    elif kind == "jeepney":
        jeepney_service(where, name)
    else:
        raise SystemExit(f"unknown service kind {kind!r}")


if __name__ == "__main__":
    main()
