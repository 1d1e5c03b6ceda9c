package http1

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

const tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

// streamCase is a valid connection transcript and the exchanges it yields.
type streamCase struct {
	name  string
	segs  []seg
	close bool // call Close after the last segment
	want  []Exchange
}

var streamCases = []streamCase{
	{
		name: "keep-alive",
		segs: []seg{
			{dir: Request, data: "GET /a HTTP/1.1\r\nHost: example.com\r\nUser-Agent: curl/8.0\r\nAccept: */*\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"},
			{dir: Request, data: "POST /b?x=1 HTTP/1.1\r\nHost: example.com\r\nContent-Length: 3\r\nTraceparent: " + tp + "\r\ntracestate: congo=t61rcWkgMzE\r\n\r\nabc"},
			{dir: Response, data: "HTTP/1.1 201 Created\r\ncontent-length: 0\r\n\r\n"},
		},
		want: []Exchange{
			{
				Request:  func() RequestMeta { r := req("GET", "/a", "example.com"); r.UserAgent = "curl/8.0"; return r }(),
				Response: respCL(200, 5),
			},
			{
				Request: func() RequestMeta {
					r := withCL(req("POST", "/b?x=1", "example.com"), 3)
					r.TraceParent, r.TraceState = tp, "congo=t61rcWkgMzE"
					return r
				}(),
				Response: respCL(201, 0),
			},
		},
	},
	{
		name: "pipelined",
		segs: []seg{
			{dir: Request, data: "GET /1 HTTP/1.1\r\nHost: h\r\n\r\n" +
				"POST /2 HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nbody" +
				"PUT /3 HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok" +
				"HTTP/1.1 404 Not Found\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nnope\r\n0\r\n\r\n" +
				"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n"},
		},
		want: []Exchange{
			{Request: req("GET", "/1", "h"), Response: respCL(200, 2)},
			{
				Request:  withCL(req("POST", "/2", "h"), 4),
				Response: func() ResponseMeta { r := resp(404); r.Chunked, r.BodySize = true, 4; return r }(),
			},
			{
				Request:  func() RequestMeta { r := req("PUT", "/3", "h"); r.Chunked, r.BodySize = true, 3; return r }(),
				Response: respCL(500, 0),
			},
		},
	},
	{
		name: "chunked extensions and trailers",
		segs: []seg{
			{dir: Request, data: "GET /c HTTP/1.1\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n" +
				"5;name=value\r\nhello\r\nA ; ext ; q=\"x y\"\r\n0123456789\r\n000\r\nExpires: never\r\nX-Trailer: 1\r\n\r\n"},
			{dir: Request, data: "GET /d HTTP/1.1\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nz"},
		},
		want: []Exchange{
			{
				Request:  req("GET", "/c", ""),
				Response: func() ResponseMeta { r := resp(200); r.Chunked, r.BodySize = true, 15; return r }(),
			},
			{Request: req("GET", "/d", ""), Response: respCL(200, 1)},
		},
	},
	{
		name: "head response has no body",
		segs: []seg{
			{dir: Request, data: "HEAD /big HTTP/1.1\r\nHost: h\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n"},
			{dir: Request, data: "GET /big HTTP/1.1\r\nHost: h\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"},
		},
		want: []Exchange{
			{Request: req("HEAD", "/big", "h"), Response: func() ResponseMeta { r := resp(200); r.ContentLength = 1234; return r }()},
			{Request: req("GET", "/big", "h"), Response: respCL(200, 2)},
		},
	},
	{
		name: "interim responses",
		segs: []seg{
			{dir: Request, data: "POST /up HTTP/1.1\r\nHost: h\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 100 Continue\r\n\r\n"},
			{dir: Request, data: "data"},
			{dir: Response, data: "HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		},
		want: []Exchange{{Request: withCL(req("POST", "/up", "h"), 4), Response: respCL(200, 0)}},
	},
	{
		name: "204 and 304 have no body",
		segs: []seg{
			{dir: Request, data: "DELETE /x HTTP/1.1\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 204 No Content\r\n\r\n"},
			{dir: Request, data: "GET /x HTTP/1.1\r\nIf-None-Match: \"e\"\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n"},
			{dir: Request, data: "GET /y HTTP/1.1\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx"},
		},
		want: []Exchange{
			{Request: req("DELETE", "/x", ""), Response: resp(204)},
			{Request: req("GET", "/x", ""), Response: func() ResponseMeta { r := resp(304); r.ContentLength = 100; return r }()},
			{Request: req("GET", "/y", ""), Response: respCL(200, 1)},
		},
	},
	{
		name: "http/1.0 body until close",
		segs: []seg{
			{dir: Request, data: "GET / HTTP/1.0\r\n\r\n"},
			{dir: Response, data: "HTTP/1.0 200 OK\r\nServer: old\r\n\r\nbody bytes "},
			{dir: Response, data: "until close"},
		},
		close: true,
		want: []Exchange{{
			Request:  func() RequestMeta { r := req("GET", "/", ""); r.Proto = "1.0"; return r }(),
			Response: ResponseMeta{Proto: "1.0", StatusCode: 200, ContentLength: -1, BodySize: 22, Close: true},
		}},
	},
	{
		name: "http/1.0 keep-alive",
		segs: []seg{
			{dir: Request, data: "GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"},
			{dir: Response, data: "HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 2\r\n\r\nhi"},
			{dir: Request, data: "GET /2 HTTP/1.0\r\n\r\n"},
			{dir: Response, data: "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi"},
		},
		want: []Exchange{
			{
				Request:  func() RequestMeta { r := req("GET", "/1", ""); r.Proto = "1.0"; return r }(),
				Response: ResponseMeta{Proto: "1.0", StatusCode: 200, ContentLength: 2, BodySize: 2},
			},
			{
				Request:  func() RequestMeta { r := req("GET", "/2", ""); r.Proto = "1.0"; return r }(),
				Response: ResponseMeta{Proto: "1.0", StatusCode: 200, ContentLength: 2, BodySize: 2, Close: true},
			},
		},
	},
	{
		name: "connection close",
		segs: []seg{
			{dir: Request, data: "GET /1 HTTP/1.1\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nConnection: keep-alive, close\r\nContent-Length: 0\r\n\r\n"},
			{dir: Request, data: "GET /2 HTTP/1.1\r\nConnection: close\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		},
		want: []Exchange{
			{Request: req("GET", "/1", ""), Response: func() ResponseMeta { r := respCL(200, 0); r.Close = true; return r }()},
			{Request: req("GET", "/2", ""), Response: func() ResponseMeta { r := respCL(200, 0); r.Close = true; return r }()},
		},
	},
	{
		name: "non-chunked coding runs until close",
		segs: []seg{
			{dir: Request, data: "GET /z HTTP/1.1\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nContent-Length: 3\r\n\r\n\x1f\x8b\x08\x00\x00\x00"},
		},
		close: true,
		want: []Exchange{{
			Request:  req("GET", "/z", ""),
			Response: ResponseMeta{Proto: "1.1", StatusCode: 200, ContentLength: 3, BodySize: 6, Close: true},
		}},
	},
	{
		name: "websocket upgrade",
		segs: []seg{
			{dir: Request, data: "GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x05hello"},
			{dir: Request, data: "\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58"},
			{dir: Request, data: "GET /not-http-anymore HTTP/1.1\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		},
		close: true,
		want:  []Exchange{{Request: req("GET", "/ws", "h"), Response: resp(101)}},
	},
	{
		name: "connect tunnel",
		segs: []seg{
			{dir: Request, data: "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 Connection Established\r\n\r\n"},
			{dir: Request, data: "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"},
			{dir: Response, data: "\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03"},
		},
		close: true,
		want:  []Exchange{{Request: req("CONNECT", "example.com:443", "example.com:443"), Response: resp(200)}},
	},
	{
		name: "bare LF and odd spacing",
		segs: []seg{
			{dir: Request, data: "GET /lf HTTP/1.1\nHost:h\nUser-Agent: \t spaced\t \n\n"},
			{dir: Request, data: "\r\nGET /2 HTTP/1.1\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200\nContent-Length:  1 \n\nxHTTP/1.1 200 \r\nContent-Length: 1, 1\r\n\r\ny"},
		},
		want: []Exchange{{
			Request:  func() RequestMeta { r := req("GET", "/lf", "h"); r.UserAgent = "spaced"; return r }(),
			Response: respCL(200, 1),
		}, {
			Request: req("GET", "/2", ""), Response: respCL(200, 1),
		}},
	},
	{
		name: "extension method and absolute targets",
		segs: []seg{
			{dir: Request, data: "PURGE http://cache.local/x HTTP/1.1\r\n\r\nOPTIONS * HTTP/1.1\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		},
		want: []Exchange{
			{Request: req("PURGE", "http://cache.local/x", ""), Response: respCL(200, 0)},
			{Request: req("OPTIONS", "*", ""), Response: respCL(200, 0)},
		},
	},
	{
		name: "pipelined head, 304 and interim",
		segs: []seg{
			{dir: Request, data: "HEAD /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\n\r\nGET /c HTTP/1.1\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
				"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n" +
				"HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc"},
		},
		want: []Exchange{
			{Request: req("HEAD", "/a", ""), Response: func() ResponseMeta { r := resp(200); r.Chunked = true; return r }()},
			{Request: req("GET", "/b", ""), Response: func() ResponseMeta { r := resp(304); r.ContentLength = 9; return r }()},
			{Request: req("GET", "/c", ""), Response: respCL(200, 3)},
		},
	},
	{
		name: "obs-fold and LF-only chunk framing",
		segs: []seg{
			{dir: Request, data: "GET /f HTTP/1.1\r\nX-Long: a\r\n  continued\r\n\tagain\r\nHost: h\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n3\nabc\n2;e\nde\n0\n\n"},
		},
		want: []Exchange{{
			Request:  req("GET", "/f", "h"),
			Response: func() ResponseMeta { r := resp(200); r.Chunked, r.BodySize = true, 5; return r }(),
		}},
	},
	{
		name: "early response before request body ends",
		segs: []seg{
			{dir: Request, data: "PUT /big HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234"},
			{dir: Response, data: "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\r\n"},
			{dir: Request, data: "56789"},
			{dir: Request, data: "GET /next HTTP/1.1\r\n\r\n"},
			{dir: Response, data: "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"},
		},
		want: []Exchange{
			{Request: withCL(req("PUT", "/big", ""), 10), Response: respCL(413, 0)},
			{Request: req("GET", "/next", ""), Response: respCL(200, 0)},
		},
	},
}

// TestStreams checks each transcript fed whole, split in two at every byte
// of every segment, and one byte per chunk: all must parse identically.
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
		})
	}
}

func TestStamps(t *testing.T) {
	f := newFeeder(t, nil)
	rq1, _ := f.chunk(Request, []byte("POST / HTTP/1.1\r\nContent-"), 0)
	f.chunk(Request, []byte("Length: 4\r\n\r\nab"), 0)
	_, rqEnd := f.chunk(Request, []byte("cd"), 0)
	rs1, _ := f.chunk(Response, []byte("HTTP/1.1 200 OK\r\n"), 0)
	_, rsEnd := f.chunk(Response, []byte("Content-Length: 0\r\n\r\n"), 0)
	if len(f.ex) != 1 {
		t.Fatalf("got %d exchanges, want 1", len(f.ex))
	}
	e := f.ex[0]
	if e.Request.Start != rq1 || e.Request.End != rqEnd {
		t.Errorf("request stamps %d..%d, want %d..%d", e.Request.Start, e.Request.End, rq1, rqEnd)
	}
	if e.Response.Start != rs1 || e.Response.End != rsEnd {
		t.Errorf("response stamps %d..%d, want %d..%d", e.Response.Start, e.Response.End, rs1, rsEnd)
	}

	// Pipelined messages sharing chunks share their stamps.
	f = newFeeder(t, nil)
	s1, e1 := f.chunk(Request, []byte("GET /1 HTTP/1.1\r\n\r\nGET /2 HT"), 0)
	_, e2 := f.chunk(Request, []byte("TP/1.1\r\n\r\n"), 0)
	s3, e3 := f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0)
	if len(f.ex) != 2 {
		t.Fatalf("got %d exchanges, want 2", len(f.ex))
	}
	want := [][4]uint64{{s1, e1, s3, e3}, {s1, e2, s3, e3}}
	for i, e := range f.ex {
		got := [4]uint64{e.Request.Start, e.Request.End, e.Response.Start, e.Response.End}
		if got != want[i] {
			t.Errorf("exchange %d stamps %v, want %v", i, got, want[i])
		}
	}
}

func TestValidation(t *testing.T) {
	const okResp = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	tests := []struct {
		name string
		dir  Direction
		data string
		want Reason
	}{
		// Errors in a request body come after the request was queued: it is
		// kept, with BodyTruncated when its framing broke.
		{"method with slash", Request, "GE/T / HTTP/1.1\r\n\r\n", BadStartLine},
		{"lowercase protocol", Request, "GET / http/1.1\r\n\r\n", BadStartLine},
		{"http/2", Request, "GET / HTTP/2.0\r\n\r\n", BadStartLine},
		{"http/1.2", Request, "GET / HTTP/1.2\r\n\r\n", BadStartLine},
		{"trailing garbage after version", Request, "GET / HTTP/1.1x\r\n\r\n", BadStartLine},
		{"double space", Request, "GET  / HTTP/1.1\r\n\r\n", BadStartLine},
		{"control in target", Request, "GET /a\x01b HTTP/1.1\r\n\r\n", BadStartLine},
		{"missing version", Request, "GET /\r\n\r\n", BadStartLine},
		{"method too long", Request, strings.Repeat("A", 40) + " / HTTP/1.1\r\n\r\n", BadStartLine},
		{"h2 preface", Request, "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", BadStartLine},
		{"space before colon", Request, "GET / HTTP/1.1\r\nHost : h\r\n\r\n", BadHeader},
		{"no colon", Request, "GET / HTTP/1.1\r\nHost\r\n\r\n", BadHeader},
		{"empty name", Request, "GET / HTTP/1.1\r\n: v\r\n\r\n", BadHeader},
		{"control in value", Request, "GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", BadHeader},
		{"bare CR in value", Request, "GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", BadHeader},
		{"content-length letters", Request, "POST / HTTP/1.1\r\nContent-Length: 12a\r\n\r\n", BadContentLength},
		{"content-length sign", Request, "POST / HTTP/1.1\r\nContent-Length: +1\r\n\r\n", BadContentLength},
		{"content-length empty", Request, "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n", BadContentLength},
		{"content-length overflow", Request, "POST / HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n", BadContentLength},
		{"content-length conflict", Request, "POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", BadContentLength},
		{"content-length list conflict", Request, "POST / HTTP/1.1\r\nContent-Length: 1, 2\r\n\r\n", BadContentLength},
		{"request coding not chunked", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", BadTransferEncoding},
		{"chunked not last", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", BadTransferEncoding},
		{"chunked twice", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", BadTransferEncoding},
		{"coding not a token", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: \"chunked\"\r\n\r\n", BadTransferEncoding},
		{"chunk size not hex", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", BadChunk},
		{"chunk size empty", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n\r\n", BadChunk},
		{"chunk size overflow", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000000\r\n", BadChunk},
		{"chunk size then junk", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1 x\r\n", BadChunk},
		{"chunk data too long", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nab\r\n", BadChunk},
		{"CR without LF in size", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1\rx", BadChunk},
		{"control in extension", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;a\x00\r\n", BadChunk},
		{"chunk line too long", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;" + strings.Repeat("x", maxChunkLine), BadChunk},
		{"control in folded line", Request, "GET / HTTP/1.1\r\nX: a\r\n b\x01\r\n\r\n", BadHeader},
		{"bad trailer", Request, "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nbad trailer\r\n\r\n", BadHeader},
		{"status two digits", Response, "HTTP/1.1 20 OK\r\n\r\n", BadStartLine},
		{"status 600", Response, "HTTP/1.1 600 Nope\r\n\r\n", BadStartLine},
		{"status no space", Response, "HTTP/1.1 200OK\r\n\r\n", BadStartLine},
		{"status http/2", Response, "HTTP/2 200\r\n\r\n", BadStartLine},
		{"control in reason", Response, "HTTP/1.1 200 O\x01K\r\n\r\n", BadStartLine},
		{"response bad content-length", Response, "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", BadContentLength},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, split := range []splitter{whole, bytewise} {
				f := newFeeder(t, nil)
				if tt.dir == Response {
					f.chunk(Request, []byte("GET / HTTP/1.1\r\n\r\n"), 0)
				}
				for _, p := range split(tt.data) {
					f.chunk(tt.dir, []byte(p), 0)
				}
				if rs := f.reasons(); len(rs) != 1 || rs[0] != tt.want {
					t.Fatalf("reasons %v, want [%v]", rs, tt.want)
				}
				var pe *ParseError
				if errors.As(f.errs[0], &pe); pe.Dir != tt.dir {
					t.Errorf("error direction %v, want %v", pe.Dir, tt.dir)
				}
				// The direction recovers at the next message.
				if tt.dir == Request {
					f.chunk(Request, []byte("GET /after HTTP/1.1\r\n\r\n"), 0)
				}
				f.chunk(Response, []byte(okResp), 0)
				f.close()
				var got []string
				for _, e := range f.ex {
					if !e.Incomplete {
						got = append(got, e.Request.Target)
					}
				}
				inBody := tt.want == BadChunk || strings.Contains(tt.name, "trailer")
				want := "/after"
				if tt.dir == Response || inBody {
					want = "/"
				}
				if len(got) != 1 || got[0] != want {
					t.Fatalf("complete exchanges for %v, want [%s]; all: %+v", got, want, f.ex)
				}
				if inBody && f.ex[0].Request.BodyTruncated != (tt.want == BadChunk) {
					t.Errorf("BodyTruncated = %v after %v", f.ex[0].Request.BodyTruncated, tt.want)
				}
			}
		})
	}
}

func TestUnmatchedResponse(t *testing.T) {
	f := newFeeder(t, nil)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello"), 0)
	if rs := f.reasons(); len(rs) != 1 || rs[0] != UnmatchedResponse {
		t.Fatalf("reasons %v, want [unmatched_response]", rs)
	}
	// The unmatched body was skipped, so the next exchange pairs correctly.
	f.chunk(Request, []byte("GET /x HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"), 0)
	want := []Exchange{{Request: req("GET", "/x", ""), Response: respCL(404, 0)}}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
}

func TestStaleRequestsAfterLostResponse(t *testing.T) {
	f := newFeeder(t, nil)
	f.chunk(Request, []byte("GET /a HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("\x00\x01garbage"), 0) // response to /a lost
	f.chunk(Request, []byte("GET /b HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0)
	want := []Exchange{
		{Request: req("GET", "/a", ""), Incomplete: true},
		{Request: req("GET", "/b", ""), Response: respCL(200, 0)},
	}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
	if rs := f.reasons(); len(rs) != 1 || rs[0] != BadStartLine {
		t.Fatalf("reasons %v, want [bad_start_line]", rs)
	}

	// With no fresher request, the stale one still gets the response.
	f = newFeeder(t, nil)
	f.chunk(Request, []byte("GET /a HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("tail of something"), 0)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0)
	want = []Exchange{{Request: req("GET", "/a", ""), Response: respCL(200, 0)}}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
}

func TestCloseFlushesPending(t *testing.T) {
	f := newFeeder(t, nil)
	f.chunk(Request, []byte("GET /1 HTTP/1.1\r\n\r\nPOST /2 HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc"), 0)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial"), 0)
	if len(f.ex) != 0 {
		t.Fatalf("exchanges before close: %+v", f.ex)
	}
	f.close()
	want := []Exchange{
		{Request: req("GET", "/1", ""), Response: func() ResponseMeta { r := resp(200); r.ContentLength, r.BodySize = 100, 7; return r }(), Incomplete: true},
		{Request: func() RequestMeta { r := req("POST", "/2", ""); r.ContentLength, r.BodySize = 10, 3; return r }(), Incomplete: true},
	}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
	if f.c.Upgraded() {
		t.Fatal("Upgraded after Close")
	}

	// Close resets the Conn: a new connection parses from scratch.
	f.ex = f.ex[:0]
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0)
	if rs := f.reasons(); len(rs) != 1 || rs[0] != UnmatchedResponse {
		t.Fatalf("reasons after reuse %v, want [unmatched_response]", rs)
	}
	f.chunk(Request, []byte("GET /3 HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0)
	want = []Exchange{{Request: req("GET", "/3", ""), Response: respCL(200, 0)}}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}
}

func TestUpgradeIgnoresLaterBytes(t *testing.T) {
	f := newFeeder(t, nil)
	f.chunk(Request, []byte("GET /chat HTTP/1.1\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\n"), 0)
	if f.c.Upgraded() {
		t.Fatal("upgraded before the 101")
	}
	f.chunk(Response, []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n"), 0)
	if !f.c.Upgraded() {
		t.Fatal("not upgraded after 101")
	}
	f.chunk(Request, []byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04"), 0)
	f.chunk(Response, []byte("\x00\x00\x00\x04\x01\x00\x00\x00\x00"), 1000)
	f.close()
	if len(f.errs) != 0 {
		t.Fatalf("errors after upgrade: %v", f.errs)
	}
	want := []Exchange{{Request: req("GET", "/chat", ""), Response: resp(101)}}
	if d := diff(unstamped(f.ex), want); d != "" {
		t.Fatal(d)
	}

	// A switch while the request body is still moving ends the request there.
	f = newFeeder(t, nil)
	f.chunk(Request, []byte("POST /up HTTP/1.1\r\nUpgrade: x\r\nContent-Length: 10\r\n\r\nabc"), 0)
	f.chunk(Response, []byte("HTTP/1.1 101 Switching Protocols\r\n\r\n"), 0)
	f.chunk(Request, []byte("defghij"), 0)
	f.close()
	up := req("POST", "/up", "")
	up.ContentLength, up.BodySize = 10, 3
	if d := diff(unstamped(f.ex), []Exchange{{Request: up, Response: resp(101)}}); d != "" {
		t.Fatal(d)
	}

	// A refused CONNECT keeps the connection in HTTP/1.
	f = newFeeder(t, nil)
	f.chunk(Request, []byte("CONNECT h:443 HTTP/1.1\r\n\r\n"), 0)
	f.chunk(Response, []byte("HTTP/1.1 407 Proxy Authentication Required\r\nContent-Length: 0\r\n\r\n"), 0)
	if f.c.Upgraded() || len(f.ex) != 1 || f.ex[0].Response.StatusCode != 407 {
		t.Fatalf("refused CONNECT: upgraded=%v exchanges=%+v", f.c.Upgraded(), f.ex)
	}
}

func TestFeedReturnsFirstError(t *testing.T) {
	c := NewConn(nil)
	// An unmatched response, then a malformed one in the same chunk.
	out, err := c.Feed(Response, Chunk{Data: []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\nHTTP/1.1 2x\r\n\r\n")}, nil)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Reason != UnmatchedResponse || pe.Dir != Response {
		t.Fatalf("err = %v, want unmatched_response on response", err)
	}
	if len(out) != 0 {
		t.Fatalf("exchanges %+v, want none", out)
	}
	if got, want := err.Error(), "http1: response: unmatched_response"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestInvalidDirection(t *testing.T) {
	c := NewConn(nil)
	out, err := c.Feed(Direction(2), Chunk{Data: []byte("GET / HTTP/1.1\r\n\r\n")}, nil)
	if !errors.Is(err, ErrDirection) || len(out) != 0 {
		t.Fatalf("Feed(2) = %v, %v; want ErrDirection", out, err)
	}
	if Direction(2).String() != "invalid" || Request.String() != "request" || Response.String() != "response" {
		t.Error("Direction.String mismatch")
	}
}

func TestZeroConn(t *testing.T) {
	var c Conn
	out, err := c.Feed(Request, Chunk{Data: []byte("GET / HTTP/1.1\r\n\r\n")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	out, err = c.Feed(Response, Chunk{Data: []byte("HTTP/1.1 204 No Content\r\n\r\n")}, out)
	if err != nil || len(out) != 1 || out[0].Response.StatusCode != 204 {
		t.Fatalf("zero Conn: %+v, %v", out, err)
	}
}

func TestReasonStrings(t *testing.T) {
	want := map[Reason]string{
		BadStartLine:        "bad_start_line",
		BadHeader:           "bad_header",
		HeadTooLarge:        "head_too_large",
		BadContentLength:    "bad_content_length",
		BadTransferEncoding: "bad_transfer_encoding",
		BadChunk:            "bad_chunk",
		UnmatchedResponse:   "unmatched_response",
		LostSync:            "lost_sync",
		TooManyPending:      "too_many_pending",
		0:                   "unknown",
		200:                 "unknown",
	}
	for r, s := range want {
		if r.String() != s {
			t.Errorf("Reason(%d).String() = %q, want %q", r, r.String(), s)
		}
	}
}

func TestLooksLike(t *testing.T) {
	tests := []struct {
		in        string
		req, resp bool
	}{
		{"GET / HTTP/1.1\r\n", true, false},
		{"GET /", true, false},
		{"POST /api/v1/items?x=1 HT", true, false},
		{"PROPFIND /dav HTTP/1.1\r\n", true, false},
		{"OPTIONS * HTTP/1.0\n", true, false},
		{"CONNECT h:443 HTTP/1.1\r\n\r\n", true, false},
		{"GET ", false, false},
		{"GET  / HTTP/1.1\r\n", false, false},
		{"GET / HTTP/2.0\r\n", false, false},
		{"GET / HTTP/1.1 \r\n", false, false},
		{"GET /\r\n", false, false},
		{"get / HTTP/1.1\r\n", false, false},
		{"PURGE / HTTP/1.1\r\n", false, false},
		{"PRI * HTTP/2.0\r\n", false, false},
		{"\x16\x03\x01\x00\xa5\x01\x00\x00", false, false},
		{"HTTP/1.1 200 OK\r\n", false, true},
		{"HTTP/1.0 404", false, true},
		{"HTTP/1.1 200\r\n", false, true},
		{"HTTP/1.1 599 Whatever", false, true},
		{"HTTP/1.1 20", false, false},
		{"HTTP/1.1 600 No\r\n", false, false},
		{"HTTP/1.1 200OK", false, false},
		{"HTTP/2 200\r\n", false, false},
		{"HTTP/1.1 200 O\x00K\r\n", false, false},
		{"", false, false},
	}
	for _, tt := range tests {
		if got := LooksLikeRequest([]byte(tt.in)); got != tt.req {
			t.Errorf("LooksLikeRequest(%q) = %v, want %v", tt.in, got, tt.req)
		}
		if got := LooksLikeResponse([]byte(tt.in)); got != tt.resp {
			t.Errorf("LooksLikeResponse(%q) = %v, want %v", tt.in, got, tt.resp)
		}
	}
}

// A connection joined mid-stream skips chunks until one starts a message,
// and does not take a chunk cut inside a request line for a request.
func TestJoinMidStream(t *testing.T) {
	c := NewConn(nil)
	c.JoinMidStream()
	var out []Exchange
	feed := func(dir Direction, s string) {
		t.Helper()
		var err error
		out, err = c.Feed(dir, Chunk{Data: []byte(s), Size: len(s), Start: 1, End: 2}, out)
		if err != nil {
			t.Fatalf("Feed(%q): %v", s, err)
		}
	}
	feed(Request, "OST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	// The response to the unseen request pairs with nothing.
	resp := "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	out, err := c.Feed(Response, Chunk{Data: []byte(resp), Size: len(resp)}, out)
	var pe *ParseError
	if !errors.As(err, &pe) || pe.Reason != UnmatchedResponse {
		t.Fatalf("unseen request's response: got %v, want unmatched_response", err)
	}
	if len(out) != 0 {
		t.Fatalf("exchanges from a chunk cut mid-message: %+v", out)
	}
	feed(Request, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
	feed(Response, "HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
	if len(out) != 1 || out[0].Request.Method != "POST" || out[0].Response.StatusCode != 201 {
		t.Fatalf("want the POST/201 exchange once resynced, got %+v", out)
	}
}

// In resync, a start line split over two reads is still found: Go's
// net/http server reads the first byte of the next request on its own.
func TestResyncStartSplitAcrossChunks(t *testing.T) {
	c := NewConn(nil)
	c.JoinMidStream()
	var out []Exchange
	for _, ch := range []struct {
		dir  Direction
		data string
	}{
		{Request, "G"},
		{Request, "ET /after HTTP/1.1\r\nHost: x\r\n\r\n"},
		{Response, "HTTP/1."},
		{Response, "1 204 No Content\r\n\r\n"},
	} {
		var err error
		out, err = c.Feed(ch.dir, Chunk{Data: []byte(ch.data), Size: len(ch.data), Start: 7, End: 8}, out)
		if err != nil {
			t.Fatalf("Feed(%q): %v", ch.data, err)
		}
	}
	if len(out) != 1 || out[0].Request.Method != "GET" || out[0].Request.Target != "/after" || out[0].Response.StatusCode != 204 {
		t.Fatalf("got %+v", out)
	}
	// A fragment that cannot begin a message is not kept.
	c = NewConn(nil)
	c.JoinMidStream()
	out = out[:0]
	for _, s := range []string{"X", "GET /no HTTP/1.1\r\nHost: x\r\n\r\n"} {
		out, _ = c.Feed(Request, Chunk{Data: []byte(s), Size: len(s)}, out)
	}
	out, _ = c.Feed(Response, Chunk{Data: []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), Size: 38}, out)
	if len(out) != 1 || out[0].Request.Target != "/no" {
		t.Fatalf("a later chunk that starts a message must still be found: %+v", out)
	}
	if !couldStartMessage(Request, []byte("G")) || couldStartMessage(Request, []byte("XG")) || couldStartMessage(Request, []byte("GETX")) {
		t.Fatal("couldStartMessage accepts what no start line begins with")
	}
	if !couldStartMessage(Response, []byte("HTTP/1.1 2")) || couldStartMessage(Response, []byte("HTTP/2")) {
		t.Fatal("couldStartMessage for responses")
	}
}

// Each message reports the position of its own first byte: pipelined
// messages in one chunk at their offsets, a message split over chunks at
// its first chunk's, one resynchronised from held bytes as unknown.
func TestPositions(t *testing.T) {
	c := NewConn(nil)
	var xs []Exchange
	feed := func(dir Direction, pos uint64, data string) {
		var err error
		xs, err = c.Feed(dir, Chunk{Data: []byte(data), Size: len(data), Pos: pos}, xs)
		if err != nil {
			t.Fatal(err)
		}
	}
	const r1, r2 = "GET /1 HTTP/1.1\r\n\r\n", "GET /2 HTTP/1.1\r\n\r\n"
	const ok = "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
	feed(Request, 1000, r1+r2)
	feed(Response, 5000, "HTTP/1.1 200 OK\r\n")
	feed(Response, 5017, "Content-Length: 0\r\n\r\n"+ok)
	if len(xs) != 2 {
		t.Fatalf("%d exchanges, want 2", len(xs))
	}
	want := [][2]uint64{{1000, 5000}, {1000 + uint64(len(r1)), 5017 + uint64(len("Content-Length: 0\r\n\r\n"))}}
	for i, x := range xs {
		if got := [2]uint64{x.Request.Pos, x.Response.Pos}; got != want[i] {
			t.Errorf("exchange %d positions %v, want %v", i, got, want[i])
		}
	}
	xs = xs[:0]
	feed(Request, 0, r1)
	feed(Response, 0, ok)
	if len(xs) != 1 || xs[0].Request.Pos != 0 || xs[0].Response.Pos != 0 {
		t.Errorf("chunks of unknown position: %+v", xs)
	}
}
