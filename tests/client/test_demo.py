"""The demo: kdbusfs/demo.py on a test mount, and scripts/demo end to end."""

from __future__ import annotations

import os
import subprocess
import sys

from .conftest import ROOT

EXPECTED = [
    "owns org.example.Echo",
    "client 2 -> org.example.Echo: 'hello' ... got reply 'echo: hello'",
    "C client",
    "got reply 'echo: hello from C'",
    "'quit' ... got reply 'echo: quit'",
    "done",
]


def run(args, **kw):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run(args, capture_output=True, text=True, env=env, cwd=ROOT, **kw)


def test_demo_module(mount):
    r = run([sys.executable, "-m", "kdbusfs.demo", mount.path], timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    for text in EXPECTED:
        assert text in r.stdout, r.stdout


def test_demo_script():
    r = run(["bash", os.path.join(ROOT, "scripts", "demo")], timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    for text in EXPECTED + ["mounting kdbusfs at", "unmounted"]:
        assert text in r.stdout, r.stdout
