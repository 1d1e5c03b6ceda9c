package export

import (
	"errors"
	"fmt"
	"math"
	"sync/atomic"
	"unicode/utf8"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/encoding"
	grpcproto "google.golang.org/grpc/encoding/proto"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// requestCodec is gRPC's proto codec, except that it encodes the trace
// export request itself, with protowire, from the generated structs.
//
// protobuf-go's generic encoder walks every message twice (Size, then
// Marshal) through per-field function tables, and AnyValue's oneof through
// reflection: it was 27% of sonde's CPU under load, more than parsing the
// captured bytes. This encoder makes the same bytes in one pass
// (TestCodecMatchesProto, FuzzCodec) at a fraction of the cost
// (BenchmarkCodec). TestCodecKnowsEveryField fails when a new version of
// the OTLP protos adds a field it does not write.
//
// It also enforces the exporter's limit on a request's size, which the
// exporter checks with proto.Size, another 10% of sonde's CPU: the exporter
// is told to leave it to the codec.
//
// Everything else, the response included, goes to gRPC's own codec.
type requestCodec struct {
	proto encoding.CodecV2
	// maxSize bounds an encoded request; zero means no bound.
	maxSize int
	// sizeHint is the last request's size: batches are alike, so one
	// buffer of it usually holds the next without growing.
	sizeHint atomic.Int64
	buffers  requestBuffers
}

// requestBuffers keeps the buffer of the request last sent for the next:
// gRPC gives it back once the bytes are written. A request is a few
// hundred kilobytes, which gRPC's pool hands out from a sync.Pool that
// every garbage collection empties, so most requests paid for a new buffer
// and for clearing it.
type requestBuffers struct{ spare atomic.Pointer[[]byte] }

func (p *requestBuffers) Get(n int) *[]byte {
	if b := p.spare.Swap(nil); b != nil && cap(*b) >= n {
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n)
	return &b
}

func (p *requestBuffers) Put(b *[]byte) { p.spare.Store(b) }

// maxRequestSize is otlptracegrpc's default limit.
const maxRequestSize = 64 << 20

func newRequestCodec() *requestCodec {
	return &requestCodec{proto: encoding.GetCodecV2(grpcproto.Name), maxSize: maxRequestSize}
}

// Name is the proto codec's: the content-subtype the collector sees.
func (*requestCodec) Name() string { return grpcproto.Name }

func (c *requestCodec) Unmarshal(data mem.BufferSlice, v any) error {
	return c.proto.Unmarshal(data, v)
}

func (c *requestCodec) Marshal(v any) (mem.BufferSlice, error) {
	req, ok := v.(*coltracepb.ExportTraceServiceRequest)
	if !ok {
		return c.proto.Marshal(v)
	}
	pool := &c.buffers
	buf := pool.Get(int(c.sizeHint.Load()))
	b, err := appendRequest((*buf)[:0], req)
	if err == nil && c.maxSize > 0 && len(b) > c.maxSize {
		err = fmt.Errorf("request message too large: %d bytes exceed %d", len(b), c.maxSize)
	}
	if err != nil {
		pool.Put(buf)
		return nil, err
	}
	c.sizeHint.Store(int64(len(b)))
	// A grown b is no longer *buf's array; it is kept instead.
	*buf = b
	return mem.BufferSlice{mem.NewBuffer(buf, pool)}, nil
}

// The encoder refuses what proto.Marshal refuses, so that the codec changes
// nothing but the cost.
var errInvalidUTF8 = errors.New("string field contains invalid UTF-8")

// appendRequest appends req in protobuf's wire format.
func appendRequest(b []byte, req *coltracepb.ExportTraceServiceRequest) ([]byte, error) {
	if req == nil {
		return b, nil
	}
	e := encoder{b: b}
	for _, rs := range req.ResourceSpans {
		e.resourceSpans(1, rs)
	}
	if e.err != nil {
		return nil, fmt.Errorf("otlp request: %w", e.err)
	}
	return e.b, nil
}

// encoder appends fields in field-number order, as proto.Marshal does, and
// skips proto3 zero values, which proto.Marshal leaves out. The first
// error sticks.
type encoder struct {
	b   []byte
	err error
}

// open starts a length-delimited message field. Its length is not known
// until close, so one byte is reserved: most of OTLP's messages are short,
// and a longer one moves its bytes up to make room, once.
func (e *encoder) open(num protowire.Number) int {
	e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
	e.b = append(e.b, 0)
	return len(e.b)
}

func (e *encoder) close(start int) {
	n := len(e.b) - start
	if n < 0x80 {
		e.b[start-1] = byte(n)
		return
	}
	extra := protowire.SizeVarint(uint64(n)) - 1
	for range extra {
		e.b = append(e.b, 0)
	}
	copy(e.b[start+extra:], e.b[start:start+n])
	protowire.AppendVarint(e.b[:start-1], uint64(n))
}

func (e *encoder) string(num protowire.Number, s string) {
	if s != "" {
		e.stringAlways(num, s)
	}
}

func (e *encoder) bytes(num protowire.Number, v []byte) {
	if len(v) == 0 {
		return
	}
	e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
	e.b = protowire.AppendBytes(e.b, v)
}

func (e *encoder) varint(num protowire.Number, v uint64) {
	if v == 0 {
		return
	}
	e.b = protowire.AppendTag(e.b, num, protowire.VarintType)
	e.b = protowire.AppendVarint(e.b, v)
}

// int32 is sign-extended, as protobuf encodes negative int32s and enums.
func (e *encoder) int32(num protowire.Number, v int32) { e.varint(num, uint64(int64(v))) }

func (e *encoder) fixed32(num protowire.Number, v uint32) {
	if v == 0 {
		return
	}
	e.b = protowire.AppendTag(e.b, num, protowire.Fixed32Type)
	e.b = protowire.AppendFixed32(e.b, v)
}

func (e *encoder) fixed64(num protowire.Number, v uint64) {
	if v == 0 {
		return
	}
	e.b = protowire.AppendTag(e.b, num, protowire.Fixed64Type)
	e.b = protowire.AppendFixed64(e.b, v)
}

func (e *encoder) fail(err error) {
	if e.err == nil {
		e.err = err
	}
}

// present says whether an element of a repeated message field has
// anything to write; a nil one is written as an empty message, as
// proto.Marshal writes it.
func (e *encoder) present(num protowire.Number, isNil bool) bool {
	if isNil {
		e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
		e.b = append(e.b, 0)
	}
	return !isNil
}

func (e *encoder) resourceSpans(num protowire.Number, m *tracepb.ResourceSpans) {
	if !e.present(num, m == nil) {
		return
	}
	start := e.open(num)
	if m.Resource != nil {
		e.resource(1, m.Resource)
	}
	for _, ss := range m.ScopeSpans {
		e.scopeSpans(2, ss)
	}
	e.string(3, m.SchemaUrl)
	e.close(start)
}

func (e *encoder) resource(num protowire.Number, m *resourcepb.Resource) {
	start := e.open(num)
	e.keyValues(1, m.Attributes)
	e.varint(2, uint64(m.DroppedAttributesCount))
	for _, ref := range m.EntityRefs {
		e.entityRef(3, ref)
	}
	e.close(start)
}

func (e *encoder) entityRef(num protowire.Number, m *commonpb.EntityRef) {
	if !e.present(num, m == nil) {
		return
	}
	start := e.open(num)
	e.string(1, m.SchemaUrl)
	e.string(2, m.Type)
	for _, k := range m.IdKeys {
		e.stringAlways(3, k)
	}
	for _, k := range m.DescriptionKeys {
		e.stringAlways(4, k)
	}
	e.close(start)
}

// stringAlways writes s even when empty, as a repeated string or a set
// oneof member is written.
func (e *encoder) stringAlways(num protowire.Number, s string) {
	if !utf8.ValidString(s) {
		e.fail(errInvalidUTF8)
	}
	e.b = protowire.AppendTag(e.b, num, protowire.BytesType)
	e.b = protowire.AppendString(e.b, s)
}

func (e *encoder) scopeSpans(num protowire.Number, m *tracepb.ScopeSpans) {
	if !e.present(num, m == nil) {
		return
	}
	start := e.open(num)
	if m.Scope != nil {
		e.scope(1, m.Scope)
	}
	for _, s := range m.Spans {
		e.span(2, s)
	}
	e.string(3, m.SchemaUrl)
	e.close(start)
}

func (e *encoder) scope(num protowire.Number, m *commonpb.InstrumentationScope) {
	start := e.open(num)
	e.string(1, m.Name)
	e.string(2, m.Version)
	e.keyValues(3, m.Attributes)
	e.varint(4, uint64(m.DroppedAttributesCount))
	e.close(start)
}

func (e *encoder) span(num protowire.Number, m *tracepb.Span) {
	if !e.present(num, m == nil) {
		return
	}
	start := e.open(num)
	e.bytes(1, m.TraceId)
	e.bytes(2, m.SpanId)
	e.string(3, m.TraceState)
	e.bytes(4, m.ParentSpanId)
	e.string(5, m.Name)
	e.int32(6, int32(m.Kind))
	e.fixed64(7, m.StartTimeUnixNano)
	e.fixed64(8, m.EndTimeUnixNano)
	e.keyValues(9, m.Attributes)
	e.varint(10, uint64(m.DroppedAttributesCount))
	for _, ev := range m.Events {
		e.event(11, ev)
	}
	e.varint(12, uint64(m.DroppedEventsCount))
	for _, l := range m.Links {
		e.link(13, l)
	}
	e.varint(14, uint64(m.DroppedLinksCount))
	if m.Status != nil {
		st := e.open(15)
		e.string(2, m.Status.Message)
		e.int32(3, int32(m.Status.Code))
		e.close(st)
	}
	e.fixed32(16, m.Flags)
	e.close(start)
}

func (e *encoder) event(num protowire.Number, m *tracepb.Span_Event) {
	if !e.present(num, m == nil) {
		return
	}
	start := e.open(num)
	e.fixed64(1, m.TimeUnixNano)
	e.string(2, m.Name)
	e.keyValues(3, m.Attributes)
	e.varint(4, uint64(m.DroppedAttributesCount))
	e.close(start)
}

func (e *encoder) link(num protowire.Number, m *tracepb.Span_Link) {
	if !e.present(num, m == nil) {
		return
	}
	start := e.open(num)
	e.bytes(1, m.TraceId)
	e.bytes(2, m.SpanId)
	e.string(3, m.TraceState)
	e.keyValues(4, m.Attributes)
	e.varint(5, uint64(m.DroppedAttributesCount))
	e.fixed32(6, m.Flags)
	e.close(start)
}

func (e *encoder) keyValues(num protowire.Number, kvs []*commonpb.KeyValue) {
	for _, kv := range kvs {
		if !e.present(num, kv == nil) {
			continue
		}
		start := e.open(num)
		e.string(1, kv.Key)
		if kv.Value != nil {
			e.anyValue(2, kv.Value)
		}
		e.int32(3, kv.KeyStrindex)
		e.close(start)
	}
}

// anyValue writes the oneof's member even when it holds its zero value:
// a set oneof is present, as proto.Marshal has it.
func (e *encoder) anyValue(num protowire.Number, m *commonpb.AnyValue) {
	start := e.open(num)
	switch v := m.Value.(type) {
	case nil:
	case *commonpb.AnyValue_StringValue:
		e.stringAlways(1, v.StringValue)
	case *commonpb.AnyValue_BoolValue:
		e.b = protowire.AppendTag(e.b, 2, protowire.VarintType)
		e.b = protowire.AppendVarint(e.b, protowire.EncodeBool(v.BoolValue))
	case *commonpb.AnyValue_IntValue:
		e.b = protowire.AppendTag(e.b, 3, protowire.VarintType)
		e.b = protowire.AppendVarint(e.b, uint64(v.IntValue))
	case *commonpb.AnyValue_DoubleValue:
		e.b = protowire.AppendTag(e.b, 4, protowire.Fixed64Type)
		e.b = protowire.AppendFixed64(e.b, math.Float64bits(v.DoubleValue))
	case *commonpb.AnyValue_ArrayValue:
		arr := e.open(5)
		if v.ArrayValue != nil {
			for _, item := range v.ArrayValue.Values {
				if e.present(1, item == nil) {
					e.anyValue(1, item)
				}
			}
		}
		e.close(arr)
	case *commonpb.AnyValue_KvlistValue:
		list := e.open(6)
		if v.KvlistValue != nil {
			e.keyValues(1, v.KvlistValue.Values)
		}
		e.close(list)
	case *commonpb.AnyValue_BytesValue:
		e.b = protowire.AppendTag(e.b, 7, protowire.BytesType)
		e.b = protowire.AppendBytes(e.b, v.BytesValue)
	case *commonpb.AnyValue_StringValueStrindex:
		e.b = protowire.AppendTag(e.b, 8, protowire.VarintType)
		e.b = protowire.AppendVarint(e.b, uint64(int64(v.StringValueStrindex)))
	default:
		e.fail(fmt.Errorf("unknown AnyValue member %T", v))
	}
	e.close(start)
}
