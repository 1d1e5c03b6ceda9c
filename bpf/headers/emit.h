// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// What every sonde BPF object shares: the switches the loader sets, process
// selection, and building and submitting events to the ring buffer. Each
// object that includes this gets its own copy of the globals, which the
// loader sets alike, and its own instance of the maps, which the loader
// replaces with the socket object's so that all of them share one ring
// buffer, one target set and one set of counters.
#pragma once

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "events.h"
#include "maps.h"
#include "sock.h"

// Set by the loader before the programs are loaded.
volatile const __u32 cfg_self_tgid = 0;
volatile const __u8 cfg_trace_all = 0;
// Wake the reader when this much is pending. A wakeup per event would cost
// the traced thread an irq_work and the reader a context switch per
// request; userspace polls on a short timer instead.
volatile const __u32 cfg_wakeup_bytes = 65536;
// Bytes of payload captured per event, at most CAPTURE_MAX.
volatile const __u32 cfg_capture_bytes = 4096;
// Traceparent injection is on (bpf/inject.c): received requests note the
// trace they continue, and Go client calls name their IDs.
volatile const __u8 cfg_inject = 0;

// Written by userspace while the programs run: 0 until every program is
// attached and again before any is detached, so that tracing starts and
// stops at one instant for all syscalls. Attached one by one, the read
// probe could see a request whose response the write probe misses, or the
// other way round, and report an exchange that never happened.
volatile __u32 running = 0;

static __always_inline void count(__u32 which)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &which);
	if (v)
		*v += 1; // per-CPU slot: no atomic needed
}

static __always_inline bool selected(__u32 tgid)
{
	if (!running)
		return false;
	if (tgid == cfg_self_tgid)
		return false; // never trace our own export traffic
	if (cfg_trace_all)
		return true;
	__u32 word = tgid / 64;
	__u64 *bits = bpf_map_lookup_elem(&targets, &word);
	return bits && (*bits & (1ULL << (tgid % 64)));
}

// select_process and deselect_process change one process's bit
// atomically: userspace changes bits of the same word at the same time.
static __always_inline void select_process(__u32 tgid)
{
	__u32 word = tgid / 64;
	__u64 *bits = bpf_map_lookup_elem(&targets, &word);
	if (bits)
		__sync_fetch_and_or(bits, 1ULL << (tgid % 64));
	else
		count(COUNTER_TARGETS_FULL); // a tgid beyond PID_MAX_LIMIT
}

static __always_inline void deselect_process(__u32 tgid)
{
	__u32 word = tgid / 64;
	__u64 *bits = bpf_map_lookup_elem(&targets, &word);
	if (bits)
		__sync_fetch_and_and(bits, ~(1ULL << (tgid % 64)));
}

static __always_inline bool current_selected(void)
{
	return selected(bpf_get_current_pid_tgid() >> 32);
}

// task_id is what bpf_get_current_pid_tgid returns, read from the current
// task the caller holds already with direct loads. Each helper call is a
// call and a return, and on CPUs whose kernels mitigate return-stack
// attacks (AMD's SRSO "safe RET", as on these machines) every return goes
// through a thunk: the data path asks for the task once per event.
static __always_inline __u64 task_id(struct task_struct *task)
{
	return (__u64)task->tgid << 32 | (__u32)task->pid;
}

// fill_event writes every field of an event header: a header reserved in
// the ring buffer holds whatever an earlier record left there. id is the
// current thread's bpf_get_current_pid_tgid.
static __always_inline void fill_event(struct event *e, __u64 id, __u8 kind, __u8 syscall, int fd, struct sock *sk)
{
	e->ts = bpf_ktime_get_ns();
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
	e->flags = 0;
	e->seq_known = 0;
	e->_pad[0] = 0;
	e->_pad[1] = 0;
	e->tcp_seq = 0;
	e->_pad2 = 0;
	e->sport = 0;
	e->dport = 0;
	// The data path, the hot one, leaves the name out: userspace names a
	// process from /proc when it first sees it, and bpf_get_current_comm
	// was a tenth of a data event's cost. The bytes are cleared, not left
	// from another process's event.
	if (kind == EVENT_DATA)
		__builtin_memset(e->comm, 0, sizeof(e->comm));
	else
		bpf_get_current_comm(e->comm, sizeof(e->comm));
	if (sk)
		fill_tuple(e, sk);
	else {
		__builtin_memset(e->saddr, 0, sizeof(e->saddr));
		__builtin_memset(e->daddr, 0, sizeof(e->daddr));
	}
}

// new_event starts an event in this CPU's staging slot, for events whose
// payload is gathered in pieces or inspected before it is sent.
static __always_inline struct event_buf *new_event(__u8 kind, __u8 syscall, int fd, struct sock *sk)
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct event_buf *b = bpf_map_lookup_elem(&scratch, &cpu);
	if (!b)
		return NULL;
	fill_event(&b->hdr, bpf_get_current_pid_tgid(), kind, syscall, fd, sk);
	return b;
}

// mark_after_loss flags the event when its socket lost one before.
static __always_inline void mark_after_loss(struct event *e)
{
	__u32 zero = 0;
	__s64 *pending = bpf_map_lookup_elem(&lossy_count, &zero);
	if (!e->sock || !pending || *pending <= 0)
		return;
	if (!bpf_map_lookup_elem(&lossy, &e->sock))
		return;
	e->flags |= EVENT_F_AFTER_LOSS;
	if (bpf_map_delete_elem(&lossy, &e->sock) == 0)
		__sync_fetch_and_add(pending, -1);
}

static __always_inline void remember_loss(__u64 sock)
{
	__u32 zero = 0;
	__u8 one = 1;
	__s64 *pending = bpf_map_lookup_elem(&lossy_count, &zero);
	if (sock && pending && bpf_map_update_elem(&lossy, &sock, &one, BPF_NOEXIST) == 0)
		__sync_fetch_and_add(pending, 1);
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

// capture_buf copies the start of the moved bytes at user address ptr into
// the event's payload; the event still reports every byte moved.
static __always_inline void capture_buf(struct event_buf *b, __u64 ptr, __u64 moved)
{
	__u64 n = capture_limit(moved);
	if (n && bpf_probe_read_user(b->data, n, (void *)ptr))
		n = 0;
	b->hdr.captured = n;
}

static __always_inline void submit_flags(struct event_buf *b, bool wake);

static __always_inline void submit(struct event_buf *b)
{
	submit_flags(b, false);
}

// submit_now wakes the reader at once: for rare process events that
// userspace must act on while the process still exists.
static __always_inline void submit_now(struct event_buf *b)
{
	submit_flags(b, true);
}

#define FNV_OFFSET 2166136261u
#define FNV_PRIME 16777619u

// How long a received request's trace is continued by what serving it
// sends (bpf/inject.c, bpf/gohttp.c): longer than any request is served.
#define SERVED_FRESH_NS (30ULL * 1000000000)

// How far into a received request its traceparent is looked for.
#define SERVED_SCAN_MAX 2048

struct served_scan {
	struct event_buf *b;
	__u32 n;
	__u32 hash;
	__u64 trace_id[2];
	__u8 phase; // enum served_phase
	__u8 idx;   // bytes of the header name or value read
	__u8 found;
};

enum served_phase {
	SV_METHOD = 0,
	SV_TARGET,
	SV_SKIP_LINE,
	SV_LINE,
	SV_NAME,
	SV_VALUE,
	SV_DONE,
};

static const char traceparent_colon[] = {'t', 'r', 'a', 'c', 'e', 'p', 'a', 'r', 'e', 'n', 't', ':'};

static __always_inline int hex_digit(__u8 c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1; // W3C: lowercase only
}

// One byte of a received request's head: the method and target are
// hashed, and a traceparent header's trace ID is read.
static long served_byte(__u32 i, void *arg)
{
	struct served_scan *sc = arg;
	if (i >= sc->n)
		return 1;
	__u8 c = sc->b->data[i & (2 * CAPTURE_MAX - 1)];
	switch (sc->phase) {
	case SV_METHOD:
		if (c == ' ')
			sc->phase = SV_TARGET;
		else if (c < 'A' || c > 'Z')
			return 1; // not a request
		sc->hash = (sc->hash ^ c) * FNV_PRIME;
		return 0;
	case SV_TARGET:
		if (c == ' ' || c == '\r' || c == '\n') {
			sc->phase = c == '\n' ? SV_LINE : SV_SKIP_LINE;
			return 0;
		}
		sc->hash = (sc->hash ^ c) * FNV_PRIME;
		return 0;
	case SV_SKIP_LINE:
		if (c == '\n')
			sc->phase = SV_LINE;
		return 0;
	case SV_LINE:
		if (c == '\r' || c == '\n') {
			sc->phase = SV_DONE; // the headers ended: none
			return 1;
		}
		sc->idx = 0;
		sc->phase = SV_NAME;
		/* fallthrough */
	case SV_NAME: {
		__u8 lc = (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
		__u8 k = sc->idx;
		if (k >= sizeof(traceparent_colon) || traceparent_colon[k] != lc) {
			sc->phase = c == '\n' ? SV_LINE : SV_SKIP_LINE;
			return 0;
		}
		sc->idx = k + 1;
		if (sc->idx == sizeof(traceparent_colon)) {
			sc->idx = 0;
			sc->phase = SV_VALUE;
		}
		return 0;
	}
	case SV_VALUE: {
		// "00-" then 32 hex digits of the trace ID; leading blanks skipped.
		__u8 k = sc->idx;
		if (k == 0 && (c == ' ' || c == '\t'))
			return 0;
		if (k < 2) {
			if (hex_digit(c) < 0)
				return 1;
		} else if (k == 2) {
			if (c != '-')
				return 1;
		} else {
			int d = hex_digit(c);
			if (d < 0)
				return 1;
			if (k < 19)
				sc->trace_id[0] = sc->trace_id[0] << 4 | d;
			else
				sc->trace_id[1] = sc->trace_id[1] << 4 | d;
			if (k == 34) {
				sc->found = 1;
				sc->phase = SV_DONE;
				return 1;
			}
		}
		sc->idx = k + 1;
		return 0;
	}
	}
	return 1;
}

// note_served records, for a received request, the trace it continues.
static __always_inline void note_served(struct event_buf *b)
{
	__u32 n = b->hdr.captured;
	if (n > SERVED_SCAN_MAX)
		n = SERVED_SCAN_MAX;
	if (n < 4 || b->data[0] < 'A' || b->data[0] > 'Z')
		return;
	struct served_scan sc = {.b = b, .n = n, .hash = FNV_OFFSET};
	bpf_loop(SERVED_SCAN_MAX, served_byte, &sc, 0);
	if (sc.phase < SV_SKIP_LINE)
		return; // no method and target: not a request head
	struct served_key key = {.tgid = b->hdr.tgid, .hash = sc.hash};
	struct served_ctx v = {.ts = b->hdr.ts};
	if (sc.found && (sc.trace_id[0] || sc.trace_id[1])) {
		v.trace_id[0] = sc.trace_id[0];
		v.trace_id[1] = sc.trace_id[1];
	}
	bpf_map_update_elem(&inject_served, &key, &v, BPF_ANY);
}

// wake_flags wakes the reader when an event of size bytes makes the backlog
// cross the threshold, not for every event above it: a reader that fell
// behind is awake already, and a wakeup per event costs the traced thread
// an irq_work each (it tripled the server's overhead under overload).
static __always_inline __u64 wake_flags(__u64 size, bool wake)
{
	__u64 pending = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);
	if (wake || (pending < cfg_wakeup_bytes && pending + size >= cfg_wakeup_bytes))
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

// counted_output counts an event's delivery to the ring buffer, or its loss
// (err != 0), which the socket's next event is flagged after.
static __always_inline void counted_output(long err, __u64 sock)
{
	if (err) {
		count(COUNTER_LOST);
		remember_loss(sock);
	} else
		count(COUNTER_EVENTS);
}

static __always_inline void submit_flags(struct event_buf *b, bool wake)
{
	if (cfg_inject && b->hdr.kind == EVENT_DATA && b->hdr.dir == DIR_INGRESS)
		note_served(b);
	mark_after_loss(&b->hdr);
	__u64 n = b->hdr.captured;
	// Re-bound n here: the verifier does not carry the bound through the
	// store to and load from the map value.
	if (n > CAPTURE_MAX)
		n = CAPTURE_MAX;
	__u64 size = sizeof(struct event) + n;
	counted_output(bpf_ringbuf_output(&events, b, size, wake_flags(size, wake)), b->hdr.sock);
}

