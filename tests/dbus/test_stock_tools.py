"""Unmodified D-Bus tools (dbus-send, dbus-monitor, busctl, gdbus) and a stock
Python library (jeepney) through the bridge, talking to native kdbusfs.dbus
services and to each other on one kdbusfs bus."""

from __future__ import annotations

import os
import sys

import pytest
import trio

from kdbusfs.dbus.io.trio import open_bus

from .conftest import eventually, require, run
from .services import CLIENT_IFACE, ECHO_IFACE, ECHO_PATH

pytestmark = pytest.mark.timeout(120)


def dbus_send(world, *args, check=True):
    return run([require("dbus-send"), f"--bus={world.address}", *args], check=check)


def busctl(world, *args, check=True):
    return run([require("busctl"), f"--address={world.address}", *args], check=check)


def gdbus(world, *args, check=True):
    return run([require("gdbus"), *args[:1], "--address", world.address, *args[1:]],
               check=check)


def heard(world) -> list[str]:
    """What the native service's Heard() reports (signals it received)."""
    out = busctl(world, "--json=short", "call", "org.example.Echo", ECHO_PATH, ECHO_IFACE,
                 "Heard").stdout
    import json
    return json.loads(out)["data"][0]


# ----------------------------------------------------------------------
# calling a native service


def test_dbus_send_calls_native_service(shared_world):
    p = dbus_send(shared_world, "--print-reply", "--dest=org.example.Echo", ECHO_PATH,
                  f"{ECHO_IFACE}.Echo", "string:from dbus-send")
    assert 'string "echo: from dbus-send"' in p.stdout
    # the reply comes from the service's unique name, as on dbus-daemon
    assert f"sender={shared_world.echo} " in p.stdout


def test_busctl_calls_native_service(shared_world):
    p = busctl(shared_world, "call", "org.example.Echo", ECHO_PATH, ECHO_IFACE, "Echo", "s",
               "from busctl")
    assert p.stdout.strip() == 's "echo: from busctl"'
    p = busctl(shared_world, "call", "org.example.Echo", ECHO_PATH, ECHO_IFACE, "Swap", "ii",
               "1", "2")
    assert p.stdout.strip() == "ii 2 1"


def test_gdbus_calls_native_service(shared_world):
    p = gdbus(shared_world, "call", "--dest", "org.example.Echo", "--object-path", ECHO_PATH,
              "--method", f"{ECHO_IFACE}.Echo", "from gdbus")
    assert p.stdout.strip() == "('echo: from gdbus',)"


def test_errors_reach_stock_tools(shared_world):
    p = dbus_send(shared_world, "--print-reply", "--dest=org.example.Echo", ECHO_PATH,
                  f"{ECHO_IFACE}.Fail", check=False)
    assert p.returncode != 0
    assert "org.example.Error.Failed" in p.stderr and "failing on purpose" in p.stderr
    p = gdbus(shared_world, "call", "--dest", "org.example.Echo", "--object-path", ECHO_PATH,
              "--method", f"{ECHO_IFACE}.Fail", check=False)
    assert p.returncode != 0 and "org.example.Error.Failed" in p.stderr
    p = busctl(shared_world, "call", "org.example.Nobody", "/", "org.example.X", "Y",
               check=False)
    assert p.returncode != 0 and "org.example.Nobody" in p.stderr
    p = dbus_send(shared_world, "--print-reply", "--dest=org.example.Nobody", "/",
                  "org.example.X.Y", check=False)
    assert "org.freedesktop.DBus.Error.ServiceUnknown" in p.stderr


def test_busctl_list_and_introspect(shared_world):
    p = busctl(shared_world, "list", "--no-pager")
    lines = {line.split()[0]: line.split() for line in p.stdout.splitlines()[1:] if line}
    assert "org.freedesktop.DBus" in lines
    echo = lines["org.example.Echo"]
    # NAME PID PROCESS USER CONNECTION ...: the native service's pid and unique name
    assert echo[4] == shared_world.echo and echo[3] == "root" and echo[1].isdigit()
    p = busctl(shared_world, "introspect", "--no-pager", "org.example.Echo", ECHO_PATH)
    assert ".Echo" in p.stdout and ".Pinged" in p.stdout and "signal" in p.stdout
    assert "org.freedesktop.DBus.Introspectable" in p.stdout


def test_dbus_send_list_names(shared_world):
    p = dbus_send(shared_world, "--print-reply", "--dest=org.freedesktop.DBus",
                  "/org/freedesktop/DBus", "org.freedesktop.DBus.ListNames")
    assert '"org.example.Echo"' in p.stdout and f'"{shared_world.echo}"' in p.stdout
    p = dbus_send(shared_world, "--print-reply", "--dest=org.freedesktop.DBus",
                  "/org/freedesktop/DBus", "org.freedesktop.DBus.GetNameOwner",
                  "string:org.example.Echo")
    assert f'string "{shared_world.echo}"' in p.stdout


# ----------------------------------------------------------------------
# signals


def test_stock_signals_reach_native_service(shared_world):
    # first a signal the service has no rule for: queued in order, it would
    # be heard before the others if it reached the service at all
    busctl(shared_world, "emit", "/org/example/Client", "org.example.Other", "Hello", "s",
           "unwanted")
    dbus_send(shared_world, "--type=signal", "/org/example/Client", f"{CLIENT_IFACE}.Hello",
              "string:from-dbus-send")
    busctl(shared_world, "emit", "/org/example/Client", CLIENT_IFACE, "Hello", "s",
           "from-busctl")
    got = eventually(lambda: (h := heard(shared_world)) and len(h) >= 2 and h)
    members = sorted(line.split(" ", 1)[1] for line in got)
    assert members == ["Hello from-busctl", "Hello from-dbus-send"]
    assert all(line.startswith(":1.") for line in got)


def test_native_signal_reaches_gdbus_monitor(shared_world):
    mon = shared_world.spawn([require("gdbus"), "monitor", "--address", shared_world.address,
                              "--dest", "org.example.Echo"], "gdbus-monitor")
    assert "Monitoring signals" in mon.line()
    assert shared_world.echo in mon.line()  # "The name org.example.Echo is owned by :1.N"
    dbus_send(shared_world, "--print-reply", "--dest=org.example.Echo", ECHO_PATH,
              f"{ECHO_IFACE}.Emit", "string:ping from native")
    line = mon.line()
    assert f"{ECHO_PATH}: {ECHO_IFACE}.Pinged ('ping from native',)" in line
    mon.stop()


def test_dbus_monitor_sees_calls_and_replies(shared_world):
    mon = shared_world.spawn([require("dbus-monitor"), "--address", shared_world.address,
                              f"interface='{ECHO_IFACE}'", "type='method_return'"],
                             "dbus-monitor")
    # BecomeMonitor answers, then NameLost for the monitor's own name
    assert "member=NameAcquired" in mon.line()
    dbus_send_seen = []

    def seen_call():
        dbus_send(shared_world, "--print-reply", "--dest=org.example.Echo", ECHO_PATH,
                  f"{ECHO_IFACE}.Echo", "string:watched")
        while True:
            line = mon.line(timeout=10)
            dbus_send_seen.append(line)
            if 'string "echo: watched"' in line:
                return True
    assert seen_call()
    text = "\n".join(dbus_send_seen)
    assert "method call" in text and "member=Echo" in text and "method return" in text
    assert "unable to enable new-style monitoring" not in mon.stderr()
    mon.stop()


def test_busctl_monitor_sees_signal(shared_world):
    mon = shared_world.spawn([require("busctl"), f"--address={shared_world.address}",
                              "monitor", "--no-pager"], "busctl-monitor")
    # its first message (its own connection's NameOwnerChanged) shows it is monitoring
    assert "Type=signal" in mon.line()

    def sees_signal():
        busctl(shared_world, "emit", "/org/example/Client", CLIENT_IFACE, "Watched", "s", "x")
        for _ in range(200):
            line = mon.line(timeout=10)
            if "Member=Watched" in line:
                return True
        return False
    assert sees_signal()
    mon.stop()


# ----------------------------------------------------------------------
# a stock library as the service


def test_stock_tools_and_native_client_call_jeepney_service(shared_world):
    unique = shared_world.jeepney_service(shared_world.address, "org.example.Jeepney")
    p = dbus_send(shared_world, "--print-reply", "--dest=org.example.Jeepney", "/",
                  "org.example.Jeepney.Echo", "string:a")
    assert 'string "jeepney echo: a"' in p.stdout
    p = busctl(shared_world, "call", "org.example.Jeepney", "/", "org.example.Jeepney", "Swap",
               "ii", "5", "6")
    assert p.stdout.strip() == "ii 6 5"
    p = gdbus(shared_world, "call", "--dest", unique, "--object-path", "/", "--method",
              "org.example.Jeepney.Echo", "b")
    assert p.stdout.strip() == "('jeepney echo: b',)"

    async def native_call():
        async with open_bus(shared_world.bus_dir) as bus:
            assert await bus.get_name_owner("org.example.Jeepney") == unique
            return await bus.call("org.example.Jeepney", "/", "org.example.Jeepney", "Echo",
                                  "s", ("from kdbus",))
    assert trio.run(native_call) == ("jeepney echo: from kdbus",)


def test_jeepney_client_receives_signals_and_name_changes(shared_world):
    from jeepney import MatchRule, message_bus
    from jeepney.io.blocking import open_dbus_connection

    with open_dbus_connection(bus=shared_world.address) as conn:
        tick = MatchRule(type="signal", interface=CLIENT_IFACE, member="Tick")
        noc = MatchRule(type="signal", sender="org.freedesktop.DBus",
                        interface="org.freedesktop.DBus", member="NameOwnerChanged")
        noc.add_arg_condition(0, "org.example.Ticker")
        for rule in (tick, noc):
            conn.send_and_get_reply(message_bus.AddMatch(rule), timeout=10)
        # client-side, collect every signal of the interface: the bus-side
        # rule (member Tick) must keep Tack from arriving at all
        everything = MatchRule(type="signal", interface=CLIENT_IFACE)
        with conn.filter(everything) as ticks, conn.filter(noc) as changes:
            # another stock client takes a name and signals
            script = ("from jeepney.io.blocking import open_dbus_connection as o\n"
                      "from jeepney import message_bus as b, new_signal, DBusAddress as A\n"
                      f"c = o(bus={shared_world.address!r})\n"
                      "c.send_and_get_reply(b.RequestName('org.example.Ticker'))\n"
                      f"c.send(new_signal(A('/t', interface={CLIENT_IFACE!r}), 'Tick', 's', "
                      "('tock',)))\n"
                      f"c.send(new_signal(A('/t', interface={CLIENT_IFACE!r}), 'Tack', 's', "
                      "('no',)))\n"
                      "print(c.unique_name, flush=True)\n"
                      "import sys; sys.stdin.read()\n")
            ticker = shared_world.spawn([sys.executable, "-c", script], "ticker")
            ticker_name = ticker.line()
            got = conn.recv_until_filtered(ticks, timeout=10)
            assert got.body == ("tock",)
            assert got.header.fields[7] == ticker_name  # sender
            change = conn.recv_until_filtered(changes, timeout=10)
            assert change.body == ("org.example.Ticker", "", ticker_name)
            ticker.stop()
            change = conn.recv_until_filtered(changes, timeout=10)
            assert change.body == ("org.example.Ticker", ticker_name, "")
            # Tack, sent before the ticker left, matched no rule of ours
            assert len(ticks) == 0, list(ticks)


def test_machine_id_and_bus_id(shared_world):
    p = dbus_send(shared_world, "--print-reply", "--dest=org.freedesktop.DBus", "/",
                  "org.freedesktop.DBus.GetId")
    bus_id = p.stdout.split('"')[1]
    assert len(bus_id) == 32 and int(bus_id, 16) >= 0
    p = busctl(shared_world, "call", "org.example.Echo", ECHO_PATH, "org.freedesktop.DBus.Peer",
               "GetMachineId")
    assert len(p.stdout.split('"')[1]) == 32
    assert os.path.exists(shared_world.bus_dir)
