package export

import (
	"context"
	"fmt"
	"math"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
	commonpb "go.opentelemetry.io/proto/otlp/common/v1"
	resourcepb "go.opentelemetry.io/proto/otlp/resource/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
)

// spanExporter is the SDK's otlptrace.Exporter on the same client
// (otlptracegrpc's or otlptracehttp's), except for how a batch becomes
// protobuf messages. otlptrace allocates some sixty small messages per span
// (a KeyValue, an AnyValue and its oneof member per attribute), which with
// the garbage collection they cause came to a fifth of sonde's CPU under
// load. spanExporter builds the same messages (TestSpanExporterMatchesSDK)
// in arenas that every batch reuses, so that a batch of spans like the one
// before it allocates nothing.
type spanExporter struct {
	client otlptrace.Client

	mu       sync.Mutex // the arenas belong to one export at a time
	arenas   arenas
	stopOnce sync.Once
}

// newSpanExporter starts client, as otlptrace.New does.
func newSpanExporter(ctx context.Context, client otlptrace.Client) (*spanExporter, error) {
	if err := client.Start(ctx); err != nil {
		return nil, err
	}
	return &spanExporter{client: client}, nil
}

func (x *spanExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	batch := x.arenas.batch(spans)
	if len(batch) == 0 {
		return nil
	}
	// The client has encoded the messages by the time it returns, retries
	// included, so the arenas are free again.
	if err := x.client.UploadTraces(ctx, batch); err != nil {
		return fmt.Errorf("traces export: %w", err)
	}
	return nil
}

func (x *spanExporter) Shutdown(ctx context.Context) error {
	var err error
	x.stopOnce.Do(func() { err = x.client.Stop(ctx) })
	return err
}

// arenas hold the messages of one batch. Each is a slice whose elements
// are handed out by address: a slice is grown only before a batch starts
// to use it (reserve), never while pointers into it are live.
type arenas struct {
	spans    []tracepb.Span
	statuses []tracepb.Status
	kvs      []commonpb.KeyValue
	kvPtrs   []*commonpb.KeyValue
	values   []commonpb.AnyValue
	strs     []commonpb.AnyValue_StringValue
	ints     []commonpb.AnyValue_IntValue
	bools    []commonpb.AnyValue_BoolValue
	doubles  []commonpb.AnyValue_DoubleValue
	ids      []byte

	groups []group
	rs     []*tracepb.ResourceSpans
	rsOf   []*resource.Resource // the resource of each of rs

	// resources converts each resource once: a process's resource lives
	// as long as the process and is in every batch.
	resources map[*resource.Resource]*resourcepb.Resource
}

// group is the spans of one resource and scope, in the order they came.
type group struct {
	res   *resource.Resource
	scope instrumentation.Scope
	spans []*tracepb.Span
}

// maxCachedResources bounds arenas.resources; past it the cache starts
// over.
const maxCachedResources = 4096

func (a *arenas) batch(spans []sdktrace.ReadOnlySpan) []*tracepb.ResourceSpans {
	a.reserve(spans)
	a.groups = a.groups[:0]
	for _, s := range spans {
		if s == nil {
			continue
		}
		g := a.group(s.Resource(), s.InstrumentationScope())
		g.spans = append(g.spans, a.span(s))
	}
	return a.resourceSpans()
}

// reserve makes room for every message of spans, so that no arena moves
// while the batch is built.
func (a *arenas) reserve(spans []sdktrace.ReadOnlySpan) {
	attrs := 0
	for _, s := range spans {
		if s != nil {
			attrs += len(s.Attributes())
		}
	}
	a.spans = reuse(a.spans, len(spans))
	a.statuses = reuse(a.statuses, len(spans))
	a.ids = reuse(a.ids, len(spans)*(16+8+8))
	a.kvs = reuse(a.kvs, attrs)
	a.kvPtrs = reuse(a.kvPtrs, attrs)
	a.values = reuse(a.values, attrs)
	a.strs = reuse(a.strs, attrs)
	a.ints = reuse(a.ints, attrs)
	a.bools = reuse(a.bools, attrs)
	a.doubles = reuse(a.doubles, attrs)
}

// reuse returns s emptied, with room for n elements.
func reuse[T any](s []T, n int) []T {
	if cap(s) < n {
		return make([]T, 0, n)
	}
	return s[:0]
}

// take hands out the next element of an arena that reserve sized.
func take[T any](s *[]T) *T {
	*s = append(*s, *new(T))
	return &(*s)[len(*s)-1]
}

func (a *arenas) group(res *resource.Resource, scope instrumentation.Scope) *group {
	// A batch holds a few resources: a scan beats hashing their
	// attributes, and equal resources are usually one pointer.
	for i := range a.groups {
		g := &a.groups[i]
		if g.scope == scope && (g.res == res || g.res.Equivalent() == res.Equivalent()) {
			return g
		}
	}
	if len(a.groups) < cap(a.groups) {
		a.groups = a.groups[:len(a.groups)+1]
		g := &a.groups[len(a.groups)-1]
		g.res, g.scope, g.spans = res, scope, g.spans[:0]
		return g
	}
	a.groups = append(a.groups, group{res: res, scope: scope})
	return &a.groups[len(a.groups)-1]
}

// resourceSpans nests the groups as OTLP does: scopes within resources,
// each in the order it first came.
func (a *arenas) resourceSpans() []*tracepb.ResourceSpans {
	a.rs, a.rsOf = a.rs[:0], a.rsOf[:0]
	for i := range a.groups {
		g := &a.groups[i]
		var rs *tracepb.ResourceSpans
		for j, res := range a.rsOf {
			if res == g.res || res.Equivalent() == g.res.Equivalent() {
				rs = a.rs[j]
				break
			}
		}
		if rs == nil {
			rs = &tracepb.ResourceSpans{Resource: a.resource(g.res), SchemaUrl: g.res.SchemaURL()}
			a.rs, a.rsOf = append(a.rs, rs), append(a.rsOf, g.res)
		}
		rs.ScopeSpans = append(rs.ScopeSpans, &tracepb.ScopeSpans{
			Scope: scopeProto(g.scope), Spans: g.spans, SchemaUrl: g.scope.SchemaURL,
		})
	}
	return a.rs
}

func (a *arenas) resource(r *resource.Resource) *resourcepb.Resource {
	if r == nil {
		return nil
	}
	if pb, ok := a.resources[r]; ok {
		return pb
	}
	if a.resources == nil || len(a.resources) >= maxCachedResources {
		a.resources = make(map[*resource.Resource]*resourcepb.Resource)
	}
	pb := &resourcepb.Resource{Attributes: keyValues(r.Attributes())}
	a.resources[r] = pb
	return pb
}

func scopeProto(s instrumentation.Scope) *commonpb.InstrumentationScope {
	if s == (instrumentation.Scope{}) {
		return nil
	}
	return &commonpb.InstrumentationScope{Name: s.Name, Version: s.Version, Attributes: keyValues(s.Attributes.ToSlice())}
}

func (a *arenas) span(s sdktrace.ReadOnlySpan) *tracepb.Span {
	sc := s.SpanContext()
	parent := s.Parent()
	tid, sid := sc.TraceID(), sc.SpanID()
	a.ids = append(a.ids, tid[:]...)
	a.ids = append(a.ids, sid[:]...)
	n := len(a.ids)
	var parentID []byte
	if p := parent.SpanID(); p.IsValid() {
		a.ids = append(a.ids, p[:]...)
		parentID = a.ids[n : n+8 : n+8]
	}

	st := take(&a.statuses)
	*st = tracepb.Status{Code: statusCode(s.Status().Code), Message: s.Status().Description}
	pb := take(&a.spans)
	*pb = tracepb.Span{
		TraceId:                a.ids[n-24 : n-8 : n-8],
		SpanId:                 a.ids[n-8 : n : n],
		TraceState:             sc.TraceState().String(),
		ParentSpanId:           parentID,
		Flags:                  spanFlags(sc.TraceFlags(), parent),
		Name:                   s.Name(),
		Kind:                   spanKind(s.SpanKind()),
		StartTimeUnixNano:      unixNano(s.StartTime().UnixNano()),
		EndTimeUnixNano:        unixNano(s.EndTime().UnixNano()),
		Attributes:             a.keyValues(s.Attributes()),
		DroppedAttributesCount: clampCount(s.DroppedAttributes()),
		Events:                 events(s.Events()),
		DroppedEventsCount:     clampCount(s.DroppedEvents()),
		Links:                  links(s.Links()),
		DroppedLinksCount:      clampCount(s.DroppedLinks()),
		Status:                 st,
	}
	return pb
}

// keyValues converts a span's attributes into the arenas; values that are
// not scalars, which sonde does not make, are allocated.
func (a *arenas) keyValues(attrs []attribute.KeyValue) []*commonpb.KeyValue {
	if len(attrs) == 0 {
		return nil
	}
	start := len(a.kvPtrs)
	for _, kv := range attrs {
		v := take(&a.values)
		switch kv.Value.Type() {
		case attribute.STRING:
			m := take(&a.strs)
			m.StringValue = kv.Value.AsString()
			*v = commonpb.AnyValue{Value: m}
		case attribute.INT64:
			m := take(&a.ints)
			m.IntValue = kv.Value.AsInt64()
			*v = commonpb.AnyValue{Value: m}
		case attribute.BOOL:
			m := take(&a.bools)
			m.BoolValue = kv.Value.AsBool()
			*v = commonpb.AnyValue{Value: m}
		case attribute.FLOAT64:
			m := take(&a.doubles)
			m.DoubleValue = kv.Value.AsFloat64()
			*v = commonpb.AnyValue{Value: m}
		default:
			*v = commonpb.AnyValue{Value: anyValue(kv.Value).Value}
		}
		m := take(&a.kvs)
		*m = commonpb.KeyValue{Key: string(kv.Key), Value: v}
		ptr := take(&a.kvPtrs)
		*ptr = m
	}
	return a.kvPtrs[start:len(a.kvPtrs):len(a.kvPtrs)]
}

// keyValues converts attributes outside the arenas: those of resources,
// scopes, events, links and composite values.
func keyValues(attrs []attribute.KeyValue) []*commonpb.KeyValue {
	if len(attrs) == 0 {
		return nil
	}
	out := make([]*commonpb.KeyValue, len(attrs))
	for i, kv := range attrs {
		out[i] = &commonpb.KeyValue{Key: string(kv.Key), Value: anyValue(kv.Value)}
	}
	return out
}

// anyValue is OTLP's AnyValue for v, as the SDK's exporters write it:
// slices as arrays, maps as key-value lists, and a value of an unknown type
// as the string "INVALID".
func anyValue(v attribute.Value) *commonpb.AnyValue {
	switch v.Type() {
	case attribute.BOOL:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BoolValue{BoolValue: v.AsBool()}}
	case attribute.INT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_IntValue{IntValue: v.AsInt64()}}
	case attribute.FLOAT64:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_DoubleValue{DoubleValue: v.AsFloat64()}}
	case attribute.STRING:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: v.AsString()}}
	case attribute.BYTESLICE:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_BytesValue{BytesValue: v.AsByteSlice()}}
	case attribute.BOOLSLICE:
		return array(v.AsBoolSlice(), attribute.BoolValue)
	case attribute.INT64SLICE:
		return array(v.AsInt64Slice(), attribute.Int64Value)
	case attribute.FLOAT64SLICE:
		return array(v.AsFloat64Slice(), attribute.Float64Value)
	case attribute.STRINGSLICE:
		return array(v.AsStringSlice(), attribute.StringValue)
	case attribute.SLICE:
		return array(v.AsSlice(), func(v attribute.Value) attribute.Value { return v })
	case attribute.MAP:
		return &commonpb.AnyValue{Value: &commonpb.AnyValue_KvlistValue{KvlistValue: &commonpb.KeyValueList{Values: keyValues(v.AsMap())}}}
	case attribute.EMPTY:
		return &commonpb.AnyValue{}
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_StringValue{StringValue: "INVALID"}}
}

func array[T any](items []T, value func(T) attribute.Value) *commonpb.AnyValue {
	values := make([]*commonpb.AnyValue, len(items))
	for i, item := range items {
		values[i] = anyValue(value(item))
	}
	return &commonpb.AnyValue{Value: &commonpb.AnyValue_ArrayValue{ArrayValue: &commonpb.ArrayValue{Values: values}}}
}

func events(es []sdktrace.Event) []*tracepb.Span_Event {
	if len(es) == 0 {
		return nil
	}
	out := make([]*tracepb.Span_Event, len(es))
	for i, e := range es {
		out[i] = &tracepb.Span_Event{
			TimeUnixNano:           unixNano(e.Time.UnixNano()),
			Name:                   e.Name,
			Attributes:             keyValues(e.Attributes),
			DroppedAttributesCount: clampCount(e.DroppedAttributeCount),
		}
	}
	return out
}

func links(ls []sdktrace.Link) []*tracepb.Span_Link {
	if len(ls) == 0 {
		return nil
	}
	out := make([]*tracepb.Span_Link, len(ls))
	for i, l := range ls {
		tid, sid := l.SpanContext.TraceID(), l.SpanContext.SpanID()
		out[i] = &tracepb.Span_Link{
			TraceId:                tid[:],
			SpanId:                 sid[:],
			Attributes:             keyValues(l.Attributes),
			DroppedAttributesCount: clampCount(l.DroppedAttributeCount),
			Flags:                  spanFlags(l.SpanContext.TraceFlags(), l.SpanContext),
		}
	}
	return out
}

// spanFlags carries the W3C flags and says whether the parent (for a
// link, the linked span) is remote.
func spanFlags(flags trace.TraceFlags, parent trace.SpanContext) uint32 {
	f := uint32(flags) | uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE_MASK)
	if parent.IsRemote() {
		f |= uint32(tracepb.SpanFlags_SPAN_FLAGS_CONTEXT_IS_REMOTE_MASK)
	}
	return f
}

func spanKind(k trace.SpanKind) tracepb.Span_SpanKind {
	switch k {
	case trace.SpanKindInternal:
		return tracepb.Span_SPAN_KIND_INTERNAL
	case trace.SpanKindServer:
		return tracepb.Span_SPAN_KIND_SERVER
	case trace.SpanKindClient:
		return tracepb.Span_SPAN_KIND_CLIENT
	case trace.SpanKindProducer:
		return tracepb.Span_SPAN_KIND_PRODUCER
	case trace.SpanKindConsumer:
		return tracepb.Span_SPAN_KIND_CONSUMER
	}
	return tracepb.Span_SPAN_KIND_UNSPECIFIED
}

func statusCode(c codes.Code) tracepb.Status_StatusCode {
	switch c {
	case codes.Ok:
		return tracepb.Status_STATUS_CODE_OK
	case codes.Error:
		return tracepb.Status_STATUS_CODE_ERROR
	}
	return tracepb.Status_STATUS_CODE_UNSET
}

// unixNano clamps times before 1970, which OTLP's unsigned field cannot
// hold, to zero.
func unixNano(ns int64) uint64 { return uint64(max(0, ns)) }

func clampCount(n int) uint32 {
	return uint32(min(max(n, 0), math.MaxUint32))
}
