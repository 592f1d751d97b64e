"""The node tree of one mount: root, `control`, bus directories, endpoints.

Endpoint files get a fresh node (inode) on every LOOKUP, so that every
open of `bus` has an inode of its own: the page cache belongs to the inode,
and each connection's mapping must show its own pool and nothing else.
"""

from __future__ import annotations

import itertools
import stat
import time

from ..fuse.ops import Attr

ROOT_ID = 1
CONTROL_ID = 2

ROOT, CONTROL, BUSDIR, ENDPOINT = "root", "control", "busdir", "endpoint"


class Node:
    __slots__ = ("id", "kind", "obj", "lookups", "size", "handle")

    def __init__(self, id: int, kind: str, obj=None):
        self.id = id
        self.kind = kind
        self.obj = obj              # Bus for BUSDIR, Endpoint for ENDPOINT
        self.lookups = 0
        self.size = 0               # a connection's pool size, once HELLO is done
        self.handle = None          # the open file on a per-open endpoint node


class Tree:
    def __init__(self):
        self.nodes: dict[int, Node] = {ROOT_ID: Node(ROOT_ID, ROOT),
                                       CONTROL_ID: Node(CONTROL_ID, CONTROL)}
        self._ids = itertools.count(CONTROL_ID + 1)
        self.bus_nodes: dict[object, Node] = {}     # Bus -> its directory node
        self.started = time.time()

    def get(self, nodeid: int) -> Node | None:
        return self.nodes.get(nodeid)

    def new_node(self, kind: str, obj) -> Node:
        n = Node(next(self._ids), kind, obj)
        self.nodes[n.id] = n
        return n

    def bus_dir(self, bus) -> Node:
        n = self.bus_nodes.get(bus)
        if n is None:
            n = self.bus_nodes[bus] = self.new_node(BUSDIR, bus)
        return n

    def bus_gone(self, bus) -> None:
        """A bus died: its directory node goes now, unless the kernel still
        holds lookups on it (then its FORGET removes it).  A node kept for a
        bus nobody looked up would keep the whole Bus alive forever."""
        n = self.bus_nodes.get(bus)
        if n is not None and n.lookups <= 0:
            del self.bus_nodes[bus]
            self.nodes.pop(n.id, None)

    def forget(self, nodeid: int, nlookup: int) -> None:
        n = self.nodes.get(nodeid)
        if n is None or nodeid in (ROOT_ID, CONTROL_ID):
            return
        n.lookups -= nlookup
        if n.lookups <= 0 and (n.kind != BUSDIR or not n.obj.alive):
            del self.nodes[nodeid]
            if n.kind == BUSDIR and self.bus_nodes.get(n.obj) is n:
                del self.bus_nodes[n.obj]

    def attr(self, n: Node) -> Attr:
        t = self.started
        if n.kind == ROOT:
            return Attr(ino=n.id, mode=stat.S_IFDIR | 0o555, nlink=2, atime=t, mtime=t, ctime=t)
        if n.kind == CONTROL:
            return Attr(ino=n.id, mode=stat.S_IFREG | 0o666, atime=t, mtime=t, ctime=t)
        if n.kind == BUSDIR:
            b = n.obj
            return Attr(ino=n.id, mode=stat.S_IFDIR | b.mode, nlink=2, uid=b.uid, gid=b.gid,
                        atime=t, mtime=t, ctime=t)
        ep = n.obj
        return Attr(ino=n.id, mode=stat.S_IFREG | ep.mode, uid=ep.uid, gid=ep.gid,
                    size=n.size, atime=t, mtime=t, ctime=t)
