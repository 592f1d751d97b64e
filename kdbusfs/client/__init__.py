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

Synchronous calls block until the reply (or ETIMEDOUT, EPIPE, ECONNRESET,
ECANCELED through a :class:`Canceller`):

    reply = client.call("org.example.Echo", b"hi", timeout=5)

Signals are broadcast to whoever matches them; bloom keys select them, and
kernel notifications (ids and names coming and going) arrive through
matches too:

    listener.add_match(bloom_mask=listener.bloom("member:Changed"))
    listener.add_match(notify=["name_add", "name_remove", "name_change"])
    sender.emit(b"42", bloom=sender.bloom("interface:org.example.Sensor",
                                         "member:Changed"))
    for msg in listener.messages(timeout=1.0):
        print(msg.kind, msg.src_id, msg.notification or msg.payload)

Module map: bus (BUS_MAKE), endpoint (custom endpoints: ENDPOINT_MAKE and
ENDPOINT_UPDATE), connection (HELLO, pool, FREE, UPDATE, BYEBYE),
messaging (SEND, RECV, replies, poll), message (parsing pool slices),
metadata (metadata items), names (NAME_ACQUIRE/RELEASE, LIST), info
(CONN_INFO, BUS_CREATOR_INFO), match (MATCH_ADD/REMOVE and rule helpers),
bloom (bloom filters and masks from keys), commands (struct layouts), pool
(the mapping), _sys (syscalls).
"""

from kdbusfs.abi import constants

from .bus import Bus, make_bus
from .connection import DEFAULT_POOL_SIZE, Connection
from .endpoint import Endpoint, make_endpoint
from .info import ATTACH_ALL, Info, parse_info, parse_info_records
from .match import ANY, AUTO_COOKIE_BASE, NotifyRule, all_notifications, notify_id, notify_name
from .message import (IdNotification, Memfd, Message, NameNotification, ReplyNotification,
                      parse_message)
from .messaging import ANY_PRIORITY, BROADCAST, DEFAULT_TIMEOUT, Canceller
from .metadata import Audit, Caps, Creds, Metadata, OwnedName, Pids, Timestamp
from .names import LIST_ALL, ListEntry

__all__ = [
    "ANY", "ANY_PRIORITY", "ATTACH_ALL", "AUTO_COOKIE_BASE", "Audit", "BROADCAST", "Bus",
    "Canceller", "Caps", "Connection", "Creds", "DEFAULT_POOL_SIZE", "DEFAULT_TIMEOUT",
    "Endpoint", "IdNotification", "Info", "LIST_ALL", "ListEntry", "Memfd", "Message",
    "Metadata", "NameNotification", "NotifyRule", "OwnedName", "Pids", "ReplyNotification",
    "Timestamp", "all_notifications", "constants", "make_bus", "make_endpoint", "notify_id",
    "notify_name", "parse_info", "parse_info_records", "parse_message",
]
