package servicemap

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

var t0 = time.Unix(1_800_000_000, 0)

func id(n int) (b [8]byte) {
	b[0], b[6], b[7] = 1, byte(n>>8), byte(n) // never the zero ID
	return b
}

func call(n int, from, to string, d time.Duration, failed bool) (client, server Span) {
	client = Span{SpanID: id(n), Kind: KindClient, Service: from, Peer: to + ":80", Start: t0, End: t0.Add(d), Error: failed}
	server = Span{SpanID: id(n + 10000), ParentID: id(n), Kind: KindServer, Service: to, Peer: "127.0.0.1",
		Start: t0.Add(d / 10), End: t0.Add(d * 9 / 10), Error: failed}
	return
}

// Edges come from client spans and the server spans that are their
// children, in either order; a client span nothing explains is a call to
// its address once it waited, and a server span with no client span a call
// from outside.
func TestBuilderEdges(t *testing.T) {
	b := NewBuilder(&Options{Wait: time.Second})
	for i := range 100 {
		c, s := call(i, "front", "api", time.Duration(i+1)*time.Millisecond, i%10 == 0)
		if i%2 == 0 {
			b.Add(c, t0)
			b.Add(s, t0)
		} else {
			b.Add(s, t0)
			b.Add(c, t0)
		}
	}
	b.Add(Span{SpanID: id(500), Kind: KindClient, Service: "api", Peer: "db.internal:5432", Start: t0, End: t0.Add(2 * time.Millisecond)}, t0)
	b.Add(Span{SpanID: id(501), Kind: KindServer, Service: "front", Peer: "10.0.0.9", Start: t0, End: t0.Add(time.Millisecond)}, t0)
	b.Flush(t0.Add(500*time.Millisecond), false)
	if m := b.Map(); len(m.Edges) != 2 {
		t.Errorf("before the wait: %+v", m.Edges)
	}
	b.Flush(t0.Add(2*time.Second), false)
	m := b.Map()
	want := []struct {
		client, server string
		external       bool
		n, errs        uint64
	}{
		{"10.0.0.9", "front", true, 1, 0},
		{"api", "db.internal:5432", true, 1, 0},
		{"front", "api", false, 100, 10},
	}
	if len(m.Edges) != len(want) {
		t.Fatalf("edges %+v", m.Edges)
	}
	for i, w := range want {
		e := m.Edges[i]
		if e.Client != w.client || e.Server != w.server || e.External != w.external || e.Requests != w.n || e.Errors != w.errs {
			t.Errorf("edge %d: %+v, want %+v", i, e, w)
		}
	}
	// Latencies 1..100 ms: p50 about 50 ms, p99 about 99 ms, within a bucket.
	e := m.Edges[2]
	if e.P50 < 50*time.Millisecond || e.P50 > 55*time.Millisecond || e.P99 < 99*time.Millisecond || e.P99 > 109*time.Millisecond {
		t.Errorf("p50 %v p99 %v", e.P50, e.P99)
	}
	nodes := fmt.Sprint(m.Nodes)
	if nodes != "[{10.0.0.9 true} {api false} {db.internal:5432 true} {front false}]" {
		t.Errorf("nodes %s", nodes)
	}
}

// The builder's memory is bounded: beyond MaxPending client spans count at
// once, beyond MaxEdges calls are dropped and counted.
func TestBuilderBounds(t *testing.T) {
	b := NewBuilder(&Options{MaxPending: 2, MaxEdges: 2})
	for i := range 5 {
		b.Add(Span{SpanID: id(i), Kind: KindClient, Service: "a", Peer: fmt.Sprintf("h%d:1", i), Start: t0, End: t0}, t0)
	}
	if len(b.pending) != 2 {
		t.Errorf("%d pending, want 2", len(b.pending))
	}
	b.Flush(t0, true)
	if m := b.Map(); len(m.Edges) != 2 || b.Dropped != 3 {
		t.Errorf("%d edges, %d dropped; want 2 and 3", len(m.Edges), b.Dropped)
	}
}

func testMap(t *testing.T) Map {
	b := NewBuilder(nil)
	c, s := call(1, "front", "api", 3*time.Millisecond, true)
	b.Add(c, t0)
	b.Add(s, t0)
	b.Add(Span{SpanID: id(2), Kind: KindClient, Service: "api", Peer: `we"ird:1`, Start: t0, End: t0.Add(time.Millisecond)}, t0)
	b.Flush(t0, true)
	return b.Map()
}

func TestFormats(t *testing.T) {
	m := testMap(t)
	var buf bytes.Buffer
	if err := WriteTable(&buf, m); err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSpace(buf.String()), "\n"); len(lines) != 3 || !strings.HasPrefix(lines[0], "CLIENT") ||
		!strings.Contains(lines[2], "front") || !strings.Contains(lines[2], "1") {
		t.Errorf("table:\n%s", buf.String())
	}
	buf.Reset()
	if err := WriteDOT(&buf, m); err != nil {
		t.Fatal(err)
	}
	dot := buf.String()
	if !strings.HasPrefix(dot, "digraph") || !strings.Contains(dot, `"front" -> "api"`) || !strings.Contains(dot, `"we\"ird:1" [shape=ellipse, style=dashed]`) ||
		!strings.Contains(dot, "color=red") {
		t.Errorf("dot:\n%s", dot)
	}
	buf.Reset()
	if err := WriteMermaid(&buf, m); err != nil {
		t.Fatal(err)
	}
	mm := buf.String()
	if !strings.HasPrefix(mm, "flowchart LR\n") || strings.Count(mm, "-->") != 2 || strings.Contains(mm, `we"ird`) {
		t.Errorf("mermaid:\n%s", mm)
	}
	buf.Reset()
	if err := WriteJSON(&buf, m); err != nil {
		t.Fatal(err)
	}
	back, err := ReadJSON(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(back.Nodes) != fmt.Sprint(m.Nodes) || len(back.Edges) != len(m.Edges) {
		t.Errorf("JSON round trip: %+v, want %+v", back, m)
	}
	for i := range m.Edges {
		a, b := back.Edges[i], m.Edges[i]
		if a.Client != b.Client || a.Server != b.Server || a.Requests != b.Requests || a.Errors != b.Errors ||
			(a.P99-b.P99).Abs() > time.Microsecond {
			t.Errorf("edge %d: %+v, want %+v", i, a, b)
		}
	}
}

const recording = `{"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"00000000000000a1","parent_span_id":"","name":"GET","kind":"client","start":"2026-12-01T10:00:00Z","end":"2026-12-01T10:00:00.004Z","status":{"code":"Unset","message":""},"attributes":{"server.address":"127.0.0.1","server.port":8000},"resource":{"service.name":"curl"}}
{"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"00000000000000b2","parent_span_id":"00000000000000a1","name":"GET","kind":"server","start":"2026-12-01T10:00:00.001Z","end":"2026-12-01T10:00:00.003Z","status":{"code":"Error","message":""},"attributes":{"network.peer.address":"127.0.0.1"},"resource":{"service.name":"python3"}}

{"trace_id":"0af7651916cd43dd8448eb211c80319c","span_id":"00000000000000c3","parent_span_id":"","name":"GET","kind":"client","start":"2026-12-01T10:00:01Z","end":"2026-12-01T10:00:01.002Z","status":{"code":"Unset","message":""},"attributes":{"server.address":"example.com","server.port":443},"resource":{"service.name":"curl"}}
`

func TestReadSpans(t *testing.T) {
	b := NewBuilder(nil)
	now := time.Now()
	if err := ReadSpans(strings.NewReader(recording), func(s Span) { b.Add(s, now) }); err != nil {
		t.Fatal(err)
	}
	b.Flush(now, true)
	m := b.Map()
	if len(m.Edges) != 2 || m.Edges[0].Server != "example.com:443" || m.Edges[1].Server != "python3" ||
		m.Edges[1].Errors != 1 || m.Edges[1].P50 < 4*time.Millisecond || m.Edges[1].P50 > 5*time.Millisecond {
		t.Errorf("edges %+v", m.Edges)
	}
	for _, bad := range []string{"{", `{"span_id":"zz"}`, `{"span_id":"0000000000000001","parent_span_id":"12"}`} {
		err := ReadSpans(strings.NewReader(recording+bad+"\n"), func(Span) {})
		if err == nil || !strings.Contains(err.Error(), "line 5") {
			t.Errorf("%q: %v, want an error on line 5", bad, err)
		}
	}
}

func TestBuilderAllocs(t *testing.T) {
	b := NewBuilder(nil)
	c, s := call(1, "front", "api", time.Millisecond, false)
	b.Add(c, t0)
	b.Add(s, t0)
	n := testing.AllocsPerRun(100, func() {
		b.Add(c, t0)
		b.Add(s, t0)
	})
	if n > 1 {
		t.Errorf("%v allocations per call, want at most 1 (the pending entry)", n)
	}
}

func FuzzReadSpans(f *testing.F) {
	for _, line := range strings.Split(recording, "\n") {
		f.Add(line)
	}
	f.Fuzz(func(t *testing.T, in string) {
		b := NewBuilder(&Options{MaxPending: 16, MaxEdges: 16})
		_ = ReadSpans(strings.NewReader(in), func(s Span) { b.Add(s, t0) })
		b.Flush(t0, true)
		m := b.Map()
		for _, e := range m.Edges {
			if e.Errors > e.Requests || e.P50 > e.P99 {
				t.Fatalf("edge %+v", e)
			}
		}
	})
}

// Every call the builder counts is one observation of the service graph
// metrics, by client and server, failures and both latencies included.
func TestMetricsObserve(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	m, err := NewMetrics(mp)
	if err != nil {
		t.Fatal(err)
	}
	b := NewBuilder(&Options{Observe: m.Observe})
	for i := range 4 {
		c, s := call(i, "front", "api", 10*time.Millisecond, i == 0)
		b.Add(c, t0)
		b.Add(s, t0)
	}
	b.Add(Span{SpanID: id(99), Kind: KindClient, Service: "api", Peer: "db:5432", Start: t0, End: t0.Add(time.Millisecond)}, t0)
	b.Flush(t0, true)
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			switch d := mt.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					got[mt.Name+" "+labels(dp.Attributes)] = fmt.Sprint(dp.Value)
				}
			case metricdata.Histogram[float64]:
				for _, dp := range d.DataPoints {
					got[mt.Name+" "+labels(dp.Attributes)] = fmt.Sprintf("%d %.3f", dp.Count, dp.Sum)
				}
			}
		}
	}
	want := map[string]string{
		"traces_service_graph_request_total front>api":                         "4",
		"traces_service_graph_request_failed_total front>api":                  "1",
		"traces_service_graph_request_client_seconds front>api":                "4 0.040",
		"traces_service_graph_request_server_seconds front>api":                "4 0.032",
		"traces_service_graph_request_total api>db:5432 virtual_node":          "1",
		"traces_service_graph_request_client_seconds api>db:5432 virtual_node": "1 0.001",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("points %v", got)
	}
}

func labels(s attribute.Set) string {
	c, _ := s.Value("client")
	sv, _ := s.Value("server")
	out := c.AsString() + ">" + sv.AsString()
	if ct, ok := s.Value("connection_type"); ok {
		out += " " + ct.AsString()
	}
	return out
}

// The cache of attribute sets stays bounded when edges keep coming, and a
// call observed after the cache started over still counts on its edge.
func TestMetricsAttributeCacheBounded(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	m, err := NewMetrics(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	if err != nil {
		t.Fatal(err)
	}
	for i := range setsMax + 10 {
		m.Observe(Call{Client: fmt.Sprint("c", i), Server: "api", ServerTime: time.Millisecond})
		if len(m.sets) > setsMax {
			t.Fatalf("%d cached sets after %d edges, want at most %d", len(m.sets), i+1, setsMax)
		}
	}
	m.Observe(Call{Client: "c0", Server: "api", ServerTime: time.Millisecond})
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if d, ok := mt.Data.(metricdata.Sum[int64]); ok && mt.Name == "traces_service_graph_request_total" {
				// The SDK caps the series itself (its cardinality limit);
				// the first edge is within it.
				found := false
				for _, dp := range d.DataPoints {
					if labels(dp.Attributes) == "c0>api" {
						found = true
						if dp.Value != 2 {
							t.Errorf("c0>api counted %d, want 2", dp.Value)
						}
					}
				}
				if !found {
					t.Error("no c0>api series")
				}
			}
		}
	}
}
