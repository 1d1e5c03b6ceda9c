package e2e

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/otlptest"
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
			// Both ends of an HTTP/1 exchange number its bytes alike: the
			// data a backend needs to pair them across hosts.
			if sp.attr("rpc.method") == "" {
				for _, k := range []string{"sonde.tcp.request_seq", "sonde.tcp.response_seq"} {
					if sp.attr(k) == "" || sp.attr(k) != parent.attr(k) {
						t.Errorf("%s: %s %q on the server, %q on the client", server.label, k, sp.attr(k), parent.attr(k))
					}
				}
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

// The service map, from a running sonde and from a recording: curl calls
// python three times (one of them a 404), grpc-go calls itself five times.
func TestServiceMap(t *testing.T) {
	requireTracing(t)
	testutil.RequireUprobes(t)
	curl := testutil.RequireTool(t, "curl")
	python := requirePython(t)
	pyPort := freePort(t)
	py := startProc(t, nil, python, "-m", "http.server", "--bind", "127.0.0.1", "--directory", t.TempDir(), pyPort)
	waitPort(t, "127.0.0.1:"+pyPort)
	_, grpcAddr := startListener(t, bins.grpcpair, "server")
	metricsAddr := "127.0.0.1:" + freePort(t)
	rec := filepath.Join(t.TempDir(), "spans.jsonl")
	s := startSonde(t, nil, "--exe", "curl", "--pid", strconv.Itoa(py.pid()), "--exe", bins.grpcpair,
		"--record", rec, "--metrics-addr", metricsAddr)
	waitGoProbesOn(t, s, bins.grpcpair)
	u := "http://127.0.0.1:" + pyPort + "/"
	for range 3 {
		run(t, curl, "-s", "-o", "/dev/null", u)
	}
	if out := run(t, bins.grpcpair, "client", grpcAddr, "1"); out != "ok 1\n" {
		t.Fatalf("grpcpair client: %q", out)
	}
	pyService := ""
	waitFor(t, 30*time.Second, "the spans", func() bool {
		spans := s.jsonSpans()
		for _, sp := range filter(spans, byPID(py.pid())) {
			pyService = sp.res("service.name")
		}
		return len(spans) >= 2*(3+5)
	})
	type edge struct {
		Client, Server string
		External       bool
		Requests       int
		P50            float64 `json:"p50_ms"`
	}
	check := func(label string, out string) {
		t.Helper()
		var m struct{ Edges []edge }
		if err := json.Unmarshal([]byte(out), &m); err != nil {
			t.Fatalf("%s: %v\n%s", label, err, out)
		}
		want := map[string]int{"curl->" + pyService: 3, "grpcpair->grpcpair": 5}
		for _, e := range m.Edges {
			k := e.Client + "->" + e.Server
			if n, ok := want[k]; ok {
				if e.Requests != n || e.External || e.P50 <= 0 {
					t.Errorf("%s: edge %+v, want %d requests", label, e, n)
				}
				delete(want, k)
			}
		}
		if len(want) > 0 {
			t.Errorf("%s: edges %v missing from %s", label, want, out)
		}
	}
	// Client spans wait two seconds for a server span before they count
	// as calls to an address: the map is asked after that.
	time.Sleep(2500 * time.Millisecond)
	check("running sonde", run(t, bins.sonde, "map", "--from", "http://"+metricsAddr, "--format", "json"))
	s.stop(t)
	check("recording", run(t, bins.sonde, "map", "--from", rec, "--format", "json"))
	table := run(t, bins.sonde, "map", "--from", rec)
	dot := run(t, bins.sonde, "map", "--from", rec, "--format", "dot")
	mermaid := run(t, bins.sonde, "map", "--from", rec, "--format", "mermaid")
	for label, out := range map[string]string{"table": table, "dot": dot, "mermaid": mermaid} {
		if !strings.Contains(out, pyService) || !strings.Contains(out, "grpcpair") || !strings.Contains(out, "curl") {
			t.Errorf("%s lacks a node:\n%s", label, out)
		}
	}
	if !strings.Contains(dot, `"curl" -> "`+pyService+`"`) || !strings.HasPrefix(mermaid, "flowchart LR") {
		t.Errorf("dot:\n%s\nmermaid:\n%s", dot, mermaid)
	}
}

// The service graph metrics go over OTLP with the spans, named and
// labelled as Grafana's service graphs query them: curl called python four
// times, one of them a 404.
func TestServiceGraphMetrics(t *testing.T) {
	requireTracing(t)
	curl := testutil.RequireTool(t, "curl")
	python := requirePython(t)
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "hello.txt"), []byte("hello\n"), 0o644)
	pyPort := freePort(t)
	py := startProc(t, nil, python, "-m", "http.server", "--bind", "127.0.0.1", "--directory", www, pyPort)
	waitPort(t, "127.0.0.1:"+pyPort)
	rcv := otlptest.Start(t)
	s := startSonde(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.Endpoint(), "OTEL_METRIC_EXPORT_INTERVAL=500"},
		"--output", "otlp", "--exe", "curl", "--pid", strconv.Itoa(py.pid()))
	u := "http://127.0.0.1:" + pyPort
	for _, p := range []string{"/hello.txt", "/hello.txt", "/missing", "/hello.txt"} {
		run(t, curl, "-s", "-o", "/dev/null", u+p)
	}
	spans := rcv.WaitSpans(t, 8, 30*time.Second)
	pyService := ""
	for _, sp := range spans {
		if sp.Kind == "server" {
			pyService, _ = sp.Resource["service.name"].(string)
		}
	}
	latest := func(pts []otlptest.Point, name string) (otlptest.Point, bool) {
		var last otlptest.Point
		found := false
		for _, p := range pts {
			if p.Metric == name && p.Attributes["client"] == "curl" && p.Attributes["server"] == pyService {
				last, found = p, true
			}
		}
		return last, found
	}
	pts := rcv.WaitPoints(t, 30*time.Second, func(pts []otlptest.Point) bool {
		p, ok := latest(pts, "traces_service_graph_request_total")
		return ok && p.Value >= 4
	})
	s.stop(t)
	total, _ := latest(pts, "traces_service_graph_request_total")
	failed, okFailed := latest(pts, "traces_service_graph_request_failed_total")
	client, okClient := latest(pts, "traces_service_graph_request_client_seconds")
	server, okServer := latest(pts, "traces_service_graph_request_server_seconds")
	if total.Value != 4 || !total.Monotonic || !total.Cumulative || total.Attributes["connection_type"] != nil {
		t.Errorf("request_total: %+v", total)
	}
	if !okFailed || failed.Value != 1 {
		t.Errorf("request_failed_total: %+v", failed)
	}
	if !okClient || client.Count != 4 || client.Sum <= 0 || client.Unit != "s" {
		t.Errorf("request_client_seconds: %+v", client)
	}
	if !okServer || server.Count != 4 || server.Sum <= 0 || server.Sum > client.Sum {
		t.Errorf("request_server_seconds: %+v (client %+v)", server, client)
	}
	if total.Resource["service.name"] != "sonde" {
		t.Errorf("metrics resource %v, want service.name=sonde", total.Resource)
	}
}
