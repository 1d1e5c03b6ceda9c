// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Opt-in traceparent injection (bpf/inject.c): the layout userspace reads
// and the maps the injecting object shares with the Go probes.
#pragma once

#include "events.h"

// Event kind of an injection, after the Go kinds. The payload is a struct
// inject_info; hdr.sock names the connection, hdr.fd is -1.
#define EVENT_INJECT 10

// "traceparent: 00-" 32 hex "-" 16 hex "-01\r\n"
#define TRACEPARENT_LEN 70

// What sonde wrote into one outgoing request: userspace gives the client
// span of that request these IDs, so that the receiving side's span names
// it as its parent.
struct inject_info {
	__u64 trace_id[2];
	__u64 span_id;
	__u32 request; // 1-based ordinal of the request on its connection
	__u32 seq;     // TCP sequence number of the request's first byte
	__u8 from_go;  // enum inject_source: where the IDs came from
	__u8 _pad[7];
};

enum inject_source {
	INJECT_NEW = 0,        // new trace and span IDs
	INJECT_FROM_GO = 1,    // a Go client probe's span
	INJECT_FROM_SERVED = 2, // the trace of a request served with this method and target
};

// IDs a Go client call chose, for the next request head sent on a socket.
struct inject_ctx {
	__u64 trace_id[2];
	__u64 span_id;
};

// Set by go_client_conn (bpf/gohttp.c), keyed by the struct sock's address,
// and taken by the injection into the next request head on that socket.
// LRU: a call whose request is never written leaves its entry behind.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct inject_ctx);
} inject_ctxs SEC(".maps");
