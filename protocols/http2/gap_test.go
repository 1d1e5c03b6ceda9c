package http2

import (
	"fmt"
	"strings"
	"testing"
)

// multi is a recording of several streams on one connection, the base of
// the gap and join tests: request headers repeat, so the later blocks are
// mostly dynamic-table indexes.
func multi(t testing.TB) (*wire, []Exchange) {
	w := newWire(t)
	w.prefaces()
	var want []Exchange
	for i := range 6 {
		id := uint32(2*i + 1)
		path := fmt.Sprintf("/items/%d", i%3)
		w.get(id, path, "traceparent", tp)
		body := strings.Repeat("b", 10*i)
		w.ok(id, body)
		r := getMeta(path)
		r.TraceParent = tp
		want = append(want, Exchange{StreamID: id, Request: r, Response: okMeta(body)})
	}
	return w, want
}

func TestGapInData(t *testing.T) {
	w := newWire(t)
	w.prefaces()
	w.headers(Request, 1, false, ":method", "POST", ":path", "/up")
	big := strings.Repeat("d", 5000)
	w.data(Request, 1, false, big)
	w.dataPadded(Request, 1, true, "xyz", 10)
	w.get(3, "/next")
	w.headers(Response, 1, true, ":status", "200")
	w.ok(3, "ok")

	segs := w.segs
	const hdr = 9
	// Only the first 100 bytes of the 5000-byte DATA frame are captured, and
	// only the frame header of the padded one (its pad length is lost).
	segs[4].gap, segs[4].data = len(segs[4].data)-100, segs[4].data[:100]
	segs[5].gap, segs[5].data = len(segs[5].data)-hdr, segs[5].data[:hdr]
	f := play(t, nil, segs, -1, whole, false)
	if len(f.errs) != 0 {
		t.Fatalf("errors %v", f.errs)
	}
	want := []Exchange{
		{StreamID: 1, Request: RequestMeta{Method: "POST", Path: "/up", BodySize: 5000 + 3 + 10}, Response: ResponseMeta{StatusCode: 200, GRPCStatus: -1}},
		{StreamID: 3, Request: getMeta("/next"), Response: okMeta("ok")},
	}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}

	// A whole sendfile-like chunk with nothing captured.
	segs[4].gap, segs[4].data = 5000, segs[4].data[:hdr]
	f = play(t, nil, segs, -1, whole, false)
	if len(f.errs) != 0 || len(f.ex) != 2 || f.ex[0].Request.BodySize != 5013 {
		t.Fatalf("errors %v, exchanges %+v", f.errs, f.ex)
	}
}

// TestGapInHeaders: a lost piece of a header block makes that block and
// every later block of the same direction HeadersUnknown, never wrong; the
// other direction is unaffected.
func TestGapInHeaders(t *testing.T) {
	w, want := multi(t)
	segs := w.segs
	// The request HEADERS of stream 5 (third request) loses its last 3 bytes.
	i := 3 + 2*2
	if segs[i].dir != Request {
		t.Fatal("fixture moved")
	}
	segs[i].data, segs[i].gap = segs[i].data[:len(segs[i].data)-3], 3
	f := play(t, nil, segs, -1, whole, true)
	if rs := f.reasons(); len(rs) != 1 || rs[0] != HPACK {
		t.Fatalf("reasons %v, want [hpack]", rs)
	}
	for k := range want {
		if k >= 2 {
			want[k].Request = RequestMeta{HeadersUnknown: true}
		}
	}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
	if st := f.c.Stats(); st.UnknownBlocks != 0 {
		t.Fatalf("Stats not reset by Close: %+v", st)
	}
}

// TestTableReset: after HPACK is lost in a direction whose framing is
// intact, a block that starts with a dynamic table size update to 0 makes
// the table known again.
func TestTableReset(t *testing.T) {
	w, _ := multi(t)
	segs := w.segs
	segs[5].data, segs[5].gap = segs[5].data[:len(segs[5].data)-3], 3 // stream 3's request
	w.segs = segs
	w.enc[Request].SetMaxDynamicTableSize(0)
	w.enc[Request].SetMaxDynamicTableSize(4096)
	w.get(13, "/after-reset", "traceparent", tp)
	w.get(15, "/after-reset", "traceparent", tp) // indexed from the new table
	w.ok(13, "")
	w.ok(15, "")
	f := play(t, nil, w.segs, -1, whole, true)
	if rs := f.reasons(); len(rs) != 1 || rs[0] != HPACK {
		t.Fatalf("reasons %v, want [hpack]", rs)
	}
	if len(f.ex) != 8 {
		t.Fatalf("%d exchanges", len(f.ex))
	}
	for _, e := range f.ex {
		known := e.StreamID == 1 || e.StreamID >= 13
		if e.Request.HeadersUnknown == known {
			t.Errorf("stream %d: HeadersUnknown %v", e.StreamID, e.Request.HeadersUnknown)
		}
		if e.StreamID >= 13 && e.Request.Path != "/after-reset" {
			t.Errorf("stream %d: path %q", e.StreamID, e.Request.Path)
		}
	}

	// The same block after a resync proves nothing: the boundary found
	// might be inside a DATA payload.
	f = newFeeder(t, nil)
	f.c.JoinMidStream()
	f.play(w.segs, -1, whole)
	for _, e := range f.ex {
		if !e.Request.HeadersUnknown {
			t.Errorf("joined: stream %d decoded", e.StreamID)
		}
	}
}

func TestGapAcrossFrameHeader(t *testing.T) {
	w, want := multi(t)
	segs := w.segs
	// Stream 3's response loses its DATA frame header and everything after:
	// boundaries are lost until the next write.
	i := 6
	if segs[i].dir != Response {
		t.Fatal("fixture moved")
	}
	k := strings.Index(segs[i].data, "bbbbbbbbbb") - 9
	segs[i].data, segs[i].gap = segs[i].data[:k+4], len(segs[i].data)-k-4
	f := play(t, nil, segs, -1, whole, true)
	if rs := f.reasons(); len(rs) != 1 || rs[0] != LostSync {
		t.Fatalf("reasons %v, want [lost_sync]", rs)
	}
	// Stream 3 misses its END_STREAM (Incomplete at Close), and every
	// response block after the resync is unknown.
	want[1].Response.BodySize = 0
	want[1].Incomplete = true
	for k := 2; k < len(want); k++ {
		want[k].Response = ResponseMeta{HeadersUnknown: true, GRPCStatus: -1, BodySize: want[k].Response.BodySize}
	}
	want = append(want[:1], append(want[2:], want[1])...)
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
}

// TestJoinMidStream joins the recordings at every byte of every segment:
// nothing may crash, no stream may appear that was not in the recording,
// and no exchange may carry headers (they are all unknown after a join).
func TestJoinMidStream(t *testing.T) {
	w, want := multi(t)
	cases := append([]streamCase{{name: "multi", segs: w.segs, want: want}}, streamCases...)
	for _, tc := range cases {
		byID := map[uint32]Exchange{}
		for _, e := range tc.want {
			byID[e.StreamID] = e
		}
		seen := 0
		for i, s := range tc.segs {
			for p := 0; p < len(s.data); p++ {
				f := newFeeder(t, nil)
				f.c.JoinMidStream()
				f.chunk(s.dir, []byte(s.data[p:]), 0)
				f.play(tc.segs[i+1:], -1, whole)
				f.close()
				for _, e := range f.ex {
					ref, ok := byID[e.StreamID]
					if !ok {
						t.Fatalf("%s: joined at %d/%d: stream %d is not in the recording", tc.name, i, p, e.StreamID)
					}
					if !e.Request.HeadersUnknown || e.Request.Method != "" || e.Response.StatusCode != 0 && !ref.Incomplete && e.Response.StatusCode != ref.Response.StatusCode {
						t.Fatalf("%s: joined at %d/%d: headers in %+v", tc.name, i, p, e)
					}
					// Bodies can be short: request trailers after the
					// join point look like a new request.
					if e.Request.BodySize > ref.Request.BodySize || e.Response.BodySize > ref.Response.BodySize {
						t.Fatalf("%s: joined at %d/%d: body sizes %+v, want %+v", tc.name, i, p, e, ref)
					}
					seen++
				}
				for _, err := range f.errs {
					if pe := err.(*ParseError); pe.Reason == BadPreface {
						t.Fatalf("%s: bad preface after a join", tc.name)
					}
				}
			}
		}
		if seen == 0 {
			t.Errorf("%s: no exchange from any join point", tc.name)
		}
	}
}
