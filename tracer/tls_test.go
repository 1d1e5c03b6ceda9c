package tracer

import (
	"testing"

	"go.opentelemetry.io/otel/trace"
)

// A TLS record header of each kind, then a few bytes of its body.
var (
	clientHello = "\x16\x03\x01\x00\xf4\x01\x00\x00\xf0\x03\x03"
	serverHello = "\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03"
	appData     = "\x17\x03\x03\x01\x00\xde\xad\xbe\xef"
)

func TestLooksLikeTLSRecord(t *testing.T) {
	for _, tc := range []struct {
		data string
		want bool
	}{
		{clientHello, true},
		{serverHello, true},
		{appData, true},
		{"\x15\x03\x03\x00\x02\x02\x28", true}, // alert
		{"\x14\x03\x03\x00\x01\x01", true},     // change_cipher_spec
		{"\x17\x03\x03\x00\x00", false},        // empty record
		{"\x17\x03\x03\x48\x01", false},        // longer than TLS allows
		{"\x17\x03\x05\x00\x10", false},        // no such version
		{"\x18\x03\x03\x00\x10", false},        // no such content type
		{"\x16\x03\x01", false},                // too short to tell
		{"GET / HTTP/1.1\r\n", false},
		{"HTTP/1.1 200 OK\r\n", false},
		{"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", false},
	} {
		if got := looksLikeTLSRecord([]byte(tc.data)); got != tc.want {
			t.Errorf("looksLikeTLSRecord(%q) = %v, want %v", tc.data, got, tc.want)
		}
	}
}

// tlsData sends plaintext as an OpenSSL probe reports it.
func (s sock) tlsData(t *testing.T, tr *Tracer, dir uint8, ts uint64, payload string) {
	t.Helper()
	e := s.event(eventData)
	e.Dir, e.Ts, e.Flags = dir, ts, flagTLS
	e.Syscall = 15 // SYS_SSL_READ; the tracer does not look at it
	e.Captured, e.Size = uint32(len(payload)), uint32(len(payload))
	tr.handle(encodeEvent(t, e, []byte(payload)))
}

// The handshake, and any ciphertext on the socket, is neither parsed nor a
// parse error; the plaintext of the same connection gives one https span.
func TestHandleTLSServer(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(100, "/usr/sbin/nginx")
	tr, sink := handTracer(t, fp, 16)
	s := sock{tgid: 100, fd: 7, id: 0xb1, local: "127.0.0.1:8443", remote: "127.0.0.1:40000", comm: "nginx"}

	s.open(t, tr, eventAccept)
	s.data(t, tr, dirIngress, 1_000, clientHello, 0)
	s.data(t, tr, dirEgress, 2_000, serverHello, 0)
	s.tlsData(t, tr, dirIngress, 3_000, getRequest)
	s.data(t, tr, dirIngress, 3_500, appData, 0) // say a record the probe's call did not cover
	s.tlsData(t, tr, dirEgress, 4_000, okResponse)
	s.close(t, tr)

	if len(sink.spans) != 1 {
		t.Fatalf("%d spans, want 1", len(sink.spans))
	}
	sp := sink.spans[0]
	a := spanAttrs(t, sp)
	if sp.Kind != trace.SpanKindServer || a["url.scheme"].AsString() != "https" || a["url.path"].AsString() != "/orders" ||
		a["http.response.status_code"].AsInt64() != 200 {
		t.Errorf("span %q kind %v attributes %v", sp.Name, sp.Kind, sp.Attributes)
	}
	st := tr.Stats()
	if len(st.ParseErrors) != 0 || st.Ciphertext != 3 {
		t.Errorf("parse errors %v, ciphertext events %d; want none and 3", st.ParseErrors, st.Ciphertext)
	}
}

// A client connection opened before sonde attached, first seen through its
// plaintext: the role comes from the bytes, the URL says https on 443.
func TestHandleTLSClientMidSession(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(200, "/usr/bin/curl")
	tr, sink := handTracer(t, fp, 16)
	s := sock{tgid: 200, fd: 5, id: 0xc1, local: "10.0.0.2:50000", remote: "10.0.0.1:443", comm: "curl"}

	// Ciphertext taken for plaintext before the first SSL call was seen
	// must not leave the parser out of step.
	s.data(t, tr, dirEgress, 500, "\x17\x03\x03\x00\x20 not quite a record start", 0)
	s.tlsData(t, tr, dirEgress, 1_000, "GET /a HTTP/1.1\r\nHost: shop.example\r\n\r\n")
	s.tlsData(t, tr, dirIngress, 2_000, okResponse)

	if len(sink.spans) != 1 {
		t.Fatalf("%d spans, want 1", len(sink.spans))
	}
	sp := sink.spans[0]
	a := spanAttrs(t, sp)
	if sp.Kind != trace.SpanKindClient || a["url.full"].AsString() != "https://shop.example/a" || a["url.scheme"].AsString() != "https" {
		t.Errorf("span kind %v attributes %v", sp.Kind, sp.Attributes)
	}
}

// Bytes that were parsed as plain HTTP before the first plaintext event
// arrived were ciphertext after all: the parser starts over at the
// plaintext. (The parse error they caused stays counted: sonde did see
// bytes it could not read.)
func TestHandleTLSRestartsParser(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(300, "/usr/bin/python3")
	tr, sink := handTracer(t, fp, 16)
	s := sock{tgid: 300, fd: 9, id: 0xd1, local: "127.0.0.1:8443", remote: "127.0.0.1:40001", comm: "python3"}

	s.open(t, tr, eventAccept)
	s.data(t, tr, dirIngress, 500, "\x00\x01garbage that is no record", 0)
	s.tlsData(t, tr, dirIngress, 1_000, getRequest)
	s.tlsData(t, tr, dirEgress, 2_000, okResponse)
	if len(sink.spans) != 1 {
		t.Fatalf("%d spans, want 1", len(sink.spans))
	}
	if a := spanAttrs(t, sink.spans[0]); a["url.scheme"].AsString() != "https" {
		t.Errorf("attributes %v", sink.spans[0].Attributes)
	}
}

// A ClientHello received on a connection of unknown role makes the
// process its server.
func TestRoleOfClientHello(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(400, "/srv/app")
	tr, _ := handTracer(t, fp, 16)
	s := sock{tgid: 400, fd: 3, id: 0xe1, local: "127.0.0.1:9443", remote: "127.0.0.1:40002", comm: "app"}
	s.data(t, tr, dirIngress, 500, clientHello, 0)
	c := tr.conns.get(connKey{400, 3})
	if c == nil || c.role != roleServer || c.tlsFrom != dirIngress || c.fed {
		t.Fatalf("connection %+v, want a server connection whose ClientHello is held back", c)
	}
	s.data(t, tr, dirEgress, 600, serverHello, 0)
	if !c.tls {
		t.Fatalf("connection %+v, want TLS once both sides sent records", c)
	}
}

// A TLS client at a plain HTTP port: the server answers 400 in clear, and
// the connection counts as one that was not HTTP.
func TestHandleTLSAnsweredInClear(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(600, "/srv/plain")
	tr, sink := handTracer(t, fp, 16)
	s := sock{tgid: 600, fd: 8, id: 0xf2, local: "127.0.0.1:8080", remote: "127.0.0.1:40004", comm: "plain"}
	s.open(t, tr, eventAccept)
	s.data(t, tr, dirIngress, 500, clientHello, 0)
	s.data(t, tr, dirEgress, 600, "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", 0)
	s.close(t, tr)
	st := tr.Stats()
	if len(sink.spans) != 0 || st.ParseErrors["not_http"] != 1 || st.Ciphertext != 1 {
		t.Errorf("%d spans, parse errors %v, ciphertext %d; want none, one not_http and 1", len(sink.spans), st.ParseErrors, st.Ciphertext)
	}
}

// Over TLS the URL says https, and the port it leaves out is 443.
func TestFullURLHTTPS(t *testing.T) {
	for _, tc := range []struct {
		host string
		port int
		want string
	}{
		{"example.com", 443, "https://example.com/a"},
		{"example.com", 80, "https://example.com:80/a"},
		{"127.0.0.1", 8443, "https://127.0.0.1:8443/a"},
		{"::1", 443, "https://[::1]/a"},
	} {
		if got := fullURL("/a", "https", tc.host, tc.port, "/a", ""); got != tc.want {
			t.Errorf("fullURL(/a, https, %q, %d) = %q, want %q", tc.host, tc.port, got, tc.want)
		}
	}
}
