package export

import (
	"container/list"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// textExporter prints a tree per trace. Spans of one trace arrive from
// different processes at different times, so a trace is held back until it
// has been quiet for delay, then printed whole.
type textExporter struct {
	w        io.Writer
	delay    time.Duration
	maxSpans int
	c        *counters

	mu       sync.Mutex
	traces   map[trace.TraceID]*heldTrace
	order    *list.List // of *heldTrace, by first arrival
	held     int        // spans in traces
	buf      []byte
	shutdown bool

	stop chan struct{}
	done chan struct{}
}

type heldTrace struct {
	id    trace.TraceID
	spans []sdktrace.ReadOnlySpan
	last  time.Time // arrival of the latest span
	el    *list.Element
}

var errTextShutdown = errors.New("text exporter is shut down")

func newTextExporter(w io.Writer, delay time.Duration, maxSpans int, c *counters) *textExporter {
	x := &textExporter{
		w:        w,
		delay:    delay,
		maxSpans: maxSpans,
		c:        c,
		traces:   make(map[trace.TraceID]*heldTrace),
		order:    list.New(),
		stop:     make(chan struct{}),
		done:     make(chan struct{}),
	}
	go x.run()
	return x
}

func (x *textExporter) run() {
	defer close(x.done)
	tick := time.NewTicker(min(max(x.delay/4, 10*time.Millisecond), 250*time.Millisecond))
	defer tick.Stop()
	for {
		select {
		case <-x.stop:
			return
		case now := <-tick.C:
			x.mu.Lock()
			for el := x.order.Front(); el != nil; {
				t := el.Value.(*heldTrace)
				el = el.Next()
				if now.Sub(t.last) >= x.delay {
					x.printLocked(t)
				}
			}
			x.mu.Unlock()
		}
	}
}

// ExportSpans only holds the spans back; they are counted when printed.
func (x *textExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.shutdown {
		x.c.settle(len(spans), errTextShutdown)
		return errTextShutdown
	}
	now := time.Now()
	for _, s := range spans {
		id := s.SpanContext().TraceID()
		t := x.traces[id]
		if t == nil {
			t = &heldTrace{id: id}
			t.el = x.order.PushBack(t)
			x.traces[id] = t
		}
		t.spans = append(t.spans, s)
		t.last = now
		x.held++
	}
	// Printing a trace early, split in two, beats losing it.
	for x.held > x.maxSpans {
		x.printLocked(x.order.Front().Value.(*heldTrace))
	}
	return nil
}

func (x *textExporter) Shutdown(context.Context) error {
	x.mu.Lock()
	if x.shutdown {
		x.mu.Unlock()
		return nil
	}
	x.shutdown = true
	x.mu.Unlock()

	close(x.stop)
	<-x.done

	x.mu.Lock()
	defer x.mu.Unlock()
	for x.order.Len() > 0 {
		x.printLocked(x.order.Front().Value.(*heldTrace))
	}
	return nil
}

func (x *textExporter) printLocked(t *heldTrace) {
	x.order.Remove(t.el)
	delete(x.traces, t.id)
	x.held -= len(t.spans)

	x.buf = appendTraceText(x.buf[:0], t.id, t.spans)
	_, err := x.w.Write(x.buf)
	if err != nil {
		err = fmt.Errorf("write text: %w", err)
	}
	x.c.settle(len(t.spans), err)
}

// appendTraceText renders one trace as a tree: children under their parent,
// siblings by start time. A span whose parent is not among spans starts a
// tree of its own and shows its parent's ID.
func appendTraceText(b []byte, id trace.TraceID, spans []sdktrace.ReadOnlySpan) []byte {
	spans = slices.Clone(spans)
	slices.SortStableFunc(spans, func(a, b sdktrace.ReadOnlySpan) int {
		if c := a.StartTime().Compare(b.StartTime()); c != 0 {
			return c
		}
		as, bs := a.SpanContext().SpanID(), b.SpanContext().SpanID()
		return slices.Compare(as[:], bs[:])
	})

	first, last := spans[0].StartTime(), spans[0].EndTime()
	index := make(map[trace.SpanID]int, len(spans))
	for i, s := range spans {
		index[s.SpanContext().SpanID()] = i
		last = maxTime(last, s.EndTime())
	}
	children := make([][]int, len(spans))
	var roots []int
	for i, s := range spans {
		if p, ok := index[s.Parent().SpanID()]; ok && s.Parent().HasSpanID() && p != i {
			children[p] = append(children[p], i)
		} else {
			roots = append(roots, i)
		}
	}
	// A parent cycle leaves its spans unreachable from any root; they are
	// appended as roots so that nothing goes unprinted.
	visited := make([]bool, len(spans))
	var reach func(i int)
	reach = func(i int) {
		visited[i] = true
		for _, c := range children[i] {
			if !visited[c] {
				reach(c)
			}
		}
	}
	for _, r := range roots {
		reach(r)
	}
	for i := range spans {
		if !visited[i] {
			roots = append(roots, i)
			reach(i)
		}
	}

	b = append(b, "trace "...)
	b = hex.AppendEncode(b, id[:])
	b = append(b, "  ("...)
	b = strconv.AppendInt(b, int64(len(spans)), 10)
	if len(spans) == 1 {
		b = append(b, " span, "...)
	} else {
		b = append(b, " spans, "...)
	}
	b = appendDuration(b, last.Sub(first))
	b = append(b, ")\n"...)

	clear(visited)
	var walk func(i int, prefix string, lastChild bool, root bool)
	walk = func(i int, prefix string, lastChild bool, root bool) {
		visited[i] = true
		b = append(b, prefix...)
		if lastChild {
			b = append(b, "└─ "...)
			prefix += "   "
		} else {
			b = append(b, "├─ "...)
			prefix += "│  "
		}
		b = appendSpanText(b, spans[i], root)
		b = append(b, '\n')
		var kids []int
		for _, c := range children[i] {
			if !visited[c] {
				kids = append(kids, c)
			}
		}
		for n, c := range kids {
			walk(c, prefix, n == len(kids)-1, false)
		}
	}
	for n, r := range roots {
		if !visited[r] {
			walk(r, "", n == len(roots)-1, true)
		}
	}
	return b
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

// appendSpanText writes "KIND name  status  duration  target  [service pid N]".
func appendSpanText(b []byte, s sdktrace.ReadOnlySpan, root bool) []byte {
	attrs := s.Attributes()
	b = append(b, strings.ToUpper(kindName(s.SpanKind()))...)
	b = append(b, ' ')
	b = appendClean(b, s.Name())

	if v, ok := lookup(attrs, semconv.HTTPResponseStatusCodeKey); ok {
		b = append(b, "  "...)
		b = appendClean(b, v.Emit())
	} else if v, ok := lookup(attrs, semconv.RPCResponseStatusCodeKey); ok {
		b = append(b, "  "...)
		b = appendClean(b, v.Emit())
	}
	if st := s.Status(); st.Code == codes.Error {
		b = append(b, "  ERROR"...)
		if st.Description != "" {
			b = append(b, ": "...)
			b = appendClean(b, st.Description)
		}
	}
	b = append(b, "  "...)
	b = appendDuration(b, s.EndTime().Sub(s.StartTime()))

	if target := spanTarget(s.SpanKind(), s.Name(), attrs); target != "" {
		b = append(b, "  "...)
		b = appendClean(b, target)
	}

	svc, hasSvc := s.Resource().Set().Value(semconv.ServiceNameKey)
	pid, hasPID := s.Resource().Set().Value(semconv.ProcessPIDKey)
	if hasSvc || hasPID {
		b = append(b, "  ["...)
		if hasSvc {
			b = appendClean(b, svc.Emit())
		}
		if hasPID {
			if hasSvc {
				b = append(b, ' ')
			}
			b = append(b, "pid "...)
			b = appendClean(b, pid.Emit())
		}
		b = append(b, ']')
	}
	if p := s.Parent(); root && p.HasSpanID() {
		pid := p.SpanID()
		b = append(b, "  parent "...)
		b = hex.AppendEncode(b, pid[:])
	}
	return b
}

// spanTarget names what a span talked to, or for a server the path when
// the span name (usually "METHOD route") does not already show it.
func spanTarget(kind trace.SpanKind, name string, attrs []attribute.KeyValue) string {
	switch kind {
	case trace.SpanKindServer:
		if p, ok := lookup(attrs, semconv.URLPathKey); ok && !strings.Contains(name, p.AsString()) {
			return p.AsString()
		}
		return ""
	case trace.SpanKindClient, trace.SpanKindProducer:
		if u, ok := lookup(attrs, semconv.URLFullKey); ok {
			return u.AsString()
		}
		host, ok := lookup(attrs, semconv.ServerAddressKey)
		if !ok {
			return ""
		}
		if port, ok := lookup(attrs, semconv.ServerPortKey); ok {
			return host.Emit() + ":" + port.Emit()
		}
		return host.Emit()
	}
	return ""
}

func lookup(attrs []attribute.KeyValue, key attribute.Key) (attribute.Value, bool) {
	for _, kv := range attrs {
		if kv.Key == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

func appendDuration(b []byte, d time.Duration) []byte {
	ms := float64(d) / float64(time.Millisecond)
	switch {
	case d < time.Millisecond:
		b = strconv.AppendFloat(b, ms, 'f', 3, 64)
	case d < time.Second:
		b = strconv.AppendFloat(b, ms, 'f', 1, 64)
	default:
		b = strconv.AppendFloat(b, d.Seconds(), 'f', 2, 64)
		return append(b, " s"...)
	}
	return append(b, " ms"...)
}

// appendClean escapes what a terminal would interpret: captured traffic is
// attacker-controlled, and control sequences or bidirectional overrides in
// a URL must not rewrite the operator's screen.
func appendClean(b []byte, s string) []byte {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			b = append(b, '\\', 'x', hexDigits[s[i]>>4], hexDigits[s[i]&0xf])
		case r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0):
			b = append(b, '\\', 'x', hexDigits[r>>4], hexDigits[r&0xf])
		case (r >= 0x202a && r <= 0x202e) || (r >= 0x2066 && r <= 0x2069):
			b = append(b, `\u`...)
			b = append(b, strconv.FormatInt(int64(r), 16)...)
		default:
			b = append(b, s[i:i+size]...)
		}
		i += size
	}
	return b
}
