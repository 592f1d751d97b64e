"""`kdbusctl monitor`: every message on a bus, through a kdbus monitor
connection (bus owner only), decoded as D-Bus where the payload is D-Bus."""

from __future__ import annotations

import errno
import sys
import time
from typing import TextIO

from jeepney import HeaderFields, MessageType

from kdbusfs.abi import constants as C
from kdbusfs.client import Connection
from kdbusfs.client import Message as KMessage
from kdbusfs.dbus.names import unique_name
from kdbusfs.dbus.rules import MatchRule, MatchRuleError
from kdbusfs.dbus.wire import Wire

from .paths import CtlError, explain, resolve_bus
from .values import format_values

_ATTACH = C.KDBUS_ATTACH_TIMESTAMP | C.KDBUS_ATTACH_NAMES
_TYPE_NAMES = {MessageType.method_call: "method_call", MessageType.method_return: "method_return",
               MessageType.error: "error", MessageType.signal: "signal"}


def _clock(kmsg: KMessage) -> str:
    ns = kmsg.timestamp.realtime_ns if kmsg.timestamp else time.time_ns()
    return time.strftime("%H:%M:%S", time.localtime(ns / 1e9)) + f".{ns // 1000 % 1000000:06d}"


def _who(conn_id: int) -> str:
    return "kernel" if conn_id == 0 else unique_name(conn_id)


def _route(kmsg: KMessage) -> str:
    if kmsg.is_broadcast:
        dst = "*"
    elif kmsg.dst_name is not None:
        dst = kmsg.dst_name
    else:
        dst = _who(kmsg.dst_id)
    return f"{_who(kmsg.src_id)} -> {dst}"


def _notification_text(kmsg: KMessage) -> str:
    n = kmsg.notification
    if n.kind in ("id_add", "id_remove"):
        return f"{n.kind} {unique_name(n.id)} flags={n.flags:#x}"
    if n.kind in ("reply_timeout", "reply_dead"):
        return f"{n.kind} for cookie {n.cookie} -> {_who(kmsg.dst_id)}"
    old = unique_name(n.old_id) if n.old_id else "-"
    new = unique_name(n.new_id) if n.new_id else "-"
    return f"{n.kind} {n.name}: {old} -> {new}"


def describe(kmsg: KMessage, wire: Wire, rules: list[MatchRule]) -> str | None:
    """The lines for one monitored message, or None when ``rules`` exclude it."""
    deliveries = wire.receive(kmsg)
    if rules and not any(r.matches(d.message, d.sender_names)
                         for d in deliveries for r in rules):
        return None
    head = f"{_clock(kmsg)} "
    if kmsg.notification is not None:
        return head + _notification_text(kmsg)
    if not deliveries:
        preview = kmsg.payload[:48]
        return (head + f"{kmsg.kind} {_route(kmsg)} cookie={kmsg.cookie} "
                f"payload_type={kmsg.payload_type:#x} {len(kmsg.payload)} bytes {preview!r}")
    msg = deliveries[0].message
    f = msg.header.fields
    line = head + f"{_TYPE_NAMES[msg.header.message_type]} {_route(kmsg)} cookie={kmsg.cookie}"
    if kmsg.cookie_reply and not kmsg.expects_reply:
        line += f" reply_cookie={kmsg.cookie_reply}"
    details = []
    for key, hf in (("path", HeaderFields.path), ("interface", HeaderFields.interface),
                    ("member", HeaderFields.member), ("error", HeaderFields.error_name)):
        if hf in f:
            details.append(f"{key}={f[hf]}")
    lines = [line]
    if details:
        lines.append("    " + " ".join(details))
    sig = f.get(HeaderFields.signature, "")
    if sig:
        lines.append("    " + format_values(sig, msg.body))
    return "\n".join(lines)


def monitor_command(bus: str | None, rule_texts: list[str], count: int | None,
                    timeout: float | None, out: TextIO = sys.stdout) -> int:
    try:
        rules = [MatchRule.parse(t) for t in rule_texts]
    except MatchRuleError as e:
        raise CtlError(f"bad --match rule: {e}", 2) from None
    endpoint = resolve_bus(bus)
    try:
        conn = Connection.open(endpoint, monitor=True, attach_recv=_ATTACH)
    except OSError as e:
        if e.errno == errno.EPERM:
            raise CtlError("monitoring needs the bus owner (or root): kdbus refused a "
                           "monitor connection") from None
        if e.errno == errno.EOPNOTSUPP:
            raise CtlError("monitors must use the bus's default endpoint (bus), not a "
                           "custom endpoint") from None
        raise explain(e, f"cannot monitor {endpoint}") from None
    wire = Wire(None, 0, 1)
    deadline = None if timeout is None else time.monotonic() + timeout
    shown = 0
    print(f"Monitoring {endpoint} (connection {conn.id}); Ctrl-C stops.", file=sys.stderr,
          flush=True)
    with conn:
        while count is None or shown < count:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                break
            try:
                kmsg = conn.recv_wait(left)
            except OSError as e:
                if e.errno == errno.ECONNRESET:
                    print("kdbusctl: the bus went away", file=sys.stderr)
                    return 1
                raise
            if kmsg is None:
                continue
            text = describe(kmsg, wire, rules)
            if text is not None:
                out.write(text + "\n")
                out.flush()
                shown += 1
            if conn.last_dropped:
                out.write(f"({conn.last_dropped} messages lost: the monitor fell behind)\n")
    return 0
