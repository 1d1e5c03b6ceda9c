// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Uprobes on OpenSSL (and compatible libraries): the plaintext of SSL_read
// and SSL_write, reported as data events of the socket the call moved its
// ciphertext on.
//
// Each probed function gets an entry probe and a return probe on the same
// address. This is C code on ordinary thread stacks, where return probes
// are safe (the Go code they must never go on moves its stacks). The
// address is an instruction the kernel emulates: offsets.SSLSites prefers
// the library's internal ssl_read_internal/ssl_write_internal, whose first
// instruction is a PUSH, over SSL_read's own entry, which starts with a SUB
// that would be single-stepped (~17 us per hit instead of ~0.6 us).
//
// The socket comes from the syscall the library makes inside the call, on
// the same thread (inside_ssl_call in bpf/socket.c), not from OpenSSL's
// struct layouts, which differ between versions and forks. A read that
// OpenSSL serves from its own buffer makes no syscall: the socket is then
// the one the same SSL object last moved bytes on (ssl_socks), which its
// handshake, probed too, records at the latest.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "emit.h"

static __always_inline __u8 cookie_op(__u64 cookie)
{
	return cookie & 0xff;
}

static __always_inline __u8 cookie_count(__u64 cookie)
{
	return (cookie >> 8) & 0xff;
}

// SSL_read(ssl, buf, num), SSL_read_ex(ssl, buf, num, &count),
// ssl_read_internal(ssl, buf, num, &count), the write twins, and
// SSL_do_handshake(ssl).
SEC("uprobe")
int ssl_enter(struct pt_regs *ctx)
{
	if (!current_selected())
		return 0;
	struct task_struct *task = bpf_get_current_task_btf();
	__u64 ssl = PT_REGS_PARM1(ctx);
	__u64 sp = PT_REGS_SP(ctx);
	struct ssl_call *cur = bpf_task_storage_get(&ssl_calls, task, 0, 0);
	// A probed function called by another on the same SSL (SSL_read on top
	// of SSL_read_ex in some builds, where both entries are probed) is part
	// of the outer call: its stack pointer is below the outer one's. An
	// entry at or above is left over from a call whose return probe never
	// ran, and is replaced.
	if (cur && cur->active && cur->ssl == ssl && sp < cur->sp) {
		if (cur->depth < 255)
			cur->depth++;
		return 0;
	}
	__u64 cookie = bpf_get_attach_cookie(ctx);
	struct ssl_call call = {
		.ssl = ssl,
		.buf = PT_REGS_PARM2(ctx),
		.count_ptr = PT_REGS_PARM4(ctx),
		.sp = sp,
		.fd = -1,
		.op = cookie_op(cookie),
		.count = cookie_count(cookie),
		.active = 1,
	};
	if (!cur)
		cur = bpf_task_storage_get(&ssl_calls, task, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (cur)
		*cur = call;
	return 0;
}

// moved returns how many plaintext bytes the call that returned ret moved.
static __always_inline __u64 moved(struct ssl_call *call, long ret)
{
	if (ret <= 0)
		return 0; // an error, or WANT_READ/WANT_WRITE: the call is retried
	if (call->count == SSL_COUNT_RETURN)
		return ret;
	if (call->count != SSL_COUNT_POINTER || !call->count_ptr)
		return 0;
	__u64 n = 0;
	if (bpf_probe_read_user(&n, sizeof(n), (void *)call->count_ptr))
		return 0;
	return n;
}

SEC("uretprobe")
int ssl_return(struct pt_regs *ctx)
{
	__u64 id = bpf_get_current_pid_tgid();
	struct ssl_call *cur = bpf_task_storage_get(&ssl_calls, bpf_get_current_task_btf(), 0, 0);
	if (!cur || !cur->active)
		return 0;
	if (cur->depth) {
		cur->depth--;
		return 0;
	}
	struct ssl_call call = *cur;
	cur->active = 0;
	if (call.op != SSL_OP_READ && call.op != SSL_OP_WRITE)
		return 0;
	// The return value is an int in every probed function.
	__u64 n = moved(&call, (int)PT_REGS_RC(ctx));
	if (!n)
		return 0;
	if (!call.sock) {
		struct ssl_key key = {.tgid = id >> 32, .ssl = call.ssl};
		struct ssl_sock *where = bpf_map_lookup_elem(&ssl_socks, &key);
		if (!where) {
			count(COUNTER_TLS_UNPAIRED);
			return 0;
		}
		call.sock = where->sock;
		call.fd = where->fd;
	}
	bool read = call.op == SSL_OP_READ;
	struct event_buf *b = new_event(EVENT_DATA, read ? SYS_SSL_READ : SYS_SSL_WRITE, call.fd, (struct sock *)call.sock);
	if (!b)
		return 0;
	b->hdr.dir = read ? DIR_INGRESS : DIR_EGRESS;
	b->hdr.size = n;
	b->hdr.flags = EVENT_F_TLS;
	if (call.io_ts)
		b->hdr.ts = call.io_ts;
	capture_buf(b, call.buf, n);
	submit(b);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
