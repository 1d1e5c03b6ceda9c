package http1

import (
	"fmt"
	"strings"
	"testing"
)

var (
	getReq  = []byte("GET /api/v1/users/42 HTTP/1.1\r\nHost: api.internal:8080\r\nUser-Agent: Go-http-client/1.1\r\nAccept: application/json\r\nAuthorization: Bearer abc\r\nAccept-Encoding: gzip\r\n\r\n")
	getResp = withBody("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nDate: Mon, 02 Jan 2006 15:04:05 GMT\r\n", `{"id":42,"name":"gopher"}`+"\n")
)

func withBody(head, body string) []byte {
	return fmt.Appendf(nil, "%sContent-Length: %d\r\n\r\n%s", head, len(body), body)
}

func exchange(c *Conn, rq, rs []byte, out []Exchange) []Exchange {
	out, _ = c.Feed(Request, Chunk{Data: rq, Size: len(rq)}, out)
	out, _ = c.Feed(Response, Chunk{Data: rs, Size: len(rs)}, out)
	return out
}

// TestAllocs pins the steady-state cost of a keep-alive exchange. What
// allocates is the retained strings only, all in one block per request; a
// value equal to the previous request's (same Host, User-Agent, target) is
// reused, so a repeated request allocates nothing.
func TestAllocs(t *testing.T) {
	c := NewConn(nil)
	out := make([]Exchange, 0, 4)
	out = exchange(c, getReq, getResp, out[:0]) // warm buffers and the queue
	if len(out) != 1 {
		t.Fatalf("warm-up produced %d exchanges", len(out))
	}

	same := testing.AllocsPerRun(1000, func() {
		if out = exchange(c, getReq, getResp, out[:0]); len(out) != 1 {
			t.Fatal("no exchange")
		}
	})
	if same != 0 {
		t.Errorf("repeated request: %v allocs per exchange, want 0", same)
	}

	const runs = 1000
	reqs := make([][]byte, runs+1)
	for i := range reqs {
		reqs[i] = fmt.Appendf(nil, "GET /api/v1/users/%d HTTP/1.1\r\nHost: api.internal:8080\r\n"+
			"User-Agent: Go-http-client/1.1\r\ntraceparent: 00-%032x-%016x-01\r\n\r\n", i, i, i)
	}
	n := 0
	fresh := testing.AllocsPerRun(runs, func() {
		out = exchange(c, reqs[n], getResp, out[:0])
		n++
		if len(out) != 1 || out[0].Request.TraceParent == "" {
			t.Fatal("no exchange")
		}
	})
	if fresh > 1 {
		t.Errorf("new target and traceparent: %v allocs per exchange, want at most 1", fresh)
	}

	chunked := []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: v\r\n\r\n")
	split := testing.AllocsPerRun(runs, func() {
		out, _ = c.Feed(Request, Chunk{Data: getReq[:10]}, out[:0])
		out, _ = c.Feed(Request, Chunk{Data: getReq[10:]}, out)
		for i := 0; i < len(chunked); i += 7 {
			out, _ = c.Feed(Response, Chunk{Data: chunked[i:min(i+7, len(chunked))]}, out)
		}
		if len(out) != 1 {
			t.Fatal("no exchange")
		}
	})
	if split != 0 {
		t.Errorf("split chunked exchange: %v allocs, want 0", split)
	}
}

func BenchmarkGet(b *testing.B) {
	c := NewConn(nil)
	out := make([]Exchange, 0, 4)
	b.SetBytes(int64(len(getReq) + len(getResp)))
	b.ReportAllocs()
	for b.Loop() {
		out = exchange(c, getReq, getResp, out[:0])
	}
}

func BenchmarkPipelined(b *testing.B) {
	const n = 16
	var rq, rs []byte
	for i := range n {
		rq = fmt.Appendf(rq, "GET /item/%d HTTP/1.1\r\nHost: h\r\nUser-Agent: bench\r\n\r\n", i%4)
		rs = append(rs, getResp...)
	}
	c := NewConn(nil)
	out := make([]Exchange, 0, n)
	b.SetBytes(int64(len(rq) + len(rs)))
	b.ReportAllocs()
	for b.Loop() {
		if out = exchange(c, rq, rs, out[:0]); len(out) != n {
			b.Fatalf("%d exchanges", len(out))
		}
	}
}

func BenchmarkChunkedResponse(b *testing.B) {
	var body strings.Builder
	body.WriteString("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
	for range 64 {
		fmt.Fprintf(&body, "%x\r\n%s\r\n", 1000, strings.Repeat("c", 1000))
	}
	body.WriteString("0\r\n\r\n")
	rs := []byte(body.String())
	c := NewConn(nil)
	out := make([]Exchange, 0, 4)
	b.SetBytes(int64(len(getReq) + len(rs)))
	b.ReportAllocs()
	for b.Loop() {
		out, _ = c.Feed(Request, Chunk{Data: getReq, Size: len(getReq)}, out[:0])
		for i := 0; i < len(rs); i += 4096 { // as a server's 4 KiB writes
			out, _ = c.Feed(Response, Chunk{Data: rs[i:min(i+4096, len(rs))]}, out)
		}
		if len(out) != 1 {
			b.Fatal("no exchange")
		}
	}
}

// BenchmarkLargeBodyGap measures a 1 MiB response of which only the first
// 4 KiB is captured; throughput counts the bytes that moved.
func BenchmarkLargeBodyGap(b *testing.B) {
	const size = 1 << 20
	head := "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n\r\n"
	captured := []byte(head + strings.Repeat("b", 4096-len(head)))
	c := NewConn(nil)
	out := make([]Exchange, 0, 4)
	b.SetBytes(int64(len(getReq) + len(head) + size))
	b.ReportAllocs()
	for b.Loop() {
		out, _ = c.Feed(Request, Chunk{Data: getReq, Size: len(getReq)}, out[:0])
		out, _ = c.Feed(Response, Chunk{Data: captured, Size: len(head) + size}, out)
		if len(out) != 1 {
			b.Fatal("no exchange")
		}
	}
}
