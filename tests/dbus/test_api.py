"""The D-Bus API of kdbusfs.dbus directly over kdbus (no bridge), on trio and
on asyncio, and what it puts on the bus as native kdbus clients see it."""

from __future__ import annotations

import asyncio

import pytest
import trio
from jeepney import HeaderFields, Message, MessageType

from kdbusfs.abi import constants as C
from kdbusfs.client import Connection, make_bus
from kdbusfs.dbus.bloom import rule_mask
from kdbusfs.dbus.bus import BusBase
from kdbusfs.dbus.errors import DBusError
from kdbusfs.dbus.io import asyncio as dbus_asyncio
from kdbusfs.dbus.io import trio as dbus_trio
from kdbusfs.dbus.names import unique_name
from kdbusfs.dbus.peer import Peer
from kdbusfs.dbus.rules import MatchRule
from kdbusfs.dbus.service import Interface, method, signal

pytestmark = pytest.mark.timeout(60)


class Calc(Interface, name="org.example.Calc"):
    Added = signal("i")

    @method("ii", "i")
    def Add(self, a, b):
        return a + b

    @method("s", "s")
    async def Slow(self, text):
        await trio.sleep(30)
        return text

    @method("", "")
    def Boom(self):
        raise RuntimeError("kaput")


@pytest.fixture
def bus(mount):
    b = make_bus(mount.path, "api", access="world")
    try:
        yield b
    finally:
        b.close()


def test_trio_calls_exports_and_errors(bus):
    async def main():
        async with dbus_trio.open_bus(bus.path) as svc, dbus_trio.open_bus(bus.path) as cli:
            svc.export("/calc", Calc())
            assert await svc.request_name("org.example.Calc") == 1
            assert await cli.call("org.example.Calc", "/calc", "org.example.Calc", "Add", "ii",
                                  (2, 3)) == (5,)
            # without an interface, the method is looked up in every interface
            assert await cli.call(svc.unique_name, "/calc", None, "Add", "ii", (1, 1)) == (2,)
            reply = await cli.call_message("org.example.Calc", "/calc", "org.example.Calc",
                                           "Add", "ii", (4, 4))
            assert reply.header.fields[HeaderFields.sender] == svc.unique_name
            assert reply.header.fields[HeaderFields.signature] == "i"
            cases = [
                (("org.example.Calc", "/calc", "org.example.Calc", "Add", "s", ("x",)),
                 "org.freedesktop.DBus.Error.InvalidArgs"),
                (("org.example.Calc", "/calc", "org.example.Calc", "Nope"),
                 "org.freedesktop.DBus.Error.UnknownMethod"),
                (("org.example.Calc", "/elsewhere", "org.example.Calc", "Add", "ii", (1, 2)),
                 "org.freedesktop.DBus.Error.UnknownObject"),
                (("org.example.Calc", "/calc", "org.example.Calc", "Boom"),
                 "org.freedesktop.DBus.Error.Failed"),
                (("org.example.Gone", "/", "org.example.X", "Y"),
                 "org.freedesktop.DBus.Error.ServiceUnknown"),
            ]
            for args, name in cases:
                with pytest.raises(DBusError) as e:
                    await cli.call(*args)
                assert e.value.name == name, args
            (xml,) = await cli.call("org.example.Calc", "/", None, "Introspect")
            assert '<node name="calc"/>' in xml
            (xml,) = await cli.call("org.example.Calc", "/calc",
                                    "org.freedesktop.DBus.Introspectable", "Introspect")
            assert '<method name="Add"><arg type="i" direction="in"/>' in xml
            assert '<signal name="Added"><arg type="i"/></signal>' in xml
            assert await cli.call("org.example.Calc", "/calc", "org.freedesktop.DBus.Peer",
                                  "Ping") == ()
    trio.run(main)


def test_trio_call_timeout_and_disconnect(bus):
    async def main():
        async with dbus_trio.open_bus(bus.path) as svc, dbus_trio.open_bus(bus.path) as cli:
            svc.export("/calc", Calc())
            with trio.fail_after(10):
                with pytest.raises(DBusError) as e:
                    await cli.call(svc.unique_name, "/calc", None, "Slow", "s", ("z",),
                                   timeout=0.5)
            assert e.value.name == "org.freedesktop.DBus.Error.NoReply"
            # the bus goes away while a call waits: it ends with Disconnected
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_close_soon, bus)
                with trio.fail_after(10):
                    with pytest.raises(DBusError) as e:
                        await cli.call(svc.unique_name, "/calc", None, "Slow", "s", ("z",))
            assert e.value.name in ("org.freedesktop.DBus.Error.Disconnected",
                                    "org.freedesktop.DBus.Error.NoReply")
    trio.run(main)


async def _close_soon(bus):
    await trio.sleep(0.3)
    bus.close()


def test_trio_signals_and_bus_driver_signals(bus):
    async def main():
        async with dbus_trio.open_bus(bus.path) as a, dbus_trio.open_bus(bus.path) as b:
            rule = "type='signal',interface='org.example.Calc',member='Added',arg0='ok'"
            owner_rule = ("type='signal',sender='org.freedesktop.DBus',"
                          "member='NameOwnerChanged',arg0='org.example.Named'")
            async with b.subscribe(rule) as added, b.subscribe(owner_rule) as owners, \
                    b.subscribe("type='signal',member='NameAcquired'") as acquired:
                await a.emit("/calc", "org.example.Calc", "Added", "s", ("not ok",))
                await a.emit("/calc", "org.example.Calc", "Added", "s", ("ok",))
                await a.request_name("org.example.Named")
                await b.request_name("org.example.Mine")
                with trio.fail_after(10):
                    msg = await added.receive()
                    assert msg.body == ("ok",)
                    assert msg.header.fields[HeaderFields.sender] == a.unique_name
                    change = await owners.receive()
                    assert change.body == ("org.example.Named", "", a.unique_name)
                    got = await acquired.receive()
                    # NameAcquired is b's own, addressed to b
                    assert got.body == ("org.example.Mine",)
                    assert got.header.fields[HeaderFields.destination] == b.unique_name
                with trio.move_on_after(0.3):
                    extra = await added.receive()
                    raise AssertionError(f"unexpected {extra}")
    trio.run(main)


def test_unmatched_signals_stay_out_of_the_kdbus_queue(bus):
    """Bloom masks do the filtering in the kernel: a signal no rule admits
    is never queued for the subscriber."""
    with Peer.open(bus.path) as listener, Peer.open(bus.path) as sender:
        listener.matches.add(MatchRule.parse(
            "type='signal',interface='org.example.A',path_namespace='/a'"))
        assert listener.conn.recv() is None
        for path, iface in (("/a/x", "org.example.B"), ("/b", "org.example.A"),
                            ("/ab", "org.example.A")):
            msg = BusBase.signal_message(path, iface, "S")
            msg.header.serial = 1
            sender.send(msg)
        assert listener.conn.recv() is None
        msg = BusBase.signal_message("/a/x/y", "org.example.A", "S")
        msg.header.serial = 2
        sender.send(msg)
        got = listener.receive()
        assert [d.message.header.fields[HeaderFields.path] for d in got] == ["/a/x/y"]


def test_dbus_messages_on_the_wire_for_native_clients(bus):
    """What a plain kdbusfs.client connection sees of a kdbusfs.dbus signal:
    payload type DBUS, cookie = serial, a bloom filter its masks can test."""
    with Peer.open(bus.path) as sender, Connection.open(bus.path) as raw:
        rule = MatchRule.parse("type='signal',interface='org.example.Raw',member='Ping'")
        raw.add_match(1, bloom_mask=rule_mask(rule, raw.bloom_size, raw.bloom_n_hash))
        msg = BusBase.signal_message("/r", "org.example.Raw", "Ping", "s", ("hello",))
        msg.header.serial = 42
        sender.send(msg)
        other = BusBase.signal_message("/r", "org.example.Raw", "Pong", "s", ("no",))
        other.header.serial = 43
        sender.send(other)
        got = raw.recv_wait(5)
        assert got.payload_type == C.KDBUS_PAYLOAD_DBUS and got.cookie == 42
        assert got.is_signal and got.is_broadcast and got.src_id == sender.id
        decoded = Message.from_buffer(got.payload)
        assert decoded.header.endianness.name == "little"
        assert decoded.header.message_type == MessageType.signal
        assert decoded.body == ("hello",)
        assert decoded.header.fields[HeaderFields.sender] == unique_name(sender.id)
        assert raw.recv_wait(0.3) is None  # Pong's filter lacks member:Ping


def test_asyncio_api(bus):
    async def main():
        async with dbus_asyncio.open_bus(bus.path) as svc, \
                dbus_asyncio.open_bus(bus.path) as cli:

            class Async(Interface, name="org.example.Async"):
                @method("s", "s")
                async def Echo(self, text):
                    await asyncio.sleep(0)
                    return text.upper()

            svc.export("/async", Async())
            assert await svc.request_name("org.example.Async") == 1
            assert await cli.call("org.example.Async", "/async", "org.example.Async", "Echo",
                                  "s", ("hi",)) == ("HI",)
            assert "org.example.Async" in await cli.list_names()
            assert await cli.name_has_owner("org.example.Async") is True
            async with cli.subscribe("type='signal',interface='org.example.Async'") as q:
                await svc.emit("/async", "org.example.Async", "Done", "u", (7,))
                msg = await asyncio.wait_for(q.get(), 10)
                assert msg.body == (7,)
            with pytest.raises(DBusError) as e:
                await cli.call("org.example.Async", "/async", "org.example.Async", "Echo")
            assert e.value.name == "org.freedesktop.DBus.Error.InvalidArgs"
            with pytest.raises(DBusError) as e:
                await cli.get_name_owner("org.example.Nobody")
            assert e.value.name == "org.freedesktop.DBus.Error.NameHasNoOwner"
    asyncio.run(asyncio.wait_for(main(), 30))


def test_trio_and_asyncio_peers_on_one_bus(bus):
    """An asyncio service (in a thread) called from trio."""
    import threading
    ready = threading.Event()
    stop = threading.Event()

    async def serve():
        async with dbus_asyncio.open_bus(bus.path) as svc:
            svc.export("/calc", Calc())
            await svc.request_name("org.example.AsyncCalc")
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    t = threading.Thread(target=asyncio.run, args=(serve(),))
    t.start()
    try:
        assert ready.wait(10)

        async def main():
            async with dbus_trio.open_bus(bus.path) as cli:
                return await cli.call("org.example.AsyncCalc", "/calc", "org.example.Calc",
                                      "Add", "ii", (20, 22))
        assert trio.run(main) == (42,)
    finally:
        stop.set()
        t.join(10)


def test_unicast_signals_by_id_and_by_name(bus):
    """Unicast signals reach their destination without a broadcast rule,
    whether addressed to its unique name or to a name it owns; others do
    not see them."""
    async def main():
        async with dbus_trio.open_bus(bus.path) as a, dbus_trio.open_bus(bus.path) as b, \
                dbus_trio.open_bus(bus.path) as c:
            await b.request_name("org.example.Target")
            rule = "type='signal',interface='org.example.Uni'"
            async with b.subscribe(rule) as got, c.subscribe(rule) as other:
                # c's rule admits the broadcast kind, never b's unicasts
                await a.emit("/u", "org.example.Uni", "ById", destination=b.unique_name)
                await a.emit("/u", "org.example.Uni", "ByName", destination="org.example.Target")
                with trio.fail_after(10):
                    first, second = await got.receive(), await got.receive()
                assert [m.header.fields[HeaderFields.member] for m in (first, second)] == \
                    ["ById", "ByName"]
                assert second.header.fields[HeaderFields.destination] == "org.example.Target"
                with trio.move_on_after(0.3):
                    raise AssertionError(f"c saw {await other.receive()}")
    trio.run(main)
