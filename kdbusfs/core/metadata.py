"""Metadata: what a sender reveals about itself, and in which order.

The engine never looks at processes itself: the filesystem hands it a
`Metadata` snapshot (at BUS_MAKE, HELLO, or lazily at SEND through a
collector callback that is told which items are wanted).  The engine
decides which items each receiver gets (ABI §6.17) and encodes them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from ..abi import constants as K
from ..abi.items import encode_item

# Items every sender reveals whatever its ATTACH_FLAGS_SEND say (§6.17).
ALWAYS = (K.KDBUS_ATTACH_TIMESTAMP | K.KDBUS_ATTACH_CREDS | K.KDBUS_ATTACH_PIDS
          | K.KDBUS_ATTACH_AUXGROUPS | K.KDBUS_ATTACH_NAMES
          | K.KDBUS_ATTACH_CONN_DESCRIPTION)
# Items read from the sending process (everything but names, description, time).
PROCESS = (K._KDBUS_ATTACH_ALL & ~(K.KDBUS_ATTACH_TIMESTAMP | K.KDBUS_ATTACH_NAMES
                                   | K.KDBUS_ATTACH_CONN_DESCRIPTION))
# The process items a receiver could read from /proc anyway (`proc` in §6.17).
PROC_VISIBLE = PROCESS & ~(K.KDBUS_ATTACH_CREDS | K.KDBUS_ATTACH_PIDS
                           | K.KDBUS_ATTACH_AUXGROUPS)

_U64x8 = struct.Struct("<8Q")
_U64x3 = struct.Struct("<3Q")
_U32x2 = struct.Struct("<II")
_TS = struct.Struct("<3Q")


def check_attach_mask(mask: int) -> int:
    """Validate an attach mask (EINVAL for unknown bits); ANY means ALL."""
    import errno

    from ..abi.errors import KdbusError
    if mask == K._KDBUS_ATTACH_ANY:
        return K._KDBUS_ATTACH_ALL
    if mask & ~K._KDBUS_ATTACH_ALL:
        raise KdbusError(errno.EINVAL, "unknown attach flags")
    return mask


OVERFLOW_ID = 65534          # /proc/sys/kernel/overflow{u,g}id, the usual value
INVALID_ID = 0xFFFFFFFF     # (u32)-1: unset or invalid, never translated
_U32 = 0xFFFFFFFF


@dataclass(frozen=True, slots=True)
class UserNs:
    """A user namespace below the domain's, as the domain sees it.

    `chain` lists (namespace id, owner uid) from this namespace up to, not
    including, the domain's; the maps are its uid_map/gid_map lines
    (inside, outside, count) with `outside` in the domain's ids.
    """
    id: int
    chain: tuple[tuple[int, int], ...]
    uid_map: tuple[tuple[int, int, int], ...]
    gid_map: tuple[tuple[int, int, int], ...]


@dataclass(frozen=True, slots=True)
class View:
    """Where a receiver stands: the ids and pids it is shown are its own.

    "R's namespaces are the user namespace of R's opener credentials and
    the pid namespace of the task that called HELLO" (ABI §6.17).  None
    means the domain's own namespace.
    """
    userns: UserNs | None = None
    pidns: tuple[int, ...] | None = None    # pid namespace ids, domain's first
    root: tuple | None = None               # fs root, for EXE
    hidepid: int = 0                        # its /proc: hidepid= and gid=
    hide_gid: int | None = None
    egid: int = -1
    tid: int = 0                            # the HELLO task


@dataclass(slots=True)
class Metadata:
    """Process metadata; None means unavailable (the item is omitted).

    Ids and pids are the domain's (the server's namespaces); `encode`
    translates them into each receiver's namespaces.
    """
    creds: tuple[int, ...] | None = None        # uid euid suid fsuid gid egid sgid fsgid
    pids: tuple[int, int, int] | None = None    # pid tid ppid
    auxgroups: tuple[int, ...] | None = None
    tid_comm: str | None = None
    pid_comm: str | None = None
    exe: str | None = None                      # relative to `root`
    cmdline: str | None = None
    cgroup: str | None = None
    caps: tuple[int, int, int, int, int] | bytes | None = None  # last_cap, inh, prm, eff, bnd
    seclabel: str | None = None
    audit: tuple[int, int] | None = None        # sessionid, loginuid
    faked: bool = False                         # HELLO with faked credentials
    # where the task stood, for the translation (None: the domain's namespaces)
    pid_levels: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]] | None = None
    pidns: tuple[int, ...] | None = None        # pid namespace ids, domain's first
    userns: int = 0                             # user namespace id, 0 = the domain's
    euid: int = -1                              # for CAPS: namespaces it owns
    root: tuple | None = None
    hidepid: int = 0                            # of its /proc (used as a receiver view)
    hide_gid: int | None = None

    def available(self) -> int:
        m = 0
        for flag, value in (
                (K.KDBUS_ATTACH_CREDS, self.creds), (K.KDBUS_ATTACH_PIDS, self.pids),
                (K.KDBUS_ATTACH_AUXGROUPS, self.auxgroups),
                (K.KDBUS_ATTACH_TID_COMM, self.tid_comm),
                (K.KDBUS_ATTACH_PID_COMM, self.pid_comm), (K.KDBUS_ATTACH_EXE, self.exe),
                (K.KDBUS_ATTACH_CMDLINE, self.cmdline),
                (K.KDBUS_ATTACH_CGROUP, self.cgroup), (K.KDBUS_ATTACH_CAPS, self.caps),
                (K.KDBUS_ATTACH_SECLABEL, self.seclabel),
                (K.KDBUS_ATTACH_AUDIT, self.audit)):
            if value is not None:
                m |= flag
        return m


# -- translation into a receiver's namespaces ---------------------------------
def view_of(conn) -> View | None:
    """The receiver view of a connection: its opener's user namespace
    (Identity.userns, captured at OPEN) and its HELLO task's pid namespace,
    root and /proc (the HELLO snapshot).  Cached on the connection."""
    v = getattr(conn, "_md_view", False)
    if v is not False:
        return v
    who = conn.who
    m = conn.meta
    userns = getattr(who, "userns", None)
    if m is None or m.faked:
        v = View(userns=userns, egid=who.egid) if userns is not None else None
    else:
        v = View(userns=userns, pidns=m.pidns, root=m.root, hidepid=m.hidepid,
                 hide_gid=m.hide_gid, egid=who.egid, tid=m.pids[1] if m.pids else 0)
    conn._md_view = v
    return v


def map_id(value: int, idmap) -> int:
    """A domain id as seen through `idmap` (None: unchanged)."""
    if value & _U32 == INVALID_ID:
        return INVALID_ID
    if idmap is None:
        return value & _U32
    for inside, outside, count in idmap:
        if outside <= value < outside + count:
            return inside + value - outside
    return OVERFLOW_ID


def to_domain(value: int, idmap) -> int | None:
    """An id of a user namespace (through its map) as the domain's; None if unmapped."""
    for inside, outside, count in idmap:
        if inside <= value < inside + count:
            return outside + value - inside
    return None


def policy_access_to_domain(type_: int, access: int, id_: int, userns: UserNs | None):
    """A POLICY_ACCESS record with its uid or gid made the domain's (EINVAL
    for an id the uploader's namespace does not map)."""
    if userns is not None and type_ in (K.KDBUS_POLICY_ACCESS_USER,
                                        K.KDBUS_POLICY_ACCESS_GROUP):
        mapped = to_domain(id_, userns.uid_map if type_ == K.KDBUS_POLICY_ACCESS_USER
                           else userns.gid_map)
        if mapped is None:
            import errno

            from ..abi.errors import KdbusError
            raise KdbusError(errno.EINVAL, "policy id not mapped")
        id_ = mapped
    return type_, access, id_


def _pid_in(levels, chain, view_chain) -> int:
    """A pid given per namespace level (domain's first) as seen from the pid
    namespace `view_chain`: 0 when that namespace cannot see it."""
    if levels is None:
        return 0
    if view_chain is None:
        return levels[0]
    d = len(view_chain) - 1
    if d >= len(levels) or chain is None or tuple(chain[:d + 1]) != tuple(view_chain):
        return 0
    return levels[d]


def pids_in(meta: Metadata, view: View | None):
    """(pid, tid, ppid) in the receiver's pid namespace, 0 where not visible."""
    if meta.pids is None or view is None or view.pidns is None:
        return meta.pids
    if meta.pid_levels is None:
        return (0, 0, 0)
    pl, tl, ppl = meta.pid_levels
    chain = meta.pidns or view.pidns[:1]
    return (_pid_in(pl, chain, view.pidns), _pid_in(tl, chain, view.pidns),
            _pid_in(ppl, chain[:len(ppl)], view.pidns))


def proc_visible(meta: Metadata | None, view: View | None) -> bool:
    """`proc` of §6.17: the receiver could read the sender's /proc entry."""
    if meta is None or view is None:
        return True
    if meta.pids is not None and view.pidns is not None and meta.pid_levels is not None:
        if pids_in(meta, view)[0] == 0:
            return False
    if view.hidepid and view.hide_gid != view.egid:
        return meta.pids is not None and view.tid != 0 and meta.pids[1] == view.tid
    return True


def caps_in(meta: Metadata, view: View | None) -> bytes:
    last, inh, prm, eff, bnd = meta.caps
    keep = (1 << (last + 1)) - 1
    chain = list(view.userns.chain) if view is not None and view.userns else []
    chain.append((0, None))         # the domain's namespace tops every chain we see
    sets = (0, 0, 0, 0)
    for i, (nsid, owner) in enumerate(chain):
        if nsid == meta.userns:
            sets = (inh, prm, eff, bnd)
            break
        parent = chain[i + 1][0] if i + 1 < len(chain) else None
        if parent == meta.userns and owner == meta.euid:
            sets = (0, keep, keep, keep)
            break
    words = []
    for v in sets:
        v &= keep
        words += [v & _U32, v >> 32 & _U32]
    return struct.pack("<I8I", last, *words)


def _string(t: int, s: str) -> bytes:
    return encode_item(t, s.encode("latin-1", "replace") + b"\0")


def encode(meta: Metadata | None, mask: int, *, names=(), description: str | None = None,
           timestamp: tuple[int, int, int] | None = None, view: View | None = None) -> list[bytes]:
    """Metadata items (each padded) for `mask`, in the emission order of §6.17,
    as the receiver standing at `view` sees them (None: the domain's view).

    `names` is a sequence of (flags, name) of the sender's primary names.
    """
    out = []
    if meta is not None:
        umap = view.userns.uid_map if view is not None and view.userns else None
        gmap = view.userns.gid_map if view is not None and view.userns else None
        if mask & K.KDBUS_ATTACH_CREDS and meta.creds is not None:
            c = meta.creds
            out.append(encode_item(K.KDBUS_ITEM_CREDS, _U64x8.pack(
                *(map_id(u, umap) for u in c[:4]), *(map_id(g, gmap) for g in c[4:]))))
        if mask & K.KDBUS_ATTACH_PIDS and meta.pids is not None:
            out.append(encode_item(K.KDBUS_ITEM_PIDS, _U64x3.pack(*pids_in(meta, view))))
        if mask & K.KDBUS_ATTACH_AUXGROUPS and meta.auxgroups is not None:
            groups = [map_id(g, gmap) for g in meta.auxgroups]
            out.append(encode_item(K.KDBUS_ITEM_AUXGROUPS,
                                   struct.pack(f"<{len(groups)}Q", *groups)))
        # EXE is a path from the sender's root: only for a receiver with the same
        exe = meta.exe if view is None or view.root is None or view.root == meta.root \
            else None
        for flag, t, v in (
                (K.KDBUS_ATTACH_TID_COMM, K.KDBUS_ITEM_TID_COMM, meta.tid_comm),
                (K.KDBUS_ATTACH_PID_COMM, K.KDBUS_ITEM_PID_COMM, meta.pid_comm),
                (K.KDBUS_ATTACH_EXE, K.KDBUS_ITEM_EXE, exe),
                (K.KDBUS_ATTACH_CMDLINE, K.KDBUS_ITEM_CMDLINE, meta.cmdline),
                (K.KDBUS_ATTACH_CGROUP, K.KDBUS_ITEM_CGROUP, meta.cgroup)):
            if mask & flag and v is not None:
                out.append(_string(t, v))
        if mask & K.KDBUS_ATTACH_CAPS and meta.caps is not None:
            caps = meta.caps if isinstance(meta.caps, bytes) else caps_in(meta, view)
            out.append(encode_item(K.KDBUS_ITEM_CAPS, caps))
        if mask & K.KDBUS_ATTACH_SECLABEL and meta.seclabel is not None:
            out.append(_string(K.KDBUS_ITEM_SECLABEL, meta.seclabel))
        if mask & K.KDBUS_ATTACH_AUDIT and meta.audit is not None:
            sid, loginuid = meta.audit
            out.append(encode_item(K.KDBUS_ITEM_AUDIT, _U32x2.pack(sid, map_id(loginuid, umap))))
    if mask & K.KDBUS_ATTACH_NAMES:
        for flags, name in names:
            out.append(encode_item(K.KDBUS_ITEM_OWNED_NAME,
                                   struct.pack("<Q", flags) + name.encode("latin-1") + b"\0"))
    if mask & K.KDBUS_ATTACH_CONN_DESCRIPTION and description is not None:
        out.append(_string(K.KDBUS_ITEM_CONN_DESCRIPTION, description))
    if mask & K.KDBUS_ATTACH_TIMESTAMP and timestamp is not None:
        out.append(encode_item(K.KDBUS_ITEM_TIMESTAMP, _TS.pack(*timestamp)))
    return out
