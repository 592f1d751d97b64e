"""Fixtures of the client tests: a real mount (from tests/integration), a bus
on it, a connection factory, and the C tools built in a temporary directory."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

# re-exported fixtures: a fresh mount, a bus on it, connections on the bus
from tests.integration.conftest import bus, connect, mount  # noqa: F401

try:  # the mount fixture's own dependencies, when it has any
    from tests.integration.conftest import mount_base  # noqa: F401
except ImportError:  # pragma: no cover
    pass

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
C_DIR = os.path.join(ROOT, "c")


def eventually(fn, expected, timeout: float = 5.0):
    """Poll fn() until it returns ``expected`` (close() is asynchronous in
    FUSE: the server sees RELEASE after close() has returned)."""
    deadline = time.monotonic() + timeout
    while True:
        got = fn()
        if got == expected or time.monotonic() > deadline:
            return got
        time.sleep(0.01)




@pytest.fixture(scope="session")
def c_tools(tmp_path_factory):
    """{program: path} of the C tools, compiled with gcc into a temp dir."""
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc is not installed")
    out = tmp_path_factory.mktemp("c-build")
    tools = {}
    for prog in ("kdbus-demo", "kdbus-echo-bench"):
        exe = str(out / prog)
        subprocess.run([gcc, "-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror", "-o", exe,
                        os.path.join(C_DIR, prog + ".c"), "-lm"], check=True)
        tools[prog] = exe
    # the server runs as the test's uid and reads these processes' memory
    os.chmod(out, 0o755)
    return tools
