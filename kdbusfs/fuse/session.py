"""A FUSE session: read requests from /dev/fuse, dispatch, write replies.

One trio task reads into a single preallocated buffer and handles each
request synchronously (a task per request costs more than most requests).
Every request read is answered exactly once on every path, because an
unanswered request leaves its caller in an unkillable sleep.

Writes that can block in the kernel (NOTIFY_STORE and the invalidations wait
for page or directory locks held by requests that may still sit unread in
/dev/fuse) go through one writer thread, in FIFO order; replies sent with
after_stores=True take the same queue so they reach the kernel after the
stores queued before them.
"""

import errno
import fcntl
import logging
import math
import os
import queue
import threading
import time

import trio

from . import protocol as p
from .ops import (
    DEFERRED,
    Attr,
    AttrReply,
    Entry,
    FuseError,
    IoctlReply,
    OpenReply,
    Reply,
    StatFs,
)

log = logging.getLogger("kdbusfs.fuse")

DEFAULT_FLAGS = (
    p.ASYNC_READ
    | p.BIG_WRITES
    | p.MAX_PAGES
    | p.INIT_EXT
    | p.EXPLICIT_INVAL_DATA
    | p.PARALLEL_DIROPS
    | p.NO_EXPORT_SUPPORT
)

_NO_REPLY = object()  # FORGET, BATCH_FORGET, INTERRUPT, or answered already

_LIVE, _DEFERRED, _ANSWERED = 0, 1, 2

# Above this a reply goes out with writev instead of one concatenated buffer.
_CONCAT_MAX = 8192
# The loop yields to other trio tasks at least every this many requests.
_YIELD_EVERY = 64
# How long shutdown waits for queued stores before leaving the thread behind.
_WRITER_JOIN_TIMEOUT = 5.0


def _opname(opcode):
    return p.OPCODE_NAMES.get(opcode, str(opcode))


class Request:
    """One request; kept by the filesystem only when deferred."""

    __slots__ = ("session", "opcode", "unique", "nodeid", "uid", "gid", "pid", "_state", "_on_interrupt")

    def __init__(self, session, opcode, unique, nodeid, uid, gid, pid):
        self.session = session
        self.opcode = opcode
        self.unique = unique
        self.nodeid = nodeid
        self.uid = uid
        self.gid = gid
        self.pid = pid  # the calling thread's id, 0 if not visible to us
        self._state = _LIVE
        self._on_interrupt = None

    def __repr__(self):
        return f"<Request {_opname(self.opcode)} unique={self.unique} nodeid={self.nodeid} pid={self.pid}>"

    @property
    def answered(self):
        return self._state == _ANSWERED

    def defer(self, on_interrupt=None):
        """Keep the request open past the handler; returns DEFERRED.

        On INTERRUPT, on_interrupt(req) is called and should answer (usually
        EINTR); without it the session answers EINTR itself.
        """
        if self._state == _ANSWERED:
            raise RuntimeError(f"{self!r} is already answered")
        self._state = _DEFERRED
        self._on_interrupt = on_interrupt
        self.session._pending[self.unique] = self
        return DEFERRED

    def _claim(self):
        if self._state == _ANSWERED:
            log.debug("ignoring second reply to %r", self)
            return False
        if self._state == _DEFERRED:
            self.session._pending.pop(self.unique, None)
        self._state = _ANSWERED
        return True

    def reply(self, payload=b"", after_stores=False):
        """Answer with a raw payload. Returns False if already answered."""
        if not self._claim():
            return False
        self.session._send(self.unique, 0, payload, after_stores)
        return True

    def reply_error(self, err):
        if not self._claim():
            return False
        self.session._send(self.unique, _checked_errno(err), b"")
        return True

    def reply_ioctl(self, result, data=b"", after_stores=False):
        try:
            payload = p.IOCTL_OUT.pack(result, 0, 0, 0) + data
        except Exception:
            self.reply_error(errno.EIO)  # release the caller, then report the bug
            raise
        return self.reply(payload, after_stores)


def _checked_errno(err):
    # The kernel rejects errors outside 1..511 without ending the request.
    if type(err) is int and 0 < err < 512:
        return err
    log.error("invalid errno %r, answering EIO", err)
    return errno.EIO


def _split(seconds):
    """Float seconds -> (u64 seconds, nanoseconds)."""
    if seconds == 0:
        return 0, 0
    s = math.floor(seconds)
    return s & 0xFFFFFFFFFFFFFFFF, int((seconds - s) * 1e9)


def _valid(seconds):
    if seconds <= 0:
        return 0, 0
    s = int(seconds)
    return s, int((seconds - s) * 1e9)


def _attr_fields(a):
    at, atn = _split(a.atime)
    mt, mtn = _split(a.mtime)
    ct, ctn = _split(a.ctime)
    return (a.ino, a.size, a.blocks, at, mt, ct, atn, mtn, ctn, a.mode, a.nlink,
            a.uid, a.gid, a.rdev, a.blksize, 0)


def _passthrough(r, what):
    # Any handler may answer with a raw Reply or defer; anything else is a bug.
    if r is DEFERRED or r.__class__ is Reply:
        return r
    raise TypeError(f"{what} returned {r!r}")


def _enosys(*args):
    raise FuseError(errno.ENOSYS)


class Session:
    """Serves one FUSE connection, the /dev/fuse `fd` of a mount, with `ops`.

    run() serves until stop() or the unmount; ops.init(session) runs once
    INIT is answered (session.nursery is open from then on) and
    ops.destroy() once run() ends, for whatever reason. Requests still
    deferred when run() ends are answered ECONNABORTED. The fd stays open:
    closing and unmounting are the caller's.
    """

    def __init__(self, fd, ops, *, max_write=1 << 17, max_pages=256, flags=DEFAULT_FLAGS,
                 max_stack_depth=0, busy_poll_us=50):
        self.fd = fd
        self.ops = ops
        self.max_write = max_write
        self.max_pages = max_pages
        self.want_flags = flags
        self.max_stack_depth = max_stack_depth
        # Keep trying to read this long before sleeping: a request that comes
        # in meanwhile needs no wake-up of this thread, which on a VM can cost
        # more than the whole round trip (measured: 16 µs instead of 49 with
        # client and server on different vCPUs). 0 turns it off.
        self.busy_poll_ns = int(busy_poll_us * 1000)
        # Negotiated at INIT.
        self.proto_minor = None
        self.flags = 0
        self.nursery = None

        # Room for a full WRITE (max_write + 80) plus ioctl and xattr payloads.
        self._buf = bytearray(max(max_write + 80, p.MIN_READ_BUFFER) + 64 * 1024)
        self._mv = memoryview(self._buf)
        self._pending = {}  # unique -> deferred Request
        # For the writer thread: lists of (buffers, unique); unique 0 for notifications.
        self._queue = queue.SimpleQueue()
        # While a handler runs, queued writes collect here and go to the
        # writer in one put (each put can cost a futex wake-up).
        self._batch = None
        self._loop_thread = None
        self._writer = None
        self._writer_busy = False  # between taking an item and finishing it
        self._scope = None
        self._task_status = None
        self._stopping = False
        self._closed = False
        self._dead = False  # the kernel connection is gone (ENODEV)

        def bind(name):
            fn = getattr(ops, name, None)
            return fn if callable(fn) else _enosys

        self._ops_lookup = bind("lookup")
        self._ops_forget = bind("forget")
        self._ops_getattr = bind("getattr")
        self._ops_opendir = bind("opendir")
        self._ops_readdir = bind("readdir")
        self._ops_releasedir = bind("releasedir")
        self._ops_open = bind("open")
        self._ops_read = bind("read")
        self._ops_flush = bind("flush")
        self._ops_release = bind("release")
        self._ops_ioctl = bind("ioctl")
        self._ops_poll = bind("poll")
        self._ops_statfs = bind("statfs")

        table = [None] * 64
        table[p.INIT] = self._op_init
        table[p.LOOKUP] = self._op_lookup
        table[p.FORGET] = self._op_forget
        table[p.BATCH_FORGET] = self._op_batch_forget
        table[p.GETATTR] = self._op_getattr
        table[p.OPENDIR] = self._op_opendir
        table[p.READDIR] = self._op_readdir
        table[p.RELEASEDIR] = self._op_releasedir
        table[p.OPEN] = self._op_open
        table[p.READ] = self._op_read
        table[p.FLUSH] = self._op_flush
        table[p.RELEASE] = self._op_release
        table[p.IOCTL] = self._op_ioctl
        table[p.POLL] = self._op_poll
        table[p.STATFS] = self._op_statfs
        table[p.INTERRUPT] = self._op_interrupt
        table[p.DESTROY] = self._op_destroy
        self._table = table

    # -- public ------------------------------------------------------------

    async def run(self, *, task_status=trio.TASK_STATUS_IGNORED):
        """Serve until stop() or until the mount goes away (ENODEV).

        task_status.started() is called once INIT is answered.
        """
        if self._writer is not None:
            raise RuntimeError("a Session runs once")
        self._task_status = task_status
        self._loop_thread = threading.get_ident()
        os.set_blocking(self.fd, False)
        self._writer = threading.Thread(target=self._writer_main, name="kdbusfs-fuse-writer", daemon=True)
        self._writer.start()
        try:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                try:
                    with trio.CancelScope() as self._scope:
                        if not self._stopping:
                            await self._serve()
                finally:
                    nursery.cancel_scope.cancel()
        finally:
            self._shutdown()

    def stop(self):
        """End run() (from the trio thread). The mount stays; unmount separately."""
        self._stopping = True
        if self._scope is not None:
            self._scope.cancel()

    # -- passthrough (FUSE_PASSTHROUGH, root in the initial user namespace) --

    @property
    def passthrough(self):
        """Whether INIT negotiated passthrough opens."""
        return bool(self.flags & p.PASSTHROUGH)

    def backing_open(self, fd):
        """Register fd as a backing file; returns the id for OpenReply.backing_id.

        Raises OSError (EPERM outside the initial user namespace)."""
        arg = bytearray(p.BACKING_MAP.pack(fd, 0, 0))
        return fcntl.ioctl(self.fd, p.DEV_IOC_BACKING_OPEN, arg)

    def backing_close(self, backing_id):
        arg = bytearray(backing_id.to_bytes(4, "little", signed=True))
        try:
            fcntl.ioctl(self.fd, p.DEV_IOC_BACKING_CLOSE, arg)
        except OSError as e:
            log.debug("backing close %d failed: %s", backing_id, e)

    def notify_poll(self, kh):
        """Wake pollers of the file whose POLL carried kernel handle kh."""
        self._notify(p.NOTIFY_POLL, p.NOTIFY_POLL_WAKEUP_OUT.pack(kh), queued=False)

    def notify_store(self, nodeid, offset, data):
        """Push data into nodeid's page cache at offset (queued, FIFO).

        bytes are sent as they are; other buffers are copied first.
        """
        if data.__class__ is not bytes:
            data = bytes(data)
        body = p.NOTIFY_STORE_OUT.pack(nodeid, offset, len(data), 0)
        self._notify(p.NOTIFY_STORE, body, data)

    def notify_inval_inode(self, nodeid, offset=0, length=0):
        """Drop cached pages (length 0: to the end; offset -1: attributes only)."""
        self._notify(p.NOTIFY_INVAL_INODE, p.NOTIFY_INVAL_INODE_OUT.pack(nodeid, offset, length))

    def notify_inval_entry(self, parent, name):
        body = p.NOTIFY_INVAL_ENTRY_OUT.pack(parent, len(name), 0)
        self._notify(p.NOTIFY_INVAL_ENTRY, body, bytes(name) + b"\0")

    # -- the loop ----------------------------------------------------------

    async def _serve(self):
        fd = self.fd
        buf = self._buf
        bufs = [buf]
        readv = os.readv
        unpack = p.IN_HEADER.unpack_from
        table = self._table
        ntable = len(table)
        send = self._send
        finish = self._finish
        wait_readable = trio.lowlevel.wait_readable
        checkpoint = trio.lowlevel.checkpoint
        clock = time.perf_counter_ns
        queue_empty = self._queue.empty
        put = self._queue.put
        busy_ns = self.busy_poll_ns
        poll_until = 0
        handled = 0
        while not self._stopping:
            try:
                n = readv(fd, bufs)
            except BlockingIOError:
                # Spinning holds the GIL, which the writer thread needs.
                if busy_ns and not self._writer_busy and queue_empty():
                    now = clock()
                    if not poll_until:
                        poll_until = now + busy_ns
                        continue
                    if now < poll_until:
                        continue
                    poll_until = 0
                await wait_readable(fd)
                continue
            except InterruptedError:
                continue
            except OSError as e:
                if e.errno == errno.ENOENT:  # the request was aborted before we got it
                    continue
                if e.errno == errno.ENODEV:  # unmounted or aborted
                    self._dead = True
                    return
                raise
            poll_until = 0
            _, opcode, unique, nodeid, uid, gid, pid, extlen, _ = unpack(buf)
            req = Request(self, opcode, unique, nodeid, uid, gid, pid)
            self._batch = batch = []
            try:
                handler = table[opcode] if opcode < ntable else None
                if handler is None:
                    raise FuseError(errno.ENOSYS)
                result = handler(req, n - extlen * 8)
                if result.__class__ is bytes and req._state == _LIVE:
                    req._state = _ANSWERED
                    send(unique, 0, result)
                else:
                    finish(req, result)
            except FuseError as e:
                req.reply_error(e.errno)
            except Exception:
                log.exception("%s failed (unique %d, nodeid %d)", _opname(opcode), unique, nodeid)
                req.reply_error(errno.EIO)
            finally:
                self._batch = None
                if batch:
                    put(batch)
            handled += 1
            if handled == _YIELD_EVERY:
                handled = 0
                await checkpoint()

    def _finish(self, req, result):
        if result is _NO_REPLY:
            return
        if result is DEFERRED:
            if req._state == _LIVE:
                log.error("%r: handler returned DEFERRED without req.defer()", req)
                req.reply_error(errno.EIO)
            return
        if result.__class__ is Reply:
            req.reply(result.payload, result.after_stores)
        else:
            req.reply(result)

    def _send(self, unique, err, payload=b"", after_stores=False):
        if self._closed:
            log.debug("session closed, dropping reply to unique %d", unique)
            return
        try:
            n = 16 + len(payload)
            header = p.OUT_HEADER.pack(n, -err, unique)
            if after_stores:
                self._enqueue(((header, payload), unique))
            elif n <= _CONCAT_MAX:
                os.write(self.fd, header + payload)
            else:
                os.writev(self.fd, (header, payload))
        except OSError as e:
            self._write_failed(e, unique)
        except Exception:
            # The request is claimed already: it must still get an answer.
            log.exception("bad reply payload for unique %d, answering EIO", unique)
            self._write_failed(None, unique)

    def _write_failed(self, e, unique):
        if e is not None:
            if e.errno in (errno.ENOENT, errno.ENODEV):
                # ENOENT: interrupted or aborted meanwhile; ENODEV: mount gone.
                return
            log.error("reply to unique %d failed: %s", unique, e)
        # A malformed reply can be refused before the kernel finds the
        # request; make sure it still ends.
        try:
            os.write(self.fd, p.OUT_HEADER.pack(16, -errno.EIO, unique))
        except OSError:
            pass

    def _notify(self, code, body, data=b"", queued=True):
        if self._closed:
            log.debug("session closed, dropping notification %d", code)
            return
        header = p.OUT_HEADER.pack(16 + len(body) + len(data), code, 0)
        if queued:
            self._enqueue(((header, body, data), 0))
            return
        try:
            os.write(self.fd, header + body + data)
        except OSError as e:
            log.debug("notification %d failed: %s", code, e)

    def _enqueue(self, item):
        batch = self._batch
        if batch is not None and threading.get_ident() == self._loop_thread:
            batch.append(item)
        else:  # between requests, or from another thread
            self._queue.put([item])

    def _writer_main(self):
        get = self._queue.get
        writev = os.writev
        fd = self.fd
        while True:
            items = get()
            if items is None:
                return
            self._writer_busy = True
            for buffers, unique in items:
                try:
                    writev(fd, buffers)
                except OSError as e:
                    if unique:
                        self._write_failed(e, unique)
                    else:
                        # ENOENT: the inode is not (or no longer) cached.
                        log.debug("queued notification failed: %s", e)
                except Exception:
                    # This thread must outlive any bad item: replies queue behind it.
                    log.exception("queued write for unique %d failed", unique)
                    if unique:
                        self._write_failed(None, unique)
            self._writer_busy = False

    def _shutdown(self):
        # Deferred requests still open would hang their callers: end them
        # as the kernel does when a server dies.
        pending = list(self._pending.values())
        self._pending.clear()
        for req in pending:
            if self._dead:
                req._state = _ANSWERED
            else:
                req.reply_error(errno.ECONNABORTED)
        self._closed = True
        self._queue.put(None)
        self._writer.join(_WRITER_JOIN_TIMEOUT)
        if self._writer.is_alive():
            log.warning("FUSE writer thread still blocked in a store; leaving it behind")
        try:
            self.ops.destroy()
        except Exception:
            log.exception("destroy failed")

    # -- opcodes -----------------------------------------------------------
    # Each takes (req, end of body) and returns a payload, a Reply,
    # DEFERRED or _NO_REPLY; the body starts at offset 40 of self._buf.

    def _op_init(self, req, end):
        major, minor, max_readahead, flags = p.INIT_IN_V7_35.unpack_from(self._buf, 40)
        if major != p.KERNEL_VERSION:
            log.error("kernel speaks FUSE %d.%d; only 7.x is supported", major, minor)
            self.stop()
            raise FuseError(errno.EPROTO)
        flags2 = 0
        if flags & p.INIT_EXT and end - 40 >= p.INIT_IN.size:
            flags2 = p.INIT_IN.unpack_from(self._buf, 40)[4]
        got = self.want_flags & (flags | flags2 << 32)
        self.proto_minor = min(minor, p.KERNEL_MINOR_VERSION)
        self.flags = got
        log.debug("INIT: kernel 7.%d offers %#x, we take %#x", minor, flags | flags2 << 32, got)
        payload = p.INIT_OUT.pack(
            p.KERNEL_VERSION,
            self.proto_minor,
            max_readahead,
            got & 0xFFFFFFFF,
            0,  # max_background: kernel default
            0,  # congestion_threshold: kernel default
            self.max_write,
            1,  # time_gran: nanoseconds
            self.max_pages,
            0,  # map_alignment
            got >> 32,
            self.max_stack_depth if got & p.PASSTHROUGH else 0,
            0,  # request_timeout
        )
        req._state = _ANSWERED
        self._send(req.unique, 0, payload)
        try:
            self.ops.init(self)
        except Exception:
            log.exception("init failed")
        if self._task_status is not None:
            status, self._task_status = self._task_status, None
            status.started()
        return _NO_REPLY

    def _op_lookup(self, req, end):
        name = bytes(self._mv[40 : end - 1])  # NUL-terminated
        e = self._ops_lookup(req, req.nodeid, name)
        if e.__class__ is not Entry:
            return _passthrough(e, "lookup")
        es, ens = _valid(e.entry_valid)
        as_, ans = _valid(e.attr_valid)
        return p.ENTRY_OUT.pack(e.nodeid, e.generation, es, as_, ens, ans, *_attr_fields(e.attr))

    def _op_forget(self, req, end):
        req._state = _ANSWERED
        (nlookup,) = p.FORGET_IN.unpack_from(self._buf, 40)
        self._forget([(req.nodeid, nlookup)])
        return _NO_REPLY

    def _op_batch_forget(self, req, end):
        req._state = _ANSWERED
        (count, _) = p.BATCH_FORGET_IN.unpack_from(self._buf, 40)
        items = list(p.FORGET_ONE.iter_unpack(self._mv[48 : 48 + 16 * count]))
        self._forget(items)
        return _NO_REPLY

    def _forget(self, items):
        try:
            self._ops_forget(items)
        except Exception:
            log.exception("forget failed")

    def _op_getattr(self, req, end):
        flags, _, fh = p.GETATTR_IN.unpack_from(self._buf, 40)
        r = self._ops_getattr(req, req.nodeid, fh if flags & p.GETATTR_FH else None)
        if r.__class__ is AttrReply:
            attr = r.attr
            s, ns = _valid(r.valid)
        elif r.__class__ is Attr:
            attr, s, ns = r, 0, 0
        else:
            return _passthrough(r, "getattr")
        return p.ATTR_OUT.pack(s, ns, 0, *_attr_fields(attr))

    def _pack_open(self, r, what):
        if r.__class__ is not OpenReply:
            return _passthrough(r, what)
        flags = r.flags
        if r.keep_cache:
            flags |= p.FOPEN_KEEP_CACHE
        if r.direct_io:
            flags |= p.FOPEN_DIRECT_IO
        if r.nonseekable:
            flags |= p.FOPEN_NONSEEKABLE
        backing_id = 0
        if r.backing_id is not None:
            flags |= p.FOPEN_PASSTHROUGH
            backing_id = r.backing_id
        return p.OPEN_OUT.pack(r.fh, flags, backing_id)

    def _op_open(self, req, end):
        flags, _ = p.OPEN_IN.unpack_from(self._buf, 40)
        return self._pack_open(self._ops_open(req, req.nodeid, flags), "open")

    def _op_opendir(self, req, end):
        flags, _ = p.OPEN_IN.unpack_from(self._buf, 40)
        return self._pack_open(self._ops_opendir(req, req.nodeid, flags), "opendir")

    def _op_read(self, req, end):
        fh, offset, size, _, _, _, _ = p.READ_IN.unpack_from(self._buf, 40)
        data = self._ops_read(req, req.nodeid, fh, offset, size)
        if data is DEFERRED or data.__class__ is Reply:
            return data
        if len(data) > size:
            data = memoryview(data)[:size]
        return data

    def _op_readdir(self, req, end):
        fh, offset, size, _, _, _, _ = p.READ_IN.unpack_from(self._buf, 40)
        entries = self._ops_readdir(req, req.nodeid, fh, offset)
        if entries is DEFERRED or entries.__class__ is Reply:
            return entries
        out = bytearray(size)
        pos = 0
        pack_into = p.DIRENT.pack_into
        for d in entries:
            name = d.name
            namelen = len(name)
            step = (24 + namelen + 7) & ~7
            if pos + step > size:
                break
            pack_into(out, pos, d.ino, d.offset, namelen, d.type)
            out[pos + 24 : pos + 24 + namelen] = name
            pos += step
        return bytes(out[:pos])

    def _op_releasedir(self, req, end):
        fh, flags, _, _ = p.RELEASE_IN.unpack_from(self._buf, 40)
        r = self._ops_releasedir(req, req.nodeid, fh)
        return b"" if r is None else _passthrough(r, "releasedir")

    def _op_release(self, req, end):
        fh, flags, _, _ = p.RELEASE_IN.unpack_from(self._buf, 40)
        r = self._ops_release(req, req.nodeid, fh, flags)
        return b"" if r is None else _passthrough(r, "release")

    def _op_flush(self, req, end):
        fh, _, _, _ = p.FLUSH_IN.unpack_from(self._buf, 40)
        r = self._ops_flush(req, req.nodeid, fh)
        return b"" if r is None else _passthrough(r, "flush")

    def _op_ioctl(self, req, end):
        fh, flags, cmd, arg, in_size, out_size = p.IOCTL_IN.unpack_from(self._buf, 40)
        in_data = bytes(self._mv[72 : 72 + in_size]) if in_size else b""
        r = self._ops_ioctl(req, req.nodeid, fh, cmd, arg, in_data, out_size, flags)
        if r.__class__ is not IoctlReply:
            return _passthrough(r, "ioctl")
        data = r.data
        if len(data) > out_size:
            # The kernel would fail it with EIO anyway; say why.
            raise ValueError(f"ioctl {cmd:#x}: {len(data)} bytes of reply data, room for {out_size}")
        payload = p.IOCTL_OUT.pack(r.result, 0, 0, 0) + data
        return Reply(payload, True) if r.after_stores else payload

    def _op_poll(self, req, end):
        fh, kh, flags, events = p.POLL_IN.unpack_from(self._buf, 40)
        r = self._ops_poll(req, req.nodeid, fh, kh if flags & p.POLL_SCHEDULE_NOTIFY else None, events)
        if r.__class__ is not int:
            return _passthrough(r, "poll")
        return p.POLL_OUT.pack(r, 0)

    def _op_statfs(self, req, end):
        r = self._ops_statfs(req)
        if r.__class__ is not StatFs:
            return _passthrough(r, "statfs")
        return p.KSTATFS.pack(r.blocks, r.bfree, r.bavail, r.files, r.ffree, r.bsize, r.namelen, r.frsize, 0)

    def _op_interrupt(self, req, end):
        req._state = _ANSWERED  # an INTERRUPT itself is never answered
        (target,) = p.INTERRUPT_IN.unpack_from(self._buf, 40)
        t = self._pending.get(target)
        if t is None:  # answered already
            return _NO_REPLY
        if t._on_interrupt is not None:
            try:
                t._on_interrupt(t)
            except Exception:
                log.exception("on_interrupt of %r failed", t)
                t.reply_error(errno.EINTR)
        else:
            t.reply_error(errno.EINTR)
        return _NO_REPLY

    def _op_destroy(self, req, end):
        return b""
