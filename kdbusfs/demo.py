"""The kdbusfs demo: an echo service and its clients on a fresh bus.

    python -m kdbusfs.demo MOUNTPOINT        run the demo on a live kdbusfs mount
    python -m kdbusfs.demo serve BUS NAME    the Python echo service (used by the demo)

The demo creates a bus with the Python client library, starts a Python
service that owns org.example.Echo in a child process, calls it from a
Python client and from the C client (c/build/kdbus-demo, built with make if
gcc is there), stops the service and closes the bus.  scripts/demo wraps it
with mounting and unmounting.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time

from kdbusfs.client import Connection, make_bus

NAME = "org.example.Echo"
PREFIX = b"echo: "
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def say(text: str) -> None:
    print(text, flush=True)


# --------------------------------------------------------------------------
# the service (a child process)


def serve(bus_path: str, name: str) -> int:
    with Connection.open(bus_path) as conn:
        conn.acquire_name(name)
        conn.add_match(1, notify=["id_add", "id_remove"])
        tag = f"    [service {conn.id}]"
        say(f"{tag} owns {name}")
        while True:
            conn.wait()
            msg = conn.recv()
            if msg is None:
                continue
            if msg.notification is not None:
                n = msg.notification
                if n.id != conn.id:
                    verb = "joined" if n.kind == "id_add" else "left"
                    say(f"{tag} connection {n.id} {verb} the bus")
                continue
            say(f"{tag} {msg.text!r} from {msg.src_id}")
            if msg.expects_reply:
                conn.reply(msg, PREFIX + msg.payload)
            if msg.payload == b"quit":
                say(f"{tag} quitting")
                return 0


# --------------------------------------------------------------------------
# the demo


def call(client: Connection, text: str) -> None:
    reply = client.call(NAME, text.encode(), timeout=10)
    say(f"client {client.id} -> {NAME}: {text!r} ... got reply {reply.text!r} "
        f"from {reply.src_id}")


def find_c_demo() -> str | None:
    """c/build/kdbus-demo, built on the spot when gcc and make are there."""
    exe = os.path.join(ROOT, "c", "build", "kdbus-demo")
    makefile = os.path.join(ROOT, "c", "Makefile")
    if os.path.exists(makefile) and shutil.which("make") and shutil.which("gcc"):
        subprocess.run(["make", "-s", "-C", os.path.join(ROOT, "c")], check=False,
                       stdout=subprocess.DEVNULL)
    return exe if os.access(exe, os.X_OK) else None


def wait_for_name(conn: Connection, name: str, service: subprocess.Popen,
                  timeout: float = 15.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        owner = conn.name_owner(name)
        if owner is not None:
            return owner
        if service.poll() is not None:
            raise RuntimeError(f"the service exited early ({service.returncode})")
        time.sleep(0.02)
    raise TimeoutError(f"{name} did not appear on the bus")


def demo(mount: str) -> int:
    say(f"kdbusfs demo on {mount}")
    with make_bus(mount, f"demo-{os.getpid()}") as bus:
        say(f"bus {bus.name} created: {bus.path}")
        with Connection.open(bus.path) as client:
            env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
            service = subprocess.Popen([sys.executable, "-m", "kdbusfs.demo", "serve",
                                        bus.path, NAME], env=env)
            try:
                wait_for_name(client, NAME, service)
                call(client, "hello")
                call(client, "kdbus over FUSE")

                exe = find_c_demo()
                if exe is None:
                    say("(C client skipped: c/build/kdbus-demo is missing and cannot be built)")
                else:
                    subprocess.run([exe, "-b", bus.path, "call", NAME, "hello from C"],
                                   check=True, timeout=30)

                call(client, "quit")
                service.wait(timeout=10)
            finally:
                if service.poll() is None:
                    service.terminate()
                    service.wait()
        say(f"closing bus {bus.name}")
    say("done")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "serve":
        p = argparse.ArgumentParser(prog="python -m kdbusfs.demo serve")
        p.add_argument("bus")
        p.add_argument("name")
        a = p.parse_args(argv[1:])
        return serve(a.bus, a.name)
    p = argparse.ArgumentParser(prog="python -m kdbusfs.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mountpoint", help="a live kdbusfs mount")
    a = p.parse_args(argv)
    return demo(a.mountpoint)


if __name__ == "__main__":
    sys.exit(main())
