"""Sending and receiving: SEND, RECV, replies and waiting (fact sheet §6.10-6.13).

This is a mixin of :class:`kdbusfs.client.Connection`; it relies on the
connection's fd, pool and cookie counter.
"""

from __future__ import annotations

import errno
import math
import os
import select
import time
from typing import Iterator, Sequence, Union

from kdbusfs.abi import constants as C
from kdbusfs.abi import items as I

from . import _sys
from . import commands as cmds
from . import fds as fdchan
from .message import Message, parse_message

#: dst for a broadcast signal.
BROADCAST = C.KDBUS_DST_ID_BROADCAST
#: Timeout of call() and of send(expect_reply=True) when none is given, s.
DEFAULT_TIMEOUT = 25.0
#: A priority threshold that admits every message (recv(priority=ANY_PRIORITY)
#: returns the most urgent message first).
ANY_PRIORITY = (1 << 63) - 1

BytesLike = Union[bytes, bytearray, memoryview]
Payload = Union[BytesLike, str, Sequence[Union[BytesLike, str]], None]

_POLLIN = select.POLLIN
_POLLDONE = select.POLLIN | select.POLLERR | select.POLLHUP | select.POLLNVAL


def _pin_payload(payload: Payload) -> tuple[list, list[tuple[int, int]]]:
    """(keepalive list, [(size, address)]) for the PAYLOAD_VEC items.

    ``payload`` is one bytes-like object or a sequence of them (one vec
    each); str is encoded as UTF-8.  Empty parts are skipped (the ABI
    forbids zero-sized vecs).  The data is not copied: the addresses stay
    valid while the keepalive list is referenced.
    """
    if payload is None:
        parts: Sequence = ()
    elif isinstance(payload, (bytes, bytearray, memoryview, str)):
        parts = (payload,)
    else:
        parts = payload
    keep: list = []
    vecs: list[tuple[int, int]] = []
    for part in parts:
        if isinstance(part, str):
            part = part.encode("utf-8")
        elif not isinstance(part, (bytes, bytearray, memoryview)):
            raise TypeError(f"payload parts must be bytes-like or str, not {type(part).__name__}")
        cdata, addr = _sys.pin(part)
        n = len(cdata)
        if n == 0:
            continue
        keep.append(cdata)
        vecs.append((n, addr))
    return keep, vecs


class Canceller:
    """A switch that ends a blocked :meth:`~MessagingMixin.call` with ECANCELED.

    It is an eventfd: pass it as ``call(..., cancel_fd=canceller)`` and call
    :meth:`cancel` from another thread (or hand :meth:`fileno` to another
    process, which writes to it).  Once cancelled it stays cancelled, so
    every later call with it ends at once; use a new one per operation.

        with Canceller() as stop:
            threading.Timer(1.0, stop.cancel).start()
            conn.call("org.example.Slow", b"...", cancel_fd=stop)   # ECANCELED
    """

    def __init__(self):
        self._fd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)

    def fileno(self) -> int:
        if self._fd < 0:
            raise ValueError("canceller is closed")
        return self._fd

    def cancel(self) -> None:
        os.eventfd_write(self.fileno(), 1)

    @property
    def cancelled(self) -> bool:
        p = select.poll()
        p.register(self.fileno(), _POLLIN)
        return bool(p.poll(0))

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def __enter__(self) -> "Canceller":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _fd_of(f) -> int | None:
    if f is None or isinstance(f, int):
        return f
    return f.fileno()


def _memfd_triples(memfds) -> list[tuple[int, int, int]]:
    out = []
    for m in memfds:
        if isinstance(m, int):
            out.append((m, 0, os.fstat(m).st_size))
        else:
            fd, start, size = m
            out.append((fd, start, size))
    return out


class MessagingMixin:
    """send / call / reply / emit / recv / drop / wait / recv_wait."""

    # provided by Connection
    _fd: int
    id: int
    bloom_size: int
    pool_size: int
    dropped: int
    last_dropped: int

    # ------------------------------------------------------------------
    # sending

    def _build_send(self, dst, payload, *, cookie, priority, expect_reply, timeout,
                    reply_to, signal, bloom, no_auto_start, fds, memfds, payload_type,
                    sync, cancel_fd):
        if isinstance(dst, (str, bytes)):
            dst_id, dst_name = C.KDBUS_DST_ID_NAME, dst
        elif isinstance(dst, int) and not isinstance(dst, bool):
            dst_id, dst_name = dst, None
        else:
            raise TypeError(f"dst must be a connection id, a well-known name or BROADCAST, "
                            f"not {dst!r}")
        if dst_id == BROADCAST:
            signal = True
        if cookie is None:
            cookie = self._next_cookie()
        flags = 0
        word = 0
        if expect_reply:
            flags |= C.KDBUS_MSG_EXPECT_REPLY
            word = _sys.monotonic_deadline_ns(DEFAULT_TIMEOUT if timeout is None else timeout)
        elif reply_to is not None:
            word = reply_to
        if no_auto_start:
            flags |= C.KDBUS_MSG_NO_AUTO_START
        if signal:
            flags |= C.KDBUS_MSG_SIGNAL
            if bloom is None:
                bloom = bytes(self.bloom_size)
        if bloom is not None and not isinstance(bloom, tuple):
            bloom = (0, bytes(bloom))
        keep, vecs = _pin_payload(payload)
        msg = cmds.message(dst_id=dst_id, flags=flags, priority=priority,
                           payload_type=payload_type, cookie=cookie, timeout_or_reply=word,
                           dst_name=dst_name, vecs=vecs, fds=fds,
                           memfds=_memfd_triples(memfds), bloom=bloom)
        aligned = _sys.AlignedBytes(msg)
        keep.append(aligned)
        cmd_items = b"" if cancel_fd is None else I.item_cancel_fd(cancel_fd)
        buf = _sys.cmd_buffer(cmds.send(C.KDBUS_SEND_SYNC_REPLY if sync else 0,
                                        aligned.address, cmd_items))
        return cookie, buf, keep

    def send(self, dst, payload: Payload = b"", *, cookie: int | None = None,
             priority: int = 0, expect_reply: bool = False, timeout: float | None = None,
             reply_to: int | None = None, signal: bool = False,
             bloom: bytes | tuple[int, bytes] | None = None, no_auto_start: bool = False,
             fds: Sequence[int] | None = None, memfds: Sequence = (),
             payload_type: int = C.KDBUS_PAYLOAD_DBUS) -> int:
        """Queue a message for ``dst``; returns its cookie.

        ``dst`` is a connection id, a well-known name (str) or BROADCAST
        (which implies ``signal``).  ``payload`` is bytes (or str) or a list
        of them, sent as one PAYLOAD_VEC each, without copying.  With
        ``expect_reply`` the peer owes a reply within ``timeout`` seconds
        (default 25), else a REPLY_TIMEOUT/REPLY_DEAD notification arrives.
        ``reply_to`` makes this a reply to the request with that cookie.
        Signals carry ``bloom`` (filter bytes of the bus bloom size, or
        (generation, bytes)); a zero filter is used when none is given.
        ``fds`` go in an FDS item, ``memfds`` are sealed memfds as fd or
        (fd, start, size).  Errors raise OSError with the kernel errno.
        """
        cookie, buf, keep = self._build_send(
            dst, payload, cookie=cookie, priority=priority, expect_reply=expect_reply,
            timeout=timeout, reply_to=reply_to, signal=signal, bloom=bloom,
            no_auto_start=no_auto_start, fds=fds, memfds=memfds, payload_type=payload_type,
            sync=False, cancel_fd=None)
        _sys.ioctl(self._fd, C.KDBUS_CMD_SEND, buf)
        del keep
        return cookie

    def call(self, dst, payload: Payload = b"", *, timeout: float = DEFAULT_TIMEOUT,
             priority: int = 0, cookie: int | None = None, no_auto_start: bool = False,
             fds: Sequence[int] | None = None, memfds: Sequence = (),
             cancel_fd=None, payload_type: int = C.KDBUS_PAYLOAD_DBUS,
             keep: bool = False) -> Message:
        """Send a request and block for its reply (EXPECT_REPLY + SYNC_REPLY).

        The reply is read from the pool and freed (unless ``keep``); it
        never goes through the queue.  Raises OSError:

        - ETIMEDOUT: no reply within ``timeout`` seconds;
        - EPIPE: the peer died, or dropped the request unanswered;
        - ECONNRESET: this connection was disconnected meanwhile (BYEBYE
          from another thread, or the bus went away);
        - ECANCELED: ``cancel_fd`` (an fd, or an object with fileno() such
          as a :class:`Canceller`) became readable;
        - EREMOTEIO: the reply could not be delivered to us (e.g. it had
          fds and we did not accept fds);
        - ESRCH/ENXIO/EADDRNOTAVAIL/EPERM/EMLINK: sending failed.

        A signal whose handler returns (EINTR) does not end the call: it
        resumes the same wait (same cookie).  A handler that raises ends it
        with that exception; a late reply is then discarded.
        """
        cookie, buf, pinned = self._build_send(
            dst, payload, cookie=cookie, priority=priority, expect_reply=True,
            timeout=timeout, reply_to=None, signal=False, bloom=None,
            no_auto_start=no_auto_start, fds=fds, memfds=memfds, payload_type=payload_type,
            sync=True, cancel_fd=_fd_of(cancel_fd))
        while True:
            try:
                _sys.ioctl(self._fd, C.KDBUS_CMD_SEND, buf)
                break
            except InterruptedError:
                continue  # same cookie: the kernel resumes the same wait
        del pinned
        offset, size, rflags = cmds.MSG_INFO.unpack_from(buf, cmds.SEND_REPLY)
        if size == 0:
            raise OSError(errno.EBADMSG, "SYNC_REPLY returned no reply slice")
        return self._take_message(offset, size, rflags, keep)

    def reply(self, msg: Message, payload: Payload = b"", **kwargs) -> int:
        """Answer the request ``msg`` (send to its sender with reply_to=its cookie)."""
        if msg.src_id == C.KDBUS_SRC_ID_KERNEL:
            raise ValueError("cannot reply to a kernel notification")
        return self.send(msg.src_id, payload, reply_to=msg.cookie, **kwargs)

    def emit(self, payload: Payload = b"", *, bloom: bytes | tuple[int, bytes] | None = None,
             **kwargs) -> int:
        """Broadcast a signal (send(BROADCAST, ...)); returns its cookie.

        It reaches every connection (this one included) with a match entry
        that admits it and TALK access to us.  ``bloom`` is the filter that
        receivers' bloom masks test, e.g. ``self.bloom("member:Changed")``,
        or (generation, filter); none means all zeros.  Broadcasts carry no
        fds and expect no reply (ENOTUNIQ).
        """
        return self.send(BROADCAST, payload, bloom=bloom, signal=True, **kwargs)

    # ------------------------------------------------------------------
    # receiving

    def _note_dropped(self, buf) -> None:
        n = cmds.U64.unpack_from(buf, cmds.RECV_DROPPED)[0]
        self.last_dropped = n
        self.dropped += n

    def _take_message(self, offset: int, size: int, return_flags: int, keep: bool) -> Message:
        data = self._read_slice(offset, size, True)
        try:
            msg = parse_message(data, offset=offset, return_flags=return_flags)
            # fds come over the fd channel, tagged with this slice's offset:
            # take them before the offset can be reused (client/fds.py)
            fdchan.attach(self._fd_channel, msg)
        finally:
            if not keep:
                self.free(offset)
        return msg

    def _recv(self, flags: int, priority: int):
        buf = _sys.cmd_buffer(cmds.recv(flags, priority))
        try:
            _sys.ioctl(self._fd, C.KDBUS_CMD_RECV, buf)
        except OSError as e:
            self._note_dropped(buf)
            if e.errno == errno.EAGAIN:
                return None
            raise
        self._note_dropped(buf)
        return cmds.MSG_INFO.unpack_from(buf, cmds.RECV_MSG)

    def recv(self, *, peek: bool = False, drop: bool = False, priority: int | None = None,
             keep: bool = False) -> Message | None:
        """Dequeue the next message, or None when the queue is empty (EAGAIN).

        ``peek`` leaves it queued (a later recv returns it again);
        ``drop`` discards it unread (returns None; see :meth:`drop`);
        ``priority`` receives the most urgent message (lowest value first)
        whose priority is at most this threshold, else None.
        The slice is copied out and freed, unless ``keep``: then free
        ``msg.offset`` yourself.  Messages lost since the last RECV are
        added to ``self.dropped`` (this call's count: ``self.last_dropped``).
        """
        flags = 0
        if peek:
            flags |= C.KDBUS_RECV_PEEK
        if drop:
            flags |= C.KDBUS_RECV_DROP
        if priority is not None:
            flags |= C.KDBUS_RECV_USE_PRIORITY
        info = self._recv(flags, 0 if priority is None else priority)
        if info is None or drop:
            return None
        offset, size, rflags = info
        if size == 0:
            return None
        return self._take_message(offset, size, rflags, keep)

    def drop(self) -> bool:
        """Discard the next queued message; False if the queue was empty."""
        return self._recv(C.KDBUS_RECV_DROP, 0) is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Block until a message is queued (or the connection died).

        Returns False when ``timeout`` seconds passed first.
        """
        p = select.poll()
        p.register(self._fd, _POLLIN)
        ms = -1 if timeout is None else max(0, math.ceil(timeout * 1000))
        while True:
            try:
                events = p.poll(ms)
            except InterruptedError:  # pragma: no cover - PEP 475 retries
                continue
            return any(ev & _POLLDONE for _, ev in events)

    def messages(self, timeout: float | None = None, **kwargs) -> Iterator[Message]:
        """Iterate over messages as they arrive (recv_wait(timeout, **kwargs)
        in a loop); stops once none came within ``timeout`` seconds (None:
        never; break out yourself).

            for msg in conn.messages(timeout=1.0):
                if msg.kind == "name_change": ...
        """
        while True:
            msg = self.recv_wait(timeout, **kwargs)
            if msg is None:
                return
            yield msg

    def recv_wait(self, timeout: float | None = None, **kwargs) -> Message | None:
        """recv(**kwargs), waiting up to ``timeout`` seconds (None: forever)
        for a message; None if none came in time."""
        if kwargs.get("drop"):
            raise ValueError("recv_wait() cannot drop; use wait() and drop()")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            msg = self.recv(**kwargs)
            if msg is not None:
                return msg
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                return None
            if not self.wait(left):
                return None
            if kwargs.get("priority") is not None:
                # readable, but maybe only above the threshold: do not spin hot
                time.sleep(0.001)
