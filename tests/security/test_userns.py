"""Containers: a kdbusfs mounted inside a user namespace belongs to it.

The host only creates the namespaces (as a container runtime does); the
container's root mounts kdbusfs and its unprivileged users make buses and
talk, and nobody outside, host root included, can reach that mount.
"""

from __future__ import annotations

import errno
import os
import select
import subprocess
import time

from tests.integration.procs import ENV, ROOT

from .agents import NS_PYTHON, SITE

SCRIPT = r"""
set -e
read go                                 # the host has written our id maps
mp={base}/ctr
mkdir -p $mp
"$PY" -m kdbusfs $mp
# an unprivileged user of the container makes a bus, and keeps it while fd 3 is open
exec 3> >(setpriv --reuid=1000 --regid=1000 --clear-groups \
          "$PY" -m tests.integration.actor makebus $mp mine > {base}/bus.out 2>&1)
for i in $(seq 200); do [ -s {base}/bus.out ] && break; sleep 0.05; done
setpriv --reuid=1000 --regid=1000 --clear-groups \
    "$PY" -m tests.integration.actor echo $mp/1000-mine org.example.Ctr > {base}/echo.out 2>&1 &
for i in $(seq 200); do [ -s {base}/echo.out ] && break; sleep 0.05; done
setpriv --reuid=1001 --regid=1001 --clear-groups \
    "$PY" -m tests.integration.actor call $mp/1000-mine org.example.Ctr same-uid-only || true
setpriv --reuid=1000 --regid=1000 --clear-groups \
    "$PY" -m tests.integration.actor call $mp/1000-mine org.example.Ctr hello
stat -c 'owner %u %a' $mp/1000-mine
echo "pid $$"
read done                               # the host has looked; now clean up
exec 3>&-
sleep 0.3
umount $mp
echo unmounted
"""


def test_a_container_mount_is_its_own(mount_base):
    script = SCRIPT.format(base=mount_base)
    env = dict(ENV, PY=NS_PYTHON, PYTHONPATH=ROOT + os.pathsep + SITE)
    p = subprocess.Popen(["unshare", "--user", "--mount", "bash", "-c", script],
                         env=env, cwd=ROOT, text=True, stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        # what a container runtime does (newuidmap is not needed as root):
        # uids and gids 0-65535 of the container are the host's
        for _ in range(200):
            if os.readlink(f"/proc/{p.pid}/ns/user") != os.readlink("/proc/self/ns/user"):
                break
            time.sleep(0.01)
        for which in ("uid_map", "gid_map"):
            with open(f"/proc/{p.pid}/{which}", "w") as f:
                f.write("0 0 65536\n")
        p.stdin.write("go\n")
        p.stdin.flush()
        lines, buf = [], b""
        fd = p.stdout.fileno()          # raw reads: select() knows of no buffer
        while not (lines and lines[-1].startswith("pid ")):
            r, _, _ = select.select([fd], [], [], 30)
            assert r, f"container script stalled: {lines}"
            chunk = os.read(fd, 4096)
            assert chunk, f"container script ended: {lines} {p.stderr.read()}"
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += [ln.decode().strip() for ln in done]
        pid = int(lines[-1].split()[1])
        # uid 1001 of the container may not call uid 1000's service (no
        # policy); uid 1000 may: buses made and used with no help from outside
        assert lines[0] == f"error {errno.EPERM}", lines
        assert lines[1].startswith("reply ") and lines[1].endswith("echo: hello"), lines
        assert lines[2] == "owner 1000 555", lines
        # the host does not see the mount, and host root cannot enter it
        # even through the container's own root directory
        assert not os.path.exists(os.path.join(mount_base, "ctr", "control"))
        inside = f"/proc/{pid}/root{mount_base}/ctr"
        try:
            os.listdir(inside)
            raise AssertionError("host root listed the container's mount")
        except PermissionError as e:
            assert e.errno == errno.EACCES
        try:
            os.open(inside + "/control", os.O_RDWR)
            raise AssertionError("host root opened the container's control file")
        except PermissionError as e:
            assert e.errno == errno.EACCES
        out, err = p.communicate("done\n", timeout=30)
        assert p.returncode == 0, err
        assert (buf.decode() + out).strip().endswith("unmounted")
    finally:
        if p.poll() is None:
            p.kill()
            p.communicate(timeout=10)
