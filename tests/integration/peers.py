"""Scripted client processes for tests that need several processes at once.

A peer runs a short Python script (with the client library imported and
``say``/``ask``/``send_json`` helpers defined) in its own process, as another
uid when asked.  The test talks to it over its stdin and stdout, one line per
event, and every read has a timeout, so a stuck peer fails the test instead of
hanging it.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading

from .procs import ENV, ROOT, as_uid

PREAMBLE = f"""
import errno, json, os, select, signal, sys, threading, time
sys.path.insert(0, {ROOT!r})
from kdbusfs.abi import constants as C
from kdbusfs.client import *

def say(*words):
    print(*words, flush=True)

def send_json(tag, obj):
    print(tag, json.dumps(obj), flush=True)

def ask():
    line = sys.stdin.readline()
    if not line:
        sys.exit(0)
    return line.split()

def errno_of(fn, *a, **kw):
    try:
        fn(*a, **kw)
    except OSError as e:
        return e.errno
    return 0

def brief(m):
    # a message as a JSON-friendly dict (None stays None)
    if m is None:
        return None
    d = dict(kind=m.kind, src=m.src_id, dst=m.dst_id, cookie=m.cookie,
             reply=m.cookie_reply, flags=m.flags, priority=m.priority,
             payload=m.payload.decode("latin-1"))
    if m.notification is not None:
        d["n"] = list(m.notification)
    if m.dst_name is not None:
        d["dst_name"] = m.dst_name
    return d

def drain(conn, idle=0.3):
    return [brief(m) for m in conn.messages(idle)]

"""

# A connection in a child process that evaluates what the test sends it:
# one JSON string per line, an expression (its JSON-able value comes back as
# "ok <json>") or a statement ("ok null"); an OSError comes back as
# "err <errno>".  `conn` is the connection, `me` a dict to keep things in.
AGENT = """
conn = Connection.open(sys.argv[1], **json.loads(sys.argv[2]))
me = {}
say("id", conn.id)
while True:
    line = sys.stdin.readline()
    if not line:
        break
    src = json.loads(line)
    try:
        try:
            code = compile(src, "<cmd>", "eval")
        except SyntaxError:
            exec(compile(src, "<cmd>", "exec"), globals())
            result = None
        else:
            result = eval(code, globals())
        send_json("ok", result)
    except OSError as e:
        send_json("err", e.errno)
"""


class Peer:
    def __init__(self, script: str, *args, uid: int | None = None, pass_fds=()):
        code = PREAMBLE + textwrap.dedent(script)
        argv = as_uid(uid, [sys.executable, "-c", code, *map(str, args)])
        self.proc = subprocess.Popen(argv, cwd=ROOT, env=ENV, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     pass_fds=pass_fds)
        self.pid = self.proc.pid
        self._lines: queue.Queue = queue.Queue()
        self._stderr: list[bytes] = []
        self._pumps = [threading.Thread(target=self._pump_out, daemon=True),
                       threading.Thread(target=self._pump_err, daemon=True)]
        for t in self._pumps:
            t.start()

    def _pump_out(self) -> None:
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._lines.put(None)

    def _pump_err(self) -> None:
        for raw in self.proc.stderr:
            self._stderr.append(raw)

    @property
    def stderr(self) -> str:
        return b"".join(self._stderr).decode("utf-8", "replace")

    def line(self, timeout: float = 15.0) -> list[str]:
        """The next line, split into words."""
        try:
            got = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"peer {self.pid} said nothing for {timeout}s; "
                                 f"stderr: {self.stderr}") from None
        if got is None:
            self._lines.put(None)
            self.proc.wait(5)
            raise AssertionError(f"peer {self.pid} ended (rc {self.proc.returncode}); "
                                 f"stderr: {self.stderr}")
        return got.split()

    def expect(self, tag: str, timeout: float = 15.0) -> list[str]:
        """The next line, which must start with ``tag``; the words after it."""
        words = self.line(timeout)
        assert words and words[0] == tag, f"expected {tag!r} from peer, got {words}"
        return words[1:]

    def json(self, tag: str, timeout: float = 15.0):
        words = self.line(timeout)
        assert words and words[0] == tag, f"expected {tag!r} from peer, got {words}"
        return json.loads(" ".join(words[1:]))

    def tell(self, *words) -> None:
        self.proc.stdin.write((" ".join(map(str, words)) + "\n").encode())
        self.proc.stdin.flush()

    def finish(self, timeout: float = 15.0) -> int:
        """Close stdin (which ends a peer waiting in ask()) and reap it."""
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"peer {self.pid} did not end in {timeout}s; "
                                 f"stderr: {self.stderr}") from None
        self._close_pipes()
        return rc

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self._close_pipes()

    def _close_pipes(self) -> None:
        for t in self._pumps:
            t.join(5)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass

    def signal(self, signo: int) -> None:
        os.kill(self.proc.pid, signo)


class Agent(Peer):
    """A connection in another process, driven by :meth:`do` (see AGENT)."""

    def __init__(self, bus_path: str, *, uid: int | None = None, pass_fds=(), **open_kw):
        super().__init__(AGENT, bus_path, json.dumps(open_kw), uid=uid, pass_fds=pass_fds)
        self.id = int(self.expect("id")[0])

    def start(self, src: str) -> None:
        """Send a command without waiting for its result (see :meth:`result`)."""
        self.tell(json.dumps(src))

    def result(self, timeout: float = 15.0):
        """The result of the command sent by :meth:`start`; OSError on "err"."""
        words = self.line(timeout)
        value = json.loads(" ".join(words[1:]))
        if words[0] == "err":
            raise OSError(value, os.strerror(value))
        assert words[0] == "ok", words
        return value

    def do(self, src: str, timeout: float = 15.0):
        self.start(src)
        return self.result(timeout)

    def errno(self, src: str, timeout: float = 15.0) -> int:
        """The errno of command ``src`` (0 if it succeeded)."""
        try:
            self.do(src, timeout)
        except OSError as e:
            return e.errno
        return 0
