"""Hygiene (issue 7, part 4): development mode, warnings as errors, and no
descriptors, threads or processes left behind by a mount."""

from __future__ import annotations

import fcntl
import os
import struct
import subprocess
import sys
import threading
import time
import tomllib
import warnings

import pytest

from kdbusfs.client import Connection, make_bus
from kdbusfs.tools.server import ROOT, Server, children_of, fd_targets, is_mounted

pytestmark = pytest.mark.timeout(90, method="thread")


def test_the_suite_runs_in_development_mode_with_warnings_as_errors():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        ini = tomllib.load(f)["tool"]["pytest"]["ini_options"]
    assert "error" in ini["filterwarnings"]
    with open(os.path.join(ROOT, "scripts", "test")) as f:
        assert "-X dev" in f.read()
    # the filter is in force here: a warning is an error
    with pytest.raises(UserWarning):
        warnings.warn("this must raise", UserWarning)
    if os.environ.get("CI"):
        # CI runs scripts/test, which runs pytest under -X dev
        assert sys.flags.dev_mode


def test_the_server_and_tools_import_cleanly_with_warnings_as_errors():
    r = subprocess.run([sys.executable, "-X", "dev", "-W", "error", "-c",
                        "import kdbusfs.server, kdbusfs.client, kdbusfs.tools.fuzz, "
                        "kdbusfs.tools.load, kdbusfs.ctl, kdbusfs.dbus"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def _workload(path: str, during=lambda: None) -> None:
    """Connections of every sort, messages with payloads, fds and memfds,
    names, broadcasts, synchronous calls; then everything is closed."""
    with make_bus(path, "hygiene", access="world") as bus:
        conns = [Connection.open(bus.path, accept_fd=True, pool_size=1 << 20)
                 for _ in range(40)]
        mon = Connection.open(bus.path, monitor=True)
        service = conns[0]
        service.acquire_name("org.hygiene.Service")
        key = service.bloom("member:Ping")
        for c in conns[1:]:
            c.add_match(bloom_mask=key)
        r, w = os.pipe()
        memfd = os.memfd_create("hygiene", os.MFD_ALLOW_SEALING)
        os.write(memfd, b"m" * 8192)
        fcntl.fcntl(memfd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SEAL | fcntl.F_SEAL_SHRINK
                    | fcntl.F_SEAL_GROW | fcntl.F_SEAL_WRITE)
        try:
            for i, c in enumerate(conns[1:], 1):
                c.send("org.hygiene.Service", b"x" * (i * 100), fds=[r, w], memfds=[memfd])
                m = service.recv_wait(5)
                assert m is not None and len(m.fds) == 2
                for fd in m.fds:
                    os.close(fd)
                for mf in m.memfds:
                    os.close(mf.fd)
            service.emit(b"ping", bloom=key)
            for c in conns[1:]:
                assert c.recv_wait(5).payload == b"ping"
            res = {}

            def call():
                res["r"] = conns[1].call("org.hygiene.Service", b"call", timeout=10)
            t = threading.Thread(target=call)
            t.start()
            req = service.recv_wait(5)
            service.reply(req, b"answer")
            t.join(10)
            assert res["r"].payload == b"answer"
            # queued, never received: discarded with the connections
            for c in conns[2:10]:
                c.send(conns[-1].id, b"left behind", fds=[r])
            during()
        finally:
            for fd in (r, w, memfd):
                os.close(fd)
            for c in conns + [mon]:
                c.close()


@pytest.mark.parametrize("pushed", [False, True], ids=["passthrough", "pushed"])
def test_a_mount_gives_everything_back(pushed):
    """The server's descriptors and threads return to their baseline once its
    clients have closed everything; it never has child processes; it exits
    0 when unmounted and leaves nothing running.  The client side too: this
    process has the descriptors it had before."""
    my_fds = len(os.listdir("/proc/self/fd"))
    srv = Server(pushed=pushed).start()
    try:
        base_fds = srv.fds()
        base_threads = srv.status()["Threads"]
        kids = set()
        busy = {}

        def during():
            busy["fds"] = srv.fds()
            kids.update(children_of(srv.pid))
        _workload(srv.path, during)
        # the count sees connections (each holds at least one server fd)
        assert busy["fds"] >= base_fds + 40, busy
        kids |= set(children_of(srv.pid))
        end = time.monotonic() + 10
        while (srv.fds(), srv.status()["Threads"]) != (base_fds, base_threads) \
                and time.monotonic() < end:
            time.sleep(0.05)
        assert srv.fds() == base_fds, (fd_targets(srv.pid), base_fds)
        assert srv.status()["Threads"] == base_threads
        kids |= set(children_of(srv.pid))
        assert not kids, f"the server has child processes {kids}"
        assert len(os.listdir("/proc/self/fd")) == my_fds
        srv.unmount(lazy=False)
        assert srv.proc.wait(10) == 0, srv.log()
        assert not is_mounted(srv.path)
        assert not os.path.exists(f"/proc/{srv.pid}")
        log = srv.log()
        assert "Traceback" not in log and "Warning" not in log, log
    finally:
        srv.cleanup()
    assert len(os.listdir("/proc/self/fd")) == my_fds


def _make_endpoint(bus_path: str, name: str) -> int:
    """ENDPOINT_MAKE on a fresh fd of the bus: the endpoint-owner fd."""
    from kdbusfs.abi import constants as K
    from kdbusfs.abi.items import encode_item
    from kdbusfs.tools.fuzz import Memory, raw_ioctl
    fd = os.open(bus_path, os.O_RDWR)
    item = encode_item(K.KDBUS_ITEM_MAKE_NAME, name.encode() + b"\0")
    rc = raw_ioctl(fd, K.KDBUS_CMD_ENDPOINT_MAKE,
                   Memory().put(struct.pack("<QQQ", 24 + len(item), 0, 0) + item))
    assert rc == 0, rc
    return fd


def test_buses_and_endpoints_that_come_and_go_leave_nothing_behind():
    """Found with scripts/fuzz: the server kept every dead bus and custom
    endpoint it had a node for: a bus directory nobody looked up forever
    (~4 KB each), and anything the kernel had looked up (an endpoint, a bus
    directory, with the connections opened through them: ~6 KB each) until
    a FORGET that never came, because nothing told the kernel to drop the
    name (kdbusfs/fs/filesystem.py _node_removed, tree.py bus_gone)."""
    srv = Server().start()
    try:
        def grows(fn, n):
            for i in range(100):                        # warm up the allocator
                fn(f"w{i}")
            before = srv.status()["VmRSS"]
            for i in range(n):
                fn(f"x{i}")
            time.sleep(0.3)
            return srv.status()["VmRSS"] - before       # KiB

        def bus_unseen(tag):
            make_bus(srv.path, tag).close()

        def bus_seen(tag):
            with make_bus(srv.path, "s" + tag) as b:
                Connection.open(b.path).close()

        host = make_bus(srv.path, "host", access="world")

        def endpoint(tag):
            name = f"0-e{tag}"
            fd = _make_endpoint(host.path, name)
            Connection.open(os.path.join(host.dir, name)).close()
            os.close(fd)

        grew = (grows(bus_unseen, 2000), grows(bus_seen, 1000), grows(endpoint, 1000))
        # before the fixes: about (9600, 9300, 6500) KiB
        assert max(grew) < 2048, grew
        host.close()
    finally:
        srv.cleanup()
