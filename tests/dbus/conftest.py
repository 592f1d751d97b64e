"""Fixtures of the D-Bus tests: real mounts with a bus, the bridge and test
services as child processes, all stopped afterwards."""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

import pytest

from kdbusfs.client import make_bus
from tests.integration.conftest import mount, mount_base, start_mount  # noqa: F401

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT)


def read_line(proc: subprocess.Popen, timeout: float = 15.0) -> str:
    """The next line ``proc`` prints on stdout, within ``timeout`` seconds."""
    end = time.monotonic() + timeout
    fd = proc.stdout.fileno()
    buf = b""
    while not buf.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            raise TimeoutError(f"no line from {proc.args} within {timeout} s (got {buf!r})")
        chunk = os.read(fd, 1)
        if not chunk:
            raise RuntimeError(f"{proc.args} exited ({proc.wait()}) before a line; got {buf!r}")
        buf += chunk
    return buf.decode().rstrip("\n")


class Child:
    """A child process with stderr in a file, ended at teardown."""

    def __init__(self, args: list[str], log_dir: str, tag: str):
        self.log = os.path.join(log_dir, f"{tag}.{len(os.listdir(log_dir))}.log")
        with open(self.log, "w") as err:
            self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=err, env=ENV,
                                         stdin=subprocess.DEVNULL)

    def line(self, timeout: float = 15.0) -> str:
        return read_line(self.proc, timeout)

    def stderr(self) -> str:
        with open(self.log) as f:
            return f.read()

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        self.proc.stdout.close()
        return self.stderr()


class World:
    """A mount, one world-accessible bus on it, and helpers to start a bridge
    and services on that bus."""

    def __init__(self, mounted, tmp: str):
        self.mount = mounted
        self.tmp = tmp
        self.bus = make_bus(mounted.path, "dbus", access="world")
        self.bus_dir = self.bus.dir
        self.children: list[Child] = []

    def spawn(self, args: list[str], tag: str) -> Child:
        child = Child(args, self.tmp, tag)
        self.children.append(child)
        return child

    def bridge(self, *extra: str) -> str:
        """Start `kdbusfs bridge` on the bus; returns its address."""
        sock = os.path.join(self.tmp, f"bridge{len(self.children)}.sock")
        child = self.spawn([sys.executable, "-m", "kdbusfs", "bridge", "--bus", self.bus_dir,
                            "--listen", f"unix:path={sock}", *extra], "bridge")
        line = child.line()
        assert line.startswith(f"unix:path={sock},guid="), line
        return f"unix:path={sock}"

    def native_service(self, name: str) -> str:
        """A native kdbusfs.dbus Echo service owning ``name``; its unique name."""
        child = self.spawn([sys.executable, "-m", "tests.dbus.services", "native", self.bus_dir,
                            name], "native")
        ready, unique = child.line().split()
        assert ready == "ready"
        return unique

    def jeepney_service(self, address: str, name: str) -> str:
        """A jeepney Echo service, through the bridge at ``address``."""
        child = self.spawn([sys.executable, "-m", "tests.dbus.services", "jeepney", address,
                            name], "jeepney")
        ready, unique = child.line().split()
        assert ready == "ready"
        return unique

    def close(self) -> None:
        logs = [(c.proc.args, c.stop()) for c in reversed(self.children)]
        self.bus.close()
        for args, log in logs:
            # no child may have died of an unexpected exception
            assert "Traceback" not in log, f"{args}:\n{log}"


@pytest.fixture
def world(mount):  # noqa: F811
    tmp = tempfile.mkdtemp(prefix="kdbusfs-dbus-")
    w = World(mount, tmp)
    try:
        yield w
    finally:
        try:
            w.close()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def shared_world():
    """One mount, bus, bridge and native service for a whole module (the
    stock-tool tests only add names of their own, so they can share it)."""
    base = tempfile.mkdtemp(prefix="kdbusfs-dbus-", dir="/tmp")
    os.chmod(base, 0o755)
    m = start_mount(os.path.join(base, "kdbus"))
    tmp = os.path.join(base, "run")
    os.mkdir(tmp)
    w = World(m, tmp)
    try:
        w.address = w.bridge()
        w.echo = w.native_service("org.example.Echo")
        yield w
    finally:
        try:
            w.close()
        finally:
            m.stop()
            log = m.server_log()
            shutil.rmtree(base, ignore_errors=True)
            assert "Traceback" not in log, log


def run(args: list[str], timeout: float = 20.0, check: bool = True,
        **kwargs) -> subprocess.CompletedProcess:
    """Run a command to completion within ``timeout`` seconds."""
    kwargs.setdefault("env", ENV)
    p = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL, **kwargs)
    if check and p.returncode != 0:
        raise AssertionError(f"{args} exited {p.returncode}\nstdout: {p.stdout}\n"
                             f"stderr: {p.stderr}")
    return p


def eventually(fn, timeout: float = 10.0, interval: float = 0.05):
    """fn()'s first truthy result within ``timeout`` seconds (AssertionError if none)."""
    end = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > end:
            raise AssertionError(f"condition not met within {timeout} s: last {result!r}")
        time.sleep(interval)


def require(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.fail(f"{tool} is not installed: scripts/setup installs it")
    return path
