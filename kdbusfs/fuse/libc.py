"""The few libc calls Python's os module lacks (cffi, ABI mode)."""

import os

from cffi import FFI

ffi = FFI()
ffi.cdef(
    """
    struct iovec { void *iov_base; size_t iov_len; };
    /* the same layout, with the address as an integer: no cast per call */
    struct remote_iovec { uintptr_t iov_base; size_t iov_len; };
    int mount(const char *source, const char *target, const char *fstype,
              unsigned long flags, const void *data);
    int umount2(const char *target, int flags);
    ssize_t process_vm_readv(int pid, const struct iovec *local, unsigned long nlocal,
                             const struct remote_iovec *remote, unsigned long nremote,
                             unsigned long flags);
    ssize_t process_vm_writev(int pid, const struct iovec *local, unsigned long nlocal,
                              const struct remote_iovec *remote, unsigned long nremote,
                              unsigned long flags);
    long syscall(long number, ...);
    """
)
lib = ffi.dlopen(None)

MS_NOSUID = 2
MS_NODEV = 4
MNT_DETACH = 2

SYS_pidfd_open = 434
SYS_pidfd_getfd = 438
PIDFD_THREAD = 0x80  # O_EXCL: a pidfd for one thread, not a thread group


def _raise(target=None):
    err = ffi.errno
    raise OSError(err, os.strerror(err), target)


def mount(source, target, fstype, flags, data):
    t = os.fsencode(target)
    if lib.mount(os.fsencode(source), t, os.fsencode(fstype), flags, os.fsencode(data)) != 0:
        _raise(target)


def umount2(target, flags=0):
    if lib.umount2(os.fsencode(target), flags) != 0:
        _raise(target)


def pidfd_open(pid, flags=0):
    fd = lib.syscall(SYS_pidfd_open, ffi.cast("int", pid), ffi.cast("unsigned int", flags))
    if fd < 0:
        _raise()
    return fd


def pidfd_getfd(pidfd, targetfd, flags=0):
    fd = lib.syscall(
        SYS_pidfd_getfd,
        ffi.cast("int", pidfd),
        ffi.cast("int", targetfd),
        ffi.cast("unsigned int", flags),
    )
    if fd < 0:
        _raise()
    return fd
