"""The D-Bus bridge: stock D-Bus clients on a kdbusfs bus.

`kdbusfs bridge --bus BUS --listen unix:path=...` (cli.py) listens on a
D-Bus socket (address.py); each client authenticates (sasl.py) and gets a
kdbus connection of its own (session.py, on kdbusfs.dbus.peer); server.py
accepts them.  Everything runs on trio.
"""
