"""Mounting: daemon and foreground, independent instances, the node tree,
bus lifetime, and mounts inside a user namespace."""

import errno
import os
import stat
import subprocess
import sys
import time

import pytest

from kdbusfs.abi import constants as K

from .conftest import ROOT
from .procs import ENV, actor, finish, line
from .rawabi import Conn, cmd, ioctl, make_bus


def _mounted(path: str) -> bool:
    with open("/proc/self/mountinfo") as f:
        return any(ln.split()[4] == path for ln in f)


def test_daemon_mode_returns_and_serves_until_unmounted(mount_base):
    mp = os.path.join(mount_base, "daemon")
    os.mkdir(mp)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "kdbusfs", mp], env=ENV, cwd=ROOT, timeout=30)
    assert r.returncode == 0
    try:
        assert _mounted(mp) and os.path.exists(os.path.join(mp, "control"))
        fd, bus = make_bus(mp)
        c = Conn(bus)
        assert c.id == 2
        c.close()
        os.close(fd)
    finally:
        subprocess.run(["umount", mp], check=True)
    assert time.monotonic() - t0 < 30
    # the server process goes away once unmounted
    for _ in range(100):
        ps = subprocess.run(["pgrep", "-f", f"kdbusfs {mp}$"], capture_output=True)
        if ps.returncode:
            break
        time.sleep(0.05)
    assert ps.returncode == 1


def test_mount_of_a_missing_directory_fails_cleanly(mount_base):
    r = subprocess.run([sys.executable, "-m", "kdbusfs", os.path.join(mount_base, "nope")],
                       env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "not a directory" in r.stderr


def test_node_tree_modes_and_owners(mount):
    st = os.stat(mount.path)
    assert stat.S_IMODE(st.st_mode) == 0o555 and st.st_uid == 0
    st = os.stat(mount.control)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
    fds = []
    for name, flags, dmode, fmode in [("w", K.KDBUS_MAKE_ACCESS_WORLD, 0o555, 0o666),
                                      ("g", K.KDBUS_MAKE_ACCESS_GROUP, 0o550, 0o660),
                                      ("p", 0, 0o500, 0o600)]:
        fd, path = make_bus(mount.path, name, flags=flags)
        fds.append(fd)
        assert stat.S_IMODE(os.stat(path).st_mode) == dmode
        assert stat.S_IMODE(os.stat(os.path.join(path, "bus")).st_mode) == fmode
        assert os.listdir(path) == ["bus"]
    assert sorted(os.listdir(mount.path)) == ["0-g", "0-p", "0-w", "control"]
    for fd in fds:
        os.close(fd)
    assert os.listdir(mount.path) == ["control"]


def test_bus_goes_away_with_its_creator_fd(mount):
    fd, bus = make_bus(mount.path)
    c = Conn(bus)
    os.close(fd)
    assert not os.path.exists(bus)
    assert ioctl(c.fd, K.KDBUS_CMD_RECV, cmd(64)) == errno.ECONNRESET
    # a fresh fd of the dead endpoint is ESHUTDOWN
    c.close()


def test_each_open_gets_its_own_inode(mount):
    fd, bus = make_bus(mount.path)
    a, b = Conn(bus), Conn(bus)
    assert os.fstat(a.fd).st_ino != os.fstat(b.fd).st_ino
    for c in (a, b):
        c.close()
    os.close(fd)


def test_mounts_are_independent_instances(mount_base, mount):
    from .conftest import start_mount
    other = start_mount(os.path.join(mount_base, "second"))
    try:
        fd1, bus1 = make_bus(mount.path, "same")
        fd2, bus2 = make_bus(other.path, "same")    # same name, no clash
        a, b = Conn(bus1), Conn(bus2)
        assert a.id == b.id == 2                    # ids start afresh per mount
        assert b.send(a.id, b"x")[0] == 0           # ...and id 2 here is b itself
        assert a.recv()[0] == errno.EAGAIN
        for c in (a, b):
            c.close()
        os.close(fd1)
        os.close(fd2)
    finally:
        other.stop()


def test_unprivileged_user_creates_a_bus(mount):
    p = actor("makebus", mount.path, "mine", uid=1000)
    try:
        kind, path = line(p)
        assert kind == "bus" and path.endswith("/1000-mine")
        st = os.stat(path)
        assert st.st_uid == 1000 and stat.S_IMODE(st.st_mode) == 0o555
    finally:
        finish(p)
    assert not os.path.exists(path)




def test_mount_inside_a_user_namespace(mount_base):
    """unshare --user --map-root-user --mount: a container's root mounts its
    own kdbusfs, creates a bus and passes messages, with no help from the host."""
    script = f"""
set -e
mp={mount_base}/ns
mkdir -p $mp
"$PY" -m kdbusfs $mp
# the bus lives while fd 3 (the actor's stdin) is open
exec 3> >("$PY" -m tests.integration.actor makebus $mp ns > {mount_base}/bus.out 2>&1)
for i in $(seq 100); do [ -s {mount_base}/bus.out ] && break; sleep 0.05; done
"$PY" -m tests.integration.actor echo $mp/0-ns org.example.Ns > {mount_base}/echo.out 2>&1 &
echo_pid=$!
for i in $(seq 100); do [ -s {mount_base}/echo.out ] && break; sleep 0.05; done
"$PY" -m tests.integration.actor call $mp/0-ns org.example.Ns hi-from-userns
wait $echo_pid
exec 3>&-
sleep 0.2
umount $mp
"""
    r = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "bash", "-c", script],
                       env=dict(ENV, PY=sys.executable), cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0].startswith("reply ") and lines[0].endswith("echo: hi-from-userns"), r.stdout
    # the mount existed only inside that namespace
    assert not _mounted(f"{mount_base}/ns")


FUSERMOUNT_SCRIPT = r"""
set -e
base=$1
# a private mount namespace where /dev/fuse is 0666 and user_allow_other is
# set, as on most distributions (this host's /dev/fuse is 0600)
mknod -m 0666 "$base/fuse" c 10 229
mount --bind "$base/fuse" /dev/fuse
printf 'user_allow_other\n' > "$base/fuse.conf"
mount --bind "$base/fuse.conf" /etc/fuse.conf
as_nobody() { setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
mp=$base/mnt
as_nobody "$PY" -m kdbusfs "$mp"
grep " $mp " /proc/self/mountinfo | grep -q "user_id=65534"
exec 3> >(as_nobody "$PY" -m tests.integration.actor makebus "$mp" nobody > "$base/bus.out" 2>&1)
for i in $(seq 100); do [ -s "$base/bus.out" ] && break; sleep 0.05; done
as_nobody "$PY" -m tests.integration.actor echo "$mp/65534-nobody" org.example.Nobody > "$base/echo.out" 2>&1 &
echo_pid=$!
for i in $(seq 100); do [ -s "$base/echo.out" ] && break; sleep 0.05; done
as_nobody "$PY" -m tests.integration.actor call "$mp/65534-nobody" org.example.Nobody unprivileged
wait $echo_pid
exec 3>&-
sleep 0.2
as_nobody fusermount3 -u "$mp"
"""


def test_unprivileged_mount_through_fusermount3(mount_base):
    """An ordinary user mounts kdbusfs with fusermount3, makes a bus and
    passes messages on it; fusermount3 -u ends it."""
    base = os.path.join(mount_base, "user")
    os.makedirs(os.path.join(base, "mnt"))
    for d in (base, os.path.join(base, "mnt")):
        os.chown(d, 65534, 65534)
    r = subprocess.run(["unshare", "--mount", "bash", "-c", FUSERMOUNT_SCRIPT, "x", base],
                       env=dict(ENV, PY=sys.executable), cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr + r.stdout
    assert r.stdout.split("\n")[0].endswith("echo: unprivileged"), r.stdout
