package export

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/protobuf/proto"
)

// uploads keeps a copy of every batch a client was given, as it was at the
// time: the arenas are reused by the next batch.
type uploads struct {
	batches [][]*tracepb.ResourceSpans
	err     error
}

func (*uploads) Start(context.Context) error { return nil }
func (*uploads) Stop(context.Context) error  { return nil }
func (u *uploads) UploadTraces(_ context.Context, rss []*tracepb.ResourceSpans) error {
	var batch []*tracepb.ResourceSpans
	for _, rs := range rss {
		batch = append(batch, proto.Clone(rs).(*tracepb.ResourceSpans))
	}
	u.batches = append(u.batches, batch)
	return u.err
}

// sorted orders a batch's resources by their encoding: the SDK's exporter
// emits them in map order.
func sorted(t *testing.T, rss []*tracepb.ResourceSpans) [][]byte {
	t.Helper()
	var out [][]byte
	for _, rs := range rss {
		b, err := proto.MarshalOptions{Deterministic: true}.Marshal(rs)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, b)
	}
	slices.SortFunc(out, bytes.Compare)
	return out
}

// variedSpans makes spans with everything a ReadOnlySpan can carry, over
// resources and scopes that equal each other in the ways grouping must
// see: the same pointer, equal attributes in another resource, none.
func variedSpans(n int) []sdktrace.ReadOnlySpan {
	ts, _ := trace.ParseTraceState("a=1,b=2")
	same := resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", attribute.String("service.name", "orders"))
	resources := []*resource.Resource{
		frontend, orders, nil, resource.Empty(), same,
		resource.NewWithAttributes("https://opentelemetry.io/schemas/1.26.0", attribute.String("service.name", "orders")),
	}
	scopes := []instrumentation.Scope{
		{Name: scope},
		{},
		{Name: "other", Version: "1.2", SchemaURL: "https://example.com/s", Attributes: attribute.NewSet(attribute.Int("n", 1))},
	}
	values := []attribute.KeyValue{
		attribute.String("s", "v"), attribute.String("empty", ""), attribute.Int64("i", -7), attribute.Bool("b", true),
		attribute.Bool("f", false), attribute.Float64("d", 2.5), attribute.StringSlice("ss", []string{"x", ""}),
		attribute.Int64Slice("is", []int64{1, -2}), attribute.BoolSlice("bs", []bool{true}),
		attribute.Float64Slice("ds", []float64{0.5}), attribute.ByteSlice("bytes", []byte{0, 1}),
		attribute.Slice("mixed", attribute.IntValue(3), attribute.StringValue("y")),
		attribute.Map("map", attribute.String("k", "v"), attribute.Int("n", 2)),
		{Key: "unset"},
	}
	var spans []sdktrace.ReadOnlySpan
	for i := range n {
		id := tid(byte(i))
		stub := tracetest.SpanStub{
			Name:      []string{"GET /a", "", "POST"}[i%3],
			SpanKind:  trace.SpanKind(i % 7),
			StartTime: base.Add(time.Duration(i) * time.Millisecond),
			EndTime:   base.Add(time.Duration(i+3) * time.Millisecond),
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
				TraceID: id, SpanID: sid(byte(i + 1)), TraceFlags: trace.TraceFlags(i % 2), TraceState: []trace.TraceState{{}, ts}[i%2],
			}),
			Attributes:           values[:i%len(values)],
			DroppedAttributes:    i % 3,
			Status:               sdktrace.Status{Code: codes.Code(i % 4), Description: []string{"", "bad"}[i%2]},
			Resource:             resources[i%len(resources)],
			InstrumentationScope: scopes[i%len(scopes)],
			ChildSpanCount:       i,
		}
		switch i % 4 {
		case 1:
			stub.Parent = remoteParent(id, sid(0xee), true)
		case 2:
			stub.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: id, SpanID: sid(0xdd)})
		}
		if i%5 == 0 {
			stub.Events = []sdktrace.Event{
				{Name: "e", Time: base, Attributes: values[:3], DroppedAttributeCount: 1},
				{Name: "", Time: time.Unix(0, 0).Add(-time.Second)},
			}
			stub.DroppedEvents = 2
			stub.Links = []sdktrace.Link{
				{SpanContext: remoteParent(tid(0x77), sid(0x78), true), Attributes: values[5:7], DroppedAttributeCount: 3},
				{SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid(0x79), SpanID: sid(0x7a), TraceState: ts})},
			}
			stub.DroppedLinks = 1
		}
		if i%11 == 0 {
			stub.StartTime = time.Unix(0, 0).Add(-time.Hour) // before 1970: clamped to zero
		}
		spans = append(spans, stub.Snapshot())
	}
	return spans
}

func TestSpanExporterMatchesSDK(t *testing.T) {
	ctx := context.Background()
	sdkClient, ourClient := &uploads{}, &uploads{}
	sdk, err := otlptrace.New(ctx, sdkClient)
	if err != nil {
		t.Fatal(err)
	}
	ours, err := newSpanExporter(ctx, ourClient)
	if err != nil {
		t.Fatal(err)
	}
	// Batches that grow, shrink and grow again, so that arenas are both
	// reused and outgrown; one holds a nil span, one nothing at all.
	all := variedSpans(300)
	batches := [][]sdktrace.ReadOnlySpan{all[:40], all[40:50], all[50:300], append([]sdktrace.ReadOnlySpan{nil}, all[:7]...), nil, all[100:200]}
	for _, b := range batches {
		if err := sdk.ExportSpans(ctx, b); err != nil {
			t.Fatal(err)
		}
		if err := ours.ExportSpans(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	if len(ourClient.batches) != len(sdkClient.batches) {
		t.Fatalf("%d uploads, the SDK's exporter made %d", len(ourClient.batches), len(sdkClient.batches))
	}
	for i := range sdkClient.batches {
		want, got := sorted(t, sdkClient.batches[i]), sorted(t, ourClient.batches[i])
		if !slices.EqualFunc(got, want, bytes.Equal) {
			t.Errorf("batch %d differs from the SDK exporter's:\n got %v\nwant %v", i, ourClient.batches[i], sdkClient.batches[i])
		}
	}
}

func TestSpanExporterWrapsUploadErrors(t *testing.T) {
	failure := errors.New("unavailable")
	x, err := newSpanExporter(context.Background(), &uploads{err: failure})
	if err != nil {
		t.Fatal(err)
	}
	if err := x.ExportSpans(context.Background(), variedSpans(3)); !errors.Is(err, failure) {
		t.Fatalf("error %v, want it to wrap the client's", err)
	}
}

type discardClient struct{}

func (discardClient) Start(context.Context) error { return nil }
func (discardClient) Stop(context.Context) error  { return nil }
func (discardClient) UploadTraces(context.Context, []*tracepb.ResourceSpans) error {
	return nil
}

// A batch like the one before it allocates only its few containers, not
// per span.
func TestSpanExporterReusesArenas(t *testing.T) {
	var spans []sdktrace.ReadOnlySpan
	for _, s := range benchSpans()[:512] {
		spans = append(spans, tracetest.SpanStub{
			Name: s.Name, SpanKind: s.Kind, StartTime: s.Start, EndTime: s.End, Attributes: s.Attributes,
			SpanContext: trace.NewSpanContext(trace.SpanContextConfig{TraceID: s.TraceID, SpanID: s.SpanID}),
			Parent:      s.Parent, Resource: s.Resource, InstrumentationScope: instrumentation.Scope{Name: scope},
		}.Snapshot())
	}
	x, err := newSpanExporter(context.Background(), discardClient{})
	if err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(20, func() {
		if err := x.ExportSpans(context.Background(), spans); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 20 {
		t.Errorf("a batch of %d spans allocates %v times", len(spans), allocs)
	}
}
