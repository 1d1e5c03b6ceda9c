// Package ui serves sonde's live page: the service map, drawn as SVG, and
// the recent traces, each with a waterfall of its spans. It keeps what it
// shows in bounded memory, fed as a tracer sink.
package ui

import (
	"container/list"
	"sort"
	"sync"
	"time"

	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/tracer/export"
)

// Span is what the page shows of a span.
type Span struct {
	SpanID, ParentID trace.SpanID
	Name, Service    string
	Kind             trace.SpanKind
	Start, End       time.Time
	Error            bool
}

// Trace is a recent trace: its spans in start order.
type Trace struct {
	ID    trace.TraceID
	Spans []Span
	seen  time.Time
}

// Start and End bound the trace's spans.
func (t *Trace) Start() time.Time {
	s := t.Spans[0].Start
	for _, sp := range t.Spans {
		if sp.Start.Before(s) {
			s = sp.Start
		}
	}
	return s
}

func (t *Trace) End() time.Time {
	e := t.Spans[0].End
	for _, sp := range t.Spans {
		if sp.End.After(e) {
			e = sp.End
		}
	}
	return e
}

// Root is the span with no parent in the trace, or the earliest.
func (t *Trace) Root() Span {
	ids := map[trace.SpanID]bool{}
	for _, sp := range t.Spans {
		ids[sp.SpanID] = true
	}
	for _, sp := range t.Spans {
		if !ids[sp.ParentID] {
			return sp
		}
	}
	return t.Spans[0]
}

// Options bounds Recent. A nil *Options means the defaults.
type Options struct {
	MaxTraces        int // default 200
	MaxSpansPerTrace int // default 128; a trace's later spans are dropped
}

// Recent keeps the most recent traces. It is a tracer sink, safe for
// concurrent use.
type Recent struct {
	mu       sync.Mutex
	opts     Options
	byID     map[trace.TraceID]*list.Element
	order    *list.List // of *Trace, most recently touched first
	services map[*export.Span]string
}

// NewRecent returns an empty Recent.
func NewRecent(opts *Options) *Recent {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.MaxTraces <= 0 {
		o.MaxTraces = 200
	}
	if o.MaxSpansPerTrace <= 0 {
		o.MaxSpansPerTrace = 128
	}
	return &Recent{opts: o, byID: map[trace.TraceID]*list.Element{}, order: list.New()}
}

// Export adds a span to its trace.
func (r *Recent) Export(s *export.Span) {
	sp := Span{SpanID: s.SpanID, Name: s.Name, Kind: s.Kind, Start: s.Start, End: s.End, Error: s.Status == codes.Error}
	if s.Parent.IsValid() {
		sp.ParentID = s.Parent.SpanID()
	}
	if s.Resource != nil {
		if v, ok := s.Resource.Set().Value(semconv.ServiceNameKey); ok {
			sp.Service = v.AsString()
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	el, ok := r.byID[s.TraceID]
	if !ok {
		el = r.order.PushFront(&Trace{ID: s.TraceID})
		r.byID[s.TraceID] = el
		if r.order.Len() > r.opts.MaxTraces {
			old := r.order.Back()
			r.order.Remove(old)
			delete(r.byID, old.Value.(*Trace).ID)
		}
	} else {
		r.order.MoveToFront(el)
	}
	t := el.Value.(*Trace)
	t.seen = time.Now()
	if len(t.Spans) < r.opts.MaxSpansPerTrace {
		t.Spans = append(t.Spans, sp)
	}
}

// Traces returns copies of the recent traces, newest first, each with its
// spans in start order.
func (r *Recent) Traces() []Trace {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Trace, 0, r.order.Len())
	for el := r.order.Front(); el != nil; el = el.Next() {
		t := el.Value.(*Trace)
		c := Trace{ID: t.ID, Spans: append([]Span(nil), t.Spans...), seen: t.seen}
		sort.SliceStable(c.Spans, func(i, j int) bool { return c.Spans[i].Start.Before(c.Spans[j].Start) })
		out = append(out, c)
	}
	return out
}
