"""D-Bus over kdbusfs, without a daemon.

kdbus carried D-Bus messages: each is one kdbus message of payload type
KDBUS_PAYLOAD_DBUS whose payload is the D-Bus message itself (here in the
classic marshalling, protocol version 1, little-endian, by jeepney), with
kdbus doing the routing: unique names are connection ids (``:1.N``),
well-known names are kdbus names, replies are matched by the kernel,
signals are broadcast through bloom filters.  What dbus-daemon adds is
emulated by each connection itself (the org.freedesktop.DBus driver).

    from kdbusfs.dbus import Interface, method, signal
    from kdbusfs.dbus.io.trio import open_bus      # or kdbusfs.dbus.io.asyncio

    class Echo(Interface, name="org.example.Echo"):
        Echoed = signal("s")

        @method("s", "s")
        async def Echo(self, text):
            await Echo.Echoed.emit(bus, "/org/example/Echo", text)
            return text

    async with open_bus("/mnt/kdbus/0-demo") as bus:
        bus.export("/org/example/Echo", Echo())
        await bus.request_name("org.example.Echo")
        async with bus.subscribe("type='signal',sender='org.freedesktop.DBus',"
                                 "member='NameOwnerChanged'") as changes:
            async for msg in changes:
                print(msg.body)

Module map: names (unique names <-> kdbus ids), signature (splitting
signatures), rules (match rules), bloom (sd-bus's bloom scheme, documented
there: which entries go into filters and masks; the hashing is
kdbusfs.client.bloom's), wire (D-Bus message <-> kdbus message,
notifications as driver signals), matches (rules as kdbus match entries),
driver (org.freedesktop.DBus), peer (one D-Bus connection, synchronous), service
(exported objects), bus (the API apart from the loop), io.trio and
io.asyncio (the API on each loop), errors.
"""

from .errors import DBusError
from .rules import MatchRule, MatchRuleError
from .service import Interface, method, signal

__all__ = ["DBusError", "Interface", "MatchRule", "MatchRuleError", "method", "signal"]
