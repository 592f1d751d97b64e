"""What /proc says about a caller: its identity at OPEN, its metadata at SEND.

The FUSE request names the calling thread (a tid in the server's pid
namespace, 0 if it is not visible there).  The caller is blocked in its
syscall while we read, so what we see is what it was when it called.
"""

from __future__ import annotations

import os

from ..core.identity import Identity
from ..core.metadata import Metadata
from ..abi import constants as K

CAP_IPC_OWNER = 15
OVERFLOW_ID = 65534

try:
    _OWN_USERNS = os.readlink("/proc/self/ns/user")
except OSError:
    _OWN_USERNS = None


def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as f:
            return f.read().decode("latin-1")
    except OSError:
        return None


def _status(tid: int) -> dict[str, str]:
    text = _read(f"/proc/{tid}/status")
    out = {}
    if text:
        for line in text.splitlines():
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def _ids(field: str) -> list[int]:
    return [int(x) for x in field.split()] if field else []


def _same_userns(tid: int) -> bool:
    try:
        return os.readlink(f"/proc/{tid}/ns/user") == _OWN_USERNS
    except OSError:
        return False


def identity(tid: int, uid: int, gid: int) -> Identity:
    """The opener's identity; `uid`/`gid` are the request header's fsuid/fsgid."""
    st = _status(tid) if tid else {}
    u = _ids(st.get("Uid", "")) or [uid] * 4
    g = _ids(st.get("Gid", "")) or [gid] * 4
    groups = tuple(_ids(st.get("Groups", "")))
    cap_eff = int(st.get("CapEff", "0"), 16)
    # CAP_IPC_OWNER counts only in the domain's user namespace (ours).
    privileged = bool(cap_eff >> CAP_IPC_OWNER & 1) and _same_userns(tid)
    tgid = int(st.get("Tgid", tid or 0))
    return Identity(uid=u[0], euid=u[1], suid=u[2], fsuid=u[3], gid=g[0], egid=g[1],
                    sgid=g[2], fsgid=g[3], groups=groups, privileged=privileged,
                    pid=tgid, tid=tid)


def _first_arg(tgid: int) -> str | None:
    try:
        with open(f"/proc/{tgid}/cmdline", "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    # quirk kept from the kernel: only argv[0] is reported
    return data.split(b"\0", 1)[0].decode("latin-1") if data else None


def _caps(st: dict[str, str]) -> bytes | None:
    try:
        last = int(_read("/proc/sys/kernel/cap_last_cap") or "40")
        sets = [int(st[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd")]
    except (KeyError, ValueError):
        return None
    keep = (1 << (last + 1)) - 1
    words = []
    for s in sets:
        s &= keep
        words += [s & 0xFFFFFFFF, s >> 32]
    return last.to_bytes(4, "little") + b"".join(w.to_bytes(4, "little") for w in words)


def metadata(tid: int, mask: int) -> Metadata:
    """Collect the process metadata items in `mask` from thread `tid`."""
    m = Metadata()
    if not tid:
        return m
    st = _status(tid)
    tgid = int(st.get("Tgid", tid))
    if mask & K.KDBUS_ATTACH_CREDS:
        u, g = _ids(st.get("Uid", "")), _ids(st.get("Gid", ""))
        if len(u) == 4 and len(g) == 4:
            m.creds = tuple(u + g)
    if mask & K.KDBUS_ATTACH_PIDS:
        m.pids = (tgid, tid, int(st.get("PPid", 0)))
    if mask & K.KDBUS_ATTACH_AUXGROUPS:
        m.auxgroups = tuple(_ids(st.get("Groups", "")))
    if mask & K.KDBUS_ATTACH_TID_COMM:
        c = _read(f"/proc/{tgid}/task/{tid}/comm")
        m.tid_comm = c.rstrip("\n") if c else None
    if mask & K.KDBUS_ATTACH_PID_COMM:
        c = _read(f"/proc/{tgid}/comm")
        m.pid_comm = c.rstrip("\n") if c else None
    if mask & K.KDBUS_ATTACH_EXE:
        try:
            m.exe = os.readlink(f"/proc/{tgid}/exe")
        except OSError:
            pass
    if mask & K.KDBUS_ATTACH_CMDLINE:
        m.cmdline = _first_arg(tgid)
    if mask & K.KDBUS_ATTACH_CGROUP:
        cg = _read(f"/proc/{tgid}/cgroup")
        if cg:
            for line in cg.splitlines():
                if line.startswith("0::"):
                    m.cgroup = line[3:]
    if mask & K.KDBUS_ATTACH_CAPS:
        m.caps = _caps(st)
    if mask & K.KDBUS_ATTACH_SECLABEL:
        label = _read(f"/proc/{tgid}/attr/current")
        if label and label.strip("\0\n") not in ("", "unconfined"):
            m.seclabel = label.rstrip("\0\n")
    if mask & K.KDBUS_ATTACH_AUDIT:
        sid, luid = _read(f"/proc/{tgid}/sessionid"), _read(f"/proc/{tgid}/loginuid")
        if sid is not None and luid is not None:
            try:
                m.audit = (int(sid) & 0xFFFFFFFF, int(luid) & 0xFFFFFFFF)
            except ValueError:
                pass
    return m
