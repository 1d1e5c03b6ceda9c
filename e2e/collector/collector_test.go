package collector_test

import (
	"context"
	"encoding/hex"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sondehq/sonde/e2e/collector"
)

// fixedIDs hands out known IDs so the test can predict every ID the
// collector prints; the SDK would otherwise pick random ones.
type fixedIDs struct {
	mu    sync.Mutex
	trace trace.TraceID
	spans []trace.SpanID
}

func (g *fixedIDs) NewIDs(context.Context) (trace.TraceID, trace.SpanID) {
	return g.trace, g.NewSpanID(context.Background(), g.trace)
}

func (g *fixedIDs) NewSpanID(context.Context, trace.TraceID) trace.SpanID {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.spans) == 0 {
		panic("fixedIDs: the test started more spans than it has IDs for")
	}
	id := g.spans[0]
	g.spans = g.spans[1:]
	return id
}

func traceID(t *testing.T, s string) trace.TraceID {
	t.Helper()
	id, err := trace.TraceIDFromHex(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func spanID(t *testing.T, s string) trace.SpanID {
	t.Helper()
	id, err := trace.SpanIDFromHex(s)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

// TestSDKExportRoundTrip exports through the same SDK exporter sonde uses
// and checks that every field the collector received is the one sent.
func TestSDKExportRoundTrip(t *testing.T) {
	// resource.Environment is merged into every SDK resource; a stray
	// variable in CI would add attributes and break the exact comparison.
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "")
	t.Setenv("OTEL_SERVICE_NAME", "")

	begin := time.Now()
	c := collector.Start(t)

	const (
		tid      = "0af7651916cd43dd8448eb211c80319c"
		rootID   = "b7ad6b7169203331"
		dbID     = "00f067aa0ba902b7"
		queueID  = "53995c3f42cd8ad8"
		renderID = "2a5e9b1c7f3d4e60"
	)
	ids := &fixedIDs{
		trace: traceID(t, tid),
		spans: []trace.SpanID{spanID(t, rootID), spanID(t, dbID), spanID(t, queueID), spanID(t, renderID)},
	}

	ctx := context.Background()
	exp, err := otlptracegrpc.New(ctx, otlptracegrpc.WithEndpoint(c.Endpoint()), otlptracegrpc.WithInsecure())
	if err != nil {
		t.Fatal(err)
	}
	pid := os.Getpid()
	res := resource.NewWithAttributes(semconv.SchemaURL,
		semconv.ServiceName("sonde-collector-e2e"),
		semconv.ProcessPID(pid),
	)
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithBatcher(exp),
		sdktrace.WithResource(res),
		sdktrace.WithIDGenerator(ids),
		sdktrace.WithSampler(sdktrace.AlwaysSample()),
	)
	t.Cleanup(func() { tp.Shutdown(context.Background()) })

	// Nanoseconds on purpose: OTLP carries them and the collector prints them.
	t0 := time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC)
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	tr := tp.Tracer("sonde/e2e", trace.WithInstrumentationVersion("0.1.0"))
	renderTr := tp.Tracer("sonde/e2e/render", trace.WithInstrumentationVersion("1.2.3"))

	rctx, root := tr.Start(ctx, "GET /checkout",
		trace.WithSpanKind(trace.SpanKindServer),
		trace.WithTimestamp(at(0)),
		trace.WithAttributes(
			attribute.String("http.request.method", "GET"),
			attribute.Int("http.response.status_code", 500),
			attribute.Bool("sonde.sampled", true),
		))
	_, db := tr.Start(rctx, "SELECT orders",
		trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(at(1500*time.Microsecond)),
		trace.WithAttributes(
			attribute.String("db.system.name", "postgresql"),
			attribute.Int64("db.response.returned_rows", -3),
			attribute.Bool("db.cached", false),
		))
	db.SetStatus(codes.Ok, "")
	db.End(trace.WithTimestamp(at(9*time.Millisecond + 1)))
	_, queue := tr.Start(rctx, "orders publish",
		trace.WithSpanKind(trace.SpanKindProducer),
		trace.WithTimestamp(at(10*time.Millisecond)))
	queue.AddEvent("enqueued",
		trace.WithTimestamp(at(11*time.Millisecond)),
		trace.WithAttributes(
			attribute.String("messaging.destination.name", "orders"),
			attribute.Int("messaging.batch.message_count", 2),
		))
	queue.End(trace.WithTimestamp(at(12 * time.Millisecond)))
	_, render := renderTr.Start(rctx, "render",
		trace.WithTimestamp(at(20*time.Millisecond)))
	render.End(trace.WithTimestamp(at(41 * time.Millisecond)))
	root.SetStatus(codes.Error, "upstream exploded")
	root.End(trace.WithTimestamp(at(42*time.Millisecond + 7)))

	if err := tp.ForceFlush(ctx); err != nil {
		t.Fatalf("export to the collector: %v", err)
	}

	got := c.WaitSpans(t, 4, 20*time.Second, func(s collector.Span) bool { return s.TraceID == tid })
	if len(got) != 4 {
		t.Fatalf("got %d spans of trace %s, want 4: %v", len(got), tid, got)
	}
	byName := map[string]collector.Span{}
	for _, s := range got {
		byName[s.Name] = s
	}

	wantResource := map[string]string{"service.name": "sonde-collector-e2e", "process.pid": strconv.Itoa(pid)}
	wantResourceTypes := map[string]string{"service.name": "Str", "process.pid": "Int"}
	want := []collector.Span{
		{
			TraceID: tid, SpanID: rootID, Name: "GET /checkout", Kind: "Server",
			Start: at(0), End: at(42*time.Millisecond + 7),
			StatusCode: "Error", StatusMessage: "upstream exploded",
			Attributes:     map[string]string{"http.request.method": "GET", "http.response.status_code": "500", "sonde.sampled": "true"},
			AttributeTypes: map[string]string{"http.request.method": "Str", "http.response.status_code": "Int", "sonde.sampled": "Bool"},
			ScopeName:      "sonde/e2e", ScopeVersion: "0.1.0",
		},
		{
			TraceID: tid, SpanID: dbID, ParentID: rootID, Name: "SELECT orders", Kind: "Client",
			Start: at(1500 * time.Microsecond), End: at(9*time.Millisecond + 1),
			StatusCode:     "Ok",
			Attributes:     map[string]string{"db.system.name": "postgresql", "db.response.returned_rows": "-3", "db.cached": "false"},
			AttributeTypes: map[string]string{"db.system.name": "Str", "db.response.returned_rows": "Int", "db.cached": "Bool"},
			ScopeName:      "sonde/e2e", ScopeVersion: "0.1.0",
		},
		{
			TraceID: tid, SpanID: queueID, ParentID: rootID, Name: "orders publish", Kind: "Producer",
			Start: at(10 * time.Millisecond), End: at(12 * time.Millisecond),
			StatusCode: "Unset",
			Attributes: map[string]string{}, AttributeTypes: map[string]string{},
			ScopeName: "sonde/e2e", ScopeVersion: "0.1.0",
			Events: []collector.Event{{
				Name: "enqueued", Time: at(11 * time.Millisecond),
				Attributes: map[string]string{"messaging.destination.name": "orders", "messaging.batch.message_count": "2"},
			}},
		},
		{
			TraceID: tid, SpanID: renderID, ParentID: rootID, Name: "render", Kind: "Internal",
			Start: at(20 * time.Millisecond), End: at(41 * time.Millisecond),
			StatusCode: "Unset",
			Attributes: map[string]string{}, AttributeTypes: map[string]string{},
			ScopeName: "sonde/e2e/render", ScopeVersion: "1.2.3",
		},
	}
	for _, w := range want {
		w.Resource, w.ResourceTypes, w.ResourceSchemaURL = wantResource, wantResourceTypes, semconv.SchemaURL
		g, ok := byName[w.Name]
		if !ok {
			t.Errorf("span %q not received; got %v", w.Name, got)
			continue
		}
		compareSpan(t, g, w)
	}
	t.Logf("export round trip took %s including collector start", time.Since(begin).Round(time.Millisecond))
}

// TestRawOTLPRoundTrip sends what the SDK never produces in one request
// (several resources, every value type, values spanning lines, links) to
// prove the parser reads all of it as the collector printed it.
func TestRawOTLPRoundTrip(t *testing.T) {
	c := collector.Start(t)

	conn, err := grpc.NewClient(c.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })

	hexb := func(s string) []byte {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	str := func(k, v string) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v}}}
	}
	i64 := func(k string, v int64) *commonpb.KeyValue {
		return &commonpb.KeyValue{Key: k, Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v}}}
	}
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	ns := func(d time.Duration) uint64 { return uint64(t0.Add(d).UnixNano()) }

	const (
		tidA = "4bf92f3577b34da6a3ce929d0e0e4736"
		tidB = "00000000000000000000000000000001"
	)
	req := &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
		{
			Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "raw-a"), i64("process.pid", 4242)}},
			ScopeSpans: []*tracepb.ScopeSpans{{
				Scope: &commonpb.InstrumentationScope{Name: "raw"},
				Spans: []*tracepb.Span{{
					TraceId: hexb(tidA), SpanId: hexb("00f067aa0ba902b7"), ParentSpanId: hexb("b7ad6b7169203331"),
					TraceState:        "vendor=value",
					Name:              "consume\nsecond line",
					Kind:              tracepb.Span_SPAN_KIND_CONSUMER,
					StartTimeUnixNano: ns(0), EndTimeUnixNano: ns(time.Second),
					Attributes: []*commonpb.KeyValue{
						{Key: "ratio", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 0.25}}},
						{Key: "blob", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{0xde, 0xad}}}},
						{Key: "list", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: []*commonpb.AnyValue{
							{Value: &commonpb.AnyValue_StringValue{StringValue: "x"}},
							{Value: &commonpb.AnyValue_IntValue{IntValue: 7}},
						}}}}},
						str("body", "first (1)\n\nthird: Str(x)"),
						str("empty", ""),
					},
					DroppedAttributesCount: 3,
					Links: []*tracepb.Span_Link{{
						TraceId: hexb(tidB), SpanId: hexb("0000000000000002"), TraceState: "k=v",
						Attributes: []*commonpb.KeyValue{str("link.reason", "fan-in")},
					}},
					Status: &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "bad\nworse"},
				}},
			}},
		},
		{
			Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{str("service.name", "raw-b")}},
			ScopeSpans: []*tracepb.ScopeSpans{{
				Spans: []*tracepb.Span{{
					TraceId: hexb(tidB), SpanId: hexb("0000000000000002"),
					Name: "root-b", Kind: tracepb.Span_SPAN_KIND_UNSPECIFIED,
					StartTimeUnixNano: ns(2 * time.Second), EndTimeUnixNano: ns(3 * time.Second),
				}},
			}},
		},
	}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := coltracepb.NewTraceServiceClient(conn).Export(ctx, req); err != nil {
		t.Fatalf("export: %v", err)
	}

	got := c.WaitSpans(t, 2, 20*time.Second, nil)
	if len(got) != 2 {
		t.Fatalf("got %d spans, want 2: %v", len(got), got)
	}
	compareSpan(t, got[0], collector.Span{
		TraceID: tidA, SpanID: "00f067aa0ba902b7", ParentID: "b7ad6b7169203331", TraceState: "vendor=value",
		Name: "consume\nsecond line", Kind: "Consumer",
		Start: t0, End: t0.Add(time.Second),
		StatusCode: "Error", StatusMessage: "bad\nworse",
		Attributes: map[string]string{
			"ratio": "0.25", "blob": "3q0=", "list": `["x",7]`,
			"body": "first (1)\n\nthird: Str(x)", "empty": "",
		},
		AttributeTypes: map[string]string{
			"ratio": "Double", "blob": "Bytes", "list": "Slice", "body": "Str", "empty": "Str",
		},
		Resource:               map[string]string{"service.name": "raw-a", "process.pid": "4242"},
		ResourceTypes:          map[string]string{"service.name": "Str", "process.pid": "Int"},
		ScopeName:              "raw",
		DroppedAttributesCount: 3,
		Links: []collector.Link{{
			TraceID: tidB, SpanID: "0000000000000002", TraceState: "k=v",
			Attributes: map[string]string{"link.reason": "fan-in"},
		}},
	})
	compareSpan(t, got[1], collector.Span{
		TraceID: tidB, SpanID: "0000000000000002", Name: "root-b", Kind: "Unspecified",
		Start: t0.Add(2 * time.Second), End: t0.Add(3 * time.Second),
		StatusCode: "Unset",
		Attributes: map[string]string{}, AttributeTypes: map[string]string{},
		Resource: map[string]string{"service.name": "raw-b"}, ResourceTypes: map[string]string{"service.name": "Str"},
	})
}

// TestConcurrentExports reads spans while concurrent exports are being
// written: the debug exporter's entries then interleave and Spans regularly
// sees one half written, and neither may surface as a lost or truncated span.
func TestConcurrentExports(t *testing.T) {
	c := collector.Start(t)
	conn, err := grpc.NewClient(c.Endpoint(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	client := coltracepb.NewTraceServiceClient(conn)

	const (
		workers  = 8
		requests = 20
		perReq   = 3
		total    = workers * requests * perReq
	)
	// Large values make each entry span many pages of the output file.
	payload := strings.Repeat("0123456789", 400) + "\nlast line"
	tid := make([]byte, 16)
	tid[0] = 0xc0

	stop := make(chan struct{})
	polled := make(chan int)
	go func() {
		polls := 0
		defer func() { polled <- polls }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			for _, s := range c.Spans() {
				if s.Attributes["payload"] != payload || s.AttributeTypes["seq"] != "Int" || s.End.IsZero() {
					t.Errorf("incomplete span surfaced: %v attrs=%d", s, len(s.Attributes))
				}
			}
			polls++
		}
	}()

	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			for r := range requests {
				var spans []*tracepb.Span
				for k := range perReq {
					seq := (w*requests+r)*perReq + k
					sid := make([]byte, 8)
					sid[0] = 0x5e
					sid[6], sid[7] = byte(seq>>8), byte(seq)
					spans = append(spans, &tracepb.Span{
						TraceId: tid, SpanId: sid, Name: "concurrent",
						StartTimeUnixNano: 1, EndTimeUnixNano: 2,
						Attributes: []*commonpb.KeyValue{
							{Key: "seq", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: int64(seq)}}},
							{Key: "payload", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: payload}}},
						},
					})
				}
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				_, err := client.Export(ctx, &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
					ScopeSpans: []*tracepb.ScopeSpans{{Spans: spans}},
				}}})
				cancel()
				if err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("export: %v", err)
	}

	got := c.WaitSpans(t, total, 30*time.Second, func(s collector.Span) bool { return s.Name == "concurrent" })
	close(stop)
	t.Logf("%d spans read back; Spans polled %d times during the exports", len(got), <-polled)
	seen := map[string]bool{}
	for _, s := range got {
		if seen[s.SpanID] {
			t.Errorf("span %s reported twice", s.SpanID)
		}
		seen[s.SpanID] = true
		if s.Attributes["payload"] != payload {
			t.Errorf("span %s: payload garbled (%d bytes)", s.SpanID, len(s.Attributes["payload"]))
		}
	}
	if len(seen) != total {
		t.Errorf("got %d distinct spans, want %d", len(seen), total)
	}
}

func compareSpan(t *testing.T, got, want collector.Span) {
	t.Helper()
	check := func(field string, g, w any) {
		t.Helper()
		if g != w {
			t.Errorf("span %q: %s = %#v, want %#v", want.Name, field, g, w)
		}
	}
	check("TraceID", got.TraceID, want.TraceID)
	check("SpanID", got.SpanID, want.SpanID)
	check("ParentID", got.ParentID, want.ParentID)
	check("TraceState", got.TraceState, want.TraceState)
	check("Name", got.Name, want.Name)
	check("Kind", got.Kind, want.Kind)
	check("StatusCode", got.StatusCode, want.StatusCode)
	check("StatusMessage", got.StatusMessage, want.StatusMessage)
	check("ResourceSchemaURL", got.ResourceSchemaURL, want.ResourceSchemaURL)
	check("ScopeName", got.ScopeName, want.ScopeName)
	check("ScopeVersion", got.ScopeVersion, want.ScopeVersion)
	check("DroppedAttributesCount", got.DroppedAttributesCount, want.DroppedAttributesCount)
	check("DroppedEventsCount", got.DroppedEventsCount, want.DroppedEventsCount)
	check("DroppedLinksCount", got.DroppedLinksCount, want.DroppedLinksCount)
	if !got.Start.Equal(want.Start) {
		t.Errorf("span %q: Start = %s, want %s", want.Name, got.Start, want.Start)
	}
	if !got.End.Equal(want.End) {
		t.Errorf("span %q: End = %s, want %s", want.Name, got.End, want.End)
	}
	checkMap := func(field string, g, w map[string]string) {
		t.Helper()
		if !maps.Equal(g, w) {
			t.Errorf("span %q: %s = %q, want %q", want.Name, field, g, w)
		}
	}
	checkMap("Attributes", got.Attributes, want.Attributes)
	checkMap("AttributeTypes", got.AttributeTypes, want.AttributeTypes)
	checkMap("Resource", got.Resource, want.Resource)
	checkMap("ResourceTypes", got.ResourceTypes, want.ResourceTypes)
	if !slices.EqualFunc(got.Events, want.Events, func(g, w collector.Event) bool {
		return g.Name == w.Name && g.Time.Equal(w.Time) && maps.Equal(g.Attributes, w.Attributes)
	}) {
		t.Errorf("span %q: Events = %+v, want %+v", want.Name, got.Events, want.Events)
	}
	if !slices.EqualFunc(got.Links, want.Links, func(g, w collector.Link) bool {
		return g.TraceID == w.TraceID && g.SpanID == w.SpanID && g.TraceState == w.TraceState && maps.Equal(g.Attributes, w.Attributes)
	}) {
		t.Errorf("span %q: Links = %+v, want %+v", want.Name, got.Links, want.Links)
	}
}
