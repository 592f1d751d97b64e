"""`kdbusctl list` and `kdbusctl status`: who is on a bus, and all that kdbus
tells about one connection or about the bus itself."""

from __future__ import annotations

import errno
import os
import sys
from typing import TextIO

from kdbusfs.abi import constants as C
from kdbusfs.client import ATTACH_ALL, LIST_ALL, Connection, Info
from kdbusfs.dbus.names import parse_unique_name, unique_name

from .paths import CtlError, buses_in, explain, is_mount, resolve_bus

_ROW_ATTACH = (C.KDBUS_ATTACH_CREDS | C.KDBUS_ATTACH_PIDS | C.KDBUS_ATTACH_PID_COMM
               | C.KDBUS_ATTACH_CONN_DESCRIPTION)
_HELLO_FLAGS = ((C.KDBUS_HELLO_ACCEPT_FD, "accept-fd"), (C.KDBUS_HELLO_ACTIVATOR, "activator"),
                (C.KDBUS_HELLO_POLICY_HOLDER, "policy-holder"), (C.KDBUS_HELLO_MONITOR, "monitor"))
_NAME_FLAGS = ((C.KDBUS_NAME_PRIMARY, "primary"), (C.KDBUS_NAME_IN_QUEUE, "queued"),
               (C.KDBUS_NAME_ACTIVATOR, "activator"),
               (C.KDBUS_NAME_ALLOW_REPLACEMENT, "allow-replacement"),
               (C.KDBUS_NAME_QUEUE, "queue"))
_MAKE_FLAGS = ((C.KDBUS_MAKE_ACCESS_GROUP, "access-group"),
               (C.KDBUS_MAKE_ACCESS_WORLD, "access-world"))


def flag_names(flags: int, table) -> str:
    names = [name for bit, name in table if flags & bit]
    return ",".join(names) or "-"


def connect(endpoint: str) -> Connection:
    try:
        return Connection.open(endpoint, pool_size=1 << 20,
                               attach_recv=C.KDBUS_ATTACH_TIMESTAMP)
    except OSError as e:
        raise explain(e, f"cannot connect to {endpoint}") from None


def _row_info(conn: Connection, conn_id: int, cache: dict[int, Info | None]) -> Info | None:
    if conn_id not in cache:
        try:
            cache[conn_id] = conn.conn_info(conn_id, attach=_ROW_ATTACH)
        except OSError:
            cache[conn_id] = None  # gone meanwhile
    return cache[conn_id]


def bus_rows(conn: Connection) -> list[tuple[str, ...]]:
    """(NAME, CONNECTION, PID, UID, COMM, FLAGS, DESCRIPTION) rows: every
    connection by unique name, then every name record, this one excluded."""
    entries = [e for e in conn.list(LIST_ALL) if e.id != conn.id]
    cache: dict[int, Info | None] = {}
    uniques, names = [], []
    for entry in sorted(entries, key=lambda e: e.id):
        info = _row_info(conn, entry.id, cache)
        pid = str(info.pids.pid) if info and info.pids and info.pids.pid else "-"
        uid = str(info.creds.uid) if info and info.creds else "-"
        comm = (info.comm if info else None) or "-"
        desc = (info.description if info else None) or "-"
        owner = unique_name(entry.id)
        uniques.append((owner, owner, pid, uid, comm, flag_names(entry.flags, _HELLO_FLAGS),
                        desc))
        for n in entry.names:
            names.append((n.name, owner, pid, uid, comm, flag_names(n.flags, _NAME_FLAGS), desc))
    names.sort(key=lambda r: (r[0], "queued" in r[5]))
    return uniques + names


def print_table(rows, header, out: TextIO) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        out.write("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() + "\n")


HEADER = ("NAME", "CONNECTION", "PID", "UID", "COMM", "FLAGS", "DESCRIPTION")


def list_command(path: str | None, out: TextIO = sys.stdout) -> int:
    """List a mount's buses with their connections and names, or one bus's."""
    if path and is_mount(path):
        buses = buses_in(path)
        if not buses:
            out.write(f"{path}: no buses\n")
        for i, bus_dir in enumerate(buses):
            if i:
                out.write("\n")
            _list_bus(os.path.join(bus_dir, "bus"), out, title=True)
        return 0
    _list_bus(resolve_bus(path), out, title=False)
    return 0


def _list_bus(endpoint: str, out: TextIO, title: bool) -> None:
    bus_dir = os.path.dirname(endpoint)
    try:
        conn = connect(endpoint)
    except CtlError as e:
        if not title:
            raise
        out.write(f"bus {os.path.basename(bus_dir)} ({bus_dir}): {e}\n")
        return
    with conn:
        rows = bus_rows(conn)
        if title:
            out.write(f"bus {os.path.basename(bus_dir)} ({bus_dir}), "
                      f"{sum(1 for r in rows if r[0].startswith(':'))} connections\n")
        print_table(rows, HEADER, out)


def _kv(out: TextIO, key: str, value) -> None:
    if value is not None and value != "":
        out.write(f"  {key + ':':<14}{value}\n")


def _caps_text(mask: int) -> str:
    return f"{mask:#x}"


def status_command(bus: str | None, target: str | None, out: TextIO = sys.stdout) -> int:
    """Everything CONN_INFO reveals about ``target`` (:1.N, N or a
    well-known name), or BUS_CREATOR_INFO about the bus when none."""
    endpoint = resolve_bus(bus)
    with connect(endpoint) as conn:
        if target is None:
            _bus_status(conn, endpoint, out)
            return 0
        if target.isdigit():
            key: int | str = int(target)
        else:
            conn_id = parse_unique_name(target)
            key = target if conn_id is None else conn_id
        try:
            info = conn.conn_info(key, attach=ATTACH_ALL)
        except OSError as e:
            if e.errno in (errno.ESRCH, errno.ENXIO):
                raise CtlError(f"{target}: no such connection or name on this bus") from None
            if e.errno == errno.EINVAL:
                raise CtlError(f"{target}: not a connection id, :1.N or a bus name", 2) from None
            raise explain(e, f"CONN_INFO {target}") from None
        records = [n for e in conn.list(LIST_ALL) if e.id == info.id for n in e.names]
        out.write(f"{unique_name(info.id)} (connection {info.id})\n")
        _kv(out, "Flags", flag_names(info.flags, _HELLO_FLAGS))
        _kv(out, "Names", ", ".join(f"{n.name} ({flag_names(n.flags, _NAME_FLAGS)})"
                                    for n in records) or "-")
        _metadata(info, out)
    return 0


def _bus_status(conn: Connection, endpoint: str, out: TextIO) -> None:
    try:
        info = conn.bus_creator_info(ATTACH_ALL)
    except OSError as e:
        raise explain(e, "BUS_CREATOR_INFO") from None
    out.write(f"bus {info.name} (id {info.id})\n")
    _kv(out, "Directory", os.path.dirname(endpoint))
    _kv(out, "Flags", flag_names(info.flags, _MAKE_FLAGS))
    _kv(out, "UUID", str(conn.bus_uuid))
    _kv(out, "Bloom", f"{conn.bloom_size} bytes, {conn.bloom_n_hash} hash function(s)")
    connections = [e for e in conn.list(C.KDBUS_LIST_UNIQUE | C.KDBUS_LIST_NAMES)
                   if e.id != conn.id]
    _kv(out, "Connections", len(connections))
    out.write("  Creator (as the bus reveals it):\n")
    _metadata(info, out)


def _metadata(info: Info, out: TextIO) -> None:
    if info.description is not None:
        _kv(out, "Description", info.description)
    if info.pids is not None:
        _kv(out, "PID", f"{info.pids.pid} (tid {info.pids.tid}, ppid {info.pids.ppid})")
    if info.creds is not None:
        c = info.creds
        _kv(out, "UID", f"{c.uid} (euid {c.euid}, suid {c.suid}, fsuid {c.fsuid})")
        _kv(out, "GID", f"{c.gid} (egid {c.egid}, sgid {c.sgid}, fsgid {c.fsgid})")
    if info.auxgroups is not None:
        _kv(out, "Groups", " ".join(map(str, info.auxgroups)) or "-")
    _kv(out, "Comm", info.pid_comm if info.pid_comm is not None else info.tid_comm)
    _kv(out, "Exe", info.exe)
    _kv(out, "Cmdline", info.cmdline)
    _kv(out, "Cgroup", info.cgroup)
    if info.caps is not None:
        _kv(out, "Caps", f"effective {_caps_text(info.caps.effective)}, "
                         f"permitted {_caps_text(info.caps.permitted)}, "
                         f"bounding {_caps_text(info.caps.bounding)}")
    _kv(out, "Seclabel", info.seclabel)
    if info.audit is not None:
        _kv(out, "Audit", f"session {info.audit.sessionid}, loginuid {info.audit.loginuid}")
    if all(getattr(info, f) is None for f in ("pids", "creds", "pid_comm", "exe")):
        out.write("  (no process metadata: the connection does not reveal it)\n")
