package tracer

import (
	"encoding/binary"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/tracer/export"
)

func injectRecord(traceHi, traceLo, span uint64, request, seq uint32, fromGo bool) []byte {
	b := make([]byte, injectInfoSize)
	binary.LittleEndian.PutUint64(b[0:], traceHi)
	binary.LittleEndian.PutUint64(b[8:], traceLo)
	binary.LittleEndian.PutUint64(b[16:], span)
	binary.LittleEndian.PutUint32(b[24:], request)
	binary.LittleEndian.PutUint32(b[28:], seq)
	if fromGo {
		b[32] = 1
	}
	return b
}

// A client span takes the IDs written into its own request, by ordinal,
// and the request's sequence number on the wire; other requests' IDs stay
// for their spans, and what no span took is counted when the connection
// goes.
func TestTakeInjected(t *testing.T) {
	tr := &Tracer{inject: &injector{pending: map[uint64][]injectInfo{}}}
	c := &conn{sock: 0xffff0001}
	tr.onInject(&socketEvent{Sock: c.sock}, injectRecord(0x0af7651916cd43dd, 0x8448eb211c80319c, 0xb7ad6b7169203331, 1, 1000, false))
	tr.onInject(&socketEvent{Sock: c.sock}, injectRecord(1, 2, 3, 2, 2000, false))
	tr.onInject(&socketEvent{Sock: c.sock}, injectRecord(4, 5, 6, 3, 3000, true))

	s := &export.Span{Kind: trace.SpanKindClient, Attributes: []attribute.KeyValue{attribute.Int64(attrRequestSeq, 1070)}}
	if !tr.takeInjected(c, s, 2) {
		t.Fatal("request 2's span took no IDs")
	}
	if s.TraceID.String() != "00000000000000010000000000000002" || s.SpanID.String() != "0000000000000003" {
		t.Errorf("request 2 got trace %s span %s", s.TraceID, s.SpanID)
	}
	if !injected(s) || s.Attributes[0].Value.AsInt64() != 2000 {
		t.Errorf("attributes: %v", s.Attributes)
	}
	first := &export.Span{Kind: trace.SpanKindClient}
	if !tr.takeInjected(c, first, 1) || first.TraceID.String() != "0af7651916cd43dd8448eb211c80319c" || first.SpanID.String() != "b7ad6b7169203331" {
		t.Errorf("request 1 got trace %s span %s: the header said 0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", first.TraceID, first.SpanID)
	}
	if tr.takeInjected(c, &export.Span{Kind: trace.SpanKindClient}, 2) {
		t.Error("request 2's IDs were taken twice")
	}
	if tr.takeInjected(c, &export.Span{Kind: trace.SpanKindServer}, 3) {
		t.Error("a server span took a client request's IDs")
	}
	tr.forgetInjections(c)
	if got := tr.stats.injectUnmatched.Load(); got != 1 {
		t.Errorf("unmatched = %d, want 1 (request 3)", got)
	}
	if len(tr.inject.pending) != 0 {
		t.Errorf("pending left: %v", tr.inject.pending)
	}
}

// The backlog per connection and the number of connections are bounded.
func TestInjectBounds(t *testing.T) {
	tr := &Tracer{inject: &injector{pending: map[uint64][]injectInfo{}}}
	for i := range injectBacklog + 10 {
		tr.onInject(&socketEvent{Sock: 1}, injectRecord(1, 1, 1, uint32(i+1), 0, false))
	}
	if n := len(tr.inject.pending[1]); n != injectBacklog {
		t.Errorf("backlog %d, want %d", n, injectBacklog)
	}
	for i := range injectConns + 5 {
		tr.onInject(&socketEvent{Sock: uint64(i + 2)}, injectRecord(1, 1, 1, 1, 0, false))
	}
	if n := len(tr.inject.pending); n > injectConns {
		t.Errorf("%d connections remembered, want at most %d", n, injectConns)
	}
	if tr.stats.injectUnmatched.Load() == 0 {
		t.Error("dropped injections were not counted")
	}
	tr.onInject(&socketEvent{Sock: 1}, []byte{1, 2, 3})
	if tr.stats.badRecords.Load() != 1 {
		t.Error("a short record was not counted as bad")
	}
}

// adoptInjected: a Go client span whose request carried other IDs than its
// own takes them, and leaves a parent of another trace.
func TestAdoptInjected(t *testing.T) {
	tr := &Tracer{}
	sock := &export.Span{Kind: trace.SpanKindClient, TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2},
		Attributes: []attribute.KeyValue{attribute.Bool(attrInjected, true)}}
	same := &export.Span{Kind: trace.SpanKindClient, TraceID: trace.TraceID{1}, SpanID: trace.SpanID{2}}
	same.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{1}, SpanID: trace.SpanID{9}})
	tr.adoptInjected(same, sock)
	if !same.Parent.IsValid() || tr.stats.injectDetached.Load() != 0 {
		t.Error("a span with its own IDs on the wire lost its parent")
	}
	other := &export.Span{Kind: trace.SpanKindClient, TraceID: trace.TraceID{7}, SpanID: trace.SpanID{8}}
	other.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: trace.TraceID{7}, SpanID: trace.SpanID{9}})
	tr.adoptInjected(other, sock)
	if other.TraceID != sock.TraceID || other.SpanID != sock.SpanID || other.Parent.IsValid() || tr.stats.injectDetached.Load() != 1 {
		t.Errorf("got %v %v parent %v detached %d", other.TraceID, other.SpanID, other.Parent, tr.stats.injectDetached.Load())
	}
}

// A proxy without probes serves a request with no traceparent and forwards
// it to another host, with a header the kernel wrote: the served request
// joins the trace the forwarded one named, so that the tree holds on both
// hosts. A served request that continues another trace keeps it, and the
// forwarded call stays in the trace on the wire, counted as detached.
func TestInjectThroughAProxy(t *testing.T) {
	for _, incoming := range []bool{false, true} {
		fp := newFakeProc(t)
		fp.exe(9, "/usr/sbin/nginx")
		tr, sink := handTracer(t, fp, 16)
		tr.inject = &injector{pending: map[uint64][]injectInfo{}}
		front := sock{tgid: 9, fd: 5, id: 2, local: "127.0.0.1:80", remote: "127.0.0.1:40000", comm: "nginx"}
		up := sock{tgid: 9, fd: 6, id: 3, local: "10.0.0.1:41000", remote: "10.0.0.2:8080", comm: "nginx"}
		front.open(t, tr, eventAccept)
		up.open(t, tr, eventConnect)
		req := "GET /items HTTP/1.1\r\nHost: shop\r\n\r\n"
		served := req
		if incoming {
			served = "GET /items HTTP/1.1\r\nHost: shop\r\ntraceparent: 00-11111111111111111111111111111111-2222222222222222-01\r\n\r\n"
		}
		const resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
		front.data(t, tr, dirIngress, 1_000, served, 0)
		tr.onInject(&socketEvent{Sock: up.id}, injectRecord(0xaaaa, 0xbbbb, 0xcccc, 1, 0, false))
		up.data(t, tr, dirEgress, 1_100, req, 0)
		up.data(t, tr, dirIngress, 1_500, resp, 0)
		front.data(t, tr, dirEgress, 1_600, resp, 0)
		tr.expireHeld(time.Now().Add(time.Minute), true)
		tr.expireProxied(time.Now().Add(time.Minute), true)
		if len(sink.spans) != 2 {
			t.Fatalf("incoming=%v: %d spans, want 2", incoming, len(sink.spans))
		}
		var srv, cli *export.Span
		for _, s := range sink.spans {
			if s.Kind == trace.SpanKindServer {
				srv = s
			} else {
				cli = s
			}
		}
		if cli.TraceID.String() != "000000000000aaaa000000000000bbbb" || cli.SpanID.String() != "000000000000cccc" {
			t.Errorf("incoming=%v: the call is not in the trace on the wire: %s %s", incoming, cli.TraceID, cli.SpanID)
		}
		if !incoming {
			if srv.TraceID != cli.TraceID || cli.Parent.SpanID() != srv.SpanID || tr.stats.injectDetached.Load() != 0 {
				t.Errorf("the served request did not take its forwarded call's trace: server %s, call's parent %s", srv.TraceID, cli.Parent.SpanID())
			}
		} else if srv.TraceID.String() != "11111111111111111111111111111111" || cli.Parent.IsValid() || tr.stats.injectDetached.Load() != 1 {
			t.Errorf("incoming: server %s, call parent %v, detached %d", srv.TraceID, cli.Parent, tr.stats.injectDetached.Load())
		}
	}
}

// The same through a proxy whose client on the host is traced too, on a
// connection no header can go into: the client's span, a root, joins the
// trace the forwarded request named, so the tree is one on both hosts.
func TestInjectLinkedClientJoinsTheWireTrace(t *testing.T) {
	// Over TLS the client's view may complete before the server's: the
	// client span is held for it.
	for _, clientFirst := range []bool{false, true} {
		linkedClientJoins(t, clientFirst)
	}
}

func linkedClientJoins(t *testing.T, clientFirst bool) {
	fp := newFakeProc(t)
	fp.exe(7, "/usr/bin/curl")
	fp.exe(9, "/usr/sbin/nginx")
	tr, sink := handTracer(t, fp, 16)
	tr.inject = &injector{pending: map[uint64][]injectInfo{}}
	curl := sock{tgid: 7, fd: 3, id: 1, local: "127.0.0.1:40000", remote: "127.0.0.1:80", comm: "curl"}
	front := sock{tgid: 9, fd: 5, id: 2, local: "127.0.0.1:80", remote: "127.0.0.1:40000", comm: "nginx"}
	up := sock{tgid: 9, fd: 6, id: 3, local: "10.0.0.1:41000", remote: "10.0.0.2:8080", comm: "nginx"}
	curl.open(t, tr, eventConnect)
	front.open(t, tr, eventAccept)
	up.open(t, tr, eventConnect)
	const req = "GET /items HTTP/1.1\r\nHost: shop\r\n\r\n"
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	curl.data(t, tr, dirEgress, 1_000, req, 0)
	front.data(t, tr, dirIngress, 1_010, req, 0)
	tr.onInject(&socketEvent{Sock: up.id}, injectRecord(0xaaaa, 0xbbbb, 0xcccc, 1, 0, false))
	up.data(t, tr, dirEgress, 1_100, req, 0)
	up.data(t, tr, dirIngress, 1_500, resp, 0)
	if clientFirst {
		curl.data(t, tr, dirIngress, 1_610, resp, 0)
		if len(sink.spans) != 0 {
			t.Fatalf("clientFirst: %d spans exported before the server's view completed", len(sink.spans))
		}
		front.data(t, tr, dirEgress, 1_600, resp, 0)
	} else {
		front.data(t, tr, dirEgress, 1_600, resp, 0)
		curl.data(t, tr, dirIngress, 1_610, resp, 0)
	}
	if len(sink.spans) != 3 {
		t.Fatalf("clientFirst=%v: %d spans exported once both views completed, want 3", clientFirst, len(sink.spans))
	}
	tr.expireHeld(time.Now().Add(time.Minute), true)
	tr.expireProxied(time.Now().Add(time.Minute), true)
	if len(sink.spans) != 3 {
		t.Fatalf("%d spans, want 3", len(sink.spans))
	}
	byID := map[trace.SpanID]*export.Span{}
	for _, s := range sink.spans {
		byID[s.SpanID] = s
		if s.TraceID.String() != "000000000000aaaa000000000000bbbb" {
			t.Errorf("%v span %s in trace %s, want the one on the wire", s.Kind, s.Name, s.TraceID)
		}
	}
	call := byID[trace.SpanID{0, 0, 0, 0, 0, 0, 0xcc, 0xcc}]
	if call == nil {
		t.Fatal("no span with the injected ID")
	}
	served := byID[call.Parent.SpanID()]
	if served == nil || served.Kind != trace.SpanKindServer {
		t.Fatal("the forwarded call is not the served request's child")
	}
	client := byID[served.Parent.SpanID()]
	if client == nil || client.Kind != trace.SpanKindClient || client.Parent.IsValid() {
		t.Fatal("the served request is not the child of curl's call, a root")
	}
	if tr.stats.injectDetached.Load() != 0 {
		t.Errorf("detached %d", tr.stats.injectDetached.Load())
	}
}
