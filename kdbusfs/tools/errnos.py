"""The errnos a kdbus command may answer: fact sheet §1.6 (x86-64)."""

from __future__ import annotations

import errno

#: §1.6, the complete list.  Anything else from a kdbus ioctl is a bug.
SHEET_ERRNOS = frozenset({
    errno.EPERM, errno.ESRCH, errno.EINTR, errno.ENXIO, errno.E2BIG, errno.EBADF,
    errno.EAGAIN, errno.ENOMEM, errno.EFAULT, errno.EBUSY, errno.EEXIST, errno.EINVAL,
    errno.EMFILE, errno.ENOTTY, errno.ETXTBSY, errno.EMLINK, errno.EPIPE, errno.EDOM,
    errno.ENAMETOOLONG, errno.EXFULL, errno.EBADSLT, errno.ECOMM, errno.EBADMSG,
    errno.ENOTUNIQ, errno.EBADFD, errno.EREMCHG, errno.EDESTADDRREQ, errno.EMSGSIZE,
    errno.EOPNOTSUPP, errno.EADDRINUSE, errno.EADDRNOTAVAIL, errno.ECONNRESET,
    errno.ENOBUFS, errno.ESHUTDOWN, errno.ETIMEDOUT, errno.EALREADY, errno.EREMOTEIO,
    errno.EMEDIUMTYPE, errno.ECANCELED,
})

# The numbers as the sheet prints them, to catch a platform mismatch.
assert (errno.EBADFD, errno.EXFULL, errno.EBADSLT, errno.ECANCELED) == (77, 54, 57, 125)


def name(err: int) -> str:
    return errno.errorcode.get(err, str(err))
