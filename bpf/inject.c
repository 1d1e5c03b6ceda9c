// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Opt-in W3C traceparent injection into plaintext HTTP/1 requests that
// leave the host, for a receiving side on another host to join the trace.
// Lockdown forbids writing process memory (PLATFORM.md), so the header is
// added to the bytes in flight: sockops puts the client sockets of selected
// processes into a sockhash, and an sk_msg program on that sockhash sees
// every message sent on them before TCP takes it.
//
// The sk_msg program follows each socket's outgoing HTTP/1 framing (request
// line, headers, Content-Length and chunked bodies, pipelined requests,
// any split over sends) and inserts the header just before the empty line
// that ends a request's headers: there it knows the request carries no
// traceparent yet, and the insertion point is in the message being sent.
// Anything it does not understand turns injection off for that socket for
// good, so that a byte of a body is never taken for a header.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "emit.h"
#include "inject.h"

// Bytes of a message examined per window. Headers are read a window at a
// time; bodies are skipped by count without being read.
#define INJECT_WIN 256

// Windows plus injections per message, at most. A message with more
// (thousands of small pipelined requests in one write) stops injection on
// its socket: the verifier needs a bound, and the framing must never be
// guessed.
#define INJECT_ROUNDS 48

enum phase {
	PH_START = 0,  // the next byte begins a request (empty lines are skipped)
	PH_METHOD,     // request line: the method
	PH_TARGET,     // request line: target and version
	PH_LINE,       // at the start of a header line
	PH_NAME,       // a header name
	PH_VALUE,      // a header value
	PH_FOLD,       // an obsolete folded continuation line
	PH_EOH_LF,     // the empty line's CR was seen
	PH_BODY,       // a Content-Length body: left bytes to go
	PH_CHUNK_SIZE, // a chunk-size line
	PH_CHUNK_EXT,  // a chunk extension, up to the line end
	PH_CHUNK_DATA, // chunk data: left bytes to go
	PH_CHUNK_END,  // the CRLF after chunk data
	PH_TRAILER,    // at the start of a trailer line (or the final empty line)
	PH_TRAILER_IN, // inside a trailer line
	PH_EOM_LF,     // the final empty line's CR was seen
	PH_OFF,        // not followed: never injected again
};

// Header names that matter, as bits of inject_state.cands.
#define H_CONTENT_LENGTH 1
#define H_TRANSFER_ENCODING 2
#define H_TRACEPARENT 4
#define H_UPGRADE 8
#define H_ALL 15

// Request flags (inject_state.flags).
#define F_HAS_CL 1
#define F_CHUNKED 2
#define F_HAS_TRACEPARENT 4
#define F_TUNNEL 8    // CONNECT, or an Upgrade: what follows is not HTTP/1
#define F_INJECTED 16 // the header is in: the empty line comes next

#define CONTENT_LENGTH_MAX (1ULL << 48)

// Per socket, in its local storage: freed with the socket, so state is
// bounded by the sockets that exist. Only the socket's sender touches it,
// under the socket lock that sendmsg holds, so no two runs race on it.
struct inject_state {
	__u64 left;   // bytes of the body or chunk still to pass; a number being parsed
	__u32 requests;
	__u32 tail;   // the request line's last four bytes before CR, as read
	__u32 tail2;  // the four before those
	__u8 phase;   // enum phase
	__u8 flags;
	__u8 cands;   // H_* names the current header name still matches
	__u8 kind;    // H_* of the value being read, 0 for others
	__u8 idx;     // bytes of the name or value read, saturating
	__u8 digits;  // of the chunk size
	__u8 armed;   // 1: a selected process connected; 2: in the sockhash
	__u8 connect; // the method is CONNECT
	__u32 req_seq; // TCP sequence number of the current request's first byte
	__u32 hash;    // FNV-1a of "METHOD TARGET", as note_served (emit.h) hashes it
	__u8 win[INJECT_WIN];
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct inject_state);
} inject_states SEC(".maps");

// The sockets sk_msg runs on, by socket cookie. A socket leaves it when it
// closes, and all leave it with the map when sonde exits, however it exits.
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} inject_socks SEC(".maps");

// The host's own addresses (IPv4 as IPv4-mapped IPv6), written by
// userspace: a connection to one of them, or to loopback, stays on the
// host, where sonde links both ends without changing a byte.
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1024);
	__type(key, __u8[16]);
	__type(value, __u8);
} local_addrs SEC(".maps");

static __always_inline bool stays_on_host(struct bpf_sock_ops *skops)
{
	__u8 addr[16] = {};
	if (skops->family == AF_INET) {
		__u32 ip = skops->remote_ip4;
		if ((bpf_ntohl(ip) >> 24) == 127)
			return true;
		addr[10] = 0xff;
		addr[11] = 0xff;
		__builtin_memcpy(&addr[12], &ip, 4);
	} else if (skops->family == AF_INET6) {
		__u32 w[4] = {skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2], skops->remote_ip6[3]};
		if (!w[0] && !w[1] && !w[2] && w[3] == bpf_htonl(1))
			return true;
		if (!w[0] && !w[1] && w[2] == bpf_htonl(0xffff) && (bpf_ntohl(w[3]) >> 24) == 127)
			return true;
		__builtin_memcpy(addr, w, 16);
	} else {
		return true;
	}
	return bpf_map_lookup_elem(&local_addrs, addr) != NULL;
}

SEC("sockops")
int inject_sockops(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk = skops->sk;
	if (!sk)
		return 1;
	switch (skops->op) {
	case BPF_SOCK_OPS_TCP_CONNECT_CB: {
		// Runs in connect(2), on the connecting task: the only callback
		// that knows which process owns the socket.
		if (!current_selected() || stays_on_host(skops))
			return 1;
		struct inject_state *st = bpf_sk_storage_get(&inject_states, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (st)
			st->armed = 1;
		else
			count(COUNTER_INJECT_FAILED);
		return 1;
	}
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB: {
		// A sockhash takes only established sockets.
		struct inject_state *st = bpf_sk_storage_get(&inject_states, sk, 0, 0);
		if (!st || st->armed != 1)
			return 1;
		__u64 cookie = bpf_get_socket_cookie(skops);
		if (bpf_sock_hash_update(skops, &inject_socks, &cookie, BPF_NOEXIST))
			count(COUNTER_INJECT_FAILED);
		else
			st->armed = 2;
		return 1;
	}
	}
	return 1;
}

static __always_inline void turn_off(struct inject_state *st)
{
	st->phase = PH_OFF;
	count(COUNTER_INJECT_OFF);
}

enum step {
	STEP_NEXT = 0,
	STEP_INJECT, // stop before this byte: the header goes here
	STEP_OFF,
};

// In one struct, not as separate strings: clang would merge those into a
// string section that BTF cannot describe.
static const struct {
	char content_length[sizeof("content-length")];
	char transfer_encoding[sizeof("transfer-encoding")];
	char traceparent[sizeof("traceparent")];
	char upgrade[sizeof("upgrade")];
	char chunked[sizeof("chunked")];
} names = {"content-length", "transfer-encoding", "traceparent", "upgrade", "chunked"};

#define name_content_length names.content_length
#define name_transfer_encoding names.transfer_encoding
#define name_traceparent names.traceparent
#define name_upgrade names.upgrade
#define chunked names.chunked

// One header-name byte, lowercased: drops the names it does not continue.
static __always_inline void match_name(struct inject_state *st, __u8 c)
{
	__u8 i = st->idx;
	if ((st->cands & H_CONTENT_LENGTH) && (i >= sizeof(name_content_length) - 1 || name_content_length[i] != c))
		st->cands &= ~H_CONTENT_LENGTH;
	if ((st->cands & H_TRANSFER_ENCODING) && (i >= sizeof(name_transfer_encoding) - 1 || name_transfer_encoding[i] != c))
		st->cands &= ~H_TRANSFER_ENCODING;
	if ((st->cands & H_TRACEPARENT) && (i >= sizeof(name_traceparent) - 1 || name_traceparent[i] != c))
		st->cands &= ~H_TRACEPARENT;
	if ((st->cands & H_UPGRADE) && (i >= sizeof(name_upgrade) - 1 || name_upgrade[i] != c))
		st->cands &= ~H_UPGRADE;
	if (i < 255)
		st->idx = i + 1;
}

// The header whose name just ended at ':', if it is one that matters.
static __always_inline __u8 name_kind(struct inject_state *st)
{
	__u8 i = st->idx;
	if ((st->cands & H_CONTENT_LENGTH) && i == sizeof(name_content_length) - 1)
		return H_CONTENT_LENGTH;
	if ((st->cands & H_TRANSFER_ENCODING) && i == sizeof(name_transfer_encoding) - 1)
		return H_TRANSFER_ENCODING;
	if ((st->cands & H_TRACEPARENT) && i == sizeof(name_traceparent) - 1)
		return H_TRACEPARENT;
	if ((st->cands & H_UPGRADE) && i == sizeof(name_upgrade) - 1)
		return H_UPGRADE;
	return 0;
}

static __always_inline __u8 lower(__u8 c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

// One byte of a header value. Content-Length must be digits, once;
// Transfer-Encoding must end in chunked (a request whose length is
// anything else is refused by any server, and is not followed).
static __always_inline int value_byte(struct inject_state *st, __u8 c)
{
	switch (st->kind) {
	case H_CONTENT_LENGTH:
		if (c >= '0' && c <= '9') {
			if (st->left >= CONTENT_LENGTH_MAX)
				return STEP_OFF;
			st->left = st->left * 10 + (c - '0');
			st->idx = 1;
			return STEP_NEXT;
		}
		if (c == ' ' || c == '\t' || c == '\r')
			return STEP_NEXT;
		return STEP_OFF;
	case H_TRANSFER_ENCODING:
		c = lower(c);
		if (c == ' ' || c == '\t' || c == '\r')
			return STEP_NEXT;
		if (c == ',') {
			st->idx = 0;
			return STEP_NEXT;
		}
		// idx: bytes of "chunked" matched in the current token; 8: the
		// token is something else.
		if (st->idx < sizeof(chunked) - 1 && chunked[st->idx] == c)
			st->idx++;
		else
			st->idx = 8;
		return STEP_NEXT;
	}
	return STEP_NEXT;
}

static __always_inline int value_end(struct inject_state *st)
{
	switch (st->kind) {
	case H_CONTENT_LENGTH:
		if (st->flags & F_HAS_CL || !st->idx)
			return STEP_OFF; // repeated or empty: the server decides, not us
		st->flags |= F_HAS_CL;
		return STEP_NEXT;
	case H_TRANSFER_ENCODING:
		if (st->idx != sizeof(chunked) - 1)
			return STEP_OFF;
		st->flags |= F_CHUNKED;
		return STEP_NEXT;
	case H_TRACEPARENT:
		st->flags |= F_HAS_TRACEPARENT;
		return STEP_NEXT;
	case H_UPGRADE:
		st->flags |= F_TUNNEL;
		return STEP_NEXT;
	}
	return STEP_NEXT;
}

// The request's headers ended: what follows is its body, or the next
// request. A body length comes from Transfer-Encoding over Content-Length
// (RFC 9112 6.3); a request with neither has none.
static __always_inline int headers_end(struct inject_state *st)
{
	if (st->flags & F_TUNNEL || st->connect)
		return STEP_OFF;
	if (st->flags & F_CHUNKED) {
		st->phase = PH_CHUNK_SIZE;
		st->left = 0;
		st->digits = 0;
	} else if (st->left) {
		st->phase = PH_BODY;
	} else {
		st->phase = PH_START;
	}
	return STEP_NEXT;
}

// The request line ends "HTTP/1.0" or "HTTP/1.1", read as two words.
#define TAIL_HTTP ('H' << 24 | 'T' << 16 | 'T' << 8 | 'P')
#define TAIL_1_0 ('/' << 24 | '1' << 16 | '.' << 8 | '0')
#define TAIL_1_1 ('/' << 24 | '1' << 16 | '.' << 8 | '1')

// One byte of the request stream outside bodies.
static __always_inline int step(struct inject_state *st, __u8 c)
{
	switch (st->phase) {
	case PH_START:
		if (c == '\r' || c == '\n')
			return STEP_NEXT;
		st->requests++;
		st->flags = 0;
		st->left = 0;
		st->idx = 0;
		st->connect = 0;
		st->tail = 0;
		st->tail2 = 0;
		st->hash = FNV_OFFSET;
		st->phase = PH_METHOD;
		/* fallthrough */
	case PH_METHOD:
		st->hash = (st->hash ^ c) * FNV_PRIME;
		if (c == ' ') {
			if (!st->idx)
				return STEP_OFF;
			// tail holds the method's last four bytes: "NECT" of
			// CONNECT with the length to tell it from others.
			st->connect = st->idx == 7 && st->tail == ('N' << 24 | 'E' << 16 | 'C' << 8 | 'T');
			st->tail = 0;
			st->idx = 1; // the target is hashed up to its end
			st->phase = PH_TARGET;
			return STEP_NEXT;
		}
		if ((c < 'A' || c > 'Z') && c != '-' && c != '_')
			return STEP_OFF; // not a request: the HTTP/2 preface has "PRI *", which ends below
		if (++st->idx > 20)
			return STEP_OFF;
		st->tail = st->tail << 8 | c;
		return STEP_NEXT;
	case PH_TARGET:
		if (c == '\r')
			return STEP_NEXT;
		if (c == '\n') {
			// HTTP/2's preface is "PRI * HTTP/2.0": this is where it stops.
			if (st->tail2 != TAIL_HTTP || (st->tail != TAIL_1_0 && st->tail != TAIL_1_1))
				return STEP_OFF;
			st->phase = PH_LINE;
			return STEP_NEXT;
		}
		if (c == ' ')
			st->idx = 0;
		else if (st->idx)
			st->hash = (st->hash ^ c) * FNV_PRIME;
		st->tail2 = st->tail2 << 8 | st->tail >> 24;
		st->tail = st->tail << 8 | c;
		return STEP_NEXT;
	case PH_LINE:
		if (c == '\r' || c == '\n') {
			// The empty line: the header goes before it, once, unless
			// the request carries one.
			if (!(st->flags & (F_INJECTED | F_HAS_TRACEPARENT)))
				return STEP_INJECT;
			if (st->flags & F_HAS_TRACEPARENT && !(st->flags & F_INJECTED)) {
				count(COUNTER_INJECT_PRESENT);
				st->flags |= F_INJECTED; // counted once
			}
			if (c == '\r') {
				st->phase = PH_EOH_LF;
				return STEP_NEXT;
			}
			return headers_end(st);
		}
		if (c == ' ' || c == '\t') {
			st->phase = PH_FOLD;
			return STEP_NEXT;
		}
		st->cands = H_ALL;
		st->idx = 0;
		st->phase = PH_NAME;
		/* fallthrough */
	case PH_NAME:
		if (c == ':') {
			st->kind = name_kind(st);
			if (st->kind == H_CONTENT_LENGTH && st->flags & F_HAS_CL)
				return STEP_OFF;
			st->idx = 0;
			st->phase = PH_VALUE;
			return STEP_NEXT;
		}
		if (c == '\n')
			return STEP_OFF; // a line without a colon: not ours to judge
		match_name(st, lower(c));
		return STEP_NEXT;
	case PH_VALUE:
		if (c == '\n') {
			st->phase = PH_LINE;
			return value_end(st);
		}
		return value_byte(st, c);
	case PH_FOLD:
		if (c == '\n')
			st->phase = PH_LINE;
		return STEP_NEXT;
	case PH_EOH_LF:
		if (c != '\n')
			return STEP_OFF;
		return headers_end(st);
	case PH_CHUNK_SIZE:
		if (c >= '0' && c <= '9')
			c -= '0';
		else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
			c = (c | 0x20) - 'a' + 10;
		else if (c == ';' || c == ' ' || c == '\t') {
			st->phase = PH_CHUNK_EXT;
			return STEP_NEXT;
		} else if (c == '\r') {
			return STEP_NEXT;
		} else if (c == '\n') {
			goto size_end;
		} else {
			return STEP_OFF;
		}
		if (st->left >= CONTENT_LENGTH_MAX)
			return STEP_OFF;
		st->left = st->left << 4 | c;
		st->digits = 1;
		return STEP_NEXT;
	case PH_CHUNK_EXT:
		if (c == '\n')
			goto size_end;
		return STEP_NEXT;
	case PH_CHUNK_END:
		if (c == '\r')
			return STEP_NEXT;
		if (c != '\n')
			return STEP_OFF;
		st->phase = PH_CHUNK_SIZE;
		st->left = 0;
		st->digits = 0;
		return STEP_NEXT;
	case PH_TRAILER:
		if (c == '\r') {
			st->phase = PH_EOM_LF;
			return STEP_NEXT;
		}
		st->phase = c == '\n' ? PH_START : PH_TRAILER_IN;
		return STEP_NEXT;
	case PH_TRAILER_IN:
		if (c == '\n')
			st->phase = PH_TRAILER;
		return STEP_NEXT;
	case PH_EOM_LF:
		if (c != '\n')
			return STEP_OFF;
		st->phase = PH_START;
		return STEP_NEXT;
	}
	return STEP_OFF;

size_end:
	if (!st->digits)
		return STEP_OFF;
	st->phase = st->left ? PH_CHUNK_DATA : PH_TRAILER;
	return STEP_NEXT;
}

// The bpf_loop callback's view of one window.
struct scan {
	struct inject_state *st;
	__u32 n;         // bytes in the window
	__u32 i;         // bytes of it consumed
	__u32 inject_at; // window offset to insert at, or INJECT_NONE
	__u32 req_start; // window offset where the latest request began, or INJECT_NONE
	__u8 off;
};

#define INJECT_NONE 0xffffffff

// Bodies are passed by count in one step; other bytes go through step().
// bpf_loop's index is not used: a step may consume many bytes.
static long scan_window(__u32 index, void *arg)
{
	struct scan *sc = arg;
	struct inject_state *st = sc->st;
	__u32 i = sc->i;
	if (i >= sc->n)
		return 1;
	if (st->phase == PH_BODY || st->phase == PH_CHUNK_DATA) {
		__u64 k = sc->n - i;
		if (st->left < k)
			k = st->left;
		st->left -= k;
		sc->i = i + k;
		if (!st->left)
			st->phase = st->phase == PH_BODY ? PH_START : PH_CHUNK_END;
		return sc->i >= sc->n;
	}
	__u8 was = st->phase;
	int r = step(st, st->win[i & (INJECT_WIN - 1)]);
	if (was == PH_START && st->phase == PH_METHOD)
		sc->req_start = i;
	if (r == STEP_INJECT) {
		sc->inject_at = i;
		return 1;
	}
	if (r == STEP_OFF) {
		sc->off = 1;
		return 1;
	}
	sc->i = i + 1;
	return sc->i >= sc->n;
}

static __always_inline void put_hex(char *dst, __u64 v)
{
	for (int i = 15; i >= 0; i--) {
		__u8 d = v & 15;
		dst[i] = d < 10 ? '0' + d : 'a' - 10 + d;
		v >>= 4;
	}
}

static __noinline void report(struct sk_msg_md *msg, struct inject_state *st, struct inject_ctx *ids, __u8 from_go)
{
	struct {
		struct event hdr;
		struct inject_info info;
	} *e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		count(COUNTER_LOST);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));
	__u64 id = bpf_get_current_pid_tgid();
	struct sock *sk = (struct sock *)msg->sk;
	e->hdr.ts = bpf_ktime_get_ns();
	e->hdr.sock = (__u64)sk;
	e->hdr.tgid = id >> 32;
	e->hdr.tid = (__u32)id;
	e->hdr.fd = -1;
	e->hdr.kind = EVENT_INJECT;
	e->hdr.dir = DIR_EGRESS;
	e->hdr.captured = sizeof(e->info);
	fill_tuple(&e->hdr, sk);
	bpf_get_current_comm(e->hdr.comm, sizeof(e->hdr.comm));
	e->info.trace_id[0] = ids->trace_id[0];
	e->info.trace_id[1] = ids->trace_id[1];
	e->info.span_id = ids->span_id;
	e->info.request = st->requests;
	e->info.seq = st->req_seq;
	e->info.from_go = from_go;
	bpf_ringbuf_submit(e, 0);
	count(COUNTER_EVENTS);
}

// What scanning one window of a message found, in offsets from the
// window's start.
struct window {
	__u32 consumed;  // bytes the scan took
	__u32 inject_at; // where to insert, or INJECT_NONE
	__u32 req_start; // where the latest request began, or INJECT_NONE
	__u32 off;       // 1: the framing is lost
};

// scan_window_at reads the window of msg that starts at pos into st->win
// and scans it. A global function, for the verifier: a static one, and the
// bpf_loop callback in it, are checked again for every round of
// inject_msg's loop with that round's state, and on 6.18 kernels the walk
// passed the verifier's million-instruction limit. A global function is
// checked once, from its argument types alone (st and w may then be NULL
// as far as the verifier knows).
__noinline int scan_window_at(struct sk_msg_md *msg, struct inject_state *st, __u32 pos, __u32 size, struct window *w)
{
	if (!st || !w)
		return -1;
	__u32 end = pos + INJECT_WIN;
	if (end > size)
		end = size;
	if (bpf_msg_pull_data(msg, pos, end, 0))
		return -1;
	void *data = (void *)(long)msg->data;
	void *data_end = (void *)(long)msg->data_end;
	__u64 n = data_end - data;
	if (n > INJECT_WIN)
		n = INJECT_WIN;
	if (n == 0 || bpf_probe_read_kernel(st->win, n, data))
		return -1;
	struct scan sc = {.st = st, .n = n, .inject_at = INJECT_NONE, .req_start = INJECT_NONE};
	bpf_loop(INJECT_WIN, scan_window, &sc, 0);
	w->consumed = sc.i;
	w->inject_at = sc.inject_at;
	w->req_start = sc.req_start;
	w->off = sc.off;
	return 0;
}

// Inserts the traceparent at message offset at. The IDs are a Go client
// probe's when it named them for this socket, else new ones.
//
// A global function, not a static one: the verifier checks a static
// subprogram again at every call site with the caller's state, which here
// is every round of inject_msg's loop, and on 6.18 kernels that walk
// passed its million-instruction limit. A global function is checked once,
// on its own, from its argument types: st may then be NULL as far as the
// verifier knows.
__noinline int inject(struct sk_msg_md *msg, struct inject_state *st, __u32 at)
{
	if (!st)
		return -1;
	struct sock *sk = (struct sock *)msg->sk;
	__u64 key = (__u64)sk;
	struct inject_ctx ids;
	__u8 from_go = 0;
	struct inject_ctx *goids = bpf_map_lookup_elem(&inject_ctxs, &key);
	if (goids) {
		ids = *goids;
		bpf_map_delete_elem(&inject_ctxs, &key);
		from_go = INJECT_FROM_GO;
	} else {
		// A request the process forwards continues the trace of the one
		// it serves; anything else starts a trace.
		struct served_key sk_key = {.tgid = bpf_get_current_pid_tgid() >> 32, .hash = st->hash};
		struct served_ctx *served = bpf_map_lookup_elem(&inject_served, &sk_key);
		if (served && (served->trace_id[0] || served->trace_id[1]) && bpf_ktime_get_ns() - served->ts < SERVED_FRESH_NS) {
			ids.trace_id[0] = served->trace_id[0];
			ids.trace_id[1] = served->trace_id[1];
			from_go = INJECT_FROM_SERVED;
		} else {
			ids.trace_id[0] = (__u64)bpf_get_prandom_u32() << 32 | bpf_get_prandom_u32();
			ids.trace_id[1] = (__u64)bpf_get_prandom_u32() << 32 | bpf_get_prandom_u32();
		}
		ids.span_id = (__u64)bpf_get_prandom_u32() << 32 | bpf_get_prandom_u32();
	}
	char tp[TRACEPARENT_LEN + 2] = "traceparent: 00-";
	// IDs are numbers whose big-endian bytes are the W3C ones, as
	// userspace reads the Go probes' (u64ID in tracer/gospan.go).
	put_hex(&tp[16], ids.trace_id[0]);
	put_hex(&tp[32], ids.trace_id[1]);
	tp[48] = '-';
	put_hex(&tp[49], ids.span_id);
	__builtin_memcpy(&tp[65], "-01\r\n", 5);

	if (bpf_msg_push_data(msg, at, TRACEPARENT_LEN, 0))
		return -1;
	// The pushed bytes are uninitialised until written: on any failure
	// from here they are popped again, so nothing sent changes.
	if (bpf_msg_pull_data(msg, at, at + TRACEPARENT_LEN, 0))
		goto undo;
	void *data = (void *)(long)msg->data;
	void *data_end = (void *)(long)msg->data_end;
	if (data + TRACEPARENT_LEN > data_end)
		goto undo;
	__builtin_memcpy(data, tp, TRACEPARENT_LEN);
	count(COUNTER_INJECTED);
	report(msg, st, &ids, from_go);
	return 0;
undo:
	bpf_msg_pop_data(msg, at, TRACEPARENT_LEN, 0);
	return -1;
}

SEC("sk_msg")
int inject_msg(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	if (!sk)
		return SK_PASS;
	struct inject_state *st = bpf_sk_storage_get(&inject_states, sk, 0, 0);
	if (!st || st->phase == PH_OFF)
		return SK_PASS;
	if (!running) {
		// Detaching: the rest of this socket's stream goes unfollowed.
		st->phase = PH_OFF;
		return SK_PASS;
	}
	__u32 size = msg->size;
	__u32 pos = 0;
	// The sequence number of this message's first byte: TCP has taken
	// every earlier message, and takes this one after the verdict.
	__u32 seq0 = AS(struct tcp_sock, (struct sock *)sk)->write_seq;
	struct window w = {};
#pragma clang loop unroll(disable)
	for (int round = 0; round < INJECT_ROUNDS; round++) {
		if (pos >= size)
			return SK_PASS;
		if (st->phase == PH_BODY || st->phase == PH_CHUNK_DATA) {
			__u64 k = size - pos;
			if (st->left < k)
				k = st->left;
			st->left -= k;
			pos += k;
			if (!st->left)
				st->phase = st->phase == PH_BODY ? PH_START : PH_CHUNK_END;
			continue;
		}
		if (scan_window_at(msg, st, pos, size, &w))
			break;
		if (w.req_start != INJECT_NONE)
			st->req_seq = seq0 + pos + w.req_start;
		if (w.off)
			break;
		pos += w.consumed;
		if (w.inject_at != INJECT_NONE) {
			if (inject(msg, st, pos)) {
				count(COUNTER_INJECT_FAILED);
				break;
			}
			st->flags |= F_INJECTED;
			size += TRACEPARENT_LEN;
			pos += TRACEPARENT_LEN;
		}
	}
	if (pos < size)
		turn_off(st); // the framing is lost: stop before guessing
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
