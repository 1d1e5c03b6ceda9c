// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Socket capture from tracepoints. These machines have no kprobes, so every
// byte a selected process moves over TCP is seen where a send or receive
// returns: at the socket layer's own tracepoints where the kernel has them
// (further down), else at the syscall boundary.
//
// At the syscall boundary only sys_exit tracepoints carry the data path:
// the return value says how many bytes moved, and on x86-64 the argument
// registers in the task's saved pt_regs still hold the syscall's
// arguments. Doing without sys_enter halves the probe hits, needs no
// per-thread map, and lets failed and EAGAIN calls (half the reads of an
// event-loop server) return after two comparisons.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#include "emit.h"

#define EINPROGRESS 115
#define MSG_PEEK 2

// Set by the loader before the programs are loaded; the switches that every
// object reads are in emit.h.
volatile const __u8 cfg_watch_exec = 0;

// Written by userspace: 1 while the socket-layer data hooks are attached,
// which take connection opens from the opened map, not from the accept and
// connect exit tracepoints.
volatile __u32 opened_watch = 0;

// Written by userspace: 1 once the socket-layer hooks leave sendmmsg and
// recvmmsg to the exit programs, which userspace attaches when a selected
// process is first seen moving TCP bytes with one of them (--data-hooks
// auto): only their exits know each message's place in the vector.
volatile __u32 mmsg_watch = 0;

// Written by userspace: 1 once a probe on an OpenSSL library is attached.
// Until then the data path skips the lookup for an SSL call in progress.
volatile __u32 tls_watch = 0;

// The syscall's saved user registers of task, the current one: arguments
// in di, si, dx.
static __always_inline struct pt_regs *syscall_regs(struct task_struct *task)
{
	return (struct pt_regs *)bpf_task_pt_regs(task);
}

// data_task returns the current task when a syscall that returned ret is
// to be reported: it moved bytes and its process is selected; else NULL.
// The data path holds on to the task: its tgid, pid, registers and fd
// table are all read from it, where a helper call each cost a call and a
// thunked return (task_id).
static __always_inline struct task_struct *data_task(long ret)
{
	if (ret <= 0)
		return NULL;
	struct task_struct *task = bpf_get_current_task_btf();
	return selected(task->tgid) ? task : NULL;
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

// peeked reports whether a receive syscall only looked at the bytes
// (MSG_PEEK): they stay queued and are reported by the read that takes
// them. nginx peeks at the first byte of every connection to tell TLS from
// plain HTTP. flags is the syscall's flags argument.
static __always_inline bool peeked(__u8 syscall, __u64 flags)
{
	return (syscall == SYS_RECVFROM || syscall == SYS_RECVMSG || syscall == SYS_RECVMMSG) && (flags & MSG_PEEK);
}

// inside_ssl_call reports whether the current thread is inside an SSL_read,
// SSL_write or SSL_do_handshake that sonde probes (bpf/openssl.c), and ties
// that call, and its SSL object for later calls served from OpenSSL's own
// buffer, to this socket. This is how plaintext finds its connection
// without reading OpenSSL's struct layouts: the library moves the
// ciphertext with a syscall on the same thread, nested in the call.
static __always_inline bool inside_ssl_call(struct task_struct *task, int fd, struct sock *sk)
{
	struct ssl_call *call = bpf_task_storage_get(&ssl_calls, task, 0, 0);
	if (!call || !call->active)
		return false;
	// The plaintext is stamped with the time its ciphertext moved, not
	// with the call's return, which a descheduled thread reaches late.
	call->io_ts = bpf_ktime_get_ns();
	if (call->sock == (__u64)sk)
		return true; // a second syscall of the same call: known already
	call->sock = (__u64)sk;
	call->fd = fd;
	struct ssl_key key = {.tgid = task->tgid, .ssl = call->ssl};
	struct ssl_sock where = {.sock = (__u64)sk, .fd = fd};
	bpf_map_update_elem(&ssl_socks, &key, &where, BPF_ANY);
	return true;
}

// payload_sock returns sk, a TCP socket of task (the current one) open as
// fd, when its bytes are to be reported: not when they are ciphertext, for
// then the SSL call's return reports the plaintext.
static __always_inline struct sock *payload_sock(struct task_struct *task, int fd, struct sock *sk)
{
	if (tls_watch && inside_ssl_call(task, fd, sk))
		return NULL;
	return sk;
}

// data_sock is the TCP socket behind fd of task, the current one, when a
// data event is to be reported for it, or NULL.
static __always_inline struct sock *data_sock(struct task_struct *task, int fd)
{
	struct sock *sk = tcp_sock_of_fd(task, fd);
	if (!sk)
		return NULL; // files, pipes, UDP, unix sockets: rejected at the source
	return payload_sock(task, fd, sk);
}

// fill_data completes a data event's header for ret bytes moved on sk.
static __always_inline void fill_data(struct event *e, __u8 syscall, __u8 dir, long ret, struct sock *sk)
{
	e->dir = dir;
	e->size = ret;
	// One message of a sendmmsg/recvmmsg batch cannot be placed from the
	// socket's state after the whole call.
	if (syscall != SYS_SENDMMSG && syscall != SYS_RECVMMSG) {
		e->tcp_seq = first_seq(sk, dir, (__u32)ret);
		e->seq_known = 1;
	}
}

// staged_event starts, in the staging slot, the event of a call that moved
// ret > 0 bytes over sk, a TCP socket of a selected process to report.
static __always_inline struct event_buf *staged_event(__u8 syscall, __u8 dir, long ret, int fd, struct sock *sk)
{
	struct event_buf *b = new_event(EVENT_DATA, syscall, fd, sk);
	if (!b)
		return NULL;
	fill_data(&b->hdr, syscall, dir, ret, sk);
	return b;
}

// data_event starts the event of a syscall that moved ret > 0 bytes over a
// TCP socket of a selected process, or returns NULL.
static __always_inline struct event_buf *data_event(struct task_struct *task, __u8 syscall, __u8 dir, long ret, int fd)
{
	struct sock *sk = data_sock(task, fd);
	if (!sk)
		return NULL;
	return staged_event(syscall, dir, ret, fd, sk);
}

// emit_direct reports a data event whose payload, n <= room bytes from one
// user buffer, is read straight into a ring-buffer record. Staged, the
// event was written twice, the second time by bpf_ringbuf_output's copy.
// The record's size must be a constant for the verifier, so callers pick
// room from a few sizes; userspace reads hdr.captured bytes of it, and the
// rest of the record is never written.
static __always_inline void emit_direct(struct task_struct *task, __u8 syscall, __u8 dir, long ret, int fd,
					struct sock *sk, __u64 ptr, __u64 n, const __u32 room)
{
	const __u64 size = sizeof(struct event) + room;
	struct event *e = bpf_ringbuf_reserve(&events, size, 0);
	if (!e) {
		counted_output(-1, (__u64)sk);
		return;
	}
	fill_event(e, task_id(task), EVENT_DATA, syscall, fd, sk);
	fill_data(e, syscall, dir, ret, sk);
	// The bound the caller checked, restated where the verifier needs it.
	if (n > room)
		n = room;
	if (n && bpf_probe_read_user((void *)(e + 1), n, (void *)ptr))
		n = 0;
	e->captured = n;
	mark_after_loss(e);
	bpf_ringbuf_submit(e, wake_flags(size, false));
	counted_output(0, (__u64)sk);
}

// Record payload sizes of the direct path: most requests and responses of
// small HTTP exchanges fit the first, the default capture limit the last.
#define DIRECT_SMALL 256
#define DIRECT_MEDIUM 1024
#define DIRECT_LARGE 4096

// report_buf reports ret bytes moved over sk, open as fd, from one user
// buffer at ptr.
static __always_inline void report_buf(struct task_struct *task, __u8 syscall, __u8 dir, long ret, int fd,
				       struct sock *sk, __u64 ptr)
{
	// Injection scans what was received in the staging slot (note_served).
	__u64 n = capture_limit(ret);
	if (!cfg_inject && n <= DIRECT_LARGE) {
		if (n <= DIRECT_SMALL)
			emit_direct(task, syscall, dir, ret, fd, sk, ptr, n, DIRECT_SMALL);
		else if (n <= DIRECT_MEDIUM)
			emit_direct(task, syscall, dir, ret, fd, sk, ptr, n, DIRECT_MEDIUM);
		else
			emit_direct(task, syscall, dir, ret, fd, sk, ptr, n, DIRECT_LARGE);
		return;
	}
	struct event_buf *b = staged_event(syscall, dir, ret, fd, sk);
	if (!b)
		return;
	capture_buf(b, ptr, ret);
	submit(b);
}

// report_iov reports ret bytes moved over sk, open as fd, scattered over
// the iovcnt iovecs at iov.
static __always_inline void report_iov(__u8 syscall, __u8 dir, long ret, int fd, struct sock *sk, __u64 iov,
				       __u64 iovcnt)
{
	struct event_buf *b = staged_event(syscall, dir, ret, fd, sk);
	if (!b)
		return;
	capture_iov(b, iov, iovcnt, ret);
	submit(b);
}

// report_msg reports ret bytes moved over sk, open as fd, by a sendmsg or
// recvmsg of the user_msghdr at msg_ptr.
static __always_inline void report_msg(__u8 syscall, __u8 dir, long ret, int fd, struct sock *sk, __u64 msg_ptr)
{
	struct user_msghdr msg;
	if (bpf_probe_read_user(&msg, sizeof(msg), (void *)msg_ptr))
		__builtin_memset(&msg, 0, sizeof(msg)); // still report the byte count
	report_iov(syscall, dir, ret, fd, sk, (__u64)msg.msg_iov, msg.msg_iovlen);
}

// report_count reports ret bytes moved over sk, open as fd, with no user
// buffer to copy (sendfile, splice): the count keeps the parser's place.
static __always_inline void report_count(__u8 syscall, __u8 dir, long ret, int fd, struct sock *sk)
{
	struct event_buf *b = staged_event(syscall, dir, ret, fd, sk);
	if (b)
		submit(b);
}

// read, write, sendto, recvfrom: (fd, buf, len, ...)
static __always_inline int data_buf(__u8 syscall, __u8 dir, long ret)
{
	struct task_struct *task = data_task(ret);
	if (!task)
		return 0;
	struct pt_regs *regs = syscall_regs(task);
	// recvfrom(fd, buf, len, flags, ...): the fourth argument is in r10.
	if (peeked(syscall, regs->r10))
		return 0;
	int fd = regs->di;
	struct sock *sk = data_sock(task, fd);
	if (sk)
		report_buf(task, syscall, dir, ret, fd, sk, regs->si);
	return 0;
}

// readv, writev: (fd, iov, iovcnt)
static __always_inline int data_iov(__u8 syscall, __u8 dir, long ret)
{
	struct task_struct *task = data_task(ret);
	if (!task)
		return 0;
	struct pt_regs *regs = syscall_regs(task);
	int fd = regs->di;
	struct sock *sk = data_sock(task, fd);
	if (sk)
		report_iov(syscall, dir, ret, fd, sk, regs->si, regs->dx);
	return 0;
}

// sendmsg, recvmsg: (fd, msghdr, flags)
static __always_inline int data_msg(__u8 syscall, __u8 dir, long ret)
{
	struct task_struct *task = data_task(ret);
	if (!task)
		return 0;
	struct pt_regs *regs = syscall_regs(task);
	if (peeked(syscall, regs->dx))
		return 0;
	int fd = regs->di;
	struct sock *sk = data_sock(task, fd);
	if (sk)
		report_msg(syscall, dir, ret, fd, sk, regs->si);
	return 0;
}

struct mmsg_walk {
	__u64 vec;
	long messages;
	int fd;
	__u8 syscall;
	__u8 dir;
};

static long mmsg_one(__u32 i, struct mmsg_walk *w)
{
	if (i >= w->messages)
		return 1;
	struct mmsghdr mm;
	if (bpf_probe_read_user(&mm, sizeof(mm), (void *)(w->vec + i * sizeof(mm))))
		return 1;
	struct event_buf *b = data_event(bpf_get_current_task_btf(), w->syscall, w->dir, mm.msg_len, w->fd);
	if (!b)
		return 1;
	capture_iov(b, (__u64)mm.msg_hdr.msg_iov, mm.msg_hdr.msg_iovlen, mm.msg_len);
	submit(b);
	return 0;
}

// sendmmsg, recvmmsg: (fd, mmsghdr vector, vlen, ...) return a message
// count; each message reports its own length in msg_len and becomes its
// own event. bpf_loop, not a plain loop: unrolled around the iovec loop,
// the verifier took over a second per program to load it.
static __always_inline int data_mmsg(__u8 syscall, __u8 dir, long ret)
{
	// Beside the socket-layer hooks, attached on demand: until the switch
	// is made, those report the call by its counts.
	if (opened_watch && !mmsg_watch)
		return 0;
	struct task_struct *task = data_task(ret);
	if (!task)
		return 0;
	struct pt_regs *regs = syscall_regs(task);
	// recvmmsg(fd, vec, vlen, flags, timeout)
	if (peeked(syscall, regs->r10))
		return 0;
	struct mmsg_walk w = {.vec = regs->si, .messages = ret, .fd = regs->di, .syscall = syscall, .dir = dir};
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

// sendfile64(out_fd, in_fd, offset, count) moves file pages into the socket
// inside the kernel: there is no user buffer to copy, but the count keeps
// the parser's place in the body.
SEC("tracepoint/syscalls/sys_exit_sendfile64")
int exit_sendfile64(struct trace_event_raw_sys_exit *ctx)
{
	struct task_struct *task = data_task(ctx->ret);
	if (!task)
		return 0;
	int fd = syscall_regs(task)->di;
	struct sock *sk = data_sock(task, fd);
	if (sk)
		report_count(SYS_SENDFILE, DIR_EGRESS, ctx->ret, fd, sk);
	return 0;
}

// ---- the same, from the socket layer's tracepoints -------------------------
//
// Where the kernel has them (6.3 on), sock_send_length and sock_recv_length
// fire as each sendmsg or recvmsg of a socket returns, inside the syscall
// that made it, with the socket and the byte count. The loader prefers them
// to the sys_exit programs above, which it keeps for older kernels and for
// --data-hooks=syscalls:
//   - A sys_exit tracepoint runs perf_syscall_exit, which builds a perf
//     record, for every read and write on the host before any program can
//     turn the call away. These fire for socket calls only, and a raw
//     tracepoint calls the program straight away: about a third of the
//     cost per hooked call, and the reads of files and pipes pay nothing.
//   - They hand over the socket: no walk of the fd table.
// The syscall's arguments are still in the task's saved registers, and
// orig_ax says which call it is. With these hooks no syscall tracepoint is
// attached at first: the accept and connect exits are replaced by the
// opened map (note_opened). A sendmmsg or recvmmsg message's place in its
// vector only the sys_exit programs know: the first such call of a selected
// process on TCP is reported by its counts, and userspace then attaches
// those two exits (mmsg_watch), which every syscall on the host pays for;
// nearly no program moves TCP bytes that way.

// x86-64 numbers of the calls that move a socket's bytes.
enum {
	NR_READ = 0,
	NR_WRITE = 1,
	NR_READV = 19,
	NR_WRITEV = 20,
	NR_SENDFILE = 40,
	NR_SENDTO = 44,
	NR_RECVFROM = 45,
	NR_SENDMSG = 46,
	NR_RECVMSG = 47,
	NR_SPLICE = 275,
	NR_RECVMMSG = 299,
	NR_SENDMMSG = 307,
};

#define PF_IO_WORKER 0x00000010
#define PF_KTHREAD 0x00200000
#define TS_COMPAT 0x0002

// sock_data reports ret bytes that the current task moved over sk in
// direction dir. flags are the receive's flags.
static __always_inline int sock_data(__u8 dir, struct sock *sk, int ret, int flags)
{
	struct task_struct *task = data_task(ret);
	if (!task)
		return 0;
	if (dir == DIR_INGRESS && (flags & MSG_PEEK))
		return 0; // the bytes stay queued for the read that takes them
	if (task->flags & PF_KTHREAD)
		return 0; // a kernel user of sockets (NFS, iSCSI): no syscall behind it
	if (!tcp_only(sk))
		return 0;
	struct pt_regs *regs = syscall_regs(task);
	// An io_uring worker's registers hold no syscall, and a 32-bit
	// process numbers its calls differently: their bytes are counted as
	// unread, never taken from a wrong buffer.
	if ((task->flags & PF_IO_WORKER) || (task->thread_info.status & TS_COMPAT)) {
		count(COUNTER_UNREAD_CALL);
		return 0;
	}
	long nr = regs->orig_ax;
	int fd = regs->di;
	switch (nr) {
	case NR_READ:
	case NR_WRITE:
	case NR_RECVFROM:
	case NR_SENDTO: {
		__u8 syscall = nr == NR_READ ? SYS_READ : nr == NR_WRITE ? SYS_WRITE : nr == NR_RECVFROM ? SYS_RECVFROM : SYS_SENDTO;
		sk = payload_sock(task, fd, sk);
		if (sk)
			report_buf(task, syscall, dir, ret, fd, sk, regs->si);
		return 0;
	}
	case NR_READV:
	case NR_WRITEV:
		sk = payload_sock(task, fd, sk);
		if (sk)
			report_iov(nr == NR_READV ? SYS_READV : SYS_WRITEV, dir, ret, fd, sk, regs->si, regs->dx);
		return 0;
	case NR_RECVMSG:
	case NR_SENDMSG:
		sk = payload_sock(task, fd, sk);
		if (sk)
			report_msg(nr == NR_RECVMSG ? SYS_RECVMSG : SYS_SENDMSG, dir, ret, fd, sk, regs->si);
		return 0;
	case NR_SENDFILE:
		report_count(SYS_SENDFILE, dir, ret, fd, sk);
		return 0;
	case NR_SPLICE:
		// splice(fd_in, off_in, fd_out, ...): a pipe's pages into the
		// socket, reported like sendfile.
		if (dir == DIR_EGRESS)
			report_count(SYS_SENDFILE, dir, ret, regs->dx, sk);
		else
			count(COUNTER_UNREAD_CALL);
		return 0;
	case NR_SENDMMSG:
	case NR_RECVMMSG:
		if (mmsg_watch)
			return 0; // the call's exit program reads every message
		// A message's place in the vector is not known here: its
		// count keeps the parser's place, its bytes are not read. The
		// event also tells userspace to attach the exit programs.
		report_count(nr == NR_SENDMMSG ? SYS_SENDMMSG : SYS_RECVMMSG, dir, ret, fd, sk);
		count(COUNTER_UNREAD_CALL);
		return 0;
	default:
		count(COUNTER_UNREAD_CALL); // io_uring_enter, among others
		return 0;
	}
}

// sock_send_length(struct sock *sk, int ret, int flags)
SEC("raw_tracepoint/sock_send_length")
int sock_send(struct bpf_raw_tracepoint_args *ctx)
{
	return sock_data(DIR_EGRESS, (struct sock *)ctx->args[0], (int)ctx->args[1], 0);
}

// sock_recv_length(struct sock *sk, int ret, int flags)
SEC("raw_tracepoint/sock_recv_length")
int sock_recv(struct bpf_raw_tracepoint_args *ctx)
{
	return sock_data(DIR_INGRESS, (struct sock *)ctx->args[0], (int)ctx->args[1], (int)ctx->args[2]);
}

// ---- connection lifecycle ---------------------------------------------------

static __always_inline int accepted(long ret)
{
	if (ret < 0 || !current_selected())
		return 0;
	struct sock *sk = tcp_sock_of_fd(bpf_get_current_task_btf(), ret);
	if (!sk)
		return 0;
	struct event_buf *b = new_event(EVENT_ACCEPT, SYS_ACCEPT, ret, sk);
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

// connect(fd, addr, addrlen)
SEC("tracepoint/syscalls/sys_exit_connect")
int exit_connect(struct trace_event_raw_sys_exit *ctx)
{
	// A non-blocking connect returns EINPROGRESS with the local port
	// already bound, so its 4-tuple is complete here.
	if ((ctx->ret != 0 && ctx->ret != -EINPROGRESS) || !current_selected())
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	int fd = syscall_regs(task)->di;
	struct sock *sk = tcp_sock_of_fd(task, fd);
	if (!sk)
		return 0;
	struct event_buf *b = new_event(EVENT_CONNECT, SYS_CONNECT, fd, sk);
	if (b)
		submit(b);
	return 0;
}

// A TCP socket's last close, seen where TCP closes it, not at close(2): a
// sys_enter tracepoint, the only one sonde would need, makes the kernel
// run its enter-side dispatch on every syscall of every process on the
// host while sonde runs (about 25 ns a syscall on one machine, within the
// noise on another), where this tracepoint fires only when a TCP socket
// changes state. A close by a kernel worker (a file put from
// interrupt context) is not seen: the connection then stays until its fd
// is reused, its process exits or the table evicts it.
//
// tcp_close always changes the state (to FIN_WAIT1, LAST_ACK, CLOSE, or
// the same state again), and it runs from __fput once the file's last
// reference is gone, in the closing task's context. So a state change
// while the socket's file is dying is the close, and the current task is
// the closer. Changes in softirq, of sockets whose file lives (a FIN or
// RST arriving) or that have none left (orphaned after the close), do not
// pass. A socket that a forked child still holds is not closed by the
// parent's close(2), and is reported when the last holder closes it.
// The fd is gone by then: userspace ends every connection on the socket,
// whichever process closed it last.
struct file___pre613 {
	atomic_long_t f_count;
} __attribute__((preserve_access_index));

static __always_inline bool file_dying(struct file *f)
{
	// 6.13 turned f_count into f_ref, a file_ref_t whose count goes
	// negative (FILE_REF_DEAD) when the last reference is put.
	if (bpf_core_field_exists(f->f_ref))
		return (__s64)f->f_ref.refcnt.counter < 0;
	return AS(struct file___pre613, f)->f_count.counter == 0;
}

// report_close reports the close of sk by the current process.
static __always_inline void report_close(struct sock *sk)
{
	struct event_buf *b = new_event(EVENT_CLOSE, SYS_CLOSE, -1, sk);
	if (b)
		submit(b);
}

// Connections TCP opened while the socket-layer hooks run, by socket and
// ports, and how (enum opened_how): what the accept and connect exit
// tracepoints told before, which the socket-layer hooks do without, so that
// no syscall tracepoint puts every syscall of every process on the kernel's
// slow path. Userspace takes a connection's entry when its first bytes
// arrive, which may be after the socket was freed and reused: the ports
// keep a later connection on the same socket from replacing the entry.
// Opens of every process are noted (note_opened); the LRU bounds them, and
// a connection whose entry it dropped is followed as one sonde joined in
// the middle.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct open_key);
	__type(value, struct open_note);
} opened SEC(".maps");

// Sockets a selected process is connecting, with the process and the fd it
// connects, from SYN_SENT (in the connecting task) to ESTABLISHED (often in
// softirq), where the connection's ports are known: the connect is then
// reported in band, as the connect exit did. A client of a server on the
// same host must be known as traced before its first bytes, which for a
// TLS client come only when SSL_write returns: the server's span, ready by
// then on a loaded machine, links to it only if it is.
struct connecting {
	__u32 tgid;
	__s32 fd;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct connecting);
} connecting SEC(".maps");

#define NR_CONNECT 42

// note_connect handles the socket-layer hooks' connects: a selected process
// begins one (CLOSE to SYN_SENT), or one it began is established.
static __always_inline void note_connect(struct sock *sk, int oldstate, int newstate)
{
	__u64 key = (__u64)sk;
	if (oldstate == TCP_CLOSE && newstate == TCP_SYN_SENT) {
		struct task_struct *task = bpf_get_current_task_btf();
		if (!selected(task->tgid))
			return;
		struct pt_regs *regs = syscall_regs(task);
		// connect(2), or sendto(2) with MSG_FASTOPEN: the fd is the
		// first argument. Another caller (io_uring) names none.
		if (regs->orig_ax != NR_CONNECT && regs->orig_ax != NR_SENDTO)
			return;
		struct connecting v = {.tgid = task->tgid, .fd = regs->di};
		bpf_map_update_elem(&connecting, &key, &v, BPF_ANY);
		return;
	}
	if (oldstate != TCP_SYN_SENT)
		return;
	struct connecting *v = bpf_map_lookup_elem(&connecting, &key);
	if (!v)
		return;
	struct connecting c = *v;
	bpf_map_delete_elem(&connecting, &key);
	if (newstate != TCP_ESTABLISHED)
		return; // refused or timed out
	struct event_buf *b = new_event(EVENT_CONNECT, SYS_CONNECT, c.fd, sk);
	if (!b)
		return;
	b->hdr.tgid = c.tgid; // the context may be softirq's
	b->hdr.tid = c.tgid;
	__builtin_memset(b->hdr.comm, 0, sizeof(b->hdr.comm));
	submit(b);
}

// note_opened records in the opened map a connection that TCP establishes,
// reporting whether the state change was that: from SYN_SENT, this end
// connected; from SYN_RECV, a listener created it. Both come before any
// byte can be read (a fast open's bytes aside), and with both ports known,
// which a listener's new socket only gets after its SYN_RECV. Opens of
// every process are noted, not only selected ones: no process holds a
// listener's new socket yet, and the change may run in softirq.
static __always_inline bool note_opened(struct trace_event_raw_inet_sock_set_state *ctx)
{
	struct open_note v = {};
	if (ctx->newstate != TCP_ESTABLISHED)
		return false;
	if (ctx->oldstate == TCP_SYN_SENT)
		v.how = OPENED_ACTIVE;
	else if (ctx->oldstate == TCP_SYN_RECV)
		v.how = OPENED_PASSIVE;
	else
		return false;
	v.ts = bpf_ktime_get_ns();
	struct open_key key = {.sock = (__u64)ctx->skaddr, .sport = ctx->sport, .dport = ctx->dport};
	bpf_map_update_elem(&opened, &key, &v, BPF_ANY);
	return true;
}

SEC("tracepoint/sock/inet_sock_set_state")
int sock_state(struct trace_event_raw_inet_sock_set_state *ctx)
{
	if (ctx->protocol != IPPROTO_TCP)
		return 0;
	struct sock *sk = (struct sock *)ctx->skaddr;
	if (opened_watch) {
		note_connect(sk, ctx->oldstate, ctx->newstate);
		if (note_opened(ctx))
			return 0;
	}
	struct socket *so = AS(struct sock, sk)->sk_socket;
	if (!so)
		return 0; // orphaned: closed already
	struct file *f = AS(struct socket, so)->file;
	if (f && file_dying(f) && current_selected())
		report_close(sk);
	return 0;
}

// A socket the network closed already (a reset, or a close finished while
// the process still held it) changes no state when the process closes it:
// tcp_close destroys it at once, in the closer's context and with the
// socket locked by it (sk_lock.owned). Destruction in softirq, of an
// orphan whose close handshake ended, finds it unlocked. A socket whose
// close both changed its state and destroyed it is reported twice, and
// userspace has forgotten it by the second.
SEC("tracepoint/tcp/tcp_destroy_sock")
int sock_destroy(struct trace_event_raw_tcp_event_sk *ctx)
{
	struct sock *sk = (struct sock *)ctx->skaddr;
	if (AS(struct sock, sk)->sk_lock.owned && current_selected())
		report_close(sk);
	return 0;
}

// ---- processes ----------------------------------------------------------------

// With --exe selectors, a process that execs is selected provisionally at
// once, before userspace has matched its executable: a short-lived client
// such as curl would otherwise finish its request before userspace could
// select it. Userspace confirms or withdraws the selection on EVENT_EXEC,
// whose payload is the path the kernel executed and the start of the new
// argv: by then /proc/PID of such a client may be gone already, and command
// line selectors still need an answer.
// read_args copies the start of the current task's argv, which exec has
// just laid out on the new stack, so the pages are present and a
// non-sleepable read succeeds.
static __always_inline __u32 read_args(__u8 *dst)
{
	struct task_struct *task = bpf_get_current_task_btf();
	unsigned long start = BPF_CORE_READ(task, mm, arg_start);
	unsigned long end = BPF_CORE_READ(task, mm, arg_end);
	if (end <= start)
		return 0;
	__u64 len = end - start;
	if (len > ARGS_MAX_CAPTURE)
		len = ARGS_MAX_CAPTURE;
	// The verifier must see the bound on the register passed to the helper.
	// Without this barrier clang tests a truncated copy and passes the
	// unbounded original, and the program is rejected.
	asm volatile("" : "+r"(len));
	len &= 2 * ARGS_MAX_CAPTURE - 1;
	if (bpf_probe_read_user(dst, len, (void *)start) < 0)
		return 0;
	return len;
}

SEC("tracepoint/sched/sched_process_exec")
int process_exec(struct trace_event_raw_sched_process_exec *ctx)
{
	if (!cfg_watch_exec || !running)
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	select_process(tgid);
	struct event_buf *b = new_event(EVENT_EXEC, 0, -1, NULL);
	if (!b)
		return 0;
	// __data_loc: the low 16 bits are the string's offset in the record.
	unsigned int off = ctx->__data_loc_filename & 0xFFFF;
	long n = bpf_probe_read_kernel_str(b->data, PATH_MAX_CAPTURE, (void *)ctx + off);
	if (n < 1)
		n = 1; // an empty path, still NUL-terminated below
	b->data[(n - 1) & (2 * PATH_MAX_CAPTURE - 1)] = 0;
	b->hdr.captured = n + read_args(b->data + (n & (2 * PATH_MAX_CAPTURE - 1)));
	submit_now(b);
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
	if (child_pid != child_tgid || cfg_trace_all || !current_selected())
		return 0;
	select_process(child_tgid);
	struct event_buf *b = new_event(EVENT_FORK, 0, -1, NULL);
	if (!b)
		return 0;
	b->hdr.tgid = child_tgid;
	submit_now(b);
	return 0;
}

SEC("tracepoint/sched/sched_process_exit")
int process_exit(void *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	__u32 tgid = id >> 32;
	if ((__u32)id != tgid || !selected(tgid))
		return 0; // only the thread-group leader ends the process
	deselect_process(tgid);
	struct event_buf *b = new_event(EVENT_EXIT, 0, -1, NULL);
	if (b)
		submit_now(b);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
