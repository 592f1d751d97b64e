"""Event-loop front-ends of the D-Bus API: ``kdbusfs.dbus.io.trio`` and
``kdbusfs.dbus.io.asyncio`` (each imports only its own loop)."""
