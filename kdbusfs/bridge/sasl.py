"""The server side of D-Bus authentication (SASL EXTERNAL), sans I/O.

A client opens with one NUL byte, then speaks CRLF-terminated lines:
``AUTH EXTERNAL <hex of its uid>`` (or ``AUTH EXTERNAL`` and then
``DATA <hex>``, as sd-bus does), optionally ``NEGOTIATE_UNIX_FD``, then
``BEGIN``; after BEGIN the stream carries D-Bus messages.  Clients may
pipeline all of it in one write, so :meth:`SaslServer.feed` keeps the bytes
that follow BEGIN.

The claimed uid must be the socket peer's (SO_PEERCRED), and that uid must
be one the bridge serves.  Unix fd passing is refused (ERROR), which every
client takes as "no fds".
"""

from __future__ import annotations

MAX_LINE = 16384
MAX_REJECTIONS = 8


class AuthError(Exception):
    """The client broke the protocol or failed too often: drop it."""


class SaslServer:
    """Feed it the client's bytes; send back what :meth:`feed` returns."""

    def __init__(self, peer_uid: int, guid: str, allowed_uids: frozenset[int]):
        self.peer_uid = peer_uid
        self.guid = guid
        self.allowed_uids = allowed_uids
        self.authenticated = False
        self.done = False
        #: The bytes after BEGIN (the first D-Bus messages), once done.
        self.leftover = b""
        self._buf = b""
        self._got_nul = False
        self._waiting_for_data = False
        self._rejections = 0

    def feed(self, data: bytes) -> bytes:
        """Consume client bytes; returns the reply bytes to send."""
        self._buf += data
        out = b""
        if not self._got_nul and self._buf:
            if self._buf[0] != 0:
                raise AuthError("the client did not start with a NUL byte")
            self._got_nul = True
            self._buf = self._buf[1:]
        while not self.done:
            end = self._buf.find(b"\r\n")
            if end < 0:
                if len(self._buf) > MAX_LINE:
                    raise AuthError("authentication line too long")
                break
            line, self._buf = self._buf[:end], self._buf[end + 2:]
            out += self._line(line.decode("ascii", "replace"))
        if self.done:
            self.leftover, self._buf = self._buf, b""
        return out

    def _line(self, line: str) -> bytes:
        command, _, arg = line.partition(" ")
        if command == "AUTH":
            return self._auth(arg)
        if command == "DATA" and self._waiting_for_data:
            self._waiting_for_data = False
            return self._external(arg.strip())
        if command == "CANCEL" or command == "ERROR":
            self._waiting_for_data = False
            return self._reject()
        if command == "BEGIN":
            if not self.authenticated:
                raise AuthError("BEGIN before authentication")
            self.done = True
            return b""
        if command == "NEGOTIATE_UNIX_FD" and self.authenticated:
            return b"ERROR kdbusfs bridge does not pass unix fds\r\n"
        return b"ERROR unknown command or wrong state\r\n"

    def _auth(self, arg: str) -> bytes:
        if self.authenticated:
            return b"ERROR already authenticated\r\n"
        mechanism, _, response = arg.strip().partition(" ")
        if mechanism != "EXTERNAL":
            return self._reject()
        if not response:
            self._waiting_for_data = True
            return b"DATA\r\n"
        return self._external(response)

    def _external(self, hex_response: str) -> bytes:
        if hex_response:
            try:
                claimed = bytes.fromhex(hex_response).decode("ascii")
                uid = int(claimed)
            except ValueError:
                return self._reject()
        else:
            uid = self.peer_uid  # "whoever I am": the kernel's word
        if uid != self.peer_uid or uid not in self.allowed_uids:
            return self._reject()
        self.authenticated = True
        return f"OK {self.guid}\r\n".encode()

    def _reject(self) -> bytes:
        self._rejections += 1
        if self._rejections > MAX_REJECTIONS:
            raise AuthError("too many failed authentication attempts")
        return b"REJECTED EXTERNAL\r\n"
