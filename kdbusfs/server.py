"""Running a kdbusfs mount: mount, serve until unmounted, stop cleanly.

`kdbusfs MOUNTPOINT` behaves like other FUSE filesystems: it returns once
the mount is live and keeps serving in the background until `umount` or
`fusermount3 -u`; `-f` keeps it in the foreground.  SIGTERM and SIGINT
unmount (lazily, so busy callers get an error rather than a hang) and end
the server.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import trio

from .fs.filesystem import KdbusFS
from .fuse.mount import mount as fuse_mount
from .fuse.mount import unmount as fuse_unmount
from .fs import passthrough
from .fuse.protocol import PASSTHROUGH
from .fuse.session import DEFAULT_FLAGS, Session

log = logging.getLogger("kdbusfs")


async def _serve(m, fs: KdbusFS, ready) -> None:
    want = passthrough.wanted()
    session = Session(m.fd, fs, flags=DEFAULT_FLAGS | (PASSTHROUGH if want else 0),
                      max_stack_depth=1 if want else 0)

    async def on_signals(task_status=trio.TASK_STATUS_IGNORED):
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as sigs:
            task_status.started()
            async for _ in sigs:
                log.info("signal received: unmounting %s", m.mountpoint)
                try:
                    fuse_unmount(m.mountpoint, lazy=True)
                except OSError as e:
                    log.warning("unmount failed: %s", e)
                session.stop()
                return

    async with trio.open_nursery() as nursery:
        async def run_session(task_status=trio.TASK_STATUS_IGNORED):
            await session.run(task_status=task_status)
            # the mount is gone: stop listening for signals too
            nursery.cancel_scope.cancel()

        await nursery.start(on_signals)
        await nursery.start(run_session)
        ready()


def serve(mountpoint: str, *, ready=lambda: None) -> None:
    mountpoint = os.path.abspath(mountpoint)
    m = fuse_mount(mountpoint, fsname="kdbusfs", subtype="kdbusfs")
    fs = KdbusFS()
    fs.mountpoint = mountpoint
    try:
        trio.run(_serve, m, fs, ready)
    finally:
        m.close()


def daemonize_and_serve(mountpoint: str) -> int:
    """Fork; the child serves, the parent returns once the mount is live."""
    r, w = os.pipe()
    pid = os.fork()
    if pid:
        os.close(w)
        with os.fdopen(r, "rb") as f:
            msg = f.read()
        if msg == b"ok":
            return 0
        sys.stderr.write(msg.decode(errors="replace") or "kdbusfs: server failed to start\n")
        return 1
    os.close(r)
    os.setsid()
    # detach stdio, but keep stderr for logs when asked to
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    if not os.environ.get("KDBUSFS_LOG"):
        os.dup2(devnull, 2)
    os.close(devnull)

    def ready():
        nonlocal w
        if w >= 0:
            os.write(w, b"ok")
            os.close(w)
            w = -1

    try:
        serve(mountpoint, ready=ready)
    except BaseException as e:  # report to the waiting parent, then exit
        if w >= 0:
            os.write(w, f"kdbusfs: {e}\n".encode())
            os.close(w)
        os._exit(1)
    os._exit(0)
