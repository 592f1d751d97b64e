"""What /proc says about a caller: its identity at OPEN, its metadata at SEND.

The FUSE request names the calling thread (a tid in the server's pid
namespace, 0 if it is not visible there).  The caller is blocked in its
syscall while we read, so what we see is what it was when it called.
"""

from __future__ import annotations

import os

import fcntl

from ..core.identity import Identity
from ..core.metadata import PROCESS as md_PROCESS
from ..core.metadata import Metadata, UserNs
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


# -- namespaces ----------------------------------------------------------------
NS_GET_PARENT = 0xB702          # _IO(0xb7, 0x2)
NS_GET_OWNER_UID = 0xB704       # _IO(0xb7, 0x4)


def _ns_id(path: str) -> int | None:
    """The inode of a namespace link such as /proc/TID/ns/pid."""
    try:
        link = os.readlink(path)        # "pid:[4026531836]"
        return int(link[link.index("[") + 1:-1])
    except (OSError, ValueError):
        return None


_OWN_PIDNS = _ns_id("/proc/self/ns/pid")
_OWN_USERNS_ID = _ns_id("/proc/self/ns/user")


def _ns_chain(tid: int, kind: str, own: int | None, *, owners: bool = False):
    """[(ns id, owner uid)] from the task's namespace up to, not including,
    ours (walking NS_GET_PARENT), or None when the task is in ours (or we
    cannot tell, which then counts as ours)."""
    first = _ns_id(f"/proc/{tid}/ns/{kind}")
    if first is None or first == own:
        return None
    out = []
    try:
        fd = os.open(f"/proc/{tid}/ns/{kind}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        for _ in range(64):             # nesting is limited to 32 levels
            st = os.fstat(fd)           # nsfs: no FUSE request
            if st.st_ino == own:
                return out
            owner = -1
            if owners:
                buf = bytearray(4)
                try:
                    fcntl.ioctl(fd, NS_GET_OWNER_UID, buf)
                    owner = int.from_bytes(buf, "little")
                except OSError:
                    pass
            out.append((st.st_ino, owner))
            try:
                parent = fcntl.ioctl(fd, NS_GET_PARENT)
            except OSError:
                return out              # not below ours: nothing more to see
            os.close(fd)
            fd = parent
    finally:
        os.close(fd)
    return out


def _idmap(tid: int, which: str):
    text = _read(f"/proc/{tid}/{which}")
    out = []
    for line in (text or "").splitlines():
        try:
            inside, outside, count = (int(x) for x in line.split())
        except ValueError:
            continue
        out.append((inside, outside, count))
    return tuple(out)


def userns_of(tid: int) -> UserNs | None:
    """The task's user namespace as the domain sees it; None if it is ours."""
    if not tid:
        return None
    chain = _ns_chain(tid, "user", _OWN_USERNS_ID, owners=True)
    if chain is None:
        return None
    return UserNs(chain[0][0] if chain else 0, tuple(chain), _idmap(tid, "uid_map"),
                  _idmap(tid, "gid_map"))


def _pidns(tid: int):
    """Pid namespace ids from ours down to the task's; None if it is ours."""
    chain = _ns_chain(tid, "pid", _OWN_PIDNS)
    if chain is None:
        return None
    return (_OWN_PIDNS or 0,) + tuple(ns for ns, _ in reversed(chain))


def _root(tid: int):
    # compared as text: stat() of a root could be a request to a FUSE server
    return (_ns_id(f"/proc/{tid}/ns/mnt"), _link(f"/proc/{tid}/root"))


def _link(path: str) -> str | None:
    try:
        return os.readlink(path)
    except OSError:
        return None


def _hidepid(tid: int) -> tuple[int, int | None]:
    """hidepid= and gid= of the /proc the task sees."""
    text = _read(f"/proc/{tid}/mountinfo") or ""
    level, gid = 0, None
    for line in text.splitlines():
        head, _, tail = line.partition(" - ")
        fields = head.split()
        if len(fields) < 5 or fields[4] != "/proc" or not tail.startswith("proc "):
            continue
        level, gid = 0, None
        for opt in tail.split()[-1].split(","):
            k, _, v = opt.partition("=")
            if k == "hidepid":
                level = {"off": 0, "noaccess": 1, "invisible": 2, "ptraceable": 4} \
                    .get(v, int(v) if v.isdigit() else 1)
            elif k == "gid" and v.isdigit():
                gid = int(v)
    return level, gid


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
                    pid=tgid, tid=tid, userns=userns_of(tid))


def _first_arg(tgid: int) -> str | None:
    try:
        with open(f"/proc/{tgid}/cmdline", "rb") as f:
            data = f.read(4096)
    except OSError:
        return None
    # quirk kept from the kernel: only argv[0] is reported
    return data.split(b"\0", 1)[0].decode("latin-1") if data else None


_LAST_CAP = int(_read("/proc/sys/kernel/cap_last_cap") or "40")


def _caps(st: dict[str, str]):
    """(last_cap, inheritable, permitted, effective, bounding)."""
    try:
        sets = [int(st[k], 16) for k in ("CapInh", "CapPrm", "CapEff", "CapBnd")]
    except (KeyError, ValueError):
        return None
    return (_LAST_CAP, *sets)


def _levels(st: dict[str, str]) -> tuple[int, ...]:
    return tuple(_ids(st.get("NSpid", "")))


def metadata(tid: int, mask: int, *, snapshot: bool | None = None) -> Metadata:
    """Collect the process metadata items in `mask` from thread `tid`, with
    where the task stands (pid and user namespace, root) so that the engine
    can translate them for each receiver.  A `snapshot` (BUS_MAKE, HELLO;
    by default when the whole PROCESS mask is asked) also records what the
    task's /proc hides, for when the connection is a receiver."""
    m = Metadata()
    if not tid:
        return m
    if snapshot is None:
        snapshot = mask & md_PROCESS == md_PROCESS
    st = _status(tid)
    tgid = int(st.get("Tgid", tid))
    m.pidns = _pidns(tid)
    ns = userns_of(tid)
    m.userns = ns.id if ns is not None else 0
    m.root = _root(tgid)
    u = _ids(st.get("Uid", ""))
    m.euid = u[1] if len(u) == 4 else -1
    if snapshot:
        m.hidepid, m.hide_gid = _hidepid(tid)
    if mask & K.KDBUS_ATTACH_CREDS:
        u, g = _ids(st.get("Uid", "")), _ids(st.get("Gid", ""))
        if len(u) == 4 and len(g) == 4:
            m.creds = tuple(u + g)
    if mask & K.KDBUS_ATTACH_PIDS or snapshot:
        ppid = int(st.get("PPid", 0))
        m.pids = (tgid, tid, ppid)
        pst = _status(tgid) if tgid != tid else st
        par = _levels(_status(ppid)) if ppid else ()
        m.pid_levels = (_levels(pst) or (tgid,), _levels(st) or (tid,),
                        par or ((ppid,) if ppid else ()))
    if mask & K.KDBUS_ATTACH_AUXGROUPS:
        m.auxgroups = tuple(_ids(st.get("Groups", "")))
    if mask & K.KDBUS_ATTACH_TID_COMM:
        c = _read(f"/proc/{tgid}/task/{tid}/comm")
        m.tid_comm = c.rstrip("\n") if c else None
    if mask & K.KDBUS_ATTACH_PID_COMM:
        c = _read(f"/proc/{tgid}/comm")
        m.pid_comm = c.rstrip("\n") if c else None
    if mask & K.KDBUS_ATTACH_EXE:
        exe = _link(f"/proc/{tgid}/exe")
        root = m.root[1]
        if exe and root and root != "/":
            # the path as the task itself (and a receiver with its root) names it
            exe = exe[len(root):] if exe.startswith(root + "/") else None
        m.exe = exe
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
