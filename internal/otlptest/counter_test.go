package otlptest

import (
	"context"
	"testing"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// rawBytes is sent as it is: a client-side codec for malformed requests.
type rawBytes []byte

type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*rawBytes), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*v.(*rawBytes) = append((*v.(*rawBytes))[:0], data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

func TestCounterCountsSpans(t *testing.T) {
	c := StartCounter(t)
	client := coltracepb.NewTraceServiceClient(dial(t, c.Endpoint()))
	// Two resources, the second with two scopes of two and three spans.
	req := request("a")
	second := proto.Clone(req.ResourceSpans[0]).(*tracepb.ResourceSpans)
	second.ScopeSpans = append(second.ScopeSpans, proto.Clone(second.ScopeSpans[0]).(*tracepb.ScopeSpans))
	second.ScopeSpans[0].Spans = append(second.ScopeSpans[0].Spans, proto.Clone(second.ScopeSpans[0].Spans[0]).(*tracepb.Span))
	for range 2 {
		second.ScopeSpans[1].Spans = append(second.ScopeSpans[1].Spans, proto.Clone(second.ScopeSpans[1].Spans[0]).(*tracepb.Span))
	}
	req.ResourceSpans = append(req.ResourceSpans, second)
	for range 3 {
		if _, err := client.Export(context.Background(), req); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := c.Spans(), int64(3*(1+2+3)); got != want {
		t.Errorf("Spans() = %d, want %d", got, want)
	}
	if got := c.Requests(); got != 3 {
		t.Errorf("Requests() = %d, want 3", got)
	}
	if got := c.Malformed(); got != 0 {
		t.Errorf("Malformed() = %d, want 0", got)
	}
}

func TestCounterRejects(t *testing.T) {
	c := StartCounter(t)
	conn := dial(t, c.Endpoint())
	// A truncated request: a length prefix longer than what follows.
	bad := rawBytes{0x0a, 0x7f, 0x12}
	var resp rawBytes
	err := conn.Invoke(context.Background(), traceExport, &bad, &resp, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("malformed request: %v, want InvalidArgument", err)
	}
	if c.Malformed() != 1 || c.Spans() != 0 {
		t.Errorf("malformed request: Malformed() = %d, Spans() = %d, want 1, 0", c.Malformed(), c.Spans())
	}
	err = conn.Invoke(context.Background(), "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export", &bad, &resp, grpc.ForceCodec(rawCodec{}))
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("other method: %v, want Unimplemented", err)
	}
}
