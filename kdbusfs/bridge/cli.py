"""`kdbusfs bridge`: serve a kdbusfs bus to ordinary D-Bus clients."""

from __future__ import annotations

import argparse
import logging
import os
import sys

import trio

from kdbusfs.dbus.wire import DEFAULT_REPLY_TIMEOUT

from .address import AddressError, parse_addresses
from .server import check_bus, new_guid, serve
from .session import BridgeConfig

DESCRIPTION = """\
Listen on a D-Bus socket and connect every client that comes to the kdbus
bus BUS, so stock D-Bus tools (dbus-send, busctl, gdbus, dbus-monitor, any
D-Bus library) and native kdbusfs clients talk to each other on one bus.

Each client authenticates with SASL EXTERNAL and says Hello; the bridge
then makes a kdbus connection of its own for it, and its unique name is
that connection's id: ":1.<id>".  Calls to org.freedesktop.DBus
(RequestName, GetNameOwner, ListNames, AddMatch, ...) are answered with
kdbus commands on that connection; match rules become bloom masks and
notification matches; BecomeMonitor opens a kdbus monitor connection.
Unix fd passing is refused during authentication.

The bridge serves clients of its own uid (and root): their kdbus
connections are made by the bridge, so it shows the client's uid, gid and
pid as faked credentials (when the bridge owns the bus) but acts with the
bridge's own rights.  Run one bridge per user.

Once listening, the bridge prints each address (with its guid) on a line
of its own to standard output, and serves until SIGTERM, SIGINT or SIGHUP.
"""

EPILOG = """\
examples:
  kdbusfs bridge --bus /run/kdbus/0-system --listen unix:path=/run/kdbus-bridge.sock
  dbus-send --bus=unix:path=/run/kdbus-bridge.sock --print-reply \\
      --dest=org.freedesktop.DBus / org.freedesktop.DBus.ListNames
  busctl --address=unix:path=/run/kdbus-bridge.sock list
  gdbus call --address unix:path=/run/kdbus-bridge.sock --dest org.example.Echo \\
      --object-path /org/example/Echo --method org.example.Echo.Echo hi

exit status: 0 after a signal, 1 if the bus or an address cannot be used,
2 for usage errors.
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="kdbusfs bridge", description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bus", required=True, metavar="BUS",
                   help="the bus: its directory MOUNT/<uid>-<name>, or an endpoint file in it")
    p.add_argument("--listen", required=True, action="append", metavar="ADDRESS",
                   help="a D-Bus address to listen on: unix:path=FILE or unix:abstract=NAME "
                        "(repeat, or join with ';', for several)")
    p.add_argument("--reply-timeout", type=float, default=DEFAULT_REPLY_TIMEOUT,
                   metavar="SECONDS",
                   help="how long a method call waits for its reply before the caller gets "
                        f"org.freedesktop.DBus.Error.NoReply (default {DEFAULT_REPLY_TIMEOUT:g})")
    p.add_argument("-d", "--debug", action="store_true", help="log every client to stderr")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="kdbusfs-bridge[%(process)d] %(levelname)s: %(message)s")
    try:
        addresses = [a for text in args.listen for a in parse_addresses(text)]
    except AddressError as e:
        p.error(str(e))
    if args.reply_timeout <= 0:
        p.error("--reply-timeout must be positive")
    bus_path = args.bus
    try:
        check_bus(bus_path)
    except OSError as e:
        print(f"kdbusfs bridge: cannot connect to the bus {bus_path}: {e.strerror}",
              file=sys.stderr)
        return 1
    config = BridgeConfig(bus_path=bus_path, guid=new_guid(), reply_timeout=args.reply_timeout,
                          allowed_uids=frozenset({0, os.geteuid()}))

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            printed = await nursery.start(serve, config, addresses)
            for line in printed:
                print(line, flush=True)

    try:
        trio.run(run)
    except OSError as e:
        print(f"kdbusfs bridge: cannot listen: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0
