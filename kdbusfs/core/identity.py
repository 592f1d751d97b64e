"""Who opened a file: the identity every permission check uses.

kdbusfs captures it once, when the endpoint or control file is OPENED, and
never re-reads it from whoever issues a later ioctl (the 2014 review's
objection to credentials taken from the current task).  An fd handed to a
more privileged process over SCM_RIGHTS therefore gains nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Identity:
    uid: int            # real uid: the accounting user
    euid: int
    gid: int
    egid: int
    groups: tuple[int, ...] = ()
    # CAP_IPC_OWNER in the domain's user namespace (ABI §6.1).
    privileged: bool = False
    suid: int = -1
    fsuid: int = -1
    sgid: int = -1
    fsgid: int = -1
    pid: int = 0        # the opener's process and thread, for metadata
    tid: int = 0
    extra: dict = field(default_factory=dict, compare=False, hash=False)
    # the opener's user namespace when it is below the domain's (metadata
    # sent to this connection is translated into it); None: the domain's
    userns: object = field(default=None, compare=False, hash=False)

    def in_group(self, gid: int) -> bool:
        return gid == self.egid or gid in self.groups


def simple_identity(uid: int, gid: int | None = None, *, privileged: bool = False,
                    groups: tuple[int, ...] = ()) -> Identity:
    """An identity with all uids equal, for tests and tools."""
    g = uid if gid is None else gid
    return Identity(uid=uid, euid=uid, gid=g, egid=g, groups=groups,
                    privileged=privileged, suid=uid, fsuid=uid, sgid=g, fsgid=g)
