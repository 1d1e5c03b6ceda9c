package http1

import (
	"fmt"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

// A FuzzConn script is a limits selector byte followed by chunks, each
// encoded as a control byte, a length byte and that many data bytes. The
// control byte's bit 0 is the direction, bits 1-2 pick a gap size, bit 3
// closes the connection after the chunk (then reused).
func scriptLimits(script []byte) *Limits {
	if len(script) == 0 || script[0]&1 == 0 {
		return nil
	}
	// Tiny limits make eviction, truncation and head_too_large reachable.
	sel := int(script[0])
	return &Limits{MaxHeadBytes: 16 + sel>>1*4, MaxPending: 1 + sel>>5, MaxValueBytes: 1 + sel>>3}
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

func encodeScript(limits byte, segs []seg) []byte {
	b := []byte{limits}
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

func FuzzConn(f *testing.F) {
	for _, tc := range streamCases {
		f.Add(encodeScript(0, tc.segs))
	}
	f.Fuzz(func(t *testing.T, script []byte) {
		l := scriptLimits(script)
		lim := l.resolve()
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
				}
				checkBounds(t, c)
			})
			ex = c.Close(ex)
			if c.qLen != 0 || c.upgraded || c.s[Request].st != stHead || c.s[Response].st != stHead {
				t.Fatal("Close did not reset the Conn")
			}
			for i := range ex {
				checkExchange(t, &ex[i], &lim)
			}
			return ex
		}
		// Bit 1 of the first byte joins the connection mid-stream.
		midStream := len(script) > 0 && script[0]&2 != 0
		newConn := func() *Conn {
			c := NewConn(l)
			if midStream {
				c.JoinMidStream()
			}
			return c
		}
		fresh := run(newConn())

		// A reused Conn must behave exactly like a fresh one.
		used := NewConn(l)
		used.Feed(Request, Chunk{Data: []byte("GET /old HTTP/1.1\r\nHost: old\r\nContent-Length: 9\r\n\r\nabc")}, nil)
		used.Feed(Response, Chunk{Data: []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab")}, nil)
		used.Close(nil)
		if midStream {
			used.JoinMidStream()
		}
		if again := run(used); !reflect.DeepEqual(fresh, again) {
			t.Fatalf("reused Conn diverged:\n%s", diff(again, fresh))
		}
	})
}

// checkBounds asserts that per-connection memory stays within the limits.
func checkBounds(t *testing.T, c *Conn) {
	t.Helper()
	if c.qLen > c.lim.MaxPending || len(c.q) > c.lim.MaxPending {
		t.Fatalf("queue %d/%d exceeds MaxPending %d", c.qLen, len(c.q), c.lim.MaxPending)
	}
	for i := range c.s {
		s := &c.s[i]
		if cap(s.line) > 2*c.lim.MaxHeadBytes+64 {
			t.Fatalf("line buffer cap %d for MaxHeadBytes %d", cap(s.line), c.lim.MaxHeadBytes)
		}
		if cap(s.keep) > 2*nFields*c.lim.MaxValueBytes+64 {
			t.Fatalf("keep buffer cap %d for MaxValueBytes %d", cap(s.keep), c.lim.MaxValueBytes)
		}
		if cap(s.hold) > maxResyncHold {
			t.Fatalf("resync hold cap %d over %d", cap(s.hold), maxResyncHold)
		}
		if s.headBytes > c.lim.MaxHeadBytes {
			t.Fatalf("head bytes %d over limit", s.headBytes)
		}
	}
}

func checkExchange(t *testing.T, e *Exchange, l *Limits) {
	t.Helper()
	rq, rs := &e.Request, &e.Response
	copied := []string{rq.Target, rq.Host, rq.UserAgent, rq.TraceParent, rq.TraceState}
	if knownMethod([]byte(rq.Method)) == "" {
		copied = append(copied, rq.Method)
	}
	for _, s := range copied {
		if len(s) > l.MaxValueBytes {
			t.Fatalf("string %q longer than %d", s, l.MaxValueBytes)
		}
	}
	for _, s := range strs(reflect.ValueOf(*e), nil) {
		if !utf8.ValidString(s) {
			t.Fatalf("string %q is not UTF-8", s)
		}
		if strings.ContainsAny(s, "\r\n\x00") {
			t.Fatalf("string %q holds a control character", s)
		}
	}
	if !isToken([]byte(rq.Method)) {
		t.Fatalf("method %q is not a token", rq.Method)
	}
	if strings.ContainsAny(rq.Target, " \t") || rq.Target == "" && !rq.HeadTruncated {
		t.Fatalf("bad target %q", rq.Target)
	}
	if !(rq.Proto == "1.0" || rq.Proto == "1.1" || rq.Proto == "" && rq.HeadTruncated) {
		t.Fatalf("request proto %q", rq.Proto)
	}
	if rq.ContentLength < -1 || rq.BodySize < 0 || rs.ContentLength < -1 || rs.BodySize < 0 {
		t.Fatalf("negative length in %+v", e)
	}
	if rq.End < rq.Start || rs.End < rs.Start {
		t.Fatalf("stamps out of order in %+v", e)
	}
	if rq.HeadTruncated && rq.BodySize != 0 {
		t.Fatalf("truncated head with a body: %+v", rq)
	}
	if rq.Chunked == false && rq.ContentLength >= 0 && !e.Incomplete && rq.BodySize > rq.ContentLength {
		t.Fatalf("request body %d beyond Content-Length %d", rq.BodySize, rq.ContentLength)
	}
	switch {
	case rs.StatusCode == 0:
		if !e.Incomplete || *rs != (ResponseMeta{}) {
			t.Fatalf("empty response in a complete exchange: %+v", e)
		}
	case rs.StatusCode < 100 || rs.StatusCode > 599 || rs.StatusCode < 200 && rs.StatusCode != 101:
		t.Fatalf("status %d", rs.StatusCode)
	case rs.Proto != "1.0" && rs.Proto != "1.1":
		t.Fatalf("response proto %q", rs.Proto)
	}
}

// gen turns fuzz bytes into choices; exhausted input chooses zero.
type gen struct{ b []byte }

func (g *gen) pick(n int) int {
	if len(g.b) == 0 {
		return 0
	}
	c := g.b[0]
	g.b = g.b[1:]
	return int(c) % n
}

// piece is generated wire bytes; gappable ones are body data whose capture
// may be dropped without losing sync.
type piece struct {
	data     string
	gappable bool
}

type message struct {
	dir    Direction
	pieces []piece
}

func (m *message) add(s string, gappable bool) { m.pieces = append(m.pieces, piece{s, gappable}) }

// body appends a Content-Length or chunked body of n bytes.
func (g *gen) body(m *message, n int, chunked bool) {
	payload := strings.Repeat("0123456789abcdef", n/16+1)[:n]
	if !chunked {
		m.add(payload, true)
		return
	}
	for len(payload) > 0 {
		k := min(len(payload), 1+g.pick(40))
		ext := []string{"", ";x", ";name=\"v a\"", " ; q=1"}[g.pick(4)]
		m.add(fmt.Sprintf("%x%s\r\n", k, ext), false)
		m.add(payload[:k], true)
		m.add("\r\n", false)
		payload = payload[k:]
	}
	m.add("0\r\n", false)
	if g.pick(2) == 1 {
		m.add("Trailer-A: x\r\nauthorization: t\r\n", false)
	}
	m.add("\r\n", false)
}

// transcript generates valid exchanges and what the parser must report.
func (g *gen) transcript() (msgs []message, want []Exchange, closeAtEnd bool) {
	n := 1 + g.pick(4)
	pipelined := g.pick(2) == 1
	var reqs, resps []message
	for i := range n {
		last := i == n-1
		var rq message
		rq.dir = Request
		method := []string{"GET", "POST", "HEAD", "PUT", "DELETE", "PURGE", "OPTIONS"}[g.pick(7)]
		target := fmt.Sprintf("/r/%d?q=%d", i, g.pick(100))
		proto := "1.1"
		if g.pick(5) == 0 {
			proto = "1.0"
		}
		er := RequestMeta{Method: method, Target: target, Proto: proto, ContentLength: -1}
		rq.add(fmt.Sprintf("%s %s HTTP/%s\r\n", method, target, proto), false)
		reqClose := proto == "1.0"
		sawClose := false
		for range g.pick(6) {
			switch g.pick(9) {
			case 0:
				if er.Host == "" {
					er.Host = fmt.Sprintf("h%d.example", g.pick(10))
					rq.add("Host: "+er.Host+"\r\n", false)
				}
			case 1:
				if er.UserAgent == "" {
					er.UserAgent = "agent/" + fmt.Sprint(g.pick(10))
					rq.add("user-AGENT:  "+er.UserAgent+" \r\n", false)
				}
			case 2:
				if er.TraceParent == "" {
					er.TraceParent = tp
					rq.add("traceparent: "+tp+"\r\n", false)
				}
			case 3:
				if er.TraceState == "" {
					er.TraceState = "k=v"
					rq.add("Tracestate: k=v\r\n", false)
				}
			case 4:
				rq.add("Authorization: Bearer secret\r\n", false)
			case 5:
				rq.add("Connection: keep-alive\r\n", false)
				if proto == "1.0" && !sawClose {
					reqClose = false
				}
			case 6:
				if last {
					rq.add("Connection: close\r\n", false)
					reqClose, sawClose = true, true
				}
			default:
				rq.add("X-Filler: "+strings.Repeat("f", g.pick(30))+"\r\n", false)
			}
		}
		switch g.pick(3) {
		case 1:
			er.ContentLength = int64(g.pick(300))
			er.BodySize = er.ContentLength
			rq.add(fmt.Sprintf("Content-Length: %d\r\n\r\n", er.ContentLength), false)
			g.body(&rq, int(er.ContentLength), false)
		case 2:
			er.Chunked = true
			er.BodySize = int64(g.pick(300))
			rq.add("Transfer-Encoding: chunked\r\n\r\n", false)
			g.body(&rq, int(er.BodySize), true)
		default:
			rq.add("\r\n", false)
		}

		var rs message
		rs.dir = Response
		for range g.pick(3) {
			rs.add([]string{"HTTP/1.1 100 Continue\r\n\r\n", "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n"}[g.pick(2)], false)
		}
		code := []int{200, 201, 204, 304, 404, 500, 302}[g.pick(7)]
		ep := ResponseMeta{Proto: "1.1", StatusCode: code, ContentLength: -1, Close: reqClose}
		rs.add(fmt.Sprintf("HTTP/1.1 %d Reason Phrase\r\nServer: gen\r\n", code), false)
		if g.pick(4) == 0 {
			rs.add("Set-Cookie: s=secret\r\n", false)
		}
		if last && g.pick(4) == 0 {
			rs.add("Connection: close\r\n", false)
			ep.Close = true
		}
		size := g.pick(500)
		noBody := method == "HEAD" || code == 204 || code == 304
		switch k := g.pick(4); {
		case k == 3 && last && !noBody:
			// Delimited by the close.
			ep.Close, ep.BodySize, closeAtEnd = true, int64(size), true
			rs.add("\r\n", false)
			g.body(&rs, size, false)
		case k == 2:
			ep.Chunked = true
			rs.add("Transfer-Encoding: chunked\r\n\r\n", false)
			if !noBody {
				ep.BodySize = int64(size)
				g.body(&rs, size, true)
			}
		default:
			ep.ContentLength = int64(size)
			rs.add(fmt.Sprintf("Content-Length: %d\r\n\r\n", size), false)
			if !noBody {
				ep.BodySize = int64(size)
				g.body(&rs, size, false)
			}
		}
		reqs = append(reqs, rq)
		resps = append(resps, rs)
		want = append(want, Exchange{Request: er, Response: ep})
	}
	if pipelined {
		msgs = append(reqs, resps...)
	} else {
		for i := range reqs {
			msgs = append(msgs, reqs[i], resps[i])
		}
	}
	return msgs, want, closeAtEnd
}

// FuzzRoundTrip generates valid transcripts from spec and feeds them cut
// into chunks as cuts says, dropping the capture of body bytes at random:
// the exchanges must be exactly those generated.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte{}, []byte{})
	f.Add([]byte{3, 1, 0, 5, 1, 2, 3, 4, 5, 1, 1, 200, 2, 2, 3}, []byte{7, 1, 200, 3})
	f.Add([]byte{2, 0, 1, 4, 2, 2, 2, 2, 90, 3, 6, 2, 60, 80}, []byte{0, 0, 0, 1, 1, 1})
	f.Add([]byte("a quite long spec that drives many choices for the generator"), []byte("cuts cuts cuts"))
	f.Fuzz(func(t *testing.T, spec, cuts []byte) {
		g := &gen{b: spec}
		msgs, want, closeAtEnd := g.transcript()
		c := &gen{b: cuts}
		fd := newFeeder(t, nil)
		for _, m := range msgs {
			var data []byte
			var gappable []bool
			for _, p := range m.pieces {
				data = append(data, p.data...)
				for range p.data {
					gappable = append(gappable, p.gappable)
				}
			}
			for len(data) > 0 {
				n := min(len(data), 1+c.pick(64)*c.pick(8))
				// Drop the capture of a gappable tail of this chunk.
				tail := 0
				for tail < n && gappable[n-1-tail] {
					tail++
				}
				drop := 0
				if tail > 0 {
					drop = c.pick(tail + 1)
				}
				fd.chunk(m.dir, data[:n-drop], drop)
				data, gappable = data[n:], gappable[n:]
			}
		}
		if closeAtEnd {
			fd.close()
		}
		if len(fd.errs) != 0 {
			t.Fatalf("errors %v", fd.errs)
		}
		if d := diff(unstamped(fd.ex), want); d != "" {
			t.Fatal(d)
		}
	})
}
