// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// From a file descriptor of the current task to its TCP socket.
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>
#include "events.h"

#define AF_INET 2
#define AF_INET6 10
#define S_IFMT 00170000
#define S_IFSOCK 0140000
#define SOCK_STREAM 1
#define IPPROTO_TCP 6

// bpf_rdonly_cast (kernel 6.2+) turns a plain kernel address back into a
// typed pointer whose fields are read with direct loads, which the verifier
// guards like bpf_probe_read_kernel but without a helper call each: on the
// walk below that is the difference between ~1 us and ~0.2 us per event.
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;

#define AS(type, ptr) ((type *)bpf_rdonly_cast((ptr), bpf_core_type_id_kernel(type)))

// file_slot loads the file pointer an fd table slot holds. fdt->fd is a
// pointer to pointers, which the verifier types as a plain number, so a
// slot cannot be loaded directly as it is. struct kiocb begins with its
// struct file pointer: the slot's address cast to one makes the load a
// direct one, guarded like the others, where a bpf_probe_read_kernel call
// was a tenth of a data event's cost. Should a kernel ever move ki_filp,
// the offset CO-RE relocates is not 0 and the explicit read is used.
static __always_inline struct file *file_slot(struct file **slot)
{
	if (bpf_core_field_offset(struct kiocb, ki_filp) == 0)
		return AS(struct kiocb, slot)->ki_filp;
	struct file *f = NULL;
	if (bpf_probe_read_kernel(&f, sizeof(f), slot))
		return NULL;
	return f;
}

// tcp_only returns sk when it is a TCP socket (IPv4 or IPv6), else NULL.
static __always_inline struct sock *tcp_only(struct sock *sk)
{
	if (!sk)
		return NULL;
	struct sock *s = AS(struct sock, sk);
	__u16 family = s->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return NULL;
	if (s->sk_type != SOCK_STREAM || s->sk_protocol != IPPROTO_TCP)
		return NULL;
	return sk;
}

// Returns the struct sock behind fd of task, the current one, when fd is a
// TCP socket (IPv4 or IPv6), else NULL. Field offsets are relocated one by
// one (CO-RE): kernels insert fields into these structs (PLATFORM.md).
static __always_inline struct sock *tcp_sock_of_fd(struct task_struct *task, int fd)
{
	if (fd < 0)
		return NULL;
	struct fdtable *fdt = task->files->fdt;
	if ((unsigned int)fd >= fdt->max_fds)
		return NULL;
	struct file *f = file_slot(fdt->fd + fd);
	if (!f)
		return NULL;
	struct file *file = AS(struct file, f);
	if ((file->f_inode->i_mode & S_IFMT) != S_IFSOCK)
		return NULL;
	struct socket *socket = AS(struct socket, file->private_data);
	return tcp_only(socket->sk);
}

// Fills the connection's addresses. IPv4 is written as an IPv4-mapped IPv6
// address so that userspace has one representation.
static __always_inline void fill_tuple(struct event *e, struct sock *s)
{
	struct sock_common *sk = &AS(struct sock, s)->__sk_common;
	__u16 family = sk->skc_family;
	e->family = family;
	e->sport = sk->skc_num;
	e->dport = bpf_ntohs(sk->skc_dport);
	if (family == AF_INET) {
		__builtin_memset(e->saddr, 0, 16);
		__builtin_memset(e->daddr, 0, 16);
		e->saddr[10] = 0xff;
		e->saddr[11] = 0xff;
		e->daddr[10] = 0xff;
		e->daddr[11] = 0xff;
		__u32 src = sk->skc_rcv_saddr;
		__u32 dst = sk->skc_daddr;
		__builtin_memcpy(&e->saddr[12], &src, 4);
		__builtin_memcpy(&e->daddr[12], &dst, 4);
	} else {
		__builtin_memcpy(e->saddr, sk->skc_v6_rcv_saddr.in6_u.u6_addr8, 16);
		__builtin_memcpy(e->daddr, sk->skc_v6_daddr.in6_u.u6_addr8, 16);
	}
}

// first_seq is the TCP sequence number of the first of the n bytes a send
// (egress) or receive (ingress) just moved on s: at the syscall's return,
// write_seq and copied_seq are past them. A receive that reached the
// peer's FIN also moved copied_seq past the FIN, which takes a sequence
// number of its own: it did when the FIN has arrived (the state says so)
// and nothing is left to read (copied_seq is rcv_nxt), as a read that
// returns data cannot come after one that consumed the FIN.
static __always_inline __u32 first_seq(struct sock *s, __u8 dir, __u32 n)
{
	struct tcp_sock *tp = AS(struct tcp_sock, s);
	if (dir == DIR_EGRESS)
		return tp->write_seq - n;
	__u32 seq = tp->copied_seq - n;
	__u8 state = tp->inet_conn.icsk_inet.sk.__sk_common.skc_state;
	bool fin_in = state == TCP_CLOSE_WAIT || state == TCP_LAST_ACK || state == TCP_CLOSING;
	if (fin_in && tp->copied_seq == tp->rcv_nxt)
		seq--;
	return seq;
}
