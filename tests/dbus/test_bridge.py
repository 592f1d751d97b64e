"""The bridge's emulation of dbus-daemon, driven by jeepney (a stock D-Bus
library) and raw sockets, checked against the kdbus side."""

from __future__ import annotations

import os
import socket
import sys

import pytest
from jeepney import DBusAddress, HeaderFields, MatchRule, message_bus, new_method_call
from jeepney.auth import FDNegotiationError
from jeepney.io.blocking import open_dbus_connection
from jeepney.wrappers import DBusErrorResponse

from kdbusfs.client import Connection
from kdbusfs.dbus.names import parse_unique_name

from .conftest import eventually, require, run

pytestmark = pytest.mark.timeout(120)

DRIVER = message_bus


def call(conn, msg, timeout=10):
    reply = conn.send_and_get_reply(msg, timeout=timeout)
    if reply.header.message_type.name == "error":
        raise DBusErrorResponse(reply)
    return reply.body


def connect(address):
    return open_dbus_connection(bus=address)


def test_unique_name_is_the_kdbus_id_with_the_clients_credentials(world):
    address = world.bridge()
    with connect(address) as conn, Connection.open(world.bus.path) as raw:
        conn_id = parse_unique_name(conn.unique_name)
        assert conn_id is not None
        info = raw.conn_info(conn_id)
        # the bridge made the connection, but shows this process as its owner
        assert info.pids.pid == os.getpid()
        assert info.creds.uid == os.getuid() and info.creds.gid == os.getgid()
        assert info.description == f"bridge.{info_comm()}.{os.getpid()}"
        assert call(conn, DRIVER.GetConnectionUnixProcessID(conn.unique_name)) == (os.getpid(),)
        assert call(conn, DRIVER.GetConnectionUnixUser(conn.unique_name)) == (os.getuid(),)
        creds = call(conn, DRIVER.GetConnectionCredentials(conn.unique_name))[0]
        assert creds["ProcessID"] == ("u", os.getpid())
        assert creds["UnixUserID"] == ("u", os.getuid())


def info_comm() -> str:
    with open(f"/proc/{os.getpid()}/comm") as f:
        comm = f.read().strip()
    return "".join(c if c.isalnum() or c in "_-" else "_" for c in comm)


def test_request_name_semantics(world):
    address = world.bridge()
    with connect(address) as a, connect(address) as b:
        name = "org.example.Queue"
        allow_replacement, replace, do_not_queue = 1, 2, 4
        assert call(a, DRIVER.RequestName(name, allow_replacement)) == (1,)  # primary
        assert call(a, DRIVER.RequestName(name, allow_replacement)) == (4,)  # already owner
        assert call(b, DRIVER.RequestName(name, do_not_queue)) == (3,)       # exists
        assert call(b, DRIVER.RequestName(name)) == (2,)                     # in queue
        assert call(a, DRIVER.ListQueuedOwners(name)) == ([a.unique_name, b.unique_name],)
        assert call(a, DRIVER.GetNameOwner(name)) == (a.unique_name,)
        # b takes over, as a allowed; a did not say DO_NOT_QUEUE, so it waits in line
        assert call(b, DRIVER.RequestName(name, replace)) == (1,)
        assert call(a, DRIVER.GetNameOwner(name)) == (b.unique_name,)
        assert call(a, DRIVER.ListQueuedOwners(name)) == ([b.unique_name, a.unique_name],)
        # b leaves the name to a, which now gives it up for good with DO_NOT_QUEUE
        assert call(b, DRIVER.ReleaseName(name)) == (1,)                     # released
        assert call(b, DRIVER.ReleaseName(name)) == (3,)                     # not owner
        assert call(a, DRIVER.GetNameOwner(name)) == (a.unique_name,)
        assert call(a, DRIVER.RequestName(name, allow_replacement | do_not_queue)) == (4,)
        assert call(b, DRIVER.RequestName(name, replace | do_not_queue)) == (1,)
        assert call(a, DRIVER.ListQueuedOwners(name)) == ([b.unique_name],)
        assert call(a, DRIVER.ReleaseName(name)) == (3,)                     # not owner
        assert call(b, DRIVER.ReleaseName(name)) == (1,)
        assert call(b, DRIVER.ReleaseName(name)) == (2,)                     # no such name
        assert call(a, DRIVER.NameHasOwner(name)) == (False,)
        with pytest.raises(DBusErrorResponse) as e:
            call(a, DRIVER.GetNameOwner(name))
        assert e.value.name == "org.freedesktop.DBus.Error.NameHasNoOwner"
        with pytest.raises(DBusErrorResponse) as e:
            call(a, DRIVER.RequestName(":1.99"))
        assert e.value.name == "org.freedesktop.DBus.Error.InvalidArgs"


def test_name_acquired_and_lost_signals(world):
    address = world.bridge()
    with connect(address) as a, connect(address) as b:
        mine = MatchRule(type="signal", sender="org.freedesktop.DBus")
        with a.filter(mine) as a_sig, b.filter(mine) as b_sig:
            name = "org.example.Moving"
            assert call(a, DRIVER.RequestName(name, 1)) == (1,)
            # dbus-daemon's order: NameAcquired arrives before the RequestName reply
            assert len(a_sig) == 1
            acquired = a_sig.popleft()
            assert (acquired.header.fields[HeaderFields.member], acquired.body) == \
                ("NameAcquired", (name,))
            assert acquired.header.fields[HeaderFields.destination] == a.unique_name
            assert call(b, DRIVER.RequestName(name, 2)) == (1,)
            lost = a.recv_until_filtered(a_sig, timeout=10)
            assert (lost.header.fields[HeaderFields.member], lost.body) == ("NameLost", (name,))
            assert b_sig.popleft().body == (name,)  # b's NameAcquired


def test_match_rules_add_remove_and_errors(world):
    address = world.bridge()
    with connect(address) as listener, connect(address) as sender:
        rule = MatchRule(type="signal", interface="org.example.M", member="Go")
        rule.add_arg_condition(0, "yes")
        call(listener, DRIVER.AddMatch(rule))
        iface = DBusAddress("/p", interface="org.example.M")
        from jeepney import new_signal
        everything = MatchRule(type="signal", interface="org.example.M")
        with listener.filter(everything) as got:
            sender.send(new_signal(iface, "Go", "s", ("no",)))
            sender.send(new_signal(iface, "Go", "s", ("yes",)))
            msg = listener.recv_until_filtered(got, timeout=10)
            assert msg.body == ("yes",) and len(got) == 0
            call(listener, DRIVER.RemoveMatch(rule))
            sender.send(new_signal(iface, "Go", "s", ("yes",)))
            # a call round trip later, nothing arrived
            call(sender, DRIVER.ListNames())
            call(listener, DRIVER.ListNames())
            assert len(got) == 0
        with pytest.raises(DBusErrorResponse) as e:
            call(listener, DRIVER.RemoveMatch(rule))
        assert e.value.name == "org.freedesktop.DBus.Error.MatchRuleNotFound"
        bad = new_method_call(DBusAddress("/org/freedesktop/DBus", "org.freedesktop.DBus",
                                          "org.freedesktop.DBus"), "AddMatch", "s",
                              ("type='nonsense'",))
        with pytest.raises(DBusErrorResponse) as e:
            call(listener, bad)
        assert e.value.name == "org.freedesktop.DBus.Error.MatchRuleInvalid"


def test_sender_rule_with_well_known_name(world):
    address = world.bridge()
    with connect(address) as listener, connect(address) as a, connect(address) as b:
        from jeepney import new_signal
        call(a, DRIVER.RequestName("org.example.Named"))
        call(listener, DRIVER.AddMatch(MatchRule(type="signal", sender="org.example.Named")))
        everything = MatchRule(type="signal", interface="org.example.S")
        with listener.filter(everything) as got:
            b.send(new_signal(DBusAddress("/s", interface="org.example.S"), "FromB"))
            a.send(new_signal(DBusAddress("/s", interface="org.example.S"), "FromA"))
            msg = listener.recv_until_filtered(got, timeout=10)
            assert msg.header.fields[HeaderFields.member] == "FromA" and len(got) == 0


def test_client_to_client_calls_and_no_reply(world):
    address = world.bridge("--reply-timeout", "1")
    with connect(address) as caller, connect(address) as silent:
        call(silent, DRIVER.RequestName("org.example.Silent"))
        target = DBusAddress("/", "org.example.Silent", "org.example.Silent")
        # the callee receives the call with the caller as sender and the serial as sent
        msg = new_method_call(target, "Hang")
        caller.send(msg, serial=77)
        got = silent.receive(timeout=10)
        assert got.header.fields[HeaderFields.sender] == caller.unique_name
        assert got.header.serial == 77
        # it never answers: after --reply-timeout the caller gets NoReply
        with pytest.raises(DBusErrorResponse) as e:
            call(caller, new_method_call(target, "Hang"), timeout=10)
        assert e.value.name == "org.freedesktop.DBus.Error.NoReply"


def test_callee_disconnecting_gives_no_reply(world):
    address = world.bridge()
    with connect(address) as caller:
        script = ("from jeepney.io.blocking import open_dbus_connection as o\n"
                  "from jeepney import message_bus as b\n"
                  f"c = o(bus={address!r})\n"
                  "c.send_and_get_reply(b.RequestName('org.example.Dying'))\n"
                  "print('ready', flush=True)\n"
                  "c.receive(timeout=20)\n")  # takes the call, then exits unanswered
        dying = world.spawn([sys.executable, "-c", script], "dying")
        assert dying.line() == "ready"
        target = DBusAddress("/", "org.example.Dying", "org.example.Dying")
        with pytest.raises(DBusErrorResponse) as e:
            call(caller, new_method_call(target, "Never"), timeout=15)
        assert e.value.name == "org.freedesktop.DBus.Error.NoReply"


def test_unix_fds_are_refused_cleanly(world):
    address = world.bridge()
    with pytest.raises(FDNegotiationError):
        open_dbus_connection(bus=address, enable_fds=True)
    # the bridge still serves others
    with connect(address) as conn:
        assert conn.unique_name.startswith(":1.")


def _sasl(path: str, lines: bytes) -> bytes:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"\0" + lines)
        out = b""
        while b"\r\n" not in out:
            chunk = s.recv(4096)
            if not chunk:
                break
            out += chunk
        return out


def test_authentication(world):
    address = world.bridge()
    path = address.split("=", 1)[1]
    own = str(os.getuid()).encode().hex().encode()
    assert _sasl(path, b"AUTH EXTERNAL " + own + b"\r\n").startswith(b"OK ")
    other = str(os.getuid() + 1234).encode().hex().encode()
    assert _sasl(path, b"AUTH EXTERNAL " + other + b"\r\n") == b"REJECTED EXTERNAL\r\n"
    assert _sasl(path, b"AUTH ANONYMOUS\r\n") == b"REJECTED EXTERNAL\r\n"
    assert _sasl(path, b"AUTH EXTERNAL\r\n") == b"DATA\r\n"


def test_other_uid_is_rejected(world):
    address = world.bridge("--debug")
    bridge = world.children[-1]
    path = address.split("=", 1)[1]
    os.chmod(os.path.dirname(path), 0o755)
    os.chmod(path, 0o666)  # let the other uid reach the bridge, which must then refuse it
    p = run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             require("dbus-send"), f"--bus={address}", "--reply-timeout=5000", "--print-reply",
             "--dest=org.freedesktop.DBus", "/", "org.freedesktop.DBus.ListNames"], check=False)
    # libdbus words the REJECTED as "Failed to register": no Hello was answered
    assert p.returncode != 0 and "org.freedesktop.DBus" not in p.stdout
    eventually(lambda: "uid=65534 unregistered>: the client closed" in bridge.stderr())
    assert "uid=65534 :1." not in bridge.stderr()


def test_client_leaving_releases_names_and_is_announced(world):
    address = world.bridge()
    with connect(address) as watcher:
        noc = MatchRule(type="signal", sender="org.freedesktop.DBus", member="NameOwnerChanged")
        call(watcher, DRIVER.AddMatch(noc))
        with watcher.filter(noc) as changes:
            leaving = connect(address)
            who = leaving.unique_name
            call(leaving, DRIVER.RequestName("org.example.Leaving"))
            leaving.close()
            seen = set()
            while ("org.example.Leaving", who, "") not in seen or (who, who, "") not in seen:
                seen.add(watcher.recv_until_filtered(changes, timeout=10).body)
            assert (who, "", who) in seen and ("org.example.Leaving", "", who) in seen
        assert call(watcher, DRIVER.NameHasOwner("org.example.Leaving")) == (False,)


def test_bus_going_away_disconnects_clients(world):
    address = world.bridge()
    conn = connect(address)
    try:
        world.bus.close()
        with pytest.raises((ConnectionError, EOFError, OSError)):
            # the bridge closes the socket once the kdbus connection is reset
            for _ in range(100):
                conn.receive(timeout=10)
    finally:
        conn.close()


def test_become_monitor(world):
    address = world.bridge()
    with connect(address) as mon, connect(address) as a, connect(address) as b:
        become = new_method_call(
            DBusAddress("/org/freedesktop/DBus", "org.freedesktop.DBus",
                        "org.freedesktop.DBus.Monitoring"), "BecomeMonitor", "asu",
            (["type='method_call'"], 0))
        assert call(mon, become) == ()
        call(b, DRIVER.RequestName("org.example.Watched"))
        a.send(new_method_call(DBusAddress("/w", "org.example.Watched", "org.example.W"),
                               "Seen", "s", ("x",)))
        msg = eventually(lambda: _next_call(mon))
        assert msg.header.fields[HeaderFields.member] == "Seen"
        assert msg.header.fields[HeaderFields.sender] == a.unique_name
        assert msg.body == ("x",)


def _next_call(conn):
    msg = conn.receive(timeout=10)
    return msg if msg.header.fields.get(HeaderFields.member) == "Seen" else None


def test_bridge_usage_errors(world, tmp_path):
    p = run([sys.executable, "-m", "kdbusfs", "bridge", "--bus", str(tmp_path / "nope"),
             "--listen", f"unix:path={tmp_path}/s"], check=False)
    assert p.returncode == 1 and "cannot connect to the bus" in p.stderr
    p = run([sys.executable, "-m", "kdbusfs", "bridge", "--bus", world.bus_dir,
             "--listen", "tcp:host=localhost"], check=False)
    assert p.returncode == 2 and "only unix: addresses" in p.stderr
    p = run([sys.executable, "-m", "kdbusfs", "bridge", "--help"])
    assert "--listen" in p.stdout and "SASL EXTERNAL" in p.stdout


def test_bridge_stops_on_sigterm_and_removes_its_socket(world):
    address = world.bridge()
    path = address.split("=", 1)[1]
    child = world.children[-1]
    child.proc.terminate()
    assert child.proc.wait(timeout=10) == 0
    assert not os.path.exists(path)


def test_big_endian_client_and_signals_to_the_driver(world):
    from jeepney import Endianness, new_signal
    address = world.bridge()
    with connect(address) as conn:
        msg = DRIVER.GetNameOwner("org.freedesktop.DBus")
        msg.header.endianness = Endianness.big
        assert call(conn, msg) == ("org.freedesktop.DBus",)
        # only calls reach the driver: a signal named like a method does nothing
        conn.send(new_signal(DBusAddress("/org/freedesktop/DBus", "org.freedesktop.DBus",
                                         "org.freedesktop.DBus"), "RequestName", "su",
                             ("org.example.Sneaky", 0)))
        assert call(conn, DRIVER.NameHasOwner("org.example.Sneaky")) == (False,)
        with pytest.raises(DBusErrorResponse) as e:
            call(conn, new_method_call(DBusAddress("/", ":2.5", "org.example.X"), "Y"))
        assert e.value.name == "org.freedesktop.DBus.Error.ServiceUnknown"


def test_unicast_signals_need_no_match_rule(world):
    from jeepney import new_signal
    address = world.bridge()
    with connect(address) as target, connect(address) as sender:
        call(target, DRIVER.RequestName("org.example.Target"))
        everything = MatchRule(type="signal", interface="org.example.Uni")
        with target.filter(everything) as got:
            for dest in (target.unique_name, "org.example.Target"):
                sig = new_signal(DBusAddress("/u", interface="org.example.Uni"), "Hi")
                sig.header.fields[HeaderFields.destination] = dest
                sender.send(sig)
                msg = target.recv_until_filtered(got, timeout=10)
                assert msg.header.fields[HeaderFields.destination] == dest
