"""A received message, parsed from its pool slice (fact sheet §6.11).

Slice layout: the 64-byte kdbus_msg header, the sender's items (PAYLOAD_VEC
turned into PAYLOAD_OFF, memfds, FDS, BLOOM_FILTER, DST_NAME), padding to 8,
the metadata items, then the payload area at ``P = ALIGN8(msg.size)``.
A PAYLOAD_OFF ``offset`` is relative to the start of the message.

:func:`parse_message` is pure (bytes in, :class:`Message` out), so it is
unit-tested against slices built from the fact sheet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple, Union

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I
from kdbusfs.abi.errors import KdbusError

from .commands import MSG
from .metadata import Metadata

_NOTIFY_KINDS = {
    C.KDBUS_ITEM_NAME_ADD: "name_add",
    C.KDBUS_ITEM_NAME_REMOVE: "name_remove",
    C.KDBUS_ITEM_NAME_CHANGE: "name_change",
    C.KDBUS_ITEM_ID_ADD: "id_add",
    C.KDBUS_ITEM_ID_REMOVE: "id_remove",
    C.KDBUS_ITEM_REPLY_TIMEOUT: "reply_timeout",
    C.KDBUS_ITEM_REPLY_DEAD: "reply_dead",
}


class IdNotification(NamedTuple):
    """ID_ADD / ID_REMOVE: a connection came or went (``flags``: its HELLO flags)."""

    type: int
    id: int
    flags: int

    @property
    def kind(self) -> str:
        return _NOTIFY_KINDS[self.type]


class NameNotification(NamedTuple):
    """NAME_ADD / NAME_REMOVE / NAME_CHANGE: ``name`` moved from old to new
    owner (id 0 = nobody), each side with its name record flags."""

    type: int
    name: str | None
    old_id: int
    old_flags: int
    new_id: int
    new_flags: int

    @property
    def kind(self) -> str:
        return _NOTIFY_KINDS[self.type]


class ReplyNotification(NamedTuple):
    """REPLY_TIMEOUT / REPLY_DEAD for the request whose cookie is ``cookie``."""

    type: int
    cookie: int

    @property
    def kind(self) -> str:
        return _NOTIFY_KINDS[self.type]


Notification = Union[IdNotification, NameNotification, ReplyNotification]


class Memfd(NamedTuple):
    """A PAYLOAD_MEMFD item as received: ``fd`` is installed in this process."""

    fd: int
    start: int
    size: int


@dataclass(slots=True)
class Message(Metadata):
    """One message (or kernel notification) as the receiver sees it.

    The metadata fields (timestamp, creds, pids, names, ...) come from
    :class:`Metadata`.  ``items`` lists every item of the slice as
    (type, payload bytes) in slice order, metadata included.
    """

    flags: int = 0
    priority: int = 0
    dst_id: int = 0
    src_id: int = 0
    payload_type: int = 0
    cookie: int = 0
    #: The request's cookie when this is a reply or a REPLY_* notification.
    cookie_reply: int = 0
    #: The absolute CLOCK_MONOTONIC deadline (ns) of an EXPECT_REPLY request.
    timeout_ns: int = 0
    #: The data of every PAYLOAD_OFF vec, concatenated in item order.  NULL
    #: (padding-only) vecs contribute nothing.
    payload: bytes = b""
    #: (offset, size) of each data vec inside the slice, in item order.
    vecs: list[tuple[int, int]] = field(default_factory=list)
    memfds: list[Memfd] = field(default_factory=list)
    #: The FDS item: fds installed in this process (owned by the caller; -1
    #: for an fd that could not be installed).  None when absent.
    fds: list[int] | None = None
    dst_name: str | None = None
    #: BLOOM_FILTER: (generation, filter bytes).
    bloom: tuple[int, bytes] | None = None
    notification: Notification | None = None
    items: list[tuple[int, bytes]] = field(default_factory=list)
    #: Pool offset and size of the slice it was read from.
    offset: int = 0
    size: int = 0
    #: RECV / SEND msg_info.return_flags (KDBUS_RECV_RETURN_INCOMPLETE_FDS).
    return_flags: int = 0

    @property
    def expects_reply(self) -> bool:
        return bool(self.flags & C.KDBUS_MSG_EXPECT_REPLY)

    @property
    def is_signal(self) -> bool:
        return bool(self.flags & C.KDBUS_MSG_SIGNAL)

    @property
    def is_broadcast(self) -> bool:
        return self.dst_id == C.KDBUS_DST_ID_BROADCAST

    @property
    def is_kernel(self) -> bool:
        """Sent by the bus itself (a notification)."""
        return self.src_id == C.KDBUS_SRC_ID_KERNEL

    @property
    def is_reply(self) -> bool:
        return not self.is_kernel and self.cookie_reply != 0

    @property
    def kind(self) -> str:
        """One of message, reply, signal, or the notification kind (id_add, ...)."""
        if self.notification is not None:
            return self.notification.kind
        if self.is_reply:
            return "reply"
        if self.is_signal:
            return "signal"
        return "message"

    @property
    def text(self) -> str:
        """The payload decoded as UTF-8 (errors replaced)."""
        return self.payload.decode("utf-8", "replace")

    def __repr__(self) -> str:
        dst = "BROADCAST" if self.is_broadcast else str(self.dst_id)
        parts = [self.kind, f"{self.src_id}->{dst}", f"cookie={self.cookie}"]
        if self.cookie_reply:
            parts.append(f"cookie_reply={self.cookie_reply}")
        if self.priority:
            parts.append(f"priority={self.priority}")
        if self.dst_name is not None:
            parts.append(f"dst_name={self.dst_name!r}")
        if self.notification is not None:
            parts.append(repr(self.notification))
        if self.payload or not self.notification:
            shown = self.payload if len(self.payload) <= 64 else self.payload[:64] + b"..."
            parts.append(f"payload={shown!r}")
        if self.fds is not None:
            parts.append(f"fds={self.fds}")
        if self.memfds:
            parts.append(f"memfds={self.memfds}")
        meta = [name for name in ("timestamp", "creds", "pids", "auxgroups", "tid_comm",
                                  "pid_comm", "exe", "cmdline", "cgroup", "caps", "seclabel",
                                  "audit", "description") if getattr(self, name) is not None]
        if self.names:
            meta.append("names")
        if meta:
            parts.append("meta=" + ",".join(meta))
        return f"<Message {' '.join(parts)}>"


def align8(n: int) -> int:
    return (n + 7) & ~7


def parse_message(data: bytes, *, offset: int = 0, return_flags: int = 0) -> Message:
    """Parse one message slice (``data`` starts at the kdbus_msg header).

    ``offset`` is the slice's pool offset, kept in the result for FREE.
    Raises ValueError on a slice that does not follow the layout.
    """
    data = bytes(data)
    if len(data) < MSG.size:
        raise ValueError(f"message slice of {len(data)} bytes is shorter than its header")
    (size, flags, priority, dst_id, src_id, payload_type, cookie,
     word) = MSG.unpack_from(data)
    if size < MSG.size or size > len(data):
        raise ValueError(f"message size {size} outside its {len(data)}-byte slice")
    try:
        walked = I.walk_items(data, MSG.size, size)
    except KdbusError as e:
        raise ValueError(f"malformed item list: {e}") from None

    expects_reply = bool(flags & C.KDBUS_MSG_EXPECT_REPLY)
    msg = Message(flags=flags, priority=priority, dst_id=dst_id, src_id=src_id,
                  payload_type=payload_type, cookie=cookie,
                  timeout_ns=word if expects_reply else 0,
                  cookie_reply=0 if expects_reply else word,
                  offset=offset, size=len(data), return_flags=return_flags)
    payload_start = align8(size)
    chunks: list[bytes] = []
    for item in walked:
        t, p = item.type, item.payload
        msg.items.append((t, p))
        if t == C.KDBUS_ITEM_PAYLOAD_OFF or t == C.KDBUS_ITEM_PAYLOAD_VEC:
            vsize, voff = I.decode_vec(p)
            # A NULL vec reports ~0 (or, re-based, P-1): below P either way.
            if voff >= payload_start and voff + vsize <= len(data):
                chunks.append(data[voff:voff + vsize])
                msg.vecs.append((voff, vsize))
        elif t == C.KDBUS_ITEM_PAYLOAD_MEMFD:
            m = I.decode_memfd(p)
            msg.memfds.append(Memfd(m.fd, m.start, m.size))
        elif t == C.KDBUS_ITEM_FDS:
            msg.fds = I.decode_fds(p)
        elif t == C.KDBUS_ITEM_DST_NAME:
            msg.dst_name = p[:-1].decode("latin-1")
        elif t == C.KDBUS_ITEM_BLOOM_FILTER:
            msg.bloom = I.decode_bloom_filter(p)
        elif t in (C.KDBUS_ITEM_ID_ADD, C.KDBUS_ITEM_ID_REMOVE):
            msg.notification = IdNotification(t, *I.decode_id_change(p))
        elif t in (C.KDBUS_ITEM_NAME_ADD, C.KDBUS_ITEM_NAME_REMOVE, C.KDBUS_ITEM_NAME_CHANGE):
            nc = I.decode_name_change(p)
            msg.notification = NameNotification(t, nc.name, nc.old_id, nc.old_flags,
                                                 nc.new_id, nc.new_flags)
        elif t in (C.KDBUS_ITEM_REPLY_TIMEOUT, C.KDBUS_ITEM_REPLY_DEAD):
            msg.notification = ReplyNotification(t, msg.cookie_reply)
        else:
            msg._absorb(t, p)
    msg.payload = b"".join(chunks)
    return msg
