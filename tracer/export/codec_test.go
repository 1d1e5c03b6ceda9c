package export

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/sondehq/sonde/internal/otlptest"
)

// written lists, per message, the fields the encoder writes. A new version
// of the OTLP protos that adds a field fails TestCodecKnowsEveryField until
// the encoder writes it and it is listed here.
var written = map[protoreflect.FullName][]protoreflect.FieldNumber{
	"opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest": {1},
	"opentelemetry.proto.trace.v1.ResourceSpans":                       {1, 2, 3},
	"opentelemetry.proto.resource.v1.Resource":                         {1, 2, 3},
	"opentelemetry.proto.common.v1.EntityRef":                          {1, 2, 3, 4},
	"opentelemetry.proto.trace.v1.ScopeSpans":                          {1, 2, 3},
	"opentelemetry.proto.common.v1.InstrumentationScope":               {1, 2, 3, 4},
	"opentelemetry.proto.trace.v1.Span":                                {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16},
	"opentelemetry.proto.trace.v1.Status":                              {2, 3},
	"opentelemetry.proto.trace.v1.Span.Event":                          {1, 2, 3, 4},
	"opentelemetry.proto.trace.v1.Span.Link":                           {1, 2, 3, 4, 5, 6},
	"opentelemetry.proto.common.v1.KeyValue":                           {1, 2, 3},
	"opentelemetry.proto.common.v1.AnyValue":                           {1, 2, 3, 4, 5, 6, 7, 8},
	"opentelemetry.proto.common.v1.ArrayValue":                         {1},
	"opentelemetry.proto.common.v1.KeyValueList":                       {1},
}

func TestCodecKnowsEveryField(t *testing.T) {
	seen := map[protoreflect.FullName]bool{}
	var walk func(md protoreflect.MessageDescriptor)
	walk = func(md protoreflect.MessageDescriptor) {
		if seen[md.FullName()] {
			return
		}
		seen[md.FullName()] = true
		want, ok := written[md.FullName()]
		if !ok {
			t.Errorf("message %s is not encoded", md.FullName())
			return
		}
		var have []protoreflect.FieldNumber
		for i := range md.Fields().Len() {
			fd := md.Fields().Get(i)
			have = append(have, fd.Number())
			if fd.Message() != nil {
				walk(fd.Message())
			}
		}
		slices.Sort(have)
		if !slices.Equal(have, want) {
			t.Errorf("%s has fields %v, the encoder writes %v", md.FullName(), have, want)
		}
	}
	walk((&coltracepb.ExportTraceServiceRequest{}).ProtoReflect().Descriptor())
	for name := range written {
		if !seen[name] {
			t.Errorf("%s is listed but no longer part of the request", name)
		}
	}
}

// populate sets every field of m, recursing into messages up to depth, with
// values chosen by *n, which it advances: different n choose different
// oneof members, lengths and signs. long allows strings long enough that a
// message's length needs more than one byte, and its parents' more than
// two.
func populate(m protoreflect.Message, n *int, depth int, long bool) {
	fields := m.Descriptor().Fields()
	oneofChoice := map[protoreflect.FullName]int{}
	for i := range fields.Len() {
		fd := fields.Get(i)
		*n++
		if od := fd.ContainingOneof(); od != nil && !od.IsSynthetic() {
			choice, ok := oneofChoice[od.FullName()]
			if !ok {
				choice = *n % od.Fields().Len()
				if depth == 0 {
					choice = 0 // a string: no recursion at the bottom
				}
				oneofChoice[od.FullName()] = choice
			}
			if od.Fields().Get(choice) != fd {
				continue
			}
		}
		if fd.Message() != nil && depth == 0 {
			continue
		}
		if fd.IsList() {
			list := m.Mutable(fd).List()
			for range 1 + *n%3 {
				if fd.Message() != nil {
					el := list.NewElement()
					populate(el.Message(), n, depth-1, long)
					list.Append(el)
				} else {
					list.Append(scalar(fd, n, long))
				}
			}
			continue
		}
		if fd.Message() != nil {
			populate(m.Mutable(fd).Message(), n, depth-1, long)
			continue
		}
		m.Set(fd, scalar(fd, n, long))
	}
}

func scalar(fd protoreflect.FieldDescriptor, n *int, long bool) protoreflect.Value {
	*n++
	v := *n
	switch fd.Kind() {
	case protoreflect.StringKind:
		if !long {
			return protoreflect.ValueOfString(strings.Repeat("sé", 1+v%3))
		}
		return protoreflect.ValueOfString(strings.Repeat("sé", 1+v%7*v%300))
	case protoreflect.BytesKind:
		return protoreflect.ValueOfBytes(bytes.Repeat([]byte{byte(v)}, 1+v%16))
	case protoreflect.BoolKind:
		return protoreflect.ValueOfBool(v%2 == 0)
	case protoreflect.EnumKind:
		return protoreflect.ValueOfEnum(protoreflect.EnumNumber(v%4 - 1))
	case protoreflect.Int32Kind:
		return protoreflect.ValueOfInt32(int32(v%5-2) * 1000)
	case protoreflect.Uint32Kind:
		return protoreflect.ValueOfUint32(uint32(v * 37))
	case protoreflect.Int64Kind:
		return protoreflect.ValueOfInt64(int64(v%5-2) << 40)
	case protoreflect.Fixed32Kind:
		return protoreflect.ValueOfUint32(uint32(v) * 0x01000193)
	case protoreflect.Fixed64Kind:
		return protoreflect.ValueOfUint64(uint64(v) * 1_700_000_000_000_000_000)
	case protoreflect.DoubleKind:
		return protoreflect.ValueOfFloat64(float64(v%5-2) / 3)
	}
	panic(fmt.Sprintf("no test value for %s (%s)", fd.FullName(), fd.Kind()))
}

func checkSameBytes(t *testing.T, req *coltracepb.ExportTraceServiceRequest) {
	t.Helper()
	want, wantErr := proto.Marshal(req)
	got, gotErr := appendRequest(nil, req)
	if (wantErr != nil) != (gotErr != nil) {
		t.Fatalf("proto.Marshal error %v, codec error %v", wantErr, gotErr)
	}
	if !bytes.Equal(got, want) {
		i := 0
		for i < len(got) && i < len(want) && got[i] == want[i] {
			i++
		}
		t.Fatalf("codec wrote %d bytes, proto.Marshal %d; first difference at %d", len(got), len(want), i)
	}
}

func TestCodecMatchesProto(t *testing.T) {
	for seed := range 40 {
		t.Run(fmt.Sprint(seed), func(t *testing.T) {
			req := &coltracepb.ExportTraceServiceRequest{}
			n := seed
			populate(req.ProtoReflect(), &n, 6+seed%3, true)
			checkSameBytes(t, req)
		})
	}
}

// The cases populate does not make: zero values, oneof members holding
// their zero value or a nil message, empty messages.
func TestCodecMatchesProtoAtTheEdges(t *testing.T) {
	kv := func(v *commonpb.AnyValue) *tracepb.Span {
		return &tracepb.Span{Attributes: []*commonpb.KeyValue{{Key: "k", Value: v}, {}}}
	}
	for name, span := range map[string]*tracepb.Span{
		"empty":           {},
		"empty status":    {Status: &tracepb.Status{}},
		"nil value":       kv(nil),
		"no member":       kv(&commonpb.AnyValue{}),
		"empty string":    kv(&commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{}}),
		"false":           kv(&commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{}}),
		"zero int":        kv(&commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{}}),
		"negative int":    kv(&commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: -1}}),
		"zero double":     kv(&commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{}}),
		"empty bytes":     kv(&commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{}}),
		"zero strindex":   kv(&commonpb.AnyValue{Value: &commonpb.AnyValue_StringValueStrindex{}}),
		"nil array":       kv(&commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{}}),
		"empty array":     kv(&commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{}}}),
		"nil kvlist":      kv(&commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{}}),
		"negative kind":   {Kind: -2, Status: &tracepb.Status{Code: -1}},
		"empty event":     {Events: []*tracepb.Span_Event{{}}},
		"nil event":       {Events: []*tracepb.Span_Event{nil, {}}, Links: []*tracepb.Span_Link{nil}},
		"nil attribute":   {Attributes: []*commonpb.KeyValue{nil, {Key: "k"}}},
		"nil element":     kv(&commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: []*commonpb.AnyValue{nil, {}}}}}),
		"empty link":      {Links: []*tracepb.Span_Link{{}}},
		"16 KiB name":     {Name: strings.Repeat("x", 16384)},
		"2 MiB attribute": kv(&commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: strings.Repeat("y", 2<<20)}}),
	} {
		t.Run(name, func(t *testing.T) {
			checkSameBytes(t, &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
				{}, nil, {ScopeSpans: []*tracepb.ScopeSpans{{}, nil, {Scope: &commonpb.InstrumentationScope{}, Spans: []*tracepb.Span{span, nil}}}},
			}})
		})
	}
	checkSameBytes(t, &coltracepb.ExportTraceServiceRequest{})
	checkSameBytes(t, nil)
}

// What proto.Marshal refuses, the codec refuses.
func TestCodecRefusesWhatProtoRefuses(t *testing.T) {
	for name, span := range map[string]*tracepb.Span{
		"invalid name":       {Name: "a\xff"},
		"invalid value":      {Attributes: []*commonpb.KeyValue{{Key: "k", Value: &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "\xc3"}}}}},
		"invalid key":        {Attributes: []*commonpb.KeyValue{{Key: "\x80"}}},
		"invalid status msg": {Status: &tracepb.Status{Message: "\xfe"}},
	} {
		t.Run(name, func(t *testing.T) {
			req := &coltracepb.ExportTraceServiceRequest{ResourceSpans: []*tracepb.ResourceSpans{
				{ScopeSpans: []*tracepb.ScopeSpans{{Spans: []*tracepb.Span{span}}}},
			}}
			if _, err := proto.Marshal(req); err == nil {
				t.Fatal("proto.Marshal accepted it: the case tests nothing")
			}
			if b, err := appendRequest(nil, req); err == nil {
				t.Fatalf("the codec wrote %d bytes", len(b))
			}
		})
	}
}

// FuzzCodec encodes whatever request the input decodes to both ways. Unknown
// fields are discarded: the SDK never makes them, and the codec does not
// carry them.
func FuzzCodec(f *testing.F) {
	for seed := range 8 {
		req := &coltracepb.ExportTraceServiceRequest{}
		n := seed
		populate(req.ProtoReflect(), &n, 2+seed%2, false)
		b, err := proto.Marshal(req)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req := &coltracepb.ExportTraceServiceRequest{}
		if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(data, req); err != nil {
			return
		}
		checkSameBytes(t, req)
	})
}

// TestCodecThroughGRPC sends a request through the codec as the exporter
// does, to a receiver that decodes it with protobuf-go, and takes the
// response back through the proto codec.
func TestCodecThroughGRPC(t *testing.T) {
	cleanEnv(t)
	rcv := otlptest.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+rcv.Endpoint())
	before := traceCodec.sizeHint.Load()
	e := newExporter(t, &Options{Format: FormatOTLP})
	in := orderTrace()
	for _, s := range in {
		e.Export(s)
	}
	shutdown(t, e)
	if got := rcv.Spans(); len(got) != len(in) {
		t.Fatalf("received %d spans, want %d", len(got), len(in))
	}
	if traceCodec.sizeHint.Load() == before {
		t.Error("the exporter did not encode through the codec")
	}
}

// BenchmarkCodec encodes a batch of the SDK's size, of spans shaped like
// sonde's, A/B: gRPC's proto codec, then this one.
func BenchmarkCodec(b *testing.B) {
	stubs := make(tracetest.SpanStubs, 0, 512)
	for _, s := range benchSpans()[:512] {
		stubs = append(stubs, tracetest.SpanStub{
			Name: s.Name, SpanKind: s.Kind, StartTime: s.Start, EndTime: s.End, Attributes: s.Attributes,
			Resource: s.Resource,
		})
	}
	req := &coltracepb.ExportTraceServiceRequest{ResourceSpans: transformForBench(b, stubs)}
	codec := newRequestCodec()
	for _, c := range []struct {
		name  string
		codec interface {
			Marshal(any) (mem.BufferSlice, error)
		}
	}{{"proto", codec.proto}, {"codec", codec}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				out, err := c.codec.Marshal(req)
				if err != nil {
					b.Fatal(err)
				}
				out.Free()
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/512, "ns/span")
		})
	}
}

// transformForBench turns spans into the protobuf the exporter sends, as
// the exporter does, by recording what it hands its client.
func transformForBench(b *testing.B, stubs tracetest.SpanStubs) []*tracepb.ResourceSpans {
	client := &recordingClient{}
	exp, err := otlptrace.New(context.Background(), client)
	if err != nil {
		b.Fatal(err)
	}
	if err := exp.ExportSpans(context.Background(), stubs.Snapshots()); err != nil {
		b.Fatal(err)
	}
	return client.got
}

type recordingClient struct{ got []*tracepb.ResourceSpans }

func (*recordingClient) Start(context.Context) error { return nil }
func (*recordingClient) Stop(context.Context) error  { return nil }
func (c *recordingClient) UploadTraces(_ context.Context, spans []*tracepb.ResourceSpans) error {
	c.got = append(c.got, spans...)
	return nil
}

// A request over the limit is refused before it is sent, as the exporter's
// own check would refuse it, and the spans in it are counted as failed.
func TestCodecRefusesOversizedRequest(t *testing.T) {
	cleanEnv(t)
	rcv := otlptest.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://"+rcv.Endpoint())
	old := traceCodec.maxSize
	traceCodec.maxSize = 200
	defer func() { traceCodec.maxSize = old }()

	e := newExporter(t, &Options{Format: FormatOTLP})
	in := orderTrace()
	for _, s := range in {
		e.Export(s)
	}
	shutdown(t, e)
	st := e.Stats()
	if st.Failed != uint64(len(in)) || st.LastError == nil || !strings.Contains(st.LastError.Error(), "too large") {
		t.Fatalf("stats %+v, want %d failed as too large", st, len(in))
	}
	if n := len(rcv.Spans()); n != 0 {
		t.Fatalf("the receiver got %d spans", n)
	}
	checkBalance(t, st)
}
