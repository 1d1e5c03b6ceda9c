// spanfloor exports spans shaped like sonde's HTTP server spans over OTLP
// and nothing else, and reports the CPU it took per span: what exporting
// alone costs on this machine, as an instrumented program pays it with the
// OpenTelemetry SDK (-mode sdk) and as sonde's exporter pays it (-mode
// sonde). The receiver is another process, so that its CPU is not counted.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/tracer/export"
)

func main() {
	mode := flag.String("mode", "sdk", "sdk or sonde")
	n := flag.Int("n", 100000, "spans to export")
	flag.Parse()
	res := resource.NewWithAttributes(semconv.SchemaURL, semconv.ServiceName("orders"), semconv.ProcessPID(901),
		semconv.ProcessExecutableName("orders"), semconv.HostName("web-1"))
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodGet, semconv.URLScheme("http"), semconv.NetworkProtocolVersion("1.1"),
		semconv.HTTPRoute("/api/orders/{id}"), semconv.URLPath("/api/orders/42"),
		semconv.ServerAddress("orders"), semconv.ServerPort(8080), semconv.ClientAddress("10.0.0.7"),
		semconv.NetworkPeerAddress("10.0.0.7"), semconv.NetworkPeerPort(51234),
		semconv.HTTPResponseStatusCode(200), attribute.String("sonde.source", "go"),
		semconv.UserAgentOriginal("curl/7.88.1"),
		attribute.Int64("sonde.tcp.request_seq", 836698776), attribute.Int64("sonde.tcp.response_seq", 2436905146),
	}
	ctx := context.Background()
	start := time.Now()
	cpu0 := cpuTime()
	var err error
	switch *mode {
	case "sdk":
		err = viaSDK(ctx, *n, res, attrs, start)
	case "sonde":
		err = viaSonde(ctx, *n, res, attrs, start)
	default:
		err = fmt.Errorf("unknown mode %q", *mode)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "spanfloor:", err)
		os.Exit(1)
	}
	fmt.Printf("spans %d cpu_ns %d\n", *n, (cpuTime() - cpu0).Nanoseconds())
}

// viaSDK is an instrumented program's way: a span started and ended
// through the SDK's tracer, the batch processor, the OTLP exporter.
// Blocking keeps every span: dropping would make exporting look cheap.
func viaSDK(ctx context.Context, n int, res *resource.Resource, attrs []attribute.KeyValue, at time.Time) error {
	exp, err := otlptracegrpc.New(ctx)
	if err != nil {
		return err
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithResource(res), sdktrace.WithBatcher(exp, sdktrace.WithBlocking()))
	tr := tp.Tracer("spanfloor")
	for range n {
		_, span := tr.Start(ctx, "GET /api/orders/{id}", trace.WithSpanKind(trace.SpanKindServer),
			trace.WithTimestamp(at), trace.WithAttributes(attrs...))
		span.End(trace.WithTimestamp(at.Add(3 * time.Millisecond)))
	}
	return tp.Shutdown(ctx)
}

func viaSonde(ctx context.Context, n int, res *resource.Resource, attrs []attribute.KeyValue, at time.Time) error {
	e, err := export.New(ctx, &export.Options{Format: export.FormatOTLP, MaxQueue: n + 1})
	if err != nil {
		return err
	}
	for i := range n {
		id := trace.TraceID{1, byte(i), byte(i >> 8), byte(i >> 16), 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16}
		e.Export(&export.Span{
			TraceID: id, SpanID: trace.SpanID{1, 2, 3, 4, byte(i), byte(i >> 8), byte(i >> 16), 8},
			Name: "GET /api/orders/{id}", Kind: trace.SpanKindServer,
			Start: at, End: at.Add(3 * time.Millisecond), Attributes: attrs, Resource: res,
		})
	}
	if err := e.Shutdown(ctx); err != nil {
		return err
	}
	if st := e.Stats(); st.Exported != uint64(n) {
		return fmt.Errorf("exported %d of %d spans: %+v", st.Exported, n, st)
	}
	return nil
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
