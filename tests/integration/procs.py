"""Start test client processes, as other uids when asked."""

from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
ENV = dict(os.environ, PYTHONPATH=ROOT)


def as_uid(uid: int | None, argv: list[str]) -> list[str]:
    if uid is None:
        return argv
    return ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", *argv]


def actor(*args: str, uid: int | None = None, **kw) -> subprocess.Popen:
    argv = as_uid(uid, [sys.executable, "-m", "tests.integration.actor", *args])
    return subprocess.Popen(argv, cwd=ROOT, env=ENV, text=True, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def line(p: subprocess.Popen) -> list[str]:
    out = p.stdout.readline()
    if not out:
        raise AssertionError(f"actor ended early: {p.stderr.read()}")
    return out.split()


def run_actor(*args: str, uid: int | None = None, timeout: float = 20) -> list[list[str]]:
    argv = as_uid(uid, [sys.executable, "-m", "tests.integration.actor", *args])
    r = subprocess.run(argv, cwd=ROOT, env=ENV, text=True, capture_output=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr
    return [ln.split() for ln in r.stdout.splitlines()]


def finish(p: subprocess.Popen, timeout: float = 10) -> str:
    """Close the actor's stdin (ending a `hold` or `makebus`), collect output."""
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    return out + err
