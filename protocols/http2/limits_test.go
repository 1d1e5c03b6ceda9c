package http2

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"golang.org/x/net/http2"
)

func TestGarbageYieldsErrorsNotExchanges(t *testing.T) {
	inputs := map[string]string{
		"tls client hello": "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x1b",
		"http/1.1":         "GET / HTTP/1.1\r\nHost: h\r\n\r\n",
		"http/1.1 resp":    "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"redis":            "*1\r\n$4\r\nPING\r\n",
		"short preface":    "PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n",
		"zeros":            strings.Repeat("\x00", 64),
	}
	for name, in := range inputs {
		for _, dir := range []Direction{Request, Response} {
			for _, split := range []splitter{whole, bytewise} {
				f := newFeeder(t, nil)
				for _, p := range split(in) {
					f.chunk(dir, []byte(p), 0)
				}
				// More of it: a dead connection reports once.
				f.chunk(dir, []byte(in), 0)
				f.close()
				if rs := f.reasons(); len(f.ex) != 0 || len(rs) != 1 || rs[0] != BadPreface {
					t.Errorf("%s on %v: %d exchanges, reasons %v; want one bad_preface", name, dir, len(f.ex), rs)
				}
			}
		}
	}

	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 3000 {
		f := newFeeder(t, nil)
		if i%2 == 1 {
			f.c.JoinMidStream()
		}
		buf := make([]byte, 1+rng.IntN(3000))
		for j := range buf {
			buf[j] = byte(rng.Uint32())
		}
		for len(buf) > 0 {
			n := min(len(buf), 1+rng.IntN(600))
			f.chunk(Direction(rng.IntN(2)), buf[:n], rng.IntN(3)*rng.IntN(100))
			buf = buf[n:]
		}
		f.close()
		if i%2 == 0 && (len(f.ex) != 0 || len(f.errs) == 0) {
			t.Fatalf("random input %d: %d exchanges, errors %v; want errors only", i, len(f.ex), f.errs)
		}
	}
}

func TestTooManyStreams(t *testing.T) {
	w := newWire(t)
	w.prefaces()
	for i := range 5 {
		w.get(uint32(2*i+1), "/s")
	}
	w.ok(5, "")
	f := play(t, &Limits{MaxStreams: 3}, w.segs, -1, whole, true)
	if rs := f.reasons(); len(rs) != 2 || rs[0] != TooManyStreams || rs[1] != TooManyStreams {
		t.Fatalf("reasons %v", rs)
	}
	var ids []uint32
	for _, e := range f.ex {
		ids = append(ids, e.StreamID)
		if e.Incomplete != (e.StreamID != 5) {
			t.Errorf("stream %d: Incomplete %v", e.StreamID, e.Incomplete)
		}
	}
	if !reflect.DeepEqual(ids, []uint32{1, 3, 5, 7, 9}) {
		t.Fatalf("streams out %v", ids)
	}

	// Default limit: the table stops at 256 whatever comes.
	w = newWire(t)
	w.prefaces()
	f = newFeeder(t, nil).play(w.segs, -1, whole)
	for i := range 1000 {
		w.segs = w.segs[:0]
		w.get(uint32(2*i+1), "/s")
		f.play(w.segs, -1, whole)
	}
	if len(f.c.streams) != DefaultMaxStreams || len(f.ex) != 1000-DefaultMaxStreams {
		t.Fatalf("open %d, evicted %d", len(f.c.streams), len(f.ex))
	}
}

func TestFrameTooLarge(t *testing.T) {
	l := &Limits{MaxFrameBytes: 64}
	w := newWire(t)
	w.prefaces()
	w.get(1, "/small")
	w.get(3, "/"+strings.Repeat("p", 100)) // a HEADERS frame over 64 bytes
	w.get(5, "/small")                     // fits, but the table is unknown now
	w.headers(Response, 1, false, ":status", "200")
	w.data(Response, 1, true, strings.Repeat("D", 100000)) // DATA is never buffered
	w.ok(3, "")
	w.ok(5, "")
	f := play(t, l, w.segs, -1, whole, true)
	if rs := f.reasons(); len(rs) != 1 || rs[0] != FrameTooLarge {
		t.Fatalf("reasons %v", rs)
	}
	want := []Exchange{
		{StreamID: 1, Request: getMeta("/small"), Response: ResponseMeta{StatusCode: 200, GRPCStatus: -1, BodySize: 100000}},
		{StreamID: 3, Request: RequestMeta{HeadersUnknown: true}, Response: okMeta("")},
		{StreamID: 5, Request: RequestMeta{HeadersUnknown: true}, Response: okMeta("")},
	}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
	for i := range f.c.d {
		if cp := cap(f.c.d[i].buf); cp > 2*64+64 {
			t.Fatalf("frame buffer grew to %d", cp)
		}
	}

	// A large SETTINGS frame is skipped; the connection goes on.
	w = newWire(t)
	w.prefaces()
	var many []http2.Setting
	for i := range 20 {
		many = append(many, http2.Setting{ID: http2.SettingID(0x100 + i), Val: 1})
	}
	w.check(w.fr[Response].WriteSettings(many...))
	w.flush(Response)
	w.get(1, "/")
	w.ok(1, "")
	f = play(t, l, w.segs, -1, bytewise, true)
	if rs := f.reasons(); len(rs) != 1 || rs[0] != FrameTooLarge || len(f.ex) != 1 || f.ex[0].Request.Path != "/" {
		t.Fatalf("reasons %v, exchanges %+v", rs, f.ex)
	}
}

// TestHeaderListTooLarge: an over-long block is decoded, keeping the dynamic
// table in sync, but its values are dropped.
func TestHeaderListTooLarge(t *testing.T) {
	l := &Limits{MaxHeaderListBytes: 300}
	w := newWire(t)
	w.prefaces()
	w.get(1, "/a")
	w.get(3, "/b", "x-big", strings.Repeat("v", 250)) // indexed: shifts the table
	w.get(5, "/a")
	w.get(7, "/c")
	for _, id := range []uint32{1, 3, 5, 7} {
		w.ok(id, "")
	}
	f := play(t, l, w.segs, -1, whole, true)
	if rs := f.reasons(); len(rs) != 1 || rs[0] != HeadersTooLarge {
		t.Fatalf("reasons %v", rs)
	}
	want := []Exchange{
		{StreamID: 1, Request: getMeta("/a"), Response: okMeta("")},
		{StreamID: 3, Request: RequestMeta{HeadersUnknown: true}, Response: okMeta("")},
		{StreamID: 5, Request: getMeta("/a"), Response: okMeta("")},
		{StreamID: 7, Request: getMeta("/c"), Response: okMeta("")},
	}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}

	// A single string beyond the bound cannot be decoded at all: the
	// table is unknown from then on.
	w = newWire(t)
	w.prefaces()
	w.get(1, "/a")
	w.get(3, "/b", "x-big", strings.Repeat("v", 301))
	w.get(5, "/a")
	for _, id := range []uint32{1, 3, 5} {
		w.ok(id, "")
	}
	f = play(t, l, w.segs, -1, whole, true)
	if rs := f.reasons(); len(rs) != 1 || rs[0] != HPACK {
		t.Fatalf("reasons %v", rs)
	}
	for _, e := range f.ex {
		if e.Request.HeadersUnknown != (e.StreamID != 1) {
			t.Errorf("stream %d: HeadersUnknown %v", e.StreamID, e.Request.HeadersUnknown)
		}
	}
}

func TestValueLimits(t *testing.T) {
	w := newWire(t)
	w.prefaces()
	w.get(1, "/0123456789", "traceparent", "a\xffb\xc3", "tracestate", "x\r\ny", "content-type", "héllo/wörld")
	w.ok(1, "")
	f := play(t, &Limits{MaxValueBytes: 8}, w.segs, -1, whole, true)
	if len(f.ex) != 1 || len(f.errs) != 0 {
		t.Fatalf("%d exchanges, errors %v", len(f.ex), f.errs)
	}
	for _, s := range strs(reflect.ValueOf(f.ex[0]), nil) {
		if len(s) > 8 || !utf8.ValidString(s) || strings.ContainsAny(s, "\r\n\x00") {
			t.Errorf("%q: longer than 8 bytes, invalid UTF-8 or control characters", s)
		}
	}
	r := f.ex[0].Request
	if r.Path != "/0123456" || r.TraceParent != "a\uFFFDb\uFFFD" || r.TraceState != "x\uFFFD\uFFFDy" || r.ContentType != "héllo/w" || r.Authority != "api.exam" {
		t.Errorf("got %+v", r)
	}
}

func TestCleanValue(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 10, "plain"},
		{"plain", 3, "pla"},
		{"abcdefgé", 8, "abcdefg"}, // never half a character
		{"é€😀", 9, "é€😀"},
		{"a\xffb", 10, "a\uFFFDb"},
		{"a\x00b\tc", 10, "a\uFFFDb\uFFFDc"},
		{"x", 0, ""},
	}
	for _, tt := range tests {
		if got := cleanValue(tt.in, tt.max); got != tt.want {
			t.Errorf("cleanValue(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

// TestHeaderTableSize: the client's encoder may grow its table to what the
// server allowed in SETTINGS_HEADER_TABLE_SIZE, and no further.
func TestHeaderTableSize(t *testing.T) {
	build := func(allowed uint32) []seg {
		w := newWire(t)
		w.prefaces(http2.Setting{ID: http2.SettingHeaderTableSize, Val: allowed})
		w.enc[Request].SetMaxDynamicTableSizeLimit(16384)
		w.enc[Request].SetMaxDynamicTableSize(16384)
		for i := range 4 {
			w.get(uint32(2*i+1), "/t", "x-fill", strings.Repeat("f", 3000))
			w.ok(uint32(2*i+1), "")
		}
		return w.segs
	}
	f := play(t, nil, build(16384), -1, whole, true)
	if len(f.errs) != 0 || len(f.ex) != 4 || f.ex[3].Request.Path != "/t" {
		t.Fatalf("allowed: errors %v, exchanges %+v", f.errs, f.ex)
	}
	// The server allowed 4096 only: the encoder broke the rule, and the
	// decoder says so rather than trusting a table it cannot bound.
	f = play(t, nil, build(4096), -1, whole, true)
	if rs := f.reasons(); len(rs) != 1 || rs[0] != HPACK || !f.ex[3].Request.HeadersUnknown {
		t.Fatalf("not allowed: reasons %v, exchanges %+v", rs, f.ex)
	}
}

func TestBadFrames(t *testing.T) {
	tests := map[string]func(w *wire){
		"rst stream length": func(w *wire) { w.raw(Request, http2.FrameRSTStream, 0, 1, []byte{0, 0, 0}) },
		"data on stream 0":  func(w *wire) { w.raw(Request, http2.FrameData, 0, 0, []byte("x")) },
		"ping length":       func(w *wire) { w.raw(Response, http2.FramePing, 0, 0, []byte("1234")) },
		"push from client": func(w *wire) {
			w.raw(Request, http2.FramePushPromise, http2.FlagPushPromiseEndHeaders, 1, []byte{0, 0, 0, 2})
		},
		"padding too long": func(w *wire) { w.raw(Request, http2.FrameData, http2.FlagDataPadded, 1, []byte{9, 'a'}) },
		"headers padding":  func(w *wire) { w.raw(Request, http2.FrameHeaders, http2.FlagHeadersPadded|4, 7, []byte{9, 'a'}) },
		"continuation alone": func(w *wire) {
			w.raw(Request, http2.FrameContinuation, http2.FlagContinuationEndHeaders, 1, []byte{0x82})
		},
		"interrupted block": func(w *wire) {
			w.raw(Request, http2.FrameHeaders, 0, 7, []byte{0x82})
			w.raw(Request, http2.FramePing, 0, 0, make([]byte, 8))
		},
	}
	for name, bad := range tests {
		w := newWire(t)
		w.prefaces()
		w.get(1, "/before")
		bad(w)
		w.get(3, "/after")
		w.ok(1, "")
		w.ok(3, "")
		f := play(t, nil, w.segs, -1, whole, true)
		if rs := f.reasons(); len(rs) != 1 || rs[0] != BadFrame {
			t.Errorf("%s: reasons %v", name, rs)
			continue
		}
		if len(f.ex) < 2 || f.ex[0].Request.Path != "/before" {
			t.Errorf("%s: exchanges %+v", name, f.ex)
		}
	}
}

func TestCloseIncomplete(t *testing.T) {
	w := newWire(t)
	w.prefaces()
	w.headers(Request, 1, false, ":method", "POST", ":path", "/a")
	w.data(Request, 1, false, "12")
	w.get(3, "/b")
	w.headers(Response, 3, true, ":status", "200")
	w.get(5, "/c")
	w.headers(Response, 5, false, ":status", "500")
	f := play(t, nil, w.segs, -1, whole, false)
	if len(f.ex) != 1 || f.ex[0].StreamID != 3 {
		t.Fatalf("before close: %+v", f.ex)
	}
	f.close()
	want := []Exchange{
		{StreamID: 3, Request: getMeta("/b"), Response: ResponseMeta{StatusCode: 200, GRPCStatus: -1}},
		{StreamID: 1, Request: RequestMeta{Method: "POST", Path: "/a", BodySize: 2}, Response: ResponseMeta{GRPCStatus: -1}, Incomplete: true},
		{StreamID: 5, Request: getMeta("/c"), Response: ResponseMeta{StatusCode: 500, GRPCStatus: -1}, Incomplete: true},
	}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
	// The Conn is reusable: a new connection starts with a preface.
	f.ex = nil
	f.play(w.segs, -1, whole)
	if len(f.errs) != 0 || len(f.ex) != 1 {
		t.Fatalf("reuse: errors %v, %d exchanges", f.errs, len(f.ex))
	}
}

func TestUpgraded(t *testing.T) {
	w := newWire(t)
	w.prefaces()
	w.begin()
	w.headers(Response, 1, false, ":status", "200", "content-type", "text/plain")
	w.data(Response, 1, true, "upgraded")
	w.end(Response)
	w.get(3, "/next")
	w.ok(3, "")
	req := RequestMeta{Method: "GET", Path: "/", Authority: "h2c.local", Start: 1, End: 2}
	for _, split := range []splitter{whole, bytewise} {
		f := newFeeder(t, nil)
		f.c.StartUpgraded(req)
		f.play(w.segs, -1, split)
		if len(f.errs) != 0 || len(f.ex) != 2 {
			t.Fatalf("errors %v, exchanges %+v", f.errs, f.ex)
		}
		e := f.ex[0]
		if e.StreamID != 1 || e.Request != req || e.Response.StatusCode != 200 || e.Response.BodySize != 8 || e.Incomplete {
			t.Fatalf("stream 1: %+v", e)
		}
		if f.ex[1].Request.Path != "/next" {
			t.Fatalf("stream 3: %+v", f.ex[1])
		}
	}
}
