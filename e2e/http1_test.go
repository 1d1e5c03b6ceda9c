package e2e

import (
	"bufio"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
)

const secret = "s3cr3t-never-exported"

// python3's http.server as the server, curl as the client: both traced, both
// started by people who never heard of sonde.
func TestPythonServerCurlClient(t *testing.T) {
	python := testutil.RequireTool(t, "python3")
	curl := testutil.RequireTool(t, "curl")
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "index.txt"), []byte("hello from python\n"), 0o644)
	port := freePort(t)
	py := startProc(t, []string{"OTEL_SERVICE_NAME=catalog"}, python, "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, port)
	addr := "127.0.0.1:" + port
	waitPort(t, addr)

	s := startSonde(t, nil, "--pid", fmt.Sprint(py.pid()), "--exe", "curl")
	run(t, curl, "-sS", "-o", "/dev/null", "-A", "e2e-curl/1.0",
		"-H", "Authorization: Bearer "+secret, "-H", "Cookie: session="+secret,
		"http://"+addr+"/index.txt?lang=en&token="+secret)
	run(t, curl, "-sS", "-o", "/dev/null", "http://"+addr+"/missing")
	r := s.stop(t)

	wantNoParseErrors(t, r)
	servers := filter(r.spans, func(s span) bool { return s.Kind == "server" })
	clients := filter(r.spans, func(s span) bool { return s.Kind == "client" })
	if len(servers) != 2 || len(clients) != 2 {
		t.Fatalf("want 2 server and 2 client spans, got %d and %d:\n%v", len(servers), len(clients), r.spans)
	}
	for _, sp := range r.spans {
		if strings.Contains(sp.raw, secret) {
			t.Errorf("a secret was exported: %s", sp)
		}
	}
	ok := findSpan(t, servers, "url.path", "/index.txt")
	wantAttrs(t, ok, map[string]string{
		"http.request.method":       "GET",
		"http.response.status_code": "200",
		"url.scheme":                "http",
		"url.query":                 "lang=en&token=REDACTED",
		"server.port":               port,
		"client.address":            "127.0.0.1",
		"network.peer.address":      "127.0.0.1",
		"network.protocol.version":  "1.1",
		"user_agent.original":       "e2e-curl/1.0",
	})
	if ok.Name != "GET" || ok.Status.Code != "Unset" {
		t.Errorf("server span name %q status %q, want GET and Unset", ok.Name, ok.Status.Code)
	}
	if ok.res("service.name") != "catalog" || ok.res("process.pid") != fmt.Sprint(py.pid()) {
		t.Errorf("server resource %v: want service.name catalog from OTEL_SERVICE_NAME and pid %d", ok.Resource, py.pid())
	}
	if !ok.End.After(ok.Start) {
		t.Errorf("server span does not end after it starts: %v .. %v", ok.Start, ok.End)
	}
	if d := time.Since(ok.Start); d < 0 || d > 2*time.Minute {
		t.Errorf("server span start %v is not a recent wall-clock time", ok.Start)
	}
	missing := findSpan(t, servers, "url.path", "/missing")
	if missing.attr("http.response.status_code") != "404" || missing.Status.Code != "Unset" {
		t.Errorf("a 404 is the client's error, not the server's: %s", missing)
	}

	c := findSpan(t, clients, "url.full", "http://"+addr+"/index.txt?lang=en&token=REDACTED")
	wantAttrs(t, c, map[string]string{
		"http.request.method":       "GET",
		"http.response.status_code": "200",
		"server.address":            "127.0.0.1",
		"server.port":               port,
		"network.peer.port":         port,
	})
	if c.res("process.executable.name") != "curl" || c.res("service.name") != "curl" {
		t.Errorf("client resource %v: want curl", c.Resource)
	}
	cm := findSpan(t, clients, "url.full", "http://"+addr+"/missing")
	if cm.Status.Code != "Error" || cm.attr("error.type") != "404" {
		t.Errorf("a 404 fails the client span: %s", cm)
	}
}

// Responses without a length end when the server closes the connection:
// the server span can only end at the close, which sonde sees where TCP
// closes the socket. Served by the process that accepted; by forked
// children after the parent closed its copy of the socket, which must not
// end the child's connection; and by a server that shuts its side down and
// closes after the client did, when TCP has finished with the socket and
// the close only destroys it. The servers stay alive, so their exit cannot
// stand in for the close.
func TestCloseDelimitedBody(t *testing.T) {
	python := testutil.RequireTool(t, "python3")
	curl := testutil.RequireTool(t, "curl")
	for _, mode := range []string{"single", "fork", "shutdown"} {
		t.Run(mode, func(t *testing.T) {
			port := freePort(t)
			py := startProc(t, nil, python, "testdata/closeserver/server.py", port, mode)
			addr := "127.0.0.1:" + port
			waitPort(t, addr)
			s := startSonde(t, nil, "--pid", fmt.Sprint(py.pid()), "--exe", "curl")
			const requests = 3
			for i := range requests {
				out := run(t, curl, "-sS", "--http1.0", fmt.Sprintf("http://%s/item/%d", addr, i))
				if out != "this body ends at the close\n" {
					t.Fatalf("curl got %q", out)
				}
			}
			r := s.stop(t)
			wantNoParseErrors(t, r)
			servers := filter(r.spans, func(s span) bool { return s.Kind == "server" })
			clients := filter(r.spans, func(s span) bool { return s.Kind == "client" })
			if len(servers) != requests || len(clients) != requests {
				t.Fatalf("want %d server and %d client spans, got %d and %d (pending at exit %v):\n%v",
					requests, requests, len(servers), len(clients), r.stats["pending_at_exit"], r.spans)
			}
			for i := range requests {
				sp := findSpan(t, servers, "url.path", fmt.Sprintf("/item/%d", i))
				if sp.attr("http.response.status_code") != "200" || sp.attr("network.protocol.version") != "1.0" {
					t.Errorf("server span %s", sp)
				}
				if mode == "fork" && sp.res("process.pid") == fmt.Sprint(py.pid()) {
					t.Errorf("the parent, which served nothing, has the span: %s", sp)
				}
			}
		})
	}
}

// A Go net/http server and client, both traced.
func TestGoServerAndClient(t *testing.T) {
	srv := startGoServer(t, "OTEL_SERVICE_NAME=go-hello")
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()), "--exe", filepath.Base(bins.goclient))
	run(t, bins.goclient, "-url", "http://"+srv.addr+"/hello", "-n", "5")
	run(t, bins.goclient, "-url", "http://"+srv.addr+"/status/503", "-n", "1")
	r := s.stop(t)

	wantNoParseErrors(t, r)
	servers := filter(r.spans, func(s span) bool { return s.Kind == "server" })
	clients := filter(r.spans, func(s span) bool { return s.Kind == "client" })
	if len(servers) != 6 || len(clients) != 6 {
		t.Fatalf("want 6 server and 6 client spans, got %d and %d:\n%v", len(servers), len(clients), r.spans)
	}
	hello := filter(servers, func(s span) bool { return s.attr("url.path") == "/hello" })
	if len(hello) != 5 {
		t.Fatalf("want 5 server spans for /hello, got %d", len(hello))
	}
	for _, sp := range hello {
		if sp.attr("http.response.status_code") != "200" || sp.res("service.name") != "go-hello" {
			t.Errorf("bad /hello span: %s", sp)
		}
		if sp.attr("user_agent.original") != "Go-http-client/1.1" {
			t.Errorf("user agent: %s", sp)
		}
	}
	failed := findSpan(t, servers, "url.path", "/status/503")
	if failed.Status.Code != "Error" || failed.attr("error.type") != "503" {
		t.Errorf("a 503 fails the server span: %s", failed)
	}
	for _, c := range clients {
		if c.res("process.executable.name") != "goclient" || c.attr("server.port") != srv.port() {
			t.Errorf("bad client span: %s", c)
		}
	}
}

// The wrk acceptance test: exactly 1,000 requests over 10 keep-alive
// connections give exactly 1,000 server spans.
func TestWrkKeepAlive(t *testing.T) {
	wrk := testutil.RequireTool(t, "wrk")
	srv := startGoServer(t)
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()))
	script := filepath.Join(t.TempDir(), "exact.lua")
	// wrk runs for a duration, not a count: each of the two threads sends
	// 500 requests (an empty request writes nothing) and stops once all
	// 500 responses are in. Stopping earlier would close sockets with
	// requests unread by the server, which the kernel then discards.
	// wrk calls request() once on the first thread to check the script;
	// setup() runs before that and lets that thread count from -1.
	os.WriteFile(script, []byte(`
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("sent", threads == 1 and -1 or 0)
end
received = 0
request = function()
  sent = sent + 1
  if sent > 500 then
    return ""
  end
  return wrk.format("GET", "/hello")
end
response = function()
  received = received + 1
  if received == 500 then
    wrk.thread:stop()
  end
end
`), 0o644)
	out := run(t, wrk, "-t2", "-c10", "-d8s", "-s", script, "http://"+srv.addr)
	t.Logf("wrk: %s", out)
	served := srv.served(t)
	r := s.stop(t)
	if served != 1000 {
		t.Fatalf("the server handled %d requests, want 1000 (wrk script broken?)", served)
	}
	servers := filter(r.spans, func(s span) bool { return s.Kind == "server" })
	if len(servers) != 1000 {
		t.Fatalf("want exactly 1000 server spans, got %d (lost %v, parse errors %v)", len(servers), r.stats["lost"], r.stats["parse_errors"])
	}
	conns := map[string]bool{}
	for _, sp := range servers {
		// A Go server: its probes know the ServeMux route, which names the span.
		if sp.Name != "GET /hello" || sp.attr("http.route") != "/hello" || sp.attr("http.request.method") != "GET" || sp.attr("url.path") != "/hello" || sp.attr("http.response.status_code") != "200" {
			t.Fatalf("bad span: %s", sp)
		}
		conns[sp.attr("network.peer.port")] = true
	}
	if len(conns) != 10 {
		t.Errorf("want spans from 10 keep-alive connections, got %d", len(conns))
	}
	if r.stat("lost") != 0 || r.stat("parse_errors_total") != 0 {
		t.Errorf("lost %v events, %v parse errors", r.stats["lost"], r.stats["parse_errors_total"])
	}
	// wrk connected after sonde attached: every connection's open was
	// seen (the accept exit, or the socket-layer hooks' opened map).
	if n := r.stat("conns_joined"); n != 0 {
		t.Errorf("%v connections joined in the middle, want none", n)
	}
}

// Requests split over several writes, bodies, and pipelined requests, sent
// by hand on raw sockets to a traced Go server.
func TestSplitAndPipelined(t *testing.T) {
	srv := startGoServer(t)
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()))

	c, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	send := func(parts ...string) {
		for _, p := range parts {
			if _, err := io.WriteString(c, p); err != nil {
				t.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // separate reads on the server
		}
	}
	readResponses := func(n int) {
		for range n {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	// A head split inside the request line, inside a header and inside CRLF.
	send("GE", "T /hello?part=split HTTP/1.1\r\nHo", "st: split.example\r", "\n\r\n")
	readResponses(1)
	// A Content-Length body split from its head and in two parts.
	send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", "01234", "56789")
	readResponses(1)
	// A chunked body over several writes.
	send("POST /echo?chunked=1 HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n", "5\r\npedia\r\n", "0\r\n\r\n")
	readResponses(1)
	// Three pipelined requests in one write.
	send("GET /hello?p=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /status/404 HTTP/1.1\r\nHost: x\r\n\r\nGET /hello?p=3 HTTP/1.1\r\nHost: x\r\n\r\n")
	readResponses(3)
	c.Close()
	r := s.stop(t)

	wantNoParseErrors(t, r)
	servers := filter(r.spans, func(s span) bool { return s.Kind == "server" })
	if len(servers) != 6 {
		t.Fatalf("want 6 server spans, got %d:\n%v", len(servers), r.spans)
	}
	split := findSpan(t, servers, "url.query", "part=split")
	wantAttrs(t, split, map[string]string{"url.path": "/hello", "server.address": "split.example", "http.response.status_code": "200"})
	findSpan(t, servers, "url.query", "chunked=1")
	posts := filter(servers, func(s span) bool { return s.attr("http.request.method") == "POST" })
	if len(posts) != 2 {
		t.Errorf("want 2 POST spans, got %d", len(posts))
	}
	// Pipelined responses pair with their requests in order.
	wantAttrs(t, findSpan(t, servers, "url.query", "p=1"), map[string]string{"http.response.status_code": "200"})
	wantAttrs(t, findSpan(t, servers, "url.path", "/status/404"), map[string]string{"http.response.status_code": "404"})
	wantAttrs(t, findSpan(t, servers, "url.query", "p=3"), map[string]string{"http.response.status_code": "200"})
}

// An incoming W3C traceparent makes the server span its child.
func TestTraceparentHonoured(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	srv := startGoServer(t)
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()))
	const traceID, parentID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
	run(t, curl, "-sS", "-o", "/dev/null", "-H", "traceparent: 00-"+traceID+"-"+parentID+"-01",
		"-H", "tracestate: vendor=abc", "http://"+srv.addr+"/hello")
	run(t, curl, "-sS", "-o", "/dev/null", "http://"+srv.addr+"/hello?root=1")
	r := s.stop(t)
	if len(r.spans) != 2 {
		t.Fatalf("want 2 spans, got %d:\n%v", len(r.spans), r.spans)
	}
	root := findSpan(t, r.spans, "url.query", "root=1")
	child := findSpan(t, r.spans, "url.query", "")
	if child.TraceID != traceID || child.ParentSpanID != parentID {
		t.Errorf("span not joined to the incoming trace: trace %s parent %s", child.TraceID, child.ParentSpanID)
	}
	if root.TraceID == traceID || root.ParentSpanID != "" || len(root.TraceID) != 32 {
		t.Errorf("a request without traceparent starts its own trace: %s", root)
	}
}

// A process that was not selected gives no spans.
func TestUnselectedProcessNotTraced(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	traced := startGoServer(t)
	other := startGoServer(t)
	s := startSonde(t, nil, "--pid", fmt.Sprint(traced.pid()))
	for range 3 {
		run(t, curl, "-sS", "-o", "/dev/null", "http://"+traced.addr+"/hello")
		run(t, curl, "-sS", "-o", "/dev/null", "http://"+other.addr+"/hello")
	}
	r := s.stop(t)
	if n := len(filter(r.spans, byPID(other.pid()))); n != 0 {
		t.Errorf("the unselected server has %d spans", n)
	}
	if n := len(filter(r.spans, byPID(traced.pid()))); n != 3 || len(r.spans) != 3 {
		t.Errorf("want 3 spans, all of the selected server; got %d of %d:\n%v", n, len(r.spans), r.spans)
	}
}

// Garbage on a traced connection: no span, no crash, a counted parse error,
// and the next valid request on a new connection is traced.
func TestGarbageOnConnection(t *testing.T) {
	srv := startGoServer(t)
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()))
	for i := range 3 {
		c, err := net.Dial("tcp", srv.addr)
		if err != nil {
			t.Fatal(err)
		}
		junk := make([]byte, 2048)
		rand.Read(junk)
		if i == 1 {
			junk = []byte("\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n")
		}
		c.Write(junk)
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		io.Copy(io.Discard, c) // the server answers 400 and closes
		c.Close()
	}
	resp, err := http.Get("http://" + srv.addr + "/hello?after=garbage")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r := s.stop(t)
	if !srv.alive() {
		t.Fatal("the traced server died")
	}
	if len(r.spans) != 1 || r.spans[0].attr("url.query") != "after=garbage" {
		t.Fatalf("want only the valid request's span, got:\n%v", r.spans)
	}
	if r.stat("parse_errors_total") < 3 {
		t.Errorf("want a parse error counted per garbage connection, stats: %v", r.stats)
	}
}

// A keep-alive connection opened before sonde attached: each side still gets
// its role (the server from its listening socket, the client from the bytes).
func TestConnectionOpenedBeforeAttach(t *testing.T) {
	srv := startGoServer(t)
	client := startProc(t, nil, bins.goclient, "-url", "http://"+srv.addr+"/hello", "-n", "0", "-interval", "50ms")
	time.Sleep(500 * time.Millisecond) // the connection is open and in use
	s := startSonde(t, nil, "--pid", fmt.Sprintf("%d,%d", srv.pid(), client.pid()))
	time.Sleep(time.Second)
	r := s.stop(t)
	servers := filter(r.spans, byPID(srv.pid()))
	clients := filter(r.spans, byPID(client.pid()))
	if len(servers) < 5 || len(clients) < 5 {
		t.Fatalf("want server and client spans on the old connection, got %d and %d", len(servers), len(clients))
	}
	for _, sp := range servers {
		if sp.Kind != "server" || sp.attr("url.path") != "/hello" {
			t.Errorf("server process span: %s", sp)
		}
	}
	for _, sp := range clients {
		if sp.Kind != "client" || sp.attr("url.full") != "http://"+srv.addr+"/hello" {
			t.Errorf("client process span: %s", sp)
		}
	}
	// One long-lived connection, seen from both ends.
	if n := len(distinct(servers, "network.peer.port")); n != 1 {
		t.Errorf("want one connection, server saw %d", n)
	}
	if n := r.stat("conns_joined"); n != 2 {
		t.Errorf("%v connections joined in the middle, want the connection's two ends", n)
	}
}

// wantNoParseErrors: clean traffic, start and stop included, must not be
// counted as garbage.
func wantNoParseErrors(t *testing.T, r sondeResult) {
	t.Helper()
	if n := r.stat("parse_errors_total"); n != 0 {
		t.Errorf("%v parse errors on clean traffic: %v", n, r.stats["parse_errors"])
	}
}

func distinct(spans []span, attr string) map[string]bool {
	m := map[string]bool{}
	for _, s := range spans {
		m[s.attr(attr)] = true
	}
	return m
}

func findSpan(t *testing.T, spans []span, attr, value string) span {
	t.Helper()
	var found []span
	for _, s := range spans {
		if s.attr(attr) == value {
			found = append(found, s)
		}
	}
	if len(found) != 1 {
		t.Fatalf("want one span with %s=%q, found %d among:\n%v", attr, value, len(found), spans)
	}
	return found[0]
}

func wantAttrs(t *testing.T, s span, want map[string]string) {
	t.Helper()
	for k, v := range want {
		if got := s.attr(k); got != v {
			t.Errorf("%s = %q, want %q in %s", k, got, v, s)
		}
	}
}

// Headers larger than the capture limit: the span still comes, marked
// truncated; the truncation is counted; and the parser stays in step for the
// next request on the same connection.
func TestCaptureLimitSmallerThanHeaders(t *testing.T) {
	srv := startGoServer(t)
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()), "--capture-bytes", "64")
	c, err := net.Dial("tcp", srv.addr)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	long := "GET /hello?big=1 HTTP/1.1\r\nHost: x\r\nX-Padding: " + strings.Repeat("p", 300) + "\r\n\r\n"
	short := "GET /status/201 HTTP/1.1\r\nHost: x\r\n\r\n"
	for _, req := range []string{long, short} {
		io.WriteString(c, req)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	c.Close()
	r := s.stop(t)
	if len(r.spans) != 2 {
		t.Fatalf("want 2 spans, got %d:\n%v", len(r.spans), r.spans)
	}
	big := findSpan(t, r.spans, "url.query", "big=1")
	if big.attr("sonde.capture.truncated") != "true" || big.attr("http.response.status_code") != "200" {
		t.Errorf("truncated request: %s", big)
	}
	wantAttrs(t, findSpan(t, r.spans, "url.path", "/status/201"), map[string]string{"http.response.status_code": "201"})
	if r.stat("truncated") < 1 {
		t.Errorf("truncation not counted: %v", r.stats)
	}
}

// A ring buffer far too small for the load: lost events are counted and
// logged while sonde runs, connections that lost events restart cleanly, and
// tracing goes on with correct spans.
func TestLostEventsCountedAndLogged(t *testing.T) {
	wrk := testutil.RequireTool(t, "wrk")
	srv := startGoServer(t)
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()), "--ring-buffer", "64K")
	run(t, wrk, "-t1", "-c20", "-d3s", "-s", writeBigPOST(t), "http://"+srv.addr+"/echo")
	r := s.stop(t)
	if r.stat("lost") == 0 {
		t.Fatalf("a 64 KiB ring buffer under wrk lost nothing? stats %v", r.stats)
	}
	if r.stat("resyncs_after_loss") == 0 {
		t.Errorf("no connection was restarted after its losses: %v", r.stats)
	}
	if len(r.spans) < 100 {
		t.Errorf("tracing did not go on after losses: %d spans, stats %v", len(r.spans), r.stats)
	}
	for _, sp := range r.spans {
		// Every request is the same POST: a span that says otherwise was
		// stitched together across a gap.
		if sp.attr("http.request.method") != "POST" || sp.attr("url.path") != "/echo" || sp.attr("http.response.status_code") != "200" {
			t.Fatalf("span made across lost events: %s", sp)
		}
	}
	warned := false
	for _, l := range r.logs {
		if strings.HasPrefix(fmt.Sprint(l["msg"]), "ring buffer full") {
			warned = true
		}
	}
	if !warned {
		t.Errorf("losses were not logged while running")
	}
}

// writeBigPOST writes a wrk script sending 8 KiB bodies, so that each
// request fills a good part of the ring buffer.
func writeBigPOST(t *testing.T) string {
	p := filepath.Join(t.TempDir(), "post.lua")
	os.WriteFile(p, []byte(`wrk.method = "POST"
wrk.body = string.rep("x", 8192)
wrk.headers["Content-Type"] = "text/plain"
`), 0o644)
	return p
}
