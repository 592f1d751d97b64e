"""Mounting and unmounting a FUSE filesystem, with or without privileges.

Privileged (root, or root of a user namespace that owns the mount
namespace): open /dev/fuse and mount(2) it ourselves. Otherwise the setuid
fusermount3 mounts and hands the /dev/fuse fd back over a socketpair
(the _FUSE_COMMFD protocol).
"""

import errno
import os
import shutil
import socket
import subprocess
from dataclasses import dataclass

from . import libc

FUSERMOUNT = "fusermount3"


@dataclass
class Mount:
    fd: int  # the /dev/fuse connection; the mount dies when its last copy closes
    mountpoint: str
    method: str  # "mount" or "fusermount3"

    def unmount(self, *, lazy=False):
        unmount(self.mountpoint, lazy=lazy)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def mount(mountpoint, *, fsname="kdbusfs", subtype="kdbusfs", allow_other=True,
          default_permissions=True) -> Mount:
    mountpoint = os.path.abspath(mountpoint)
    failures = []
    if os.geteuid() == 0:
        try:
            return _mount_syscall(mountpoint, fsname, subtype, allow_other, default_permissions)
        except OSError as e:
            # No /dev/fuse access, or root only of a namespace that does not
            # own this mount namespace: let fusermount3 try.
            if e.errno not in (errno.EPERM, errno.EACCES, errno.ENOENT, errno.ENXIO, errno.ENODEV):
                raise
            if e.errno == errno.ENOENT and e.filename == mountpoint:
                raise
            failures.append(f"mount(2): {e.strerror}")
    try:
        return _mount_fusermount(mountpoint, fsname, subtype, allow_other, default_permissions)
    except OSError as e:
        failures.append(f"{FUSERMOUNT}: {e.strerror}")
        raise OSError(e.errno, f"cannot mount FUSE at {mountpoint}: " + "; ".join(failures)) from e


def _mount_syscall(mountpoint, fsname, subtype, allow_other, default_permissions):
    try:
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
    except OSError as e:
        raise OSError(e.errno, f"/dev/fuse: {e.strerror}", "/dev/fuse") from e
    try:
        data = f"fd={fd},rootmode=40000,user_id={os.getuid()},group_id={os.getgid()}"
        if allow_other:
            data += ",allow_other"
        if default_permissions:
            data += ",default_permissions"
        fstype = f"fuse.{subtype}" if subtype else "fuse"
        libc.mount(fsname, mountpoint, fstype, libc.MS_NOSUID | libc.MS_NODEV, data)
    except BaseException:
        os.close(fd)
        raise
    return Mount(fd, mountpoint, "mount")


def _escape(value):
    # fusermount3 splits -o at unescaped commas.
    return value.replace("\\", "\\\\").replace(",", "\\,")


def _mount_fusermount(mountpoint, fsname, subtype, allow_other, default_permissions):
    exe = shutil.which(FUSERMOUNT)
    if exe is None:
        raise OSError(errno.ENOENT, f"{FUSERMOUNT} not found")
    opts = [f"fsname={_escape(fsname)}"]
    if subtype:
        opts.append(f"subtype={_escape(subtype)}")
    if allow_other:
        opts.append("allow_other")
    if default_permissions:
        opts.append("default_permissions")
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours:
        with theirs:
            env = dict(os.environ, _FUSE_COMMFD=str(theirs.fileno()))
            proc = subprocess.run(
                [exe, "-o", ",".join(opts), "--", mountpoint],
                env=env,
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                timeout=60,
            )
        # Our copy of their end is closed: a failed fusermount3 gives EOF.
        _, fds, _, _ = socket.recv_fds(ours, 1, 1, socket.MSG_CMSG_CLOEXEC)
    if proc.returncode != 0 or not fds:
        for fd in fds:
            os.close(fd)
        msg = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise OSError(errno.EPERM, msg)
    return Mount(fds[0], mountpoint, FUSERMOUNT)


def unmount(mountpoint, *, lazy=False):
    """Unmount; lazy detaches even while files are open."""
    mountpoint = os.path.abspath(mountpoint)
    if os.geteuid() == 0:
        try:
            libc.umount2(mountpoint, libc.MNT_DETACH if lazy else 0)
            return
        except OSError as e:
            if e.errno != errno.EPERM:
                raise
    exe = shutil.which(FUSERMOUNT)
    if exe is None:
        raise OSError(errno.EPERM, f"cannot unmount {mountpoint}: no privileges and no {FUSERMOUNT}")
    cmd = [exe, "-u"] + (["-z"] if lazy else []) + ["--", mountpoint]
    proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, timeout=60)
    if proc.returncode != 0:
        msg = proc.stderr.decode(errors="replace").strip()
        err = errno.EBUSY if "busy" in msg.lower() else errno.EPERM
        raise OSError(err, f"{FUSERMOUNT} -u {mountpoint}: {msg}")
