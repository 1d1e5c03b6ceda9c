package export

import (
	"context"
	"io"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/internal/otlptest"
)

// benchSpans returns server spans of distinct traces from two processes,
// shaped like sonde's HTTP server spans of a Go process (the attributes of
// one, in its order), to be handed out round-robin.
func benchSpans() []*Span {
	spans := make([]*Span, 1024)
	for i := range spans {
		id := tid(0)
		id[8], id[9] = byte(i), byte(i>>8)
		spans[i] = &Span{
			TraceID: id, SpanID: sid(byte(i)), Parent: remoteParent(id, sid(0xff), true),
			Name: "GET /api/orders/{id}", Kind: trace.SpanKindServer,
			Start: base, End: base.Add(3 * time.Millisecond),
			Attributes: []attribute.KeyValue{
				semconv.HTTPRequestMethodGet, semconv.URLScheme("http"), semconv.NetworkProtocolVersion("1.1"),
				semconv.HTTPRoute("/api/orders/{id}"), semconv.URLPath("/api/orders/42"),
				semconv.ServerAddress("orders"), semconv.ServerPort(8080), semconv.ClientAddress("10.0.0.7"),
				semconv.NetworkPeerAddress("10.0.0.7"), semconv.NetworkPeerPort(51234),
				semconv.HTTPResponseStatusCode(200), attribute.String("sonde.source", "go"),
				semconv.UserAgentOriginal("curl/7.88.1"),
				attribute.Int64("sonde.tcp.request_seq", 836698776), attribute.Int64("sonde.tcp.response_seq", 2436905146),
			},
			Resource: []*resource.Resource{frontend, orders}[i/512],
		}
	}
	return spans
}

// BenchmarkPipeline measures spans per second through the whole SDK
// pipeline into a discarding writer, Shutdown's flush included. The queue
// holds every span, so none is dropped. Each format runs twice, A/B: the
// spans handed to the processor directly, as sonde does, and started and
// ended through the SDK's tracer.
func BenchmarkPipeline(b *testing.B) {
	for _, format := range []Format{FormatJSON, FormatText} {
		for _, via := range []string{"direct", "tracer"} {
			b.Run(string(format)+"/"+via, func(b *testing.B) {
				runPipeline(b, &Options{Format: format, Writer: io.Discard, MaxQueue: b.N + 1, TextDelay: time.Hour,
					viaTracer: via == "tracer"})
			})
		}
	}
}

// BenchmarkPipelineOTLP is BenchmarkPipeline over OTLP/gRPC to a receiver
// in this process that only counts what arrives (otlptest.Counter), so
// that the figure is the exporting side's.
func BenchmarkPipelineOTLP(b *testing.B) {
	r := otlptest.StartCounter(b)
	b.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+r.Endpoint())
	b.Setenv("OTEL_EXPORTER_OTLP_INSECURE", "true")
	// direct-sdk encodes as the SDK's exporter does, not with spanExporter
	// and requestCodec.
	for _, via := range []string{"direct-sdk", "direct", "tracer"} {
		b.Run(via, func(b *testing.B) {
			sdkEncoding = via == "direct-sdk"
			defer func() { sdkEncoding = false }()
			before := r.Spans()
			runPipeline(b, &Options{Format: FormatOTLP, MaxQueue: b.N + 1, viaTracer: via == "tracer"})
			if got := r.Spans() - before; got != int64(b.N) {
				b.Fatalf("the receiver got %d spans, want %d", got, b.N)
			}
		})
	}
}

func runPipeline(b *testing.B, opts *Options) {
	spans := benchSpans()
	e, err := New(context.Background(), opts)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		e.Export(spans[i%len(spans)])
	}
	if err := e.Shutdown(context.Background()); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if st := e.Stats(); st.Exported != uint64(b.N) {
		b.Fatalf("stats %+v, want %d exported", st, b.N)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "spans/s")
}

// BenchmarkExport measures what Export costs the capturing goroutine. The
// pipeline cannot keep up with a tight loop, so most calls take the
// counted-drop path; both paths must stay cheap.
func BenchmarkExport(b *testing.B) {
	spans := benchSpans()
	e, err := New(context.Background(), &Options{Format: FormatJSON, Writer: io.Discard})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		e.Export(spans[i%len(spans)])
	}
	b.StopTimer()
	st := e.Stats()
	b.ReportMetric(float64(st.Dropped)/float64(st.Received), "dropped/op")
	// Flushing what was queued is BenchmarkPipeline's subject, not this one's.
	ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	e.Shutdown(ctx)
}
