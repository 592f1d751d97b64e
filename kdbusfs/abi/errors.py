"""The one exception type of the ABI layer: an errno for the ioctl reply."""

from __future__ import annotations

import errno as _errno
import os
from typing import NoReturn


class KdbusError(Exception):
    """A kdbus call fails with ``errno`` (a positive errno number).

    ``msg`` is for logs and tests only; it never reaches the client.
    """

    __slots__ = ("errno", "msg")

    def __init__(self, errno: int, msg: str = "") -> None:
        super().__init__(errno, msg)
        self.errno = errno
        self.msg = msg

    @property
    def name(self) -> str:
        return _errno.errorcode.get(self.errno, str(self.errno))

    def __str__(self) -> str:
        text = f"{self.name} ({os.strerror(self.errno)})"
        return f"{text}: {self.msg}" if self.msg else text

    def __reduce__(self):
        return (type(self), (self.errno, self.msg))


def fail(errno: int, msg: str = "") -> NoReturn:
    """Raise KdbusError(errno, msg)."""
    raise KdbusError(errno, msg)
