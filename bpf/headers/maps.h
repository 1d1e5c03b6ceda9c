// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Every map sonde's BPF programs use, defined once.
#pragma once

#include "events.h"

// Processes selected for tracing (tgid -> 1). Unused when cfg_trace_all.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	// Beyond the default pid_max of 32768, room for every process of a
	// large host when all but the excluded are traced; a failed insert is
	// counted (COUNTER_TARGETS_FULL).
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u8);
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

