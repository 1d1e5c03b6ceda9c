package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
)

// One request across five programs on one host is one trace with the
// right tree, with no injection and no code change: curl calls nginx over
// TLS; nginx proxies to a Go HTTP service, which calls a grpc-go backend,
// which calls python's http.server. 100 requests in a row, then 8 clients
// at once.
//
//	curl client GET /work?i=N
//	└── nginx server GET (TLS, same-host link)
//	    └── nginx client GET /work?i=N (proxy link)
//	        └── Go server GET (same-host link)
//	            └── Go gRPC client sonde.test.Echo/Unary (goroutine)
//	                └── grpc-go server sonde.test.Echo/Unary (same-host link, HTTP/2 stream)
//	                    └── Go client GET (goroutine)
//	                        └── python server GET (same-host link)
func TestMultiHopTrace(t *testing.T) {
	requireTracing(t)
	testutil.RequireUprobes(t)
	curl := testutil.RequireTool(t, "curl")
	python := requirePython(t)
	cert, key := tlsCert(t)
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "index.html"), []byte("python\n"), 0o644)

	s := startSonde(t, nil, "--exe", "nginx", "--exe", "curl", "--exe", "python3*", "--exe", bins.grpcpair)
	pyPort := freePort(t)
	py := startProc(t, nil, python, "-m", "http.server", "--bind", "127.0.0.1", "--directory", www, pyPort)
	waitPort(t, "127.0.0.1:"+pyPort)
	backend, backendAddr := startListener(t, bins.grpcpair, "server", "http://127.0.0.1:"+pyPort+"/")
	front, frontAddr := startListener(t, bins.grpcpair, "front", backendAddr)
	port := freePort(t)
	startNginx(t, "127.0.0.1:"+port, fmt.Sprintf(`  server {
    listen 127.0.0.1:%s ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    location / { proxy_pass http://%s; }
  }`, port, cert, key, frontAddr))
	waitGoProbesOn(t, s, bins.grpcpair)

	get := func(i int) {
		out, err := runErr(curl, "-sk", "--http1.1", fmt.Sprintf("https://127.0.0.1:%s/work?i=%d", port, i))
		if err != nil || out != "front" {
			t.Errorf("request %d: %v %q", i, err, out)
		}
	}
	const sequential, clients, each = 100, 8, 10
	for i := range sequential {
		get(i)
	}
	var wg sync.WaitGroup
	for c := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				get(sequential + c*each + j)
			}
		}()
	}
	wg.Wait()
	total := sequential + clients*each
	waitFor(t, 60*time.Second, "every request's spans", func() bool {
		return len(filter(s.jsonSpans(), byPID(py.pid()))) >= total
	})
	time.Sleep(2500 * time.Millisecond) // anything still waiting for its other end is exported after its hold
	r := s.stop(t)

	byTrace := map[string][]span{}
	for _, sp := range r.spans {
		byTrace[sp.TraceID] = append(byTrace[sp.TraceID], sp)
	}
	roots := filter(r.spans, func(sp span) bool { return exeName(sp) == "curl" })
	if len(roots) != total {
		t.Fatalf("%d curl spans, want %d\n%s", len(roots), total, tlsSummary(sondeResult{spans: roots, stats: r.stats}))
	}
	type hop struct {
		exe, kind, name string
		pid             int
	}
	want := []hop{
		{"curl", "client", "GET", 0},
		{"nginx", "server", "GET", 0},
		{"nginx", "client", "GET", 0},
		{"grpcpair", "server", "GET", front.pid()},
		{"grpcpair", "client", "sonde.test.Echo/Unary", front.pid()},
		{"grpcpair", "server", "sonde.test.Echo/Unary", backend.pid()},
		{"grpcpair", "client", "GET", backend.pid()},
		{exeName(filter(r.spans, byPID(py.pid()))[0]), "server", "GET", py.pid()},
	}
	bad := 0
	for _, root := range roots {
		spans := byTrace[root.TraceID]
		problem := ""
		if root.ParentSpanID != "" {
			problem = "the curl span has a parent"
		} else if len(spans) != len(want) {
			var have []string
			for _, sp := range spans {
				have = append(have, exeName(sp)+" "+sp.Kind+" "+sp.Name)
			}
			problem = fmt.Sprintf("%d spans in the trace, want %d: %v", len(spans), len(want), have)
		} else {
			cur := root
			for depth, h := range want[1:] {
				var kids []span
				for _, sp := range spans {
					if sp.ParentSpanID == cur.SpanID {
						kids = append(kids, sp)
					}
				}
				if len(kids) != 1 {
					problem = fmt.Sprintf("%d children at depth %d under %s %s", len(kids), depth+1, cur.Kind, cur.Name)
					break
				}
				k := kids[0]
				if exeName(k) != h.exe || k.Kind != h.kind || k.Name != h.name || (h.pid != 0 && k.res("process.pid") != strconv.Itoa(h.pid)) {
					problem = fmt.Sprintf("depth %d is %s %s %s (pid %s), want %+v", depth+1, exeName(k), k.Kind, k.Name, k.res("process.pid"), h)
					break
				}
				if k.Start.Before(cur.Start.Add(-5*time.Millisecond)) || k.End.After(cur.End.Add(5*time.Millisecond)) {
					problem = fmt.Sprintf("depth %d lies outside its parent's time: child starts %v after the parent and ends %v after it",
						depth+1, k.Start.Sub(cur.Start), k.End.Sub(cur.End))
					break
				}
				cur = k
			}
			// The request at each HTTP/1 hop is the one curl made.
			q := strings.TrimPrefix(root.attr("url.full"), "https://127.0.0.1:"+port)
			for _, sp := range spans {
				if exeName(sp) == "nginx" && sp.Kind == "client" && !strings.HasSuffix(sp.attr("url.full"), q) {
					problem = "nginx forwarded " + sp.attr("url.full") + " under " + q
				}
			}
		}
		if problem != "" {
			bad++
			if bad <= 5 {
				t.Errorf("trace of %s: %s", root.attr("url.full"), problem)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d traces are wrong (stats: linked %v, proxy_linked %v, link_unmatched %v)",
			bad, total, r.stats["linked"], r.stats["proxy_linked"], r.stats["link_unmatched"])
	}
	// Every connection opened after sonde attached, at high churn: sockets
	// freed and reused for the next connection before sonde read the
	// last one's events must not take that one's role, nor leave their
	// own connection to be followed as one joined in the middle.
	if n := r.stat("parse_errors_total"); n != 0 {
		t.Errorf("%v parse errors on clean traffic: %v", n, r.stats["parse_errors"])
	}
	if n := r.stat("conns_joined"); n != 0 {
		t.Errorf("%v connections followed as joined in the middle, want none", n)
	}
}

// runErr runs a command and returns its standard output.
func runErr(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).Output()
	return string(out), err
}
