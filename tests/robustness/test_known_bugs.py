"""Regressions for server bugs the robustness work found (docs/robustness.md,
"Bugs found"), in both ways pools reach clients."""

from __future__ import annotations

import errno
import os
import struct

import pytest

from kdbusfs.abi import constants as K
from kdbusfs.abi.items import encode_item
from kdbusfs.client import make_bus
from kdbusfs.tools.fuzz import Memory, raw_ioctl
from kdbusfs.tools.server import Server

pytestmark = pytest.mark.timeout(60, method="thread")


def modes():
    return pytest.mark.parametrize("pushed", [
        pytest.param(False, id="passthrough"),
        pytest.param(True, id="pushed"),
    ])


@pytest.fixture
def server(request):
    s = Server(pushed=request.node.callspec.params["pushed"]).start()
    s.bus = make_bus(s.path, "bugs", access="world")
    try:
        yield s
    finally:
        s.bus.close()
        s.stop()
        s.cleanup()


def _hello(mem, fd, flags, pool, items=b""):
    head = bytearray(96)
    struct.pack_into("<QQ", head, 0, 96 + len(items), flags)
    struct.pack_into("<Q", head, 56, pool)
    return raw_ioctl(fd, K.KDBUS_CMD_HELLO, mem.put(bytes(head) + items))


@modes()
def test_hello_again_after_a_hello_that_failed_late(server, pushed):
    """ABI §3: a failed HELLO leaves the fd fresh; the next one may succeed."""
    mem = Memory()
    fd = os.open(server.bus.path, os.O_RDWR)
    try:
        name = encode_item(K.KDBUS_ITEM_NAME, b"org.x.Act\0")
        bad = encode_item(K.KDBUS_ITEM_POLICY_ACCESS, struct.pack("<QQQ", 0, 0, 0))
        assert _hello(mem, fd, K.KDBUS_HELLO_ACTIVATOR, 4096, name + bad) == errno.EINVAL
        rc = _hello(mem, fd, 0, 8192)
    finally:
        os.close(fd)
    assert "Traceback" not in server.log()
    assert rc == 0, errno.errorcode.get(rc, rc)
