"""A kdbusfs server under observation: start, watch /proc, stop, clean up.

The robustness tools and tests run the server as a child process in the
foreground (`python -X dev -m kdbusfs -f MOUNTPOINT`, development mode so
that resource warnings show), with its log in a file, and read its memory,
descriptors and threads from /proc.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FUSECTL = "/sys/fs/fuse/connections"


def proc_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (KiB), Threads... of a process, from /proc/PID/status."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                v = v.split()
                if v and v[0].isdigit():
                    out[k] = int(v[0])
    except OSError:
        pass
    return out


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def fd_targets(pid: int) -> list[str]:
    out = []
    try:
        for name in os.listdir(f"/proc/{pid}/fd"):
            try:
                out.append(os.readlink(f"/proc/{pid}/fd/{name}"))
            except OSError:
                pass
    except OSError:
        pass
    return sorted(out)


def children_of(pid: int) -> list[int]:
    kids = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def proc_state(pid: int) -> str:
    """The one-letter state (R, S, D, Z...) or "" if gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return ""


def is_mounted(path: str) -> bool:
    path = os.path.abspath(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == path for line in f)


def abort_connection(path: str) -> bool:
    """Abort the FUSE connection of the mount at `path` (fusectl): every
    request still waiting for the server fails, so no caller stays stuck."""
    try:
        dev = os.stat(path).st_dev
    except OSError:
        return False
    if not os.path.isdir(FUSECTL) or not os.listdir(FUSECTL):
        subprocess.run(["mount", "-t", "fusectl", "none", FUSECTL],
                       stderr=subprocess.DEVNULL)
    ctl = os.path.join(FUSECTL, str(os.minor(dev)), "abort")
    try:
        with open(ctl, "w") as f:
            f.write("1")
        return True
    except OSError:
        return False


class Server:
    """One kdbusfs mount served by a child process."""

    def __init__(self, mountpoint: str | None = None, *, pushed: bool = False,
                 dev_mode: bool = True, env: dict | None = None):
        self.own_dir = mountpoint is None
        if mountpoint is None:
            base = tempfile.mkdtemp(prefix="kdbusfs-robust-", dir="/tmp")
            os.chmod(base, 0o755)
            mountpoint = os.path.join(base, "mnt")
        self.path = os.path.abspath(mountpoint)
        self.log_path = self.path + ".log"
        self.pushed = pushed
        self.dev_mode = dev_mode
        self.env = env or {}
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def control(self) -> str:
        return os.path.join(self.path, "control")

    def start(self, timeout: float = 15.0) -> "Server":
        os.makedirs(self.path, exist_ok=True)
        os.chmod(self.path, 0o755)
        env = dict(os.environ, PYTHONPATH=ROOT, **self.env)
        if self.pushed:
            env["KDBUSFS_PASSTHROUGH"] = "0"
        argv = [sys.executable] + (["-X", "dev"] if self.dev_mode else []) + \
            ["-m", "kdbusfs", "-f", self.path]
        with open(self.log_path, "w") as log:
            self.proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         stdin=subprocess.DEVNULL, cwd=ROOT)
        end = time.monotonic() + timeout
        while not os.path.exists(self.control):
            if self.proc.poll() is not None:
                raise RuntimeError(f"kdbusfs exited early ({self.proc.returncode}): "
                                   f"{self.log()}")
            if time.monotonic() > end:
                self.stop()
                raise TimeoutError("the mount did not appear")
            time.sleep(0.02)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict[str, int]:
        return proc_status(self.pid)

    def fds(self) -> int:
        return fd_count(self.pid)

    def log(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def problems(self) -> list[str]:
        """Log lines that mean a bug: exceptions, errors, warnings."""
        out = []
        for line in self.log().splitlines():
            if re.search(r"Traceback|\bERROR\b|Error:|Warning\b|WARNING", line):
                out.append(line)
        return out

    def exceptions(self) -> int:
        return self.log().count("Traceback")

    def unmount(self, lazy: bool = True) -> None:
        subprocess.run(["umount"] + (["-l"] if lazy else []) + [self.path],
                       stderr=subprocess.DEVNULL)

    def stop(self, timeout: float = 15.0) -> int | None:
        """Unmount and wait for the server to end; kill it (and abort the
        connection, freeing stuck callers) if it does not.  Its exit code,
        or None if it had to be killed."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is None:
            self.unmount(lazy=True)
            try:
                rc = self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                rc = None
                self.proc.kill()
                self.proc.wait(10)
        if is_mounted(self.path):
            abort_connection(self.path)
            self.unmount(lazy=True)
        return rc

    def signal(self, signo: int = signal.SIGTERM) -> None:
        os.kill(self.pid, signo)

    def cleanup(self, keep_log: bool = False) -> None:
        """Stop, and remove the mount point (and the log, unless `keep_log`:
        then it stays for a post-mortem, at `log_path`)."""
        self.stop()
        if self.own_dir:
            try:
                os.rmdir(self.path)
                if not keep_log:
                    os.unlink(self.log_path)
                    os.rmdir(os.path.dirname(self.path))
            except OSError:
                pass
