package tracer

import (
	"bytes"
	"testing"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Wire writes both directions of an HTTP/2 connection with x/net's
// Framer and HPACK encoder, as a real client and server would.
type h2Wire struct {
	t              *testing.T
	client, server bytes.Buffer
	cf, sf         *http2.Framer
	cenc, senc     *hpack.Encoder
	cblock, sblock bytes.Buffer
}

func newH2Wire(t *testing.T) *h2Wire {
	w := &h2Wire{t: t}
	w.cf, w.sf = http2.NewFramer(&w.client, nil), http2.NewFramer(&w.server, nil)
	w.cenc, w.senc = hpack.NewEncoder(&w.cblock), hpack.NewEncoder(&w.sblock)
	w.client.WriteString(http2.ClientPreface)
	w.must(w.cf.WriteSettings())
	w.must(w.sf.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: 100}))
	return w
}

func (w *h2Wire) must(err error) {
	if err != nil {
		w.t.Fatal(err)
	}
}

func (w *h2Wire) headers(server bool, stream uint32, end bool, fields ...string) {
	enc, block, f := w.cenc, &w.cblock, w.cf
	if server {
		enc, block, f = w.senc, &w.sblock, w.sf
	}
	block.Reset()
	for i := 0; i < len(fields); i += 2 {
		w.must(enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]}))
	}
	w.must(f.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: block.Bytes(), EndStream: end, EndHeaders: true}))
}

func (w *h2Wire) data(server bool, stream uint32, end bool, p string) {
	f := w.cf
	if server {
		f = w.sf
	}
	w.must(f.WriteData(stream, end, []byte(p)))
}

// take returns what one side wrote since the last take.
func take(b *bytes.Buffer) string {
	s := b.String()
	b.Reset()
	return s
}

// An HTTP/2 connection from TLS plaintext (ALPN h2): one span per stream,
// with the stream's own method, path and status, and nothing counted as an
// error; a gRPC call on it is an RPC span with its status from the
// trailers.
func TestHandleHTTP2Streams(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(500, "/usr/sbin/nginx")
	tr, sink := handTracer(t, fp, 16)
	s := sock{tgid: 500, fd: 4, id: 0xf1, local: "127.0.0.1:8443", remote: "127.0.0.1:40003", comm: "nginx"}
	s.open(t, tr, eventAccept)
	w := newH2Wire(t)
	// nginx sends its SETTINGS before it reads the client's preface.
	s.tlsData(t, tr, dirEgress, 900, take(&w.server))
	w.headers(false, 1, true, ":method", "GET", ":scheme", "https", ":authority", "shop.example", ":path", "/a?token=s3cr3t", "user-agent", "curl/8", "authorization", "Bearer no")
	w.headers(false, 3, false, ":method", "POST", ":scheme", "https", ":authority", "shop.example", ":path", "/pkg.Cart/Add", "content-type", "application/grpc", "traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
	w.data(false, 3, true, "\x00\x00\x00\x00\x00")
	s.tlsData(t, tr, dirIngress, 1_000, take(&w.client))
	w.headers(true, 3, false, ":status", "200", "content-type", "application/grpc")
	w.data(true, 3, false, "\x00\x00\x00\x00\x00")
	w.headers(true, 1, false, ":status", "404")
	w.data(true, 1, true, "nope")
	w.headers(true, 3, true, "grpc-status", "5", "grpc-message", "no such cart")
	s.tlsData(t, tr, dirEgress, 2_000, take(&w.server))

	if len(sink.spans) != 2 {
		t.Fatalf("%d spans, want 2", len(sink.spans))
	}
	web, rpc := sink.spans[0], sink.spans[1]
	a := spanAttrs(t, web)
	if web.Kind != trace.SpanKindServer || web.Name != "GET" || a["url.path"].AsString() != "/a" || a["url.query"].AsString() != "token=REDACTED" ||
		a["http.response.status_code"].AsInt64() != 404 || a["url.scheme"].AsString() != "https" || a["network.protocol.version"].AsString() != "2" ||
		a["server.address"].AsString() != "shop.example" || a["user_agent.original"].AsString() != "curl/8" {
		t.Errorf("HTTP span %q: %v", web.Name, web.Attributes)
	}
	a = spanAttrs(t, rpc)
	if rpc.Name != "pkg.Cart/Add" || a["rpc.system.name"].AsString() != "grpc" || a["rpc.method"].AsString() != "pkg.Cart/Add" ||
		a["rpc.response.status_code"].AsString() != "NOT_FOUND" || rpc.Status != codes.Error || rpc.StatusDescription != "no such cart" {
		t.Errorf("gRPC span %q status %v %q: %v", rpc.Name, rpc.Status, rpc.StatusDescription, rpc.Attributes)
	}
	if rpc.Parent.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || rpc.Parent.SpanID().String() != "00f067aa0ba902b7" {
		t.Errorf("gRPC span parent %v, want the incoming traceparent", rpc.Parent)
	}
	for _, sp := range sink.spans {
		for _, kv := range sp.Attributes {
			if bytes.Contains([]byte(kv.Value.Emit()), []byte("Bearer")) {
				t.Errorf("a secret in %s: %v", sp.Name, kv)
			}
		}
	}
	st := tr.Stats()
	if len(st.ParseErrors) != 0 || st.HTTP2Conns != 1 {
		t.Errorf("parse errors %v, %d HTTP/2 connections; want none and 1", st.ParseErrors, st.HTTP2Conns)
	}
}

// A connection sonde joined in the middle: its frames are recognised, the
// streams give spans whose headers are marked unknown, never another
// stream's, and the connection is no parse error.
func TestHandleHTTP2JoinedMidStream(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(501, "/srv/h2c")
	tr, sink := handTracer(t, fp, 16)
	s := sock{tgid: 501, fd: 6, id: 0xf3, local: "127.0.0.1:50000", remote: "127.0.0.1:8080", comm: "h2c"}
	w := newH2Wire(t)
	take(&w.client)
	take(&w.server)
	w.headers(false, 5, true, ":method", "GET", ":scheme", "http", ":authority", "api", ":path", "/late")
	s.data(t, tr, dirEgress, 1_000, take(&w.client), 0)
	w.headers(true, 5, false, ":status", "200")
	w.data(true, 5, true, "ok")
	s.data(t, tr, dirIngress, 2_000, take(&w.server), 0)
	s.close(t, tr)
	if len(sink.spans) != 1 {
		t.Fatalf("%d spans, want 1", len(sink.spans))
	}
	sp := sink.spans[0]
	a := spanAttrs(t, sp)
	if sp.Kind != trace.SpanKindClient || !a["sonde.http2.headers_unknown"].AsBool() || a["url.full"].Type() != 0 {
		t.Errorf("span %q kind %v: %v", sp.Name, sp.Kind, sp.Attributes)
	}
	st := tr.Stats()
	if len(st.ParseErrors) != 0 || st.HTTP2Conns != 1 || st.HTTP2HeadersUnknown != 1 {
		t.Errorf("parse errors %v, %d HTTP/2 connections, %d with unknown headers; want none, 1 and 1", st.ParseErrors, st.HTTP2Conns, st.HTTP2HeadersUnknown)
	}
}

// h2c through an HTTP/1.1 Upgrade: the 101 exchange is not a span of its
// own, stream 1 (the upgraded request) is; a 101 to anything else (a
// WebSocket) stays the span.
func TestHandleHTTP2Upgrade(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(502, "/usr/bin/curl")
	tr, sink := handTracer(t, fp, 16)
	s := sock{tgid: 502, fd: 7, id: 0xf4, local: "127.0.0.1:50001", remote: "127.0.0.1:8080", comm: "curl"}
	s.open(t, tr, eventConnect)
	s.data(t, tr, dirEgress, 1_000, "GET /up HTTP/1.1\r\nHost: api:8080\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n", 0)
	s.data(t, tr, dirIngress, 2_000, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", 0)
	w := newH2Wire(t)
	s.data(t, tr, dirEgress, 3_000, take(&w.client), 0)
	s.data(t, tr, dirIngress, 4_000, take(&w.server), 0)
	w.headers(true, 1, false, ":status", "200")
	w.data(true, 1, true, "upgraded")
	s.data(t, tr, dirIngress, 5_000, take(&w.server), 0)
	if len(sink.spans) != 1 {
		t.Fatalf("%d spans, want 1", len(sink.spans))
	}
	a := spanAttrs(t, sink.spans[0])
	if a["url.full"].AsString() != "http://api:8080/up" || a["http.response.status_code"].AsInt64() != 200 || a["network.protocol.version"].AsString() != "2" {
		t.Errorf("upgraded span: %v", sink.spans[0].Attributes)
	}

	ws := sock{tgid: 502, fd: 8, id: 0xf5, local: "127.0.0.1:50002", remote: "127.0.0.1:8080", comm: "curl"}
	ws.open(t, tr, eventConnect)
	ws.data(t, tr, dirEgress, 6_000, "GET /chat HTTP/1.1\r\nHost: api:8080\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 0)
	ws.data(t, tr, dirIngress, 7_000, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 0)
	ws.data(t, tr, dirIngress, 8_000, "\x81\x05hello", 0)
	if len(sink.spans) != 2 {
		t.Fatalf("%d spans, want 2", len(sink.spans))
	}
	if a := spanAttrs(t, sink.spans[1]); a["http.response.status_code"].AsInt64() != 101 || a["url.full"].AsString() != "http://api:8080/chat" {
		t.Errorf("WebSocket span: %v", sink.spans[1].Attributes)
	}
	if st := tr.Stats(); len(st.ParseErrors) != 0 {
		t.Errorf("parse errors %v", st.ParseErrors)
	}
}
