// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Event layout shared by every sonde BPF program and read in place by
// tracer/events.go. Fields are ordered by size so that the struct has no
// implicit padding: userspace casts the ring-buffer record to this layout
// without copying, and a hole would make the two sides disagree silently.
#pragma once

// Upper bound of bytes captured per syscall. The runtime limit
// (cfg_capture_bytes) is at most this. A power of two: the verifier is shown
// offsets masked with CAPTURE_MAX - 1.
#define CAPTURE_MAX 16384

// At most this many iovecs are read per readv/writev/sendmsg/recvmsg; the
// byte count stays exact, only capture stops early.
#define IOV_MAX_READ 12

// Bytes of an executed file's path reported with EVENT_EXEC, NUL included.
// A power of two: the argument bytes that follow the path are placed at an
// offset the verifier is shown masked with 2 * PATH_MAX_CAPTURE - 1.
#define PATH_MAX_CAPTURE 512

// Bytes of the new program's argv reported with EVENT_EXEC, after the path.
#define ARGS_MAX_CAPTURE 1024

// At most this many messages of one sendmmsg/recvmmsg are reported.
#define MMSG_MAX 4

enum event_kind {
	EVENT_DATA = 1,    // bytes moved on a TCP socket
	EVENT_ACCEPT = 2,  // a connection accepted: the process is the server
	EVENT_CONNECT = 3, // a connection initiated: the process is the client
	EVENT_CLOSE = 4,   // the process closed a TCP socket's last fd; fd is -1 (bpf/socket.c sock_state)
	EVENT_EXEC = 5,    // a process called execve; payload: the executed path, NUL, argv (NUL-separated)
	EVENT_EXIT = 6,    // a selected process exited
	EVENT_FORK = 7,    // a selected process forked: tgid is the child's
};

// The socket lost at least one event (ring buffer full) before this one:
// userspace must not parse this event as the continuation of the last.
#define EVENT_F_AFTER_LOSS 1
// The payload is plaintext an OpenSSL probe read from the SSL call's buffer
// (bpf/openssl.c), not the bytes on the wire.
#define EVENT_F_TLS 2

// How a connection in the opened map was opened.
enum opened_how {
	OPENED_PASSIVE = 1, // accepted: this end serves
	OPENED_ACTIVE = 2,  // connected: this end is the client
};

// A key of the opened map (bpf/socket.c): ports in host order, as in
// struct event.
struct open_key {
	__u64 sock;
	__u16 sport; // local
	__u16 dport; // remote
	__u32 _pad;
};

// A value of the opened map. The map is read out of band, after the fact:
// by the time userspace looks, the socket may have been freed and reused
// by a later connection, and one on the same ports too would have replaced
// this entry. ts, taken with the events' clock, tells them apart.
struct open_note {
	__u64 ts; // CLOCK_MONOTONIC ns of the open
	__u8 how; // enum opened_how
	__u8 _pad[7];
};

enum direction {
	DIR_NONE = 0,
	DIR_EGRESS = 1,  // the process sent the bytes
	DIR_INGRESS = 2, // the process received the bytes
};

// The syscall that produced an event, for statistics and debugging.
enum syscall_id {
	SYS_READ = 1,
	SYS_WRITE,
	SYS_READV,
	SYS_WRITEV,
	SYS_SENDTO,
	SYS_RECVFROM,
	SYS_SENDMSG,
	SYS_RECVMSG,
	SYS_SENDMMSG,
	SYS_RECVMMSG,
	SYS_SENDFILE,
	SYS_ACCEPT,
	SYS_CONNECT,
	SYS_CLOSE,
	SYS_SSL_READ,  // plaintext SSL_read returned
	SYS_SSL_WRITE, // plaintext SSL_write sent
};

struct event {
	__u64 ts;       // CLOCK_MONOTONIC ns when the syscall returned
	__u64 sock;     // kernel address of struct sock: the connection's identity while it lives
	__u32 tgid;
	__u32 tid;
	__s32 fd;
	__u32 size;     // bytes the syscall really moved (may exceed captured)
	__u32 captured; // bytes of payload that follow this header
	__u16 sport;    // local port, host order
	__u16 dport;    // remote port, host order
	__u8 saddr[16]; // local address; IPv4 as ::ffff:a.b.c.d
	__u8 daddr[16]; // remote address
	__u8 kind;      // enum event_kind
	__u8 dir;       // enum direction
	__u8 syscall;   // enum syscall_id
	__u8 family;    // AF_INET or AF_INET6 as seen on the socket
	char comm[16];  // the thread's name; empty in data events (see new_event)
	__u8 flags;     // EVENT_F_*
	__u8 seq_known; // 1: tcp_seq is set
	__u8 _pad[2];   // explicit: keeps sizeof a multiple of 8 with no hidden tail
	// TCP sequence number of the first byte a data event moved: both ends
	// of a connection number its bytes alike (docs/cross-host.md).
	__u32 tcp_seq;
	__u32 _pad2;
};

// Counters in the per-CPU array "counters"; userspace sums the CPUs.
enum counter {
	COUNTER_EVENTS = 0,     // events written to the ring buffer
	COUNTER_LOST,           // events the ring buffer had no room for
	COUNTER_IOV_CAPPED,     // capture stopped at IOV_MAX_READ iovecs
	COUNTER_MMSG_CAPPED,    // more than MMSG_MAX messages in one call
	COUNTER_TARGETS_FULL,   // a process could not be selected: its tgid is beyond the targets bitmap
	COUNTER_TLS_UNPAIRED,   // plaintext of an SSL object whose socket is unknown: not reported
	COUNTER_INJECTED,       // traceparent headers written into outgoing requests
	COUNTER_INJECT_PRESENT, // requests that carried a traceparent already: left alone
	COUNTER_INJECT_OFF,     // connections injection stopped on: not HTTP/1, or framing lost
	COUNTER_INJECT_FAILED,  // a socket could not be watched, or a header not written: nothing sent changed
	COUNTER_UNREAD_CALL,    // TCP bytes of a selected process moved by a call whose buffer the socket hooks cannot find (io_uring, 32-bit calls)
	COUNTER_MAX,
};

// ---- Go uprobes (bpf/gohttp.c) -------------------------------------------

// Event kinds of the Go uprobes, after those above. The payload is a
// struct go_span; hdr.ts is when the exchange ended, hdr.fd the socket's fd
// (-1 when it could not be read).
enum go_event_kind {
	EVENT_GO_SERVER = 8, // net/http served a request, or grpc-go a call
	EVENT_GO_CLIENT = 9, // net/http's Transport got a response, or a grpc-go call ended
};

#define GO_METHOD_MAX 16
#define GO_PATH_MAX 256
#define GO_PATTERN_MAX 128
#define GO_HOST_MAX 128
#define GO_REMOTE_MAX 64
#define GO_QUERY_MAX 128

// A span the Go uprobes saw whole. IDs are chosen in the kernel, so that a
// client call can name its parent while both are still running; userspace
// may replace the trace ID with an incoming traceparent's.
//
// The strings follow the struct, packed in the order of the lengths below,
// so that an event costs the ring buffer what it says, not every string's
// maximum.
struct go_span {
	__u64 start_ts;       // CLOCK_MONOTONIC ns
	__u64 goid;           // goroutine that served or called
	__u64 trace_id[2];
	__u64 span_id;
	__u64 parent_span_id; // 0: none seen in the process
	__u32 status;         // HTTP status, or the gRPC status code when grpc
	__u16 method_len;     // bytes of each packed string
	__u16 path_len;
	__u16 query_len;
	__u16 pattern_len;
	__u16 host_len;
	__u16 remote_len;
	__u8 proto_major;     // 1 or 2
	__u8 tls;             // 1 when the connection is crypto/tls
	__u8 grpc;            // 1: a grpc-go call; path is its full method, host the client's authority
	__u8 _pad;
	__u32 stream_id;      // grpc-go: the call's HTTP/2 stream; 0: unknown
};

// Where the packed strings may start: a power of two the verifier is shown
// offsets masked with, larger than the struct plus every string's maximum.
#define GO_STRINGS_SPAN 1024

// Struct field offsets of one Go binary, from its DWARF or sonde's table.
// GO_ABSENT marks a field the binary's Go version does not have.
#define GO_ABSENT 0xffff

struct go_offsets {
	__u16 g_goid;
	__u16 g_parent_goid;
	__u16 request_method;
	__u16 request_url;
	__u16 request_host;
	__u16 request_remote_addr;
	__u16 request_pattern;
	__u16 request_proto_major;
	__u16 request_tls;
	__u16 url_path;
	__u16 url_host;
	__u16 url_scheme;
	__u16 url_raw_query;
	__u16 response_conn;      // net/http.response
	__u16 response_req;
	__u16 response_status;
	__u16 conn_rwc;           // net/http.conn: an interface
	__u16 tls_conn_conn;      // crypto/tls.Conn.conn: an interface
	__u16 netconn_fd;         // net.conn.fd
	__u16 netfd_pfd;          // net.netFD.pfd
	__u16 pollfd_sysfd;       // internal/poll.FD.Sysfd
	__u16 h2rw_rws;           // net/http.http2responseWriter.rws
	__u16 h2rws_req;
	__u16 h2rws_status;
	__u16 h2rws_conn;         // *http2serverConn
	__u16 h2sc_conn;          // http2serverConn.conn: an interface
	__u16 treq_request;       // net/http.transportRequest.Request
	__u16 resp_status_code;   // net/http.Response.StatusCode
	__u16 resp_request;       // net/http.Response.Request
	__u16 mhf_fields;         // net/http.http2MetaHeadersFrame.Fields
	__u16 pconn_conn;         // net/http.persistConn.conn: an interface
	// grpc-go, from its own table (offsets/grpc.json) or DWARF.
	__u16 grpc_stream_method; // the method string in the stream the server probes see
	__u16 grpc_server_conn;   // transport.http2Server.conn: an interface
	__u16 grpc_cc_authority;  // grpc.ClientConn.authority
	__u16 grpc_error_status;  // internal/status.Error.s
	__u16 grpc_status_proto;  // internal/status.Status.s
	__u16 grpc_proto_code;    // genproto rpc/status.Status.Code (int32)
	__u16 grpc_server_stream_id; // the stream ID (uint32) in the stream the server probes see
	__u16 grpc_cs_attempt;       // grpc.clientStream.attempt
	__u16 grpc_attempt_stream;   // grpc.csAttempt.s (transportStream from v1.71)
	__u16 grpc_client_stream_id; // the stream ID in that stream
	// Bytes of a struct's head that hold every field the probes read of
	// it, copied in one read (GO_COPY_MAX at most); set by the loader from
	// the offsets above.
	__u16 request_span;       // net/http.Request
	__u16 url_span;           // net/url.URL
	__u16 response_span;      // net/http.response
};

// GO_COPY_MAX bounds the struct heads the Go probes copy whole.
#define GO_COPY_MAX 512

// ---- OpenSSL uprobes (bpf/openssl.c) -----------------------------------------

// A probe's attach cookie: what the probed function does (low byte) and
// where it returns the byte count (second byte). Mirrors offsets.SSLOp and
// offsets.SSLCount.
enum ssl_op {
	SSL_OP_READ = 1,
	SSL_OP_WRITE = 2,
	SSL_OP_HANDSHAKE = 3,
};

enum ssl_count {
	SSL_COUNT_RETURN = 1,  // the return value is the byte count
	SSL_COUNT_POINTER = 2, // returns > 0, the count is stored through the 4th argument
	SSL_COUNT_NONE = 3,
};
