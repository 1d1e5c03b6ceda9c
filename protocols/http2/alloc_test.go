package http2

import (
	"encoding/binary"
	"fmt"
	"strings"
	"testing"
)

// keepAlive returns the request and response bytes of one steady-state
// exchange on a warmed connection, with setID to renumber its stream: a
// Go-like client repeating a request, so every field is a dynamic-table
// index, and a server answering alike.
func keepAlive(t testing.TB, extra ...string) (c *Conn, rq, rs []byte, setID func(uint32)) {
	w := newWire(t)
	w.prefaces()
	for id := uint32(1); id <= 3; id += 2 { // the first fills the tables
		w.get(id, "/api/v1/users/42", extra...)
		w.ok(id, `{"id":42,"name":"gopher"}`)
	}
	c = NewConn(nil)
	var out []Exchange
	for _, s := range w.segs[:len(w.segs)-2] {
		out, _ = c.Feed(s.dir, Chunk{Data: []byte(s.data), Size: len(s.data)}, out)
	}
	if len(out) != 1 {
		t.Fatalf("warm-up gave %d exchanges", len(out))
	}
	rq, rs = []byte(w.segs[len(w.segs)-2].data), []byte(w.segs[len(w.segs)-1].data)
	setID = func(id uint32) {
		for _, b := range [][]byte{rq, rs} {
			for len(b) >= frameHeaderLen {
				fh := parseFrameHeader(b)
				if fh.stream != 0 {
					binary.BigEndian.PutUint32(b[5:], id)
				}
				b = b[frameHeaderLen+fh.length:]
			}
		}
	}
	return c, rq, rs, setID
}

func feedExchange(c *Conn, rq, rs []byte, out []Exchange) []Exchange {
	out, _ = c.Feed(Request, Chunk{Data: rq, Size: len(rq)}, out)
	out, _ = c.Feed(Response, Chunk{Data: rs, Size: len(rs)}, out)
	return out
}

// TestAllocs pins the steady-state cost of an exchange. The parser itself
// allocates nothing: retained strings are those hpack already holds, in its
// dynamic table or freshly decoded, and every buffer is reused. What remains
// is hpack's: a literal field (a new traceparent each request) is one
// string the decoder must build, name and value, to insert in its table.
func TestAllocs(t *testing.T) {
	c, rq, rs, setID := keepAlive(t)
	out := make([]Exchange, 0, 4)
	id := uint32(3)
	same := testing.AllocsPerRun(1000, func() {
		id += 2
		setID(id)
		if out = feedExchange(c, rq, rs, out[:0]); len(out) != 1 || out[0].Request.Path != "/api/v1/users/42" || out[0].Incomplete {
			t.Fatalf("exchange %+v", out)
		}
	})
	if same != 0 {
		t.Errorf("repeated request: %v allocs per exchange, want 0", same)
	}

	// A fresh traceparent per request: its value is a literal.
	w := newWire(t)
	w.prefaces()
	var reqs [][]byte
	for i := range 1002 { // AllocsPerRun calls once more to warm up
		w.segs = w.segs[:0]
		w.get(uint32(2*i+1), "/api/v1/users/42", "traceparent", fmt.Sprintf("00-%032x-%016x-01", i, i))
		reqs = append(reqs, []byte(w.segs[0].data))
	}
	w.segs = w.segs[:0]
	w.prefaces()
	c = NewConn(nil)
	for _, s := range w.segs {
		c.Feed(s.dir, Chunk{Data: []byte(s.data), Size: len(s.data)}, nil)
	}
	resp := func(id uint32) []byte {
		w.segs = w.segs[:0]
		w.headers(Response, id, true, ":status", "204")
		return []byte(w.segs[0].data)
	}
	resps := make([][]byte, len(reqs))
	for i := range resps {
		resps[i] = resp(uint32(2*i + 1))
	}
	feedExchange(c, reqs[0], resps[0], nil)
	n := 1
	fresh := testing.AllocsPerRun(1000, func() {
		out = feedExchange(c, reqs[n], resps[n], out[:0])
		n++
		if len(out) != 1 || !strings.HasPrefix(out[0].Request.TraceParent, "00-") {
			t.Fatalf("exchange %+v", out)
		}
	})
	if fresh > 1 {
		t.Errorf("fresh traceparent: %v allocs per exchange, want at most 1", fresh)
	}
}

// BenchmarkConn parses a whole recorded h2c connection (preface, five
// requests with headers and small bodies, responses, trailers) on a Conn
// reused across iterations.
func BenchmarkConn(b *testing.B) {
	w, _ := multi(b)
	var n int64
	for _, s := range w.segs {
		n += int64(len(s.data))
	}
	c := NewConn(nil)
	out := make([]Exchange, 0, 8)
	b.SetBytes(n)
	b.ReportAllocs()
	for b.Loop() {
		out = out[:0]
		for _, s := range w.segs {
			out, _ = c.Feed(s.dir, Chunk{Data: []byte(s.data), Size: len(s.data)}, out)
		}
		if out = c.Close(out); len(out) != 6 {
			b.Fatalf("%d exchanges", len(out))
		}
	}
}

// BenchmarkKeepAlive is the steady state: one small exchange on a warm
// connection.
func BenchmarkKeepAlive(b *testing.B) {
	c, rq, rs, setID := keepAlive(b)
	out := make([]Exchange, 0, 4)
	id := uint32(3)
	b.SetBytes(int64(len(rq) + len(rs)))
	b.ReportAllocs()
	for b.Loop() {
		id += 2
		setID(id)
		if out = feedExchange(c, rq, rs, out[:0]); len(out) != 1 {
			b.Fatal("no exchange")
		}
	}
}

// BenchmarkLargeBody: a 1 MiB response in 16 KiB DATA frames, captured
// only 256 bytes per write; throughput counts the bytes that moved.
func BenchmarkLargeBody(b *testing.B) {
	c, rq, _, setID := keepAlive(b)
	w := newWire(b)
	w.headers(Response, 5, false, ":status", "200")
	for i := range 64 {
		w.data(Response, 5, i == 63, strings.Repeat("x", 16<<10))
	}
	var frames [][]byte // one write each
	var n int64
	for _, s := range w.segs {
		frames = append(frames, []byte(s.data))
		n += int64(len(s.data))
	}
	out := make([]Exchange, 0, 4)
	id := uint32(3)
	b.SetBytes(int64(len(rq)) + n)
	b.ReportAllocs()
	for b.Loop() {
		id += 2
		setID(id)
		out, _ = c.Feed(Request, Chunk{Data: rq, Size: len(rq)}, out[:0])
		for _, f := range frames {
			binary.BigEndian.PutUint32(f[5:], id)
			out, _ = c.Feed(Response, Chunk{Data: f[:min(256, len(f))], Size: len(f)}, out)
		}
		if len(out) != 1 || out[0].Response.BodySize != 1<<20 {
			b.Fatalf("exchanges %+v", out)
		}
	}
}
