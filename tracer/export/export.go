// Package export hands the spans that sonde builds from captured traffic to
// the OpenTelemetry SDK, which sends them to a collector (OTLP) or, through
// exporters of this package, prints them (text, JSON lines).
//
// sonde decides every span's trace and span IDs, remote parent, timestamps
// and resource itself; the exporter reproduces them exactly. All formats go
// through the same SDK pipeline, so the standard OTEL_EXPORTER_OTLP_*,
// OTEL_BSP_*, OTEL_TRACES_SAMPLER* and span limit variables apply as they
// would to an instrumented program. OTEL_RESOURCE_ATTRIBUTES and
// OTEL_SERVICE_NAME of sonde's own environment are merged into every
// resource, the traced process's own attributes winning on conflicts.
//
// sonde's spans are finished when they reach the SDK. Unless one of those
// variables asks the SDK's tracer to change them (a sampler, attribute
// limits), they go to the batch span processor as the finished spans the
// tracer would have made of them, without being started and ended through
// it first, which cost more than half of a span's way to the JSON writer.
//
// Nothing is lost silently: every span given to Export ends up in exactly
// one of the counters of Stats once Shutdown has returned.
package export

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// Span is a finished span as sonde reconstructed it.
type Span struct {
	TraceID trace.TraceID
	SpanID  trace.SpanID
	// Parent is the remote parent, for example from an incoming W3C
	// traceparent, or the zero SpanContext for a root span. Its trace ID
	// must be TraceID. A parent without the sampled flag makes the default
	// sampler discard the span, as an instrumented program would.
	Parent     trace.SpanContext
	Name       string
	Kind       trace.SpanKind
	Start, End time.Time
	Attributes []attribute.KeyValue
	// StatusDescription is kept only with codes.Error, as the
	// specification requires.
	Status            codes.Code
	StatusDescription string
	// Resource describes the traced process; nil means no attributes but
	// those of sonde's own environment.
	Resource *resource.Resource
}

// Format selects where spans go.
type Format string

// Formats understood by New.
const (
	FormatOTLP Format = "otlp" // OTLP to a collector, configured by OTEL_EXPORTER_OTLP_*
	FormatText Format = "text" // a tree per trace, for a person at a terminal
	FormatJSON Format = "json" // one JSON object per span and line
)

// Defaults for Options.
const (
	DefaultMaxQueue     = 4096
	DefaultMaxResources = 4096
	DefaultTextDelay    = time.Second
	DefaultTextMaxSpans = 10000
)

// streamBatchDelay replaces the SDK's 5 s batch delay for the printing
// formats, where a person or a pipe waits for the output.
const streamBatchDelay = 100 * time.Millisecond

// Options configures an Exporter. A nil *Options means all defaults.
type Options struct {
	// Format "" selects FormatOTLP when OTEL_EXPORTER_OTLP_ENDPOINT or
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, FormatText otherwise.
	Format Format
	// Writer receives text and JSON output; nil means os.Stdout. Writes
	// are serialized.
	Writer io.Writer
	// MaxQueue bounds the spans waiting between Export and the SDK. When
	// it is full, Export drops and counts. Zero means DefaultMaxQueue.
	MaxQueue int
	// MaxResources bounds the distinct resources, each merged with the
	// environment's and, once a span needs the SDK's tracer, with its own
	// TracerProvider, kept at once; the least recently used is evicted.
	// Zero means DefaultMaxResources.
	MaxResources int
	// TextDelay is how long a trace must be quiet before the text format
	// prints it. Zero means DefaultTextDelay.
	TextDelay time.Duration
	// TextMaxSpans bounds the spans the text format holds back; beyond it
	// the oldest traces are printed early rather than dropped. Zero means
	// DefaultTextMaxSpans.
	TextMaxSpans int

	// viaTracer sends every span through the SDK's tracer, for the A/B
	// benchmarks of the direct path.
	viaTracer bool
}

// Stats counts what became of the spans given to Export. After Shutdown,
// Received = Exported + Failed + Dropped + NotSampled + Invalid.
type Stats struct {
	Received   uint64 // spans given to Export
	Exported   uint64 // accepted by the collector, or written out
	Failed     uint64 // in exports that failed, e.g. an unreachable collector or a write error
	Dropped    uint64 // queue full, Export after Shutdown, or still pending when Shutdown's context ended
	NotSampled uint64 // discarded by the sampler, e.g. below a remote parent with sampled=0
	Invalid    uint64 // invalid trace or span ID, zero timestamp, or a parent in another trace
	Pending    uint64 // accepted but not yet settled
	// Repaired counts spans, among the others, whose strings held invalid
	// UTF-8, replaced with U+FFFD because OTLP cannot carry it.
	Repaired uint64
	// Errors counts the errors reported through the OpenTelemetry error
	// handler, failed exports included; LastError is the latest of them
	// or of the failed exports.
	Errors    uint64
	LastError error
}

// Exporter exports Spans. Its methods are safe for concurrent use.
type Exporter struct {
	format Format
	queue  chan *Span
	intake sync.RWMutex // Export holds it shared; Shutdown exclusively to close queue
	closed bool

	c          counters
	processor  sdktrace.SpanProcessor
	abort      context.CancelFunc
	workerDone chan struct{}

	shutdownOnce sync.Once
	shutdownErr  error
}

// New starts an exporter. ctx is used only while connecting to the SDK
// exporter, not for the exporter's lifetime.
//
// New routes the OpenTelemetry global error handler to the live exporters'
// Stats, replacing any handler set before.
func New(ctx context.Context, opts *Options) (*Exporter, error) {
	var o Options
	if opts != nil {
		o = *opts
	}
	format, err := resolveFormat(o.Format)
	if err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	if err := checkSampler(); err != nil {
		return nil, fmt.Errorf("export: %w", err)
	}
	o.MaxQueue = orDefault(o.MaxQueue, DefaultMaxQueue)
	o.MaxResources = orDefault(o.MaxResources, DefaultMaxResources)
	o.TextMaxSpans = orDefault(o.TextMaxSpans, DefaultTextMaxSpans)
	if o.TextDelay <= 0 {
		o.TextDelay = DefaultTextDelay
	}
	if o.Writer == nil {
		o.Writer = os.Stdout
	}

	e := &Exporter{
		format:     format,
		queue:      make(chan *Span, o.MaxQueue),
		workerDone: make(chan struct{}),
	}
	abortCtx, abort := context.WithCancel(context.Background())
	e.abort = abort

	var sink sdktrace.SpanExporter
	switch format {
	case FormatOTLP:
		exp, err := newOTLP(ctx)
		if err != nil {
			abort()
			return nil, fmt.Errorf("export: %w", err)
		}
		sink = &counted{SpanExporter: exp, c: &e.c, abort: abortCtx}
	case FormatJSON:
		sink = &counted{SpanExporter: newJSONExporter(o.Writer), c: &e.c, abort: abortCtx}
	case FormatText:
		sink = newTextExporter(o.Writer, o.TextDelay, o.TextMaxSpans, &e.c)
	}

	bspOpts := []sdktrace.BatchSpanProcessorOption{
		// Blocking pushes back-pressure onto our own queue, where drops
		// are counted; the SDK's queue would drop silently.
		sdktrace.WithBlocking(),
	}
	if format != FormatOTLP && os.Getenv(envScheduleDelay) == "" {
		bspOpts = append(bspOpts, sdktrace.WithBatchTimeout(streamBatchDelay))
	}
	e.processor = sdktrace.NewBatchSpanProcessor(sink, bspOpts...)

	registerErrors(&e.c)
	w := newWorker(&e.c, e.processor, o.MaxResources, abortCtx)
	w.direct = w.direct && !o.viaTracer
	go w.run(e.queue, e.workerDone)
	return e, nil
}

func orDefault(v, def int) int {
	if v <= 0 {
		return def
	}
	return v
}

// Export queues s for export and returns at once; s must not be changed
// afterwards. When the queue is full, or after Shutdown, s is dropped and
// counted.
func (e *Exporter) Export(s *Span) {
	e.intake.RLock()
	if e.closed {
		e.intake.RUnlock()
		e.c.late.Add(1)
		return
	}
	e.c.received.Add(1)
	select {
	case e.queue <- s:
	default:
		e.c.queueFull.Add(1)
	}
	e.intake.RUnlock()
}

// Format returns the format in use, which New may have chosen from the
// environment.
func (e *Exporter) Format() Format { return e.format }

// Stats returns the counters so far.
func (e *Exporter) Stats() Stats { return e.c.stats() }

// Shutdown exports or prints everything pending, then stops. If ctx ends
// first, Shutdown gives up on what is still pending, counts it as dropped
// and returns ctx's error. Calls after the first return the first's result.
func (e *Exporter) Shutdown(ctx context.Context) error {
	e.shutdownOnce.Do(func() { e.shutdownErr = e.shutdown(ctx) })
	return e.shutdownErr
}

func (e *Exporter) shutdown(ctx context.Context) error {
	e.intake.Lock()
	e.closed = true
	close(e.queue)
	e.intake.Unlock()

	var err error
	select {
	case <-e.workerDone:
	case <-ctx.Done():
		err = fmt.Errorf("export: shutdown: %w", context.Cause(ctx))
		// Cancel in-flight exports so that the SDK's goroutines, and a
		// worker blocked on its full queue, wind down promptly.
		e.abort()
	}
	if perr := e.processor.Shutdown(ctx); perr != nil && err == nil {
		err = fmt.Errorf("export: shutdown: %w", perr)
	}
	e.abort()
	e.c.freeze()
	unregisterErrors(&e.c)
	return err
}

// counters is shared by Export, the worker, the SDK exporters and the error
// handler. Export's counters are atomics and stop moving once the queue is
// closed; the others are settled under mu until freeze, after which late
// results of abandoned work are ignored so that the totals stay consistent.
type counters struct {
	received  atomic.Uint64
	queueFull atomic.Uint64
	late      atomic.Uint64 // Export after Shutdown: received and dropped at once
	errors    atomic.Uint64

	mu         sync.Mutex
	frozen     bool
	exported   uint64
	failed     uint64
	notSampled uint64
	invalid    uint64
	repaired   uint64
	abandoned  uint64
	lastErr    error
}

// settle records the outcome of exporting n spans.
func (c *counters) settle(n int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen {
		return
	}
	if err != nil {
		c.failed += uint64(n)
		c.lastErr = err
	} else {
		c.exported += uint64(n)
	}
}

func (c *counters) add(field *uint64) {
	c.mu.Lock()
	if !c.frozen {
		*field++
	}
	c.mu.Unlock()
}

func (c *counters) handle(err error) {
	c.errors.Add(1)
	c.mu.Lock()
	c.lastErr = err
	c.mu.Unlock()
}

// freeze counts whatever has not settled yet as abandoned.
func (c *counters) freeze() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.frozen {
		return
	}
	c.abandoned = c.pendingLocked(c.received.Load())
	c.frozen = true
}

func (c *counters) pendingLocked(received uint64) uint64 {
	settled := c.queueFull.Load() + c.exported + c.failed + c.notSampled + c.invalid + c.abandoned
	if settled > received {
		return 0
	}
	return received - settled
}

func (c *counters) stats() Stats {
	c.mu.Lock()
	defer c.mu.Unlock()
	// received is read after the settled counters it bounds, so that a
	// concurrent snapshot never shows more settled than received.
	received := c.received.Load()
	late := c.late.Load()
	return Stats{
		Received:   received + late,
		Exported:   c.exported,
		Failed:     c.failed,
		Dropped:    c.queueFull.Load() + late + c.abandoned,
		NotSampled: c.notSampled,
		Invalid:    c.invalid,
		Repaired:   c.repaired,
		Pending:    c.pendingLocked(received),
		Errors:     c.errors.Load(),
		LastError:  c.lastErr,
	}
}

// counted settles each export's spans and lets Shutdown cancel exports it
// has given up on.
type counted struct {
	sdktrace.SpanExporter
	c     *counters
	abort context.Context
}

func (x *counted) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	if err := x.abort.Err(); err != nil {
		return fmt.Errorf("export abandoned: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(x.abort, cancel)
	err := x.SpanExporter.ExportSpans(ctx, spans)
	stop()
	cancel()
	x.c.settle(len(spans), err)
	return err
}

// errorHandler fans the process-wide OpenTelemetry errors out to every live
// exporter: the SDK reports failed exports and bad configuration only there.
type errorHandler struct {
	mu   sync.Mutex
	live map[*counters]struct{}
}

func (h *errorHandler) Handle(err error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for c := range h.live {
		c.handle(err)
	}
}

var (
	errs     = &errorHandler{live: make(map[*counters]struct{})}
	errsOnce sync.Once
)

func registerErrors(c *counters) {
	errsOnce.Do(func() { otel.SetErrorHandler(errs) })
	errs.mu.Lock()
	errs.live[c] = struct{}{}
	errs.mu.Unlock()
}

func unregisterErrors(c *counters) {
	errs.mu.Lock()
	delete(errs.live, c)
	errs.mu.Unlock()
}
