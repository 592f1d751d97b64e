"""Driving agent processes (agent.py) from a test, with timeouts everywhere."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys

from tests.integration.procs import ENV, ROOT


NS_PYTHON = f"/usr/bin/python{sys.version_info.major}.{sys.version_info.minor}"
SITE = next((p for p in sys.path if p.endswith("site-packages") and ".venv" in p), "")


def wrap_uid(uid: int | None, gid: int | None = None, groups: tuple[int, ...] = ()) -> list[str]:
    if uid is None:
        return []
    g = uid if gid is None else gid
    grp = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    return ["setpriv", f"--reuid={uid}", f"--regid={g}", *grp]


class AgentError(AssertionError):
    def __init__(self, msg: str, errno_: int | None):
        super().__init__(msg)
        self.errno = errno_


class Agent:
    """A child process (maybe as `uid`, maybe inside `prefix`, e.g. an
    unshare command line) running snippets of Python for the test."""

    def __init__(self, uid: int | None = None, *, gid: int | None = None,
                 groups: tuple[int, ...] = (), prefix: list[str] = (), env: dict | None = None,
                 ns_python: bool = False):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        python = sys.executable
        e = dict(ENV, AGENT_SOCK=str(theirs.fileno()), **(env or {}))
        if ns_python:
            # inside a user namespace the venv's interpreter (under /root,
            # owned by an unmapped uid) may be out of reach: the system one
            # of the same version with the venv's packages
            python = NS_PYTHON
            e["PYTHONPATH"] = ROOT + os.pathsep + SITE
        argv = [*prefix, *wrap_uid(uid, gid, groups), python, "-m", "tests.security.agent"]
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=e, text=True, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     pass_fds=(theirs.fileno(),))
        theirs.close()

    def run(self, code: str, timeout: float = 20, **vars):
        """The value of `_` after `code` runs there; AgentError on an exception."""
        self.proc.stdin.write(json.dumps({"code": code, "vars": vars}) + "\n")
        self.proc.stdin.flush()
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        if not r:
            self.close()
            raise AssertionError(f"agent timed out running: {code}")
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.poll() is not None else ""
            raise AssertionError(f"agent died: {err}")
        out = json.loads(line)
        if "err" in out:
            raise AgentError(out["err"], out["errno"])
        return out["ok"]

    def errno_of(self, code: str, **vars) -> int:
        """The errno of the OSError `code` raises (0 if none)."""
        try:
            self.run(code, **vars)
        except AgentError as e:
            if e.errno is None:
                raise
            return e.errno
        return 0

    def send_fd(self, fd: int) -> None:
        socket.send_fds(self.sock, [b"f"], [fd])

    def recv_fd(self, timeout: float = 10) -> int:
        r, _, _ = select.select([self.sock], [], [], timeout)
        assert r, "no fd came from the agent"
        _, fds, _, _ = socket.recv_fds(self.sock, 1, 1)
        return fds[0]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=5)
            except (subprocess.TimeoutExpired, OSError):
                self.proc.kill()
                self.proc.wait(timeout=5)
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass
        self.sock.close()

    def __enter__(self) -> "Agent":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def agents(request=None):
    """A factory whose agents are closed at the end of the test."""
    made: list[Agent] = []

    def make(*a, **kw) -> Agent:
        ag = Agent(*a, **kw)
        made.append(ag)
        return ag
    make.all = made
    return make
