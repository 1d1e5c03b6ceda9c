package tracer

import (
	"encoding/binary"
	"net"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/tracer/export"
)

// A Go process under uprobes is seen twice: by its probes, whole, and by
// the socket capture, as bytes. One span per exchange is kept, the Go one:
//
//   - Whichever view of an exchange comes first waits for its twin, for at
//     most goHold: for a server, the one on the same connection; for a
//     client, the one with the same method and path in the same process.
//     The Go view usually comes first: its end probes fire before the
//     response is written (server) or its body read (client).
//   - When both are there, the Go span is kept and takes from the socket
//     view what the probes cannot read: the incoming traceparent.
//   - A view whose twin never comes is exported alone when its hold ends:
//     a socket exchange the probes missed (a hijacked connection, a
//     panicking handler). A Go exchange over crypto/tls, whose bytes the
//     socket capture sees encrypted, does not wait at all. Nothing is
//     lost, nothing is doubled.
//   - A Go client span whose parent is a server span of the process waits
//     until that parent is final, so that it gets the parent's final trace
//     ID: the parent learns an incoming traceparent only at its end, and a
//     client call ends before the request that made it.
const (
	goHold      = time.Second
	goChildHold = 30 * time.Second
	goHeldMax   = 65536
	// goRewriteTTL is how long, at least, a final parent's trace ID is
	// kept for a child that ends after it: a goroutine the handler left
	// running. At most twice as long (see rewrites).
	goRewriteTTL = 5 * time.Second
)

// heldView is one view of an exchange waiting for its twin.
type heldView struct {
	span     *export.Span
	tgid     uint32
	fd       int32 // server views: the connection
	method   string
	path     string
	port     int    // client views: the server's port, 0 if unknown
	stream   uint32 // the HTTP/2 stream, when both views know it; 0 if not
	deadline time.Time
}

// heldChild is a Go client span waiting for its parent's end.
type heldChild struct {
	span     *export.Span
	deadline time.Time
}

// rewrites remembers, for every Go server span made final, the trace its
// children get. One is recorded per span, tens of thousands a second under
// load: two generations of a plain map, the older dropped whole, keep that
// to one map insert per span and 24 bytes an entry, where a timestamp per
// entry and a sweep over all of them took twice the memory and a
// twentieth of the event loop.
type rewrites struct {
	cur, prev map[trace.SpanID]trace.TraceID
	since     time.Time // when cur became the current generation
}

func (r *rewrites) put(parent trace.SpanID, traceID trace.TraceID) { r.cur[parent] = traceID }

func (r *rewrites) get(parent trace.SpanID) (trace.TraceID, bool) {
	if id, ok := r.cur[parent]; ok {
		return id, true
	}
	id, ok := r.prev[parent]
	return id, ok
}

// age drops the older generation once the current one is goRewriteTTL old,
// so that every entry lives between goRewriteTTL and twice that; all drops
// both.
func (r *rewrites) age(now time.Time, all bool) {
	switch {
	case all:
		r.cur, r.prev, r.since = make(map[trace.SpanID]trace.TraceID), nil, now
	case now.Sub(r.since) >= goRewriteTTL:
		r.prev, r.since = r.cur, now
		r.cur = make(map[trace.SpanID]trace.TraceID, len(r.prev))
	}
}

func (r *rewrites) len() int { return len(r.cur) + len(r.prev) }

// goState is the tracer's state for merging the two views.
type goState struct {
	sockets  []*heldView                   // socket views, in arrival order
	gos      []*heldView                   // Go views
	children map[trace.SpanID][]*heldChild // by the parent's span ID
	rewrites rewrites                      // parents already final
	held     int                           // children held
}

func (g *goState) init() {
	g.children = make(map[trace.SpanID][]*heldChild)
	g.rewrites.age(time.Now(), true)
}

// goTwinWindow bounds how far apart the starts, or the ends, of two views
// of one exchange can be. The socket view starts at the first byte's
// syscall, the Go view at the handler's (server) or the round trip's
// (client) start, which comes before the client's dial or its wait for a
// pooled connection: under load that can take more than the window, while
// the two views still end within microseconds of each other.
const goTwinWindow = time.Second

// takeTwin removes and returns the oldest view in list that is the twin of
// an exchange: same process, kind, method and path, starts or ends close
// together, and for a server the same connection. After lost events the views of
// other exchanges wait too; none of them may be taken for this one.
//
// A socket view whose headers are unknown (HTTP/2 joined mid-connection,
// HPACK state lost) has no method or path. It is the twin of a Go view of
// the same connection (server) or server port (client) that starts or ends
// with it: the Go view keeps its own method and path, and the socket view
// adds only what the connection says, the same for every exchange on it.
//
// Calls of one method on one HTTP/2 connection differ only by stream: when
// both views know theirs (grpc-go's probes read it), it must be the same.
func takeTwin(list *[]*heldView, s *export.Span, tgid uint32, fd int32, method, path string, port int, stream uint32) *heldView {
	for i, h := range *list {
		if h.tgid != tgid || h.span.Kind != s.Kind {
			continue
		}
		if stream != 0 && h.stream != 0 && stream != h.stream {
			continue
		}
		if unknown := method == "" && path == "" || h.method == "" && h.path == ""; unknown {
			if s.Kind == trace.SpanKindClient && (port == 0 || h.port != port) {
				continue
			}
		} else if h.method != method || !samePath(h.path, path) {
			continue
		}
		if h.fd != fd && (s.Kind == trace.SpanKindServer || h.fd >= 0 && fd >= 0) {
			continue // a client's connection counts when both views know it
		}
		if !within(h.span.Start.Sub(s.Start)) && !within(h.span.End.Sub(s.End)) {
			continue
		}
		*list = append((*list)[:i], (*list)[i+1:]...)
		return h
	}
	return nil
}

func within(d time.Duration) bool { return d <= goTwinWindow && d >= -goTwinWindow }

// samePath compares a path as Go decoded it with the same path, either
// decoded or as it was on the wire.
func samePath(a, b string) bool {
	if a == b {
		return true
	}
	if u, err := url.PathUnescape(a); err == nil && u == b {
		return true
	}
	u, err := url.PathUnescape(b)
	return err == nil && u == a
}

// mergeGo finishes a Go span whose socket twin (nil if none) is known.
func (t *Tracer) mergeGo(g *export.Span, sock *export.Span) {
	if sock != nil {
		t.stats.goMerged.Add(1)
		// The bytes tell what the probes do not read (user agent, query,
		// peer of a client call); the probes' values win where both know.
		// A span has a dozen attributes: scanning them beats building a
		// set, which was most of this function's cost.
		probed := g.Attributes
		missing := func(kv attribute.KeyValue) bool {
			// What the socket view did not know, the probes read.
			return kv.Key != headersUnknownKey &&
				!slices.ContainsFunc(probed, func(have attribute.KeyValue) bool { return have.Key == kv.Key })
		}
		n := 0
		for _, kv := range sock.Attributes {
			if missing(kv) {
				n++
			}
		}
		g.Attributes = slices.Grow(g.Attributes, n) // goSpan left room for a few
		for _, kv := range sock.Attributes {
			if missing(kv) {
				g.Attributes = append(g.Attributes, kv)
			}
		}
		if g.Status == sock.Status && g.StatusDescription == "" {
			g.StatusDescription = sock.StatusDescription // grpc-message
		}
		// The probes end a server span before its response is flushed and
		// a client span once its response headers are parsed; the bytes
		// say when the last one moved.
		if sock.End.After(g.End) {
			g.End = sock.End
		}
		t.adoptInjected(g, sock)
		if g.Kind == trace.SpanKindServer && sock.Parent.IsValid() {
			// The socket saw the incoming traceparent the probes cannot
			// read: the request continues that trace.
			g.TraceID = sock.TraceID
			g.Parent = sock.Parent
		}
	}
	if sock != nil {
		t.moveLink(sock, g)
	}
	if g.Kind == trace.SpanKindServer {
		t.finishServer(g)
		return
	}
	t.settleClient(g)
	t.exportChild(g)
}

// exportChild exports a Go client span, in its parent's final trace when
// the parent is a server span of the process.
func (t *Tracer) exportChild(s *export.Span) {
	if !s.Parent.IsValid() {
		t.finalize(s)
		return
	}
	parent := s.Parent.SpanID()
	if traceID, ok := t.gostate.rewrites.get(parent); ok {
		s.TraceID = traceID
		s.Parent = s.Parent.WithTraceID(traceID)
		t.finalize(s)
		return
	}
	if !t.holdChild(parent, s) {
		t.finalize(s) // bounded: export with the kernel's trace ID
	}
}

// holdChild holds s until the span parent is final; false when the bound
// on held spans is reached.
func (t *Tracer) holdChild(parent trace.SpanID, s *export.Span) bool {
	if t.gostate.held >= goHeldMax {
		return false
	}
	t.gostate.children[parent] = append(t.gostate.children[parent], &heldChild{span: s, deadline: time.Now().Add(goChildHold)})
	t.gostate.held++
	return true
}

var goSpanSize = int(unsafe.Sizeof(gohttpGoSpan{}))

// onGoSpan turns an exchange the Go probes saw into a span.
func (t *Tracer) onGoSpan(e *socketEvent, data []byte) {
	if len(data) < goSpanSize {
		t.stats.badRecords.Add(1)
		return
	}
	// Copied out of the record (the strings below alias it), without
	// encoding/binary's reflection: the C side lays the struct out with no
	// holes, as it does the event header (viewEvent).
	g := *(*gohttpGoSpan)(unsafe.Pointer(&data[0]))
	strs, ok := unpackGoStrings(&g, data[goSpanSize:])
	if !ok {
		t.stats.badRecords.Add(1)
		return
	}
	p := t.process(e.Tgid, e.command())
	var s *export.Span
	method, path := strs.method, strs.path
	if g.Grpc != 0 {
		s = t.goGRPCSpan(e, &g, &strs, p)
		method = "POST" // as its socket view, the HTTP/2 request, has it
		t.stats.goGRPCSpans.Add(1)
	} else {
		s = t.goSpan(e, &g, &strs, p)
	}
	t.stats.goSpans.Add(1)
	fd := e.Fd
	if g.Grpc != 0 && s.Kind == trace.SpanKindClient {
		fd = -1 // grpc-go's client view names its stream instead
	}
	if g.Grpc != 0 && s.Kind == trace.SpanKindServer {
		// The probes cannot tell grpc's TLS connections from plain ones
		// (see go_grpc_server_end); the socket capture can.
		if c := t.conns.get(connKey{tgid: e.Tgid, fd: fd}); c == nil || c.tls {
			t.mergeGo(s, nil)
			return
		}
	}
	if g.Tls != 0 {
		// The socket capture sees ciphertext here (Go's crypto/tls is not
		// OpenSSL): no twin will come, so there is nothing to wait for.
		// HTTP/2 in clear (Go 1.24's unencrypted HTTP/2) has its socket
		// twin from the HTTP/2 parser.
		t.mergeGo(s, nil)
		return
	}
	port := 0
	if s.Kind == trace.SpanKindClient {
		port = intAttr(s, semconv.ServerPortKey)
	}
	if h := takeTwin(&t.gostate.sockets, s, e.Tgid, fd, method, path, port, g.StreamId); h != nil {
		t.mergeGo(s, h.span)
		return
	}
	t.hold(&t.gostate.gos, &heldView{span: s, tgid: e.Tgid, fd: fd, method: method, path: path, port: port, stream: g.StreamId})
}

func intAttr(s *export.Span, k attribute.Key) int {
	for _, kv := range s.Attributes {
		if kv.Key == k {
			return int(kv.Value.AsInt64())
		}
	}
	return 0
}

// onSocketView takes a socket-view span of a Go process under probes: its
// Go twin, when waiting, is finished with it; else it waits for the twin.
func (t *Tracer) onSocketView(c *conn, s *export.Span, method, path string, stream uint32) {
	fd, port := c.key.fd, 0
	if s.Kind == trace.SpanKindClient {
		port = int(c.remote.Port())
		if stream != 0 {
			fd = -1 // HTTP/2: the stream tells calls apart
		}
	}
	if h := takeTwin(&t.gostate.gos, s, c.key.tgid, fd, method, path, port, stream); h != nil {
		t.mergeGo(h.span, s)
		return
	}
	t.hold(&t.gostate.sockets, &heldView{span: s, tgid: c.key.tgid, fd: fd, method: method, path: path, port: port, stream: stream})
}

func (t *Tracer) hold(list *[]*heldView, h *heldView) {
	h.deadline = time.Now().Add(goHold)
	*list = append(*list, h)
	if len(*list) > goHeldMax {
		t.expireHeld(time.Time{}, true)
	}
}

// releaseChildren exports the held client spans of a server span that
// ended, in its final trace.
func (t *Tracer) releaseChildren(parent *export.Span) {
	t.gostate.rewrites.put(parent.SpanID, parent.TraceID)
	children := t.gostate.children[parent.SpanID]
	delete(t.gostate.children, parent.SpanID)
	for _, c := range children {
		if injected(c.span) && c.span.TraceID != parent.TraceID {
			// Its request went out naming its own trace: the receiving
			// side is in that one, so this span stays there too.
			t.stats.injectDetached.Add(1)
			c.span.Parent = trace.SpanContext{}
			t.gostate.held--
			t.finalize(c.span)
			continue
		}
		c.span.TraceID = parent.TraceID
		c.span.Parent = c.span.Parent.WithTraceID(parent.TraceID)
		t.gostate.held--
		t.finalize(c.span) // its own children, in turn
	}
}

// expireHeld exports what waited past its hold: views whose twin never
// came, and client spans whose parent never ended. With all set, everything
// held goes (sonde is exiting, or a bound was hit).
func (t *Tracer) expireHeld(now time.Time, all bool) {
	kept := t.gostate.sockets[:0]
	for _, h := range t.gostate.sockets {
		if all || now.After(h.deadline) {
			t.stats.goSocketOnly.Add(1)
			t.settleSocketView(h.span)
			continue
		}
		kept = append(kept, h)
	}
	clear(t.gostate.sockets[len(kept):])
	t.gostate.sockets = kept
	keptGo := t.gostate.gos[:0]
	for _, h := range t.gostate.gos {
		if all || now.After(h.deadline) {
			t.mergeGo(h.span, nil)
			continue
		}
		keptGo = append(keptGo, h)
	}
	clear(t.gostate.gos[len(keptGo):])
	t.gostate.gos = keptGo
	t.expireLinks(now, all)
	var expired []*export.Span
	for parent, cs := range t.gostate.children {
		keep := cs[:0]
		for _, c := range cs {
			if all || now.After(c.deadline) {
				expired = append(expired, c.span)
				t.gostate.held--
				continue
			}
			keep = append(keep, c)
		}
		if len(keep) == 0 {
			delete(t.gostate.children, parent)
		} else {
			t.gostate.children[parent] = keep
		}
	}
	// Finalized after the walk: each may release children of its own.
	for _, s := range expired {
		t.finalize(s)
	}
	t.gostate.rewrites.age(now, all)
}

func (t *Tracer) exportSpan(s *export.Span) {
	t.opts.Sink.Export(s)
	t.stats.spans.Add(1)
}

// goStrings are the strings packed after a go_span, in their packing order.
type goStrings struct {
	method, path, query, pattern, host, remote string
}

// unpackGoStrings reads the packed strings; ok is false when the lengths
// claim more than the record holds.
func unpackGoStrings(g *gohttpGoSpan, b []byte) (s goStrings, ok bool) {
	for _, f := range []struct {
		dst *string
		n   uint16
	}{
		{&s.method, g.MethodLen}, {&s.path, g.PathLen}, {&s.query, g.QueryLen},
		{&s.pattern, g.PatternLen}, {&s.host, g.HostLen}, {&s.remote, g.RemoteLen},
	} {
		if int(f.n) > len(b) {
			return s, false
		}
		*f.dst, b = string(b[:f.n]), b[f.n:]
	}
	return s, true
}

func u64ID(dst []byte, v uint64) { binary.BigEndian.PutUint64(dst, v) }

// goSpanBase is what every Go probe span has: its times, resource and the
// IDs the kernel chose.
func (t *Tracer) goSpanBase(e *socketEvent, g *gohttpGoSpan, p *process) *export.Span {
	s := &export.Span{
		Start:    t.clock.wall(g.StartTs),
		End:      t.clock.wall(e.Ts),
		Resource: p.resource,
	}
	u64ID(s.TraceID[:8], g.TraceId[0])
	u64ID(s.TraceID[8:], g.TraceId[1])
	u64ID(s.SpanID[:], g.SpanId)
	if g.ParentSpanId != 0 {
		var parent trace.SpanID
		u64ID(parent[:], g.ParentSpanId)
		s.Parent = trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: s.TraceID, SpanID: parent, TraceFlags: trace.FlagsSampled,
		})
	}
	return s
}

// goSpan builds the span of a Go probe event.
func (t *Tracer) goSpan(e *socketEvent, g *gohttpGoSpan, strs *goStrings, p *process) *export.Span {
	s := t.goSpanBase(e, g, p)
	method, path, pattern, host, query := strs.method, strs.path, strs.pattern, strs.host, strs.query
	attrs := make([]attribute.KeyValue, 0, 18) // room for what mergeGo adds
	if knownMethods[method] {
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(method))
		s.Name = method
	} else {
		attrs = append(attrs, semconv.HTTPRequestMethodOther, semconv.HTTPRequestMethodOriginal(method))
		s.Name = "HTTP"
	}
	scheme := "http"
	if g.Tls != 0 {
		scheme = "https"
	}
	version := "1.1"
	if g.ProtoMajor == 2 {
		version = "2"
	}
	attrs = append(attrs, semconv.URLScheme(scheme), semconv.NetworkProtocolVersion(version))
	hostName, port := hostPort(host)
	if e.Kind == eventGoServer {
		s.Kind = trace.SpanKindServer
		if pattern != "" {
			attrs = append(attrs, semconv.HTTPRoute(routeOf(pattern)))
			s.Name += " " + routeOf(pattern)
		}
		attrs = append(attrs, semconv.URLPath(path))
		if query != "" {
			attrs = append(attrs, semconv.URLQuery(redactQuery(query)))
		}
		if hostName != "" {
			attrs = append(attrs, semconv.ServerAddress(hostName))
			if port != 0 {
				attrs = append(attrs, semconv.ServerPort(port))
			}
		}
		remote := strs.remote
		if addr, rport, err := net.SplitHostPort(remote); err == nil {
			attrs = append(attrs, semconv.ClientAddress(addr), semconv.NetworkPeerAddress(addr))
			if n, err := strconv.Atoi(rport); err == nil {
				attrs = append(attrs, semconv.NetworkPeerPort(n))
			}
		}
	} else {
		s.Kind = trace.SpanKindClient
		if port == 0 {
			port = 80
			if g.Tls != 0 {
				port = 443
			}
		}
		attrs = append(attrs,
			semconv.URLFull(goURL(scheme, hostName, port, path, query)),
			semconv.ServerAddress(hostName),
			semconv.ServerPort(port),
		)
	}
	code := int(g.Status)
	attrs = append(attrs, semconv.HTTPResponseStatusCode(code))
	if code >= 500 || (code >= 400 && s.Kind == trace.SpanKindClient) {
		s.Status = codes.Error
		attrs = append(attrs, semconv.ErrorTypeKey.String(strconv.Itoa(code)))
	}
	attrs = append(attrs, attribute.String("sonde.source", "go"))
	s.Attributes = attrs
	return s
}

// goGRPCSpan builds the span of a grpc-go call the probes saw: named
// package.Service/Method, with the RPC conventions the socket view of a
// gRPC call gets (grpcAttrs). Any code but OK fails the span.
func (t *Tracer) goGRPCSpan(e *socketEvent, g *gohttpGoSpan, strs *goStrings, p *process) *export.Span {
	s := t.goSpanBase(e, g, p)
	s.Kind = trace.SpanKindServer
	if e.Kind == eventGoClient {
		s.Kind = trace.SpanKindClient
	}
	method := strings.TrimPrefix(strs.path, "/")
	s.Name = method
	if method == "" {
		s.Name = "grpc"
	}
	attrs := make([]attribute.KeyValue, 0, 12) // room for what mergeGo adds
	attrs = append(attrs, semconv.RPCSystemNameGRPC)
	if method != "" {
		attrs = append(attrs, semconv.RPCMethod(method))
	}
	if s.Kind == trace.SpanKindClient {
		if host, port := hostPort(authorityHost(strs.host)); host != "" {
			attrs = append(attrs, semconv.ServerAddress(host))
			if port == 0 {
				port = 443 // grpc-go's default when the target names no port
			}
			attrs = append(attrs, semconv.ServerPort(port))
		}
	}
	code := int(g.Status)
	name := grpcCodeName(code)
	attrs = append(attrs, semconv.RPCResponseStatusCode(name))
	if code != 0 {
		s.Status = codes.Error
		attrs = append(attrs, semconv.ErrorTypeKey.String(name))
	}
	attrs = append(attrs, attribute.String("sonde.source", "go"))
	s.Attributes = attrs
	return s
}

// authorityHost is the host:port part of a ClientConn's authority, which
// for a unix socket target or a custom resolver may be a path or a name
// with no port.
func authorityHost(a string) string {
	if strings.ContainsAny(a, "/") {
		return ""
	}
	return a
}

// goURL is url.full of a Go client call, with credentials in the query
// redacted.
func goURL(scheme, host string, port int, path, query string) string {
	u := scheme + "://" + net.JoinHostPort(host, strconv.Itoa(port))
	if (scheme == "http" && port == 80) || (scheme == "https" && port == 443) {
		u = scheme + "://" + host
	}
	u += path
	if query != "" {
		u += "?" + redactQuery(query)
	}
	return u
}

// routeOf is the path part of a Go 1.22 ServeMux pattern, which may start
// with a method and a host: "GET example.com/items/{id}" is /items/{id}.
func routeOf(pattern string) string {
	for i := 0; i < len(pattern); i++ {
		if pattern[i] == '/' {
			return pattern[i:]
		}
	}
	return pattern
}
