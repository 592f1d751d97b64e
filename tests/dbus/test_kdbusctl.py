"""kdbusctl (and `kdbusfs ctl`) as a person uses it: real mounts, the command
as a subprocess, its output and exit status."""

from __future__ import annotations

import os
import signal
import sys

import pytest
import trio

from kdbusfs.client import Connection
from kdbusfs.dbus.io.trio import open_bus

from .conftest import eventually, run
from .services import ECHO_IFACE, ECHO_PATH

pytestmark = pytest.mark.timeout(120)

KDBUSCTL = [sys.executable, "-m", "kdbusfs", "ctl"]


def ctl(*args, check=True):
    return run([*KDBUSCTL, *args], check=check)


def test_help_of_every_command():
    p = run([*KDBUSCTL, "--help"])
    for command in ("list", "status", "monitor", "call", "emit", "make-bus", "make-endpoint"):
        assert command in p.stdout
        sub = ctl(command, "--help")
        assert sub.stdout.startswith("usage: kdbusfs ctl " + command)
    assert "exit status" in p.stdout and "KDBUSCTL_BUS" in p.stdout
    # the console script pyproject installs is the same program
    script = os.path.join(os.path.dirname(sys.executable), "kdbusctl")
    assert run([script, "--help"]).stdout == p.stdout.replace("kdbusfs ctl", "kdbusctl")
    # the mount command still works as before, and names the subcommands
    p = run([sys.executable, "-m", "kdbusfs", "--help"])
    assert "MOUNTPOINT" in p.stdout and "kdbusfs bridge" in p.stdout


def test_list_and_status(world):
    echo = world.native_service("org.example.Echo")
    p = ctl("list", world.mount.path)
    assert f"bus {os.path.basename(world.bus_dir)} ({world.bus_dir}), 1 connections" in p.stdout
    rows = [line.split() for line in p.stdout.splitlines()]
    header = next(r for r in rows if r and r[0] == "NAME")
    assert header == ["NAME", "CONNECTION", "PID", "UID", "COMM", "FLAGS", "DESCRIPTION"]
    row = next(r for r in rows if r and r[0] == "org.example.Echo")
    assert row[1] == echo and row[3] == "0" and row[2].isdigit() and "primary" in row[5]
    assert row[6] == "echo-service"
    # one bus by --bus, and by $KDBUSCTL_BUS
    assert "org.example.Echo" in ctl("list", "--bus", world.bus_dir).stdout
    p = run([*KDBUSCTL, "list"], env=dict(os.environ, KDBUSCTL_BUS=world.bus_dir,
                                          PYTHONPATH=os.getcwd()))
    assert "org.example.Echo" in p.stdout
    p = ctl("status", "--bus", world.bus_dir, "org.example.Echo")
    assert p.stdout.startswith(f"{echo} (connection {echo[3:]})")
    assert "org.example.Echo (primary" in p.stdout and "Description:  echo-service" in p.stdout
    assert "PID:" in p.stdout and "UID:          0" in p.stdout
    assert ctl("status", "-b", world.bus_dir, echo[3:]).stdout == p.stdout
    p = ctl("status", "-b", world.bus_dir)
    assert p.stdout.startswith(f"bus {os.path.basename(world.bus_dir)} (id ")
    assert "Bloom:        64 bytes, 1 hash function(s)" in p.stdout
    assert "Flags:        access-world" in p.stdout


def test_errors_are_clear(world):
    p = ctl("status", "--bus", world.mount.path, check=False)
    assert p.returncode == 2
    assert f"{world.mount.path} is a kdbusfs mount, not a bus; its buses: " \
           f"{os.path.basename(world.bus_dir)}" in p.stderr
    p = ctl("status", "--bus", "/nonexistent/0-x", check=False)
    assert p.returncode == 2 and "no such bus" in p.stderr
    p = ctl("status", "--bus", world.bus_dir, "org.example.Nobody", check=False)
    assert p.returncode == 1 and "no such connection or name" in p.stderr
    p = run([*KDBUSCTL, "status"], check=False, env={"PATH": os.environ["PATH"],
                                                     "PYTHONPATH": os.getcwd()})
    assert p.returncode == 2 and "no bus given" in p.stderr
    p = ctl("call", "-b", world.bus_dir, "org.example.Nobody", "/", "x.y", "Z", check=False)
    assert p.returncode == 1
    assert "org.freedesktop.DBus.Error.ServiceUnknown" in p.stderr and "Traceback" not in p.stderr
    p = ctl("call", "-b", world.bus_dir, "a.b", "/", "x.y", "Z", "i", "notanumber", check=False)
    assert p.returncode == 2 and "is not an integer" in p.stderr
    p = ctl("make-bus", world.mount.path, "dbus", check=False)
    assert p.returncode == 1 and "exists already" in p.stderr
    p = ctl("make-bus", "/tmp", "x", check=False)
    assert p.returncode == 2 and "not a kdbusfs mount" in p.stderr


def test_call_and_emit(world):
    world.native_service("org.example.Echo")
    p = ctl("call", "-b", world.bus_dir, "org.example.Echo", ECHO_PATH, ECHO_IFACE, "Echo",
            "s", "from kdbusctl")
    assert p.stdout == 's "echo: from kdbusctl"\n'
    p = ctl("call", "-b", world.bus_dir, "org.example.Echo", ECHO_PATH, ECHO_IFACE, "Swap",
            "ii", "3", "4")
    assert p.stdout == "ii 4 3\n"
    p = ctl("call", "-b", world.bus_dir, "org.example.Echo", ECHO_PATH, ECHO_IFACE, "Fail",
            check=False)
    assert p.returncode == 1
    assert p.stderr == "kdbusfs ctl: org.example.Error.Failed: failing on purpose\n"
    p = ctl("call", "-b", world.bus_dir, "org.freedesktop.DBus", "/org/freedesktop/DBus",
            "org.freedesktop.DBus", "GetNameOwner", "s", "org.example.Echo")
    assert p.stdout.startswith('s ":1.')
    ctl("emit", "-b", world.bus_dir, "/org/example/Client", "org.example.Client", "Hello",
        "s", "from kdbusctl")

    def heard():
        out = ctl("call", "-b", world.bus_dir, "org.example.Echo", ECHO_PATH, ECHO_IFACE,
                  "Heard").stdout
        return "Hello from kdbusctl" in out and out
    assert eventually(heard).startswith("as 1 ")


def test_monitor(world):
    world.native_service("org.example.Echo")
    mon = world.spawn([*KDBUSCTL, "monitor", "-b", world.bus_dir, "--count", "2",
                       "--match", f"interface='{ECHO_IFACE}'", "--match", "type='method_return'"],
                      "monitor")
    eventually(lambda: "Monitoring" in mon.stderr())
    ctl("call", "-b", world.bus_dir, "org.example.Echo", ECHO_PATH, ECHO_IFACE, "Echo", "s",
        "watched")
    lines = [mon.line() for _ in range(4)]
    assert " method_call :1." in lines[0] and "-> org.example.Echo cookie=" in lines[0]
    assert lines[1].strip() == f"path={ECHO_PATH} interface={ECHO_IFACE} member=Echo"
    assert lines[2].strip() == 's "watched"'
    assert " method_return " in lines[3] and "reply_cookie=" in lines[3]
    assert mon.proc.wait(timeout=10) == 0  # --count 2: the call and its return


def test_monitor_shows_notifications_and_raw_messages(world):
    mon = world.spawn([*KDBUSCTL, "monitor", "-b", world.bus_dir, "--timeout", "20"], "monitor")
    eventually(lambda: "Monitoring" in mon.stderr())
    with Connection.open(world.bus.path) as a, Connection.open(world.bus.path) as b:
        a.acquire_name("org.example.Raw")
        b.send("org.example.Raw", b"not d-bus", payload_type=0x1234)
        seen = [mon.line() for _ in range(4)]
    assert seen[0].endswith(f"id_add :1.{a.id} flags=0x0")
    assert seen[1].endswith(f"id_add :1.{b.id} flags=0x0")
    assert seen[2].endswith(f"name_add org.example.Raw: - -> :1.{a.id}")
    assert f"message :1.{b.id} -> org.example.Raw" in seen[3]
    assert "payload_type=0x1234 9 bytes b'not d-bus'" in seen[3]


def test_make_bus_holds_the_bus_until_signalled(world):
    maker = world.spawn([*KDBUSCTL, "make-bus", world.mount.path, "held", "--access", "world",
                         "--bloom-size", "128", "--n-hash", "2"], "make-bus")
    path = maker.line()
    assert path == os.path.join(world.mount.path, f"{os.geteuid()}-held")
    assert os.path.exists(os.path.join(path, "bus"))
    with Connection.open(path) as conn:
        assert (conn.bloom_size, conn.bloom_n_hash) == (128, 2)
    maker.proc.send_signal(signal.SIGTERM)
    assert maker.proc.wait(timeout=10) == 0
    eventually(lambda: not os.path.exists(path))


def test_make_bus_in_the_background(world, tmp_path):
    pidfile = tmp_path / "pid"
    p = ctl("make-bus", world.mount.path, "bg", "--background", "--pidfile", str(pidfile))
    path = p.stdout.strip()
    assert os.path.isdir(path)
    pid = int(pidfile.read_text())
    try:
        assert "0-bg" in ctl("list", world.mount.path).stdout
    finally:
        os.kill(pid, signal.SIGTERM)
    eventually(lambda: not os.path.exists(path))


def test_make_endpoint_with_policy(world):
    world.native_service("org.example.Echo")
    world.native_service("org.example.Hidden")
    maker = world.spawn([*KDBUSCTL, "make-endpoint", world.bus_dir, "restricted",
                         "--access", "world", "--policy", "org.example.Echo:talk:world"],
                        "make-endpoint")
    endpoint = maker.line()
    assert endpoint == os.path.join(world.bus_dir, f"{os.geteuid()}-restricted")

    async def through_endpoint():
        async with open_bus(endpoint) as bus:
            reply = await bus.call("org.example.Echo", ECHO_PATH, ECHO_IFACE, "Echo", "s",
                                   ("via endpoint",))
            names = await bus.list_names()
            hidden = await bus.name_has_owner("org.example.Hidden")
            return reply, names, hidden
    reply, names, hidden = trio.run(through_endpoint)
    assert reply == ("echo: via endpoint",)
    # the endpoint's policy shows only what it grants
    assert "org.example.Echo" in names and "org.example.Hidden" not in names
    assert hidden is False
    p = ctl("list", "--bus", endpoint)
    assert "org.example.Echo" in p.stdout and "org.example.Hidden" not in p.stdout
    maker.proc.send_signal(signal.SIGINT)
    assert maker.proc.wait(timeout=10) == 0
    eventually(lambda: not os.path.exists(endpoint))
    p = ctl("make-endpoint", world.bus_dir, "x", "--policy", "bad", check=False)
    assert p.returncode == 2 and "NAME:ACCESS:WHO" in p.stderr
