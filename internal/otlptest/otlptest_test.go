package otlptest

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

var (
	traceID = []byte{0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36}
	spanID  = []byte{0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7}
	parent  = []byte{0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08}
	start   = time.Date(2025, 3, 1, 12, 0, 0, 123456789, time.UTC)
)

func str(s string) *commonpb.AnyValue {
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: s}}
}

func request(name string) *coltracepb.ExportTraceServiceRequest {
	return &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{{
		Resource: &resourcepb.Resource{Attributes: []*commonpb.KeyValue{
			{Key: "service.name", Value: str("orders")},
			{Key: "process.pid", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: 901}}},
		}},
		ScopeSpans: []*tracepb.ScopeSpans{{
			Scope: &commonpb.InstrumentationScope{Name: "scope"},
			Spans: []*tracepb.Span{{
				TraceId:           traceID,
				SpanId:            spanID,
				ParentSpanId:      parent,
				TraceState:        "k=v",
				Flags:             1,
				Name:              name,
				Kind:              tracepb.Span_SPAN_KIND_SERVER,
				StartTimeUnixNano: uint64(start.UnixNano()),
				EndTimeUnixNano:   uint64(start.Add(3 * time.Millisecond).UnixNano()),
				Status:            &tracepb.Status{Code: tracepb.Status_STATUS_CODE_ERROR, Message: "boom"},
				Attributes: []*commonpb.KeyValue{
					{Key: "s", Value: str("x")},
					{Key: "b", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: true}}},
					{Key: "i", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: -7}}},
					{Key: "f", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: 1.5}}},
					{Key: "raw", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: []byte{1, 2}}}},
					{Key: "a", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{
						Values: []*commonpb.AnyValue{str("p"), str("q")},
					}}}},
					{Key: "m", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{
						Values: []*commonpb.KeyValue{{Key: "inner", Value: str("y")}},
					}}}},
					{Key: "empty", Value: &commonpb.AnyValue{}},
				},
			}},
		}},
	}}}
}

func wantSpan(name string) Span {
	return Span{
		TraceID:       "4bf92f3577b34da6a3ce929d0e0e4736",
		SpanID:        "00f067aa0ba902b7",
		ParentSpanID:  "0102030405060708",
		TraceState:    "k=v",
		Flags:         1,
		Name:          name,
		Kind:          "server",
		Start:         start,
		End:           start.Add(3 * time.Millisecond),
		StatusCode:    "Error",
		StatusMessage: "boom",
		Scope:         "scope",
		Attributes: map[string]any{
			"s": "x", "b": true, "i": int64(-7), "f": 1.5, "raw": []byte{1, 2},
			"a": []any{"p", "q"}, "m": map[string]any{"inner": "y"}, "empty": nil,
		},
		Resource: map[string]any{"service.name": "orders", "process.pid": int64(901)},
	}
}

func grpcClient(t *testing.T, r *Receiver) coltracepb.TraceServiceClient {
	t.Helper()
	return coltracepb.NewTraceServiceClient(dial(t, r.Endpoint()))
}

// dial connects to a receiver's OTLP/gRPC endpoint until t ends.
func dial(t *testing.T, endpoint string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(endpoint, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func postHTTP(t *testing.T, r *Receiver, req *coltracepb.ExportTraceServiceRequest, gz bool) *http.Response {
	t.Helper()
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	if gz {
		var b bytes.Buffer
		zw := gzip.NewWriter(&b)
		zw.Write(body)
		zw.Close()
		body = b.Bytes()
	}
	hr, err := http.NewRequest(http.MethodPost, r.HTTPEndpoint()+"/v1/traces", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	hr.Header.Set("Content-Type", "application/x-protobuf")
	if gz {
		hr.Header.Set("Content-Encoding", "gzip")
	}
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

func TestGRPCFlattensSpans(t *testing.T) {
	r := Start(t)
	if _, err := grpcClient(t, r).Export(t.Context(), request("GET /v1/list")); err != nil {
		t.Fatal(err)
	}
	got := r.WaitSpans(t, 1, 5*time.Second)
	if len(got) != 1 || !reflect.DeepEqual(got[0], wantSpan("GET /v1/list")) {
		t.Fatalf("spans = %#v\nwant %#v", got, wantSpan("GET /v1/list"))
	}
	reqs := r.Requests()
	if len(reqs) != 1 || !proto.Equal(reqs[0], request("GET /v1/list")) {
		t.Fatalf("requests = %v", reqs)
	}
}

func TestHTTPAcceptsPlainAndGzip(t *testing.T) {
	r := Start(t)
	for _, gz := range []bool{false, true} {
		if resp := postHTTP(t, r, request(fmt.Sprint("gzip=", gz)), gz); resp.StatusCode != http.StatusOK {
			t.Fatalf("gzip=%v: status %d", gz, resp.StatusCode)
		}
	}
	got := r.WaitSpans(t, 2, 5*time.Second)
	for i, gz := range []bool{false, true} {
		if want := wantSpan(fmt.Sprint("gzip=", gz)); !reflect.DeepEqual(got[i], want) {
			t.Errorf("span %d = %#v\nwant %#v", i, got[i], want)
		}
	}
}

func TestFailNext(t *testing.T) {
	r := Start(t)
	c := grpcClient(t, r)
	r.FailNext(2, codes.Unavailable)

	for i := range 2 {
		_, err := c.Export(t.Context(), request("refused"))
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("call %d: err = %v, want Unavailable", i, err)
		}
	}
	if _, err := c.Export(t.Context(), request("accepted")); err != nil {
		t.Fatalf("call after failures: %v", err)
	}
	if got := r.Spans(); len(got) != 1 || got[0].Name != "accepted" {
		t.Fatalf("spans = %v, want only the accepted one", got)
	}
	if r.Failed() != 2 {
		t.Fatalf("Failed() = %d, want 2", r.Failed())
	}

	r.FailNext(1, codes.ResourceExhausted)
	if resp := postHTTP(t, r, request("refused"), false); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("http status = %d, want 429", resp.StatusCode)
	}
	if resp := postHTTP(t, r, request("accepted"), false); resp.StatusCode != http.StatusOK {
		t.Fatalf("http status = %d, want 200", resp.StatusCode)
	}
	if r.Failed() != 3 || len(r.Spans()) != 2 {
		t.Fatalf("Failed() = %d, spans = %d; want 3 and 2", r.Failed(), len(r.Spans()))
	}
}

func TestHTTPRejectsOtherContentTypes(t *testing.T) {
	r := Start(t)
	resp, err := http.Post(r.HTTPEndpoint()+"/v1/traces", "application/json", strings.NewReader("{}"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnsupportedMediaType {
		t.Fatalf("status = %d, want 415", resp.StatusCode)
	}
	if n := len(r.Requests()); n != 0 {
		t.Fatalf("%d requests recorded, want 0", n)
	}
}

// fatalRecorder records Fatalf instead of stopping the goroutine, so the
// failure path of WaitSpans can be observed.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}

func (f *fatalRecorder) Fatalf(format string, args ...any) { f.msg = fmt.Sprintf(format, args...) }

func TestWaitSpansTimeoutMessage(t *testing.T) {
	r := Start(t)
	if _, err := grpcClient(t, r).Export(context.Background(), request("only")); err != nil {
		t.Fatal(err)
	}
	rec := &fatalRecorder{TB: t}
	begin := time.Now()
	if got := r.WaitSpans(rec, 2, 100*time.Millisecond); got != nil {
		t.Fatalf("WaitSpans returned %v after a timeout", got)
	}
	if waited := time.Since(begin); waited < 100*time.Millisecond || waited > 5*time.Second {
		t.Fatalf("WaitSpans waited %v, want about 100ms", waited)
	}
	for _, want := range []string{"got 1 spans in 1 requests", "want 2", `server "only"`, "00f067aa0ba902b7"} {
		if !strings.Contains(rec.msg, want) {
			t.Errorf("message %q lacks %q", rec.msg, want)
		}
	}
}
