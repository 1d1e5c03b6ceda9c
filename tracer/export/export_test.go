package export

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/otlptest"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	grpccodes "google.golang.org/grpc/codes"
)

// cleanEnv blanks every OTEL_ variable inherited from the machine running
// the tests, so that each test sees only the configuration it sets.
func cleanEnv(t *testing.T) {
	t.Helper()
	for _, kv := range os.Environ() {
		if name, _, _ := strings.Cut(kv, "="); strings.HasPrefix(name, "OTEL_") {
			t.Setenv(name, "")
		}
	}
}

// syncBuffer is an io.Writer that tests can read while the exporter writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

var (
	base = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)

	frontend = resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName("frontend"), semconv.ProcessPID(812), semconv.ProcessExecutableName("node"),
		semconv.HostName("web-1"))
	orders = resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName("orders"), semconv.ProcessPID(901), semconv.ProcessExecutableName("orders"),
		semconv.HostName("web-1"))
)

func tid(b byte) trace.TraceID {
	return trace.TraceID{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, b}
}

func sid(b byte) trace.SpanID { return trace.SpanID{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, b} }

func remoteParent(t trace.TraceID, s trace.SpanID, sampled bool) trace.SpanContext {
	var flags trace.TraceFlags
	if sampled {
		flags = trace.FlagsSampled
	}
	return trace.NewSpanContext(trace.SpanContextConfig{TraceID: t, SpanID: s, TraceFlags: flags, Remote: true})
}

// orderTrace is a frontend request that calls the orders service, which
// continues the trace from an incoming traceparent.
func orderTrace() []*Span {
	ts, _ := trace.ParseTraceState("vendor=abc")
	upstream := trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: tid(0x36), SpanID: sid(0x01), TraceFlags: trace.FlagsSampled, TraceState: ts, Remote: true,
	})
	return []*Span{
		{
			TraceID: tid(0x36), SpanID: sid(0xb7), Parent: upstream,
			Name: "GET /api/orders", Kind: trace.SpanKindServer,
			Start: base, End: base.Add(12300 * time.Microsecond),
			Attributes: []attribute.KeyValue{
				semconv.HTTPRequestMethodGet, semconv.URLPath("/api/orders"),
				semconv.HTTPResponseStatusCode(200), attribute.Bool("sonde.tls", false),
				attribute.Float64("sonde.ratio", 0.25), attribute.StringSlice("sonde.tags", []string{"a", "b"}),
			},
			Resource: frontend,
		},
		{
			TraceID: tid(0x36), SpanID: sid(0xb8), Parent: remoteParent(tid(0x36), sid(0xb7), true),
			Name: "GET", Kind: trace.SpanKindClient,
			Start: base.Add(1 * time.Millisecond), End: base.Add(5100 * time.Microsecond),
			Attributes: []attribute.KeyValue{
				semconv.HTTPRequestMethodGet, semconv.URLFull("http://orders:8080/v1/list"),
				semconv.HTTPResponseStatusCode(200),
			},
			Resource: frontend,
		},
		{
			TraceID: tid(0x36), SpanID: sid(0xb9), Parent: remoteParent(tid(0x36), sid(0xb8), true),
			Name: "GET /v1/list", Kind: trace.SpanKindServer,
			Start: base.Add(1100 * time.Microsecond), End: base.Add(5 * time.Millisecond),
			Attributes: []attribute.KeyValue{
				semconv.HTTPRequestMethodGet, semconv.URLPath("/v1/list"), semconv.HTTPResponseStatusCode(503),
			},
			Status: codes.Error, StatusDescription: "upstream unavailable",
			Resource: orders,
		},
	}
}

func newExporter(t testing.TB, opts *Options) *Exporter {
	t.Helper()
	e, err := New(t.Context(), opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		// Bounded, so that a failing test cannot hang on a stuck pipeline.
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		e.Shutdown(ctx)
	})
	return e
}

func shutdown(t testing.TB, e *Exporter) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
}

// checkBalance asserts that every span given to Export is accounted for.
func checkBalance(t *testing.T, st Stats) {
	t.Helper()
	if sum := st.Exported + st.Failed + st.Dropped + st.NotSampled + st.Invalid; sum != st.Received || st.Pending != 0 {
		t.Fatalf("stats do not balance: %+v (settled %d)", st, sum)
	}
}

func hexID(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&0xf])
	}
	return string(out)
}

func resourceMap(r *resource.Resource) map[string]any {
	m := map[string]any{}
	for _, kv := range r.Attributes() {
		m[string(kv.Key)] = kv.Value.AsInterface()
	}
	return m
}

// startReceiver starts a test receiver and points the environment, cleaned
// of the machine's OTEL_ variables, at it over protocol.
func startReceiver(t *testing.T, protocol string) *otlptest.Receiver {
	t.Helper()
	cleanEnv(t)
	rcv := otlptest.Start(t)
	endpoint := "http://" + rcv.Endpoint()
	if protocol != "grpc" {
		endpoint = rcv.HTTPEndpoint()
	}
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
	t.Setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
	return rcv
}

func TestOTLPPreservesSpans(t *testing.T) {
	for _, protocol := range []string{"grpc", "http/protobuf"} {
		t.Run(protocol, func(t *testing.T) {
			rcv := startReceiver(t, protocol)

			e := newExporter(t, &Options{Format: FormatOTLP})
			in := orderTrace()
			for _, s := range in {
				e.Export(s)
			}
			shutdown(t, e)

			got := rcv.WaitSpans(t, len(in), 5*time.Second)
			if len(got) != len(in) {
				t.Fatalf("received %d spans, want %d", len(got), len(in))
			}
			bySpan := map[string]otlptest.Span{}
			for _, s := range got {
				bySpan[s.SpanID] = s
			}
			for _, want := range in {
				g, ok := bySpan[want.SpanID.String()]
				if !ok {
					t.Fatalf("span %s not received", want.SpanID)
				}
				if g.TraceID != want.TraceID.String() || g.ParentSpanID != want.Parent.SpanID().String() {
					t.Errorf("%s: ids %s/%s, want %s/%s", g.SpanID, g.TraceID, g.ParentSpanID, want.TraceID, want.Parent.SpanID())
				}
				if g.Name != want.Name || g.Kind != kindName(want.Kind) {
					t.Errorf("%s: name/kind %q/%s, want %q/%s", g.SpanID, g.Name, g.Kind, want.Name, kindName(want.Kind))
				}
				if !g.Start.Equal(want.Start) || !g.End.Equal(want.End) {
					t.Errorf("%s: times %v..%v, want %v..%v", g.SpanID, g.Start, g.End, want.Start, want.End)
				}
				wantAttrs := map[string]any{}
				for _, kv := range want.Attributes {
					v := kv.Value.AsInterface()
					if ss, ok := v.([]string); ok {
						v = []any{ss[0], ss[1]}
					}
					wantAttrs[string(kv.Key)] = v
				}
				if !reflect.DeepEqual(g.Attributes, wantAttrs) {
					t.Errorf("%s: attributes %v, want %v", g.SpanID, g.Attributes, wantAttrs)
				}
				if !reflect.DeepEqual(g.Resource, resourceMap(want.Resource)) {
					t.Errorf("%s: resource %v, want %v", g.SpanID, g.Resource, resourceMap(want.Resource))
				}
				wantStatus, wantMsg := "Unset", ""
				if want.Status == codes.Error {
					wantStatus, wantMsg = "Error", want.StatusDescription
				}
				if g.StatusCode != wantStatus || g.StatusMessage != wantMsg {
					t.Errorf("%s: status %s %q, want %s %q", g.SpanID, g.StatusCode, g.StatusMessage, wantStatus, wantMsg)
				}
				// Sampled, and the parent is known to be remote.
				if g.Flags != 0x301 {
					t.Errorf("%s: flags %#x, want 0x301", g.SpanID, g.Flags)
				}
				if g.Scope != scope {
					t.Errorf("%s: scope %q, want %q", g.SpanID, g.Scope, scope)
				}
			}
			if ts := bySpan[sid(0xb7).String()].TraceState; ts != "vendor=abc" {
				t.Errorf("trace state %q, want the parent's vendor=abc", ts)
			}
			st := e.Stats()
			if st.Received != 3 || st.Exported != 3 {
				t.Errorf("stats %+v, want 3 received and exported", st)
			}
			checkBalance(t, st)
		})
	}
}

func TestOTLPRootSpanHasNoParent(t *testing.T) {
	cleanEnv(t)
	rcv := otlptest.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+rcv.Endpoint())
	e := newExporter(t, nil) // the endpoint variable selects OTLP

	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Name: "root", Kind: trace.SpanKindServer,
		Start: base, End: base.Add(time.Millisecond), Resource: frontend})
	shutdown(t, e)

	got := rcv.WaitSpans(t, 1, 5*time.Second)[0]
	if got.TraceID != tid(1).String() || got.SpanID != sid(1).String() || got.ParentSpanID != "" {
		t.Fatalf("ids %s/%s parent %q, want %s/%s and no parent", got.TraceID, got.SpanID, got.ParentSpanID, tid(1), sid(1))
	}
	// A root's parent is not remote, but the exporter says it knows that.
	if got.Flags != 0x101 {
		t.Fatalf("flags %#x, want 0x101", got.Flags)
	}
}

func TestOTLPGroupsByResource(t *testing.T) {
	cleanEnv(t)
	rcv := otlptest.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+rcv.Endpoint())
	// One batch, sent at Shutdown.
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "600000")

	e := newExporter(t, &Options{Format: FormatOTLP})
	for _, s := range orderTrace() {
		e.Export(s)
	}
	// Equal content but a distinct pointer must share the resource.
	twin := resource.NewWithAttributes(semconv.SchemaURL, frontend.Attributes()...)
	e.Export(&Span{TraceID: tid(2), SpanID: sid(2), Name: "twin", Start: base, End: base, Resource: twin})
	shutdown(t, e)

	rcv.WaitSpans(t, 4, 5*time.Second)
	reqs := rcv.Requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1 batch", len(reqs))
	}
	rss := reqs[0].GetResourceSpans()
	if len(rss) != 2 {
		t.Fatalf("%d ResourceSpans, want 2", len(rss))
	}
	perService := map[string][]string{}
	for _, rs := range rss {
		var svc string
		for _, kv := range rs.GetResource().GetAttributes() {
			if kv.GetKey() == "service.name" {
				svc = kv.GetValue().GetStringValue()
			}
		}
		if rs.GetSchemaUrl() != semconv.SchemaURL {
			t.Errorf("%s: schema URL %q, want %q", svc, rs.GetSchemaUrl(), semconv.SchemaURL)
		}
		for _, ss := range rs.GetScopeSpans() {
			for _, s := range ss.GetSpans() {
				perService[svc] = append(perService[svc], hexID(s.GetSpanId()))
			}
		}
	}
	want := map[string][]string{
		"frontend": {sid(0xb7).String(), sid(0xb8).String(), sid(2).String()},
		"orders":   {sid(0xb9).String()},
	}
	if !reflect.DeepEqual(perService, want) {
		t.Fatalf("spans per resource %v, want %v", perService, want)
	}
}

func TestResourceCacheEviction(t *testing.T) {
	cleanEnv(t)
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &out, MaxResources: 1})
	// Alternating resources with room for one provider: each span needs a
	// fresh provider, all sharing the one pipeline.
	for i := range 6 {
		r := frontend
		if i%2 == 1 {
			r = orders
		}
		e.Export(&Span{TraceID: tid(byte(i + 1)), SpanID: sid(byte(i + 1)), Name: "s", Start: base, End: base, Resource: r})
	}
	shutdown(t, e)
	lines := parseJSONLines(t, out.String())
	if len(lines) != 6 {
		t.Fatalf("%d lines, want 6", len(lines))
	}
	for i, l := range lines {
		want := "frontend"
		if i%2 == 1 {
			want = "orders"
		}
		if got := l.Resource["service.name"]; got != want {
			t.Errorf("line %d: service.name %v, want %s", i, got, want)
		}
	}
}

func TestResourceCacheLRU(t *testing.T) {
	created := map[string]int{}
	c := newResourceCache(2, func(r *resource.Resource) *resourceEntry {
		v, _ := r.Set().Value(semconv.ServiceNameKey)
		created[v.AsString()]++
		return &resourceEntry{resource: r}
	})
	res := func(name string) *resource.Resource { return resource.NewSchemaless(semconv.ServiceName(name)) }
	for _, name := range []string{"a", "b", "a", "c", "a", "b"} {
		c.get(res(name)) // fresh pointers: lookups go by content
	}
	// b was least recently used when c arrived, so it alone was rebuilt.
	if want := map[string]int{"a": 1, "b": 2, "c": 1}; !reflect.DeepEqual(created, want) {
		t.Fatalf("entries created %v, want %v", created, want)
	}
	if c.len() != 2 {
		t.Fatalf("cache holds %d, want 2", c.len())
	}
	// Same content under another schema URL is another resource.
	c.get(resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName("a")))
	if created["a"] != 2 {
		t.Fatalf("schema URL ignored: a created %d times", created["a"])
	}
}

func TestUnsampledParentIsNotExported(t *testing.T) {
	cleanEnv(t)
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &out})
	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Parent: remoteParent(tid(1), sid(9), false),
		Name: "unsampled", Kind: trace.SpanKindServer, Start: base, End: base, Resource: frontend})
	e.Export(&Span{TraceID: tid(2), SpanID: sid(2), Parent: remoteParent(tid(2), sid(9), true),
		Name: "sampled", Kind: trace.SpanKindServer, Start: base, End: base, Resource: frontend})
	shutdown(t, e)

	lines := parseJSONLines(t, out.String())
	if len(lines) != 1 || lines[0].Name != "sampled" {
		t.Fatalf("exported %+v, want only the sampled span", lines)
	}
	st := e.Stats()
	if st.NotSampled != 1 || st.Exported != 1 {
		t.Fatalf("stats %+v, want 1 not sampled and 1 exported", st)
	}
	checkBalance(t, st)
}

func TestSamplerFromEnvironment(t *testing.T) {
	cleanEnv(t)
	t.Setenv("OTEL_TRACES_SAMPLER", "always_off")
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &out})
	for i := range 5 {
		e.Export(&Span{TraceID: tid(byte(i + 1)), SpanID: sid(1), Name: "x", Start: base, End: base})
	}
	shutdown(t, e)
	if out.String() != "" {
		t.Fatalf("always_off exported %q", out.String())
	}
	if st := e.Stats(); st.NotSampled != 5 {
		t.Fatalf("stats %+v, want 5 not sampled", st)
	}
}

func TestInvalidSpansCounted(t *testing.T) {
	cleanEnv(t)
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &out})
	e.Export(nil)
	e.Export(&Span{SpanID: sid(1), Start: base, End: base})
	e.Export(&Span{TraceID: tid(1), Start: base, End: base})
	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), End: base})
	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Start: base})
	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Start: base, End: base, Parent: remoteParent(tid(2), sid(2), true)})
	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Name: "ok", Start: base, End: base})
	shutdown(t, e)

	st := e.Stats()
	if st.Invalid != 6 || st.Exported != 1 {
		t.Fatalf("stats %+v, want 6 invalid and 1 exported", st)
	}
	checkBalance(t, st)
	if lines := parseJSONLines(t, out.String()); len(lines) != 1 || lines[0].Name != "ok" {
		t.Fatalf("exported %+v, want only the valid span", lines)
	}
}

// gate is a writer that blocks every Write until it is opened.
type gate struct {
	entered chan struct{}
	once    sync.Once
	open    chan struct{}
	out     syncBuffer
}

func newGate() *gate { return &gate{entered: make(chan struct{}), open: make(chan struct{})} }

func (g *gate) Write(p []byte) (int, error) {
	g.once.Do(func() { close(g.entered) })
	<-g.open
	return g.out.Write(p)
}

func TestQueueFullDropsAreCounted(t *testing.T) {
	cleanEnv(t)
	t.Setenv("OTEL_BSP_MAX_QUEUE_SIZE", "1")
	t.Setenv("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "1")
	g := newGate()
	e := newExporter(t, &Options{Format: FormatJSON, Writer: g, MaxQueue: 4})
	opened := sync.OnceFunc(func() { close(g.open) })
	t.Cleanup(opened) // runs before the exporter's cleanup

	span := func(i int) *Span {
		return &Span{TraceID: tid(byte(i)), SpanID: sid(byte(i)), Name: "s", Start: base, End: base}
	}
	e.Export(span(1))
	select {
	case <-g.entered:
	case <-time.After(10 * time.Second):
		t.Fatal("first span never reached the writer")
	}

	const n = 1000
	begin := time.Now()
	for i := range n {
		e.Export(span(i + 2))
	}
	if d := time.Since(begin); d > time.Second {
		t.Fatalf("%d Export calls took %v with a stuck writer", n, d)
	}
	// Held at most: 4 queued, 1 in the worker, 1 in the SDK queue, 1 in
	// the SDK's batch.
	if st := e.Stats(); st.Dropped < n-7 {
		t.Fatalf("stats %+v, want at least %d dropped", st, n-7)
	}

	opened()
	shutdown(t, e)
	st := e.Stats()
	if st.Received != n+1 || st.Exported+st.Dropped != n+1 || st.Exported < 2 {
		t.Fatalf("stats %+v, want %d received, all exported or dropped", st, n+1)
	}
	checkBalance(t, st)
	if lines := parseJSONLines(t, g.out.String()); uint64(len(lines)) != st.Exported {
		t.Fatalf("%d lines written, %d counted exported", len(lines), st.Exported)
	}
}

func TestExportAfterShutdownIsDropped(t *testing.T) {
	cleanEnv(t)
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &syncBuffer{}})
	shutdown(t, e)
	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Start: base, End: base})
	st := e.Stats()
	if st.Received != 1 || st.Dropped != 1 {
		t.Fatalf("stats %+v, want 1 received and dropped", st)
	}
	if err := e.Shutdown(context.Background()); err != nil {
		t.Fatalf("second Shutdown: %v", err)
	}
}

// deadEndpoint returns a loopback address where nothing listens.
func deadEndpoint(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestDeadCollectorFailuresCounted(t *testing.T) {
	cleanEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+deadEndpoint(t))
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "300")
	e := newExporter(t, &Options{Format: FormatOTLP})

	const n = 50
	begin := time.Now()
	for i := range n {
		e.Export(&Span{TraceID: tid(byte(i + 1)), SpanID: sid(1), Name: "s", Start: base, End: base})
	}
	if d := time.Since(begin); d > time.Second {
		t.Fatalf("Export took %v with a dead collector", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := e.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	st := e.Stats()
	if st.Failed != n || st.Exported != 0 {
		t.Fatalf("stats %+v, want %d failed", st, n)
	}
	if st.Errors == 0 || st.LastError == nil {
		t.Fatalf("stats %+v, want the export error reported", st)
	}
	checkBalance(t, st)
}

func TestShutdownGivesUpAtDeadline(t *testing.T) {
	cleanEnv(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+deadEndpoint(t))
	// Exports would keep retrying for longer than Shutdown may wait.
	t.Setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "60000")
	e := newExporter(t, &Options{Format: FormatOTLP})
	const n = 20
	for i := range n {
		e.Export(&Span{TraceID: tid(byte(i + 1)), SpanID: sid(1), Name: "s", Start: base, End: base})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	begin := time.Now()
	err := e.Shutdown(ctx)
	if d := time.Since(begin); d > 2*time.Second {
		t.Fatalf("Shutdown took %v past a 300ms deadline", d)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown error %v, want deadline exceeded", err)
	}
	st := e.Stats()
	if st.Dropped+st.Failed != n || st.Exported != 0 {
		t.Fatalf("stats %+v, want all %d dropped or failed", st, n)
	}
	checkBalance(t, st)
	// Late results of abandoned exports must not change the totals.
	time.Sleep(200 * time.Millisecond)
	if later := e.Stats(); later.Received != st.Received || later.Exported+later.Failed+later.Dropped != n {
		t.Fatalf("stats moved after Shutdown: %+v then %+v", st, later)
	}
}

func TestRejectedExportCountedThenRecovers(t *testing.T) {
	cleanEnv(t)
	rcv := otlptest.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+rcv.Endpoint())
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "20")
	// InvalidArgument is not retried, so the batch fails at once.
	rcv.FailNext(1, grpccodes.InvalidArgument)
	e := newExporter(t, &Options{Format: FormatOTLP})

	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Name: "rejected", Start: base, End: base})
	waitFor(t, func() bool { return e.Stats().Failed == 1 })
	e.Export(&Span{TraceID: tid(2), SpanID: sid(2), Name: "accepted", Start: base, End: base})
	shutdown(t, e)

	got := rcv.WaitSpans(t, 1, 5*time.Second)
	if len(got) != 1 || got[0].Name != "accepted" {
		t.Fatalf("received %+v, want only the accepted span", got)
	}
	st := e.Stats()
	if st.Failed != 1 || st.Exported != 1 || rcv.Failed() != 1 {
		t.Fatalf("stats %+v, receiver refused %d; want 1 failed, 1 exported", st, rcv.Failed())
	}
	if st.LastError == nil || !strings.Contains(st.LastError.Error(), "injected failure") {
		t.Fatalf("last error %v, want the collector's", st.LastError)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestSDKErrorsReachStats(t *testing.T) {
	cleanEnv(t)
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &syncBuffer{}})
	before := e.Stats().Errors
	boom := errors.New("boom")
	otel.Handle(boom)
	st := e.Stats()
	if st.Errors != before+1 || !errors.Is(st.LastError, boom) {
		t.Fatalf("stats %+v, want the handled error counted", st)
	}
	shutdown(t, e)
	after := e.Stats().Errors
	otel.Handle(errors.New("after shutdown"))
	if st := e.Stats(); st.Errors != after {
		t.Fatalf("errors after Shutdown still counted: %+v", st)
	}
}

// failingWriter fails every write.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("broken pipe") }

func TestWriteErrorsCounted(t *testing.T) {
	for _, format := range []Format{FormatJSON, FormatText} {
		t.Run(string(format), func(t *testing.T) {
			cleanEnv(t)
			e := newExporter(t, &Options{Format: format, Writer: failingWriter{}, TextDelay: time.Minute})
			for _, s := range orderTrace() {
				e.Export(s)
			}
			shutdown(t, e)
			st := e.Stats()
			if st.Failed != 3 || st.Exported != 0 {
				t.Fatalf("stats %+v, want 3 failed", st)
			}
			if st.LastError == nil || !strings.Contains(st.LastError.Error(), "broken pipe") {
				t.Fatalf("last error %v, want the write error", st.LastError)
			}
			checkBalance(t, st)
		})
	}
}

func TestEnvironmentResourceMerged(t *testing.T) {
	cleanEnv(t)
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=prod,service.name=ignored")
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &out})
	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Name: "s", Start: base, End: base, Resource: orders})
	shutdown(t, e)
	lines := parseJSONLines(t, out.String())
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1", len(lines))
	}
	if r := lines[0].Resource; r["deployment.environment.name"] != "prod" || r["service.name"] != "orders" {
		t.Fatalf("resource %v, want sonde's environment merged under the process's own", r)
	}
}

func TestConcurrentExport(t *testing.T) {
	cleanEnv(t)
	var out syncBuffer
	const workers, per = 8, 500
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &out, MaxQueue: workers * per})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range per {
				e.Export(&Span{TraceID: tid(byte(w + 1)), SpanID: trace.SpanID{byte(w + 1), byte(i >> 8), byte(i)},
					Name: "s", Start: base, End: base, Resource: []*resource.Resource{frontend, orders}[i%2]})
			}
		})
	}
	wg.Wait()
	shutdown(t, e)
	if lines := parseJSONLines(t, out.String()); len(lines) != workers*per {
		t.Fatalf("%d lines, want %d", len(lines), workers*per)
	}
	st := e.Stats()
	if st.Exported != workers*per {
		t.Fatalf("stats %+v, want all exported", st)
	}
	checkBalance(t, st)
}
