"""Global kdbus limits (fact sheet §1.4).

These are kernel-internal numbers, not part of the C ABI, so they live here
rather than in kdbus.h.
"""

#: Max size of a command incl. items, and of a kdbus_msg incl. items (EMSGSIZE).
KDBUS_CMD_MAX_SIZE = 32768
#: Defined by kdbus but unused; the real cap is KDBUS_CMD_MAX_SIZE.
KDBUS_MSG_MAX_SIZE = 8192
#: Sum of vec sizes per message, NULL vecs included (EMSGSIZE).
KDBUS_MSG_MAX_PAYLOAD_VEC_SIZE = 2 * 1024 * 1024
#: PAYLOAD_MEMFD items per message (E2BIG).
KDBUS_MSG_MAX_MEMFD_ITEMS = 16
#: fds in the single FDS item (EMFILE); the kdbus docs say 253.
KDBUS_MSG_MAX_FDS = 16
#: fds in flight per receiver per sending user (EMFILE).
KDBUS_CONN_MAX_FDS_PER_USER = 16
#: queued messages per receiver per sending user (ENOBUFS).
KDBUS_CONN_MAX_MSGS_PER_USER = 256
#: outstanding EXPECT_REPLY requests per requester (EMLINK).
KDBUS_CONN_MAX_REQUESTS_PENDING = 128
#: name records per connection: owned + queued + activator (E2BIG).
KDBUS_CONN_MAX_NAMES = 256
#: match entries per connection (EMFILE).
KDBUS_MATCH_MAX = 256
#: well-known name length, NUL excluded (EINVAL).
KDBUS_NAME_MAX_LEN = 255
#: bus / endpoint / connection-description name length (ENAMETOOLONG).
KDBUS_SYSNAME_MAX_LEN = 63
#: bloom filter size bounds in bytes; a multiple of 8 (EINVAL).
KDBUS_BUS_BLOOM_MIN_SIZE = 8
KDBUS_BUS_BLOOM_MAX_SIZE = 4096
#: buses per real uid per domain (EMFILE).
KDBUS_USER_MAX_BUSES = 16
#: connections per accounting user per domain (EMFILE).
KDBUS_USER_MAX_CONN = 1024
#: pool_size granularity (EINVAL unless > 0 and a multiple of it).
KDBUS_POOL_SIZE_ALIGN = 4096
#: policy names per activator / policy holder (E2BIG).
KDBUS_POLICY_MAX_NAMES = 1
