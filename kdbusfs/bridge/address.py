"""D-Bus server addresses the bridge listens on: ``unix:path=FILE`` and
``unix:abstract=NAME`` (several may be joined with ``;``)."""

from __future__ import annotations

import errno
import os
import socket
from dataclasses import dataclass
from urllib.parse import quote, unquote


class AddressError(ValueError):
    pass


@dataclass(frozen=True)
class UnixAddress:
    path: str
    abstract: bool = False

    @property
    def sockaddr(self) -> str | bytes:
        return b"\0" + os.fsencode(self.path) if self.abstract else self.path

    def __str__(self) -> str:
        key = "abstract" if self.abstract else "path"
        return f"unix:{key}={quote(self.path, safe='/-_.')}"


def parse_addresses(text: str) -> list[UnixAddress]:
    """Parse a D-Bus address list; AddressError names what is wrong."""
    out = []
    for part in filter(None, text.split(";")):
        transport, sep, rest = part.partition(":")
        if not sep or transport != "unix":
            raise AddressError(f"{part!r}: only unix: addresses are supported")
        keys = {}
        for pair in filter(None, rest.split(",")):
            key, eq, value = pair.partition("=")
            if not eq:
                raise AddressError(f"{part!r}: {pair!r} is not key=value")
            keys[key] = unquote(value)
        keys.pop("guid", None)
        if set(keys) == {"path"} and keys["path"]:
            out.append(UnixAddress(keys["path"]))
        elif set(keys) == {"abstract"} and keys["abstract"]:
            out.append(UnixAddress(keys["abstract"], abstract=True))
        else:
            raise AddressError(f"{part!r}: give exactly one of path=... or abstract=...")
    if not out:
        raise AddressError("no address given")
    return out


def listen(address: UnixAddress, backlog: int = 64) -> socket.socket:
    """A listening socket at ``address``.  A stale socket file (nobody
    listening) is replaced; a live one gives EADDRINUSE."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        try:
            sock.bind(address.sockaddr)
        except OSError as e:
            if e.errno != errno.EADDRINUSE or address.abstract or not _is_stale(address.path):
                raise
            os.unlink(address.path)
            sock.bind(address.sockaddr)
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _is_stale(path: str) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        probe.connect(path)
    except ConnectionRefusedError:
        return True
    except OSError:
        return False
    finally:
        probe.close()
    return False
