// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
// Uprobes on Go's net/http: server and client spans, and which goroutine's
// request a client call belongs to.
//
// Every probe is an entry probe on an instruction the kernel emulates (the
// PUSH RBP after a function's stack check, or a CALL): a single-stepped
// probe costs ~17 us per hit on these machines, an emulated one ~0.6 us.
// There are no uretprobes: Go moves goroutine stacks, and a return probe's
// trampoline address on a moved stack crashes the program. Ends of
// requests are taken at functions that run when a request ends.
//
// Go's register ABI: integer arguments in RAX, RBX, RCX, RDI, RSI, R8...;
// R14 holds the current goroutine (g) at every function entry.

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

#include "emit.h"
#include "gomaps.h"
#include "inject.h"

// Emits go_span into BTF, for bpf2go to generate its Go twin.
_Static_assert(sizeof(struct go_span) + GO_METHOD_MAX + GO_PATH_MAX + GO_QUERY_MAX + GO_PATTERN_MAX +
			       GO_HOST_MAX + GO_REMOTE_MAX <= GO_STRINGS_SPAN,
	       "packed strings may pass GO_STRINGS_SPAN");
const struct go_span *unused_go_span __attribute__((unused));

#define GO_ARG1(ctx) ((ctx)->ax)
#define GO_ARG2(ctx) ((ctx)->bx)
#define GO_ARG3(ctx) ((ctx)->cx)
#define GO_ARG4(ctx) ((ctx)->di)
#define GO_G(ctx) ((ctx)->r14)

static __always_inline struct go_offsets *offsets_of(struct pt_regs *ctx)
{
	__u32 idx = bpf_get_attach_cookie(ctx);
	return bpf_map_lookup_elem(&go_binaries, &idx);
}

static __always_inline __u64 read_u64(__u64 addr)
{
	__u64 v = 0;
	bpf_probe_read_user(&v, sizeof(v), (void *)addr);
	return v;
}

static __always_inline __u64 goid_of(struct go_offsets *o, __u64 g)
{
	return read_u64(g + o->g_goid);
}

// copy_string copies the bytes of a Go string (ptr, len) into dst, at most
// max bytes (max a power of two); returns the bytes copied.
static __always_inline __u16 copy_string(char *dst, __u32 max, __u64 ptr, __u64 len)
{
	if (!ptr)
		return 0;
	__u64 n = len;
	if (n > max)
		n = max;
	// The verifier must see the bound on the register passed to the helper.
	asm volatile("" : "+r"(n));
	n &= 2 * max - 1;
	if (n > max)
		return 0;
	if (bpf_probe_read_user(dst, n, (void *)ptr))
		return 0;
	return n;
}

// read_string copies a Go string (pointer, length) found at addr into dst,
// at most max bytes (max a power of two); returns the bytes copied.
static __always_inline __u16 read_string(char *dst, __u32 max, __u64 addr)
{
	struct {
		__u64 ptr;
		__u64 len;
	} s = {};
	if (bpf_probe_read_user(&s, sizeof(s), (void *)addr))
		return 0;
	return copy_string(dst, max, s.ptr, s.len);
}

static __always_inline void new_ids(__u64 *trace_id, __u64 *span_id)
{
	if (trace_id) {
		trace_id[0] = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
		trace_id[1] = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
	}
	*span_id = ((__u64)bpf_get_prandom_u32() << 32) | bpf_get_prandom_u32();
	if (!*span_id)
		*span_id = 1; // an all-zero span ID is invalid
}

// fd_of_tcpconn reads the fd behind a *net.TCPConn (net.conn.fd is the
// netFD, whose poll.FD holds the descriptor).
static __always_inline int fd_of_tcpconn(struct go_offsets *o, __u64 tcpconn)
{
	if (!tcpconn)
		return -1;
	__u64 netfd = read_u64(tcpconn + o->netconn_fd);
	if (!netfd)
		return -1;
	__s64 fd = (__s64)read_u64(netfd + o->netfd_pfd + o->pollfd_sysfd);
	return fd >= 0 && fd < (1 << 24) ? (int)fd : -1;
}

// fd_of_conn follows a net.Conn interface's data word to the TCP socket's
// fd, through crypto/tls when tls is set.
static __always_inline int fd_of_conn(struct go_offsets *o, __u64 iface_addr, bool tls)
{
	__u64 data = read_u64(iface_addr + 8);
	if (tls && data)
		data = read_u64(data + o->tls_conn_conn + 8);
	return fd_of_tcpconn(o, data);
}

// The probes copy the head of a struct they read several fields of in one
// read, into the event's data past the packed strings (which is never
// submitted), and take the fields from the copy: a helper call costs about
// 0.09 us on these machines whatever it copies, and filling a request's
// span took fifteen of them.
#define GO_COPY_REQ GO_STRINGS_SPAN
#define GO_COPY_URL (GO_COPY_REQ + GO_COPY_MAX)
#define GO_COPY_RESP (GO_COPY_URL + GO_COPY_MAX)

// copy_head copies span bytes at addr to the event's data at at.
static __always_inline bool copy_head(struct event_buf *b, __u32 at, __u64 addr, __u16 span)
{
	__u32 n = span;
	// The verifier must see the bound on the register passed to the
	// helper: without the mask, clang tests a copy of n and passes the
	// unbounded original.
	asm volatile("" : "+r"(n));
	n &= 2 * GO_COPY_MAX - 1;
	if (!addr || n == 0 || n > GO_COPY_MAX)
		return false;
	return bpf_probe_read_user(b->data + at, n, (void *)addr) == 0;
}

// head_u64 reads the 8 bytes at off in a copied head. The loader made the
// span cover off + 16, so the mask never changes a valid offset: it only
// shows the verifier the read inside data[].
static __always_inline __u64 head_u64(struct event_buf *b, __u32 at, __u32 off)
{
	return *(__u64 *)(b->data + at + (off & (GO_COPY_MAX - 1)));
}

// put_head_string appends the Go string at off in a copied head to the
// event's packed strings, and returns its length.
static __always_inline __u16 put_head_string(struct event_buf *b, __u32 *off, __u32 max, __u32 at, __u32 field)
{
	__u16 n = copy_string((char *)b->data + (*off & (GO_STRINGS_SPAN - 1)), max, head_u64(b, at, field),
			      head_u64(b, at, field + 8));
	*off += n;
	return n;
}

// put_string appends a Go string found at addr to the event's packed
// strings, and returns its length.
static __always_inline __u16 put_string(struct event_buf *b, __u32 *off, __u32 max, __u64 addr)
{
	// Masked so the verifier sees the write inside data[]: off never
	// reaches GO_STRINGS_SPAN (the maxima add up to less).
	__u16 n = read_string((char *)b->data + (*off & (GO_STRINGS_SPAN - 1)), max, addr);
	*off += n;
	return n;
}

// copy_request copies the head of a *http.Request for fill_request, and
// for what an end probe reads of it first.
static __always_inline bool copy_request(struct go_offsets *o, struct event_buf *b, __u64 req)
{
	return copy_head(b, GO_COPY_REQ, req, o->request_span);
}

// fill_request packs what a span needs of the *http.Request whose head
// copy_request copied. A server's Request.TLS says whether its connection
// is TLS; a client's is unset, and its URL's scheme says.
static __always_inline void fill_request(struct go_offsets *o, struct event_buf *b, struct go_span *s, bool client)
{
	__u32 off = sizeof(struct go_span);
	__u64 url = head_u64(b, GO_COPY_REQ, o->request_url);
	bool have_url = copy_head(b, GO_COPY_URL, url, o->url_span);
	s->method_len = put_head_string(b, &off, GO_METHOD_MAX, GO_COPY_REQ, o->request_method);
	if (have_url) {
		s->path_len = put_head_string(b, &off, GO_PATH_MAX, GO_COPY_URL, o->url_path);
		s->query_len = put_head_string(b, &off, GO_QUERY_MAX, GO_COPY_URL, o->url_raw_query);
	}
	if (o->request_pattern != GO_ABSENT)
		s->pattern_len = put_head_string(b, &off, GO_PATTERN_MAX, GO_COPY_REQ, o->request_pattern);
	s->host_len = put_head_string(b, &off, GO_HOST_MAX, GO_COPY_REQ, o->request_host);
	if (!s->host_len && have_url)
		s->host_len = put_head_string(b, &off, GO_HOST_MAX, GO_COPY_URL, o->url_host);
	s->remote_len = put_head_string(b, &off, GO_REMOTE_MAX, GO_COPY_REQ, o->request_remote_addr);
	b->hdr.captured = off;
	s->proto_major = (__u8)head_u64(b, GO_COPY_REQ, o->request_proto_major);
	if (!client) {
		s->tls = head_u64(b, GO_COPY_REQ, o->request_tls) != 0;
		return;
	}
	char scheme[8] = {};
	if (have_url && copy_string(scheme, sizeof(scheme), head_u64(b, GO_COPY_URL, o->url_scheme),
				    head_u64(b, GO_COPY_URL, o->url_scheme + 8)) == 5)
		s->tls = scheme[0] == 'h' && scheme[4] == 's';
}

static __always_inline struct go_span *span_event(struct event_buf **out, __u8 kind, int fd)
{
	struct event_buf *b = new_event(kind, 0, fd, NULL);
	if (!b)
		return NULL;
	b->hdr.captured = sizeof(struct go_span);
	struct go_span *s = (struct go_span *)b->data;
	__builtin_memset(s, 0, sizeof(*s));
	*out = b;
	return s;
}

// ---- server -----------------------------------------------------------------

// hash_byte is a bpf_loop step of FNV-1a over the scratch event's data.
struct hash_walk {
	struct event_buf *b;
	__u32 n;
	__u32 hash;
};

static long hash_byte(__u32 i, void *arg)
{
	struct hash_walk *w = arg;
	if (i >= w->n)
		return 1;
	w->hash = (w->hash ^ w->b->data[i & (GO_STRINGS_SPAN - 1)]) * FNV_PRIME;
	return 0;
}

// served_trace finds the trace the bytes of a served *http.Request named,
// from the record note_served (emit.h) made when they arrived: it hashes
// "METHOD PATH?QUERY" as note_served hashed the request line. A path
// that arrived escaped hashes otherwise, and the request keeps new IDs.
static __always_inline bool served_trace(struct go_offsets *o, __u64 req, __u32 tgid, __u64 trace_id[2])
{
	__u32 cpu = bpf_get_smp_processor_id();
	struct event_buf *b = bpf_map_lookup_elem(&scratch, &cpu);
	if (!b)
		return false;
	__u32 off = 0;
	if (!put_string(b, &off, GO_METHOD_MAX, req + o->request_method))
		return false;
	b->data[off & (GO_STRINGS_SPAN - 1)] = ' ';
	off++;
	__u64 url = read_u64(req + o->request_url);
	if (!url || !put_string(b, &off, GO_PATH_MAX, url + o->url_path))
		return false;
	b->data[off & (GO_STRINGS_SPAN - 1)] = '?';
	off++;
	if (!put_string(b, &off, GO_QUERY_MAX, url + o->url_raw_query))
		off--; // no query: no '?'
	struct hash_walk w = {.b = b, .n = off, .hash = FNV_OFFSET};
	bpf_loop(GO_STRINGS_SPAN, hash_byte, &w, 0);
	struct served_key key = {.tgid = tgid, .hash = w.hash};
	struct served_ctx *v = bpf_map_lookup_elem(&inject_served, &key);
	if (!v || !(v->trace_id[0] | v->trace_id[1]) || bpf_ktime_get_ns() - v->ts > SERVED_FRESH_NS)
		return false;
	trace_id[0] = v->trace_id[0];
	trace_id[1] = v->trace_id[1];
	return true;
}

// server_start opens the span of a request served on this goroutine. With
// injection on, a net/http request (req) continues the trace its
// traceparent named, read in the kernel when its bytes arrived, so that
// the calls it makes inject that trace and not a new one.
static __always_inline int server_start(struct pt_regs *ctx, bool http)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_offsets *o = offsets_of(ctx);
	if (!o || !selected(tgid))
		return 0;
	struct go_key key = {.tgid = tgid, .goid = goid_of(o, GO_G(ctx))};
	struct go_server_state st = {.start_ts = bpf_ktime_get_ns()};
	new_ids(st.ctx.trace_id, &st.ctx.span_id);
	if (cfg_inject && http)
		served_trace(o, GO_ARG4(ctx), tgid, st.ctx.trace_id);
	bpf_map_update_elem(&go_servers, &key, &st, BPF_ANY);
	return 0;
}

// net/http.serverHandler.ServeHTTP(sh, rw ResponseWriter, req *Request):
// every request net/http serves, HTTP/1 and HTTP/2, passes here on the
// goroutine that runs the handler.
SEC("uprobe")
int go_http_server_start(struct pt_regs *ctx)
{
	return server_start(ctx, true);
}

// grpc.(*Server).handleStream: a call served on this goroutine.
SEC("uprobe")
int go_grpc_server_start(struct pt_regs *ctx)
{
	return server_start(ctx, false);
}

// server_end emits a server span; have_req says that the request's head
// is copied (copy_request) into the scratch event it builds.
static __always_inline int server_end(struct pt_regs *ctx, struct go_offsets *o, bool have_req, __u64 status, int fd)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_key key = {.tgid = tgid, .goid = goid_of(o, GO_G(ctx))};
	struct go_server_state *st = bpf_map_lookup_elem(&go_servers, &key);
	if (!st)
		return 0; // not started under our probes (sonde attached mid-request)
	struct event_buf *b;
	struct go_span *s = span_event(&b, EVENT_GO_SERVER, fd);
	if (s) {
		s->start_ts = st->start_ts;
		s->goid = key.goid;
		s->trace_id[0] = st->ctx.trace_id[0];
		s->trace_id[1] = st->ctx.trace_id[1];
		s->span_id = st->ctx.span_id;
		// A status of 0 means the handler wrote nothing: net/http sends 200.
		s->status = status ? (__u32)status : 200;
		if (have_req)
			fill_request(o, b, s, false);
		submit(b);
	}
	bpf_map_delete_elem(&go_servers, &key);
	return 0;
}

// remembered_fd is the fd of the server connection at conn, whose net.Conn
// is at conn_off in it: remembered in memo from the connection's first
// request's end on: following the net.Conn to the descriptor takes three
// dependent reads, ~0.3-0.4 us per request more than the lookup here.
static __always_inline int remembered_fd(void *memo, struct go_offsets *o, __u64 conn, __u32 conn_off, bool tls)
{
	struct go_ptr_key key = {.tgid = bpf_get_current_pid_tgid() >> 32, .ptr = conn};
	__s32 *known = bpf_map_lookup_elem(memo, &key);
	if (known)
		return *known;
	int fd = fd_of_conn(o, conn + conn_off, tls);
	if (fd >= 0)
		bpf_map_update_elem(memo, &key, &fd, BPF_ANY);
	return fd;
}

// forget_fd drops what memo remembers of the connection at conn.
static __always_inline void forget_fd(void *memo, __u64 conn)
{
	struct go_ptr_key key = {.tgid = bpf_get_current_pid_tgid() >> 32, .ptr = conn};
	bpf_map_delete_elem(memo, &key);
}

// net/http.(*conn).serve(c, ctx): a connection starts being served, on its
// own goroutine, before any of its requests. Its conn may sit where a
// closed connection's was: that one's fd is forgotten.
SEC("uprobe")
int go_http_conn_serve(struct pt_regs *ctx)
{
	forget_fd(&go_conn_fds, GO_ARG1(ctx));
	return 0;
}

// net/http.(*response).finishRequest(w): the end of an HTTP/1 request, on
// the goroutine that served it, before the response is flushed.
SEC("uprobe")
int go_server_end_h1(struct pt_regs *ctx)
{
	struct go_offsets *o = offsets_of(ctx);
	// Selected first: every process running this executable hits the
	// probe, and what follows costs an unselected one 0.5-2 us per call
	// (the same in the other end probes).
	if (!o || !current_selected())
		return 0;
	// The scratch event server_end builds, here already for the copies of
	// the response's head and the request's.
	__u32 cpu = bpf_get_smp_processor_id();
	struct event_buf *b = bpf_map_lookup_elem(&scratch, &cpu);
	if (!b || !copy_head(b, GO_COPY_RESP, GO_ARG1(ctx), o->response_span))
		return 0;
	__u64 status = head_u64(b, GO_COPY_RESP, o->response_status);
	bool have_req = copy_request(o, b, head_u64(b, GO_COPY_RESP, o->response_req));
	int fd = -1;
	__u64 conn = head_u64(b, GO_COPY_RESP, o->response_conn);
	if (conn && have_req)
		fd = remembered_fd(&go_conn_fds, o, conn, o->conn_rwc, head_u64(b, GO_COPY_REQ, o->request_tls) != 0);
	return server_end(ctx, o, have_req, status, fd);
}

// net/http.(*http2responseWriter).handlerDone(w): the handler of an HTTP/2
// stream returned, on its goroutine.
SEC("uprobe")
int go_server_end_h2(struct pt_regs *ctx)
{
	struct go_offsets *o = offsets_of(ctx);
	if (!o || !current_selected())
		return 0;
	__u64 rws = read_u64(GO_ARG1(ctx) + o->h2rw_rws);
	if (!rws)
		return 0;
	// The scratch event server_end builds, here already for the copy of
	// the request's head.
	__u32 cpu = bpf_get_smp_processor_id();
	struct event_buf *b = bpf_map_lookup_elem(&scratch, &cpu);
	if (!b)
		return 0;
	bool have_req = copy_request(o, b, read_u64(rws + o->h2rws_req));
	__u64 status = read_u64(rws + o->h2rws_status);
	int fd = -1;
	__u64 sc = read_u64(rws + o->h2rws_conn);
	if (sc && have_req)
		fd = fd_of_conn(o, sc + o->h2sc_conn, head_u64(b, GO_COPY_REQ, o->request_tls) != 0);
	return server_end(ctx, o, have_req, status, fd);
}

// ---- goroutines ---------------------------------------------------------------

// The CALL runtime.runqput in runtime.newproc's system-stack closure: the
// new goroutine (RBX) is about to be queued, and newproc1 has set its
// parentGoid. A goroutine started while a request is served inherits the
// request's context; one started by such a goroutine inherits it in turn.
// An instruction probe on the CALL, not an entry probe on runqput, which
// also runs at every goroutine wakeup.
SEC("uprobe")
int go_goroutine_created(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_offsets *o = offsets_of(ctx);
	if (!o || !selected(tgid))
		return 0;
	__u64 newg = GO_ARG2(ctx);
	struct go_key parent = {.tgid = tgid, .goid = read_u64(newg + o->g_parent_goid)};
	struct go_context *from = NULL;
	struct go_server_state *st = bpf_map_lookup_elem(&go_servers, &parent);
	if (st)
		from = &st->ctx;
	else
		from = bpf_map_lookup_elem(&go_inherited, &parent);
	if (!from)
		return 0;
	struct go_key child = {.tgid = tgid, .goid = goid_of(o, newg)};
	bpf_map_update_elem(&go_inherited, &child, from, BPF_ANY);
	return 0;
}

// ---- client -----------------------------------------------------------------

// call_ids chooses the IDs of a client call made on goroutine key: a
// child of the request the goroutine serves, or of the one it inherited,
// else the root of a new trace.
static __always_inline void call_ids(struct go_key *key, __u64 trace_id[2], __u64 *span_id, __u64 *parent_span_id)
{
	struct go_context *parent = NULL;
	struct go_server_state *st = bpf_map_lookup_elem(&go_servers, key);
	if (st)
		parent = &st->ctx;
	else
		parent = bpf_map_lookup_elem(&go_inherited, key);
	if (!parent) {
		new_ids(trace_id, span_id);
		return;
	}
	trace_id[0] = parent->trace_id[0];
	trace_id[1] = parent->trace_id[1];
	*parent_span_id = parent->span_id;
	new_ids(NULL, span_id);
}

// net/http.(*Transport).roundTrip(t, req): a client request starts, on the
// caller's goroutine. Its parent is the request this goroutine serves, or
// the one it inherited.
SEC("uprobe")
int go_client_start(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_offsets *o = offsets_of(ctx);
	if (!o || !selected(tgid))
		return 0;
	struct go_key key = {.tgid = tgid, .goid = goid_of(o, GO_G(ctx))};
	struct go_client_state cs = {.start_ts = bpf_ktime_get_ns(), .fd = -1};
	call_ids(&key, cs.trace_id, &cs.span_id, &cs.parent_span_id);
	// The caller's *Request lives until roundTrip returns: the span's
	// method and URL are read from it when the response arrives.
	cs.req = GO_ARG2(ctx);
	bpf_map_update_elem(&go_clients, &key, &cs, BPF_ANY);
	return 0;
}

// net/http.(*persistConn).roundTrip(pc, treq): on the caller's goroutine,
// with the *Request the response will point to, which is a copy of the
// caller's when the request has a body.
SEC("uprobe")
int go_client_conn(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_offsets *o = offsets_of(ctx);
	if (!o || !selected(tgid))
		return 0;
	__u64 goid = goid_of(o, GO_G(ctx));
	struct go_ptr_key pk = {.tgid = tgid, .ptr = read_u64(GO_ARG2(ctx) + o->treq_request)};
	bpf_map_update_elem(&go_callers, &pk, &goid, BPF_ANY);
	// The connection the request goes out on: concurrent calls of one
	// method and path meet their own socket views by it. Over TLS this is
	// not the socket, and no socket view comes to meet.
	struct go_key key = {.tgid = tgid, .goid = goid};
	struct go_client_state *cs = bpf_map_lookup_elem(&go_clients, &key);
	if (!cs)
		return 0;
	cs->fd = fd_of_conn(o, GO_ARG1(ctx) + o->pconn_conn, false);
	if (cfg_inject) {
		// The request is written after this, on the connection's write
		// goroutine: the injection there takes these IDs, so that the
		// header names this span.
		__u64 sk = (__u64)tcp_sock_of_fd(bpf_get_current_task_btf(), cs->fd);
		struct inject_ctx ic = {.trace_id = {cs->trace_id[0], cs->trace_id[1]}, .span_id = cs->span_id};
		if (sk)
			bpf_map_update_elem(&inject_ctxs, &sk, &ic, BPF_ANY);
	}
	return 0;
}

// client_end emits a client span. proto is the HTTP major version of the
// exchange: the caller's Request says 1 whatever the Transport negotiates.
static __always_inline int client_end(struct go_offsets *o, __u32 tgid, __u64 goid, __u32 status, __u8 proto)
{
	struct go_key key = {.tgid = tgid, .goid = goid};
	struct go_client_state *cs = bpf_map_lookup_elem(&go_clients, &key);
	if (!cs)
		return 0;
	struct event_buf *b;
	struct go_span *s = span_event(&b, EVENT_GO_CLIENT, cs->fd);
	if (s) {
		s->start_ts = cs->start_ts;
		s->goid = goid;
		s->trace_id[0] = cs->trace_id[0];
		s->trace_id[1] = cs->trace_id[1];
		s->span_id = cs->span_id;
		s->parent_span_id = cs->parent_span_id;
		s->status = status;
		if (copy_request(o, b, cs->req))
			fill_request(o, b, s, true);
		s->proto_major = proto;
		submit(b);
	}
	bpf_map_delete_elem(&go_clients, &key);
	return 0;
}

// The CALL net/http.readTransfer(msg any, r) in net/http.ReadResponse: the
// status line and headers of an HTTP/1 response are parsed, on the
// connection's read goroutine, and msg is the *Response (its data word in
// RBX). Not an entry probe on readTransfer: a server's readRequest calls it
// for every request it reads, and each hit costs that server ~1 us.
SEC("uprobe")
int go_client_end_h1(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_offsets *o = offsets_of(ctx);
	if (!o || !selected(tgid))
		return 0;
	__u64 resp = GO_ARG2(ctx);
	__u64 status = read_u64(resp + o->resp_status_code);
	// 1xx responses other than 101 are followed by the real one.
	if ((status < 200 && status != 101) || status > 999)
		return 0;
	__u64 req = read_u64(resp + o->resp_request);
	struct go_ptr_key pk = {.tgid = tgid, .ptr = req};
	__u64 *goid = bpf_map_lookup_elem(&go_callers, &pk);
	if (!goid)
		return 0;
	__u64 caller = *goid;
	bpf_map_delete_elem(&go_callers, &pk);
	return client_end(o, tgid, caller, (__u32)status, 1);
}

// net/http.(*http2clientStream).writeRequest(cs, req): on the goroutine
// the caller started for the stream; its parentGoid is the caller.
SEC("uprobe")
int go_client_stream(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_offsets *o = offsets_of(ctx);
	if (!o || !selected(tgid))
		return 0;
	__u64 caller = read_u64(GO_G(ctx) + o->g_parent_goid);
	struct go_ptr_key pk = {.tgid = tgid, .ptr = GO_ARG1(ctx)};
	bpf_map_update_elem(&go_callers, &pk, &caller, BPF_ANY);
	return 0;
}

// parse_status reads three ASCII digits.
static __always_inline __u32 parse_status(const char d[3])
{
	__u32 v = 0;
	for (int i = 0; i < 3; i++) {
		if (d[i] < '0' || d[i] > '9')
			return 0;
		v = v * 10 + (d[i] - '0');
	}
	return v;
}

// net/http.(*http2clientConnReadLoop).handleResponse(rl, cs, f): response
// headers of an HTTP/2 stream. :status is the first field (pseudo-headers
// come first, and it is the only one a response has).
SEC("uprobe")
int go_client_end_h2(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_offsets *o = offsets_of(ctx);
	if (!o || !selected(tgid))
		return 0;
	__u64 f = GO_ARG3(ctx);
	__u64 fields = read_u64(f + o->mhf_fields);
	if (!fields)
		return 0;
	// hpack.HeaderField{Name, Value string; Sensitive bool}: Value at 16.
	struct {
		__u64 ptr;
		__u64 len;
	} v = {};
	char digits[3] = {};
	if (bpf_probe_read_user(&v, sizeof(v), (void *)(fields + 16)) || v.len != 3 ||
	    bpf_probe_read_user(digits, 3, (void *)v.ptr))
		return 0;
	__u32 status = parse_status(digits);
	if (status < 200 && status != 101)
		return 0;
	struct go_ptr_key pk = {.tgid = tgid, .ptr = GO_ARG2(ctx)};
	__u64 *goid = bpf_map_lookup_elem(&go_callers, &pk);
	if (!goid)
		return 0;
	__u64 caller = *goid;
	bpf_map_delete_elem(&go_callers, &pk);
	return client_end(o, tgid, caller, status, 2);
}

// ---- grpc-go ----------------------------------------------------------------
//
// A grpc-go server call starts at grpc.(*Server).handleStream, on the
// goroutine that serves it: go_grpc_server_start is attached there too, so the
// call has the same state as an HTTP request and what the handler calls
// descends from it. It ends at transport.(*http2Server).WriteStatus
// (writeStatus from v1.70), which every call's end passes, on that
// goroutine, with the status the client gets.
//
// A client call starts at grpc.newClientStream, which unary (Invoke) and
// streaming (NewStream) calls share, gets its *clientStream at the first
// attempt, and ends at (*clientStream).finish, which runs once a stream is
// done, whichever way: the status is in its error.

#define GO_ARG5(ctx) ((ctx)->si)
#define GO_ARG6(ctx) ((ctx)->r8)

#define GRPC_UNKNOWN 2

// status_code reads the code of a *status.Status; a nil message is OK, as
// status.Code says. Codes beyond the 17 gRPC defines are UNKNOWN.
static __always_inline __u32 status_code(struct go_offsets *o, __u64 st, __u32 if_nil)
{
	if (!st)
		return if_nil;
	__u64 msg = read_u64(st + o->grpc_status_proto);
	if (!msg)
		return if_nil;
	__s32 code = GRPC_UNKNOWN;
	if (bpf_probe_read_user(&code, sizeof(code), (void *)(msg + o->grpc_proto_code)) || code < 0 || code > 16)
		return GRPC_UNKNOWN;
	return (__u32)code;
}

// error_code is the gRPC code of the error clientStream.finish ends a call
// with: nil and io.EOF (a stream that ended well) are OK, a *status.Error
// carries its code, and anything else is UNKNOWN, as status.Code has it.
// The probe cannot see the error's type, so io.EOF is recognized by its
// text, and the status chain is followed only through readable pointers.
static __always_inline __u32 error_code(struct go_offsets *o, __u64 itab, __u64 data)
{
	if (!itab)
		return 0;
	struct {
		__u64 ptr;
		__u64 len;
	} text = {};
	char eof[3] = {};
	if (!bpf_probe_read_user(&text, sizeof(text), (void *)data) && text.len == 3 &&
	    !bpf_probe_read_user(eof, sizeof(eof), (void *)text.ptr) && eof[0] == 'E' && eof[1] == 'O' && eof[2] == 'F')
		return 0;
	return status_code(o, read_u64(data + o->grpc_error_status), GRPC_UNKNOWN);
}

static __always_inline void copy_ids(struct go_span *s, __u64 trace_id[2], __u64 span_id, __u64 parent)
{
	s->trace_id[0] = trace_id[0];
	s->trace_id[1] = trace_id[1];
	s->span_id = span_id;
	s->parent_span_id = parent;
}

// transport.(*http2Server).HandleStreams(t, ...): a connection's transport
// starts reading its streams, before any of them ends.
SEC("uprobe")
int go_grpc_server_conn(struct pt_regs *ctx)
{
	forget_fd(&grpc_conn_fds, GO_ARG1(ctx));
	return 0;
}

// transport.(*http2Server).WriteStatus(t, s, st) / writeStatus(t, s, st).
SEC("uprobe")
int go_grpc_server_end(struct pt_regs *ctx)
{
	struct go_offsets *o = offsets_of(ctx);
	if (!o || !current_selected())
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_key key = {.tgid = tgid, .goid = goid_of(o, GO_G(ctx))};
	struct go_server_state *st = bpf_map_lookup_elem(&go_servers, &key);
	if (!st)
		return 0;
	struct event_buf *b;
	// With TLS credentials the connection is grpc's wrapper, not the
	// *net.TCPConn: the fd read then is not one, and userspace, which
	// sees that connection's bytes as ciphertext, does not wait for a
	// socket twin.
	int fd = remembered_fd(&grpc_conn_fds, o, GO_ARG1(ctx), o->grpc_server_conn, false);
	struct go_span *s = span_event(&b, EVENT_GO_SERVER, fd);
	if (s) {
		s->start_ts = st->start_ts;
		s->goid = key.goid;
		copy_ids(s, st->ctx.trace_id, st->ctx.span_id, 0);
		s->grpc = 1;
		s->proto_major = 2;
		s->status = status_code(o, GO_ARG3(ctx), 0);
		bpf_probe_read_user(&s->stream_id, sizeof(s->stream_id), (void *)(GO_ARG2(ctx) + o->grpc_server_stream_id));
		__u32 off = sizeof(struct go_span);
		s->path_len = put_string(b, &off, GO_PATH_MAX, GO_ARG2(ctx) + o->grpc_stream_method);
		b->hdr.captured = off;
		submit(b);
	}
	bpf_map_delete_elem(&go_servers, &key);
	return 0;
}

// grpc.newClientStream(ctx, desc, cc, method, opts...): ctx takes two
// registers, so cc is the 4th and method the 5th and 6th.
SEC("uprobe")
int go_grpc_client_start(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_offsets *o = offsets_of(ctx);
	if (!o || !selected(tgid))
		return 0;
	struct go_key key = {.tgid = tgid, .goid = goid_of(o, GO_G(ctx))};
	struct grpc_call c = {
		.start_ts = bpf_ktime_get_ns(),
		.goid = key.goid,
		.cc = GO_ARG4(ctx),
		.method_ptr = GO_ARG5(ctx),
		.method_len = GO_ARG6(ctx),
	};
	call_ids(&key, c.trace_id, &c.span_id, &c.parent_span_id);
	bpf_map_update_elem(&grpc_pending, &key, &c, BPF_ANY);
	return 0;
}

// grpc.(*clientStream).newAttemptLocked(cs, isTransparent): the first
// attempt runs inside newClientStream, on the caller's goroutine; retries
// find nothing pending.
SEC("uprobe")
int go_grpc_client_attempt(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_offsets *o = offsets_of(ctx);
	if (!o || !current_selected())
		return 0;
	struct go_key key = {.tgid = tgid, .goid = goid_of(o, GO_G(ctx))};
	struct grpc_call *c = bpf_map_lookup_elem(&grpc_pending, &key);
	if (!c)
		return 0;
	struct go_ptr_key pk = {.tgid = tgid, .ptr = GO_ARG1(ctx)};
	bpf_map_update_elem(&grpc_calls, &pk, c, BPF_ANY);
	bpf_map_delete_elem(&grpc_pending, &key);
	return 0;
}

// grpc.(*clientStream).finish(cs, err): runs at least once per stream, on
// whichever goroutine saw its end; the first run ends the span.
SEC("uprobe")
int go_grpc_client_end(struct pt_regs *ctx)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	struct go_offsets *o = offsets_of(ctx);
	if (!o || !current_selected())
		return 0;
	struct go_ptr_key pk = {.tgid = tgid, .ptr = GO_ARG1(ctx)};
	struct grpc_call *c = bpf_map_lookup_elem(&grpc_calls, &pk);
	if (!c)
		return 0;
	struct event_buf *b;
	struct go_span *s = span_event(&b, EVENT_GO_CLIENT, -1);
	if (s) {
		s->start_ts = c->start_ts;
		s->goid = c->goid;
		copy_ids(s, c->trace_id, c->span_id, c->parent_span_id);
		s->grpc = 1;
		s->proto_major = 2;
		s->status = error_code(o, GO_ARG2(ctx), GO_ARG3(ctx));
		// The attempt's transport stream names the call's HTTP/2 stream,
		// which tells it from other calls of the same method on the
		// connection when it meets its socket view.
		__u64 attempt = read_u64(GO_ARG1(ctx) + o->grpc_cs_attempt);
		__u64 stream = attempt ? read_u64(attempt + o->grpc_attempt_stream) : 0;
		if (stream)
			bpf_probe_read_user(&s->stream_id, sizeof(s->stream_id), (void *)(stream + o->grpc_client_stream_id));
		__u32 off = sizeof(struct go_span);
		s->path_len = copy_string((char *)b->data + (off & (GO_STRINGS_SPAN - 1)), GO_PATH_MAX, c->method_ptr, c->method_len);
		off += s->path_len;
		if (c->cc)
			s->host_len = put_string(b, &off, GO_HOST_MAX, c->cc + o->grpc_cc_authority);
		b->hdr.captured = off;
		submit(b);
	}
	bpf_map_delete_elem(&grpc_calls, &pk);
	return 0;
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
