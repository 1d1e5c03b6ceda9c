package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"

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
