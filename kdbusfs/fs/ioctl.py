"""kdbus ioctl dispatch: from a FUSE_IOCTL request to an engine command.

FUSE only hands us _IOC_SIZE bytes of a restricted ioctl, and kdbus
commands are variable-length with pointers inside, so commands are read
from (and results written to) the caller's memory with process_vm_readv /
writev, using the thread id of the request (ABI §1.2 steps 1 and 3).
Results of _IOR/_IOWR commands travel back in the ioctl reply itself,
which saves a syscall; _IOW commands are written back explicitly.
"""

from __future__ import annotations

import errno
import select
import struct

from ..abi import constants as K
from ..abi.commands import (COMMANDS, MSG_FLAGS, check_mandatory, check_msg_size,
                            parse_command, parse_msg)
from ..abi.errors import KdbusError
from ..abi.limits import KDBUS_CMD_MAX_SIZE
from ..abi.names import parse_string
from ..core import metadata as md
from ..core import send as sendmod
from ..core.connection import ORDINARY, POLICY_HOLDER
from ..core.message import Outgoing
from ..fuse import caller
from ..fuse.ops import DEFERRED, FuseError, IoctlReply
from . import fdpass, procinfo
from .handle import BUS_OWNER, CONNECTION, ENDPOINT_OWNER, FRESH

_U64 = struct.Struct("<Q")
PAGE = 4096
HEAD_READ = 512
_SETUP = (K.KDBUS_CMD_BUS_MAKE, K.KDBUS_CMD_ENDPOINT_MAKE, K.KDBUS_CMD_HELLO)
_IOC_READ = 2


class Call:
    """One ioctl in flight: where the command lives and what to write back."""
    __slots__ = ("fs", "req", "handle", "arg", "tid", "number", "spec", "buf", "writes",
                 "reply_in_data", "after_stores", "past_copy")

    def __init__(self, fs, req, handle, number, arg, out_size):
        self.fs = fs
        self.req = req
        self.handle = handle
        self.arg = arg
        self.tid = req.pid
        self.number = number
        self.spec = COMMANDS[number]
        self.buf = b""
        self.writes: dict[int, bytes] = {}
        # _IOR/_IOWR: the kernel copies our reply data to the argument.
        self.reply_in_data = bool(number >> 30 & _IOC_READ) and out_size >= self.spec.size
        self.after_stores = False
        self.past_copy = False      # step 3 done: return_flags go back on every exit

    # -- caller memory ---------------------------------------------------
    def read(self, addr: int, size: int) -> bytes:
        try:
            return caller.read_memory(self.tid, addr, size)
        except OSError as e:
            raise KdbusError(errno.EPERM if e.errno == errno.EPERM else errno.EFAULT,
                             "cannot read caller memory") from None

    def read_head(self, addr: int) -> bytes:
        """The start of a command or message: as much as fits before the end
        of its page (at most HEAD_READ), so that one read usually brings the
        whole thing and never faults where an 8-byte read would not."""
        return self.read(addr, min(HEAD_READ, PAGE - addr % PAGE))

    def write_now(self, addr: int, data: bytes) -> None:
        try:
            caller.write_memory(self.tid, addr, data)
        except OSError as e:
            raise KdbusError(errno.EPERM if e.errno == errno.EPERM else errno.EFAULT,
                             "cannot write caller memory") from None

    def put(self, offset: int, data: bytes) -> None:
        """Write `data` at `offset` of the command when the call ends."""
        self.writes[offset] = data

    def put_u64(self, offset: int, value: int) -> None:
        self.writes[offset] = _U64.pack(value & 0xFFFFFFFFFFFFFFFF)

    # -- steps 1 to 3 -------------------------------------------------------
    def fetch(self, in_data: bytes) -> None:
        if self.arg % 8 or self.arg == 0:
            raise KdbusError(errno.EFAULT, "argument not 8-byte aligned")
        head = in_data if len(in_data) >= 8 else self.read_head(self.arg)
        size = _U64.unpack_from(head)[0]
        if size < self.spec.size:
            raise KdbusError(errno.EINVAL, "command smaller than its struct")
        if size > KDBUS_CMD_MAX_SIZE:
            raise KdbusError(errno.EMSGSIZE, "command too large")
        if size <= len(head):
            self.buf = bytes(head[:size])
        else:
            self.buf = self.read(self.arg, size)
            if _U64.unpack_from(self.buf)[0] != size:
                raise KdbusError(errno.EINVAL, "size changed under us")
        self.past_copy = True

    # -- the answer -------------------------------------------------------------
    def finish(self, return_flags: int = 0) -> IoctlReply:
        self.put_u64(16, return_flags)
        data = self._flush()
        # pushed pools: the reply must reach the kernel after the page pushes
        # queued before it; a passthrough pool is our memory, already there
        ordered = self.after_stores and self.handle.backing is None
        return IoctlReply(0, data, after_stores=ordered)

    def _flush(self) -> bytes:
        """Apply the writes: inside the fixed struct through the reply data
        when the command direction allows it, else into the caller's memory."""
        writes, self.writes = self.writes, {}
        if self.reply_in_data:
            fixed = self.spec.size
            out = bytearray(self.buf[:fixed])
            for off, data in writes.items():
                if off + len(data) <= fixed:
                    out[off:off + len(data)] = data
                else:
                    self.write_now(self.arg + off, data)
            return bytes(out)
        for off, data in sorted(writes.items()):
            # skip writes that would not change anything
            if self.buf[off:off + len(data)] != data:
                self.write_now(self.arg + off, data)
        return b""

    def fail_writeback(self, return_flags: int = 0) -> None:
        """On an error exit after step 3, return_flags (and anything the
        command wants written even on errors) still go back to the caller."""
        if not self.past_copy:
            return
        self.reply_in_data = False
        self.put_u64(16, return_flags)
        try:
            self._flush()
        except KdbusError:
            pass


def _state_check(handle, number: int) -> None:
    setup = number in _SETUP
    if number == K.KDBUS_CMD_BUS_MAKE and handle.file != "control":
        raise KdbusError(errno.EBADFD, "BUS_MAKE needs a control fd")
    if number in (K.KDBUS_CMD_HELLO, K.KDBUS_CMD_ENDPOINT_MAKE) and handle.file == "control":
        raise KdbusError(errno.EBADFD, "not an endpoint fd")
    st = handle.state
    if setup:
        if st != FRESH:
            raise KdbusError(errno.EBADFD, "fd already set up")
    elif st in (FRESH, BUS_OWNER):
        raise KdbusError(errno.EBADFD, "fd is not a connection")
    elif st == ENDPOINT_OWNER and number != K.KDBUS_CMD_ENDPOINT_UPDATE:
        raise KdbusError(errno.EBADFD, "endpoint-owner fd")
    elif st == CONNECTION and number == K.KDBUS_CMD_ENDPOINT_UPDATE:
        raise KdbusError(errno.EBADFD, "connection fd")
    if st == CONNECTION:
        if not handle.conn.alive:
            raise KdbusError(errno.ECONNRESET, "connection is gone")
    elif handle.file == "endpoint":
        ep = handle.owned_endpoint if st == ENDPOINT_OWNER else handle.endpoint
        if not ep.alive or not ep.bus.alive:
            raise KdbusError(errno.ESHUTDOWN, "endpoint is gone")


def dispatch(fs, req, handle, number: int, arg: int, in_data: bytes, out_size: int):
    if number not in COMMANDS:
        if number == K.KDBUSFS_CMD_FD_CHANNEL:
            return fdpass.fd_channel_ioctl(fs, req, handle, arg)
        raise FuseError(errno.ENOTTY)
    call = Call(fs, req, handle, number, arg, out_size)
    try:
        _state_check(handle, number)
        pre = _PRECHECKS.get(number)
        if pre is not None:
            pre(call)
        call.fetch(in_data)
        cmd = parse_command(number, call.buf)
        for off, data in cmd.negotiate_patches:
            call.write_now(arg + off, data)
        if cmd.negotiating and number != K.KDBUS_CMD_SEND:
            call.put_u64(8, cmd.supported_flags)
            call.writes.pop(16, None)
            return IoctlReply(0, call._flush())
        check_mandatory(cmd)
        return _HANDLERS[number](call, cmd)
    except KdbusError as e:
        call.fail_writeback(getattr(e, "return_flags", 0))
        raise FuseError(e.errno) from None


# -- prechecks that come before parsing (ABI §6.3, §6.6, §6.10, §6.12) -------
def _pre_endpoint_make(call):
    h = call.handle
    if not h.endpoint.default or not h.endpoint.is_owner(h.who):
        raise KdbusError(errno.EPERM, "only the bus owner makes endpoints")


def _pre_ordinary(call):
    if call.handle.conn.kind != ORDINARY:
        raise KdbusError(errno.EOPNOTSUPP, "only ordinary connections")


def _pre_recv(call):
    if call.handle.conn.kind == POLICY_HOLDER:
        raise KdbusError(errno.EOPNOTSUPP, "policy holders receive nothing")


_PRECHECKS = {
    K.KDBUS_CMD_ENDPOINT_MAKE: _pre_endpoint_make,
    K.KDBUS_CMD_BYEBYE: _pre_ordinary,
    K.KDBUS_CMD_SEND: _pre_ordinary,
    K.KDBUS_CMD_RECV: _pre_recv,
}


# -- item helpers ----------------------------------------------------------------
def _string(cmd, type_):
    it = cmd.item(type_)
    return parse_string(it.payload) if it is not None else None


def _u64(cmd, type_):
    it = cmd.item(type_)
    return _U64.unpack_from(it.payload)[0] if it is not None else None


def _policy_pairs(cmd, who=None):
    pairs = []
    for it in cmd.items:
        if it.type == K.KDBUS_ITEM_NAME:
            pairs.append(("name", parse_string(it.payload)))
        elif it.type == K.KDBUS_ITEM_POLICY_ACCESS:
            # ids are in the uploader's user namespace (ABI §6.1)
            pairs.append(("access",) + md.policy_access_to_domain(
                *struct.unpack_from("<QQQ", it.payload), getattr(who, "userns", None)))
    return pairs


# -- the commands -------------------------------------------------------------------
def _bus_make(call, cmd):
    h = call.handle
    size, n_hash = struct.unpack_from("<QQ", cmd.item(K.KDBUS_ITEM_BLOOM_PARAMETER).payload)
    meta = procinfo.metadata(call.tid, md.PROCESS)
    bus = call.fs.domain.bus_make(h.who, flags=cmd.flags, name=_string(cmd, K.KDBUS_ITEM_MAKE_NAME),
                                  bloom_size=size, n_hash=n_hash,
                                  attach_send=_u64(cmd, K.KDBUS_ITEM_ATTACH_FLAGS_SEND) or 0,
                                  meta=meta)
    h.state, h.bus = BUS_OWNER, bus
    call.fs.tree.bus_dir(bus)
    return call.finish()


def _endpoint_make(call, cmd):
    h = call.handle
    ep = call.fs.domain.endpoint_make(h.endpoint.bus, h.who, flags=cmd.flags,
                                      name=_string(cmd, K.KDBUS_ITEM_MAKE_NAME))
    h.state, h.owned_endpoint = ENDPOINT_OWNER, ep
    return call.finish()


def _endpoint_update(call, cmd):
    call.fs.domain.endpoint_update(call.handle.owned_endpoint, _policy_pairs(cmd, call.handle.who))
    return call.finish()


def _hello(call, cmd):
    h = call.handle
    f = cmd.fields
    faked = {}
    for it in cmd.items:
        if it.type == K.KDBUS_ITEM_CREDS:
            faked["creds"] = struct.unpack_from("<8Q", it.payload)
        elif it.type == K.KDBUS_ITEM_PIDS:
            faked["pids"] = struct.unpack_from("<3Q", it.payload)
        elif it.type == K.KDBUS_ITEM_SECLABEL:
            faked["seclabel"] = parse_string(it.payload)
    if faked:
        meta = md.Metadata(faked=True, **faked)
    else:
        meta = procinfo.metadata(call.tid, md.PROCESS)
    name = _string(cmd, K.KDBUS_ITEM_NAME)
    policy = [p for p in _policy_pairs(cmd, h.who) if p[0] == "access"]
    domain = call.fs.domain
    conn = domain.hello(h.endpoint, h.who, flags=cmd.flags, pool_size=f["pool_size"],
                        attach_send=f["attach_flags_send"], attach_recv=f["attach_flags_recv"],
                        name=name, policy=policy,
                        description=_string(cmd, K.KDBUS_ITEM_CONN_DESCRIPTION),
                        faked=bool(faked), meta=meta,
                        store_factory=call.fs.pool_store_for(h))
    h.state, h.conn = CONNECTION, conn
    call.fs.connection_ready(h)
    bus = conn.bus
    off, size = conn.hello_slice
    call.put_u64(40, bus.flags)
    call.put_u64(48, conn.id)
    call.put_u64(64, off)
    call.put_u64(72, size)
    call.put(80, bus.id128)
    call.after_stores = True
    return call.finish()


def _update(call, cmd):
    names = [it for it in cmd.items if it.type in (K.KDBUS_ITEM_NAME, K.KDBUS_ITEM_POLICY_ACCESS)]
    call.fs.domain.update(call.handle.conn,
                          attach_send=_u64(cmd, K.KDBUS_ITEM_ATTACH_FLAGS_SEND),
                          attach_recv=_u64(cmd, K.KDBUS_ITEM_ATTACH_FLAGS_RECV),
                          policy=_policy_pairs(cmd, call.handle.who) if names else None)
    return call.finish()


def _byebye(call, cmd):
    call.fs.domain.byebye(call.handle.conn)
    return call.finish()


def _free(call, cmd):
    call.fs.domain.free(call.handle.conn, cmd.fields["offset"])
    return call.finish()


def _conn_info(call, cmd):
    off, size = call.fs.domain.conn_info(call.handle.conn, id=cmd.fields["id"],
                                         name=_string(cmd, K.KDBUS_ITEM_NAME),
                                         attach_flags=cmd.fields["attach_flags"])
    call.put_u64(40, off)
    call.put_u64(48, size)
    call.after_stores = True
    return call.finish()


def _bus_creator_info(call, cmd):
    off, size = call.fs.domain.bus_creator_info(call.handle.conn,
                                                attach_flags=cmd.fields["attach_flags"])
    call.put_u64(40, off)
    call.put_u64(48, size)
    call.after_stores = True
    return call.finish()


def _list(call, cmd):
    off, size = call.fs.domain.list(call.handle.conn, flags=cmd.flags)
    call.put_u64(24, off)
    call.put_u64(32, size)
    call.after_stores = True
    return call.finish()


def _recv(call, cmd):
    prio = cmd.fields["priority"]
    if prio >= 1 << 63:
        prio -= 1 << 64
    flags = cmd.flags & ~K.KDBUSFS_RECV_BLOCK
    reply = recv_attempt(call, flags, prio, may_block=bool(cmd.flags & K.KDBUSFS_RECV_BLOCK))
    if reply is None:
        call.fs.park_recv(call, flags, prio)
        return DEFERRED
    return reply


def recv_attempt(call, flags: int, prio: int, *, may_block: bool):
    """One RECV: the reply, or None when it should wait (KDBUSFS_RECV_BLOCK)
    because there is nothing to report yet."""
    conn = call.handle.conn
    if not conn.alive:
        raise KdbusError(errno.ECONNRESET, "connection is gone")
    res = call.fs.domain.recv(conn, flags=flags, priority=prio)
    if res.error == errno.EAGAIN and may_block and not res.dropped:
        return None
    call.put_u64(32, res.dropped)
    call.put(40, struct.pack("<QQQ", res.offset, res.size, res.msg_return_flags))
    if res.error:
        call.fail_writeback(res.return_flags)
        raise FuseError(res.error)
    call.after_stores = True
    return call.finish(res.return_flags)


def _name_acquire(call, cmd):
    flags = call.fs.domain.name_acquire(call.handle.conn, _string(cmd, K.KDBUS_ITEM_NAME),
                                        cmd.flags)
    return call.finish(flags)


def _name_release(call, cmd):
    it = cmd.item(K.KDBUS_ITEM_NAME)
    call.fs.domain.name_release(call.handle.conn, parse_string(it.payload))
    return call.finish()


def _match_add(call, cmd):
    items = [it for it in cmd.items if it.type != K.KDBUS_ITEM_NEGOTIATE] + \
        [it for it in cmd.items if it.type == K.KDBUS_ITEM_NEGOTIATE]
    call.fs.domain.match_add(call.handle.conn, cookie=cmd.fields["cookie"], items=items,
                             replace=bool(cmd.flags & K.KDBUS_MATCH_REPLACE))
    return call.finish()


def _match_remove(call, cmd):
    call.fs.domain.match_remove(call.handle.conn, cookie=cmd.fields["cookie"])
    return call.finish()


# -- SEND ---------------------------------------------------------------------------
def _read_msg(call, addr: int, *, negotiating: bool):
    if addr % 8 or addr == 0:
        raise KdbusError(errno.EFAULT, "msg not 8-byte aligned")
    head = call.read_head(addr)
    size = _U64.unpack_from(head)[0]
    check_msg_size(size)
    buf = head if size <= len(head) else call.read(addr, size)
    return parse_msg(buf, size, allow_negotiate_item=negotiating)


def _send(call, cmd):
    conn = call.handle.conn
    addr = cmd.fields["msg_address"]
    if cmd.negotiating:
        call.put_u64(8, cmd.supported_flags)
        call.writes.pop(16, None)
        if addr:
            msg = _read_msg(call, addr, negotiating=True)
            if msg.negotiating:
                call.write_now(addr + 8, _U64.pack(MSG_FLAGS))
        return IoctlReply(0, call._flush())
    msg = _read_msg(call, addr, negotiating=False)
    if msg.negotiating:
        raise KdbusError(errno.EINVAL, "msg NEGOTIATE without cmd NEGOTIATE")
    sync = bool(cmd.flags & K.KDBUS_SEND_SYNC_REPLY)
    cancel_fd = None
    cit = cmd.item(K.KDBUS_ITEM_CANCEL_FD)
    if cit is not None:
        fdnum = struct.unpack_from("<i", cit.payload)[0]
        try:
            cancel_fd = caller.take_fd(call.tid, fdnum)
        except OSError:
            raise KdbusError(errno.EBADF, "bad cancel fd") from None
        if fdpass.on_fuse(cancel_fd, call.tid):
            # polling (or even closing) a FUSE file asks its server, maybe
            # this very one: refuse it, and close it off the request loop
            fdpass.close_fd(cancel_fd, fuse=True)
            raise KdbusError(errno.EINVAL, "cancel fd on a FUSE mount")
        if not _pollable(cancel_fd):
            call.fs.close_fd(cancel_fd)
            raise KdbusError(errno.EINVAL, "cancel fd cannot be polled")
        if not sync:
            call.fs.close_fd(cancel_fd)
            cancel_fd = None
    try:
        plan = sendmod.check(conn, sync=sync, flags=msg.flags, dst_id=msg.dst_id,
                             src_id=msg.src_id, payload_type=msg.payload_type,
                             timeout_or_reply=msg.timeout_ns, items=msg.items)
        # one receiver and no monitor: a large vec is copied straight from the
        # sender into that receiver's pool; otherwise it is read once here
        single = (msg.dst_id != K.KDBUS_DST_ID_BROADCAST and not msg.flags & K.KDBUS_MSG_SIGNAL
                  and not conn.bus.monitors)
        vec_data = {i: _vec(call, a, n, single) for i, n, a in plan.vecs}
        fds = call.fs.import_fds(call.tid, plan.fds, conn.user_key)
        try:
            memfds = call.fs.import_memfds(call.tid, plan.memfds, conn.user_key)
        except BaseException:
            call.fs.release_fds(fds)
            raise
        parts = [(it.type, it.payload, vec_data.get(i)) for i, it in enumerate(msg.items)]
        out = Outgoing(flags=msg.flags, priority=msg.priority, dst_id=msg.dst_id,
                       src_id=msg.src_id, payload_type=msg.payload_type, cookie=msg.cookie,
                       timeout_or_reply=msg.timeout_ns, parts=parts, fds=fds, memfds=memfds,
                       bloom_generation=plan.bloom_generation, bloom=plan.bloom,
                       dst_name=plan.dst_name)
        tid = call.tid
        waiter = PendingSend(call, cancel_fd) if sync else None
        try:
            res = call.fs.domain.send(conn, out, sync=sync, waiter=waiter,
                                      collect=lambda mask: procinfo.metadata(tid, mask))
        finally:
            # the SEND's own references; queue entries hold theirs (core/fdref.py)
            call.fs.release_fds(fds + memfds)
    except BaseException:
        if cancel_fd is not None:
            call.fs.close_fd(cancel_fd)
        raise
    if res is sendmod.BLOCKED:
        call.fs.wait_for_reply(waiter)
        return DEFERRED
    if waiter is not None and cancel_fd is not None:
        call.fs.close_fd(cancel_fd)
    call.put(32, struct.pack("<QQQ", *res))
    call.after_stores = True
    return call.finish()


LAZY_VEC_MIN = 64 * 1024


def _pollable(fd: int) -> bool:
    """Whether epoll takes fd (regular files and directories it refuses)."""
    ep = select.epoll()
    try:
        ep.register(fd, select.EPOLLIN)
        return True
    except OSError:
        return False
    finally:
        ep.close()


def _vec(call, addr: int, size: int, single: bool):
    if not addr:
        return None
    if size < LAZY_VEC_MIN:
        return call.read(addr, size)
    if single:
        return CallerVec(call.tid, addr, size)
    buf = bytearray(size)
    CallerVec(call.tid, addr, size).copy_into(buf)
    return buf


class CallerVec:
    """A payload vector still in the sender's memory (the sender is blocked
    in its SEND): the pool copies it in place with one process_vm_readv."""
    __slots__ = ("tid", "addr", "size")

    def __init__(self, tid: int, addr: int, size: int):
        self.tid = tid
        self.addr = addr
        self.size = size

    def __len__(self) -> int:
        return self.size

    def copy_into(self, view) -> None:
        try:
            caller.read_into(self.tid, self.addr, view)
        except OSError as e:
            raise KdbusError(errno.EPERM if e.errno == errno.EPERM else errno.EFAULT,
                             "cannot read the payload") from None


class PendingSend:
    """A SYNC_REPLY SEND blocked until its reply (the engine's waiter token)."""
    __slots__ = ("call", "cancel_fd", "cancel_scope")

    def __init__(self, call, cancel_fd):
        self.call = call
        self.cancel_fd = cancel_fd
        self.cancel_scope = None

    def complete(self, error: int, info) -> None:
        call = self.call
        try:
            if error:
                call.fail_writeback()
                call.req.reply_error(error)
                return
            call.put(32, struct.pack("<QQQ", *info))
            call.after_stores = True
            r = call.finish()
            call.req.reply_ioctl(0, r.data, after_stores=r.after_stores)
        except KdbusError as e:
            call.req.reply_error(e.errno)


_HANDLERS = {
    K.KDBUS_CMD_BUS_MAKE: _bus_make,
    K.KDBUS_CMD_ENDPOINT_MAKE: _endpoint_make,
    K.KDBUS_CMD_ENDPOINT_UPDATE: _endpoint_update,
    K.KDBUS_CMD_HELLO: _hello,
    K.KDBUS_CMD_UPDATE: _update,
    K.KDBUS_CMD_BYEBYE: _byebye,
    K.KDBUS_CMD_FREE: _free,
    K.KDBUS_CMD_CONN_INFO: _conn_info,
    K.KDBUS_CMD_BUS_CREATOR_INFO: _bus_creator_info,
    K.KDBUS_CMD_LIST: _list,
    K.KDBUS_CMD_SEND: _send,
    K.KDBUS_CMD_RECV: _recv,
    K.KDBUS_CMD_NAME_ACQUIRE: _name_acquire,
    K.KDBUS_CMD_NAME_RELEASE: _name_release,
    K.KDBUS_CMD_MATCH_ADD: _match_add,
    K.KDBUS_CMD_MATCH_REMOVE: _match_remove,
}
