package servicemap

import (
	"context"
	"sync"
	"time"

	"github.com/sondehq/sonde/tracer/export"
)

// Live is a Builder fed with spans as sonde exports them, safe for
// concurrent use: the tracer's event loop adds, a web handler reads.
type Live struct {
	mu sync.Mutex
	b  *Builder
}

// NewLive returns an empty live map.
func NewLive(opts *Options) *Live { return &Live{b: NewBuilder(opts)} }

// Export adds a span: Live is a tracer.Sink.
func (l *Live) Export(s *export.Span) {
	m := FromExport(s)
	l.mu.Lock()
	l.b.Add(m, time.Now())
	l.mu.Unlock()
}

// Map flushes the client spans that waited long enough and returns a
// snapshot.
func (l *Live) Map() Map {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Flush(time.Now(), false)
	return l.b.Map()
}

// FlushEvery counts, every interval until ctx ends, the spans that waited
// long enough for their other end, so that observers see them without a
// reader of the map.
func (l *Live) FlushEvery(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			l.mu.Lock()
			l.b.Flush(now, false)
			l.mu.Unlock()
		}
	}
}

// Close counts every span still waiting.
func (l *Live) Close() {
	l.mu.Lock()
	l.b.Flush(time.Now(), true)
	l.mu.Unlock()
}
