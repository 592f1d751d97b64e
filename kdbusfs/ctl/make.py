"""`kdbusctl make-bus` and `kdbusctl make-endpoint`.

A bus (or custom endpoint) lives exactly as long as the fd that made it,
so the command holds that fd: in the foreground until SIGTERM, SIGINT or
SIGHUP, or with --background in a child process that stays behind.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
from typing import TextIO

from kdbusfs.abi import constants as C
from kdbusfs.client import make_bus
from kdbusfs.client.endpoint import make_endpoint

from .paths import CtlError, explain, is_bus_dir, is_mount

_STOP = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
_ACCESS = {"see": C.KDBUS_POLICY_SEE, "talk": C.KDBUS_POLICY_TALK, "own": C.KDBUS_POLICY_OWN}


def parse_policy(specs: list[str]) -> list[tuple[str, list[tuple[int, int, int]]]]:
    """``NAME:ACCESS:WHO`` (ACCESS see|talk|own, WHO world|uid=N|gid=N) ->
    policy entries, grants grouped by name in the order given."""
    entries: dict[str, list[tuple[int, int, int]]] = {}
    for spec in specs:
        try:
            name, access, who = spec.rsplit(":", 2)
        except ValueError:
            raise CtlError(f"--policy {spec!r}: expected NAME:ACCESS:WHO, e.g. "
                           "org.example.Echo:talk:world", 2) from None
        if access not in _ACCESS:
            raise CtlError(f"--policy {spec!r}: ACCESS is see, talk or own", 2)
        if who == "world":
            grant = (C.KDBUS_POLICY_ACCESS_WORLD, _ACCESS[access], 0)
        elif who.startswith(("uid=", "gid=")) and who[4:].isdigit():
            kind = C.KDBUS_POLICY_ACCESS_USER if who[0] == "u" else C.KDBUS_POLICY_ACCESS_GROUP
            grant = (kind, _ACCESS[access], int(who[4:]))
        else:
            raise CtlError(f"--policy {spec!r}: WHO is world, uid=N or gid=N", 2)
        entries.setdefault(name, []).append(grant)
    return list(entries.items())


def _hold(holder, path: str, background: bool, pidfile: str | None, out: TextIO) -> int:
    """Print ``path`` and keep ``holder`` (an object with close()) alive."""
    if background:
        pid = os.fork()
        if pid:
            holder.close()  # the child keeps the open file, and with it the object
            if pidfile:
                with open(pidfile, "w") as f:
                    f.write(f"{pid}\n")
            out.write(path + "\n")
            out.flush()
            return 0
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        _wait_for_stop()
        holder.close()
        os._exit(0)
    out.write(path + "\n")
    out.flush()
    try:
        _wait_for_stop()
    finally:
        holder.close()
    return 0


def _wait_for_stop() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP)
    signal.sigwait(_STOP)


def make_bus_command(mount: str, name: str, access: str | None, bloom_size: int, n_hash: int,
                     background: bool, pidfile: str | None, out: TextIO = sys.stdout) -> int:
    if not is_mount(mount):
        raise CtlError(f"{mount} is not a kdbusfs mount (no control file); mount one with "
                       "`kdbusfs MOUNTPOINT`", 2)
    try:
        bus = make_bus(mount, name, bloom_size=bloom_size, n_hash=n_hash, access=access)
    except OSError as e:
        full = f"{os.geteuid()}-{name}"
        if e.errno == errno.EEXIST:
            raise CtlError(f"a bus {full} exists already in {mount}") from None
        if e.errno in (errno.EINVAL, errno.ENAMETOOLONG):
            raise CtlError(f"BUS_MAKE {full}: invalid bus name or bloom parameters (names: "
                           "letters, digits, _, and inner - or .; at most 63 bytes with the "
                           "uid prefix; bloom size 8..4096, a multiple of 8)", 2) from None
        raise explain(e, f"BUS_MAKE {full}") from None
    return _hold(bus, bus.dir, background, pidfile, out)


def make_endpoint_command(bus_dir: str, name: str, access: str | None, policy: list[str],
                          background: bool, pidfile: str | None,
                          out: TextIO = sys.stdout) -> int:
    if not is_bus_dir(bus_dir):
        raise CtlError(f"{bus_dir} is not a bus directory (MOUNT/<uid>-<name>)", 2)
    entries = parse_policy(policy)
    try:
        ep = make_endpoint(bus_dir, name, access=access, policy=entries)
    except OSError as e:
        full = f"{os.geteuid()}-{name}"
        if e.errno == errno.EEXIST:
            raise CtlError(f"an endpoint {full} exists already on {bus_dir}") from None
        if e.errno in (errno.EINVAL, errno.ENAMETOOLONG):
            raise CtlError(f"ENDPOINT_MAKE {full}: invalid endpoint name or policy", 2) from None
        raise explain(e, f"ENDPOINT_MAKE {full}") from None
    return _hold(ep, ep.path, background, pidfile, out)
