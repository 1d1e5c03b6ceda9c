// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Socket capture from syscall tracepoints. These machines have no kprobes, so
// every byte a selected process moves over TCP is seen at the syscall
// boundary: arguments are remembered at sys_enter and the payload is copied at
// sys_exit, when the kernel says how many bytes really moved.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "events.h"
#include "maps.h"
#include "sock.h"

#define EINPROGRESS 115

// Set by the loader before the programs are loaded.
volatile const __u32 cfg_capture_bytes = 4096;
volatile const __u32 cfg_self_tgid = 0;
volatile const __u8 cfg_trace_all = 0;
volatile const __u8 cfg_watch_exec = 0;

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);
	if (v)
		*v += 1; // per-CPU slot: no atomic needed
}

static __always_inline bool selected(__u32 tgid)
{
	if (tgid == cfg_self_tgid)
		return false; // never trace our own export traffic
	if (cfg_trace_all)
		return true;
	return bpf_map_lookup_elem(&targets, &tgid) != NULL;
}

static __always_inline __u64 capture_limit(__u64 moved)
{
	__u64 n = moved;
	if (n > cfg_capture_bytes)
		n = cfg_capture_bytes;
	if (n > CAPTURE_MAX)
		n = CAPTURE_MAX;
	return n;
}

static __always_inline struct event_buf *new_event(__u8 kind, __u8 syscall, int fd, struct sock *sk, __u64 ts_enter)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct event_buf *b = bpf_map_lookup_elem(&scratch, &cpu);
	if (!b)
		return NULL;
	struct event *e = &b->hdr;
	__u64 id = bpf_get_current_pid_tgid();
	e->ts_exit = bpf_ktime_get_ns();
	e->ts_enter = ts_enter ? ts_enter : e->ts_exit;
	e->sock = (__u64)sk;
	e->tgid = id >> 32;
	e->tid = (__u32)id;
	e->fd = fd;
	e->size = 0;
	e->captured = 0;
	e->kind = kind;
	e->dir = DIR_NONE;
	e->syscall = syscall;
	e->family = 0;
	e->sport = 0;
	e->dport = 0;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (sk)
		fill_tuple(e, sk);
	return b;
}

static __always_inline void submit(struct event_buf *b)
{
	__u64 n = b->hdr.captured;
	// Re-bound n here: the verifier does not carry the bound through the
	// store to and load from the map value.
	if (n > CAPTURE_MAX)
		n = CAPTURE_MAX;
	if (bpf_ringbuf_output(&events, b, sizeof(struct event) + n, 0))
		count(COUNTER_LOST);
	else
		count(COUNTER_EVENTS);
}

static __always_inline void capture_buf(struct event_buf *b, __u64 ptr, __u64 moved)
{
	__u64 n = capture_limit(moved);
	if (n && bpf_probe_read_user(b->data, n, (void *)ptr))
		n = 0;
	b->hdr.captured = n;
}

// Copies up to capture_limit(moved) bytes scattered over an iovec array.
static __always_inline void capture_iov(struct event_buf *b, __u64 iov_ptr, __u64 iovcnt, __u64 moved)
{
	__u64 limit = capture_limit(moved);
	__u64 off = 0;
	int i;
	for (i = 0; i < IOV_MAX_READ; i++) {
		if (i >= iovcnt || off >= limit)
			break;
		struct iovec iov;
		if (bpf_probe_read_user(&iov, sizeof(iov), (void *)(iov_ptr + i * sizeof(iov))))
			break;
		__u64 n = iov.iov_len;
		if (n > limit - off)
			n = limit - off;
		// Both bounds restated for the verifier: off < CAPTURE_MAX and
		// n <= CAPTURE_MAX keep &data[off] + n inside the 2*CAPTURE_MAX area.
		if (off >= CAPTURE_MAX || n > CAPTURE_MAX)
			break;
		if (n && bpf_probe_read_user(&b->data[off], n, iov.iov_base))
			break;
		off += n;
	}
	if (i == IOV_MAX_READ && off < limit && iovcnt > IOV_MAX_READ)
		count(COUNTER_IOV_CAPPED);
	b->hdr.captured = off;
}

// ---- entry: remember arguments --------------------------------------------

static __always_inline int remember(__u8 syscall, int fd, __u64 buf, __u64 cnt)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!selected(id >> 32))
		return 0;
	struct sock *sk = tcp_sock_of_fd(fd);
	if (!sk)
		return 0; // files, pipes, UDP, unix sockets: rejected here, at the source
	struct inflight in = {
		.ts_enter = bpf_ktime_get_ns(),
		.buf = buf,
		.count = cnt,
		.sock = (__u64)sk,
		.fd = fd,
		.syscall = syscall,
	};
	if (bpf_map_update_elem(&inflight, &id, &in, BPF_ANY))
		count(COUNTER_STASH_FULL);
	return 0;
}

// Takes the remembered arguments of this thread's syscall, if they belong to it.
static __always_inline bool recall(__u8 syscall, struct inflight *out)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct inflight *in = bpf_map_lookup_elem(&inflight, &id);
	if (!in)
		return false;
	*out = *in;
	bpf_map_delete_elem(&inflight, &id);
	return out->syscall == syscall;
}

#define ENTER(name, id, fd_arg, buf_arg, cnt_arg)                             \
	SEC("tracepoint/syscalls/sys_enter_" #name)                           \
	int enter_##name(struct trace_event_raw_sys_enter *ctx)               \
	{                                                                     \
		return remember(id, (int)ctx->args[fd_arg], ctx->args[buf_arg], \
				ctx->args[cnt_arg]);                          \
	}

ENTER(read, SYS_READ, 0, 1, 2)
ENTER(write, SYS_WRITE, 0, 1, 2)
ENTER(readv, SYS_READV, 0, 1, 2)
ENTER(writev, SYS_WRITEV, 0, 1, 2)
ENTER(sendto, SYS_SENDTO, 0, 1, 2)
ENTER(recvfrom, SYS_RECVFROM, 0, 1, 2)
ENTER(sendmsg, SYS_SENDMSG, 0, 1, 1)
ENTER(recvmsg, SYS_RECVMSG, 0, 1, 1)
ENTER(sendmmsg, SYS_SENDMMSG, 0, 1, 2)
ENTER(recvmmsg, SYS_RECVMMSG, 0, 1, 2)
ENTER(sendfile64, SYS_SENDFILE, 0, 2, 3)
ENTER(connect, SYS_CONNECT, 0, 1, 2)

// ---- exit: copy what moved --------------------------------------------------

static __always_inline int data_buf(__u8 syscall, __u8 dir, long ret)
{
	struct inflight a;
	if (!recall(syscall, &a) || ret <= 0)
		return 0;
	struct event_buf *b = new_event(EVENT_DATA, syscall, a.fd, (struct sock *)a.sock, a.ts_enter);
	if (!b)
		return 0;
	b->hdr.dir = dir;
	b->hdr.size = ret;
	capture_buf(b, a.buf, ret);
	submit(b);
	return 0;
}

static __always_inline int data_iov(__u8 syscall, __u8 dir, long ret)
{
	struct inflight a;
	if (!recall(syscall, &a) || ret <= 0)
		return 0;
	struct event_buf *b = new_event(EVENT_DATA, syscall, a.fd, (struct sock *)a.sock, a.ts_enter);
	if (!b)
		return 0;
	b->hdr.dir = dir;
	b->hdr.size = ret;
	capture_iov(b, a.buf, a.count, ret);
	submit(b);
	return 0;
}

static __always_inline int data_msg(__u8 syscall, __u8 dir, long ret)
{
	struct inflight a;
	if (!recall(syscall, &a) || ret <= 0)
		return 0;
	struct user_msghdr msg;
	if (bpf_probe_read_user(&msg, sizeof(msg), (void *)a.buf))
		__builtin_memset(&msg, 0, sizeof(msg)); // still report the byte count
	struct event_buf *b = new_event(EVENT_DATA, syscall, a.fd, (struct sock *)a.sock, a.ts_enter);
	if (!b)
		return 0;
	b->hdr.dir = dir;
	b->hdr.size = ret;
	capture_iov(b, (__u64)msg.msg_iov, msg.msg_iovlen, ret);
	submit(b);
	return 0;
}

struct mmsg_walk {
	struct inflight args;
	long messages;
	__u8 syscall;
	__u8 dir;
};

static long mmsg_one(__u32 i, struct mmsg_walk *w)
{
	if (i >= w->messages)
		return 1;
	struct mmsghdr mm;
	if (bpf_probe_read_user(&mm, sizeof(mm), (void *)(w->args.buf + i * sizeof(mm))))
		return 1;
	struct event_buf *b = new_event(EVENT_DATA, w->syscall, w->args.fd, (struct sock *)w->args.sock, w->args.ts_enter);
	if (!b)
		return 1;
	b->hdr.dir = w->dir;
	b->hdr.size = mm.msg_len;
	capture_iov(b, (__u64)mm.msg_hdr.msg_iov, mm.msg_hdr.msg_iovlen, mm.msg_len);
	submit(b);
	return 0;
}

// sendmmsg/recvmmsg return a message count; each message reports its own
// length in mmsghdr.msg_len and becomes its own event. bpf_loop, not a
// plain loop: unrolled around the iovec loop, the verifier took over a
// second per program to load it.
static __always_inline int data_mmsg(__u8 syscall, __u8 dir, long ret)
{
	struct mmsg_walk w = {.syscall = syscall, .dir = dir, .messages = ret};
	if (!recall(syscall, &w.args) || ret <= 0)
		return 0;
	if (ret > MMSG_MAX)
		count(COUNTER_MMSG_CAPPED);
	bpf_loop(MMSG_MAX, mmsg_one, &w, 0);
	return 0;
}

#define EXIT(name, id, kindfn, dir)                              \
	SEC("tracepoint/syscalls/sys_exit_" #name)               \
	int exit_##name(struct trace_event_raw_sys_exit *ctx)    \
	{                                                        \
		return kindfn(id, dir, ctx->ret);                \
	}

EXIT(read, SYS_READ, data_buf, DIR_INGRESS)
EXIT(write, SYS_WRITE, data_buf, DIR_EGRESS)
EXIT(sendto, SYS_SENDTO, data_buf, DIR_EGRESS)
EXIT(recvfrom, SYS_RECVFROM, data_buf, DIR_INGRESS)
EXIT(readv, SYS_READV, data_iov, DIR_INGRESS)
EXIT(writev, SYS_WRITEV, data_iov, DIR_EGRESS)
EXIT(sendmsg, SYS_SENDMSG, data_msg, DIR_EGRESS)
EXIT(recvmsg, SYS_RECVMSG, data_msg, DIR_INGRESS)
EXIT(sendmmsg, SYS_SENDMMSG, data_mmsg, DIR_EGRESS)
EXIT(recvmmsg, SYS_RECVMMSG, data_mmsg, DIR_INGRESS)

// sendfile moves file pages into the socket inside the kernel: there is no
// user buffer to copy, but the count keeps the parser's place in the body.
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int exit_sendfile64(struct trace_event_raw_sys_exit *ctx)
{
	struct inflight a;
	if (!recall(SYS_SENDFILE, &a) || ctx->ret <= 0)
		return 0;
	struct event_buf *b = new_event(EVENT_DATA, SYS_SENDFILE, a.fd, (struct sock *)a.sock, a.ts_enter);
	if (!b)
		return 0;
	b->hdr.dir = DIR_EGRESS;
	b->hdr.size = ctx->ret;
	submit(b);
	return 0;
}

// ---- connection lifecycle ---------------------------------------------------

static __always_inline int accepted(long ret)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (ret < 0 || !selected(id >> 32))
		return 0;
	struct sock *sk = tcp_sock_of_fd(ret);
	if (!sk)
		return 0;
	struct event_buf *b = new_event(EVENT_ACCEPT, SYS_ACCEPT, ret, sk, 0);
	if (b)
		submit(b);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_accept")
int exit_accept(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_accept4")
int exit_accept4(struct trace_event_raw_sys_exit *ctx)
{
	return accepted(ctx->ret);
}

SEC("tracepoint/syscalls/sys_exit_connect")
int exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	struct inflight a;
	if (!recall(SYS_CONNECT, &a))
		return 0;
	// A non-blocking connect returns EINPROGRESS with the local port
	// already bound, so its 4-tuple is complete here.
	if (ctx->ret != 0 && ctx->ret != -EINPROGRESS)
		return 0;
	struct sock *sk = tcp_sock_of_fd(a.fd);
	if (!sk)
		return 0;
	struct event_buf *b = new_event(EVENT_CONNECT, SYS_CONNECT, a.fd, sk, a.ts_enter);
	if (b)
		submit(b);
	return 0;
}

// On entry: after close the fd no longer leads to the socket.
SEC("tracepoint/syscalls/sys_enter_close")
int enter_close(struct trace_event_raw_sys_enter *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	if (!selected(id >> 32))
		return 0;
	int fd = (int)ctx->args[0];
	struct sock *sk = tcp_sock_of_fd(fd);
	if (!sk)
		return 0;
	struct event_buf *b = new_event(EVENT_CLOSE, SYS_CLOSE, fd, sk, 0);
	if (b)
		submit(b);
	return 0;
}

// ---- processes ----------------------------------------------------------------

// With --exe selectors, a process that execs is selected provisionally at
// once, before userspace has read its executable path: a short-lived client
// such as curl would otherwise finish its request before userspace could
// select it. Userspace confirms or withdraws the selection on EVENT_EXEC.
SEC("tracepoint/sched/sched_process_exec")
int process_exec(void *ctx)
{
	if (!cfg_watch_exec)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u8 provisional = 1;
	bpf_map_update_elem(&targets, &tgid, &provisional, BPF_ANY);
	struct event_buf *b = new_event(EVENT_EXEC, 0, -1, NULL, 0);
	if (b)
		submit(b);
	return 0;
}

// Children of a selected process are selected too: nginx and other pre-fork
// servers serve from workers the selected master forks. A raw tracepoint
// because only it gives the child task, which tells a new process from a
// new thread (threads share the tgid and need nothing).
SEC("raw_tracepoint/sched_process_fork")
int process_fork(struct bpf_raw_tracepoint_args *ctx)
{
	struct task_struct *child = (struct task_struct *)ctx->args[1];
	__u32 child_tgid = BPF_CORE_READ(child, tgid);
	__u32 child_pid = BPF_CORE_READ(child, pid);
	__u32 parent_tgid = bpf_get_current_pid_tgid() >> 32;
	if (child_pid != child_tgid || cfg_trace_all || !selected(parent_tgid))
		return 0;
	__u8 inherited = 1;
	bpf_map_update_elem(&targets, &child_tgid, &inherited, BPF_ANY);
	struct event_buf *b = new_event(EVENT_FORK, 0, -1, NULL, 0);
	if (!b)
		return 0;
	b->hdr.tgid = child_tgid;
	submit(b);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int process_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if ((__u32)id != tgid || !selected(tgid))
		return 0; // only the thread-group leader ends the process
	bpf_map_delete_elem(&targets, &tgid);
	struct event_buf *b = new_event(EVENT_EXIT, 0, -1, NULL, 0);
	if (b)
		submit(b);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
