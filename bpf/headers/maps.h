// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Every map sonde's BPF programs use, defined once.
#pragma once

#include "events.h"

// Processes selected for tracing: bit tgid%64 of word tgid/64, for every
// tgid up to the kernel's PID_MAX_LIMIT (512 KiB). Unused when
// cfg_trace_all. Every syscall of every process on the host asks this
// question, selected or not: an array lookup the verifier inlines into a
// bounds check and an add, where a hash lookup cost ~70 ns a hit.
// Userspace flips bits in place through a shared mapping with atomic
// or/and, as fork, exec and exit do here, so neither side loses the
// other's update to a read-modify-write.
#define TARGET_WORDS (4194304 / 64)

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, TARGET_WORDS);
	__type(key, __u32);
	__type(value, __u64);
} targets SEC(".maps");

// The ring buffer to userspace; its size is set by the loader.
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 8 << 20);
} events SEC(".maps");

// Staging area for one event: too large for the 512-byte BPF stack. The data
// area is twice CAPTURE_MAX so that "offset < CAPTURE_MAX" plus "length <=
// CAPTURE_MAX" is enough for the verifier to prove every copy in bounds.
struct event_buf {
	struct event hdr;
	__u8 data[CAPTURE_MAX * 2];
};

// One slot per possible CPU, indexed by the current CPU: a per-CPU array
// would be simpler, but its values are capped at 32 KiB. The loader sets
// max_entries to the number of possible CPUs.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct event_buf);
} scratch SEC(".maps");

// Sockets that lost an event since their last delivered one (sock -> 1).
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u8);
} lossy SEC(".maps");

// How many entries lossy holds, roughly: while it is zero, which is almost
// always, the hot path skips the lookup in lossy. LRU evictions make it
// drift upwards, which only costs the lookup, never correctness.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __s64);
} lossy_count SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTER_MAX);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");


// An SSL call in progress on a thread, from its entry probe to its return
// probe (bpf/openssl.c). The socket syscalls nested in it fill
// in sock and fd (bpf/socket.c). The socket object owns these maps because
// its data path reads them.
struct ssl_call {
	__u64 ssl;
	__u64 buf;
	__u64 count_ptr; // SSL_COUNT_POINTER: where the count is stored
	__u64 sp;        // stack pointer at entry: tells a nested call from a stale entry
	__u64 sock;      // 0 until a nested syscall on a TCP socket is seen
	__u64 io_ts;     // when the latest nested syscall on it returned; 0: none
	__s32 fd;
	__u8 op;         // enum ssl_op
	__u8 count;      // enum ssl_count
	__u8 depth;      // probed calls nested in this one, on the same SSL
	__u8 active;     // 1 from the entry probe to the return probe
};

// Per thread, in the task's own storage: the data path asks for every
// socket syscall of a selected process whether it is nested in an SSL
// call, and a thread that never made one answers from a NULL pointer in
// its task_struct, where a hash lookup cost ~0.1 us per syscall. The
// storage goes with the thread, so one killed inside a call leaves
// nothing behind; a slot stays allocated between calls and is marked
// inactive.
struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ssl_call);
} ssl_calls SEC(".maps");

// The socket an SSL object moved bytes on, for reads OpenSSL serves from
// its own buffer without a syscall. SSL pointers are per process.
struct ssl_key {
	__u32 tgid;
	__u32 _pad;
	__u64 ssl;
};

struct ssl_sock {
	__u64 sock;
	__s32 fd;
	__u32 _pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ssl_key);
	__type(value, struct ssl_sock);
} ssl_socks SEC(".maps");

// Requests selected processes received, by process and a hash of their
// method and target, while traceparent injection is on: the trace their
// traceparent named, or none. An injection into a request with the same
// method and target from the same process continues that trace: a proxy
// forwards what it serves (bpf/inject.c). Identical requests served at
// once share an entry: the latest wins.
struct served_key {
	__u32 tgid;
	__u32 hash; // FNV-1a of "METHOD TARGET"
};

struct served_ctx {
	__u64 trace_id[2]; // 0: the request carried no traceparent
	__u64 ts;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct served_key);
	__type(value, struct served_ctx);
} inject_served SEC(".maps");
