package tracer

import (
	"testing"

	"go.opentelemetry.io/otel/trace"
)

func TestIDSource(t *testing.T) {
	s := newIDSource()
	const n = 10000
	traces := make(map[trace.TraceID]bool, n)
	spans := make(map[trace.SpanID]bool, n)
	for range n {
		tid, sid := s.traceID(), s.spanID()
		if !tid.IsValid() || !sid.IsValid() {
			t.Fatalf("invalid ids %s/%s", tid, sid)
		}
		if traces[tid] || spans[sid] {
			t.Fatalf("repeated id %s/%s", tid, sid)
		}
		traces[tid], spans[sid] = true, true
	}

	// Two sources are seeded independently.
	a, b := newIDSource(), newIDSource()
	if a.traceID() == b.traceID() {
		t.Errorf("two sources gave the same first trace id")
	}

	// Every byte position varies: no constant halves or bytes.
	var seen [16]map[byte]bool
	for i := range seen {
		seen[i] = map[byte]bool{}
	}
	for range 256 {
		id := s.traceID()
		for i, x := range id {
			seen[i][x] = true
		}
	}
	for i := range seen {
		if len(seen[i]) < 64 {
			t.Errorf("byte %d of trace ids took only %d values in 256 draws", i, len(seen[i]))
		}
	}
}
