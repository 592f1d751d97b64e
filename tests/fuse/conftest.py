"""Real FUSE mounts for the tests: start a server command, wait for "ready",
and always tear down (SIGTERM, then SIGKILL, then a lazy unmount)."""

import errno
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from kdbusfs.fuse import libc  # noqa: E402

PYTHON = sys.executable
TOYFS = [PYTHON, "-m", "tests.fuse.toyfs"]


def child_env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _unescape(field):
    # /proc/self/mountinfo escapes space, tab, newline and backslash in octal.
    return field.encode().decode("unicode_escape")


def is_mounted(mountpoint, mountinfo="/proc/self/mountinfo"):
    mountpoint = os.path.abspath(mountpoint)
    with open(mountinfo) as f:
        return any(_unescape(line.split()[4]) == mountpoint for line in f)


def mount_entry(mountpoint, mountinfo="/proc/self/mountinfo"):
    """(fstype, source, super options) of the mount at mountpoint, or None."""
    mountpoint = os.path.abspath(mountpoint)
    with open(mountinfo) as f:
        for line in f:
            fields = line.split()
            if _unescape(fields[4]) == mountpoint:
                rest = fields[fields.index("-") + 1 :]
                return rest[0], rest[1], rest[2]
    return None


class Server:
    """A filesystem server process serving a mount point."""

    def __init__(self, cmd, mountpoint, log_path):
        self.cmd = cmd
        self.mountpoint = str(mountpoint)
        self.log_path = log_path
        self.proc = None
        self.method = None

    @property
    def pid(self):
        return self.proc.pid

    def path(self, *parts):
        return os.path.join(self.mountpoint, *parts)

    def start(self, timeout=20.0):
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                self.cmd + [self.mountpoint],
                cwd=REPO,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=log,
            )
        deadline = time.monotonic() + timeout
        out = self.proc.stdout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()}")
            ready, _, _ = select.select([out], [], [], left)
            if ready:
                line = out.readline()
                if not line:
                    self.proc.wait(timeout=5)
                    raise RuntimeError(f"server exited ({self.proc.returncode}) before ready:\n{self.log()}")
                words = line.decode().split()
                if words and words[0] == "ready":
                    self.method = words[1] if len(words) > 1 else None
                    return self

    def log(self):
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def kill(self, sig=signal.SIGKILL):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout=5.0):
        """SIGTERM, SIGKILL if needed, then detach the mount if still there."""
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(timeout=timeout)
            self.proc.stdout.close()
        if is_mounted(self.mountpoint):
            try:
                libc.umount2(self.mountpoint, libc.MNT_DETACH)
            except OSError as e:
                if e.errno not in (errno.EINVAL, errno.ENOENT):
                    raise


@pytest.fixture
def fuse_server(tmp_path):
    """Factory: fuse_server(cmd=TOYFS, mountpoint=None) -> a started Server.

    Servers are stopped, and their mounts detached, after the test whatever
    happened in it.
    """
    servers = []
    counter = iter(range(1000))

    def start(cmd=TOYFS, mountpoint=None, timeout=20.0):
        n = next(counter)
        if mountpoint is None:
            mountpoint = tmp_path / f"mnt{n}"
            mountpoint.mkdir()
        server = Server(list(cmd), mountpoint, tmp_path / f"server{n}.log")
        servers.append(server)
        return server.start(timeout)

    yield start
    for server in reversed(servers):
        server.stop()


@pytest.fixture
def public_tmpdir():
    """A directory under /tmp that other uids can reach (tmp_path is 0700)."""
    path = tempfile.mkdtemp(prefix="kdbusfs-fuse-", dir="/tmp")
    os.chmod(path, 0o755)
    try:
        yield Path(path)
    finally:
        for root, dirs, _ in os.walk(path):
            for d in dirs:
                p = os.path.join(root, d)
                if is_mounted(p):
                    try:
                        libc.umount2(p, libc.MNT_DETACH)
                    except OSError:
                        pass
        shutil.rmtree(path, ignore_errors=True)


def run_client(code, *, prefix=(), timeout=20, check=True):
    """Run Python `code` in a child (optionally behind a prefix like nsenter)."""
    proc = subprocess.run(
        list(prefix) + [PYTHON, "-c", code],
        cwd=REPO,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        out, err = proc.stdout.decode(), proc.stderr.decode()
        raise AssertionError(f"client failed ({proc.returncode}):\n{out}\n{err}")
    return proc
