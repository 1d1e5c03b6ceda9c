package otlptest

import (
	"errors"
	"net"
	"sync/atomic"
	"testing"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protowire"
)

// Counter is an OTLP/gRPC trace receiver that keeps nothing but counts:
// the spans it received and the requests they came in. A benchmark's
// receiver shares the machine with what it measures, and the Receiver's
// decoding of every span into maps costs more than the exporter it serves;
// a collector would run somewhere else. Counter walks each request's wire
// bytes to count its spans and allocates nothing per span.
type Counter struct {
	addr     string
	spans    atomic.Int64
	requests atomic.Int64
	bad      atomic.Int64
}

// StartCounter starts a counting receiver on 127.0.0.1; it is stopped when
// tb's test ends.
func StartCounter(tb testing.TB) *Counter {
	tb.Helper()
	c := &Counter{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("otlptest: listen grpc: %v", err)
	}
	c.addr = l.Addr().String()
	gs := grpc.NewServer(grpc.ForceServerCodec(countCodec{}), grpc.UnknownServiceHandler(c.handle))
	go gs.Serve(l)
	tb.Cleanup(gs.Stop)
	return c
}

// Endpoint returns the host:port of the OTLP/gRPC listener.
func (c *Counter) Endpoint() string { return c.addr }

// Spans returns the number of spans received so far.
func (c *Counter) Spans() int64 { return c.spans.Load() }

// Requests returns the number of export requests received so far.
func (c *Counter) Requests() int64 { return c.requests.Load() }

// Malformed returns the number of requests whose bytes were not an
// ExportTraceServiceRequest.
func (c *Counter) Malformed() int64 { return c.bad.Load() }

const traceExport = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"

func (c *Counter) handle(_ any, stream grpc.ServerStream) error {
	method, _ := grpc.MethodFromServerStream(stream)
	if method != traceExport {
		return status.Errorf(codes.Unimplemented, "otlptest: counter serves only %s", traceExport)
	}
	var m countedMessage
	if err := stream.RecvMsg(&m); err != nil {
		return err
	}
	c.requests.Add(1)
	if m.err != nil {
		c.bad.Add(1)
		return status.Errorf(codes.InvalidArgument, "otlptest: %v", m.err)
	}
	c.spans.Add(int64(m.spans))
	return stream.SendMsg(&countedMessage{}) // an empty ExportTraceServiceResponse
}

// countedMessage is what countCodec makes of a request: its span count.
type countedMessage struct {
	spans int
	err   error
}

// countCodec reads an ExportTraceServiceRequest only as far as counting
// its spans, and writes the empty response.
type countCodec struct{}

func (countCodec) Name() string { return "proto" }

func (countCodec) Marshal(v any) ([]byte, error) {
	if _, ok := v.(*countedMessage); !ok {
		return nil, errors.New("otlptest: counter can only answer empty messages")
	}
	return nil, nil
}

func (countCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(*countedMessage)
	if !ok {
		return errors.New("otlptest: counter can only read its own messages")
	}
	// ExportTraceServiceRequest.resource_spans (1) > ResourceSpans.scope_spans
	// (2) > ScopeSpans.spans (2).
	m.spans, m.err = 0, nil
	m.err = eachField(data, 1, func(rs []byte) error {
		return eachField(rs, 2, func(ss []byte) error {
			return eachField(ss, 2, func([]byte) error { m.spans++; return nil })
		})
	})
	return nil
}

// eachField calls fn with the bytes of every length-delimited field num in
// the message b, skipping every other field.
func eachField(b []byte, num protowire.Number, fn func([]byte) error) error {
	for len(b) > 0 {
		n, typ, l := protowire.ConsumeTag(b)
		if l < 0 {
			return protowire.ParseError(l)
		}
		b = b[l:]
		if n == num && typ == protowire.BytesType {
			v, l := protowire.ConsumeBytes(b)
			if l < 0 {
				return protowire.ParseError(l)
			}
			if err := fn(v); err != nil {
				return err
			}
			b = b[l:]
			continue
		}
		l = protowire.ConsumeFieldValue(n, typ, b)
		if l < 0 {
			return protowire.ParseError(l)
		}
		b = b[l:]
	}
	return nil
}
