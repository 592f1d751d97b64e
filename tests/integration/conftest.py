"""Fixtures that mount a real kdbusfs for integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from kdbusfs.client import Connection, make_bus

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _wait_for(path: str, proc: subprocess.Popen, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.exists(path):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"kdbusfs exited early: {proc.returncode}")
        time.sleep(0.02)
    raise TimeoutError(f"{path} did not appear")


def _unmount(mountpoint: str) -> None:
    subprocess.run(["umount", "-l", mountpoint], stderr=subprocess.DEVNULL)


class Mount:
    """A running kdbusfs server in the foreground, as a child process."""

    def __init__(self, mountpoint: str, proc: subprocess.Popen, log: str):
        self.path = mountpoint
        self.proc = proc
        self.log = log

    @property
    def control(self) -> str:
        return os.path.join(self.path, "control")

    def server_log(self) -> str:
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self) -> None:
        _unmount(self.path)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_mount(mountpoint: str, *extra: str, pushed: bool = False) -> Mount:
    """`pushed`: pools reach clients through page pushes (NOTIFY_STORE), as
    in a user namespace, instead of root's passthrough memfds."""
    os.makedirs(mountpoint, exist_ok=True)
    log = mountpoint.rstrip("/") + ".log"
    env = dict(os.environ, PYTHONPATH=ROOT)
    if pushed:
        env["KDBUSFS_PASSTHROUGH"] = "0"
    with open(log, "w") as logf:
        proc = subprocess.Popen([sys.executable, "-m", "kdbusfs", "-f", *extra, mountpoint],
                                stdout=logf, stderr=subprocess.STDOUT, env=env)
    m = Mount(mountpoint, proc, log)
    m.pushed = pushed
    try:
        _wait_for(m.control, proc)
    except Exception:
        m.stop()
        raise
    return m


@pytest.fixture
def mount_base():
    """A directory every uid can reach (pytest's tmp_path is root-only)."""
    import shutil
    import tempfile
    d = tempfile.mkdtemp(prefix="kdbusfs-test-", dir="/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def mount(mount_base):
    """A fresh kdbusfs instance, reachable by every uid, unmounted afterwards."""
    yield from _mount(mount_base, pushed=False)


@pytest.fixture(params=["passthrough", "pushed"])
def any_mount(request, mount_base):
    """The same, once with each way pools reach their clients."""
    yield from _mount(mount_base, pushed=request.param == "pushed")


def _mount(mount_base, pushed):
    m = start_mount(os.path.join(mount_base, "kdbus"), pushed=pushed)
    try:
        yield m
    finally:
        m.stop()
        log = m.server_log()
        # The server must never log an unexpected exception.
        assert "Traceback" not in log, log


@pytest.fixture
def bus(mount):
    """A bus on a fresh mount, world-accessible; closed afterwards."""
    b = make_bus(mount.path, "test", access="world")
    try:
        yield b
    finally:
        b.close()


@pytest.fixture
def connect(bus):
    """connect(**kw) -> a new Connection on ``bus``; all closed afterwards."""
    opened: list[Connection] = []

    def _connect(**kwargs) -> Connection:
        c = Connection.open(bus.path, **kwargs)
        opened.append(c)
        return c

    try:
        yield _connect
    finally:
        for c in opened:
            c.close()
