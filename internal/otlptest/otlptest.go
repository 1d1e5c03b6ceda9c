// Package otlptest runs a real OTLP trace receiver in-process, so tests can
// check what an exporter actually put on the wire.
//
// The receiver speaks OTLP/gRPC (the collector TraceService, and the
// MetricsService for sums and histograms) and OTLP/HTTP with protobuf
// bodies for traces, on loopback ports chosen by the kernel.
package otlptest

import (
	"compress/gzip"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// Span is one received span, flattened out of its resource and scope.
type Span struct {
	TraceID       string // 32 lowercase hex digits
	SpanID        string // 16 lowercase hex digits
	ParentSpanID  string // 16 lowercase hex digits, or empty for a root span
	TraceState    string
	Flags         uint32
	Name          string
	Kind          string // unspecified, internal, server, client, producer or consumer
	Start, End    time.Time
	StatusCode    string // Unset, Ok or Error
	StatusMessage string
	Scope         string
	// Attribute values are string, bool, int64, float64, []byte, []any,
	// map[string]any or nil.
	Attributes map[string]any
	Resource   map[string]any
}

// Receiver is a running OTLP trace receiver.
type Receiver struct {
	coltracepb.UnimplementedTraceServiceServer

	grpcAddr string
	httpAddr string

	mu       sync.Mutex
	requests []*coltracepb.ExportTraceServiceRequest
	spans    []Span
	failLeft int
	failCode codes.Code
	failed   int
	changed  chan struct{} // closed and replaced whenever a request arrives
	points   []Point
}

// Start starts a receiver on 127.0.0.1; it is stopped when tb's test ends.
func Start(tb testing.TB) *Receiver {
	tb.Helper()
	r := &Receiver{changed: make(chan struct{})}

	gl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("otlptest: listen grpc: %v", err)
	}
	hl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		gl.Close()
		tb.Fatalf("otlptest: listen http: %v", err)
	}
	r.grpcAddr = gl.Addr().String()
	r.httpAddr = hl.Addr().String()

	gs := grpc.NewServer()
	coltracepb.RegisterTraceServiceServer(gs, r)
	colmetricspb.RegisterMetricsServiceServer(gs, metricsService{r: r})
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.serveHTTP)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}

	go gs.Serve(gl)
	go hs.Serve(hl)
	tb.Cleanup(func() {
		// Stop, not GracefulStop: an exporter under test may keep its
		// connection open, and a test must not hang on it.
		gs.Stop()
		hs.Close()
	})
	return r
}

// Endpoint returns the host:port of the OTLP/gRPC listener.
func (r *Receiver) Endpoint() string { return r.grpcAddr }

// HTTPEndpoint returns the base URL of the OTLP/HTTP listener; traces are
// accepted at /v1/traces below it.
func (r *Receiver) HTTPEndpoint() string { return "http://" + r.httpAddr }

// FailNext makes the next n export requests fail with code, whichever
// protocol they use. Over HTTP the code becomes the matching status.
func (r *Receiver) FailNext(n int, code codes.Code) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failLeft, r.failCode = n, code
}

// Failed returns how many requests were refused because of FailNext.
func (r *Receiver) Failed() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failed
}

// Requests returns the accepted requests, for assertions on how spans were
// grouped on the wire.
func (r *Receiver) Requests() []*coltracepb.ExportTraceServiceRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*coltracepb.ExportTraceServiceRequest, len(r.requests))
	for i, req := range r.requests {
		out[i] = proto.Clone(req).(*coltracepb.ExportTraceServiceRequest)
	}
	return out
}

// Spans returns every span accepted so far, in arrival order.
func (r *Receiver) Spans() []Span {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Span(nil), r.spans...)
}

// WaitSpans waits until at least n spans have been accepted and returns
// them all; it fails the test if that takes longer than timeout.
func (r *Receiver) WaitSpans(tb testing.TB, n int, timeout time.Duration) []Span {
	tb.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		r.mu.Lock()
		got, changed := len(r.spans), r.changed
		if got >= n {
			spans := append([]Span(nil), r.spans...)
			r.mu.Unlock()
			return spans
		}
		reqs, failed := len(r.requests), r.failed
		r.mu.Unlock()

		select {
		case <-changed:
		case <-deadline.C:
			tb.Fatalf("otlptest: got %d spans in %d requests (%d refused) after %v, want %d%s",
				got, reqs, failed, timeout, n, summary(r.Spans()))
			return nil
		}
	}
}

func summary(spans []Span) string {
	if len(spans) == 0 {
		return ""
	}
	var b strings.Builder
	b.WriteString(":")
	for _, s := range spans {
		fmt.Fprintf(&b, "\n\t%s/%s %s %q", s.TraceID, s.SpanID, s.Kind, s.Name)
	}
	return b.String()
}

// Export implements the collector's TraceService.
func (r *Receiver) Export(_ context.Context, req *coltracepb.ExportTraceServiceRequest) (*coltracepb.ExportTraceServiceResponse, error) {
	if code, fail := r.accept(req); fail {
		return nil, status.Errorf(code, "otlptest: injected failure")
	}
	return &coltracepb.ExportTraceServiceResponse{}, nil
}

func (r *Receiver) serveHTTP(w http.ResponseWriter, req *http.Request) {
	var body io.Reader = http.MaxBytesReader(w, req.Body, 64<<20)
	if req.Header.Get("Content-Encoding") == "gzip" {
		zr, err := gzip.NewReader(body)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		defer zr.Close()
		body = zr
	}
	data, err := io.ReadAll(body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if ct := req.Header.Get("Content-Type"); ct != "application/x-protobuf" {
		http.Error(w, "otlptest: unsupported content type "+ct, http.StatusUnsupportedMediaType)
		return
	}
	msg := new(coltracepb.ExportTraceServiceRequest)
	if err := proto.Unmarshal(data, msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if code, fail := r.accept(msg); fail {
		http.Error(w, "otlptest: injected failure", httpStatus(code))
		return
	}
	resp, err := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	w.Write(resp)
}

// httpStatus maps a gRPC code onto the status an OTLP/HTTP collector would
// answer, so that exporters apply the same retry rules to both.
func httpStatus(c codes.Code) int {
	switch c {
	case codes.Unavailable:
		return http.StatusServiceUnavailable
	case codes.ResourceExhausted:
		return http.StatusTooManyRequests
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.Unauthenticated:
		return http.StatusUnauthorized
	case codes.PermissionDenied:
		return http.StatusForbidden
	default:
		return http.StatusInternalServerError
	}
}

// accept records req, unless a failure is pending.
func (r *Receiver) accept(req *coltracepb.ExportTraceServiceRequest) (codes.Code, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	defer func() {
		close(r.changed)
		r.changed = make(chan struct{})
	}()
	if r.failLeft > 0 {
		r.failLeft--
		r.failed++
		return r.failCode, true
	}
	r.requests = append(r.requests, req)
	r.spans = append(r.spans, flatten(req)...)
	return codes.OK, false
}

func flatten(req *coltracepb.ExportTraceServiceRequest) []Span {
	var out []Span
	for _, rs := range req.GetResourceSpans() {
		res := attrMap(rs.GetResource().GetAttributes())
		for _, ss := range rs.GetScopeSpans() {
			scope := ss.GetScope().GetName()
			for _, s := range ss.GetSpans() {
				out = append(out, Span{
					TraceID:       hex.EncodeToString(s.GetTraceId()),
					SpanID:        hex.EncodeToString(s.GetSpanId()),
					ParentSpanID:  hex.EncodeToString(s.GetParentSpanId()),
					TraceState:    s.GetTraceState(),
					Flags:         s.GetFlags(),
					Name:          s.GetName(),
					Kind:          kindName(s.GetKind()),
					Start:         unixNano(s.GetStartTimeUnixNano()),
					End:           unixNano(s.GetEndTimeUnixNano()),
					StatusCode:    statusName(s.GetStatus().GetCode()),
					StatusMessage: s.GetStatus().GetMessage(),
					Scope:         scope,
					Attributes:    attrMap(s.GetAttributes()),
					Resource:      res,
				})
			}
		}
	}
	return out
}

func unixNano(n uint64) time.Time { return time.Unix(0, int64(n)).UTC() }

func kindName(k tracepb.Span_SpanKind) string {
	switch k {
	case tracepb.Span_SPAN_KIND_INTERNAL:
		return "internal"
	case tracepb.Span_SPAN_KIND_SERVER:
		return "server"
	case tracepb.Span_SPAN_KIND_CLIENT:
		return "client"
	case tracepb.Span_SPAN_KIND_PRODUCER:
		return "producer"
	case tracepb.Span_SPAN_KIND_CONSUMER:
		return "consumer"
	default:
		return "unspecified"
	}
}

func statusName(c tracepb.Status_StatusCode) string {
	switch c {
	case tracepb.Status_STATUS_CODE_OK:
		return "Ok"
	case tracepb.Status_STATUS_CODE_ERROR:
		return "Error"
	default:
		return "Unset"
	}
}

func attrMap(kvs []*commonpb.KeyValue) map[string]any {
	m := make(map[string]any, len(kvs))
	for _, kv := range kvs {
		m[kv.GetKey()] = anyValue(kv.GetValue())
	}
	return m
}

func anyValue(v *commonpb.AnyValue) any {
	switch x := v.GetValue().(type) {
	case *commonpb.AnyValue_StringValue:
		return x.StringValue
	case *commonpb.AnyValue_BoolValue:
		return x.BoolValue
	case *commonpb.AnyValue_IntValue:
		return x.IntValue
	case *commonpb.AnyValue_DoubleValue:
		return x.DoubleValue
	case *commonpb.AnyValue_BytesValue:
		return x.BytesValue
	case *commonpb.AnyValue_ArrayValue:
		vals := x.ArrayValue.GetValues()
		out := make([]any, len(vals))
		for i, e := range vals {
			out[i] = anyValue(e)
		}
		return out
	case *commonpb.AnyValue_KvlistValue:
		return attrMap(x.KvlistValue.GetValues())
	default:
		return nil
	}
}
