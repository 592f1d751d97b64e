"""kdbusctl: inspect and use kdbusfs buses, in the spirit of busctl.

Commands live in their own modules: listing (list, status), monitor,
calls (call, emit), make (make-bus, make-endpoint); values parses and
prints D-Bus values in busctl's notation; paths resolves what the user
named and explains errors.
"""

from __future__ import annotations

import argparse
import sys

from .paths import ENV_BUS, CtlError

DESCRIPTION = f"""\
Inspect and use the buses of a kdbusfs mount.

BUS is a bus directory (MOUNT/<uid>-<name>) or an endpoint file in one; it
is given with --bus or ${ENV_BUS}.  Names on a bus are written as D-Bus
names: the connection with kdbus id N is ":1.N".  Calls and signals carry
D-Bus messages (kdbus payload type DBUS), so kdbusctl, services written
with kdbusfs.dbus and D-Bus clients of `kdbusfs bridge` understand each other.
"""

EPILOG = f"""\
commands:
  list [PATH]           the buses of a mount, or one bus: connections and names
  status [NAME]         all kdbus reveals about a connection, or about the bus
  monitor               every message on the bus (needs the bus owner)
  call DEST PATH INTERFACE METHOD [SIGNATURE [ARG...]]
                        call a method and print the reply
  emit PATH INTERFACE SIGNAL [SIGNATURE [ARG...]]
                        broadcast a signal (or send it to --destination)
  make-bus MOUNT NAME   create the bus <uid>-NAME and hold it
  make-endpoint BUS NAME
                        create the custom endpoint <uid>-NAME and hold it
  `kdbusctl COMMAND --help` describes each.

arguments (call, emit): a D-Bus SIGNATURE, then one word per value; an
array gives its length first, a variant its signature first, structs and
dict entries their fields in order:
  kdbusctl call org.example.Echo /org/example/Echo org.example.Echo Echo s hello
  kdbusctl emit /org/example/Sensor org.example.Sensor Changed a{{sv}} 1 level i 42

exit status: 0 on success, 1 when the operation failed (the message says
why), 2 for usage errors.  ${ENV_BUS} is the default for --bus.
"""


def _bus_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("-b", "--bus", metavar="BUS",
                   help=f"the bus directory or endpoint file (default: ${ENV_BUS})")


def _access_option(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--access", choices=("owner", "group", "world"), default="owner",
                   help=f"who may open the {what}: its owner (default), the owner's "
                        "group, or everyone")


def _value_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("signature", nargs="?", metavar="SIGNATURE",
                   help="the D-Bus signature of the arguments, e.g. s, ii, a{sv}")
    p.add_argument("args", nargs=argparse.REMAINDER, metavar="ARG",
                   help="one word per value; arrays give their length first, variants "
                        "their signature first (see kdbusctl --help)")


def _hold_options(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--background", action="store_true",
                   help=f"print the path and return, leaving a process that holds the {what} "
                        "until it gets SIGTERM")
    p.add_argument("--pidfile", metavar="FILE",
                   help="with --background: write that process's pid to FILE")


def build_parser(prog: str) -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION, epilog=EPILOG,
                                formatter_class=raw)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    s = sub.add_parser("list", formatter_class=raw, help="list buses, connections and names",
                       description="""\
With a mount (a directory holding `control`), list each of its buses;
with a bus (or --bus / $%s), list that one.  Each connection is shown by
its unique name (:1.N), then every name record: primary owners, queued
owners (FLAGS queued) and activators, with the owner's pid, uid and comm
where the connection reveals them ("-" where it does not).  kdbusctl's own
connection is left out.""" % ENV_BUS)
    s.add_argument("path", nargs="?", metavar="PATH", help="a kdbusfs mount or a bus")
    _bus_option(s)

    s = sub.add_parser("status", formatter_class=raw, help="describe a connection or the bus",
                       description="""\
Show what kdbus reveals about one connection (CONN_INFO): its flags, the
names it owns or queues for, and the metadata it lets others see: pid,
uids and gids, groups, comm, exe, cmdline, cgroup, capabilities, security
label, audit ids, description.  Without NAME, show the bus itself
(BUS_CREATOR_INFO): its name, id, flags, UUID, bloom parameters and what
its creator allowed to be revealed.""")
    s.add_argument("name", nargs="?", metavar="NAME",
                   help="a unique name :1.N, a connection id N, or a well-known name")
    _bus_option(s)

    s = sub.add_parser("monitor", formatter_class=raw, help="watch every message on the bus",
                       description="""\
Open a kdbus monitor connection (bus owner or root only) and print every
message as it passes: method calls, returns, errors and signals decoded
as D-Bus, other payloads as raw bytes, and the kernel's notifications
(id_add, id_remove, name_add, name_change, name_remove, reply_timeout,
reply_dead).  Ctrl-C stops.""")
    _bus_option(s)
    s.add_argument("--match", action="append", default=[], metavar="RULE",
                   help="only show messages matching this D-Bus match rule, e.g. "
                        "\"type='signal',interface='org.example.Sensor'\" (repeatable: any)")
    s.add_argument("--count", type=int, metavar="N", help="stop after N messages")
    s.add_argument("--timeout", type=float, metavar="SECONDS", help="stop after SECONDS")

    s = sub.add_parser("call", formatter_class=raw, help="call a D-Bus method",
                       description="""\
Call METHOD of INTERFACE on object PATH of DEST (a well-known name or
:1.N) and print the reply's values in the notation of the arguments.
Calls to org.freedesktop.DBus (ListNames, GetNameOwner, ...) are answered
by kdbusctl itself from kdbus, as every kdbusfs D-Bus client does.
Give "" as INTERFACE to leave it out.  An error reply is printed as
NAME: MESSAGE, with exit status 1.""")
    _bus_option(s)
    s.add_argument("dest", metavar="DEST", help="the callee: a well-known name or :1.N")
    s.add_argument("path", metavar="PATH", help="the object path, e.g. /org/example/Echo")
    s.add_argument("interface", metavar="INTERFACE", help='the interface ("" for none)')
    s.add_argument("method", metavar="METHOD", help="the method name")
    _value_arguments(s)
    s.add_argument("--timeout", type=float, default=25.0, metavar="SECONDS",
                   help="wait this long for the reply (default 25)")
    s.add_argument("-q", "--quiet", action="store_true", help="print nothing on success")

    s = sub.add_parser("emit", formatter_class=raw, help="send a D-Bus signal",
                       description="""\
Broadcast signal SIGNAL of INTERFACE from object PATH, with a bloom
filter so that kdbus delivers it to every connection whose match rules
admit it; with --destination, send it to that one connection instead.""")
    _bus_option(s)
    s.add_argument("path", metavar="PATH", help="the object path the signal comes from")
    s.add_argument("interface", metavar="INTERFACE", help="the signal's interface")
    s.add_argument("signal", metavar="SIGNAL", help="the signal name")
    _value_arguments(s)
    s.add_argument("--destination", metavar="NAME", help="unicast to NAME (or :1.N)")

    s = sub.add_parser("make-bus", formatter_class=raw, help="create a bus",
                       description="""\
Create the bus <euid>-NAME in the kdbusfs mounted at MOUNT, print its
directory, and hold it: a kdbus bus lives exactly as long as the file
descriptor that made it, so the bus goes away when this command ends
(SIGTERM, SIGINT or SIGHUP), or with --background when the process it
leaves behind does.""")
    s.add_argument("mount", metavar="MOUNT")
    s.add_argument("name", metavar="NAME", help="the name after the uid prefix")
    _access_option(s, "bus")
    s.add_argument("--bloom-size", type=int, default=64, metavar="BYTES",
                   help="signal bloom filter size, 8..4096 and a multiple of 8 (default 64)")
    s.add_argument("--n-hash", type=int, default=1, metavar="K",
                   help="bloom hash functions (default 1)")
    _hold_options(s, "bus")

    s = sub.add_parser("make-endpoint", formatter_class=raw, help="create a custom endpoint",
                       description="""\
Create the custom endpoint <euid>-NAME on BUS (bus owner only), print its
path, and hold it as make-bus holds a bus.  Connections through a custom
endpoint see and talk to only what its policy grants; it starts empty,
which grants nothing.""")
    s.add_argument("bus", metavar="BUS", help="the bus directory")
    s.add_argument("name", metavar="NAME")
    _access_option(s, "endpoint")
    s.add_argument("--policy", action="append", default=[], metavar="NAME:ACCESS:WHO",
                   help="grant ACCESS (see, talk or own) on NAME (a.b.* for a namespace) to "
                        "WHO (world, uid=N or gid=N); repeatable")
    _hold_options(s, "endpoint")
    return p


def main(argv=None, prog: str = "kdbusctl") -> int:
    parser = build_parser(prog)
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    access = None if getattr(args, "access", "owner") == "owner" else args.access
    try:
        if args.command == "list":
            from .listing import list_command
            return list_command(args.path or args.bus)
        if args.command == "status":
            from .listing import status_command
            return status_command(args.bus, args.name)
        if args.command == "monitor":
            from .monitor import monitor_command
            return monitor_command(args.bus, args.match, args.count, args.timeout)
        if args.command == "call":
            from .calls import call_command
            return call_command(args.bus, args.dest, args.path, args.interface, args.method,
                                args.signature, args.args, args.timeout, args.quiet)
        if args.command == "emit":
            from .calls import emit_command
            return emit_command(args.bus, args.path, args.interface, args.signal,
                                args.signature, args.args, args.destination)
        if args.command == "make-bus":
            from .make import make_bus_command
            return make_bus_command(args.mount, args.name, access, args.bloom_size,
                                    args.n_hash, args.background, args.pidfile)
        from .make import make_endpoint_command
        return make_endpoint_command(args.bus, args.name, access, args.policy,
                                     args.background, args.pidfile)
    except CtlError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        return e.status
    except KeyboardInterrupt:
        return 130
