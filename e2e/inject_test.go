package e2e

import (
	"encoding/json"
	"fmt"
	"os"
	osexec "os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
)

// netns is a network namespace joined to the host's by a veth pair: a peer
// that is not on the host as far as the host's addresses go, which is the
// traffic injection is for, without a packet leaving the machine.
type netns struct {
	name           string
	hostIP, peerIP string
}

var netnsSeq atomic.Int32

func newNetns(t testing.TB) *netns {
	t.Helper()
	ip := testutil.RequireTool(t, "ip")
	n := int(netnsSeq.Add(1))
	subnet := fmt.Sprintf("10.%d.%d", 200+os.Getpid()%50, n)
	ns := &netns{name: fmt.Sprintf("sonde-e2e-%d-%d", os.Getpid(), n), hostIP: subnet + ".1", peerIP: subnet + ".2"}
	host, peer := fmt.Sprintf("sv%d-%d", os.Getpid()%10000, n), fmt.Sprintf("sp%d-%d", os.Getpid()%10000, n)
	run(t, ip, "netns", "add", ns.name)
	t.Cleanup(func() {
		// Deleting one end deletes the pair; the namespace goes last.
		_ = osexec.Command(ip, "link", "del", host).Run()
		_ = osexec.Command(ip, "netns", "del", ns.name).Run()
	})
	for _, args := range [][]string{
		{"link", "add", host, "type", "veth", "peer", "name", peer},
		{"link", "set", peer, "netns", ns.name},
		{"addr", "add", ns.hostIP + "/24", "dev", host},
		{"link", "set", host, "up"},
		{"-n", ns.name, "addr", "add", ns.peerIP + "/24", "dev", peer},
		{"-n", ns.name, "link", "set", peer, "up"},
		{"-n", ns.name, "link", "set", "lo", "up"},
	} {
		run(t, ip, args...)
	}
	return ns
}

// in returns the command prefix that runs a program inside the namespace.
func (ns *netns) in() []string { return []string{"ip", "netns", "exec", ns.name} }

// waitPortIn waits for a server in the namespace to listen on port.
func waitPortIn(t testing.TB, ns *netns, port string) {
	t.Helper()
	waitPort(t, ns.peerIP+":"+port)
}

// echoed is what testdata/inject/echo.py reports of one request.
type echoed struct {
	Path        string   `json:"path"`
	Traceparent []string `json:"traceparent"`
	Headers     int      `json:"headers"`
	Body        int      `json:"body"`
	Sum         int      `json:"sum"`
}

func parseEchoed(t *testing.T, out string) []echoed {
	t.Helper()
	var got []echoed
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var e echoed
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			t.Fatalf("client printed %q: %v", line, err)
		}
		got = append(got, e)
	}
	return got
}

const presentTraceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// traceparentOf is the header a span's request carried when it is the
// parent on the other side.
func traceparentOf(s span) string { return "00-" + s.TraceID + "-" + s.SpanID + "-01" }

// With --inject, requests to another host get a traceparent naming their
// client span, and nothing else about them changes: Content-Length bodies
// that look like requests, chunked bodies that look like a message end,
// three pipelined requests in one send, a request cut inside its method,
// a header name and its empty line, a 300 KB body, and the request after
// it. The receiving server, traced, makes its span a child of the client
// span. A request with its own traceparent keeps it. Traffic on the host
// is not touched.
func TestInjectTraceparent(t *testing.T) {
	python := requirePython(t)
	ns := newNetns(t)
	client := filepath.Join("testdata", "inject", "client.py")
	port := freePort(t)
	srv := startProc(t, nil, "ip", append(ns.in()[1:], python, filepath.Join("testdata", "inject", "echo.py"), port)...)
	waitPortIn(t, ns, port)

	// Without sonde, what the server receives.
	baseline := parseEchoed(t, run(t, python, client, ns.peerIP, port))

	s := startSonde(t, nil, "--inject", "--exe", "python3*")
	got := parseEchoed(t, run(t, python, client, ns.peerIP, port))
	// On the host, the same server bytes must be the client's own.
	local := freePort(t)
	startProc(t, nil, python, filepath.Join("testdata", "inject", "echo.py"), local)
	waitPort(t, "127.0.0.1:"+local)
	onHost := parseEchoed(t, run(t, python, client, "127.0.0.1", local))
	r := s.stop(t)

	if len(got) != len(baseline) || len(onHost) != len(baseline) {
		t.Fatalf("responses: %d without sonde, %d with, %d on the host", len(baseline), len(got), len(onHost))
	}
	clients := map[string]span{}
	servers := map[string]span{}
	for _, sp := range r.spans {
		switch {
		case sp.Kind == "client" && strings.HasPrefix(sp.attr("url.full"), "http://peer:"+port):
			clients[strings.TrimPrefix(sp.attr("url.full"), "http://peer:"+port)] = sp
		case sp.Kind == "server" && sp.res("process.pid") == fmt.Sprint(srv.pid()):
			servers[sp.attr("url.path")] = sp
		}
	}
	for i, want := range baseline {
		g := got[i]
		if g.Path != want.Path || g.Body != want.Body || g.Sum != want.Sum {
			t.Errorf("request %s arrived changed: %+v, without sonde %+v", want.Path, g, want)
			continue
		}
		if h := onHost[i]; len(h.Traceparent) != len(want.Traceparent) || h.Headers != want.Headers || h.Body != want.Body || h.Sum != want.Sum {
			t.Errorf("request %s on the host was changed: %+v, want %+v", want.Path, h, want)
		}
		c, ok := clients[want.Path]
		if !ok {
			t.Errorf("no client span for %s\n%s", want.Path, tlsSummary(r))
			continue
		}
		srvSpan, ok := servers[want.Path]
		if !ok {
			t.Errorf("no server span for %s\n%s", want.Path, tlsSummary(r))
			continue
		}
		if want.Path == "/present" {
			if len(g.Traceparent) != 1 || g.Traceparent[0] != presentTraceparent || g.Headers != want.Headers {
				t.Errorf("a request's own traceparent was not left alone: %+v", g)
			}
			if c.attr("sonde.traceparent.injected") != "" {
				t.Errorf("the client span of a request with its own traceparent says it was injected: %s", c)
			}
			continue
		}
		if len(g.Traceparent) != 1 || g.Headers != want.Headers+1 {
			t.Errorf("request %s: want exactly one traceparent and one header more, got %+v (without sonde %+v)", want.Path, g, want)
			continue
		}
		if g.Traceparent[0] != traceparentOf(c) || c.attr("sonde.traceparent.injected") != "true" {
			t.Errorf("request %s carried %s, but its client span is %s", want.Path, g.Traceparent[0], c)
		}
		if srvSpan.TraceID != c.TraceID || srvSpan.ParentSpanID != c.SpanID {
			t.Errorf("server span of %s is not the child of its client span:\nserver %s\nclient %s", want.Path, srvSpan, c)
		}
		// Both ends agree on where the request began, the injected bytes
		// notwithstanding.
		if c.attr("sonde.tcp.request_seq") == "" || c.attr("sonde.tcp.request_seq") != srvSpan.attr("sonde.tcp.request_seq") {
			t.Errorf("request %s: request_seq %q on the client, %q on the server", want.Path,
				c.attr("sonde.tcp.request_seq"), srvSpan.attr("sonde.tcp.request_seq"))
		}
	}
	injected := len(baseline) - 1
	if r.stat("injected") != float64(injected) || r.stat("inject_present") != 1 || r.stat("inject_adopted") != float64(injected) {
		t.Errorf("want %d injected, 1 present, %d adopted; stats: injected=%v present=%v adopted=%v", injected, injected,
			r.stat("injected"), r.stat("inject_present"), r.stat("inject_adopted"))
	}
	for _, k := range []string{"inject_off", "inject_failed", "inject_unmatched", "inject_detached"} {
		if r.stat(k) != 0 {
			t.Errorf("%s = %v, want 0", k, r.stat(k))
		}
	}
}

// An nginx that sonde does not trace receives the same requests whole:
// each is answered 200 on the one connection, and its access log shows the
// traceparent naming the client span.
func TestInjectUntracedNginx(t *testing.T) {
	python := requirePython(t)
	ns := newNetns(t)
	port := freePort(t)
	dir := t.TempDir()
	logPath := filepath.Join(dir, "inject.log")
	startNginxWith(t, ns.in(), ns.peerIP+":"+port, fmt.Sprintf(`  log_format inject '$request_uri $status $http_traceparent';
  server {
    listen %s:%s;
    access_log %s inject;
    location / { return 200 '{"path":"$request_uri"}'; }
  }`, ns.peerIP, port, logPath))
	waitPortIn(t, ns, port)

	s := startSonde(t, nil, "--inject", "--exe", "python3*")
	out := run(t, python, filepath.Join("testdata", "inject", "client.py"), ns.peerIP, port)
	r := s.stop(t)
	const requests = 11 // testdata/inject/client.py's
	if n := len(strings.Split(strings.TrimSpace(out), "\n")); n != requests {
		t.Fatalf("client got %d responses, want %d:\n%s", n, requests, out)
	}
	clients := map[string]span{}
	for _, sp := range r.spans {
		if sp.Kind == "client" {
			clients[strings.TrimPrefix(sp.attr("url.full"), "http://peer:"+port)] = sp
		}
	}
	var logged []string
	waitFor(t, 5*time.Second, "nginx to log every request", func() bool {
		b, _ := os.ReadFile(logPath)
		logged = strings.Split(strings.TrimSpace(string(b)), "\n")
		return len(logged) == requests
	})
	for _, line := range logged {
		f := strings.Fields(line)
		if len(f) != 3 || f[1] != "200" {
			t.Errorf("nginx logged %q", line)
			continue
		}
		c, ok := clients[f[0]]
		if !ok {
			t.Errorf("no client span for %s\n%s", f[0], tlsSummary(r))
			continue
		}
		want := traceparentOf(c)
		if f[0] == "/present" {
			want = presentTraceparent
		}
		if f[2] != want {
			t.Errorf("nginx got traceparent %s for %s, want %s", f[2], f[0], want)
		}
	}
}

// Go: a call made while serving carries its own span's IDs, which the Go
// probe named before the request was written, so the trace holds together
// across the hop: served request, its client call, and the server span on
// the other side, one trace, no span detached. A Go client that serves
// nothing gets IDs of its own the same way.
func TestInjectGo(t *testing.T) {
	t.Run("front", func(t *testing.T) { injectGo(t, false) })
	// curl is traced too: the front's served request is linked to curl's
	// call on the host, and curl's call, a root, joins the trace the
	// front's call named on the wire.
	t.Run("linked", func(t *testing.T) { injectGo(t, true) })
}

func injectGo(t *testing.T, traceCurl bool) {
	testutil.RequireUprobes(t)
	curl := testutil.RequireTool(t, "curl")
	ns := newNetns(t)
	backend := startProc(t, nil, "ip", append(ns.in()[1:], bins.goserver, "-addr", ns.peerIP+":0")...)
	backendAddr := waitListening(t, backend)
	args := []string{"--inject", "--exe", "goserver", "--exe", "goclient"}
	if traceCurl {
		args = append(args, "--exe", "curl")
	}
	s := startSonde(t, nil, args...)
	front := startGoServer(t)
	const n = 6
	given := map[string]string{} // the front's query: the traceparent curl sent
	for i := range n {
		args := []string{"-s", "-w", " %{http_code}"}
		query := fmt.Sprintf("url=http://%s/hello?i=%d", backendAddr, i)
		if i%2 == 1 {
			// The served request continues this trace; the kernel read
			// it on arrival, so the call it makes injects it too.
			tp := fmt.Sprintf("00-%032x-%016x-01", 0x5eed000+i, 0xf00d000+i)
			given[query] = tp
			args = append(args, "-H", "traceparent: "+tp)
		}
		out := run(t, curl, append(args, "http://"+front.addr+"/call?"+query)...)
		if !strings.HasSuffix(out, " 200") {
			t.Fatalf("call %d: %q", i, out)
		}
	}
	run(t, bins.goclient, "-url", "http://"+backendAddr+"/hello?root", "-n", "3")
	r := s.stop(t)

	byID := map[string]span{}
	for _, sp := range r.spans {
		byID[sp.SpanID] = sp
	}
	backendPID := fmt.Sprint(backend.pid())
	var chained, rooted int
	for _, sp := range r.spans {
		if sp.Kind != "server" || sp.res("process.pid") != backendPID {
			continue
		}
		c, ok := byID[sp.ParentSpanID]
		if !ok || c.Kind != "client" || c.TraceID != sp.TraceID || c.attr("sonde.traceparent.injected") != "true" {
			t.Errorf("backend span without its injected client span as parent: %s\n%s", sp, tlsSummary(r))
			continue
		}
		if strings.Contains(c.attr("url.full"), "root") {
			rooted++
			continue
		}
		f, ok := byID[c.ParentSpanID]
		if !ok || f.Kind != "server" || f.TraceID != sp.TraceID || f.res("process.pid") != fmt.Sprint(front.pid()) {
			t.Errorf("the front's call is not the child of the request it served: client %s\n%s", c, tlsSummary(r))
			continue
		}
		if tp, ok := given[f.attr("url.query")]; ok {
			if want := strings.Split(tp, "-"); f.TraceID != want[1] || f.ParentSpanID != want[2] {
				t.Errorf("curl sent %s; the front's span is %s", tp, f)
			}
		} else if traceCurl {
			if cc, ok := byID[f.ParentSpanID]; !ok || exeName(cc) != "curl" || cc.TraceID != sp.TraceID || cc.ParentSpanID != "" {
				t.Errorf("the front's span is not the child of curl's call, a root, in one trace: %s", f)
			}
		} else if f.ParentSpanID != "" {
			t.Errorf("the front's span has a parent, curl sent none: %s", f)
		}
		chained++
	}
	if chained != n || rooted != 3 {
		t.Errorf("want %d three-span traces across the hop and 3 goclient calls, got %d and %d\n%s", n, chained, rooted, tlsSummary(r))
	}
	if r.stat("inject_detached") != 0 || r.stat("injected") != n+3 {
		t.Errorf("injected=%v (want %d) inject_detached=%v (want 0)", r.stat("injected"), n+3, r.stat("inject_detached"))
	}
}

// A proxy without probes (nginx) forwards to another host: the forwarded
// request continues the served request's trace. With an incoming
// traceparent, the kernel read its trace from the served request and the
// injection names it; without one, the served request joins the trace its
// forwarded request named. Either way: nginx server, nginx client, backend
// server, one trace, in that tree.
func TestInjectThroughProxy(t *testing.T) {
	t.Run("plain", func(t *testing.T) { injectThroughProxy(t, false, false) })
	// nginx terminates TLS: the kernel reads the served request's
	// traceparent in the plaintext the OpenSSL probes see.
	t.Run("tls", func(t *testing.T) { injectThroughProxy(t, true, false) })
	// curl is traced too, over TLS, where no header can go: nginx's served
	// request is linked to curl's call on the host, and curl's call, a
	// root, joins the trace nginx's forwarded request named.
	t.Run("tls-linked", func(t *testing.T) { injectThroughProxy(t, true, true) })
}

func injectThroughProxy(t *testing.T, tls, traceCurl bool) {
	python := requirePython(t)
	curl := testutil.RequireTool(t, "curl")
	ns := newNetns(t)
	port := freePort(t)
	backend := startProc(t, nil, "ip", append(ns.in()[1:], python, filepath.Join("testdata", "inject", "echo.py"), port)...)
	waitPortIn(t, ns, port)

	args := []string{"--inject", "--exe", "nginx", "--exe", "python3*"}
	if traceCurl {
		args = append(args, "--exe", "curl")
	}
	s := startSonde(t, nil, args...)
	front := freePort(t)
	listen, scheme := "", "http"
	if tls {
		cert, key := tlsCert(t)
		listen, scheme = fmt.Sprintf(" ssl;\n    ssl_certificate %s;\n    ssl_certificate_key %s", cert, key), "https"
	}
	startNginx(t, "127.0.0.1:"+front, fmt.Sprintf(`  server {
    listen 127.0.0.1:%s%s;
    location / {
      proxy_pass http://%s:%s;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header traceparent "";
    }
  }`, front, listen, ns.peerIP, port))
	// nginx drops the incoming traceparent: one it forwarded would be left
	// alone, and the backend would be curl's child, skipping nginx.
	const n = 10
	given := map[string]string{} // path: the traceparent curl sent
	for i := range n {
		path := fmt.Sprintf("/r/%d", i)
		args := []string{"-sk", "--http1.1", "-o", "/dev/null", "-w", "%{http_code}"}
		if i%2 == 1 {
			tp := fmt.Sprintf("00-%032x-%016x-01", 0xabc000+i, 0xdef000+i)
			given[path] = tp
			args = append(args, "-H", "traceparent: "+tp)
		}
		if out := run(t, curl, append(args, scheme+"://127.0.0.1:"+front+path)...); out != "200" {
			t.Fatalf("curl %s: %q", path, out)
		}
	}
	r := s.stop(t)

	byID := map[string]span{}
	for _, sp := range r.spans {
		byID[sp.SpanID] = sp
	}
	trees := 0
	for _, b := range r.spans {
		if b.Kind != "server" || b.res("process.pid") != fmt.Sprint(backend.pid()) {
			continue
		}
		path := b.attr("url.path")
		c, ok := byID[b.ParentSpanID]
		if !ok || c.Kind != "client" || exeName(c) != "nginx" || c.TraceID != b.TraceID || c.attr("sonde.traceparent.injected") != "true" {
			t.Errorf("%s: backend span without nginx's injected call as parent: %s", path, b)
			continue
		}
		f, ok := byID[c.ParentSpanID]
		if !ok || f.Kind != "server" || exeName(f) != "nginx" || f.TraceID != b.TraceID || f.attr("url.path") != path {
			t.Errorf("%s: nginx's call is not the child of the request it forwarded: %s", path, c)
			continue
		}
		if tp, ok := given[path]; ok {
			if want := strings.Split(tp, "-"); f.TraceID != want[1] || f.ParentSpanID != want[2] {
				t.Errorf("%s: curl sent %s, the trace is %s with parent %s", path, tp, f.TraceID, f.ParentSpanID)
			}
		} else if traceCurl {
			if cc, ok := byID[f.ParentSpanID]; !ok || exeName(cc) != "curl" || cc.TraceID != b.TraceID || cc.ParentSpanID != "" {
				t.Errorf("%s: nginx's served request is not the child of curl's call, a root, in one trace: %s", path, f)
			}
		} else if f.ParentSpanID != "" {
			t.Errorf("%s: nginx's served request has a parent, curl sent none: %s", path, f)
		}
		trees++
	}
	if trees != n {
		t.Errorf("want %d three-span trees, got %d\n%s", n, trees, tlsSummary(r))
	}
	if r.stat("injected") != n || r.stat("inject_detached") != 0 {
		t.Errorf("injected=%v (want %d) inject_detached=%v (want 0)", r.stat("injected"), n, r.stat("inject_detached"))
	}
}

// What is not a plaintext HTTP/1 request is never changed: HTTP/2 with
// prior knowledge and bytes that are no protocol each turn injection off
// for their connection, counted, and arrive as sent.
func TestInjectLeavesOtherBytesAlone(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	python := requirePython(t)
	ns := newNetns(t)
	port, h1 := freePort(t), freePort(t)
	startNginxWith(t, ns.in(), ns.peerIP+":"+port, fmt.Sprintf(`  server {
    listen %[1]s:%[2]s http2;
    location / { return 200 "h2c\n"; }
  }
  server {
    listen %[1]s:%[3]s;
    location / { return 200 "h1\n"; }
  }`, ns.peerIP, port, h1))
	waitPortIn(t, ns, port)
	waitPortIn(t, ns, h1)
	s := startSonde(t, nil, "--inject", "--exe", "curl", "--exe", "python3*")
	out := run(t, curl, "-s", "--http2-prior-knowledge", "-w", " %{http_version}", "http://"+ns.peerIP+":"+port+"/")
	if out != "h2c\n 2" {
		t.Fatalf("curl over h2c: %q", out)
	}
	// Random bytes, then what an HTTP/1 request would be: nginx answers
	// 400 to the first bytes, which it must see unchanged to do so.
	garbage := `import os, socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])))
s.sendall(bytes((i * 7 + 3) % 256 for i in range(2000)) + b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
print(s.recv(100).split(b"\r\n")[0].decode(errors="replace"))`
	if out := strings.TrimSpace(run(t, python, "-c", garbage, ns.peerIP, h1)); !strings.Contains(out, " 400 ") {
		t.Errorf("garbage got %q, want a 400", out)
	}
	r := s.stop(t)
	if r.stat("injected") != 0 || r.stat("inject_off") != 2 || r.stat("inject_failed") != 0 {
		t.Errorf("injected=%v inject_off=%v (want 0 and 2, one per connection) inject_failed=%v",
			r.stat("injected"), r.stat("inject_off"), r.stat("inject_failed"))
	}
}

// Random requests, pipelined on one connection and cut at random points
// into separate sends (testdata/inject/splits.py): bodies of bytes that
// look like framing, Content-Length and chunked with random chunk sizes,
// extensions and trailers, header names in random case. Every request
// arrives with its body intact and exactly one traceparent, for every
// seed, and injection never has to give up on valid HTTP/1.
func TestInjectRandomSplits(t *testing.T) {
	python := requirePython(t)
	ns := newNetns(t)
	port := freePort(t)
	startProc(t, nil, "ip", append(ns.in()[1:], python, filepath.Join("testdata", "inject", "echo.py"), port)...)
	waitPortIn(t, ns, port)
	s := startSonde(t, nil, "--inject", "--exe", "python3*")
	const seeds, perSeed = 8, 40
	for seed := 1; seed <= seeds; seed++ {
		out := run(t, python, filepath.Join("testdata", "inject", "splits.py"), fmt.Sprint(seed), ns.peerIP, port, fmt.Sprint(perSeed))
		lines := strings.Split(strings.TrimSpace(out), "\n")
		var want struct{ Expect []echoed }
		if err := json.Unmarshal([]byte(lines[len(lines)-1]), &want); err != nil || len(want.Expect) != perSeed {
			t.Fatalf("seed %d: no expectations: %v\n%s", seed, err, out)
		}
		got := parseEchoed(t, strings.Join(lines[:len(lines)-1], "\n"))
		if len(got) != perSeed {
			t.Fatalf("seed %d: %d responses, want %d", seed, len(got), perSeed)
		}
		for i, w := range want.Expect {
			g := got[i]
			if g.Path != w.Path || g.Body != w.Body || g.Sum != w.Sum || len(g.Traceparent) != 1 {
				t.Errorf("seed %d request %d: got %+v, sent %+v with one traceparent to come", seed, i, g, w)
			}
		}
	}
	r := s.stop(t)
	if r.stat("injected") != seeds*perSeed || r.stat("inject_off") != 0 || r.stat("inject_failed") != 0 {
		t.Errorf("injected=%v (want %d) inject_off=%v inject_failed=%v (want 0)",
			r.stat("injected"), seeds*perSeed, r.stat("inject_off"), r.stat("inject_failed"))
	}
}
