"""D-Bus errors: the exception type, the standard names, and how kdbus errnos
read to a D-Bus peer."""

from __future__ import annotations

import errno
import os

PREFIX = "org.freedesktop.DBus.Error."

FAILED = PREFIX + "Failed"
NO_REPLY = PREFIX + "NoReply"
SERVICE_UNKNOWN = PREFIX + "ServiceUnknown"
NAME_HAS_NO_OWNER = PREFIX + "NameHasNoOwner"
ACCESS_DENIED = PREFIX + "AccessDenied"
LIMITS_EXCEEDED = PREFIX + "LimitsExceeded"
INVALID_ARGS = PREFIX + "InvalidArgs"
UNKNOWN_METHOD = PREFIX + "UnknownMethod"
UNKNOWN_OBJECT = PREFIX + "UnknownObject"
UNKNOWN_INTERFACE = PREFIX + "UnknownInterface"
UNKNOWN_PROPERTY = PREFIX + "UnknownProperty"
MATCH_RULE_INVALID = PREFIX + "MatchRuleInvalid"
MATCH_RULE_NOT_FOUND = PREFIX + "MatchRuleNotFound"
NOT_SUPPORTED = PREFIX + "NotSupported"
DISCONNECTED = PREFIX + "Disconnected"
UNIX_PROCESS_ID_UNKNOWN = PREFIX + "UnixProcessIdUnknown"
ADT_AUDIT_DATA_UNKNOWN = PREFIX + "AdtAuditDataUnknown"
SELINUX_CONTEXT_UNKNOWN = PREFIX + "SELinuxSecurityContextUnknown"
INCONSISTENT_MESSAGE = PREFIX + "InconsistentMessage"


class DBusError(Exception):
    """A D-Bus error: ``name`` (e.g. org.freedesktop.DBus.Error.Failed) and a
    human-readable ``message``.  Raised for error replies, and raised by
    exported methods to answer with an error."""

    def __init__(self, name: str, message: str = ""):
        super().__init__(name, message)
        self.name = name
        self.message = message

    def __str__(self) -> str:
        return f"{self.name}: {self.message}" if self.message else self.name


# How a failed SEND reads to the D-Bus peer that asked for it.
_SEND_ERRORS = {
    errno.ESRCH: SERVICE_UNKNOWN,        # no owner of the well-known name
    errno.ENXIO: SERVICE_UNKNOWN,        # no such connection id
    errno.EADDRNOTAVAIL: SERVICE_UNKNOWN,  # NO_AUTO_START towards an activator
    errno.EPERM: ACCESS_DENIED,          # TALK policy
    errno.ENOBUFS: LIMITS_EXCEEDED,      # receiver's quota
    errno.EXFULL: LIMITS_EXCEEDED,       # receiver's pool
    errno.EMLINK: LIMITS_EXCEEDED,       # too many pending calls
    errno.EMSGSIZE: LIMITS_EXCEEDED,
    errno.ECONNRESET: DISCONNECTED,
    errno.ECOMM: NOT_SUPPORTED,          # fds to a peer that takes none
}


def from_send_errno(err: OSError, destination: str | None) -> DBusError:
    """The error a D-Bus caller sees when the SEND of its message failed."""
    name = _SEND_ERRORS.get(err.errno, FAILED)
    if name == SERVICE_UNKNOWN:
        text = f"The name {destination} was not provided by any .service files"
    elif name == ACCESS_DENIED:
        text = f"The bus policy does not allow talking to {destination}"
    else:
        text = f"Sending to {destination} failed: {os.strerror(err.errno or 0)}"
    return DBusError(name, text)
