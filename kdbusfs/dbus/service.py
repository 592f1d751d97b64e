"""Exported objects: interfaces declared in Python, and how calls reach them.

    class Echo(Interface, name="org.example.Echo"):
        Echoed = signal("s")

        @method("s", "s")
        async def Echo(self, text):          # plain functions work too
            return text

        @method("ii", "ii")
        def Swap(self, a, b):
            return b, a                      # several out args: a tuple

    bus.export("/org/example/Echo", Echo())

A method raises DBusError to answer with that error; any other exception
answers org.freedesktop.DBus.Error.Failed.  Every exported path (and every
node above one) also answers org.freedesktop.DBus.Introspectable and
org.freedesktop.DBus.Peer.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Any, Callable
from xml.sax.saxutils import quoteattr

from jeepney import HeaderFields, Message

from . import errors
from .errors import DBusError
from .signature import is_valid_signature, split_signature

log = logging.getLogger("kdbusfs.dbus")

INTROSPECTABLE = "org.freedesktop.DBus.Introspectable"
PEER = "org.freedesktop.DBus.Peer"
DOCTYPE = ('<!DOCTYPE node PUBLIC "-//freedesktop//DTD D-BUS Object Introspection 1.0//EN"\n'
           ' "http://www.freedesktop.org/standards/dbus/1.0/introspect.dtd">\n')
_STANDARD_XML = (
    f'  <interface name="{INTROSPECTABLE}">\n'
    '    <method name="Introspect"><arg name="xml" type="s" direction="out"/></method>\n'
    '  </interface>\n'
    f'  <interface name="{PEER}">\n'
    '    <method name="Ping"/>\n'
    '    <method name="GetMachineId"><arg name="id" type="s" direction="out"/></method>\n'
    '  </interface>\n')


@dataclass(frozen=True)
class MethodInfo:
    name: str
    in_signature: str
    out_signature: str
    attr: str


class method:
    """Decorator: export the function as a D-Bus method.

    ``in_signature`` types its arguments, ``out_signature`` its result
    (none: return None; one type: return the value; more: a tuple).
    ``name`` defaults to the function's name.
    """

    def __init__(self, in_signature: str = "", out_signature: str = "", *,
                 name: str | None = None):
        for sig in (in_signature, out_signature):
            if not is_valid_signature(sig):
                raise ValueError(f"invalid D-Bus signature {sig!r}")
        self.in_signature = in_signature
        self.out_signature = out_signature
        self.name = name

    def __call__(self, fn: Callable) -> Callable:
        fn._dbus_method = MethodInfo(self.name or fn.__name__, self.in_signature,
                                     self.out_signature, fn.__name__)
        return fn


class signal:
    """A declared signal (for introspection): ``Changed = signal("s")``.

    Emit it with ``bus.emit(path, Interface.dbus_interface, "Changed", "s", (value,))``
    or ``await obj.Changed.emit(bus, path, value)``.
    """

    def __init__(self, signature: str = "", *, name: str | None = None):
        if not is_valid_signature(signature):
            raise ValueError(f"invalid D-Bus signature {signature!r}")
        self.signature = signature
        self.name = name
        self.interface: str | None = None

    def __set_name__(self, owner, attr: str) -> None:
        if self.name is None:
            self.name = attr

    async def emit(self, bus, path: str, *args, destination: str | None = None) -> None:
        await bus.emit(path, self.interface, self.name, self.signature, args,
                       destination=destination)


class Interface:
    """Base class of exported interfaces; subclass with ``name="a.b.C"``."""

    dbus_interface: str = ""
    dbus_methods: dict[str, MethodInfo] = {}
    dbus_signals: dict[str, signal] = {}

    def __init_subclass__(cls, name: str | None = None, **kwargs):
        super().__init_subclass__(**kwargs)
        if name is not None:
            cls.dbus_interface = name
        if not cls.dbus_interface:
            raise TypeError(f"{cls.__name__}: give the interface a name: "
                            f"class {cls.__name__}(Interface, name='org.example.Name')")
        methods: dict[str, MethodInfo] = {}
        signals: dict[str, signal] = {}
        for klass in reversed(cls.__mro__):
            for value in vars(klass).values():
                info = getattr(value, "_dbus_method", None)
                if info is not None:
                    methods[info.name] = info
                elif isinstance(value, signal):
                    signals[value.name] = value
        for sig in signals.values():
            sig.interface = cls.dbus_interface
        cls.dbus_methods = methods
        cls.dbus_signals = signals

    @classmethod
    def introspection_xml(cls) -> str:
        lines = [f"  <interface name={quoteattr(cls.dbus_interface)}>"]
        for info in cls.dbus_methods.values():
            args = [f'<arg type="{t}" direction="in"/>' for t in split_signature(info.in_signature)]
            args += [f'<arg type="{t}" direction="out"/>'
                     for t in split_signature(info.out_signature)]
            lines.append(f"    <method name={quoteattr(info.name)}>{''.join(args)}</method>")
        for sig in cls.dbus_signals.values():
            args = "".join(f'<arg type="{t}"/>' for t in split_signature(sig.signature))
            lines.append(f"    <signal name={quoteattr(sig.name)}>{args}</signal>")
        lines.append("  </interface>")
        return "\n".join(lines) + "\n"


class ObjectTree:
    """The objects a connection exports, by path."""

    def __init__(self, machine_id: Callable[[], str]):
        self._objects: dict[str, dict[str, Interface]] = {}
        self._machine_id = machine_id

    def export(self, path: str, *objects: Interface) -> None:
        if not path.startswith("/") or (path != "/" and path.endswith("/")):
            raise ValueError(f"{path!r} is not an object path")
        ifaces = self._objects.setdefault(path, {})
        for obj in objects:
            if not isinstance(obj, Interface):
                raise TypeError(f"{obj!r} is not an Interface")
            ifaces[obj.dbus_interface] = obj

    def unexport(self, path: str) -> None:
        self._objects.pop(path, None)

    def _children(self, path: str) -> list[str]:
        prefix = path.rstrip("/") + "/"
        return sorted({p[len(prefix):].split("/")[0] for p in self._objects
                       if p.startswith(prefix) and p != path})

    def introspect(self, path: str) -> str:
        ifaces = self._objects.get(path, {})
        children = self._children(path)
        if not ifaces and not children and path not in self._objects:
            raise DBusError(errors.UNKNOWN_OBJECT, f"No object at {path}")
        body = _STANDARD_XML + "".join(type(o).introspection_xml() for o in ifaces.values())
        body += "".join(f'  <node name="{c}"/>\n' for c in children)
        return f"{DOCTYPE}<node>\n{body}</node>\n"

    def resolve(self, msg: Message) -> tuple[Callable[..., Any], str]:
        """(callable taking the body, out signature) for a method call;
        DBusError when nothing here answers it."""
        f = msg.header.fields
        path = f.get(HeaderFields.path, "/")
        iface = f.get(HeaderFields.interface)
        member = f.get(HeaderFields.member, "")
        sig = f.get(HeaderFields.signature, "")
        if iface in (None, INTROSPECTABLE) and member == "Introspect" and sig == "":
            return (lambda: self.introspect(path)), "s"
        if iface in (None, PEER) and member == "Ping" and sig == "":
            return (lambda: None), ""
        if iface in (None, PEER) and member == "GetMachineId" and sig == "":
            return self._machine_id, "s"
        ifaces = self._objects.get(path)
        if ifaces is None:
            raise DBusError(errors.UNKNOWN_OBJECT, f"No object at {path}")
        candidates = [ifaces[iface]] if iface in ifaces else (
            [] if iface is not None else list(ifaces.values()))
        if iface is not None and not candidates:
            raise DBusError(errors.UNKNOWN_INTERFACE, f"{path} has no interface {iface}")
        for obj in candidates:
            info = obj.dbus_methods.get(member)
            if info is None:
                continue
            if sig != info.in_signature:
                raise DBusError(errors.INVALID_ARGS, f"{member} takes ({info.in_signature}), "
                                f"not ({sig})")
            return getattr(obj, info.attr), info.out_signature
        raise DBusError(errors.UNKNOWN_METHOD, f"{path} has no method {member}"
                        + (f" in {iface}" if iface else ""))


async def run_method(fn: Callable[..., Any], out_signature: str, body: tuple) -> tuple:
    """Call an exported method (awaiting it if it is async) and shape its
    result as a body for ``out_signature``."""
    result = fn(*body)
    if inspect.isawaitable(result):
        result = await result
    n = len(split_signature(out_signature))
    if n == 0:
        return ()
    if n == 1:
        return (result,)
    result = tuple(result)
    if len(result) != n:
        raise DBusError(errors.FAILED, f"the method returned {len(result)} values for "
                        f"({out_signature})")
    return result
