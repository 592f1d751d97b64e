"""FUSE kernel protocol (include/uapi/linux/fuse.h, 7.45): numbers and structs.

Everything is little-endian and naturally aligned; each struct is a
precompiled struct.Struct whose size is asserted at import time.
"""

import struct

KERNEL_VERSION = 7
KERNEL_MINOR_VERSION = 45
ROOT_ID = 1

# -- opcodes ---------------------------------------------------------------
LOOKUP = 1
FORGET = 2  # no reply
GETATTR = 3
SETATTR = 4
READLINK = 5
SYMLINK = 6
MKNOD = 8
MKDIR = 9
UNLINK = 10
RMDIR = 11
RENAME = 12
LINK = 13
OPEN = 14
READ = 15
WRITE = 16
STATFS = 17
RELEASE = 18
FSYNC = 20
SETXATTR = 21
GETXATTR = 22
LISTXATTR = 23
REMOVEXATTR = 24
FLUSH = 25
INIT = 26
OPENDIR = 27
READDIR = 28
RELEASEDIR = 29
FSYNCDIR = 30
GETLK = 31
SETLK = 32
SETLKW = 33
ACCESS = 34
CREATE = 35
INTERRUPT = 36  # no reply
BMAP = 37
DESTROY = 38
IOCTL = 39
POLL = 40
NOTIFY_REPLY = 41
BATCH_FORGET = 42  # no reply
FALLOCATE = 43
READDIRPLUS = 44
RENAME2 = 45
LSEEK = 46
COPY_FILE_RANGE = 47
SETUPMAPPING = 48
REMOVEMAPPING = 49
SYNCFS = 50
TMPFILE = 51
STATX = 52
CUSE_INIT = 4096

OPCODE_NAMES = {
    v: k
    for k, v in dict(globals()).items()
    if k.isupper() and type(v) is int and (LOOKUP <= v <= STATX or v == CUSE_INIT) and k != "ROOT_ID"
    and not k.startswith("KERNEL_")
}

# Bit 0 of an INTERRUPT's own unique; ordinary uniques are even.
INT_REQ_BIT = 1
# Set in the unique of requests re-queued by NOTIFY_RESEND.
UNIQUE_RESEND = 1 << 63

# -- INIT flags (bits >= 32 travel in flags2, valid only with INIT_EXT) -----
ASYNC_READ = 1 << 0
POSIX_LOCKS = 1 << 1
FILE_OPS = 1 << 2
ATOMIC_O_TRUNC = 1 << 3
EXPORT_SUPPORT = 1 << 4
BIG_WRITES = 1 << 5
DONT_MASK = 1 << 6
SPLICE_WRITE = 1 << 7
SPLICE_MOVE = 1 << 8
SPLICE_READ = 1 << 9
FLOCK_LOCKS = 1 << 10
HAS_IOCTL_DIR = 1 << 11
AUTO_INVAL_DATA = 1 << 12
DO_READDIRPLUS = 1 << 13
READDIRPLUS_AUTO = 1 << 14
ASYNC_DIO = 1 << 15
WRITEBACK_CACHE = 1 << 16
NO_OPEN_SUPPORT = 1 << 17
PARALLEL_DIROPS = 1 << 18
HANDLE_KILLPRIV = 1 << 19
POSIX_ACL = 1 << 20
ABORT_ERROR = 1 << 21
MAX_PAGES = 1 << 22
CACHE_SYMLINKS = 1 << 23
NO_OPENDIR_SUPPORT = 1 << 24
EXPLICIT_INVAL_DATA = 1 << 25
MAP_ALIGNMENT = 1 << 26
SUBMOUNTS = 1 << 27
HANDLE_KILLPRIV_V2 = 1 << 28
SETXATTR_EXT = 1 << 29
INIT_EXT = 1 << 30
INIT_RESERVED = 1 << 31
SECURITY_CTX = 1 << 32
HAS_INODE_DAX = 1 << 33
CREATE_SUPP_GROUP = 1 << 34
HAS_EXPIRE_ONLY = 1 << 35
DIRECT_IO_ALLOW_MMAP = 1 << 36
PASSTHROUGH = 1 << 37
NO_EXPORT_SUPPORT = 1 << 38
HAS_RESEND = 1 << 39
ALLOW_IDMAP = 1 << 40
OVER_IO_URING = 1 << 41
REQUEST_TIMEOUT = 1 << 42

# -- FOPEN_* (open_out.open_flags) -----------------------------------------
FOPEN_DIRECT_IO = 1 << 0
FOPEN_KEEP_CACHE = 1 << 1
FOPEN_NONSEEKABLE = 1 << 2
FOPEN_CACHE_DIR = 1 << 3
FOPEN_STREAM = 1 << 4
FOPEN_NOFLUSH = 1 << 5
FOPEN_PARALLEL_DIRECT_WRITES = 1 << 6
FOPEN_PASSTHROUGH = 1 << 7

# -- misc request flags ----------------------------------------------------
GETATTR_FH = 1 << 0  # getattr_in.getattr_flags: fh is valid
RELEASE_FLUSH = 1 << 0
RELEASE_FLOCK_UNLOCK = 1 << 1
READ_LOCKOWNER = 1 << 1

# -- ioctl -----------------------------------------------------------------
IOCTL_COMPAT = 1 << 0
IOCTL_UNRESTRICTED = 1 << 1
IOCTL_RETRY = 1 << 2
IOCTL_32BIT = 1 << 3
IOCTL_DIR = 1 << 4
IOCTL_COMPAT_X32 = 1 << 5
IOCTL_MAX_IOV = 256

# -- poll ------------------------------------------------------------------
POLL_SCHEDULE_NOTIFY = 1 << 0

# -- notify codes (out_header.error of an unsolicited write, unique 0) -----
NOTIFY_POLL = 1
NOTIFY_INVAL_INODE = 2
NOTIFY_INVAL_ENTRY = 3
NOTIFY_STORE = 4
NOTIFY_RETRIEVE = 5
NOTIFY_DELETE = 6
NOTIFY_RESEND = 7

# notify_inval_entry_out.flags
EXPIRE_ONLY = 1 << 0

# /dev/fuse ioctls
DEV_IOC_CLONE = 0x8004E500
DEV_IOC_BACKING_OPEN = 0x4010E501
DEV_IOC_BACKING_CLOSE = 0x4004E502

# The kernel refuses a read() smaller than this or max_write + 80.
MIN_READ_BUFFER = 8192

# -- structs ---------------------------------------------------------------


def _s(fmt, size):
    s = struct.Struct("<" + fmt)
    assert s.size == size, (fmt, s.size, size)
    return s


# len, opcode, unique, nodeid, uid, gid, pid, total_extlen, padding
IN_HEADER = _s("IIQQIIIHH", 40)
# len, error (negative errno, or a notify code), unique
OUT_HEADER = _s("IiQ", 16)

# major, minor, max_readahead, flags, flags2, unused[11]
INIT_IN = _s("IIIII44x", 64)
INIT_IN_V7_35 = _s("IIII", 16)  # before 7.36 the kernel sends only this
# major, minor, max_readahead, flags, max_background, congestion_threshold,
# max_write, time_gran, max_pages, map_alignment, flags2, max_stack_depth,
# request_timeout, unused[11]
INIT_OUT = _s("IIIIHHIIHHIIH22x", 64)

_ATTR_FMT = "QQQQQQIIIIIIIIII"
# ino, size, blocks, atime, mtime, ctime, atimensec, mtimensec, ctimensec,
# mode, nlink, uid, gid, rdev, blksize, flags
ATTR = _s(_ATTR_FMT, 88)
# nodeid, generation, entry_valid, attr_valid, entry_valid_nsec,
# attr_valid_nsec, attr...
ENTRY_OUT = _s("QQQQII" + _ATTR_FMT, 128)
# attr_valid, attr_valid_nsec, dummy, attr...
ATTR_OUT = _s("QII" + _ATTR_FMT, 104)

GETATTR_IN = _s("IIQ", 16)  # getattr_flags, dummy, fh
FORGET_IN = _s("Q", 8)  # nlookup
BATCH_FORGET_IN = _s("II", 8)  # count, dummy
FORGET_ONE = _s("QQ", 16)  # nodeid, nlookup
OPEN_IN = _s("II", 8)  # flags, open_flags
OPEN_OUT = _s("QIi", 16)  # fh, open_flags, backing_id
# fh, offset, size, read_flags, lock_owner, flags, padding
READ_IN = _s("QQIIQII", 40)
RELEASE_IN = _s("QIIQ", 24)  # fh, flags, release_flags, lock_owner
FLUSH_IN = _s("QIIQ", 24)  # fh, unused, padding, lock_owner
INTERRUPT_IN = _s("Q", 8)  # unique
# fh, flags, cmd, arg, in_size, out_size
IOCTL_IN = _s("QIIQII", 32)
IOCTL_OUT = _s("iIII", 16)  # result, flags, in_iovs, out_iovs
POLL_IN = _s("QQII", 24)  # fh, kh, flags, events
POLL_OUT = _s("II", 8)  # revents, padding
# blocks, bfree, bavail, files, ffree, bsize, namelen, frsize, padding, spare[6]
KSTATFS = _s("QQQQQIIII24x", 80)
STATFS_OUT = KSTATFS
DIRENT = _s("QQII", 24)  # ino, off, namelen, type; then name, padded to 8

NOTIFY_POLL_WAKEUP_OUT = _s("Q", 8)  # kh
NOTIFY_INVAL_INODE_OUT = _s("Qqq", 24)  # ino, off, len
NOTIFY_INVAL_ENTRY_OUT = _s("QII", 16)  # parent, namelen, flags
NOTIFY_DELETE_OUT = _s("QQII", 24)  # parent, child, namelen, padding
NOTIFY_STORE_OUT = _s("QQII", 24)  # nodeid, offset, size, padding
NOTIFY_RETRIEVE_OUT = _s("QQQII", 32)  # notify_unique, nodeid, offset, size, padding

# struct fuse_backing_map for DEV_IOC_BACKING_OPEN: fd, flags, padding
BACKING_MAP = _s("iIQ", 16)


def dirent_size(namelen):
    """Bytes one fuse_dirent with a name of namelen bytes takes (8-aligned)."""
    return (DIRENT.size + namelen + 7) & ~7


# -- ioctl numbers (asm-generic layout: nr 8 bits, type 8, size 14, dir 2) --
IOC_NONE = 0
IOC_WRITE = 1  # userspace -> kernel: the kernel copies _IOC_SIZE bytes in
IOC_READ = 2  # kernel -> userspace: the reply may carry _IOC_SIZE bytes


def ioc(direction, type_, nr, size):
    if isinstance(type_, str):
        type_ = ord(type_)
    return (direction << 30) | (size << 16) | (type_ << 8) | nr


def ioc_dir(cmd):
    return (cmd >> 30) & 3


def ioc_size(cmd):
    return (cmd >> 16) & 0x3FFF


def io(type_, nr):
    return ioc(IOC_NONE, type_, nr, 0)


def ior(type_, nr, size):
    return ioc(IOC_READ, type_, nr, size)


def iow(type_, nr, size):
    return ioc(IOC_WRITE, type_, nr, size)


def iowr(type_, nr, size):
    return ioc(IOC_READ | IOC_WRITE, type_, nr, size)
