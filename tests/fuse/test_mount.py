"""Mounting paths: mount(2) inside a user namespace, fusermount3 as an
unprivileged uid, and failures."""

import errno
import os
import shutil

import pytest

from kdbusfs.fuse import mount

from .conftest import TOYFS, is_mounted, run_client
from .toyfs import HELLO_DATA

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root to set up namespaces"),
]

NOBODY = ["setpriv", "--reuid", "65534", "--regid", "65534", "--clear-groups"]

# Client checks run inside the server's namespaces: the mount is not visible
# anywhere else.
CLIENT = r"""
import os, sys, zlib
from tests.fuse import ioctls as K
mp = sys.argv[1]
print(open(os.path.join(mp, "hello"), "rb").read().decode().strip())
fd = os.open(os.path.join(mp, "dev"), os.O_RDWR)
out = bytearray(5)
result, echoed = K.echo_mem(fd, b"12345", out)
assert result == zlib.crc32(echoed) & 0x7FFFFFFF and out == b"12345", (result, out)
print("echo ok")
"""


def client(mountpoint, prefix):
    code = CLIENT.replace("sys.argv[1]", repr(str(mountpoint)))
    return run_client(code, prefix=prefix).stdout.decode().split("\n")[:2]


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare")
def test_user_namespace_mount(fuse_server, tmp_path):
    cmd = ["unshare", "--user", "--map-root-user", "--mount"] + TOYFS
    toy = fuse_server(cmd)
    assert toy.method == "mount"  # mount(2) as root of the user namespace
    assert not is_mounted(toy.mountpoint)  # only in the server's mount namespace
    ns = f"/proc/{toy.pid}/mountinfo"
    assert is_mounted(toy.mountpoint, ns)
    enter = ["nsenter", "-t", str(toy.pid), "-U", "-m", "--"]
    assert client(toy.mountpoint, enter) == [HELLO_DATA.decode().strip(), "echo ok"]
    # allow_other admits only processes of the mount's user namespace.
    with pytest.raises(PermissionError):
        os.stat(f"/proc/{toy.pid}/root{toy.mountpoint}/hello")


# Inside a private mount namespace: a 0666 /dev/fuse node and an fuse.conf
# with user_allow_other, bound over the host's; the server runs as nobody.
FUSERMOUNT_SETUP = r"""
set -e
for mp; do :; done  # the last argument, the mount point
dir=$(dirname "$mp")
mknod -m 0666 "$dir/fuse" c 10 229
mount --bind "$dir/fuse" /dev/fuse
printf 'user_allow_other\n' > "$dir/fuse.conf"
mount --bind "$dir/fuse.conf" /etc/fuse.conf
exec "$@"
"""


@pytest.mark.skipif(shutil.which("fusermount3") is None, reason="no fusermount3")
def test_fusermount3_as_unprivileged_user(fuse_server, public_tmpdir):
    mp = public_tmpdir / "mnt"
    mp.mkdir()
    os.chown(mp, 65534, 65534)
    cmd = ["unshare", "--mount", "sh", "-c", FUSERMOUNT_SETUP, "setup"] + NOBODY + TOYFS
    toy = fuse_server(cmd, mountpoint=mp)
    assert toy.method == "fusermount3"
    ns = f"/proc/{toy.pid}/mountinfo"
    assert is_mounted(toy.mountpoint, ns)
    with open(ns) as f:
        line = next(line for line in f if f" {toy.mountpoint} " in line)
    assert "user_id=65534" in line and "allow_other" in line and "fuse.kdbusfs" in line
    enter = ["nsenter", "-t", str(toy.pid), "-m", "--"]
    # Another user of the same uid (ptrace access: the ioctl reads its memory).
    assert client(toy.mountpoint, enter + NOBODY) == [HELLO_DATA.decode().strip(), "echo ok"]
    # root may use it too (allow_other), but the server cannot read root's memory.
    proc = run_client(CLIENT.replace("sys.argv[1]", repr(str(toy.mountpoint))), prefix=enter, check=False)
    assert proc.stdout.decode().startswith(HELLO_DATA.decode())
    assert "Operation not permitted" in proc.stderr.decode()
    # SIGTERM: the server unmounts through fusermount3 -u -z and exits cleanly.
    toy.proc.terminate()
    assert toy.proc.wait(timeout=10) == 0, toy.log()
    assert "unmount failed" not in toy.log()


def test_unprivileged_mount_failure_is_clear(public_tmpdir):
    mp = public_tmpdir / "mnt"
    mp.mkdir()
    os.chown(mp, 65534, 65534)
    # On the host, uid 65534 can neither open /dev/fuse (0600 here) nor use
    # allow_other (no user_allow_other): fusermount3 refuses, and says why.
    code = (
        "from kdbusfs.fuse import mount\n"
        f"try:\n    mount({str(mp)!r})\nexcept OSError as e:\n    print(e)\nelse:\n    print('mounted')\n"
    )
    out = run_client(code, prefix=NOBODY).stdout.decode()
    assert out.startswith("[Errno 1] cannot mount FUSE at") and "fusermount3: " in out
    assert "/dev/fuse" in out or "allow_other" in out
    assert not is_mounted(mp)


def test_missing_mountpoint(tmp_path):
    with pytest.raises(OSError) as e:
        mount(tmp_path / "nonexistent")
    assert e.value.errno == errno.ENOENT
