package export

import (
	"reflect"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/otlptest"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// TestInvalidUTF8Repaired sends spans whose captured strings are not UTF-8
// in one batch with valid ones: every span must arrive, the bad bytes
// replaced and counted, over both OTLP protocols and both of the worker's
// paths to the SDK.
func TestInvalidUTF8Repaired(t *testing.T) {
	for _, protocol := range []string{"grpc", "http/protobuf"} {
		for _, via := range []string{"direct", "tracer"} {
			t.Run(protocol+"/"+via, func(t *testing.T) {
				rcv := startReceiver(t, protocol)

				in := orderTrace()
				in[0].Attributes = append(in[0].Attributes[:len(in[0].Attributes):len(in[0].Attributes)],
					attribute.String("url.query", "q=\xff\xfe"), attribute.StringSlice("sonde.list", []string{"ok", "a\xc3"}))
				in[1].Name = "GET /caf\xe9"
				in[2].StatusDescription = "bad \x80 gateway"
				badService := resource.NewWithAttributes(semconv.SchemaURL,
					semconv.ServiceName("svc\xf0\x28"), semconv.ProcessPID(77))
				in = append(in, &Span{
					TraceID: tid(0x40), SpanID: sid(0x41), Name: "GET", Kind: in[1].Kind,
					Start: base, End: base.Add(time.Millisecond), Resource: badService,
				}, &Span{
					TraceID: tid(0x50), SpanID: sid(0x51), Name: "GET /fine", Kind: in[1].Kind,
					Start: base, End: base.Add(time.Millisecond), Resource: orders,
				})
				before := in[0].Attributes[len(in[0].Attributes)-2]

				e := newExporter(t, &Options{Format: FormatOTLP, viaTracer: via == "tracer"})
				for _, s := range in {
					e.Export(s)
				}
				shutdown(t, e)

				got := rcv.WaitSpans(t, len(in), 5*time.Second)
				bySpan := map[string]otlptest.Span{}
				for _, s := range got {
					bySpan[s.SpanID] = s
				}
				if len(bySpan) != len(in) {
					t.Fatalf("received %d spans, want %d", len(bySpan), len(in))
				}
				if a := bySpan[sid(0xb7).String()].Attributes; a["url.query"] != "q=\uFFFD" ||
					!reflect.DeepEqual(a["sonde.list"], []any{"ok", "a\uFFFD"}) || a["url.path"] != "/api/orders" {
					t.Errorf("attributes %v, want the invalid bytes replaced and the rest kept", a)
				}
				if n := bySpan[sid(0xb8).String()].Name; n != "GET /caf\uFFFD" {
					t.Errorf("name %q", n)
				}
				if d := bySpan[sid(0xb9).String()].StatusMessage; d != "bad \uFFFD gateway" {
					t.Errorf("status message %q", d)
				}
				if svc := bySpan[sid(0x41).String()].Resource["service.name"]; svc != "svc\uFFFD(" {
					t.Errorf("service.name %q", svc)
				}
				if n := bySpan[sid(0x51).String()].Name; n != "GET /fine" {
					t.Errorf("name %q", n)
				}
				st := e.Stats()
				if st.Exported != uint64(len(in)) || st.Repaired != 4 {
					t.Errorf("stats %+v, want %d exported and 4 repaired", st, len(in))
				}
				checkBalance(t, st)
				if in[0].Attributes[len(in[0].Attributes)-2] != before || in[1].Name != "GET /caf\xe9" {
					t.Error("the caller's span was changed")
				}
			})
		}
	}
}

func TestValidSpanKeepsValidSpans(t *testing.T) {
	for _, s := range benchSpans()[:2] {
		if got, repaired := validSpan(s); got != s || repaired {
			t.Fatalf("a valid span was copied")
		}
	}
	s := &Span{Name: "ok", Status: codes.Error, Attributes: []attribute.KeyValue{attribute.Int("n", 1)}}
	if allocs := testing.AllocsPerRun(100, func() { validSpan(s) }); allocs != 0 {
		t.Errorf("validSpan of a valid span allocates %v times", allocs)
	}
}
