package export

import (
	"container/list"
	"context"
	"math/rand/v2"
	"os"
	"strings"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/instrumentation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// scope names the instrumentation that produced the spans, as seen by a
// collector.
const scope = "github.com/sondehq/sonde"

// worker is the only goroutine that hands spans to the SDK: replaying a
// Span is sequential, so the forced IDs can live in one place that the ID
// generator reads through the start context.
type worker struct {
	c         *counters
	ids       forcedIDs
	base      context.Context // carries &ids
	resources *resourceCache
	abort     context.Context
	processor sdktrace.SpanProcessor

	// direct is set when nothing in the environment changes what the
	// SDK's tracer would do to a finished span (see directEnv).
	direct bool

	// Reused across spans: the SDK reads options only during the call.
	startOpts []trace.SpanStartOption
	endOpts   []trace.SpanEndOption
}

// kindOpts avoids boxing a SpanKind option per span.
var kindOpts = func() (opts [trace.SpanKindConsumer + 1]trace.SpanStartOption) {
	for k := range opts {
		opts[k] = trace.WithSpanKind(trace.SpanKind(k))
	}
	return opts
}()

func newWorker(c *counters, processor sdktrace.SpanProcessor, maxResources int, abort context.Context) *worker {
	w := &worker{c: c, abort: abort, processor: processor, direct: directEnv()}
	w.base = context.WithValue(context.Background(), idsKey{}, &w.ids)
	w.resources = newResourceCache(maxResources, func(r *resource.Resource) *resourceEntry {
		// A process's environment, which names the service, can hold
		// any bytes.
		valid, repaired := validResource(r)
		// As the SDK's WithResource does it for a provider.
		merged, err := resource.Merge(resource.Environment(), valid)
		if err != nil {
			otel.Handle(err)
		}
		merged, mergedRepaired := validResource(merged)
		return &resourceEntry{resource: merged, source: valid, repaired: repaired || mergedRepaired}
	})
	return w
}

func (w *worker) run(queue <-chan *Span, done chan<- struct{}) {
	defer close(done)
	for s := range queue {
		if w.abort.Err() != nil {
			// Shutdown gave up and counted the rest as dropped.
			continue
		}
		w.emit(s)
	}
}

func (w *worker) emit(s *Span) {
	if !valid(s) {
		w.c.add(&w.c.invalid)
		return
	}
	s, repaired := validSpan(s)
	r := w.resources.get(s.Resource)
	if repaired || r.repaired {
		w.c.add(&w.c.repaired)
	}
	if w.direct && plainAttributes(s.Attributes) {
		w.emitDirect(s, r)
		return
	}
	tr := r.tracer(w.processor)

	w.ids = forcedIDs{trace: s.TraceID, span: s.SpanID}
	ctx := w.base
	if s.Parent.IsValid() {
		ctx = trace.ContextWithRemoteSpanContext(ctx, s.Parent)
	}
	kind := trace.WithSpanKind(s.Kind)
	if s.Kind >= 0 && int(s.Kind) < len(kindOpts) {
		kind = kindOpts[s.Kind]
	}
	w.startOpts = append(w.startOpts[:0], kind, trace.WithTimestamp(s.Start))
	if len(s.Attributes) > 0 {
		w.startOpts = append(w.startOpts, trace.WithAttributes(s.Attributes...))
	}
	_, span := tr.Start(ctx, s.Name, w.startOpts...)
	if !span.SpanContext().IsSampled() {
		// A recording but unsampled span would be ignored by the batch
		// processor, so sampled is what decides export.
		w.c.add(&w.c.notSampled)
		return
	}
	if s.Status != codes.Unset {
		span.SetStatus(s.Status, s.StatusDescription)
	}
	w.endOpts = append(w.endOpts[:0], trace.WithTimestamp(s.End))
	span.End(w.endOpts...)
}

// defaultSampler is the SDK's sampler when OTEL_TRACES_SAMPLER is unset.
var defaultSampler = sdktrace.ParentBased(sdktrace.AlwaysSample())

// emitDirect hands the processor the finished span that the SDK's tracer
// would have made of s, without making it live first: starting and ending
// an SDK span (a mutable recording span, its attributes copied, deduplicated
// through a map and copied again at the end) cost 4 us of the 6.5 us that a
// span took to reach the JSON writer. The span is the same field for field
// (TestDirectMatchesTracer); spans the tracer would change, which
// plainAttributes and directEnv rule out, take the tracer.
func (w *worker) emitDirect(s *Span, r *resourceEntry) {
	var parent trace.SpanContext
	ctx := context.Background()
	if s.Parent.IsValid() {
		parent = s.Parent.WithRemote(true)
		ctx = trace.ContextWithSpanContext(ctx, parent)
	}
	res := defaultSampler.ShouldSample(sdktrace.SamplingParameters{
		ParentContext: ctx, TraceID: s.TraceID, Name: s.Name, Kind: s.Kind, Attributes: s.Attributes,
	})
	if res.Decision != sdktrace.RecordAndSample {
		w.c.add(&w.c.notSampled)
		return
	}
	status := sdktrace.Status{Code: s.Status}
	if s.Status == codes.Error {
		status.Description = s.StatusDescription
	}
	w.processor.OnEnd(tracetest.SpanStub{
		Name: s.Name,
		SpanContext: trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: s.TraceID, SpanID: s.SpanID,
			TraceFlags: parent.TraceFlags() | trace.FlagsSampled, TraceState: res.Tracestate,
		}),
		Parent:               parent,
		SpanKind:             trace.ValidateSpanKind(s.Kind),
		StartTime:            s.Start,
		EndTime:              s.End,
		Attributes:           s.Attributes,
		Status:               status,
		Resource:             r.resource,
		InstrumentationScope: instrumentation.Scope{Name: scope},
	}.Snapshot())
}

// directEnv says whether the environment leaves the SDK's tracer at the
// defaults emitDirect reproduces: the default sampler, no attribute limits
// that the spans could reach, no experimental features.
func directEnv() bool {
	for _, kv := range os.Environ() {
		name, value, _ := strings.Cut(kv, "=")
		if value == "" {
			continue
		}
		if strings.HasPrefix(name, "OTEL_TRACES_SAMPLER") || strings.HasPrefix(name, "OTEL_GO_X_") ||
			strings.HasPrefix(name, "OTEL_ATTRIBUTE_") || strings.HasPrefix(name, "OTEL_SPAN_ATTRIBUTE_") {
			return false
		}
	}
	return true
}

// plainAttributes says whether the SDK's tracer would keep attrs as they
// are: valid scalar attributes with distinct keys, within its default
// count limit.
func plainAttributes(attrs []attribute.KeyValue) bool {
	if len(attrs) > sdktrace.DefaultAttributeCountLimit {
		return false
	}
	for i, kv := range attrs {
		if !kv.Valid() {
			return false
		}
		switch kv.Value.Type() {
		case attribute.BOOL, attribute.INT64, attribute.FLOAT64, attribute.STRING:
		default:
			return false // the SDK normalizes composite values
		}
		// A span has a dozen or two attributes: comparing pairs costs
		// less than a set.
		for _, prev := range attrs[:i] {
			if prev.Key == kv.Key {
				return false
			}
		}
	}
	return true
}

func valid(s *Span) bool {
	if s == nil || !s.TraceID.IsValid() || !s.SpanID.IsValid() || s.Start.IsZero() || s.End.IsZero() {
		return false
	}
	// The SDK takes a child's trace ID from its parent; a parent in
	// another trace would silently change the span's trace ID.
	return !s.Parent.IsValid() || s.Parent.TraceID() == s.TraceID
}

type idsKey struct{}

type forcedIDs struct {
	trace trace.TraceID
	span  trace.SpanID
}

// idGenerator hands the SDK the IDs sonde already decided on.
type idGenerator struct{}

func (idGenerator) NewIDs(ctx context.Context) (trace.TraceID, trace.SpanID) {
	if ids, ok := ctx.Value(idsKey{}).(*forcedIDs); ok {
		return ids.trace, ids.span
	}
	return randomTraceID(), randomSpanID()
}

func (idGenerator) NewSpanID(ctx context.Context, _ trace.TraceID) trace.SpanID {
	if ids, ok := ctx.Value(idsKey{}).(*forcedIDs); ok {
		return ids.span
	}
	return randomSpanID()
}

// The random fallbacks only guard against a span started outside the
// worker, which would otherwise get invalid zero IDs.
func randomTraceID() (id trace.TraceID) {
	for !id.IsValid() {
		for i := range id {
			id[i] = byte(rand.Uint32())
		}
	}
	return id
}

func randomSpanID() (id trace.SpanID) {
	for !id.IsValid() {
		for i := range id {
			id[i] = byte(rand.Uint32())
		}
	}
	return id
}

type resourceKey struct {
	attrs  attribute.Distinct
	schema string
}

// resourceEntry is what the worker keeps per distinct resource.
type resourceEntry struct {
	key      resourceKey
	source   *resource.Resource
	resource *resource.Resource // merged with sonde's environment
	// tr is the tracer of a provider for the resource, made on first use:
	// only spans that emitDirect does not take need one.
	tr trace.Tracer
	// repaired is set when the resource held invalid UTF-8.
	repaired bool
}

func (r *resourceEntry) tracer(processor sdktrace.SpanProcessor) trace.Tracer {
	if r.tr == nil {
		// No WithSampler: the SDK's default is ParentBased(AlwaysSample),
		// and any explicit sampler would override OTEL_TRACES_SAMPLER.
		tp := sdktrace.NewTracerProvider(
			sdktrace.WithResource(r.source),
			sdktrace.WithIDGenerator(idGenerator{}),
			sdktrace.WithSpanProcessor(processor),
		)
		// The provider is never shut down: that would shut down the
		// processor that all providers share. It holds no goroutine, so
		// eviction is enough to release it.
		r.tr = tp.Tracer(scope)
	}
	return r.tr
}

// resourceCache keeps an entry per distinct resource, least recently used
// evicted first. Only the worker uses it.
type resourceCache struct {
	max      int
	order    *list.List // of *resourceEntry, most recently used first
	index    map[resourceKey]*list.Element
	newEntry func(*resource.Resource) *resourceEntry

	// Consecutive spans usually share the resource pointer; checking it
	// first skips hashing the attribute set.
	last      *resource.Resource
	lastEntry *resourceEntry
}

func newResourceCache(max int, newEntry func(*resource.Resource) *resourceEntry) *resourceCache {
	return &resourceCache{
		max:      max,
		order:    list.New(),
		index:    make(map[resourceKey]*list.Element),
		newEntry: newEntry,
	}
}

func (c *resourceCache) get(r *resource.Resource) *resourceEntry {
	if c.lastEntry != nil && r == c.last {
		return c.lastEntry
	}
	key := resourceKey{attrs: r.Equivalent(), schema: r.SchemaURL()}
	var e *resourceEntry
	if el, ok := c.index[key]; ok {
		c.order.MoveToFront(el)
		e = el.Value.(*resourceEntry)
	} else {
		e = c.newEntry(r)
		e.key = key
		c.index[key] = c.order.PushFront(e)
		if c.order.Len() > c.max {
			oldest := c.order.Back()
			c.order.Remove(oldest)
			delete(c.index, oldest.Value.(*resourceEntry).key)
		}
	}
	c.last, c.lastEntry = r, e
	return e
}

func (c *resourceCache) len() int { return c.order.Len() }
