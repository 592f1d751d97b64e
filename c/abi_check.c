/*
 * abi_check - print the layout and constants of kdbusfs/abi/kdbus.h as JSON.
 *
 *   gcc -std=gnu11 -Wall -Wextra -Werror -I kdbusfs/abi c/abi_check.c -o abi_check
 *
 * tests/abi/test_header.py builds and runs it, and compares the output with
 * the fact sheet's tables and with the Python (cffi) view of the header.
 *
 * Output: {"sizeof": {struct: size},
 *          "fields": {"struct.member[.sub]": [offset, size]},
 *          "signed": {"struct.member": true|false},   (scalar members only)
 *          "helpers": {expression: value},
 *          "constants": {NAME: value}}
 */

#define KDBUS_WANT_ITEM_HELPERS
#include "kdbus.h"

#include <stddef.h>
#include <stdio.h>

static const char *sep;

static void section(const char *name)
{
	printf("%s\n \"%s\": {", sep ? "}," : "{", name);
	sep = "";
}

static void key(const char *k)
{
	printf("%s\n  \"%s\": ", sep, k);
	sep = ",";
}

static void entry_u(const char *k, unsigned long long v)
{
	key(k);
	printf("%llu", v);
}

static void entry_pair(const char *k, unsigned long long a, unsigned long long b)
{
	key(k);
	printf("[%llu, %llu]", a, b);
}

static void entry_bool(const char *k, int v)
{
	key(k);
	printf("%s", v ? "true" : "false");
}

#define MEMBER(T, m)	(((struct T *)0)->m)
#define SIZE(T)		entry_u(#T, sizeof(struct T))
/* offset and size of a member (size 0 for flexible arrays) */
#define F(T, m)		entry_pair(#T "." #m, offsetof(struct T, m), \
				   sizeof(MEMBER(T, m)))
/* signedness of a scalar member: 0 - 1 stays below 1 only if signed */
#define SG(T, m)	do {						\
		__typeof__(MEMBER(T, m)) v_ = 0;			\
		v_--;							\
		entry_bool(#T "." #m, v_ < 1);				\
	} while (0)
#define K(c)		entry_u(#c, (unsigned long long)(c))

/* X-macro lists: every member of every struct of the fact sheet, §4. */
#define SCALARS(X)							\
	X(kdbus_item, size) X(kdbus_item, type) X(kdbus_item, id)	\
	X(kdbus_vec, size) X(kdbus_vec, address) X(kdbus_vec, offset)	\
	X(kdbus_memfd, start) X(kdbus_memfd, size) X(kdbus_memfd, fd)	\
	X(kdbus_memfd, __pad)						\
	X(kdbus_creds, uid) X(kdbus_creds, euid) X(kdbus_creds, suid)	\
	X(kdbus_creds, fsuid) X(kdbus_creds, gid) X(kdbus_creds, egid)	\
	X(kdbus_creds, sgid) X(kdbus_creds, fsgid)			\
	X(kdbus_pids, pid) X(kdbus_pids, tid) X(kdbus_pids, ppid)	\
	X(kdbus_caps, last_cap)						\
	X(kdbus_audit, sessionid) X(kdbus_audit, loginuid)		\
	X(kdbus_timestamp, seqnum) X(kdbus_timestamp, monotonic_ns)	\
	X(kdbus_timestamp, realtime_ns)					\
	X(kdbus_name, flags)						\
	X(kdbus_notify_id_change, id) X(kdbus_notify_id_change, flags)	\
	X(kdbus_notify_name_change, old_id.id)				\
	X(kdbus_notify_name_change, old_id.flags)			\
	X(kdbus_notify_name_change, new_id.id)				\
	X(kdbus_notify_name_change, new_id.flags)			\
	X(kdbus_policy_access, type) X(kdbus_policy_access, access)	\
	X(kdbus_policy_access, id)					\
	X(kdbus_bloom_parameter, size) X(kdbus_bloom_parameter, n_hash)	\
	X(kdbus_bloom_filter, generation)				\
	X(kdbus_msg, size) X(kdbus_msg, flags) X(kdbus_msg, priority)	\
	X(kdbus_msg, dst_id) X(kdbus_msg, src_id)			\
	X(kdbus_msg, payload_type) X(kdbus_msg, cookie)			\
	X(kdbus_msg, timeout_ns) X(kdbus_msg, cookie_reply)		\
	X(kdbus_msg_info, offset) X(kdbus_msg_info, msg_size)		\
	X(kdbus_msg_info, return_flags)					\
	X(kdbus_cmd, size) X(kdbus_cmd, flags) X(kdbus_cmd, return_flags) \
	X(kdbus_cmd_hello, size) X(kdbus_cmd_hello, flags)		\
	X(kdbus_cmd_hello, return_flags)				\
	X(kdbus_cmd_hello, attach_flags_send)				\
	X(kdbus_cmd_hello, attach_flags_recv)				\
	X(kdbus_cmd_hello, bus_flags) X(kdbus_cmd_hello, id)		\
	X(kdbus_cmd_hello, pool_size) X(kdbus_cmd_hello, offset)	\
	X(kdbus_cmd_hello, items_size)					\
	X(kdbus_cmd_send, size) X(kdbus_cmd_send, flags)		\
	X(kdbus_cmd_send, return_flags) X(kdbus_cmd_send, msg_address)	\
	X(kdbus_cmd_send, reply.offset) X(kdbus_cmd_send, reply.msg_size) \
	X(kdbus_cmd_send, reply.return_flags)				\
	X(kdbus_cmd_recv, size) X(kdbus_cmd_recv, flags)		\
	X(kdbus_cmd_recv, return_flags) X(kdbus_cmd_recv, priority)	\
	X(kdbus_cmd_recv, dropped_msgs) X(kdbus_cmd_recv, msg.offset)	\
	X(kdbus_cmd_recv, msg.msg_size) X(kdbus_cmd_recv, msg.return_flags) \
	X(kdbus_cmd_free, size) X(kdbus_cmd_free, flags)		\
	X(kdbus_cmd_free, return_flags) X(kdbus_cmd_free, offset)	\
	X(kdbus_cmd_info, size) X(kdbus_cmd_info, flags)		\
	X(kdbus_cmd_info, return_flags) X(kdbus_cmd_info, id)		\
	X(kdbus_cmd_info, attach_flags) X(kdbus_cmd_info, offset)	\
	X(kdbus_cmd_info, info_size)					\
	X(kdbus_cmd_list, size) X(kdbus_cmd_list, flags)		\
	X(kdbus_cmd_list, return_flags) X(kdbus_cmd_list, offset)	\
	X(kdbus_cmd_list, list_size)					\
	X(kdbus_cmd_match, size) X(kdbus_cmd_match, flags)		\
	X(kdbus_cmd_match, return_flags) X(kdbus_cmd_match, cookie)	\
	X(kdbus_info, size) X(kdbus_info, id) X(kdbus_info, flags)

#define AGGREGATES(X)							\
	X(kdbus_item, data) X(kdbus_item, data32) X(kdbus_item, data64)	\
	X(kdbus_item, str) X(kdbus_item, vec) X(kdbus_item, creds)	\
	X(kdbus_item, pids) X(kdbus_item, audit) X(kdbus_item, caps)	\
	X(kdbus_item, timestamp) X(kdbus_item, name)			\
	X(kdbus_item, bloom_parameter) X(kdbus_item, bloom_filter)	\
	X(kdbus_item, memfd) X(kdbus_item, fds)				\
	X(kdbus_item, name_change) X(kdbus_item, id_change)		\
	X(kdbus_item, policy_access) X(kdbus_item, name.name)		\
	X(kdbus_item, name_change.name) X(kdbus_item, bloom_filter.data) \
	X(kdbus_item, caps.caps)					\
	X(kdbus_caps, caps) X(kdbus_name, name)				\
	X(kdbus_notify_name_change, old_id)				\
	X(kdbus_notify_name_change, new_id)				\
	X(kdbus_notify_name_change, name) X(kdbus_bloom_filter, data)	\
	X(kdbus_msg, items) X(kdbus_cmd, items) X(kdbus_cmd_hello, id128) \
	X(kdbus_cmd_hello, items) X(kdbus_cmd_send, reply)		\
	X(kdbus_cmd_send, items) X(kdbus_cmd_recv, msg)			\
	X(kdbus_cmd_recv, items) X(kdbus_cmd_free, items)		\
	X(kdbus_cmd_info, items) X(kdbus_cmd_list, items)		\
	X(kdbus_cmd_match, items) X(kdbus_info, items)

#define STRUCTS(X)							\
	X(kdbus_notify_id_change) X(kdbus_notify_name_change)		\
	X(kdbus_creds) X(kdbus_pids) X(kdbus_caps) X(kdbus_audit)	\
	X(kdbus_timestamp) X(kdbus_vec) X(kdbus_bloom_parameter)	\
	X(kdbus_bloom_filter) X(kdbus_memfd) X(kdbus_name)		\
	X(kdbus_policy_access) X(kdbus_item) X(kdbus_msg)		\
	X(kdbus_msg_info) X(kdbus_cmd_send) X(kdbus_cmd_recv)		\
	X(kdbus_cmd_free) X(kdbus_cmd_hello) X(kdbus_info)		\
	X(kdbus_cmd_list) X(kdbus_cmd_info) X(kdbus_cmd_match)		\
	X(kdbus_cmd)

#define SIZE_X(T)	SIZE(T);
#define F_X(T, m)	F(T, m);
#define A_X(T, m)	F(T, m);
#define SG_X(T, m)	SG(T, m);

int main(void)
{
	section("sizeof");
	STRUCTS(SIZE_X)

	section("fields");
	SCALARS(F_X)
	AGGREGATES(A_X)

	section("signed");
	SCALARS(SG_X)

	section("helpers");
	entry_u("offsetof(kdbus_item, data)", offsetof(struct kdbus_item, data));
	entry_u("KDBUS_ITEM_SIZE(0)", KDBUS_ITEM_SIZE(0));
	entry_u("KDBUS_ITEM_SIZE(1)", KDBUS_ITEM_SIZE(1));
	entry_u("KDBUS_ITEM_SIZE(8)", KDBUS_ITEM_SIZE(8));
	entry_u("KDBUS_ITEM_SIZE(36)", KDBUS_ITEM_SIZE(36));
	entry_u("KDBUS_ALIGN8(13)", KDBUS_ALIGN8(13));

	section("constants");
	K(_KDBUS_POLICY_ACCESS_NULL);
	K(KDBUS_POLICY_ACCESS_USER);
	K(KDBUS_POLICY_ACCESS_GROUP);
	K(KDBUS_POLICY_ACCESS_WORLD);
	K(KDBUS_POLICY_SEE);
	K(KDBUS_POLICY_TALK);
	K(KDBUS_POLICY_OWN);
	K(KDBUS_ATTACH_TIMESTAMP);
	K(KDBUS_ATTACH_CREDS);
	K(KDBUS_ATTACH_PIDS);
	K(KDBUS_ATTACH_AUXGROUPS);
	K(KDBUS_ATTACH_NAMES);
	K(KDBUS_ATTACH_TID_COMM);
	K(KDBUS_ATTACH_PID_COMM);
	K(KDBUS_ATTACH_EXE);
	K(KDBUS_ATTACH_CMDLINE);
	K(KDBUS_ATTACH_CGROUP);
	K(KDBUS_ATTACH_CAPS);
	K(KDBUS_ATTACH_SECLABEL);
	K(KDBUS_ATTACH_AUDIT);
	K(KDBUS_ATTACH_CONN_DESCRIPTION);
	K(_KDBUS_ATTACH_ALL);
	K(_KDBUS_ITEM_NULL);
	K(_KDBUS_ITEM_USER_BASE);
	K(KDBUS_ITEM_NEGOTIATE);
	K(KDBUS_ITEM_PAYLOAD_VEC);
	K(KDBUS_ITEM_PAYLOAD_OFF);
	K(KDBUS_ITEM_PAYLOAD_MEMFD);
	K(KDBUS_ITEM_FDS);
	K(KDBUS_ITEM_CANCEL_FD);
	K(KDBUS_ITEM_BLOOM_PARAMETER);
	K(KDBUS_ITEM_BLOOM_FILTER);
	K(KDBUS_ITEM_BLOOM_MASK);
	K(KDBUS_ITEM_DST_NAME);
	K(KDBUS_ITEM_MAKE_NAME);
	K(KDBUS_ITEM_ATTACH_FLAGS_SEND);
	K(KDBUS_ITEM_ATTACH_FLAGS_RECV);
	K(KDBUS_ITEM_ID);
	K(KDBUS_ITEM_NAME);
	K(KDBUS_ITEM_DST_ID);
	K(_KDBUS_ITEM_ATTACH_BASE);
	K(KDBUS_ITEM_TIMESTAMP);
	K(KDBUS_ITEM_CREDS);
	K(KDBUS_ITEM_PIDS);
	K(KDBUS_ITEM_AUXGROUPS);
	K(KDBUS_ITEM_OWNED_NAME);
	K(KDBUS_ITEM_TID_COMM);
	K(KDBUS_ITEM_PID_COMM);
	K(KDBUS_ITEM_EXE);
	K(KDBUS_ITEM_CMDLINE);
	K(KDBUS_ITEM_CGROUP);
	K(KDBUS_ITEM_CAPS);
	K(KDBUS_ITEM_SECLABEL);
	K(KDBUS_ITEM_AUDIT);
	K(KDBUS_ITEM_CONN_DESCRIPTION);
	K(_KDBUS_ITEM_POLICY_BASE);
	K(KDBUS_ITEM_POLICY_ACCESS);
	K(_KDBUS_ITEM_KERNEL_BASE);
	K(KDBUS_ITEM_NAME_ADD);
	K(KDBUS_ITEM_NAME_REMOVE);
	K(KDBUS_ITEM_NAME_CHANGE);
	K(KDBUS_ITEM_ID_ADD);
	K(KDBUS_ITEM_ID_REMOVE);
	K(KDBUS_ITEM_REPLY_TIMEOUT);
	K(KDBUS_ITEM_REPLY_DEAD);
	K(KDBUS_MSG_EXPECT_REPLY);
	K(KDBUS_MSG_NO_AUTO_START);
	K(KDBUS_MSG_SIGNAL);
	K(KDBUS_SEND_SYNC_REPLY);
	K(KDBUS_RECV_PEEK);
	K(KDBUS_RECV_DROP);
	K(KDBUS_RECV_USE_PRIORITY);
	K(KDBUS_RECV_RETURN_INCOMPLETE_FDS);
	K(KDBUS_RECV_RETURN_DROPPED_MSGS);
	K(KDBUS_HELLO_ACCEPT_FD);
	K(KDBUS_HELLO_ACTIVATOR);
	K(KDBUS_HELLO_POLICY_HOLDER);
	K(KDBUS_HELLO_MONITOR);
	K(KDBUS_LIST_UNIQUE);
	K(KDBUS_LIST_NAMES);
	K(KDBUS_LIST_ACTIVATORS);
	K(KDBUS_LIST_QUEUED);
	K(KDBUS_MATCH_REPLACE);
	K(KDBUS_MAKE_ACCESS_GROUP);
	K(KDBUS_MAKE_ACCESS_WORLD);
	K(KDBUS_NAME_REPLACE_EXISTING);
	K(KDBUS_NAME_ALLOW_REPLACEMENT);
	K(KDBUS_NAME_QUEUE);
	K(KDBUS_NAME_IN_QUEUE);
	K(KDBUS_NAME_ACTIVATOR);
	K(KDBUS_NAME_PRIMARY);
	K(KDBUS_NAME_ACQUIRED);
	K(KDBUS_IOCTL_MAGIC);
	K(KDBUS_SRC_ID_KERNEL);
	K(KDBUS_DST_ID_NAME);
	K(KDBUS_MATCH_ID_ANY);
	K(KDBUS_DST_ID_BROADCAST);
	K(KDBUS_FLAG_NEGOTIATE);
	/* kdbusfs extensions */
	K(KDBUSFS_RECV_BLOCK);
	K(KDBUSFS_ITEM_FD_CHANNEL);
	K(KDBUSFS_CMD_FD_CHANNEL);
	K(KDBUS_SUPER_MAGIC);
	K(_KDBUS_ATTACH_ANY);
	K(KDBUS_PAYLOAD_KERNEL);
	K(KDBUS_PAYLOAD_DBUS);
	K(KDBUS_CMD_BUS_MAKE);
	K(KDBUS_CMD_ENDPOINT_MAKE);
	K(KDBUS_CMD_ENDPOINT_UPDATE);
	K(KDBUS_CMD_HELLO);
	K(KDBUS_CMD_UPDATE);
	K(KDBUS_CMD_BYEBYE);
	K(KDBUS_CMD_FREE);
	K(KDBUS_CMD_CONN_INFO);
	K(KDBUS_CMD_BUS_CREATOR_INFO);
	K(KDBUS_CMD_LIST);
	K(KDBUS_CMD_SEND);
	K(KDBUS_CMD_RECV);
	K(KDBUS_CMD_NAME_ACQUIRE);
	K(KDBUS_CMD_NAME_RELEASE);
	K(KDBUS_CMD_MATCH_ADD);
	K(KDBUS_CMD_MATCH_REMOVE);
	K(KDBUS_ITEM_HEADER_SIZE);

	printf("}\n}\n");
	return 0;
}
