package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
)

// startNginxH2C runs nginx serving HTTP/2 in clear (h2c with prior
// knowledge) on a free port, and returns the port.
func startNginxH2C(t *testing.T) string {
	t.Helper()
	port := freePort(t)
	startNginx(t, "127.0.0.1:"+port, fmt.Sprintf(`  server {
    listen 127.0.0.1:%s http2;
    access_log off;
    location /missing { return 404 "no\n"; }
    location / { return 200 "h2c\n"; }
  }`, port))
	return port
}

// curl with --http2-prior-knowledge to nginx: HTTP/2 in clear, read from
// the sockets on both sides, one span per request.
func TestHTTP2PriorKnowledge(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	const n = 10
	s := startSonde(t, nil, "--exe", "nginx", "--exe", "curl")
	port := startNginxH2C(t)
	for i := range n {
		path := fmt.Sprintf("/k/%d", i)
		if i == n-1 {
			path = "/missing"
		}
		out := run(t, curl, "-s", "--http2-prior-knowledge", "-w", "\n%{http_version}", "http://127.0.0.1:"+port+path)
		if !strings.HasSuffix(out, "\n2") {
			t.Fatalf("curl %d did not speak HTTP/2: %q", i, out)
		}
	}
	r := s.stop(t)
	curls := filter(r.spans, func(s span) bool { return exeName(s) == "curl" })
	servers := filter(r.spans, func(s span) bool { return exeName(s) == "nginx" })
	if len(curls) != n || len(servers) != n {
		t.Fatalf("want %d curl and %d nginx spans, got %d and %d\n%s", n, n, len(curls), len(servers), tlsSummary(r))
	}
	for i := range n - 1 {
		path := fmt.Sprintf("/k/%d", i)
		wantAttrs(t, findSpan(t, curls, "url.full", "http://127.0.0.1:"+port+path), map[string]string{
			"url.scheme": "http", "network.protocol.version": "2", "http.response.status_code": "200", "server.port": port,
		})
		wantAttrs(t, findSpan(t, servers, "url.path", path), map[string]string{
			"url.scheme": "http", "network.protocol.version": "2", "http.response.status_code": "200", "server.port": port,
		})
	}
	miss := findSpan(t, curls, "url.full", "http://127.0.0.1:"+port+"/missing")
	if miss.attr("http.response.status_code") != "404" || miss.Status.Code != "Error" {
		t.Errorf("a 404 fails the client span: %s", miss)
	}
	if sv := findSpan(t, servers, "url.path", "/missing"); sv.Status.Code == "Error" {
		t.Errorf("a 404 does not fail the server span: %s", sv)
	}
	wantNoParseErrors(t, r)
}

var h2loadDone = regexp.MustCompile(`requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded`)

// h2load, nghttp2's load generator, with 3 connections and 10 streams in
// flight on each: interleaved streams on one connection give exactly one
// span per request on each side, none crossed.
func TestHTTP2H2load(t *testing.T) {
	h2load := testutil.RequireTool(t, "h2load")
	const n = 300
	s := startSonde(t, nil, "--exe", "nginx", "--exe", "h2load")
	port := startNginxH2C(t)
	out := run(t, h2load, "-n", strconv.Itoa(n), "-c", "3", "-m", "10", "http://127.0.0.1:"+port+"/load")
	m := h2loadDone.FindStringSubmatch(out)
	if m == nil || m[3] != strconv.Itoa(n) {
		t.Fatalf("h2load did not complete %d requests:\n%s", n, out)
	}
	r := s.stop(t)
	clients := filter(r.spans, func(s span) bool { return exeName(s) == "h2load" })
	servers := filter(r.spans, func(s span) bool { return exeName(s) == "nginx" })
	if len(clients) != n || len(servers) != n {
		t.Fatalf("want %d h2load and %d nginx spans, got %d and %d\n%s", n, n, len(clients), len(servers), tlsSummary(r))
	}
	for _, sp := range append(clients, servers...) {
		if sp.attr("http.response.status_code") != "200" || sp.attr("network.protocol.version") != "2" ||
			(sp.Kind == "server" && sp.attr("url.path") != "/load") ||
			(sp.Kind == "client" && sp.attr("url.full") != "http://127.0.0.1:"+port+"/load") {
			t.Errorf("span: %s", sp)
		}
	}
	if c := len(distinct(servers, "network.peer.port")); c != 3 {
		t.Errorf("want the requests on 3 connections, nginx saw %d", c)
	}
	wantNoParseErrors(t, r)
	if r.stat("http2_headers_unknown") != 0 || r.stat("lost") != 0 {
		t.Errorf("stats: %v", r.stats)
	}
}

// startListener runs a testdata server that prints "listening ADDR" and
// returns it with the address.
func startListener(t *testing.T, bin string, args ...string) (*proc, string) {
	t.Helper()
	return startListenerEnv(t, nil, bin, args...)
}

// startListenerEnv is startListener with env added to the program's.
func startListenerEnv(t *testing.T, env []string, bin string, args ...string) (*proc, string) {
	t.Helper()
	p := startProc(t, env, bin, args...)
	var addr string
	waitFor(t, 15*time.Second, bin+" to listen", func() bool {
		if !p.alive() {
			t.Fatalf("%s exited: %s", bin, p.stderr.String())
		}
		line, _, ok := strings.Cut(p.stdout.String(), "\n")
		addr, _ = strings.CutPrefix(line, "listening ")
		return ok
	})
	return p, addr
}

// A Go server behind golang.org/x/net/http2/h2c, whose HTTP/2 the Go
// probes do not see (x/net's server, not net/http's bundled one): curl
// reaches it with prior knowledge, and both ends are read from the bytes.
// (The deprecated HTTP/1.1 "Upgrade: h2c", which this x/net no longer
// offers, is covered by the tracer's unit tests.)
func TestHTTP2H2CGoServer(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	const n = 6
	srv, addr := startListener(t, bins.h2cserver)
	s := startSonde(t, nil, "--pid", strconv.Itoa(srv.pid()), "--exe", "curl")
	for i := range n {
		out := run(t, curl, "-s", "--http2-prior-knowledge", fmt.Sprintf("http://%s/h2c/%d", addr, i))
		if out != fmt.Sprintf("HTTP/2.0 /h2c/%d\n", i) {
			t.Fatalf("curl: %q", out)
		}
	}
	r := s.stop(t)
	curls := filter(r.spans, func(s span) bool { return exeName(s) == "curl" })
	servers := filter(r.spans, byPID(srv.pid()))
	if len(curls) != n || len(servers) != n {
		t.Fatalf("want %d curl and %d server spans, got %d and %d\n%s", n, n, len(curls), len(servers), tlsSummary(r))
	}
	for i := range n {
		path := fmt.Sprintf("/h2c/%d", i)
		for _, sp := range []span{findSpan(t, curls, "url.full", "http://"+addr+path), findSpan(t, servers, "url.path", path)} {
			wantAttrs(t, sp, map[string]string{"http.response.status_code": "200", "network.protocol.version": "2", "http.request.method": "GET"})
		}
	}
	wantNoParseErrors(t, r)
}

// grpc-go from the bytes, with the Go probes off: every kind of call
// (unary, server streaming, client streaming, bidi) is one RPC span on
// each side, named by its method, with the status from the trailers; a
// failing call fails its spans.
func TestGRPCFromBytes(t *testing.T) {
	const rounds = 3
	srv, addr := startListener(t, bins.grpcpair, "server")
	s := startSonde(t, nil, "--go=false", "--pid", strconv.Itoa(srv.pid()), "--exe", "grpcpair")
	out := run(t, bins.grpcpair, "client", addr, strconv.Itoa(rounds))
	if out != fmt.Sprintf("ok %d\n", rounds) {
		t.Fatalf("client: %q", out)
	}
	r := s.stop(t)
	servers := filter(r.spans, byPID(srv.pid()))
	clients := filter(r.spans, func(sp span) bool {
		return exeName(sp) == "grpcpair" && sp.res("process.pid") != strconv.Itoa(srv.pid())
	})
	const calls = rounds*4 + 1
	if len(servers) != calls || len(clients) != calls {
		t.Fatalf("want %d server and %d client spans, got %d and %d\n%s", calls, calls, len(servers), len(clients), tlsSummary(r))
	}
	count := map[string]int{}
	for _, sp := range append(servers, clients...) {
		count[sp.Kind+" "+sp.Name]++
		want := map[string]string{"rpc.system.name": "grpc", "rpc.method": sp.Name, "rpc.response.status_code": "OK", "network.protocol.version": "2"}
		if sp.Name == "sonde.test.Echo/Fail" {
			want["rpc.response.status_code"] = "NOT_FOUND"
			if sp.Status.Code != "Error" || sp.Status.Message != "no such echo" {
				t.Errorf("the failing call does not fail its span: %s", sp)
			}
		} else if sp.Status.Code == "Error" {
			t.Errorf("a call that succeeded fails its span: %s", sp)
		}
		wantAttrs(t, sp, want)
	}
	for _, m := range []string{"Unary", "ServerStream", "ClientStream", "Bidi"} {
		for _, kind := range []string{"server", "client"} {
			if got := count[kind+" sonde.test.Echo/"+m]; got != rounds {
				t.Errorf("%d %s spans for %s, want %d", got, kind, m, rounds)
			}
		}
	}
	wantNoParseErrors(t, r)
}
