package tracer

import (
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/tracer/export"
)

// linkPair is a connection between two traced processes: 7 the client, 8
// the server.
func linkPair(t *testing.T) (tr *Tracer, sink *collectSink, client, server sock) {
	fp := newFakeProc(t)
	fp.exe(7, "/usr/bin/curl")
	fp.exe(8, "/srv/api")
	tr, sink = handTracer(t, fp, 16)
	client = sock{tgid: 7, fd: 3, id: 1, local: "127.0.0.1:40000", remote: "127.0.0.1:8080", comm: "curl"}
	server = sock{tgid: 8, fd: 5, id: 2, local: "127.0.0.1:8080", remote: "127.0.0.1:40000", comm: "api"}
	client.open(t, tr, eventConnect)
	server.open(t, tr, eventAccept)
	return tr, sink, client, server
}

func spansOf(sink *collectSink, kind trace.SpanKind) []*export.Span {
	var out []*export.Span
	for _, s := range sink.spans {
		if s.Kind == kind {
			out = append(out, s)
		}
	}
	return out
}

// Two exchanges on one keep-alive connection, the second pipelined: each
// server span is the child of its own client span, in its trace.
func TestLinkKeepAliveAndPipelining(t *testing.T) {
	tr, sink, client, server := linkPair(t)
	const req = "GET /a HTTP/1.1\r\nHost: api\r\n\r\n"
	const req2 = "GET /b HTTP/1.1\r\nHost: api\r\n\r\n"
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
	const resp2 = "HTTP/1.1 404 Not Found\r\nContent-Length: 1\r\n\r\nb"
	client.data(t, tr, dirEgress, 1_000, req, 0)
	server.data(t, tr, dirIngress, 1_010, req, 0)
	server.data(t, tr, dirEgress, 2_000, resp, 0)
	client.data(t, tr, dirIngress, 2_010, resp, 0)
	// Pipelined: both requests in one write, both answers in one.
	client.data(t, tr, dirEgress, 3_000, req+req2, 0)
	server.data(t, tr, dirIngress, 3_010, req+req2, 0)
	server.data(t, tr, dirEgress, 4_000, resp+resp2, 0)
	client.data(t, tr, dirIngress, 4_010, resp+resp2, 0)
	tr.expireHeld(time.Now().Add(time.Minute), true)
	clients, servers := spansOf(sink, trace.SpanKindClient), spansOf(sink, trace.SpanKindServer)
	if len(clients) != 3 || len(servers) != 3 {
		t.Fatalf("%d client and %d server spans, want 3 and 3", len(clients), len(servers))
	}
	byID := map[trace.SpanID]*export.Span{}
	for _, c := range clients {
		byID[c.SpanID] = c
	}
	for _, s := range servers {
		c := byID[s.Parent.SpanID()]
		if c == nil || s.TraceID != c.TraceID || s.Parent.TraceID() != c.TraceID {
			t.Fatalf("server span %s is not the child of a client span", s.Name)
		}
		if !strings.HasSuffix(attrOf(c, "url.full"), "api:8080"+attrOf(s, "url.path")) {
			t.Errorf("server span of %s linked to the client span of %s", attrOf(s, "url.path"), attrOf(c, "url.full"))
		}
	}
	if st := tr.Stats(); st.Linked != 3 || st.LinkUnmatched != 0 {
		t.Errorf("linked %d, unmatched %d", st.Linked, st.LinkUnmatched)
	}
}

// A server span that carries an incoming traceparent keeps it; one whose
// client span does not contain it in time is not linked; a server span
// whose client end is not traced waits for nothing.
func TestLinkOnlyWhatMatches(t *testing.T) {
	tr, sink, client, server := linkPair(t)
	const traced = "GET /t HTTP/1.1\r\nHost: api\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n"
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	client.data(t, tr, dirEgress, 1_000, traced, 0)
	server.data(t, tr, dirIngress, 1_010, traced, 0)
	server.data(t, tr, dirEgress, 2_000, resp, 0)
	client.data(t, tr, dirIngress, 2_010, resp, 0)
	tr.expireHeld(time.Now().Add(time.Minute), true)
	for _, s := range spansOf(sink, trace.SpanKindServer) {
		if s.Parent.SpanID().String() != "b7ad6b7169203331" {
			t.Errorf("incoming traceparent replaced by a link: parent %s", s.Parent.SpanID())
		}
	}
	sink.spans = nil

	// The server's view lies outside the client's: ordinals that disagree
	// (the client's first exchange was lost) must not link.
	const req = "GET /x HTTP/1.1\r\nHost: api\r\n\r\n"
	server.data(t, tr, dirIngress, 5_000, req, 0)
	server.data(t, tr, dirEgress, 9_000_000, resp, 0)
	client.data(t, tr, dirEgress, 200_000_000, req, 0)
	client.data(t, tr, dirIngress, 211_000_000, resp, 0)
	tr.expireHeld(time.Now().Add(time.Minute), true)
	for _, s := range spansOf(sink, trace.SpanKindServer) {
		if s.Parent.IsValid() {
			t.Errorf("linked across a time mismatch: %+v", s)
		}
	}
	if st := tr.Stats(); st.Linked != 0 || st.LinkUnmatched != 1 {
		t.Errorf("linked %d, unmatched %d; want 0 and 1", st.Linked, st.LinkUnmatched)
	}

	// A server whose client is not traced: exported at once.
	lone := sock{tgid: 8, fd: 6, id: 3, local: "127.0.0.1:8080", remote: "10.1.2.3:5555", comm: "api"}
	lone.open(t, tr, eventAccept)
	sink.spans = nil
	lone.data(t, tr, dirIngress, 20_000, req, 0)
	lone.data(t, tr, dirEgress, 21_000, resp, 0)
	if len(sink.spans) != 1 || sink.spans[0].Parent.IsValid() {
		t.Errorf("a server span with an untraced client waited or was linked: %d spans", len(sink.spans))
	}
}

// A linked server span waits for its client span's final trace ID: the
// client span waits for its own parent, a server span of its process that
// continues an incoming traceparent, so the whole chain is one trace.
func TestLinkWaitsForTheClientsTrace(t *testing.T) {
	tr, sink := goTracer(t)
	// Process 7 is under Go probes; 8 is not.
	up := sock{tgid: 7, fd: 5, id: 1, local: "127.0.0.1:8080", remote: "127.0.0.1:5000", comm: "svc"}
	down := sock{tgid: 7, fd: 6, id: 2, local: "127.0.0.1:40001", remote: "127.0.0.1:9000", comm: "svc"}
	backend := sock{tgid: 8, fd: 3, id: 3, local: "127.0.0.1:9000", remote: "127.0.0.1:40001", comm: "py"}
	up.open(t, tr, eventAccept)
	down.open(t, tr, eventConnect)
	backend.open(t, tr, eventAccept)
	const call = "GET /stock HTTP/1.1\r\nHost: inventory:9000\r\n\r\n"
	down.data(t, tr, dirEgress, 1_300, call, 0)
	backend.data(t, tr, dirIngress, 1_310, call, 0)
	backend.data(t, tr, dirEgress, 1_600, okResponse, 0)
	down.data(t, tr, dirIngress, 1_610, okResponse, 0)
	goEvent{kind: eventGoClient, fd: -1, start: 1_200, end: 1_620, trace: [2]uint64{1, 2}, span: 0x22, parent: 0x11,
		status: 200, method: "GET", path: "/stock", host: "inventory:9000"}.send(t, tr)
	up.data(t, tr, dirIngress, 1_000, tracedGetRequest, 0)
	goEvent{kind: eventGoServer, fd: 5, start: 1_100, end: 2_000, trace: [2]uint64{1, 2}, span: 0x11,
		status: 200, method: "GET", path: "/orders", host: "shop.local:8080", remote: "127.0.0.1:5000"}.send(t, tr)
	up.data(t, tr, dirEgress, 2_500, okResponse, 0)
	tr.expireHeld(time.Now().Add(time.Minute), true)
	want := "0af7651916cd43dd8448eb211c80319c"
	var backendSpan, callSpan *export.Span
	for _, s := range sink.spans {
		if s.TraceID.String() != want {
			t.Errorf("span %s %s in trace %s, want %s", s.Kind, s.Name, s.TraceID, want)
		}
		switch {
		case s.Kind == trace.SpanKindServer && attrOf(s, "url.path") == "/stock":
			backendSpan = s
		case s.Kind == trace.SpanKindClient:
			callSpan = s
		}
	}
	if backendSpan == nil || callSpan == nil || backendSpan.Parent.SpanID() != callSpan.SpanID {
		t.Fatalf("the backend's span is not the child of the Go client call: %+v / %+v", backendSpan, callSpan)
	}
	if len(sink.spans) != 3 {
		t.Errorf("%d spans, want 3 (server, its call, the backend)", len(sink.spans))
	}
}

// HTTP/2 streams link by stream ID, whatever order they end in.
func TestLinkHTTP2Streams(t *testing.T) {
	tr, sink, client, server := linkPair(t)
	w := newH2Wire(t)
	w.headers(false, 1, true, ":method", "GET", ":scheme", "http", ":authority", "api", ":path", "/one")
	w.headers(false, 3, true, ":method", "GET", ":scheme", "http", ":authority", "api", ":path", "/three")
	req := take(&w.client)
	w.headers(true, 3, true, ":status", "200")
	w.headers(true, 1, true, ":status", "204")
	resp := take(&w.server)
	client.data(t, tr, dirEgress, 1_000, req, 0)
	server.data(t, tr, dirIngress, 1_010, req, 0)
	server.data(t, tr, dirEgress, 2_000, resp, 0)
	client.data(t, tr, dirIngress, 2_010, resp, 0)
	tr.expireHeld(time.Now().Add(time.Minute), true)
	clients := map[trace.SpanID]*export.Span{}
	for _, c := range spansOf(sink, trace.SpanKindClient) {
		clients[c.SpanID] = c
	}
	servers := spansOf(sink, trace.SpanKindServer)
	if len(servers) != 2 || len(clients) != 2 {
		t.Fatalf("%d server and %d client spans, want 2 and 2", len(servers), len(clients))
	}
	for _, s := range servers {
		c := clients[s.Parent.SpanID()]
		if c == nil || c.TraceID != s.TraceID || !strings.HasSuffix(attrOf(c, "url.full"), "/"+strings.TrimPrefix(attrOf(s, "url.path"), "/")) {
			t.Errorf("stream %s not linked to its own client stream", attrOf(s, "url.path"))
		}
	}
}

// A proxy sonde has no probes in: its upstream call, with the method and
// target of the request it serves and inside its time, is that request's
// child; the backend's span is the upstream call's child; all three are
// in the trace of the client's call.
func TestLinkThroughAProxy(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(7, "/usr/bin/curl")
	fp.exe(9, "/usr/sbin/nginx")
	fp.exe(8, "/srv/api")
	tr, sink := handTracer(t, fp, 16)
	curl := sock{tgid: 7, fd: 3, id: 1, local: "127.0.0.1:40000", remote: "127.0.0.1:443", comm: "curl"}
	front := sock{tgid: 9, fd: 5, id: 2, local: "127.0.0.1:443", remote: "127.0.0.1:40000", comm: "nginx"}
	up := sock{tgid: 9, fd: 6, id: 3, local: "127.0.0.1:41000", remote: "127.0.0.1:8080", comm: "nginx"}
	api := sock{tgid: 8, fd: 4, id: 4, local: "127.0.0.1:8080", remote: "127.0.0.1:41000", comm: "api"}
	curl.open(t, tr, eventConnect)
	front.open(t, tr, eventAccept)
	up.open(t, tr, eventConnect)
	api.open(t, tr, eventAccept)
	const other = "GET /other HTTP/1.1\r\nHost: x\r\n\r\n"
	const req = "GET /items?id=3 HTTP/1.1\r\nHost: shop\r\n\r\n"
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	curl.data(t, tr, dirEgress, 1_000, req, 0)
	front.data(t, tr, dirIngress, 1_010, req, 0)
	up.data(t, tr, dirEgress, 1_100, req, 0)
	api.data(t, tr, dirIngress, 1_110, req, 0)
	api.data(t, tr, dirEgress, 1_500, resp, 0)
	up.data(t, tr, dirIngress, 1_510, resp, 0)
	front.data(t, tr, dirEgress, 1_600, resp, 0)
	curl.data(t, tr, dirIngress, 1_610, resp, 0)
	// A second upstream call for a request nginx does not serve.
	up.data(t, tr, dirEgress, 2_000, other, 0)
	api.data(t, tr, dirIngress, 2_010, other, 0)
	api.data(t, tr, dirEgress, 2_100, resp, 0)
	up.data(t, tr, dirIngress, 2_110, resp, 0)
	tr.expireHeld(time.Now().Add(time.Minute), true)
	if len(sink.spans) != 6 {
		t.Fatalf("%d spans, want 6", len(sink.spans))
	}
	byID := map[trace.SpanID]*export.Span{}
	for _, s := range sink.spans {
		byID[s.SpanID] = s
	}
	var root *export.Span
	for _, s := range sink.spans {
		if s.Kind == trace.SpanKindClient && attrOf(s, "url.full") == "http://shop:443/items?id=3" {
			root = s
		}
	}
	if root == nil {
		t.Fatal("no curl span")
	}
	// Walk down: curl → nginx server → nginx client → api server.
	chain := []*export.Span{root}
	for len(chain) < 4 {
		var next *export.Span
		for _, s := range sink.spans {
			if s.Parent.SpanID() == chain[len(chain)-1].SpanID && s.TraceID == root.TraceID {
				next = s
			}
		}
		if next == nil {
			t.Fatalf("the chain stops after %d spans", len(chain))
		}
		chain = append(chain, next)
	}
	if chain[1].Resource != chain[2].Resource || chain[1].Kind != trace.SpanKindServer || chain[2].Kind != trace.SpanKindClient {
		t.Errorf("nginx's upstream call is not the child of the request it served")
	}
	for _, s := range sink.spans {
		if attrOf(s, "url.path") == "/other" && s.TraceID == root.TraceID {
			t.Errorf("an upstream call for another request joined the trace")
		}
	}
	if st := tr.Stats(); st.ProxyLinked != 1 || st.Linked != 3 {
		t.Errorf("proxy linked %d, linked %d; want 1 and 3", st.ProxyLinked, st.Linked)
	}
}

// A client that reads its response and exits before the server's last
// event is read (a TLS server's span ends at SSL_write's return) still
// gets the server span as its child: its span settled before it exited.
func TestLinkAfterTheClientExited(t *testing.T) {
	tr, sink, client, server := linkPair(t)
	const req = "GET /a HTTP/1.1\r\nHost: api\r\n\r\n"
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\na"
	client.data(t, tr, dirEgress, 1_000, req, 0)
	server.data(t, tr, dirIngress, 1_010, req, 0)
	client.data(t, tr, dirIngress, 2_010, resp, 0)
	tr.onExit(client.tgid, 0)
	server.data(t, tr, dirEgress, 2_000, resp, 0)
	tr.expireHeld(time.Now().Add(time.Minute), true)
	clients, servers := spansOf(sink, trace.SpanKindClient), spansOf(sink, trace.SpanKindServer)
	if len(clients) != 1 || len(servers) != 1 {
		t.Fatalf("%d client and %d server spans, want 1 and 1", len(clients), len(servers))
	}
	if s, c := servers[0], clients[0]; s.Parent.SpanID() != c.SpanID || s.TraceID != c.TraceID {
		t.Errorf("the server span is not the exited client's child")
	}
}
