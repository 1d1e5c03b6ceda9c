package tracer

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"

	"go.opentelemetry.io/otel/trace"
)

// idSource makes W3C trace and span IDs. A ChaCha8 stream seeded from the
// OS keeps IDs unpredictable without a syscall per span.
type idSource struct{ rng *rand.ChaCha8 }

func newIDSource() idSource {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // crypto/rand.Read never fails on Linux
	return idSource{rng: rand.NewChaCha8(seed)}
}

func (s idSource) traceID() (id trace.TraceID) {
	for !id.IsValid() {
		binary.LittleEndian.PutUint64(id[:8], s.rng.Uint64())
		binary.LittleEndian.PutUint64(id[8:], s.rng.Uint64())
	}
	return id
}

func (s idSource) spanID() (id trace.SpanID) {
	for !id.IsValid() {
		binary.LittleEndian.PutUint64(id[:], s.rng.Uint64())
	}
	return id
}
