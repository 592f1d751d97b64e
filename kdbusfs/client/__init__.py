"""The kdbusfs client library.

It speaks the kdbus ioctl ABI (kdbusfs/abi) over plain syscalls: open(),
fcntl.ioctl(), mmap() and poll() on the files of a kdbusfs mount, and never
touches server internals.  Errors are OSError with the kdbus errno.

    from kdbusfs.client import make_bus, Connection

    with make_bus("/sys/fs/kdbus", "demo") as bus:          # <euid>-demo
        with Connection.open(bus.path) as service, Connection.open(bus.path) as client:
            service.acquire_name("org.example.Echo")
            cookie = client.send("org.example.Echo", b"hi", expect_reply=True)
            service.wait()
            req = service.recv()
            service.reply(req, b"echo: " + req.payload)
            client.wait()
            print(client.recv().payload)                     # b'echo: hi'

Module map: bus (BUS_MAKE), connection (HELLO, pool, FREE, UPDATE, BYEBYE),
messaging (SEND, RECV, replies, poll), message (parsing pool slices),
metadata (metadata items), names (NAME_ACQUIRE/RELEASE, LIST), info
(CONN_INFO, BUS_CREATOR_INFO), match (MATCH_ADD/REMOVE and rule helpers),
commands (struct layouts), pool (the mapping), _sys (syscalls).
"""

from kdbusfs.abi import constants

from .bus import Bus, make_bus
from .connection import DEFAULT_POOL_SIZE, Connection
from .info import ATTACH_ALL, Info, parse_info, parse_info_records
from .match import ANY, NotifyRule, all_notifications, notify_id, notify_name
from .message import (IdNotification, Memfd, Message, NameNotification, ReplyNotification,
                      parse_message)
from .messaging import ANY_PRIORITY, BROADCAST, DEFAULT_TIMEOUT
from .metadata import Audit, Caps, Creds, Metadata, OwnedName, Pids, Timestamp
from .names import LIST_ALL, ListEntry

__all__ = [
    "ANY", "ANY_PRIORITY", "ATTACH_ALL", "Audit", "BROADCAST", "Bus", "Caps", "Connection",
    "Creds", "DEFAULT_POOL_SIZE", "DEFAULT_TIMEOUT", "IdNotification", "Info", "LIST_ALL",
    "ListEntry", "Memfd", "Message", "Metadata", "NameNotification", "NotifyRule",
    "OwnedName", "Pids", "ReplyNotification", "Timestamp", "all_notifications", "constants",
    "make_bus", "notify_id", "notify_name", "parse_info", "parse_info_records",
    "parse_message",
]
