"""A test process, maybe another uid or in other namespaces, driven by its parent.

    python -m tests.security.agent

It reads one JSON object per line on stdin, {"code": "...", "vars": {...}},
runs the code in a namespace that persists between lines (helpers from
tests/integration/rawabi.py and kdbusfs.client preloaded), and answers one
JSON line: {"ok": <the value of `_` after the code>} or {"err": "...",
"errno": n}.  fd 3, when open, is a unix socket to the parent for passing
file descriptors (send_fd / recv_fd).
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import socket
import struct
import sys
import time
import traceback

from kdbusfs.abi import constants as K
from kdbusfs.abi.items import encode_item
from tests.integration.rawabi import Buf, Conn, cmd, ioctl, make_bus, name_item, parse

libc = ctypes.CDLL(None, use_errno=True)


def chan() -> socket.socket:
    return socket.socket(fileno=int(os.environ["AGENT_SOCK"]))


_chan = None


def send_fd(fd: int) -> None:
    global _chan
    _chan = _chan or chan()
    socket.send_fds(_chan, [b"f"], [fd])


def recv_fd() -> int:
    global _chan
    _chan = _chan or chan()
    _, fds, _, _ = socket.recv_fds(_chan, 1, 1)
    return fds[0]


def set_comm(name: str) -> None:
    libc.prctl(15, name.encode(), 0, 0, 0)          # PR_SET_NAME


def items_of(m: dict) -> dict:
    """{item type: [payloads]} of a parsed message."""
    out: dict = {}
    for t, body in m["items"]:
        out.setdefault(t, []).append(body)
    return out


def main() -> None:
    ns = dict(globals())
    ns.update(K=K, struct=struct, os=os, errno=errno, time=time, socket=socket,
              encode_item=encode_item, Buf=Buf, Conn=Conn, cmd=cmd, ioctl=ioctl,
              make_bus=make_bus, name_item=name_item, parse=parse)
    for line in sys.stdin:
        req = json.loads(line)
        ns.update(req.get("vars", {}))
        ns["_"] = None
        try:
            exec(req["code"], ns)
            out = {"ok": ns.get("_")}
        except OSError as e:
            out = {"err": f"{type(e).__name__}: {e}", "errno": e.errno}
        except BaseException as e:  # reported to the test
            out = {"err": traceback.format_exc(), "errno": None}
        try:
            s = json.dumps(out)
        except TypeError:
            s = json.dumps({"ok": repr(out.get("ok"))})
        sys.stdout.write(s + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
