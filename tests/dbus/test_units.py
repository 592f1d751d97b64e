"""Pure parts of the D-Bus layer: match rules, SASL, the kdbus<->D-Bus
translation, kdbusctl's value notation and bridge addresses."""

from __future__ import annotations

import pytest
from jeepney import HeaderFields, Message, MessageFlag, MessageType

from kdbusfs.abi import constants as C
from kdbusfs.bridge.address import AddressError, UnixAddress, parse_addresses
from kdbusfs.bridge.sasl import AuthError, SaslServer
from kdbusfs.client import IdNotification, NameNotification, ReplyNotification
from kdbusfs.client import Message as KMessage
from kdbusfs.client import OwnedName
from kdbusfs.ctl.values import ValueSyntaxError, format_values, parse_values
from kdbusfs.dbus.bus import BusBase
from kdbusfs.dbus.matches import notification_entries
from kdbusfs.dbus.names import parse_unique_name, unique_name
from kdbusfs.dbus.rules import MatchRule, MatchRuleError
from kdbusfs.dbus.signature import split_signature
from kdbusfs.dbus.wire import Wire

# ----------------------------------------------------------------------
# names and signatures


def test_unique_names():
    assert unique_name(42) == ":1.42"
    assert parse_unique_name(":1.42") == 42
    for bad in (":1.0", ":1.042", ":2.5", "org.x", ":1.", ":1.x"):
        assert parse_unique_name(bad) is None, bad


def test_split_signature():
    assert split_signature("sa{sv}(ia(ss))v") == ["s", "a{sv}", "(ia(ss))", "v"]
    for bad in ("a", "(i", "()", "z", "a{s"):
        with pytest.raises(ValueError):
            split_signature(bad)


# ----------------------------------------------------------------------
# match rules


def sig(path="/a/b", iface="org.example.I", member="M", signature="", body=(),
        sender=":1.7", destination=None) -> Message:
    m = BusBase.signal_message(path, iface, member, signature, body, destination)
    m.header.fields[HeaderFields.sender] = sender
    return m


def test_rule_parsing_quoting_and_equality():
    r = MatchRule.parse("type='signal', interface='org.example.I',arg0='don'\\''t',"
                        "arg2path='/x/',eavesdrop='true'")
    assert r.type == "signal" and r.interface == "org.example.I"
    assert r.args == ((0, "don't"),) and r.arg_paths == ((2, "/x/"),) and r.eavesdrop
    assert MatchRule.parse(str(r)) == r
    # the same rule written differently is the same rule (RemoveMatch finds it)
    assert MatchRule.parse("interface=org.example.I,type=signal") == \
        MatchRule.parse("type='signal',interface='org.example.I'")
    assert MatchRule.parse("") == MatchRule()


@pytest.mark.parametrize("text", [
    "type='bogus'", "interface='noperiod'", "member='1x'", "path='a/b'", "path='/a/'",
    "sender='not a name'", "arg64='x'", "arg1namespace='a.b'", "unknown='x'",
    "type='signal',type='signal'", "arg0='a',arg0path='/a'", "path='/a',path_namespace='/a'",
    "interface='org.x", "noequals", "eavesdrop='maybe'",
])
def test_invalid_rules(text):
    with pytest.raises(MatchRuleError):
        MatchRule.parse(text)


def test_rule_matching():
    m = sig(signature="sos", body=("org.example.Foo", "/x/y/", "z"))
    yes = ["", "type='signal'", "sender=':1.7'", "interface='org.example.I'", "member='M'",
           "path='/a/b'", "path_namespace='/a'", "path_namespace='/a/b'", "path_namespace='/'",
           "arg0='org.example.Foo'", "arg1='/x/y/'", "arg0namespace='org.example'",
           "arg0namespace='org.example.Foo'", "arg1path='/x/'", "arg1path='/x/y/z'",
           "arg1path='/x/y/'", "sender='org.example.Owner'"]
    no = ["type='method_call'", "sender=':1.8'", "interface='org.example.J'", "path='/a'",
          "path_namespace='/a/b/c'", "path_namespace='/a/bb'", "arg0='org.example'",
          "arg0namespace='org.exam'", "arg1path='/x'", "arg2='y'", "arg5='z'",
          "destination=':1.9'", "sender='org.example.Other'"]
    for text in yes:
        assert MatchRule.parse(text).matches(m, {"org.example.Owner"}), text
    for text in no:
        assert not MatchRule.parse(text).matches(m, {"org.example.Owner"}), text


def test_notification_entries_for_driver_rules():
    def kinds(text):
        return sorted(r.type for r in notification_entries(MatchRule.parse(text)))
    names = sorted([C.KDBUS_ITEM_NAME_ADD, C.KDBUS_ITEM_NAME_CHANGE, C.KDBUS_ITEM_NAME_REMOVE])
    ids = sorted([C.KDBUS_ITEM_ID_ADD, C.KDBUS_ITEM_ID_REMOVE])
    assert kinds("type='signal'") == sorted(names + ids)
    assert kinds("sender='org.freedesktop.DBus',arg0='org.x.Y'") == names
    assert kinds("member='NameOwnerChanged',arg0=':1.5'") == ids
    for text in ("interface='org.example.I'", "sender=':1.5'", "member='Other'",
                 "type='method_call'", "path='/x'", "member='NameAcquired'"):
        assert kinds(text) == [], text


# ----------------------------------------------------------------------
# SASL


def feed_all(server: SaslServer, *chunks: bytes) -> bytes:
    return b"".join(server.feed(c) for c in chunks)


def test_sasl_libdbus_style():
    s = SaslServer(1000, "ab" * 16, frozenset({1000}))
    out = feed_all(s, b"\0AUTH EXTERNAL " + b"1000".hex().encode() + b"\r\n",
                   b"NEGOTIATE_UNIX_FD\r\n", b"BEGIN\r\n")
    assert out == b"OK " + b"ab" * 16 + b"\r\nERROR kdbusfs bridge does not pass unix fds\r\n"
    assert s.done and s.leftover == b""


def test_sasl_sd_bus_pipelined_with_data_and_message_bytes():
    s = SaslServer(0, "cd" * 16, frozenset({0}))
    out = s.feed(b"\0AUTH EXTERNAL\r\nDATA\r\nNEGOTIATE_UNIX_FD\r\nBEGIN\r\nl\x01\x00\x01rest")
    assert out.startswith(b"DATA\r\nOK ") and out.endswith(b"ERROR kdbusfs bridge does not "
                                                           b"pass unix fds\r\n")
    assert s.done and s.leftover == b"l\x01\x00\x01rest"


def test_sasl_rejections():
    s = SaslServer(1000, "0" * 32, frozenset({1000}))
    assert s.feed(b"\0AUTH\r\n") == b"REJECTED EXTERNAL\r\n"
    assert s.feed(b"AUTH EXTERNAL " + b"0".hex().encode() + b"\r\n") == b"REJECTED EXTERNAL\r\n"
    assert s.feed(b"AUTH EXTERNAL zz\r\n") == b"REJECTED EXTERNAL\r\n"
    with pytest.raises(AuthError):
        s.feed(b"BEGIN\r\n")
    # the peer's own uid, but one the bridge does not serve
    s = SaslServer(1000, "0" * 32, frozenset({0}))
    assert s.feed(b"\0AUTH EXTERNAL " + b"1000".hex().encode() + b"\r\n") == \
        b"REJECTED EXTERNAL\r\n"
    with pytest.raises(AuthError):
        SaslServer(0, "0" * 32, frozenset({0})).feed(b"AUTH EXTERNAL 30\r\n")  # no NUL
    s = SaslServer(0, "0" * 32, frozenset({0}))
    s.feed(b"\0")
    with pytest.raises(AuthError):  # a client that keeps failing is dropped
        for _ in range(20):
            s.feed(b"AUTH ANONYMOUS\r\n")


# ----------------------------------------------------------------------
# kdbus -> D-Bus


def kmsg(**fields) -> KMessage:
    return KMessage(**fields)


def test_received_message_takes_the_kernels_word():
    wire = Wire(5, 64, 1)
    call = BusBase.method_call("org.example.X", "/", "org.example.X", "Do", "s", ("a",))
    call.header.fields[HeaderFields.sender] = ":1.999"  # a lie in the payload
    call.header.serial = 1
    payload = call.serialise()
    [d] = wire.receive(kmsg(payload_type=C.KDBUS_PAYLOAD_DBUS, payload=payload, src_id=9,
                            dst_id=0, dst_name="org.example.X", cookie=31, flags=0,
                            names=[OwnedName("org.example.Nine", C.KDBUS_NAME_PRIMARY)]))
    f = d.message.header.fields
    assert f[HeaderFields.sender] == ":1.9" and d.message.header.serial == 31
    # sent without EXPECT_REPLY: the receiver must not answer
    assert d.message.header.flags & MessageFlag.no_reply_expected
    assert d.addressed and d.sender_names == {"org.example.Nine"}
    # a reply's serial comes from cookie_reply; an unmatched "reply" is dropped
    ret = Message(call.header, ())
    ret.header.message_type = MessageType.method_return
    ret.header.fields = {HeaderFields.reply_serial: 1234, HeaderFields.sender: ":1.1"}
    payload = ret.serialise()
    [d] = wire.receive(kmsg(payload_type=C.KDBUS_PAYLOAD_DBUS, payload=payload, src_id=9,
                            dst_id=5, cookie=32, cookie_reply=7))
    assert d.message.header.fields[HeaderFields.reply_serial] == 7
    assert wire.receive(kmsg(payload_type=C.KDBUS_PAYLOAD_DBUS, payload=payload, src_id=9,
                             dst_id=5, cookie=33, cookie_reply=0)) == []
    # not D-Bus, or garbage: nothing
    assert wire.receive(kmsg(payload_type=0x1234, payload=b"x", src_id=9, cookie=1)) == []
    assert wire.receive(kmsg(payload_type=C.KDBUS_PAYLOAD_DBUS, payload=b"garbage",
                             src_id=9, cookie=1)) == []


def _driver(deliveries):
    return [(d.message.header.fields[HeaderFields.member], d.message.body,
             d.message.header.fields.get(HeaderFields.destination)) for d in deliveries]


def test_notifications_become_driver_signals():
    wire = Wire(5, 64, 1)
    broadcast = C.KDBUS_DST_ID_BROADCAST

    def note(n, **kw):
        return wire.receive(kmsg(notification=n, dst_id=broadcast, flags=C.KDBUS_MSG_SIGNAL,
                                 **kw))
    assert _driver(note(IdNotification(C.KDBUS_ITEM_ID_ADD, 8, 0))) == \
        [("NameOwnerChanged", (":1.8", "", ":1.8"), None)]
    assert _driver(note(IdNotification(C.KDBUS_ITEM_ID_REMOVE, 8, 0))) == \
        [("NameOwnerChanged", (":1.8", ":1.8", ""), None)]
    assert note(IdNotification(C.KDBUS_ITEM_ID_ADD, 8, C.KDBUS_HELLO_ACTIVATOR)) == []
    primary = C.KDBUS_NAME_PRIMARY
    assert _driver(note(NameNotification(C.KDBUS_ITEM_NAME_CHANGE, "a.b", 5, primary, 8,
                                         primary))) == \
        [("NameOwnerChanged", ("a.b", ":1.5", ":1.8"), None), ("NameLost", ("a.b",), ":1.5")]
    assert _driver(note(NameNotification(C.KDBUS_ITEM_NAME_ADD, "a.b", 0, 0, 5, primary))) == \
        [("NameOwnerChanged", ("a.b", "", ":1.5"), None), ("NameAcquired", ("a.b",), ":1.5")]
    # an activator is nobody to D-Bus
    act = C.KDBUS_NAME_ACTIVATOR | primary
    assert note(NameNotification(C.KDBUS_ITEM_NAME_ADD, "a.b", 0, 0, 9, act)) == []
    assert _driver(note(NameNotification(C.KDBUS_ITEM_NAME_CHANGE, "a.b", 9, act, 8,
                                         primary))) == \
        [("NameOwnerChanged", ("a.b", "", ":1.8"), None)]
    [d] = wire.receive(kmsg(notification=ReplyNotification(C.KDBUS_ITEM_REPLY_TIMEOUT, 77),
                            dst_id=5, cookie_reply=77))
    h = d.message.header
    assert h.message_type == MessageType.error and h.fields[HeaderFields.reply_serial] == 77
    assert h.fields[HeaderFields.error_name] == "org.freedesktop.DBus.Error.NoReply"
    assert d.addressed


# ----------------------------------------------------------------------
# kdbusctl values and bridge addresses


def test_values_roundtrip():
    words = 'hi 2 one s x two i 2 -5 yes 3 1 2 255 as 2 a b 1.5'.split()
    values = parse_values("sa{sv}(ib)ayvd", words)
    assert values == ("hi", {"one": ("s", "x"), "two": ("i", 2)}, (-5, True), b"\x01\x02\xff",
                      ("as", ["a", "b"]), 1.5)
    assert format_values("sa{sv}(ib)ayvd", values) == \
        'sa{sv}(ib)ayvd "hi" 2 "one" s "x" "two" i 2 -5 true 3 1 2 255 as 2 "a" "b" 1.5'


@pytest.mark.parametrize("signature,words", [
    ("i", ["x"]), ("y", ["256"]), ("u", ["-1"]), ("b", ["maybe"]), ("s", []),
    ("s", ["a", "b"]), ("as", ["two"]), ("v", ["ii", "1", "2"]), ("h", ["3"]), ("a{", []),
])
def test_value_errors(signature, words):
    with pytest.raises(ValueSyntaxError):
        parse_values(signature, words)


def test_addresses():
    assert parse_addresses("unix:path=/run/x%20y.sock") == [UnixAddress("/run/x y.sock")]
    assert parse_addresses("unix:abstract=kd;unix:path=/a,guid=00") == \
        [UnixAddress("kd", abstract=True), UnixAddress("/a")]
    assert str(UnixAddress("/run/x y")) == "unix:path=/run/x%20y"
    for bad in ("tcp:host=x", "unix:", "unix:path=/a,abstract=b", "unix:tmpdir=/tmp", ""):
        with pytest.raises(AddressError):
            parse_addresses(bad)
