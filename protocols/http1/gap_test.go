package http1

import (
	"strings"
	"testing"
)

func TestGapInContentLengthBodyKeepsSync(t *testing.T) {
	const head = "HTTP/1.1 200 OK\r\nContent-Length: 10000\r\n\r\n"
	f := newFeeder(t, nil)
	f.chunk(Request, []byte("GET /big HTTP/1.1\r\n\r\n"), 0)
	// Capture kept the head and 100 body bytes of a 10042-byte write.
	f.chunk(Response, []byte(head+strings.Repeat("x", 100)), 9900)
	f.chunk(Request, []byte("GET /next HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"), 0)
	want := []Exchange{
		{Request: req("GET", "/big", ""), Response: respCL(200, 10000)},
		{Request: req("GET", "/next", ""), Response: respCL(200, 2)},
	}
	if len(f.errs) != 0 {
		t.Fatalf("errors: %v", f.errs)
	}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
}

func TestSendfileBody(t *testing.T) {
	f := newFeeder(t, nil)
	f.chunk(Request, []byte("GET /file HTTP/1.1\r\n\r\nGET /file2 HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n"), 0)
	_, end := f.chunk(Response, nil, 1<<19)
	if len(f.ex) != 0 {
		t.Fatal("exchange emitted before the body ended")
	}
	_, end = f.chunk(Response, nil, 1<<19)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100000\r\n"), 0)
	f.chunk(Response, nil, 1<<20)
	f.chunk(Response, []byte("\r\n0\r\n\r\n"), 0)
	if len(f.errs) != 0 {
		t.Fatalf("errors: %v", f.errs)
	}
	chunked := resp(200)
	chunked.Chunked, chunked.BodySize = true, 1<<20
	want := []Exchange{
		{Request: req("GET", "/file", ""), Response: respCL(200, 1<<20)},
		{Request: req("GET", "/file2", ""), Response: chunked},
	}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
	if f.ex[0].Response.End != end {
		t.Errorf("response End %d, want the stamp of the last sendfile chunk %d", f.ex[0].Response.End, end)
	}
}

func TestGapInChunkData(t *testing.T) {
	f := newFeeder(t, nil)
	f.chunk(Request, []byte("POST /up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1000\r\n"+strings.Repeat("d", 96)), 4096-96)
	f.chunk(Request, []byte("\r\n10\r\n0123456789abcdef\r\n0\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.1 204 No Content\r\n\r\n"), 0)
	if len(f.errs) != 0 {
		t.Fatalf("errors: %v", f.errs)
	}
	r := req("POST", "/up", "")
	r.Chunked, r.BodySize = true, 4096+16
	if d := diff(unstamped(f.ex), []Exchange{{Request: r, Response: resp(204)}}); d != "" {
		t.Fatal(d)
	}
}

func TestGapSpillsIntoNextMessage(t *testing.T) {
	f := newFeeder(t, nil)
	f.chunk(Request, []byte("GET /1 HTTP/1.1\r\n\r\nGET /2 HTTP/1.1\r\n\r\n"), 0)
	// One write carried response 1 (5-byte body) and response 2 entirely,
	// but capture stopped inside the first body.
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab"), 3+40)
	if rs := f.reasons(); len(rs) != 1 || rs[0] != LostSync {
		t.Fatalf("reasons %v, want [lost_sync]", rs)
	}
	// Discarded: does not start a message.
	f.chunk(Response, []byte("tail of response 2"), 0)
	f.chunk(Request, []byte("GET /3 HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz"), 0)
	f.close()
	want := []Exchange{
		{Request: req("GET", "/1", ""), Response: respCL(200, 5)},
		// Response 2 fell in the gap: /2 is stale, /3 gets the next response.
		{Request: req("GET", "/2", ""), Incomplete: true},
		{Request: req("GET", "/3", ""), Response: respCL(200, 1)},
	}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
}

func TestTruncatedRequestHead(t *testing.T) {
	head := "GET /search?q=" + strings.Repeat("a", 100) + " HTTP/1.1\r\nHost: example.com\r\nUser-Agent: ua\r\nCookie: secret=1"
	f := newFeeder(t, nil)
	f.chunk(Request, []byte(head), 5000) // the head's end and the body are beyond capture
	if rs := f.reasons(); len(rs) != 1 || rs[0] != LostSync {
		t.Fatalf("reasons %v, want [lost_sync]", rs)
	}
	f.chunk(Request, []byte("more uncaptured-looking bytes"), 0) // discarded while resyncing
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0)
	f.chunk(Request, []byte("GET /next HTTP/1.1\r\n\r\n"), 0) // resync
	f.chunk(Response, []byte("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"), 0)
	r := req("GET", "/search?q="+strings.Repeat("a", 100), "example.com")
	r.UserAgent, r.HeadTruncated = "ua", true
	want := []Exchange{
		{Request: r, Response: respCL(200, 0)},
		{Request: req("GET", "/next", ""), Response: respCL(404, 0)},
	}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
	if len(f.errs) != 1 {
		t.Errorf("errors %v, want only the lost_sync", f.errs)
	}
}

func TestTruncatedStartLine(t *testing.T) {
	f := newFeeder(t, nil)
	f.chunk(Request, []byte("GET /"+strings.Repeat("p", 4091)), 3000)
	f.chunk(Response, []byte("HTTP/1.1 414 URI Too Long\r\nContent-Length: 0\r\n\r\n"), 0)
	want := []Exchange{{
		Request:  RequestMeta{Method: "GET", Target: "/" + strings.Repeat("p", DefaultMaxValueBytes-1), ContentLength: -1, HeadTruncated: true},
		Response: respCL(414, 0),
	}}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}

	// Too little of the line to know the method: nothing to keep.
	f = newFeeder(t, nil)
	f.chunk(Request, []byte("GE"), 100)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0)
	if len(f.ex) != 0 {
		t.Fatalf("exchanges %+v, want none", f.ex)
	}
	if rs := f.reasons(); len(rs) != 2 || rs[0] != LostSync || rs[1] != UnmatchedResponse {
		t.Fatalf("reasons %v, want [lost_sync unmatched_response]", rs)
	}
}

func TestTruncatedResponseHead(t *testing.T) {
	f := newFeeder(t, nil)
	f.chunk(Request, []byte("GET /1 HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 7\r\nX-Long: "), 9000)
	f.chunk(Response, []byte("continuation of the value"), 0)
	f.chunk(Request, []byte("GET /2 HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0)
	r := resp(503)
	r.ContentLength, r.HeadTruncated = 7, true
	want := []Exchange{
		{Request: req("GET", "/1", ""), Response: r},
		{Request: req("GET", "/2", ""), Response: respCL(200, 0)},
	}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
	if rs := f.reasons(); len(rs) != 1 || rs[0] != LostSync {
		t.Fatalf("reasons %v, want [lost_sync]", rs)
	}

	// A truncated interim response answers nothing.
	f = newFeeder(t, nil)
	f.chunk(Request, []byte("GET /1 HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.1 103 Early Hints\r\nLink: <"), 9000)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0)
	if d := diff(unstamped(f.ex), []Exchange{{Request: req("GET", "/1", ""), Response: respCL(200, 0)}}); d != "" {
		t.Fatal(d)
	}
}

func TestGapInChunkFraming(t *testing.T) {
	for _, tail := range []string{"1", "5\r\nhello", "5\r\nhello\r", "0\r\nTrailer: x"} {
		f := newFeeder(t, nil)
		f.chunk(Request, []byte("GET / HTTP/1.1\r\n\r\n"), 0)
		f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+tail), 100)
		if rs := f.reasons(); len(rs) != 1 || rs[0] != LostSync {
			t.Fatalf("%q: reasons %v, want [lost_sync]", tail, rs)
		}
		if len(f.ex) != 1 || f.ex[0].Incomplete || f.ex[0].Response.StatusCode != 200 {
			t.Fatalf("%q: exchanges %+v, want the response emitted", tail, f.ex)
		}
		trailer := strings.HasPrefix(tail, "0")
		if got := f.ex[0].Response.BodyTruncated; got == trailer {
			t.Errorf("%q: BodyTruncated = %v, want %v", tail, got, !trailer)
		}
	}
}

func TestGapAtMessageStart(t *testing.T) {
	f := newFeeder(t, nil)
	f.chunk(Request, nil, 300) // a whole request went uncaptured
	if rs := f.reasons(); len(rs) != 1 || rs[0] != LostSync {
		t.Fatalf("reasons %v, want [lost_sync]", rs)
	}
	f.chunk(Request, []byte("GET /seen HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0)
	if d := diff(unstamped(f.ex), []Exchange{{Request: req("GET", "/seen", ""), Response: respCL(200, 0)}}); d != "" {
		t.Fatal(d)
	}
}

func TestGapInCloseDelimitedBody(t *testing.T) {
	f := newFeeder(t, nil)
	f.chunk(Request, []byte("GET / HTTP/1.0\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.0 200 OK\r\n\r\nabc"), 997)
	f.chunk(Response, nil, 1000)
	f.close()
	if len(f.errs) != 0 || len(f.ex) != 1 || f.ex[0].Response.BodySize != 2000 || f.ex[0].Incomplete {
		t.Fatalf("errors %v exchanges %+v, want one 2000-byte body", f.errs, f.ex)
	}
}

func TestSizeBelowData(t *testing.T) {
	// A Size smaller than the data is a caller bug; it must not be read as
	// a negative gap.
	c := NewConn(nil)
	out, err := c.Feed(Request, Chunk{Data: []byte("GET / HTTP/1.1\r\n\r\n"), Size: 3}, nil)
	out, err2 := c.Feed(Response, Chunk{Data: []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), Size: -1}, out)
	if err != nil || err2 != nil || len(out) != 1 {
		t.Fatalf("got %+v, %v, %v", out, err, err2)
	}
}
