"""fds and memfds between real processes of different uids: the fd channel
(KDBUSFS_CMD_FD_CHANNEL), what may be passed, the limits, who holds the
server's copies and for how long."""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import struct
import time

import pytest

from kdbusfs.abi import constants as K
from kdbusfs.abi.items import encode_item
from kdbusfs.client import Connection, make_bus
from kdbusfs.client import fds as fdchan
from tests.integration.rawabi import Conn, cmd, ioctl

SEALS = fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE


def sealed_memfd(data: bytes) -> int:
    fd = os.memfd_create("payload", os.MFD_ALLOW_SEALING)
    os.write(fd, data)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, SEALS)
    return fd


def server_fds(mount) -> int:
    return len(os.listdir(f"/proc/{mount.proc.pid}/fd"))


def settle(fn, want, timeout=5.0):
    end = time.monotonic() + timeout
    while (got := fn()) != want and time.monotonic() < end:
        time.sleep(0.02)
    return got


@pytest.fixture
def bus(mount):
    b = make_bus(mount.path, "fds", access="world")
    yield b
    b.close()


def test_a_pipe_reaches_a_receiver_of_another_uid(bus, agent):
    """uid 1001 sends the read end of a pipe; uid 1000 reads through it."""
    holder = Connection.open(bus.path, policy_holder="org.example.Rx", policy=[
        (K.KDBUS_POLICY_ACCESS_USER, K.KDBUS_POLICY_OWN, 1000),
        (K.KDBUS_POLICY_ACCESS_WORLD, K.KDBUS_POLICY_TALK, 0)])
    rx = agent(uid=1000)
    rid = rx.run("from kdbusfs.client import Connection\n"
                 "c = Connection.open(path, accept_fd=True)\n"
                 "c.acquire_name('org.example.Rx'); _ = c.id", path=bus.path)
    tx = agent(uid=1001)
    tx.run("from kdbusfs.client import Connection\n"
           "c = Connection.open(path)\n"
           "r, w = os.pipe()\n"
           "c.send(rid, b'here', fds=[r]); os.close(r)\n"
           "os.write(w, b'through the bus'); os.close(w)", path=bus.path, rid=rid)
    got = rx.run("m = c.recv_wait(5)\n"
                 "fd = m.fds[0]\n"
                 "_ = [m.payload.decode(), m.return_flags, fd >= 0, os.read(fd, 100).decode(),\n"
                 "     os.readlink(f'/proc/self/fd/{fd}').startswith('pipe:')]\n"
                 "os.close(fd)")
    assert got == ["here", 0, True, "through the bus", True]
    holder.close()


def test_sealed_memfd_arrives_as_the_same_sealed_file(connect_pair):
    rx, tx = connect_pair
    fd = sealed_memfd(b"0123456789" * 10)
    try:
        tx.send(rx.id, b"head", memfds=[(fd, 5, 20)])
        m = rx.recv_wait(5)
        got = m.memfds[0]
        assert (got.start, got.size) == (5, 20) and got.fd >= 0
        assert fcntl.fcntl(got.fd, fcntl.F_GET_SEALS) & SEALS == SEALS
        assert os.pread(got.fd, 20, 5) == (b"0123456789" * 3)[5:25]
        # the very file the sender had (kdbus installs the same struct file)
        assert os.fstat(got.fd).st_ino == os.fstat(fd).st_ino
        os.close(got.fd)
    finally:
        os.close(fd)


@pytest.fixture
def connect_pair(bus):
    rx = Connection.open(bus.path, accept_fd=True)
    tx = Connection.open(bus.path)
    yield rx, tx
    rx.close()
    tx.close()


def test_memfd_checks(connect_pair, tmp_path):
    rx, tx = connect_pair

    def err(memfd):
        with pytest.raises(OSError) as e:
            tx.send(rx.id, b"x", memfds=[memfd])
        return e.value.errno
    unsealed = os.memfd_create("u", os.MFD_ALLOW_SEALING)
    os.write(unsealed, b"abc")
    fcntl.fcntl(unsealed, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)       # not all four
    regular = os.open(tmp_path / "f", os.O_RDWR | os.O_CREAT)
    os.write(regular, b"abc")
    sealed = sealed_memfd(b"abc")
    try:
        assert err((unsealed, 0, 3)) == errno.ETXTBSY
        assert err((regular, 0, 3)) == errno.EMEDIUMTYPE
        assert err((sealed, 1, 3)) == errno.EFAULT                    # beyond the end
        assert err((999, 0, 3)) == errno.EBADF
        # a file of this very mount: closing it must not ask this server for a
        # FLUSH while it is busy with the SEND (a self-deadlock, unkillable)
        assert err((rx.fileno(), 0, 3)) == errno.EMEDIUMTYPE
        with pytest.raises(OSError) as e:
            tx.send(rx.id, b"x", memfds=[(sealed, 0, 3)] * 17)
        assert e.value.errno == errno.E2BIG
        assert rx.recv() is None                                     # nothing got through
    finally:
        for fd in (unsealed, regular, sealed):
            os.close(fd)


def test_fd_rules(connect_pair, bus, mount_base):
    rx, tx = connect_pair
    plain = Connection.open(bus.path)          # no ACCEPT_FD
    r, w = os.pipe()
    unix_a, unix_b = socket.socketpair()
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    opath = os.open("/", os.O_PATH)
    try:
        def err(dst, fds):
            with pytest.raises(OSError) as e:
                tx.send(dst, b"x", fds=fds)
            return e.value.errno
        assert err(plain.id, [r]) == errno.ECOMM
        assert err(rx.id, [r] * 17) == errno.EMFILE
        assert err(rx.id, [unix_a.fileno()]) == errno.EOPNOTSUPP
        # a kdbus fd: the server must refuse it without asking itself about it
        assert err(rx.id, [plain.fileno()]) == errno.EOPNOTSUPP
        assert err(rx.id, [bus.fileno()]) == errno.EOPNOTSUPP
        # ... and an fd of another kdbusfs mount too
        from tests.integration.conftest import start_mount
        other = start_mount(os.path.join(mount_base, "other"))
        try:
            ctl = os.open(other.control, os.O_RDWR)
            assert err(rx.id, [ctl]) == errno.EOPNOTSUPP
            os.close(ctl)
        finally:
            other.stop()
        # memfds need no ACCEPT_FD; other sockets and O_PATH fds are fine
        m = sealed_memfd(b"abc")
        tx.send(plain.id, b"m", memfds=[m])
        os.close(m)
        tx.send(rx.id, b"ok", fds=[tcp.fileno(), opath])
        got = rx.recv_wait(5)
        assert got.payload == b"ok" and len(got.fds) == 2 and min(got.fds) >= 0
        assert os.readlink(f"/proc/self/fd/{got.fds[0]}").startswith("socket:")
        for fd in got.fds:
            os.close(fd)
        pm = plain.recv_wait(5)
        assert pm.memfds[0].fd >= 0
        os.close(pm.memfds[0].fd)
        # fds in flight per receiver per sending user: 16
        tx.send(rx.id, b"9", fds=[r] * 9)
        assert err(rx.id, [r] * 8) == errno.EMFILE
    finally:
        plain.close()
        for fd in (r, w, opath):
            os.close(fd)
        for s in (unix_a, unix_b, tcp):
            s.close()


def test_without_a_channel_fds_are_missing(bus):
    """A raw client that registers no channel sees the ABI's failed install:
    -1 and INCOMPLETE_FDS (and the message itself)."""
    rx = Conn(bus.dir, flags=K.KDBUS_HELLO_ACCEPT_FD)
    tx = Connection.open(bus.path)
    r, w = os.pipe()
    try:
        tx.send(rx.id, b"x", fds=[r])
        rc, m = rx.recv()
        rinfo = cmd(64)
        assert rc == 0 and m["payload"] == b"x"
        fds_item = [body for t, body in m["items"] if t == K.KDBUS_ITEM_FDS][0]
        assert struct.unpack("<i", fds_item) == (-1,)
        tx.send(rx.id, b"y", fds=[r])
        assert ioctl(rx.fd, K.KDBUS_CMD_RECV, rinfo) == 0
        assert rinfo.u64(56) & K.KDBUS_RECV_RETURN_INCOMPLETE_FDS
        rx.free(rinfo.u64(40))
    finally:
        rx.close()
        tx.close()
        os.close(r)
        os.close(w)


def test_channel_registration_rules(bus, agent):
    c = Conn(bus.dir)
    holder = Connection.open(bus.path, policy_holder="org.example.Held")

    def register(fd, conn_fd=c.fd):
        try:
            fdchan.register(conn_fd, fd)
        except OSError as e:
            return e.errno
        return 0
    stream_a, stream_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    seq_a, seq_b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    r, w = os.pipe()
    # a SEQPACKET socket connected to another process: its peer is not us
    listener = agent(uid=1000)
    path = listener.run(
        "import tempfile\n"
        "d = tempfile.mkdtemp(); os.chmod(d, 0o755)\n"
        "ls = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
        "ls.bind(d + '/s'); os.chmod(d + '/s', 0o777); ls.listen(1); _ = d + '/s'")
    conn_other = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    conn_other.connect(path)
    try:
        assert register(r) == errno.EINVAL                       # not a socket
        assert register(c.fd) == errno.EINVAL                    # a file of this mount
        assert register(stream_a.fileno()) == errno.EINVAL       # not SEQPACKET
        assert register(conn_other.fileno()) == errno.EINVAL     # peer is someone else
        assert register(12345) == errno.EBADF
        assert register(seq_a.fileno(), holder.fileno()) == errno.EOPNOTSUPP
        fresh = os.open(bus.path, os.O_RDWR)
        assert register(seq_a.fileno(), fresh) == errno.EBADFD
        os.close(fresh)
        assert register(seq_a.fileno()) == 0
        # negotiation: a stock kdbus says ENOTTY; we say 0 and change nothing
        neg = cmd(24, flags=K.KDBUS_FLAG_NEGOTIATE)
        assert ioctl(c.fd, K.KDBUSFS_CMD_FD_CHANNEL, neg) == 0 and neg.u64(8) == 0
    finally:
        for s in (stream_a, stream_b, seq_a, seq_b, conn_other):
            s.close()
        os.close(r)
        os.close(w)
        c.close()
        holder.close()


def test_records_carry_the_receivers_credentials(bus, agent):
    """The server writes into a receiver-supplied socket: whoever reads it
    must see the receiver's credentials, never the server's (root)."""
    rx = agent(uid=1000)
    rid = rx.run(
        "c = Conn(bus, flags=K.KDBUS_HELLO_ACCEPT_FD)\n"
        "ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
        "ours.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)\n"
        "item = encode_item(K.KDBUSFS_ITEM_FD_CHANNEL, struct.pack('<i', theirs.fileno()))\n"
        "assert ioctl(c.fd, K.KDBUSFS_CMD_FD_CHANNEL, cmd(24, item)) == 0\n"
        "theirs.close(); _ = c.id", bus=bus.dir)
    tx = Connection.open(bus.path)
    r, w = os.pipe()
    try:
        tx.send(rid, b"x", fds=[r])
        got = rx.run(
            "rc, m = c.recv()\n"
            "rf = 0\n"
            "data, anc, fl, _a = ours.recvmsg(64, 256)\n"
            "creds = [struct.unpack('iII', d[:12]) for l, t, d in anc\n"
            "         if t == socket.SCM_CREDENTIALS]\n"
            "nfd = [len(d) // 4 for l, t, d in anc if t == socket.SCM_RIGHTS]\n"
            "off, n, nm = struct.unpack('<QII', data)\n"
            "_ = [off == m['offset'], n, nm, nfd, list(creds[0]), os.getpid()]")
        same_offset, n, nm, nfd, (pid, uid, gid), agent_pid = got
        assert same_offset and (n, nm, nfd) == (1, 0, [1])
        assert (pid, uid, gid) == (agent_pid, 1000, 1000)
    finally:
        tx.close()
        os.close(r)
        os.close(w)


def test_a_receiver_that_never_reads_cannot_stall_the_server(bus):
    rx = Conn(bus.dir, flags=K.KDBUS_HELLO_ACCEPT_FD)
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    fdchan.register(rx.fd, theirs.fileno())
    theirs.close()
    tx = Connection.open(bus.path)
    r, w = os.pipe()
    try:
        tx.send(rx.id, b"x", fds=[r])
        # PEEK hands out the fds every time; nobody reads the channel
        flags = set()
        t0 = time.monotonic()
        for _ in range(3000):
            c = cmd(64, flags=K.KDBUS_RECV_PEEK)
            assert ioctl(rx.fd, K.KDBUS_CMD_RECV, c) == 0
            flags.add(c.u64(56) & K.KDBUS_RECV_RETURN_INCOMPLETE_FDS)
            rx.free(c.u64(40))
            if K.KDBUS_RECV_RETURN_INCOMPLETE_FDS in flags:
                break
        assert K.KDBUS_RECV_RETURN_INCOMPLETE_FDS in flags and 0 in flags
        assert time.monotonic() - t0 < 30
        tx.send(tx.id, b"still serving")
        assert tx.recv_wait(5).payload == b"still serving"
    finally:
        ours.close()
        rx.close()
        tx.close()
        os.close(r)
        os.close(w)


def test_monitor_copy_does_not_close_the_receivers_fd(bus, mount):
    """The receiver and a monitor share the server's copy of an fd: a
    monitor that receives (and so discards) its copy first must not close
    the receiver's."""
    mon = Connection.open(bus.path, monitor=True)
    rx = Connection.open(bus.path, accept_fd=True)
    tx = Connection.open(bus.path)
    r, w = os.pipe()
    try:
        base = server_fds(mount)
        tx.send(rx.id, b"x", fds=[r])
        os.close(r)
        seen = [m for m in iter(lambda: mon.recv_wait(2), None) if m.payload == b"x"]
        assert seen and seen[0].fds and seen[0].fds[0] >= 0
        os.close(seen[0].fds[0])
        m = rx.recv_wait(5)
        assert not m.return_flags & K.KDBUS_RECV_RETURN_INCOMPLETE_FDS
        os.write(w, b"alive")
        assert os.read(m.fds[0], 10) == b"alive"
        os.close(m.fds[0])
        # every server copy is gone once nobody holds the message any more
        assert settle(lambda: server_fds(mount), base) == base
    finally:
        os.close(w)
        for c in (mon, rx, tx):
            c.close()


def test_server_keeps_no_fds_once_messages_are_gone(bus, mount):
    rx = Connection.open(bus.path, accept_fd=True)
    tx = Connection.open(bus.path, accept_fd=True)
    r, w = os.pipe()
    m = sealed_memfd(b"abc")
    try:
        base = server_fds(mount)
        for _ in range(5):
            tx.send(rx.id, b"x", fds=[r, w], memfds=[m])
        assert server_fds(mount) >= base + 15          # held while queued
        for _ in range(5):
            got = rx.recv_wait(5)
            for fd in got.fds + [x.fd for x in got.memfds]:
                os.close(fd)
        assert settle(lambda: server_fds(mount), base) == base
        # a reply carrying fds to a blocked call() (no queue on that path)
        import threading

        def answer():
            req = rx.recv_wait(5)
            rx.reply(req, b"re", fds=[r], memfds=[m])
        t = threading.Thread(target=answer, daemon=True)
        t.start()
        reply = tx.call(rx.id, b"q", timeout=10)
        t.join(10)
        assert reply.payload == b"re" and reply.fds[0] >= 0 and reply.memfds[0].fd >= 0
        assert os.fstat(reply.memfds[0].fd).st_ino == os.fstat(m).st_ino
        os.close(reply.fds[0])
        os.close(reply.memfds[0].fd)
        assert settle(lambda: server_fds(mount), base) == base
    finally:
        for fd in (r, w, m):
            os.close(fd)
        rx.close()
        tx.close()


def test_per_user_limit_on_fds_held_by_the_server(bus, mount, agent):
    """Memfds escape the per-receiver fd quota; the server still caps what
    one user can make it hold (EMFILE), so its descriptor table survives."""
    from kdbusfs.fs.fdpass import MAX_HELD_PER_USER
    receivers = [Connection.open(bus.path) for _ in range(MAX_HELD_PER_USER // 256 + 1)]
    tx = Connection.open(bus.path)
    m = sealed_memfd(b"abcdefgh")
    try:
        sent = 0
        with pytest.raises(OSError) as e:
            for rx in receivers:
                for _ in range(256):
                    tx.send(rx.id, b"", memfds=[m] * 16)
                    sent += 16
        assert e.value.errno == errno.EMFILE and sent == MAX_HELD_PER_USER
        # other users are not affected
        other = agent(uid=1001)
        assert other.run(
            "import fcntl\n"
            "from kdbusfs.client import Connection\n"
            "c = Connection.open(path)\n"
            "fd = os.memfd_create('m', os.MFD_ALLOW_SEALING); os.write(fd, b'x')\n"
            "fcntl.fcntl(fd, fcntl.F_ADD_SEALS, 15)\n"
            "c.send(c.id, b'', memfds=[fd]); _ = 'sent'", path=bus.path) == "sent"
    finally:
        os.close(m)
        tx.close()
        for rx in receivers:
            rx.close()
