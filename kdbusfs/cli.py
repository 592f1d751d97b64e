"""The `kdbusfs` command: mount a kdbusfs instance, or run `bridge` / `ctl`."""

from __future__ import annotations

import argparse
import logging
import os
import sys

USAGE = """\
Mount a new, independent kdbus domain at MOUNTPOINT.

The root of the mount holds `control`; BUS_MAKE on it creates
<uid>-<name>/bus.  Without -f the command returns once the mount is live
and the server keeps running until the mount is unmounted (umount or
fusermount3 -u).  Works as root, as root of a user namespace, and as an
unprivileged user through fusermount3.
"""


SUBCOMMANDS = """\
other commands:
  kdbusfs bridge --bus BUS --listen ADDRESS   serve a bus to stock D-Bus clients
  kdbusfs ctl ...                             the same as kdbusctl: inspect and use buses
  (a mount point named "bridge" or "ctl" is written ./bridge or ./ctl)
"""


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bridge":
        from .bridge.cli import main as bridge_main
        return bridge_main(argv[1:])
    if argv and argv[0] == "ctl":
        from .ctl import main as ctl_main
        return ctl_main(argv[1:], prog="kdbusfs ctl")
    return mount_main(argv)


def mount_main(argv) -> int:
    p = argparse.ArgumentParser(prog="kdbusfs", description=USAGE, epilog=SUBCOMMANDS,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mountpoint", help="an existing empty directory")
    p.add_argument("-f", "--foreground", action="store_true",
                   help="stay in the foreground (logs go to stderr)")
    p.add_argument("-d", "--debug", action="store_true", help="log every request")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.INFO,
                        format="kdbusfs[%(process)d] %(levelname)s %(name)s: %(message)s")
    if not os.path.isdir(args.mountpoint):
        print(f"kdbusfs: {args.mountpoint}: not a directory", file=sys.stderr)
        return 2
    from .server import daemonize_and_serve, serve
    if args.foreground:
        try:
            serve(args.mountpoint)
        except OSError as e:
            print(f"kdbusfs: {e}", file=sys.stderr)
            return 1
        return 0
    return daemonize_and_serve(args.mountpoint)
