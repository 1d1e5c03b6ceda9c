// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// The maps only the Go uprobes use (bpf/gohttp.c). Apart from maps.h so the
// socket object does not allocate them.
#pragma once

#include "events.h"


// Field offsets per traced Go binary; a probe's attach cookie is its index.
#define GO_BINARIES_MAX 256
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, GO_BINARIES_MAX);
	__type(key, __u32);
	__type(value, struct go_offsets);
} go_binaries SEC(".maps");

// What a goroutine's spans descend from: the trace and the span that is
// the parent of any client call it makes.
struct go_context {
	__u64 trace_id[2];
	__u64 span_id;
};

// A request being served, by (tgid, goid): goids are unique per process.
struct go_key {
	__u32 tgid;
	__u32 _pad;
	__u64 goid;
};

struct go_server_state {
	__u64 start_ts;
	struct go_context ctx;
};

struct go_client_state {
	__u64 start_ts;
	__u64 req; // the caller's *http.Request
	__u64 span_id;
	__u64 parent_span_id;
	__u64 trace_id[2];
	__s32 fd;  // the HTTP/1 connection's socket, once picked; -1 until then
	__u32 _pad;
};

// Bounded by LRU eviction: a request whose end probe never fires (a
// handler that panicked, a hijacked connection) must not leak its entry.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_key);
	__type(value, struct go_server_state);
} go_servers SEC(".maps");

// Goroutines started while serving a request inherit its context.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_key);
	__type(value, struct go_context);
} go_inherited SEC(".maps");

// Client calls in flight, by the calling goroutine: a goroutine waits for
// one round trip at a time.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_key);
	__type(value, struct go_client_state);
} go_clients SEC(".maps");

// From what the response side sees (a *Request that may be a copy of the
// caller's, an HTTP/2 stream) back to the calling goroutine.
struct go_ptr_key {
	__u32 tgid;
	__u32 _pad;
	__u64 ptr;
};
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_ptr_key);
	__type(value, __u64); // goid
} go_callers SEC(".maps");

// The fd of an HTTP/1 server connection, by (tgid, *http.conn), from its
// first request's end on: following the conn to its descriptor takes three
// dependent reads per request. go_http_conn_serve drops an address's entry
// when a new connection starts there (a freed conn is allocated again).
// LRU: the entries of closed connections age out.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_ptr_key);
	__type(value, __s32);
} go_conn_fds SEC(".maps");

// The same for grpc-go's server transports, by (tgid, *http2Server), which
// go_grpc_server_conn drops when a connection's transport starts: a map of
// its own, as a transport may sit where an http.conn was.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_ptr_key);
	__type(value, __s32);
} grpc_conn_fds SEC(".maps");

// A grpc-go client call, from newClientStream to clientStream.finish.
struct grpc_call {
	__u64 start_ts;
	__u64 goid;        // the goroutine that made the call
	__u64 method_ptr;  // the caller's method string, read at the end
	__u64 method_len;
	__u64 cc;          // *grpc.ClientConn
	__u64 span_id;
	__u64 parent_span_id;
	__u64 trace_id[2];
};

// A call whose clientStream is not known yet, by the calling goroutine:
// between newClientStream's entry and the stream's first attempt, which
// happen on that goroutine one call at a time.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_key);
	__type(value, struct grpc_call);
} grpc_pending SEC(".maps");

// Calls in flight, by (tgid, *clientStream). A goroutine may hold many
// streams open at once, so from here on the stream is the key. LRU: a
// stream its caller abandons never reaches finish.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct go_ptr_key);
	__type(value, struct grpc_call);
} grpc_calls SEC(".maps");
