"""Values transcribed by hand from the fact sheet (docs/kdbus-abi.md).

Deliberately not derived from kdbus.h: these are what the header, the C
compiler and the Python side are all checked against.
"""

# §4 Structures: "struct size" then "field offset size type" rows; type is
# u64/s64/u32/s32/u8 for scalars, "flex" for zero-length tails, "struct"
# for embedded structs, "u8[16]" for id128.
LAYOUT = """
kdbus_item 80
  size 0 8 u64
  type 8 8 u64
  data 16 0 flex
  data32 16 0 flex
  data64 16 0 flex
  str 16 0 flex
  id 16 8 u64
  vec 16 16 struct
  creds 16 64 struct
  pids 16 24 struct
  audit 16 8 struct
  caps 16 8 struct
  timestamp 16 24 struct
  name 16 8 struct
  bloom_parameter 16 16 struct
  bloom_filter 16 8 struct
  memfd 16 24 struct
  fds 16 0 flex
  name_change 16 32 struct
  id_change 16 16 struct
  policy_access 16 24 struct
  name.name 24 0 flex
  name_change.name 48 0 flex
  bloom_filter.data 24 0 flex
  caps.caps 20 0 flex
kdbus_vec 16
  size 0 8 u64
  address 8 8 u64
  offset 8 8 u64
kdbus_memfd 24
  start 0 8 u64
  size 8 8 u64
  fd 16 4 s32
  __pad 20 4 u32
kdbus_creds 64
  uid 0 8 u64
  euid 8 8 u64
  suid 16 8 u64
  fsuid 24 8 u64
  gid 32 8 u64
  egid 40 8 u64
  sgid 48 8 u64
  fsgid 56 8 u64
kdbus_pids 24
  pid 0 8 u64
  tid 8 8 u64
  ppid 16 8 u64
kdbus_caps 8
  last_cap 0 4 u32
  caps 4 0 flex
kdbus_audit 8
  sessionid 0 4 u32
  loginuid 4 4 u32
kdbus_timestamp 24
  seqnum 0 8 u64
  monotonic_ns 8 8 u64
  realtime_ns 16 8 u64
kdbus_name 8
  flags 0 8 u64
  name 8 0 flex
kdbus_notify_id_change 16
  id 0 8 u64
  flags 8 8 u64
kdbus_notify_name_change 32
  old_id 0 16 struct
  old_id.id 0 8 u64
  old_id.flags 8 8 u64
  new_id 16 16 struct
  new_id.id 16 8 u64
  new_id.flags 24 8 u64
  name 32 0 flex
kdbus_policy_access 24
  type 0 8 u64
  access 8 8 u64
  id 16 8 u64
kdbus_bloom_parameter 16
  size 0 8 u64
  n_hash 8 8 u64
kdbus_bloom_filter 8
  generation 0 8 u64
  data 8 0 flex
kdbus_msg 64
  size 0 8 u64
  flags 8 8 u64
  priority 16 8 s64
  dst_id 24 8 u64
  src_id 32 8 u64
  payload_type 40 8 u64
  cookie 48 8 u64
  timeout_ns 56 8 u64
  cookie_reply 56 8 u64
  items 64 0 flex
kdbus_msg_info 24
  offset 0 8 u64
  msg_size 8 8 u64
  return_flags 16 8 u64
kdbus_cmd 24
  size 0 8 u64
  flags 8 8 u64
  return_flags 16 8 u64
  items 24 0 flex
kdbus_cmd_hello 96
  size 0 8 u64
  flags 8 8 u64
  return_flags 16 8 u64
  attach_flags_send 24 8 u64
  attach_flags_recv 32 8 u64
  bus_flags 40 8 u64
  id 48 8 u64
  pool_size 56 8 u64
  offset 64 8 u64
  items_size 72 8 u64
  id128 80 16 u8[16]
  items 96 0 flex
kdbus_cmd_send 56
  size 0 8 u64
  flags 8 8 u64
  return_flags 16 8 u64
  msg_address 24 8 u64
  reply 32 24 struct
  reply.offset 32 8 u64
  reply.msg_size 40 8 u64
  reply.return_flags 48 8 u64
  items 56 0 flex
kdbus_cmd_recv 64
  size 0 8 u64
  flags 8 8 u64
  return_flags 16 8 u64
  priority 24 8 s64
  dropped_msgs 32 8 u64
  msg 40 24 struct
  msg.offset 40 8 u64
  msg.msg_size 48 8 u64
  msg.return_flags 56 8 u64
  items 64 0 flex
kdbus_cmd_free 32
  size 0 8 u64
  flags 8 8 u64
  return_flags 16 8 u64
  offset 24 8 u64
  items 32 0 flex
kdbus_cmd_info 56
  size 0 8 u64
  flags 8 8 u64
  return_flags 16 8 u64
  id 24 8 u64
  attach_flags 32 8 u64
  offset 40 8 u64
  info_size 48 8 u64
  items 56 0 flex
kdbus_cmd_list 40
  size 0 8 u64
  flags 8 8 u64
  return_flags 16 8 u64
  offset 24 8 u64
  list_size 32 8 u64
  items 40 0 flex
kdbus_cmd_match 32
  size 0 8 u64
  flags 8 8 u64
  return_flags 16 8 u64
  cookie 24 8 u64
  items 32 0 flex
kdbus_info 24
  size 0 8 u64
  id 8 8 u64
  flags 16 8 u64
  items 24 0 flex
"""


def _parse_layout():
    sizes, fields = {}, {}
    struct = None
    for line in LAYOUT.strip().splitlines():
        parts = line.split()
        if not line.startswith(" "):
            struct = parts[0]
            sizes[struct] = int(parts[1])
        else:
            name, off, size, type_ = parts
            fields[f"{struct}.{name}"] = (int(off), int(size), type_)
    return sizes, fields


SIZES, FIELDS = _parse_layout()

# §3 ioctl table.
IOCTLS = {
    "KDBUS_CMD_BUS_MAKE": 0x40189500,
    "KDBUS_CMD_ENDPOINT_MAKE": 0x40189510,
    "KDBUS_CMD_ENDPOINT_UPDATE": 0x40189511,
    "KDBUS_CMD_HELLO": 0xC0609580,
    "KDBUS_CMD_UPDATE": 0x40189581,
    "KDBUS_CMD_BYEBYE": 0x40189582,
    "KDBUS_CMD_FREE": 0x40209583,
    "KDBUS_CMD_CONN_INFO": 0x80389584,
    "KDBUS_CMD_BUS_CREATOR_INFO": 0x80389585,
    "KDBUS_CMD_LIST": 0x80289586,
    "KDBUS_CMD_SEND": 0x40389590,
    "KDBUS_CMD_RECV": 0x80409591,
    "KDBUS_CMD_NAME_ACQUIRE": 0x401895A0,
    "KDBUS_CMD_NAME_RELEASE": 0x401895A1,
    "KDBUS_CMD_MATCH_ADD": 0x402095B0,
    "KDBUS_CMD_MATCH_REMOVE": 0x402095B1,
}

# §3 "Arg (bytes)" column.
IOCTL_ARG_SIZES = {
    "KDBUS_CMD_BUS_MAKE": 24, "KDBUS_CMD_ENDPOINT_MAKE": 24, "KDBUS_CMD_ENDPOINT_UPDATE": 24,
    "KDBUS_CMD_HELLO": 96, "KDBUS_CMD_UPDATE": 24, "KDBUS_CMD_BYEBYE": 24,
    "KDBUS_CMD_FREE": 32, "KDBUS_CMD_CONN_INFO": 56, "KDBUS_CMD_BUS_CREATOR_INFO": 56,
    "KDBUS_CMD_LIST": 40, "KDBUS_CMD_SEND": 56, "KDBUS_CMD_RECV": 64,
    "KDBUS_CMD_NAME_ACQUIRE": 24, "KDBUS_CMD_NAME_RELEASE": 24,
    "KDBUS_CMD_MATCH_ADD": 32, "KDBUS_CMD_MATCH_REMOVE": 32,
}

# §5 (plus KDBUS_IOCTL_MAGIC from §3, KDBUS_ITEM_HEADER_SIZE from §1.1 and
# KDBUS_SUPER_MAGIC from §2).
CONSTANTS = {
    "KDBUS_IOCTL_MAGIC": 0x95,
    "KDBUS_ITEM_HEADER_SIZE": 16,
    "KDBUS_SUPER_MAGIC": 0x44427573,
    "KDBUS_FLAG_NEGOTIATE": 0x8000000000000000,
    "KDBUS_SRC_ID_KERNEL": 0,
    "KDBUS_DST_ID_NAME": 0,
    "KDBUS_DST_ID_BROADCAST": 0xFFFFFFFFFFFFFFFF,
    "KDBUS_MATCH_ID_ANY": 0xFFFFFFFFFFFFFFFF,
    # item types
    "_KDBUS_ITEM_NULL": 0,
    "_KDBUS_ITEM_USER_BASE": 1,
    "KDBUS_ITEM_NEGOTIATE": 1,
    "KDBUS_ITEM_PAYLOAD_VEC": 2,
    "KDBUS_ITEM_PAYLOAD_OFF": 3,
    "KDBUS_ITEM_PAYLOAD_MEMFD": 4,
    "KDBUS_ITEM_FDS": 5,
    "KDBUS_ITEM_CANCEL_FD": 6,
    "KDBUS_ITEM_BLOOM_PARAMETER": 7,
    "KDBUS_ITEM_BLOOM_FILTER": 8,
    "KDBUS_ITEM_BLOOM_MASK": 9,
    "KDBUS_ITEM_DST_NAME": 10,
    "KDBUS_ITEM_MAKE_NAME": 11,
    "KDBUS_ITEM_ATTACH_FLAGS_SEND": 12,
    "KDBUS_ITEM_ATTACH_FLAGS_RECV": 13,
    "KDBUS_ITEM_ID": 14,
    "KDBUS_ITEM_NAME": 15,
    "KDBUS_ITEM_DST_ID": 16,
    "_KDBUS_ITEM_ATTACH_BASE": 0x1000,
    "KDBUS_ITEM_TIMESTAMP": 0x1000,
    "KDBUS_ITEM_CREDS": 0x1001,
    "KDBUS_ITEM_PIDS": 0x1002,
    "KDBUS_ITEM_AUXGROUPS": 0x1003,
    "KDBUS_ITEM_OWNED_NAME": 0x1004,
    "KDBUS_ITEM_TID_COMM": 0x1005,
    "KDBUS_ITEM_PID_COMM": 0x1006,
    "KDBUS_ITEM_EXE": 0x1007,
    "KDBUS_ITEM_CMDLINE": 0x1008,
    "KDBUS_ITEM_CGROUP": 0x1009,
    "KDBUS_ITEM_CAPS": 0x100A,
    "KDBUS_ITEM_SECLABEL": 0x100B,
    "KDBUS_ITEM_AUDIT": 0x100C,
    "KDBUS_ITEM_CONN_DESCRIPTION": 0x100D,
    "_KDBUS_ITEM_POLICY_BASE": 0x2000,
    "KDBUS_ITEM_POLICY_ACCESS": 0x2000,
    "_KDBUS_ITEM_KERNEL_BASE": 0x8000,
    "KDBUS_ITEM_NAME_ADD": 0x8000,
    "KDBUS_ITEM_NAME_REMOVE": 0x8001,
    "KDBUS_ITEM_NAME_CHANGE": 0x8002,
    "KDBUS_ITEM_ID_ADD": 0x8003,
    "KDBUS_ITEM_ID_REMOVE": 0x8004,
    "KDBUS_ITEM_REPLY_TIMEOUT": 0x8005,
    "KDBUS_ITEM_REPLY_DEAD": 0x8006,
    # attach flags
    "KDBUS_ATTACH_TIMESTAMP": 0x1,
    "KDBUS_ATTACH_CREDS": 0x2,
    "KDBUS_ATTACH_PIDS": 0x4,
    "KDBUS_ATTACH_AUXGROUPS": 0x8,
    "KDBUS_ATTACH_NAMES": 0x10,
    "KDBUS_ATTACH_TID_COMM": 0x20,
    "KDBUS_ATTACH_PID_COMM": 0x40,
    "KDBUS_ATTACH_EXE": 0x80,
    "KDBUS_ATTACH_CMDLINE": 0x100,
    "KDBUS_ATTACH_CGROUP": 0x200,
    "KDBUS_ATTACH_CAPS": 0x400,
    "KDBUS_ATTACH_SECLABEL": 0x800,
    "KDBUS_ATTACH_AUDIT": 0x1000,
    "KDBUS_ATTACH_CONN_DESCRIPTION": 0x2000,
    "_KDBUS_ATTACH_ALL": 0x3FFF,
    "_KDBUS_ATTACH_ANY": 0xFFFFFFFFFFFFFFFF,
    # HELLO
    "KDBUS_HELLO_ACCEPT_FD": 0x1,
    "KDBUS_HELLO_ACTIVATOR": 0x2,
    "KDBUS_HELLO_POLICY_HOLDER": 0x4,
    "KDBUS_HELLO_MONITOR": 0x8,
    # messages
    "KDBUS_MSG_EXPECT_REPLY": 0x1,
    "KDBUS_MSG_NO_AUTO_START": 0x2,
    "KDBUS_MSG_SIGNAL": 0x4,
    "KDBUS_PAYLOAD_KERNEL": 0,
    "KDBUS_PAYLOAD_DBUS": 0x4442757344427573,
    # command flags
    "KDBUS_SEND_SYNC_REPLY": 0x1,
    "KDBUS_RECV_PEEK": 0x1,
    "KDBUS_RECV_DROP": 0x2,
    "KDBUS_RECV_USE_PRIORITY": 0x4,
    "KDBUS_RECV_RETURN_INCOMPLETE_FDS": 0x1,
    "KDBUS_RECV_RETURN_DROPPED_MSGS": 0x2,
    "KDBUS_LIST_UNIQUE": 0x1,
    "KDBUS_LIST_NAMES": 0x2,
    "KDBUS_LIST_ACTIVATORS": 0x4,
    "KDBUS_LIST_QUEUED": 0x8,
    "KDBUS_MATCH_REPLACE": 0x1,
    "KDBUS_MAKE_ACCESS_GROUP": 0x1,
    "KDBUS_MAKE_ACCESS_WORLD": 0x2,
    # names
    "KDBUS_NAME_REPLACE_EXISTING": 0x1,
    "KDBUS_NAME_ALLOW_REPLACEMENT": 0x2,
    "KDBUS_NAME_QUEUE": 0x4,
    "KDBUS_NAME_IN_QUEUE": 0x8,
    "KDBUS_NAME_ACTIVATOR": 0x10,
    "KDBUS_NAME_PRIMARY": 0x20,
    "KDBUS_NAME_ACQUIRED": 0x40,
    # policy
    "_KDBUS_POLICY_ACCESS_NULL": 0,
    "KDBUS_POLICY_ACCESS_USER": 1,
    "KDBUS_POLICY_ACCESS_GROUP": 2,
    "KDBUS_POLICY_ACCESS_WORLD": 3,
    "KDBUS_POLICY_SEE": 0,
    "KDBUS_POLICY_TALK": 1,
    "KDBUS_POLICY_OWN": 2,
    **IOCTLS,
}

# §1.6
ERRNOS = dict(
    EPERM=1, ESRCH=3, EINTR=4, ENXIO=6, E2BIG=7, EBADF=9, EAGAIN=11, ENOMEM=12, EFAULT=14,
    EBUSY=16, EEXIST=17, EINVAL=22, EMFILE=24, ENOTTY=25, ETXTBSY=26, EMLINK=31, EPIPE=32,
    EDOM=33, ENAMETOOLONG=36, EXFULL=54, EBADSLT=57, ECOMM=70, EBADMSG=74, ENOTUNIQ=76,
    EBADFD=77, EREMCHG=78, EDESTADDRREQ=89, EMSGSIZE=90, EOPNOTSUPP=95, EADDRINUSE=98,
    EADDRNOTAVAIL=99, ECONNRESET=104, ENOBUFS=105, ESHUTDOWN=108, ETIMEDOUT=110,
    EALREADY=114, EREMOTEIO=121, EMEDIUMTYPE=124, ECANCELED=125,
)
