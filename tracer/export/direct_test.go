package export

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// recorder is a span processor that keeps what it is given.
type recorder struct {
	mu    sync.Mutex
	spans []sdktrace.ReadOnlySpan
}

func (r *recorder) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (r *recorder) OnEnd(s sdktrace.ReadOnlySpan) {
	r.mu.Lock()
	r.spans = append(r.spans, s)
	r.mu.Unlock()
}
func (r *recorder) Shutdown(context.Context) error   { return nil }
func (r *recorder) ForceFlush(context.Context) error { return nil }

// replay gives each span to a fresh worker, through the SDK's tracer or
// directly, and returns what its processor received.
func replay(t *testing.T, direct bool, spans []*Span) (got []tracetest.SpanStub, notSampled uint64) {
	t.Helper()
	var c counters
	rec := &recorder{}
	w := newWorker(&c, rec, 8, context.Background())
	w.direct = direct
	for _, s := range spans {
		w.emit(s)
	}
	for _, s := range rec.spans {
		got = append(got, tracetest.SpanStubFromReadOnlySpan(s))
	}
	return got, c.notSampled
}

// directCases are spans of every shape the tracer builds: roots, remote
// parents sampled or not, with tracestate and other trace flags, each
// status, every kind (an invalid one too), no attributes, no resource.
func directCases() []*Span {
	ts, _ := trace.ParseTraceState("vendor=abc,other=1")
	parent := func(id trace.TraceID, flags trace.TraceFlags) trace.SpanContext {
		return trace.NewSpanContext(trace.SpanContextConfig{TraceID: id, SpanID: sid(0xee), TraceFlags: flags, TraceState: ts})
	}
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodGet, semconv.URLPath("/api/orders/42"), semconv.HTTPResponseStatusCode(503),
		attribute.Bool("sonde.flag", true), attribute.Float64("sonde.ratio", 0.5), semconv.ServerPort(8080),
	}
	var spans []*Span
	for i, k := range []trace.SpanKind{trace.SpanKindServer, trace.SpanKindClient, trace.SpanKindInternal,
		trace.SpanKindProducer, trace.SpanKindConsumer, trace.SpanKindUnspecified, trace.SpanKind(42)} {
		spans = append(spans, &Span{TraceID: tid(byte(i + 1)), SpanID: sid(byte(i + 1)), Name: "kind", Kind: k,
			Start: base, End: base.Add(time.Millisecond), Attributes: attrs, Resource: frontend})
	}
	spans = append(spans,
		&Span{TraceID: tid(20), SpanID: sid(20), Parent: parent(tid(20), trace.FlagsSampled), Name: "sampled parent",
			Kind: trace.SpanKindServer, Start: base, End: base.Add(time.Second), Attributes: attrs, Resource: orders,
			Status: codes.Error, StatusDescription: "upstream failed"},
		&Span{TraceID: tid(21), SpanID: sid(21), Parent: parent(tid(21), trace.FlagsSampled|0x02), Name: "random flag",
			Kind: trace.SpanKindServer, Start: base, End: base, Resource: orders, Status: codes.Ok, StatusDescription: "dropped"},
		&Span{TraceID: tid(22), SpanID: sid(22), Parent: parent(tid(22), 0), Name: "unsampled parent",
			Kind: trace.SpanKindServer, Start: base, End: base, Resource: orders},
		&Span{TraceID: tid(23), SpanID: sid(23), Name: "no resource, no attributes", Kind: trace.SpanKindClient,
			Start: base, End: base, Status: codes.Error},
		&Span{TraceID: tid(24), SpanID: sid(24), Name: "duplicate keys", Kind: trace.SpanKindClient, Start: base, End: base,
			Attributes: []attribute.KeyValue{semconv.URLPath("/a"), semconv.ServerPort(1), semconv.URLPath("/b")}},
		&Span{TraceID: tid(25), SpanID: sid(25), Name: "slice", Kind: trace.SpanKindClient, Start: base, End: base,
			Attributes: []attribute.KeyValue{attribute.StringSlice("x", []string{"a", "b"})}},
		&Span{TraceID: tid(26), SpanID: sid(26), Name: "invalid key", Kind: trace.SpanKindClient, Start: base, End: base,
			Attributes: []attribute.KeyValue{attribute.String("", "v"), semconv.ServerPort(1)}},
	)
	return spans
}

// The direct path hands the processor exactly what the SDK's tracer does,
// for every shape of span, and counts the same spans as not sampled.
func TestDirectMatchesTracer(t *testing.T) {
	cleanEnv(t)
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test,service.name=ignored")
	spans := directCases()
	viaTracer, tracerNotSampled := replay(t, false, spans)
	direct, directNotSampled := replay(t, true, spans)
	if tracerNotSampled != 1 || directNotSampled != tracerNotSampled {
		t.Fatalf("not sampled: tracer %d, direct %d, want 1 each", tracerNotSampled, directNotSampled)
	}
	if len(direct) != len(viaTracer) || len(direct) != len(spans)-1 {
		t.Fatalf("direct gave %d spans, tracer %d, want %d", len(direct), len(viaTracer), len(spans)-1)
	}
	for i := range direct {
		d, s := direct[i], viaTracer[i]
		if diff := stubDiff(d, s); diff != "" {
			t.Errorf("span %q: direct differs from the tracer: %s", s.Name, diff)
		}
	}
}

func stubDiff(a, b tracetest.SpanStub) string {
	var diffs []string
	check := func(what string, same bool, x, y any) {
		if !same {
			diffs = append(diffs, fmt.Sprintf("%s %v != %v", what, x, y))
		}
	}
	check("name", a.Name == b.Name, a.Name, b.Name)
	check("span context", a.SpanContext.Equal(b.SpanContext) && a.SpanContext.IsRemote() == b.SpanContext.IsRemote(), a.SpanContext, b.SpanContext)
	check("trace state", a.SpanContext.TraceState().String() == b.SpanContext.TraceState().String(),
		a.SpanContext.TraceState(), b.SpanContext.TraceState())
	check("parent", a.Parent.Equal(b.Parent) && a.Parent.IsRemote() == b.Parent.IsRemote(), a.Parent, b.Parent)
	check("kind", a.SpanKind == b.SpanKind, a.SpanKind, b.SpanKind)
	check("start", a.StartTime.Equal(b.StartTime), a.StartTime, b.StartTime)
	check("end", a.EndTime.Equal(b.EndTime), a.EndTime, b.EndTime)
	check("attributes", ptr(attribute.NewSet(a.Attributes...)).Equals(ptr(attribute.NewSet(b.Attributes...))) && len(a.Attributes) == len(b.Attributes),
		a.Attributes, b.Attributes)
	check("status", a.Status == b.Status, a.Status, b.Status)
	check("dropped attributes", a.DroppedAttributes == b.DroppedAttributes, a.DroppedAttributes, b.DroppedAttributes)
	check("links", len(a.Links) == len(b.Links), a.Links, b.Links)
	check("events", len(a.Events) == len(b.Events), a.Events, b.Events)
	check("child count", a.ChildSpanCount == b.ChildSpanCount, a.ChildSpanCount, b.ChildSpanCount)
	check("resource", a.Resource.Equal(b.Resource), a.Resource, b.Resource)
	check("scope", a.InstrumentationScope == b.InstrumentationScope, a.InstrumentationScope, b.InstrumentationScope)
	return strings.Join(diffs, "; ")
}

func ptr[T any](v T) *T { return &v }

// Any variable that changes what the tracer does to a span sends every
// span through the tracer.
func TestDirectEnv(t *testing.T) {
	for _, name := range []string{"OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG", "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT",
		"OTEL_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT", "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
		"OTEL_GO_X_OBSERVABILITY"} {
		t.Run(name, func(t *testing.T) {
			cleanEnv(t)
			if !directEnv() {
				t.Fatal("a clean environment takes the tracer")
			}
			t.Setenv(name, "4")
			if directEnv() {
				t.Fatalf("%s set, and spans skip the tracer", name)
			}
		})
	}
	cleanEnv(t)
	t.Setenv("OTEL_SERVICE_NAME", "x")
	t.Setenv("OTEL_BSP_SCHEDULE_DELAY", "10")
	if !directEnv() {
		t.Fatal("resource and batching variables need not the tracer")
	}
}

// A length limit from the environment truncates attributes as the SDK
// does, which only its tracer knows how to do.
func TestAttributeLimitFromEnvironment(t *testing.T) {
	cleanEnv(t)
	t.Setenv("OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT", "3")
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &out})
	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Name: "x", Start: base, End: base, Resource: frontend,
		Attributes: []attribute.KeyValue{semconv.URLPath("/long/path")}})
	shutdown(t, e)
	lines := parseJSONLines(t, out.String())
	if len(lines) != 1 || lines[0].Attributes["url.path"] != "/lo" {
		t.Fatalf("exported %+v, want url.path truncated to 3 characters", lines)
	}
}
