package export

import (
	"container/list"
	"context"
	"math/rand/v2"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// scope names the instrumentation that produced the spans, as seen by a
// collector.
const scope = "github.com/sondehq/sonde"

// worker is the only goroutine that starts SDK spans: replaying a Span is
// sequential, so the forced IDs can live in one place that the ID generator
// reads through the start context.
type worker struct {
	c       *counters
	ids     forcedIDs
	base    context.Context // carries &ids
	tracers *tracerCache
	abort   context.Context

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
	w := &worker{c: c, abort: abort}
	w.base = context.WithValue(context.Background(), idsKey{}, &w.ids)
	w.tracers = newTracerCache(maxResources, func(r *resource.Resource) trace.Tracer {
		// No WithSampler: the SDK's default is ParentBased(AlwaysSample),
		// and any explicit sampler would override OTEL_TRACES_SAMPLER.
		tp := sdktrace.NewTracerProvider(
			sdktrace.WithResource(r),
			sdktrace.WithIDGenerator(idGenerator{}),
			sdktrace.WithSpanProcessor(processor),
		)
		// The provider is never shut down: that would shut down the
		// processor that all providers share. It holds no goroutine, so
		// eviction is enough to release it.
		return tp.Tracer(scope)
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
	tr := w.tracers.get(s.Resource)

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

type cacheEntry struct {
	key    resourceKey
	tracer trace.Tracer
}

// tracerCache keeps one tracer per distinct resource, least recently used
// evicted first. Only the worker uses it.
type tracerCache struct {
	max       int
	order     *list.List // of *cacheEntry, most recently used first
	index     map[resourceKey]*list.Element
	newTracer func(*resource.Resource) trace.Tracer

	// Consecutive spans usually share the resource pointer; checking it
	// first skips hashing the attribute set.
	last       *resource.Resource
	lastTracer trace.Tracer
}

func newTracerCache(max int, newTracer func(*resource.Resource) trace.Tracer) *tracerCache {
	return &tracerCache{
		max:       max,
		order:     list.New(),
		index:     make(map[resourceKey]*list.Element),
		newTracer: newTracer,
	}
}

func (c *tracerCache) get(r *resource.Resource) trace.Tracer {
	if c.lastTracer != nil && r == c.last {
		return c.lastTracer
	}
	key := resourceKey{attrs: r.Equivalent(), schema: r.SchemaURL()}
	var t trace.Tracer
	if el, ok := c.index[key]; ok {
		c.order.MoveToFront(el)
		t = el.Value.(*cacheEntry).tracer
	} else {
		t = c.newTracer(r)
		c.index[key] = c.order.PushFront(&cacheEntry{key: key, tracer: t})
		if c.order.Len() > c.max {
			oldest := c.order.Back()
			c.order.Remove(oldest)
			delete(c.index, oldest.Value.(*cacheEntry).key)
		}
	}
	c.last, c.lastTracer = r, t
	return t
}

func (c *tracerCache) len() int { return c.order.Len() }
