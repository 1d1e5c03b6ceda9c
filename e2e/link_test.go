package e2e

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
)

// Same-host linking with no injection: sonde sees both ends of each
// connection, and each server span becomes the child of its client span,
// in its trace. curl to python (neither is Go) and to a Go server, three
// requests on one keep-alive connection each; grpc-go to grpc-go, five
// calls as streams of one HTTP/2 connection (unary and streaming).
func TestSameHostLinking(t *testing.T) {
	requireTracing(t)
	testutil.RequireUprobes(t)
	curl := testutil.RequireTool(t, "curl")
	python := requirePython(t)
	pyPort := freePort(t)
	py := startProc(t, nil, python, "-m", "http.server", "--bind", "127.0.0.1", "--directory", t.TempDir(), pyPort)
	waitPort(t, "127.0.0.1:"+pyPort)
	gs := startGoServer(t)
	grpcSrv, grpcAddr := startListener(t, bins.grpcpair, "server")
	s := startSonde(t, nil, "--exe", "curl", "--pid", strconv.Itoa(py.pid()), "--pid", strconv.Itoa(gs.pid()), "--exe", bins.grpcpair)
	waitGoProbesOn(t, s, bins.grpcpair)

	py404 := "http://127.0.0.1:" + pyPort
	run(t, curl, "-s", "-o", "/dev/null", py404+"/a", "-o", "/dev/null", py404+"/b", "-o", "/dev/null", py404+"/c")
	goURL := "http://" + gs.addr
	run(t, curl, "-s", "-o", "/dev/null", goURL+"/hello", "-o", "/dev/null", goURL+"/status/503", "-o", "/dev/null", goURL+"/hello")
	if out := run(t, bins.grpcpair, "client", grpcAddr, "1"); out != "ok 1\n" {
		t.Fatalf("grpcpair client: %q", out)
	}
	const want = 3 + 3 + 5
	waitFor(t, 30*time.Second, "the linked spans", func() bool {
		return len(s.jsonSpans()) >= 2*want
	})
	time.Sleep(2500 * time.Millisecond) // a server span whose client never came is exported after its hold
	r := s.stop(t)

	byID := map[string]span{}
	for _, sp := range r.spans {
		byID[sp.SpanID] = sp
	}
	for _, server := range []struct {
		label string
		pid   int
		n     int
	}{{"python", py.pid(), 3}, {"Go server", gs.pid(), 3}, {"grpc-go server", grpcSrv.pid(), 5}} {
		spans := filter(r.spans, byPID(server.pid))
		if len(spans) != server.n {
			t.Errorf("%s: %d spans, want %d", server.label, len(spans), server.n)
		}
		for _, sp := range spans {
			parent, ok := byID[sp.ParentSpanID]
			if !ok || parent.Kind != "client" || parent.TraceID != sp.TraceID || parent.res("process.pid") == sp.res("process.pid") {
				t.Errorf("%s: span is not the child of its client span: %s\nparent %s", server.label, sp, parent)
				continue
			}
			// The right exchange: the client asked for what was served.
			if p := sp.attr("url.path"); p != "" && !strings.HasSuffix(parent.attr("url.full"), p) {
				t.Errorf("%s: the span of %s is the child of the call to %s", server.label, p, parent.attr("url.full"))
			}
			if sp.attr("rpc.method") != parent.attr("rpc.method") {
				t.Errorf("%s: %s linked to %s", server.label, sp.Name, parent.Name)
			}
			if sp.Start.Before(parent.Start.Add(-5*time.Millisecond)) || sp.End.After(parent.End.Add(5*time.Millisecond)) {
				t.Errorf("%s: child outside its parent's time: %s\nparent %s", server.label, sp, parent)
			}
		}
	}
	if got := r.stat("linked"); got != want {
		t.Errorf("linked = %v, want %d (unmatched %v)", got, want, r.stats["link_unmatched"])
	}
}

// wantLinked wants every child span to be the child of one of parents, in
// its trace, and each parent to have one child at most.
func wantLinked(t *testing.T, label string, children, parents []span) {
	t.Helper()
	byID := map[string]span{}
	for _, p := range parents {
		byID[p.SpanID] = p
	}
	used := map[string]bool{}
	for _, c := range children {
		p, ok := byID[c.ParentSpanID]
		if !ok || p.TraceID != c.TraceID {
			t.Errorf("%s: not linked: %s", label, c)
			continue
		}
		if used[p.SpanID] {
			t.Errorf("%s: two spans linked to one call: %s", label, p)
		}
		used[p.SpanID] = true
	}
}
