/* SPDX-License-Identifier: LGPL-2.1-or-later */
/*
 * kdbus-client.h - a small header-only kdbus client for the C tools.
 *
 * Plain syscalls over kdbusfs/abi/kdbus.h: open(), ioctl(), mmap(), poll().
 * Every function returns 0 or a negative errno.
 */
#ifndef KDBUS_CLIENT_H
#define KDBUS_CLIENT_H

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "../kdbusfs/abi/kdbus.h"

#define KC_ALIGN8(n)		(((n) + 7) & ~(uint64_t)7)
#define KC_ITEM_HEADER		16
#define KC_ITEM_SIZE(n)		KC_ALIGN8(KC_ITEM_HEADER + (uint64_t)(n))
#define KC_ITEM_NEXT(it)	((struct kdbus_item *)((uint8_t *)(it) + KC_ALIGN8((it)->size)))
/* Items of a struct whose items run from `first` to `(uint8_t *)head + size`. */
#define KC_FOREACH_ITEM(it, first, end)						\
	for ((it) = (first);							\
	     (uint8_t *)(it) + KC_ITEM_HEADER <= (uint8_t *)(end) &&		\
	     (it)->size >= KC_ITEM_HEADER;					\
	     (it) = KC_ITEM_NEXT(it))

#define KC_DEFAULT_POOL_SIZE	(16u * 1024 * 1024)

struct kc_conn {
	int fd;
	uint64_t id;
	uint64_t bloom_size;
	uint8_t *pool;
	size_t pool_size;
	uint64_t cookie;
};

static inline uint64_t kc_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* An 8-aligned, zeroed buffer of n bytes (free() it). */
static inline void *kc_zalloc(size_t n)
{
	void *p = NULL;

	if (posix_memalign(&p, 8, KC_ALIGN8(n ? n : 8)))
		return NULL;
	memset(p, 0, KC_ALIGN8(n ? n : 8));
	return p;
}

/* Append a string item at *pos and advance it. */
static inline void kc_put_string(struct kdbus_item **pos, uint64_t type, const char *s)
{
	size_t n = strlen(s) + 1;

	(*pos)->size = KC_ITEM_HEADER + n;
	(*pos)->type = type;
	memcpy((*pos)->str, s, n);
	*pos = KC_ITEM_NEXT(*pos);
}

static inline int kc_ioctl(int fd, unsigned long req, void *arg)
{
	return ioctl(fd, req, arg) < 0 ? -errno : 0;
}

static inline int kc_free(struct kc_conn *c, uint64_t offset)
{
	struct kdbus_cmd_free cmd = {
		.size = sizeof(cmd),
		.offset = offset,
	};

	return kc_ioctl(c->fd, KDBUS_CMD_FREE, &cmd);
}

/*
 * BUS_MAKE "<euid>-<name>" on a fresh fd of `control`.  On success *fd is
 * the bus-owner fd (the bus lives while it is open) and `bus_path` gets
 * "<dir of control>/<euid>-<name>/bus".
 */
static inline int kc_make_bus(const char *control, const char *name, uint64_t bloom_size,
			      int *fd, char *bus_path, size_t bus_path_len)
{
	char full[64];
	size_t size, dirlen;
	struct kdbus_cmd *cmd;
	struct kdbus_item *it;
	const char *slash;
	int r;

	if ((size_t)snprintf(full, sizeof(full), "%u-%s", (unsigned)geteuid(), name) >= sizeof(full))
		return -ENAMETOOLONG;
	size = sizeof(*cmd) + KC_ITEM_SIZE(sizeof(struct kdbus_bloom_parameter))
	       + KC_ITEM_SIZE(strlen(full) + 1);
	cmd = kc_zalloc(size);
	if (!cmd)
		return -ENOMEM;
	cmd->size = size;
	it = cmd->items;
	it->size = KC_ITEM_HEADER + sizeof(struct kdbus_bloom_parameter);
	it->type = KDBUS_ITEM_BLOOM_PARAMETER;
	it->bloom_parameter.size = bloom_size;
	it->bloom_parameter.n_hash = 1;
	it = KC_ITEM_NEXT(it);
	kc_put_string(&it, KDBUS_ITEM_MAKE_NAME, full);

	*fd = open(control, O_RDWR | O_CLOEXEC);
	if (*fd < 0) {
		r = -errno;
		free(cmd);
		return r;
	}
	r = kc_ioctl(*fd, KDBUS_CMD_BUS_MAKE, cmd);
	free(cmd);
	if (r < 0) {
		close(*fd);
		*fd = -1;
		return r;
	}
	slash = strrchr(control, '/');
	dirlen = slash ? (size_t)(slash - control) : 1;
	if ((size_t)snprintf(bus_path, bus_path_len, "%.*s/%s/bus", (int)dirlen,
			     slash ? control : ".", full) >= bus_path_len)
		return -ENAMETOOLONG;
	return 0;
}

/* open(bus), HELLO, mmap the pool, read the bloom size, FREE the HELLO slice. */
static inline int kc_hello(struct kc_conn *c, const char *bus_path, size_t pool_size,
			   uint64_t hello_flags, uint64_t attach_recv)
{
	struct kdbus_cmd_hello hello;
	struct kdbus_item *it;
	uint8_t *slice;
	int r;

	memset(c, 0, sizeof(*c));
	c->fd = open(bus_path, O_RDWR | O_CLOEXEC | O_NONBLOCK);
	if (c->fd < 0)
		return -errno;

	memset(&hello, 0, sizeof(hello));
	hello.size = sizeof(hello);
	hello.flags = hello_flags;
	hello.attach_flags_recv = attach_recv;
	hello.pool_size = pool_size;
	r = kc_ioctl(c->fd, KDBUS_CMD_HELLO, &hello);
	if (r < 0)
		goto fail;
	c->id = hello.id;
	c->pool_size = pool_size;
	c->pool = mmap(NULL, pool_size, PROT_READ, MAP_SHARED, c->fd, 0);
	if (c->pool == MAP_FAILED) {
		r = -errno;
		c->pool = NULL;
		goto fail;
	}
	slice = c->pool + hello.offset;
	KC_FOREACH_ITEM(it, (struct kdbus_item *)slice, slice + hello.items_size)
		if (it->type == KDBUS_ITEM_BLOOM_PARAMETER)
			c->bloom_size = it->bloom_parameter.size;
	r = kc_free(c, hello.offset);
	if (r < 0)
		goto fail;
	return 0;
fail:
	if (c->pool)
		munmap(c->pool, pool_size);
	close(c->fd);
	c->fd = -1;
	return r;
}

static inline void kc_close(struct kc_conn *c)
{
	if (c->pool)
		munmap(c->pool, c->pool_size);
	if (c->fd >= 0)
		close(c->fd);
	c->pool = NULL;
	c->fd = -1;
}

/* NAME_ACQUIRE; *return_flags (may be NULL) gets the kernel's return_flags. */
static inline int kc_acquire_name(struct kc_conn *c, const char *name, uint64_t flags,
				  uint64_t *return_flags)
{
	size_t size = sizeof(struct kdbus_cmd) + KC_ITEM_SIZE(strlen(name) + 1);
	struct kdbus_cmd *cmd = kc_zalloc(size);
	struct kdbus_item *it;
	int r;

	if (!cmd)
		return -ENOMEM;
	cmd->size = size;
	cmd->flags = flags;
	it = cmd->items;
	kc_put_string(&it, KDBUS_ITEM_NAME, name);
	r = kc_ioctl(c->fd, KDBUS_CMD_NAME_ACQUIRE, cmd);
	if (return_flags)
		*return_flags = cmd->return_flags;
	free(cmd);
	return r;
}

/*
 * A message being built: SEND takes a pointer to it, and its PAYLOAD_VEC
 * items point at caller memory that must stay valid during the call.
 */
struct kc_send {
	uint64_t dst_id;
	const char *dst_name;		/* non-NULL: send by name (dst_id 0) */
	uint64_t flags;			/* KDBUS_MSG_* */
	int64_t priority;
	uint64_t cookie;		/* 0: the next cookie of the connection */
	uint64_t cookie_reply;		/* replies */
	uint64_t timeout_ns;		/* EXPECT_REPLY: absolute CLOCK_MONOTONIC */
	const struct iovec *vecs;
	size_t n_vecs;
	int sync;			/* KDBUS_SEND_SYNC_REPLY */
	const void *bloom;		/* signals: BLOOM_FILTER data (bus bloom size) */
	size_t bloom_size;		/* bytes of bloom; 0: no BLOOM_FILTER item */
	uint64_t bloom_generation;
};

/*
 * SEND.  With `sync`, *reply points at the reply in the pool on success;
 * the caller must kc_free(c, (uint8_t *)*reply - c->pool).
 */
static inline int kc_send(struct kc_conn *c, const struct kc_send *s, struct kdbus_msg **reply)
{
	size_t size = sizeof(struct kdbus_msg), i;
	struct kdbus_cmd_send cmd;
	struct kdbus_msg *msg;
	struct kdbus_item *it;
	int r;

	if (s->dst_name)
		size += KC_ITEM_SIZE(strlen(s->dst_name) + 1);
	for (i = 0; i < s->n_vecs; i++)
		if (s->vecs[i].iov_len)
			size += KC_ITEM_SIZE(sizeof(struct kdbus_vec));
	if (s->bloom_size)
		size += KC_ITEM_SIZE(sizeof(struct kdbus_bloom_filter) + s->bloom_size);
	msg = kc_zalloc(size);
	if (!msg)
		return -ENOMEM;
	msg->size = size;
	msg->flags = s->flags;
	msg->priority = s->priority;
	msg->dst_id = s->dst_name ? KDBUS_DST_ID_NAME : s->dst_id;
	msg->payload_type = KDBUS_PAYLOAD_DBUS;
	msg->cookie = s->cookie ? s->cookie : ++c->cookie;
	if (s->flags & KDBUS_MSG_EXPECT_REPLY)
		msg->timeout_ns = s->timeout_ns;
	else
		msg->cookie_reply = s->cookie_reply;
	it = msg->items;
	if (s->dst_name)
		kc_put_string(&it, KDBUS_ITEM_DST_NAME, s->dst_name);
	for (i = 0; i < s->n_vecs; i++) {
		if (!s->vecs[i].iov_len)
			continue;
		it->size = KC_ITEM_HEADER + sizeof(struct kdbus_vec);
		it->type = KDBUS_ITEM_PAYLOAD_VEC;
		it->vec.size = s->vecs[i].iov_len;
		it->vec.address = (uintptr_t)s->vecs[i].iov_base;
		it = KC_ITEM_NEXT(it);
	}
	if (s->bloom_size) {
		it->size = KC_ITEM_HEADER + sizeof(struct kdbus_bloom_filter) + s->bloom_size;
		it->type = KDBUS_ITEM_BLOOM_FILTER;
		it->bloom_filter.generation = s->bloom_generation;
		memcpy(it->bloom_filter.data, s->bloom, s->bloom_size);
		it = KC_ITEM_NEXT(it);
	}

	memset(&cmd, 0, sizeof(cmd));
	cmd.size = sizeof(cmd);
	cmd.flags = s->sync ? KDBUS_SEND_SYNC_REPLY : 0;
	cmd.msg_address = (uintptr_t)msg;
	do
		r = kc_ioctl(c->fd, KDBUS_CMD_SEND, &cmd);
	while (r == -EINTR && s->sync);	/* same cookie: resumes the wait */
	free(msg);
	if (r == 0 && s->sync && reply)
		*reply = (struct kdbus_msg *)(c->pool + cmd.reply.offset);
	return r;
}

/*
 * MATCH_ADD of one entry under `cookie` whose only rule is a BLOOM_MASK of
 * `size` bytes (a signal matches when its filter has every bit of the mask).
 */
static inline int kc_add_bloom_match(struct kc_conn *c, uint64_t cookie, const void *mask,
				     size_t size)
{
	size_t total = sizeof(struct kdbus_cmd_match) + KC_ITEM_SIZE(size);
	struct kdbus_cmd_match *cmd = kc_zalloc(total);
	int r;

	if (!cmd)
		return -ENOMEM;
	cmd->size = total;
	cmd->cookie = cookie;
	cmd->items[0].size = KC_ITEM_HEADER + size;
	cmd->items[0].type = KDBUS_ITEM_BLOOM_MASK;
	memcpy(cmd->items[0].data64, mask, size);
	r = kc_ioctl(c->fd, KDBUS_CMD_MATCH_ADD, cmd);
	free(cmd);
	return r;
}

/* RECV: *msg points at the message in the pool (kc_free it); -EAGAIN if none. */
static inline int kc_recv_flags(struct kc_conn *c, struct kdbus_msg **msg,
				uint64_t *dropped, uint64_t flags)
{
	struct kdbus_cmd_recv cmd;
	int r;

	memset(&cmd, 0, sizeof(cmd));
	cmd.size = sizeof(cmd);
	cmd.flags = flags;
	r = kc_ioctl(c->fd, KDBUS_CMD_RECV, &cmd);
	if (dropped)
		*dropped = cmd.dropped_msgs;
	if (r < 0)
		return r;
	*msg = (struct kdbus_msg *)(c->pool + cmd.msg.offset);
	return 0;
}

static inline int kc_recv(struct kc_conn *c, struct kdbus_msg **msg, uint64_t *dropped)
{
	return kc_recv_flags(c, msg, dropped, 0);
}

/* Block until the connection is readable (or broken); timeout_ms -1 = forever. */
static inline int kc_wait(struct kc_conn *c, int timeout_ms)
{
	struct pollfd p = { .fd = c->fd, .events = POLLIN };
	int r;

	do
		r = poll(&p, 1, timeout_ms);
	while (r < 0 && errno == EINTR);
	if (r < 0)
		return -errno;
	if (r == 0)
		return -ETIMEDOUT;
	if (p.revents & (POLLERR | POLLHUP | POLLNVAL))
		return -ECONNRESET;
	return 0;
}

/*
 * The payload of a received message: copies the data of every PAYLOAD_OFF
 * vec, in order, into a malloc()ed buffer (NUL-terminated for convenience).
 */
static inline int kc_payload(const struct kdbus_msg *m, size_t msg_slice_limit,
			     uint8_t **data, size_t *len)
{
	const struct kdbus_item *it;
	uint64_t p = KC_ALIGN8(m->size), total = 0;
	uint8_t *buf;

	KC_FOREACH_ITEM(it, m->items, (const uint8_t *)m + m->size)
		if (it->type == KDBUS_ITEM_PAYLOAD_OFF && it->vec.offset >= p &&
		    it->vec.offset + it->vec.size <= msg_slice_limit)
			total += it->vec.size;
	buf = malloc(total + 1);
	if (!buf)
		return -ENOMEM;
	*len = 0;
	KC_FOREACH_ITEM(it, m->items, (const uint8_t *)m + m->size)
		if (it->type == KDBUS_ITEM_PAYLOAD_OFF && it->vec.offset >= p &&
		    it->vec.offset + it->vec.size <= msg_slice_limit) {
			memcpy(buf + *len, (const uint8_t *)m + it->vec.offset, it->vec.size);
			*len += it->vec.size;
		}
	buf[*len] = 0;
	*data = buf;
	return 0;
}

/* The bytes between a message in the pool and the end of the pool. */
static inline size_t kc_slice_limit(const struct kc_conn *c, const struct kdbus_msg *m)
{
	return c->pool_size - (size_t)((const uint8_t *)m - c->pool);
}

static inline uint64_t kc_offset(const struct kc_conn *c, const void *p)
{
	return (uint64_t)((const uint8_t *)p - c->pool);
}

#endif /* KDBUS_CLIENT_H */
