package tracer

import (
	"bytes"
	"encoding/binary"
	"log/slog"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/tracer/export"
)

// goTracer is a hand-built tracer whose process 7 runs under Go probes.
func goTracer(t *testing.T) (*Tracer, *collectSink) {
	t.Helper()
	tr, sink := handTracer(t, newFakeProc(t), 16)
	tr.gostate.init()
	tr.goProbes = newGoProbes(nil, slog.New(slog.DiscardHandler), &tr.stats.attachFailures)
	t.Cleanup(tr.goProbes.close)
	tr.goProbes.byPID[7] = &goBinary{pids: map[uint32]bool{7: true}}
	return tr, sink
}

type goEvent struct {
	kind                                       uint8
	fd                                         int32
	start, end                                 uint64
	trace                                      [2]uint64
	span, parent                               uint64
	status                                     uint32
	method, path, query, pattern, host, remote string
	grpc                                       bool
}

// send encodes a Go probe event as the kernel does: header, go_span, then
// the packed strings.
func (g goEvent) send(t *testing.T, tr *Tracer) {
	t.Helper()
	gs := gohttpGoSpan{
		StartTs: g.start, TraceId: g.trace, SpanId: g.span, ParentSpanId: g.parent, Status: g.status,
		MethodLen: uint16(len(g.method)), PathLen: uint16(len(g.path)), QueryLen: uint16(len(g.query)),
		PatternLen: uint16(len(g.pattern)), HostLen: uint16(len(g.host)), RemoteLen: uint16(len(g.remote)),
		ProtoMajor: 1,
	}
	if g.grpc {
		gs.Grpc, gs.ProtoMajor = 1, 2
	}
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, &gs); err != nil {
		t.Fatal(err)
	}
	b.WriteString(g.method + g.path + g.query + g.pattern + g.host + g.remote)
	e := &socketEvent{Kind: g.kind, Tgid: 7, Tid: 7, Fd: g.fd, Ts: g.end, Captured: uint32(b.Len())}
	setComm(e, "svc")
	tr.handle(encodeEvent(t, e, b.Bytes()))
}

const tracedGetRequest = "GET /orders?id=1 HTTP/1.1\r\nHost: shop.local:8080\r\n" +
	"traceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"

// The Go view and the socket view of one request make one span: the Go
// one, continuing the traceparent only the socket saw, whichever comes
// first; and its client call, ended before it, joins that trace.
func TestGoAndSocketViewsMerge(t *testing.T) {
	for _, goFirst := range []bool{true, false} {
		tr, sink := goTracer(t)
		srv := sock{tgid: 7, fd: 5, id: 1, local: "127.0.0.1:8080", remote: "127.0.0.1:5000", comm: "svc"}
		srv.open(t, tr, eventAccept)
		child := goEvent{kind: eventGoClient, fd: -1, start: 1_200, end: 1_800, trace: [2]uint64{1, 2}, span: 0x22, parent: 0x11,
			status: 200, method: "GET", path: "/stock", host: "inventory:9000"}
		child.send(t, tr) // a client call ends before its request
		server := goEvent{kind: eventGoServer, fd: 5, start: 1_100, end: 2_000, trace: [2]uint64{1, 2}, span: 0x11,
			status: 200, method: "GET", path: "/orders", query: "id=1", pattern: "GET /orders", host: "shop.local:8080", remote: "127.0.0.1:5000"}
		if goFirst {
			server.send(t, tr)
		}
		srv.data(t, tr, dirIngress, 1_000, tracedGetRequest, 0)
		srv.data(t, tr, dirEgress, 2_500, okResponse, 0)
		if !goFirst {
			server.send(t, tr)
		}
		// The client call waits for its own socket view, which this test
		// does not send, until its hold ends.
		tr.expireHeld(time.Now().Add(goHold+time.Second), false)
		if len(sink.spans) != 2 {
			t.Fatalf("goFirst=%v: %d spans, want the server and its client call: %+v", goFirst, len(sink.spans), *sink.spans[0])
		}
		s, c := sink.spans[0], sink.spans[1]
		if s.Kind != trace.SpanKindServer {
			s, c = c, s
		}
		if s.TraceID.String() != "0af7651916cd43dd8448eb211c80319c" || s.Parent.SpanID().String() != "b7ad6b7169203331" {
			t.Errorf("goFirst=%v: server span did not continue the incoming trace: %v parent %v", goFirst, s.TraceID, s.Parent.SpanID())
		}
		if s.Name != "GET /orders" || c.TraceID != s.TraceID || c.Parent.SpanID() != s.SpanID {
			t.Errorf("goFirst=%v: server %q %v/%v, client %v parent %v", goFirst, s.Name, s.TraceID, s.SpanID, c.TraceID, c.Parent.SpanID())
		}
		if st := tr.Stats(); st.Spans != 2 {
			t.Errorf("goFirst=%v: Spans = %d", goFirst, st.Spans)
		}
	}
}

// A view whose twin never comes is exported alone when its hold ends: a
// socket exchange the probes missed, a Go exchange the socket could not
// parse. And views of other exchanges are never taken for twins.
func TestGoViewsAloneAfterHold(t *testing.T) {
	tr, sink := goTracer(t)
	srv := sock{tgid: 7, fd: 5, id: 1, local: "127.0.0.1:8080", remote: "127.0.0.1:5000", comm: "svc"}
	srv.open(t, tr, eventAccept)
	srv.data(t, tr, dirIngress, 1_000, getRequest, 0)
	srv.data(t, tr, dirEgress, 2_000, okResponse, 0)
	// Same connection, another path: not a twin.
	goEvent{kind: eventGoServer, fd: 5, start: 3_000, end: 4_000, trace: [2]uint64{3, 4}, span: 0x33,
		status: 204, method: "DELETE", path: "/orders/1"}.send(t, tr)
	if len(sink.spans) != 0 {
		t.Fatalf("exported before the hold ended: %v", sink.spans)
	}
	tr.expireHeld(time.Now().Add(goHold+time.Second), false)
	if len(sink.spans) != 2 {
		t.Fatalf("%d spans after the hold, want both views alone", len(sink.spans))
	}
	names := map[string]bool{sink.spans[0].Name: true, sink.spans[1].Name: true}
	if !names["GET"] || !names["DELETE"] {
		t.Errorf("spans %q %q", sink.spans[0].Name, sink.spans[1].Name)
	}
	if st := tr.Stats(); st.Spans != 2 {
		t.Errorf("Spans = %d", st.Spans)
	}
}

// A record whose string lengths pass its end is counted, not read.
func TestGoSpanBadRecord(t *testing.T) {
	tr, sink := goTracer(t)
	gs := gohttpGoSpan{PathLen: 500}
	var b bytes.Buffer
	binary.Write(&b, binary.NativeEndian, &gs)
	b.WriteString("short")
	e := &socketEvent{Kind: eventGoServer, Tgid: 7, Captured: uint32(b.Len())}
	tr.handle(encodeEvent(t, e, b.Bytes()))
	if len(sink.spans) != 0 || tr.Stats().BadRecords != 1 {
		t.Errorf("spans %d, bad records %d", len(sink.spans), tr.Stats().BadRecords)
	}
}

// Over TLS or HTTP/2 the socket capture cannot parse the exchange: the Go
// view does not wait for a twin.
func TestGoViewOverTLSNotHeld(t *testing.T) {
	tr, sink := goTracer(t)
	gs := gohttpGoSpan{StartTs: 1, SpanId: 9, Status: 200, MethodLen: 3, PathLen: 1, ProtoMajor: 2, Tls: 1}
	var b bytes.Buffer
	binary.Write(&b, binary.NativeEndian, &gs)
	b.WriteString("GET/")
	e := &socketEvent{Kind: eventGoServer, Tgid: 7, Fd: 5, Ts: 2, Captured: uint32(b.Len())}
	tr.handle(encodeEvent(t, e, b.Bytes()))
	if len(sink.spans) != 1 || len(tr.gostate.gos) != 0 {
		t.Fatalf("%d spans exported, %d views held", len(sink.spans), len(tr.gostate.gos))
	}
	if s := sink.spans[0]; s.Name != "GET" || s.Kind != trace.SpanKindServer {
		t.Errorf("span %q %v", s.Name, s.Kind)
	}
}

// A Go client call that waited long for its connection (a dial under load)
// starts far before its socket view, yet both end together: one span.
func TestGoClientViewsMergeByEnd(t *testing.T) {
	tr, sink := goTracer(t)
	cl := sock{tgid: 7, fd: 9, id: 2, local: "127.0.0.1:5001", remote: "127.0.0.1:9000", comm: "svc"}
	cl.open(t, tr, eventConnect)
	const second = uint64(time.Second)
	goView := goEvent{kind: eventGoClient, fd: -1, start: 1_000, end: 1_000 + 2*second, trace: [2]uint64{3, 4}, span: 0x33,
		status: 200, method: "GET", path: "/stock", host: "127.0.0.1:9000"}
	cl.data(t, tr, dirEgress, 1_000+3*second/2, "GET /stock HTTP/1.1\r\nHost: 127.0.0.1:9000\r\nUser-Agent: Go-http-client/1.1\r\n\r\n", 0)
	cl.data(t, tr, dirIngress, 1_000+2*second-50_000, okResponse, 0)
	goView.send(t, tr)
	tr.expireHeld(time.Now().Add(goHold+time.Second), false)
	if len(sink.spans) != 1 {
		t.Fatalf("%d spans, want one merged client span", len(sink.spans))
	}
	if a := spanAttrs(t, sink.spans[0]); a["user_agent.original"].AsString() != "Go-http-client/1.1" {
		t.Errorf("the socket view's attributes did not merge: %v", sink.spans[0].Attributes)
	}
	if st := tr.Stats(); st.GoMerged != 1 || st.GoSocketOnly != 0 {
		t.Errorf("merged %d, socket-only %d; want 1 and 0", st.GoMerged, st.GoSocketOnly)
	}
}

func attrOf(s *export.Span, k string) string {
	for _, kv := range s.Attributes {
		if string(kv.Key) == k {
			return kv.Value.Emit()
		}
	}
	return ""
}

// A grpc-go call the probes saw is an RPC span named by its method, with
// its code; a server call on a connection the socket capture has not seen
// (or sees as TLS) waits for no twin, and a client call names its server
// from the ClientConn's authority.
func TestGoGRPCSpans(t *testing.T) {
	tr, sink := goTracer(t)
	goEvent{kind: eventGoServer, fd: 9, start: 1_000, end: 2_000, trace: [2]uint64{3, 4}, span: 0x31,
		status: 5, path: "/shop.Stock/Get", grpc: true}.send(t, tr)
	if len(sink.spans) != 1 {
		t.Fatalf("server call on an unseen connection: %d spans, want 1 at once", len(sink.spans))
	}
	srv := sink.spans[0]
	if srv.Name != "shop.Stock/Get" || srv.Kind != trace.SpanKindServer || srv.Status != codes.Error ||
		attrOf(srv, "rpc.system.name") != "grpc" || attrOf(srv, "rpc.method") != "shop.Stock/Get" ||
		attrOf(srv, "rpc.response.status_code") != "NOT_FOUND" || attrOf(srv, "error.type") != "NOT_FOUND" {
		t.Errorf("server span: %+v", srv)
	}
	goEvent{kind: eventGoClient, fd: -1, start: 1_100, end: 1_900, trace: [2]uint64{3, 4}, span: 0x32, parent: 0x31,
		status: 0, path: "/shop.Price/Quote", host: "price.internal:50051", grpc: true}.send(t, tr)
	goEvent{kind: eventGoClient, fd: -1, start: 1_100, end: 1_900, trace: [2]uint64{5, 6}, span: 0x33,
		status: 0, path: "/a.B/C", host: "/run/app.sock", grpc: true}.send(t, tr)
	tr.expireHeld(time.Now().Add(goChildHold+time.Second), true)
	if len(sink.spans) != 3 {
		t.Fatalf("%d spans, want 3", len(sink.spans))
	}
	for _, sp := range sink.spans[1:] {
		switch sp.Name {
		case "shop.Price/Quote":
			if sp.Kind != trace.SpanKindClient || sp.Status == codes.Error || sp.Parent.SpanID() != srv.SpanID ||
				attrOf(sp, "server.address") != "price.internal" || attrOf(sp, "server.port") != "50051" ||
				attrOf(sp, "rpc.response.status_code") != "OK" {
				t.Errorf("client span: %+v", sp)
			}
		case "a.B/C":
			if attrOf(sp, "server.address") != "" {
				t.Errorf("a unix socket authority is no server.address: %+v", sp)
			}
		default:
			t.Errorf("span %q", sp.Name)
		}
	}
}

// A socket view whose HTTP/2 headers are unknown (no method, no path) is
// the twin of the Go view of the same connection (server) or server port
// (client) that starts or ends with it, and of no other.
func TestTakeTwinHeadersUnknown(t *testing.T) {
	at := func(kind trace.SpanKind, start int) *export.Span {
		base := time.Unix(1000, 0)
		return &export.Span{Kind: kind, Start: base.Add(time.Duration(start) * time.Millisecond), End: base.Add(time.Duration(start+5) * time.Millisecond)}
	}
	goViews := []*heldView{
		{span: at(trace.SpanKindServer, 0), tgid: 7, fd: 4, method: "POST", path: "/a.B/C"},
		{span: at(trace.SpanKindServer, 0), tgid: 7, fd: 5, method: "POST", path: "/a.B/D"},
		{span: at(trace.SpanKindClient, 0), tgid: 7, fd: -1, method: "POST", path: "/a.B/E", port: 9000},
		{span: at(trace.SpanKindClient, 0), tgid: 7, fd: -1, method: "POST", path: "/a.B/F", port: 9001},
	}
	list := append([]*heldView(nil), goViews...)
	if h := takeTwin(&list, at(trace.SpanKindServer, 1), 7, 5, "", "", 0, 0); h != goViews[1] {
		t.Errorf("server: took %+v, want the view on fd 5", h)
	}
	if h := takeTwin(&list, at(trace.SpanKindClient, 1), 7, -1, "", "", 9001, 0); h != goViews[3] {
		t.Errorf("client: took %+v, want the view of port 9001", h)
	}
	if h := takeTwin(&list, at(trace.SpanKindClient, 1), 7, -1, "", "", 0, 0); h != nil {
		t.Errorf("client of an unknown port: took %+v", h)
	}
	if h := takeTwin(&list, at(trace.SpanKindServer, 5000), 7, 4, "", "", 0, 0); h != nil {
		t.Errorf("server view seconds apart: took %+v", h)
	}
	if h := takeTwin(&list, at(trace.SpanKindServer, 1), 8, 4, "", "", 0, 0); h != nil {
		t.Errorf("another process: took %+v", h)
	}
	if len(list) != 2 {
		t.Errorf("%d views left, want 2", len(list))
	}
}

// Concurrent calls of one method on one HTTP/2 connection: each Go view
// takes the socket view of its own stream, whatever order they come in.
func TestTakeTwinByStream(t *testing.T) {
	base := time.Unix(1000, 0)
	view := func(stream uint32) *heldView {
		return &heldView{span: &export.Span{Kind: trace.SpanKindServer, Start: base, End: base.Add(time.Millisecond)},
			tgid: 7, fd: 4, method: "POST", path: "/a.B/C", stream: stream}
	}
	list := []*heldView{view(1), view(3), view(5)}
	probe := &export.Span{Kind: trace.SpanKindServer, Start: base, End: base.Add(time.Millisecond)}
	if h := takeTwin(&list, probe, 7, 4, "POST", "/a.B/C", 0, 3); h == nil || h.stream != 3 {
		t.Errorf("stream 3 took %+v", h)
	}
	if h := takeTwin(&list, probe, 7, 4, "POST", "/a.B/C", 0, 9); h != nil {
		t.Errorf("stream 9 took %+v", h)
	}
	if h := takeTwin(&list, probe, 7, 4, "POST", "/a.B/C", 0, 0); h == nil || h.stream != 1 {
		t.Errorf("a view with no stream took %+v, want the oldest", h)
	}
}

// A final parent's trace is kept for a late child at least goRewriteTTL and
// at most twice that, however the ageing ticks fall.
func TestRewritesAge(t *testing.T) {
	var r rewrites
	t0 := time.Unix(1000, 0)
	r.age(t0, true)
	parent, traceID := trace.SpanID{1}, trace.TraceID{2}
	r.put(parent, traceID)
	for step := time.Duration(0); step < 2*goRewriteTTL; step += goRewriteTTL / 10 {
		r.age(t0.Add(step), false)
		got, ok := r.get(parent)
		if step < goRewriteTTL && (!ok || got != traceID) {
			t.Fatalf("gone after %v, want kept at least %v", step, goRewriteTTL)
		}
	}
	r.age(t0.Add(2*goRewriteTTL), false)
	if _, ok := r.get(parent); ok {
		t.Fatalf("kept after %v", 2*goRewriteTTL)
	}
	r.put(parent, traceID)
	r.age(t0, true)
	if r.len() != 0 {
		t.Fatalf("%d entries after dropping all", r.len())
	}
}
