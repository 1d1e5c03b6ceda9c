package http2

import (
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// A FuzzConn script is a mode byte followed by chunks, each encoded as a
// control byte, a length byte and that many data bytes. Mode bit 0 picks
// tiny limits, bit 1 joins mid-stream, bit 2 starts as an h2c upgrade. The
// control byte's bit 0 is the direction, bits 1-2 pick a gap size, bit 3
// closes the connection after the chunk (then reused).
func scriptLimits(script []byte) *Limits {
	if len(script) == 0 || script[0]&1 == 0 {
		return nil
	}
	// Tiny limits make eviction, skipping and cutting reachable.
	sel := int(script[0])
	return &Limits{MaxStreams: 1 + sel>>6, MaxFrameBytes: 8 + sel>>3*8, MaxValueBytes: 1 + sel>>4, MaxHeaderListBytes: 40 + sel}
}

func decodeScript(script []byte, each func(dir Direction, ch Chunk, closeAfter bool)) {
	if len(script) > 0 {
		script = script[1:]
	}
	var stamp uint64
	for len(script) >= 2 {
		ctl, n := script[0], int(script[1])
		script = script[2:]
		n = min(n, len(script))
		data := script[:n]
		script = script[n:]
		gap := 0
		switch ctl >> 1 & 3 {
		case 1:
			gap = 1 + int(ctl>>4)
		case 2:
			gap = 64 * (1 + int(ctl>>4))
		case 3:
			gap = 1 << 20
		}
		stamp += 2
		each(Direction(ctl&1), Chunk{Data: data, Size: n + gap, Start: stamp, End: stamp + 1}, ctl&8 != 0)
	}
}

func encodeScript(mode byte, segs []seg) []byte {
	b := []byte{mode}
	for _, s := range segs {
		for d := s.data; ; {
			n := min(len(d), 255)
			ctl := byte(s.dir)
			if n == len(d) && s.gap > 0 {
				ctl |= 4 // medium gap
			}
			b = append(b, ctl, byte(n))
			b = append(b, d[:n]...)
			d = d[n:]
			if len(d) == 0 {
				break
			}
		}
	}
	return b
}

var upgradeReq = RequestMeta{Method: "GET", Path: "/up", Start: 1, End: 1}

func FuzzConn(f *testing.F) {
	for _, tc := range streamCases {
		f.Add(encodeScript(0, tc.segs))
	}
	w, _ := multi(f)
	f.Add(encodeScript(0, w.segs))
	f.Add(encodeScript(2, w.segs))
	f.Add(encodeScript(1, w.segs))
	f.Fuzz(func(t *testing.T, script []byte) {
		l := scriptLimits(script)
		lim := l.resolve()
		mode := byte(0)
		if len(script) > 0 {
			mode = script[0]
		}
		start := func(c *Conn) {
			switch {
			case mode&2 != 0:
				c.JoinMidStream()
			case mode&4 != 0:
				c.StartUpgraded(upgradeReq)
			}
		}
		run := func(c *Conn) (ex []Exchange) {
			decodeScript(script, func(dir Direction, ch Chunk, closeAfter bool) {
				n := len(ex)
				var err error
				ex, err = c.Feed(dir, ch, ex)
				if _, ok := err.(*ParseError); err != nil && !ok {
					t.Fatalf("error %v of type %T", err, err)
				}
				if len(ex) > n && ch.Size == 0 {
					t.Fatal("an empty chunk completed an exchange")
				}
				if closeAfter {
					ex = c.Close(ex)
					start(c)
				}
				checkBounds(t, c)
			})
			ex = c.Close(ex)
			if len(c.streams) != 0 || c.dead || c.d[Request].st != stPreface || c.d[Response].st != stHeader {
				t.Fatal("Close did not reset the Conn")
			}
			for i := range ex {
				checkExchange(t, &ex[i], &lim)
			}
			return ex
		}
		fresh := NewConn(l)
		start(fresh)
		got := run(fresh)

		// A reused Conn must behave exactly like a fresh one: Close must
		// reset the HPACK tables too.
		used := NewConn(l)
		for _, s := range w.segs[:len(w.segs)-3] {
			used.Feed(s.dir, Chunk{Data: []byte(s.data), Size: len(s.data)}, nil)
		}
		used.Close(nil)
		start(used)
		if again := run(used); !reflect.DeepEqual(got, again) {
			t.Fatalf("reused Conn diverged:\n%s", diff(again, got))
		}
	})
}

// checkBounds asserts that per-connection memory stays within the limits.
func checkBounds(t *testing.T, c *Conn) {
	t.Helper()
	if len(c.streams) > c.lim.MaxStreams+1 || cap(c.streams) > 2*c.lim.MaxStreams+8 {
		t.Fatalf("%d streams in %d slots for MaxStreams %d", len(c.streams), cap(c.streams), c.lim.MaxStreams)
	}
	for i := range c.d {
		d := &c.d[i]
		if cap(d.buf) > 2*c.lim.MaxFrameBytes+64 {
			t.Fatalf("frame buffer cap %d for MaxFrameBytes %d", cap(d.buf), c.lim.MaxFrameBytes)
		}
		if d.tableMax > maxTableSize {
			t.Fatalf("table size %d", d.tableMax)
		}
	}
}

func checkExchange(t *testing.T, e *Exchange, l *Limits) {
	t.Helper()
	rq, rs := &e.Request, &e.Response
	if *rq == upgradeReq {
		rq = &RequestMeta{}
	}
	for _, s := range strs(reflect.ValueOf(*e), nil) {
		if len(s) > l.MaxValueBytes && s != upgradeReq.Method && s != upgradeReq.Path {
			t.Fatalf("string %q longer than %d", s, l.MaxValueBytes)
		}
		if !utf8.ValidString(s) || strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("string %q is not clean UTF-8", s)
		}
	}
	if e.StreamID%2 != 1 {
		t.Fatalf("stream %d is not a client stream", e.StreamID)
	}
	if rq.HeadersUnknown && (rq.Method != "" || rq.Path != "" || rq.Authority != "" || rq.TraceParent != "") {
		t.Fatalf("unknown headers with values: %+v", rq)
	}
	if rs.HeadersUnknown && rs.StatusCode == 0 && (rs.ContentType != "" || rs.GRPCMessage != "") {
		t.Fatalf("unknown response headers with values: %+v", rs)
	}
	if rq.BodySize < 0 || rs.BodySize < 0 {
		t.Fatalf("negative body in %+v", e)
	}
	if rq.End != 0 && rq.End < rq.Start || rs.End != 0 && rs.End < rs.Start {
		t.Fatalf("stamps out of order in %+v", e)
	}
	if rs.StatusCode != 0 && (rs.StatusCode < 100 || rs.StatusCode > 999) || rs.GRPCStatus < -1 {
		t.Fatalf("status %d / grpc %d", rs.StatusCode, rs.GRPCStatus)
	}
	if !e.Incomplete && rs.End == 0 {
		t.Fatalf("complete exchange without a response end: %+v", e)
	}
}
