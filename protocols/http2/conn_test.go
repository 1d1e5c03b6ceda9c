package http2

import (
	"fmt"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http2"
)

type streamCase struct {
	name  string
	segs  []seg
	want  []Exchange
	close bool
}

var tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// streamCases are built once with x/net's Framer and hpack.Encoder.
var streamCases = func() []streamCase {
	var cases []streamCase
	t := &testing.T{}

	{
		// Keep-alive requests: the second and third reuse dynamic table
		// entries of the first (authority, user-agent, path).
		w := newWire(t)
		w.prefaces()
		w.get(1, "/users/42", "traceparent", tp, "tracestate", "a=b", "authorization", "Bearer S3CRET")
		w.ok(1, `{"id":42}`)
		w.get(3, "/users/42")
		w.ok(3, `{"id":42}`)
		w.get(5, "/users/43", "cookie", "session=S3CRET")
		w.ok(5, "")
		r1 := getMeta("/users/42")
		r1.TraceParent, r1.TraceState = tp, "a=b"
		cases = append(cases, streamCase{name: "keep-alive with indexed repeats", segs: w.segs, want: []Exchange{
			{StreamID: 1, Request: r1, Response: okMeta(`{"id":42}`)},
			{StreamID: 3, Request: getMeta("/users/42"), Response: okMeta(`{"id":42}`)},
			{StreamID: 5, Request: getMeta("/users/43"), Response: okMeta("")},
		}})
	}
	{
		// Three streams interleaved, ending out of order.
		w := newWire(t)
		w.prefaces()
		post := func(id uint32, path string) {
			w.headers(Request, id, false, ":method", "POST", ":scheme", "http", ":authority", "svc:8080", ":path", path, "content-type", "text/plain")
		}
		post(1, "/one")
		post(3, "/three")
		w.get(5, "/five")
		w.data(Request, 3, false, "333")
		w.data(Request, 1, false, "1")
		w.headers(Response, 5, false, ":status", "404", "content-type", "text/html")
		w.data(Request, 3, true, "33")
		w.headers(Response, 3, false, ":status", "201")
		w.data(Response, 5, false, "nope")
		w.data(Request, 1, true, "11")
		w.headers(Response, 1, true, ":status", "204")
		w.data(Response, 3, true, "created")
		w.data(Response, 5, true, "!")
		pm := func(path string, n int64) RequestMeta {
			return RequestMeta{Method: "POST", Scheme: "http", Authority: "svc:8080", Path: path, ContentType: "text/plain", BodySize: n}
		}
		cases = append(cases, streamCase{name: "interleaved streams", segs: w.segs, want: []Exchange{
			{StreamID: 1, Request: pm("/one", 3), Response: ResponseMeta{StatusCode: 204, GRPCStatus: -1}},
			{StreamID: 3, Request: pm("/three", 5), Response: ResponseMeta{StatusCode: 201, GRPCStatus: -1, BodySize: 7}},
			{StreamID: 5, Request: getMeta("/five"), Response: ResponseMeta{StatusCode: 404, ContentType: "text/html", GRPCStatus: -1, BodySize: 5}},
		}})
	}
	{
		// gRPC: headers, length-prefixed messages, trailers; then a
		// Trailers-Only error; padding, priority and CONTINUATION.
		w := newWire(t)
		w.prefaces()
		grpcReq := func(id uint32, method string) {
			w.begin()
			w.headersSplit(Request, id, false, 10, ":method", "POST", ":scheme", "http", ":authority", "greeter:50051",
				":path", method, "content-type", "application/grpc", "te", "trailers", "user-agent", "grpc-go/1.83.2",
				"grpc-timeout", "999m", "traceparent", tp)
			w.dataPadded(Request, id, true, "\x00\x00\x00\x00\x05hello", 3)
			w.end(Request)
		}
		grpcReq(1, "/helloworld.Greeter/SayHello")
		w.begin()
		w.headers(Response, 1, false, ":status", "200", "content-type", "application/grpc")
		w.data(Response, 1, false, "\x00\x00\x00\x00\x03hi!")
		w.headers(Response, 1, true, "grpc-status", "0", "grpc-message", "")
		w.end(Response)
		grpcReq(3, "/helloworld.Greeter/Missing")
		w.headersSplit(Response, 3, true, 4, ":status", "200", "content-type", "application/grpc", "grpc-status", "12", "grpc-message", "unknown%20method")
		gm := func(path string) RequestMeta {
			return RequestMeta{Method: "POST", Scheme: "http", Authority: "greeter:50051", Path: path, UserAgent: "grpc-go/1.83.2",
				TraceParent: tp, ContentType: "application/grpc", BodySize: 10}
		}
		cases = append(cases, streamCase{name: "grpc", segs: w.segs, want: []Exchange{
			{StreamID: 1, Request: gm("/helloworld.Greeter/SayHello"),
				Response: ResponseMeta{StatusCode: 200, ContentType: "application/grpc", GRPCStatus: 0, BodySize: 8}},
			{StreamID: 3, Request: gm("/helloworld.Greeter/Missing"),
				Response: ResponseMeta{StatusCode: 200, ContentType: "application/grpc", GRPCStatus: 12, GRPCMessage: "unknown%20method"}},
		}})
	}
	{
		// Interim 100 Continue, request trailers, pings, window updates,
		// an unknown frame type, a server push (ignored), and a reset.
		w := newWire(t)
		w.prefaces()
		w.headers(Request, 1, false, ":method", "PUT", ":scheme", "https", ":authority", "up", ":path", "/f", "expect", "100-continue")
		w.headers(Response, 1, false, ":status", "100")
		w.raw(Request, 0xbb, 0xff, 1, []byte("unknown frames are ignored"))
		w.check(w.fr[Request].WritePing(false, [8]byte{1}))
		w.data(Request, 1, false, "abcd")
		w.headers(Request, 1, true, "x-checksum", "1234")
		w.check(w.fr[Response].WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, EndHeaders: true,
			BlockFragment: w.block(Response, ":method", "GET", ":scheme", "https", ":authority", "up", ":path", "/pushed.css")}))
		w.flush(Response)
		w.headers(Response, 2, false, ":status", "200", "content-type", "text/css")
		w.check(w.fr[Response].WriteWindowUpdate(1, 4))
		w.headers(Response, 1, false, ":status", "200", "content-type", "text/plain")
		w.data(Response, 2, true, "body{}")
		w.data(Response, 1, true, "done")
		w.get(3, "/slow")
		w.rst(Request, 3, http2.ErrCodeCancel)
		w.get(5, "/early")
		w.headers(Response, 5, true, ":status", "503")
		w.rst(Response, 5, http2.ErrCodeNo)
		cases = append(cases, streamCase{name: "interim, trailers, push, reset", segs: w.segs, want: []Exchange{
			{StreamID: 1, Request: RequestMeta{Method: "PUT", Scheme: "https", Authority: "up", Path: "/f", BodySize: 4},
				Response: ResponseMeta{StatusCode: 200, ContentType: "text/plain", GRPCStatus: -1, BodySize: 4}},
			{StreamID: 3, Request: getMeta("/slow"), Response: ResponseMeta{GRPCStatus: -1}, Incomplete: true, ResetCode: 8},
			{StreamID: 5, Request: getMeta("/early"), Response: ResponseMeta{StatusCode: 503, GRPCStatus: -1}},
		}})
	}
	{
		// GOAWAY refuses stream 5; Close flushes stream 3, whose response
		// began but did not end.
		w := newWire(t)
		w.prefaces()
		w.get(1, "/a")
		w.get(3, "/b")
		w.get(5, "/c")
		w.ok(1, "x")
		w.check(w.fr[Response].WriteGoAway(3, http2.ErrCodeNo, []byte("bye")))
		w.flush(Response)
		w.headers(Response, 3, false, ":status", "200")
		cases = append(cases, streamCase{name: "goaway and close", close: true, segs: w.segs, want: []Exchange{
			{StreamID: 1, Request: getMeta("/a"), Response: okMeta("x")},
			{StreamID: 5, Request: getMeta("/c"), Response: ResponseMeta{GRPCStatus: -1}, Incomplete: true},
			{StreamID: 3, Request: getMeta("/b"), Response: ResponseMeta{StatusCode: 200, GRPCStatus: -1}, Incomplete: true},
		}})
	}
	return cases
}()

// TestStreams checks each transcript fed whole, split in two at every byte
// of every segment, one byte per chunk, and in random chunkings: all must
// parse identically.
func TestStreams(t *testing.T) {
	for _, tc := range streamCases {
		t.Run(tc.name, func(t *testing.T) {
			check := func(how string, f *feeder) {
				t.Helper()
				if len(f.errs) > 0 {
					t.Fatalf("%s: unexpected errors %v", how, f.errs)
				}
				if d := diff(unstamped(f.ex), tc.want); d != "" {
					t.Fatalf("%s:\n%s", how, d)
				}
			}
			check("whole", play(t, nil, tc.segs, -1, whole, tc.close))
			check("bytewise", play(t, nil, tc.segs, -1, bytewise, tc.close))
			for i, s := range tc.segs {
				for p := 1; p < len(s.data); p++ {
					check(fmt.Sprintf("segment %d split at %d", i, p), play(t, nil, tc.segs, i, at(p), tc.close))
				}
			}
			rng := rand.New(rand.NewPCG(7, uint64(len(tc.segs))))
			for i := range 50 {
				random := func(data string) (out []string) {
					for len(data) > 0 {
						n := min(len(data), 1+rng.IntN(40))
						out, data = append(out, data[:n]), data[n:]
					}
					return out
				}
				check(fmt.Sprintf("random chunking %d", i), play(t, nil, tc.segs, -1, random, tc.close))
			}
			// Each direction's bytes in one write: a reader that
			// coalesced everything.
			var coalesced []seg
			for _, dir := range []Direction{Request, Response} {
				var b strings.Builder
				for _, s := range tc.segs {
					if s.dir == dir {
						b.WriteString(s.data)
					}
				}
				coalesced = append(coalesced, seg{dir: dir, data: b.String()})
			}
			f := play(t, nil, coalesced, -1, whole, true)
			if len(f.errs) > 0 || len(f.ex) != len(tc.want) {
				t.Fatalf("coalesced: errors %v, %d exchanges", f.errs, len(f.ex))
			}
		})
	}
}

func TestSecretsNeverRetained(t *testing.T) {
	for _, tc := range streamCases {
		f := play(t, nil, tc.segs, -1, whole, true)
		for _, s := range strs(reflect.ValueOf(f.ex), nil) {
			if strings.Contains(s, "S3CRET") {
				t.Errorf("%s: retained string %q holds a secret", tc.name, s)
			}
		}
	}
}

func TestStamps(t *testing.T) {
	w := newWire(t)
	w.prefaces()
	w.headers(Request, 1, false, ":method", "POST", ":path", "/")
	w.data(Request, 1, true, "body")
	w.headers(Response, 1, false, ":status", "200")
	w.data(Response, 1, false, "a")
	w.data(Response, 1, true, "b")
	f := newFeeder(t, nil)
	var stamps [][2]uint64
	for _, s := range w.segs {
		st, en := f.chunk(s.dir, []byte(s.data), 0)
		stamps = append(stamps, [2]uint64{st, en})
	}
	if len(f.ex) != 1 {
		t.Fatalf("%d exchanges", len(f.ex))
	}
	e := f.ex[0]
	n := len(stamps)
	got := [4]uint64{e.Request.Start, e.Request.End, e.Response.Start, e.Response.End}
	want := [4]uint64{stamps[n-5][0], stamps[n-4][1], stamps[n-3][0], stamps[n-1][1]}
	if got != want {
		t.Fatalf("stamps %v, want %v", got, want)
	}

	// A frame header split across chunks starts at the first one.
	f = newFeeder(t, nil).play(w.segs[:3], -1, whole)
	hs := w.segs[3].data
	s1, _ := f.chunk(Request, []byte(hs[:4]), 0)
	f.chunk(Request, []byte(hs[4:]), 0)
	f.play(w.segs[4:], -1, whole)
	if len(f.ex) != 1 || f.ex[0].Request.Start != s1 {
		t.Fatalf("request start %+v, want %d", f.ex, s1)
	}
}

func TestIsGRPC(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/grpc": true, "application/grpc+proto": true, "application/grpc;charset=utf-8": true,
		"application/grpc-web": false, "application/json": false, "": false, "application/grpcx": false,
	} {
		x := Exchange{Request: RequestMeta{ContentType: ct}}
		if x.IsGRPC() != want {
			t.Errorf("IsGRPC(%q) = %v", ct, !want)
		}
	}
}

func TestLooksLikeHTTP2(t *testing.T) {
	w := newWire(t)
	w.prefaces()
	tests := map[string]bool{
		w.segs[0].data:                             true,
		w.segs[1].data:                             true,  // server SETTINGS
		"\x00\x00\x00\x04\x00\x00\x00\x00\x00":     true,  // empty SETTINGS
		"\x00\x00\x00\x04\x01\x00\x00\x00\x00":     false, // ACK
		"\x00\x00\x05\x04\x00\x00\x00\x00\x00":     false, // not a multiple of 6
		"\x00\x00\x06\x04\x00\x00\x00\x00\x01":     false, // stream 1
		"PRI * HTTP/2.0\r\n":                       false,
		"GET / HTTP/1.1\r\nHost: h\r\n\r\n":        false,
		"HTTP/1.1 200 OK\r\n\r\n":                  false,
		"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03": false,
		"": false,
	}
	for in, want := range tests {
		if got := LooksLikeHTTP2([]byte(in)); got != want {
			t.Errorf("LooksLikeHTTP2(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestReasonNames(t *testing.T) {
	seen := map[string]bool{}
	r := Reason(1)
	for ; r.String() != "unknown"; r++ {
		s := r.String()
		if seen[s] || strings.ToLower(s) != s || strings.ContainsAny(s, " -") {
			t.Errorf("reason %d: %q is not a fresh snake_case name", r, s)
		}
		seen[s] = true
	}
	if int(r) != len(reasonNames) || r-1 != LostSync || Reason(0).String() != "unknown" {
		t.Fatalf("reasons end at %d, want contiguous 1..%d", r, LostSync)
	}
	if (&ParseError{Dir: Response, Reason: HPACK}).Error() != "http2: response: hpack" {
		t.Fatal("ParseError text changed")
	}
}

// TestIndexedRepeats makes sure the keep-alive fixture exercises the
// dynamic table: the repeated request is a few index bytes, which decode
// right only if the first block was decoded into the table.
func TestIndexedRepeats(t *testing.T) {
	segs := streamCases[0].segs
	first, second := segs[3], segs[5]
	if first.dir != Request || second.dir != Request || len(second.data) >= len(first.data)/3 {
		t.Fatalf("request blocks of %d and %d bytes: the repeat is not indexed", len(first.data), len(second.data))
	}
	f := newFeeder(t, nil).play(append(append([]seg(nil), segs[:3]...), segs[5:]...), -1, whole)
	for _, e := range f.ex {
		if e.StreamID == 3 && !e.Request.HeadersUnknown && e.Request.Path != "" {
			t.Fatalf("stream 3 decoded without the first block: %+v", e.Request)
		}
	}
}

// A joined connection is told by its frame headers: a HEADERS frame on a
// client stream followed by DATA is frames, text and TLS records are not.
func TestLooksLikeFrames(t *testing.T) {
	headers := "\x00\x00\x03\x01\x04\x00\x00\x00\x05abc" // HEADERS, END_HEADERS, stream 5
	data := "\x00\x00\x02\x00\x01\x00\x00\x00\x05hi"     // DATA, END_STREAM, stream 5
	for _, tc := range []struct {
		dir  Direction
		in   string
		want bool
	}{
		{Request, headers + data, true},
		{Request, headers, true},
		{Request, "\x00\x00\x03\x01\x04\x00\x00\x00\x06abc", false},          // a client HEADERS on an even stream
		{Request, headers + "\x00\x00\x02\x0b\x00\x00\x00\x00\x05hi", false}, // then an unknown type
		{Response, "\x00\x00\x08\x06\x00\x00\x00\x00\x00pingping", true},     // PING
		{Response, "\x00\x00\x08\x06\x00\x00\x00\x00\x01pingping", false},    // PING on a stream
		{Request, "GET / HTTP/1.1\r\n\r\n", false},
		{Request, "\x17\x03\x03\x00\x20", false},
		{Request, "", false},
	} {
		if got := LooksLikeFrames(tc.dir, []byte(tc.in)); got != tc.want {
			t.Errorf("LooksLikeFrames(%v, %q) = %v, want %v", tc.dir, tc.in, got, tc.want)
		}
	}
}
