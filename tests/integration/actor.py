"""A kdbus client process for tests that need other processes and uids.

    python -m tests.integration.actor makebus MOUNT NAME [world|group|none]
    python -m tests.integration.actor echo BUSDIR WELL.KNOWN.NAME [COUNT]
    python -m tests.integration.actor call BUSDIR WELL.KNOWN.NAME TEXT
    python -m tests.integration.actor hold BUSDIR

Each prints one line per event on stdout and exits 0 on success.
"""

from __future__ import annotations

import os
import select
import sys
import time

from kdbusfs.abi import constants as K

from .rawabi import Conn, make_bus


def _say(*a) -> None:
    print(*a, flush=True)


def makebus(mount: str, name: str, access: str = "world") -> None:
    flags = {"world": K.KDBUS_MAKE_ACCESS_WORLD, "group": K.KDBUS_MAKE_ACCESS_GROUP,
             "none": 0}[access]
    fd, path = make_bus(mount, name, flags=flags)
    _say("bus", path)
    sys.stdin.read()            # the bus lives until our stdin closes
    os.close(fd)


def echo(bus: str, name: str, count: str = "1") -> None:
    c = Conn(bus)
    rc = _acquire(c, name)
    _say("ready", c.id, rc)
    for _ in range(int(count)):
        select.select([c.fd], [], [], 30)
        rc, m = c.recv()
        if rc:
            _say("recv-error", rc)
            continue
        rc, _ = c.send(m["src_id"], b"echo: " + m["payload"], timeout_or_reply=m["cookie"],
                       cookie=m["cookie"] + 1000)
        _say("replied", m["src_id"], rc)


def _acquire(c: Conn, name: str) -> int:
    from .rawabi import cmd, ioctl, name_item
    return ioctl(c.fd, K.KDBUS_CMD_NAME_ACQUIRE, cmd(24, name_item(K.KDBUS_ITEM_NAME, name)))


def call(bus: str, name: str, text: str) -> None:
    c = Conn(bus)
    deadline = time.monotonic_ns() + 5 * 10**9
    rc, s = c.send(0, text.encode(), dst_name=name, flags=K.KDBUS_MSG_EXPECT_REPLY,
                   cookie=7, timeout_or_reply=deadline, sync=True)
    if rc:
        _say("error", rc)
        return
    from .rawabi import parse
    m = parse(c.pool, s.u64(32))
    _say("reply", m["src_id"], m["payload"].decode())


def hold(bus: str) -> None:
    c = Conn(bus)
    _say("id", c.id)
    sys.stdin.read()


if __name__ == "__main__":
    op, *args = sys.argv[1:]
    {"makebus": makebus, "echo": echo, "call": call, "hold": hold}[op](*args)
