package http1

import (
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestGarbageYieldsErrorsNotExchanges(t *testing.T) {
	inputs := map[string]string{
		"tls client hello": "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x8a\x1b",
		"tls app data":     "\x17\x03\x03\x00\x45\xde\xad\xbe\xef",
		"ssh banner":       "SSH-2.0-OpenSSH_9.6\r\n",
		"redis":            "*1\r\n$4\r\nPING\r\n",
		"smtp":             "EHLO mail.example.com\r\n",
		"postgres startup": "\x00\x00\x00\x08\x04\xd2\x16\x2f",
		"h2 preface":       "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
		"json":             "{\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n",
		"http/0.9":         "GET /index.html\r\n",
	}
	for name, in := range inputs {
		for _, dir := range []Direction{Request, Response} {
			for _, split := range []splitter{whole, bytewise} {
				f := newFeeder(t, nil)
				for _, p := range split(in) {
					f.chunk(dir, []byte(p), 0)
				}
				f.close()
				if len(f.ex) != 0 || len(f.errs) == 0 {
					t.Errorf("%s on %v: %d exchanges, errors %v; want errors only", name, dir, len(f.ex), f.errs)
				}
			}
		}
	}

	rng := rand.New(rand.NewPCG(1, 2))
	for i := range 2000 {
		f := newFeeder(t, nil)
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
		if len(f.ex) != 0 || len(f.errs) == 0 {
			t.Fatalf("random input %d: %d exchanges, errors %v; want errors only", i, len(f.ex), f.errs)
		}
	}
}

func TestSecretsNeverRetained(t *testing.T) {
	segs := []seg{
		{dir: Request, data: "POST http://admin:S3CRET-userinfo@api.example.com/v1?x=1 HTTP/1.1\r\n" +
			"Host: api.example.com\r\n" +
			"Authorization: Bearer S3CRET-bearer\r\n" +
			"authorization: Basic S3CRET-basic\r\n" +
			"Proxy-Authorization: Basic S3CRET-proxy\r\n" +
			"Cookie: session=S3CRET-cookie\r\n" +
			"X-Api-Key: S3CRET-apikey\r\n" +
			"Transfer-Encoding: chunked\r\n\r\n" +
			"6\r\nS3CRET\r\n0\r\nX-Signature: S3CRET-trailer\r\n\r\n"},
		{dir: Response, data: "HTTP/1.1 200 OK\r\n" +
			"Set-Cookie: id=S3CRET-setcookie; HttpOnly\r\n" +
			"WWW-Authenticate: Bearer realm=\"S3CRET-realm\"\r\n" +
			"Content-Length: 14\r\n\r\n{\"t\":\"S3CRET\"}"},
		{dir: Request, data: "GET ftp://S3CRET@h/ HTTP/1.1\r\nCookie: a=S3CRET-2\r\n\r\n"},
		{dir: Response, data: "HTTP/1.1 204 No Content\r\nSet-Cookie: S3CRET\r\n\r\n"},
	}
	for _, split := range []splitter{whole, bytewise} {
		f := play(t, nil, segs, -1, split, true)
		if len(f.errs) != 0 || len(f.ex) != 2 {
			t.Fatalf("errors %v, %d exchanges; want 2 clean exchanges", f.errs, len(f.ex))
		}
		for _, s := range strs(reflect.ValueOf(f.ex), nil) {
			if strings.Contains(s, "S3CRET") {
				t.Errorf("retained string %q holds a secret", s)
			}
		}
		if got, want := f.ex[0].Request.Target, "http://api.example.com/v1?x=1"; got != want {
			t.Errorf("target %q, want %q", got, want)
		}
		if got, want := f.ex[1].Request.Target, "ftp://h/"; got != want {
			t.Errorf("target %q, want %q", got, want)
		}
	}
}

func TestHeadTooLarge(t *testing.T) {
	l := &Limits{MaxHeadBytes: 64}
	fits := "GET / HTTP/1.1\r\nX: " + strings.Repeat("v", 64-19-4) + "\r\n\r\n"
	if len(fits) != 64 {
		t.Fatalf("bad fixture length %d", len(fits))
	}
	for _, split := range []splitter{whole, bytewise} {
		f := play(t, l, []seg{{dir: Request, data: fits}}, -1, split, true)
		if len(f.errs) != 0 || len(f.ex) != 1 {
			t.Fatalf("64-byte head: errors %v, %d exchanges", f.errs, len(f.ex))
		}
		tooBig := strings.Replace(fits, "X: ", "X: v", 1)
		f = play(t, l, []seg{{dir: Request, data: tooBig}}, -1, split, true)
		if rs := f.reasons(); len(rs) != 1 || rs[0] != HeadTooLarge || len(f.ex) != 0 {
			t.Fatalf("65-byte head: reasons %v, %d exchanges", rs, len(f.ex))
		}
	}

	// A trailer section is bounded the same way.
	f := newFeeder(t, l)
	f.chunk(Request, []byte("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"), 0)
	f.chunk(Request, []byte("X: "+strings.Repeat("t", 100)), 0)
	if rs := f.reasons(); len(rs) != 1 || rs[0] != HeadTooLarge {
		t.Fatalf("trailer: reasons %v", rs)
	}

	// Megabytes of plausible header bytes never grow the buffer past the limit.
	c := NewConn(nil)
	c.Feed(Request, Chunk{Data: []byte("GET / HTTP/1.1\r\nX-Filler: ")}, nil)
	filler := []byte(strings.Repeat("f", 1000))
	for range 2000 {
		c.Feed(Request, Chunk{Data: filler}, nil)
		if cp := cap(c.s[Request].line); cp > 2*DefaultMaxHeadBytes {
			t.Fatalf("line buffer grew to %d", cp)
		}
	}
	if c.s[Request].st != stResync {
		t.Fatalf("state %v, want resync after an endless head", c.s[Request].st)
	}
}

func TestTooManyPending(t *testing.T) {
	l := &Limits{MaxPending: 3}
	f := newFeeder(t, l)
	for _, p := range []string{"/1", "/2", "/3", "/4", "/5"} {
		f.chunk(Request, []byte("GET "+p+" HTTP/1.1\r\n\r\n"), 0)
	}
	if rs := f.reasons(); len(rs) != 2 || rs[0] != TooManyPending || rs[1] != TooManyPending {
		t.Fatalf("reasons %v, want two too_many_pending", rs)
	}
	if len(f.ex) != 2 || !f.ex[0].Incomplete || f.ex[0].Request.Target != "/1" || f.ex[1].Request.Target != "/2" {
		t.Fatalf("evicted %+v, want /1 and /2 as incomplete", f.ex)
	}
	if f.c.qLen != 3 || len(f.c.q) > 3 {
		t.Fatalf("queue holds %d in %d slots, want 3 in at most 3", f.c.qLen, len(f.c.q))
	}
	f.chunk(Response, []byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"), 0)
	f.close()
	var got []string
	for _, e := range f.ex[2:] {
		got = append(got, e.Request.Target)
		if e.Incomplete != (e.Request.Target != "/3") {
			t.Errorf("%s: Incomplete = %v", e.Request.Target, e.Incomplete)
		}
	}
	if strings.Join(got, ",") != "/3,/4,/5" {
		t.Fatalf("after close: %v, want /3,/4,/5", got)
	}

	// Default limit: the queue stops at 64 whatever comes.
	f = newFeeder(t, nil)
	for range 1000 {
		f.chunk(Request, []byte("GET / HTTP/1.1\r\n\r\n"), 0)
	}
	if f.c.qLen != DefaultMaxPending || len(f.ex) != 1000-DefaultMaxPending {
		t.Fatalf("queue %d, evicted %d", f.c.qLen, len(f.ex))
	}
}

func TestValueLimits(t *testing.T) {
	l := &Limits{MaxValueBytes: 8}
	f := newFeeder(t, l)
	f.chunk(Request, []byte("GET /0123456789 HTTP/1.1\r\nHost: héllo.example\r\nUser-Agent: a\xffb\xc3\r\nTraceparent: short\r\n\r\n"), 0)
	f.close()
	if len(f.ex) != 1 {
		t.Fatalf("%d exchanges", len(f.ex))
	}
	r := f.ex[0].Request
	for name, got := range map[string]string{"target": r.Target, "host": r.Host, "ua": r.UserAgent, "tp": r.TraceParent} {
		if len(got) > 8 || !utf8.ValidString(got) {
			t.Errorf("%s = %q: longer than 8 bytes or invalid UTF-8", name, got)
		}
	}
	if r.Target != "/0123456" || r.Host != "héllo.e" || r.UserAgent != "a\uFFFDb\uFFFD" || r.TraceParent != "short" {
		t.Errorf("got target %q host %q ua %q tp %q", r.Target, r.Host, r.UserAgent, r.TraceParent)
	}
}

func TestAppendValue(t *testing.T) {
	tests := []struct {
		in   string
		max  int
		want string
	}{
		{"plain", 10, "plain"},
		{"plain", 3, "pla"},
		{"abcdefgé", 8, "abcdefg"}, // never half a character
		{"é€😀", 8, "é€"},
		{"é€😀", 9, "é€😀"},
		{"a\xffb", 10, "a\uFFFDb"},
		{"a\xffb", 3, "a"}, // the replacement takes 3 bytes
		{"\xe2\x82", 10, "\uFFFD\uFFFD"},
		{"x", 0, ""},
	}
	for _, tt := range tests {
		got := string(appendValue(nil, []byte(tt.in), tt.max))
		if got != tt.want || len(got) > tt.max || !utf8.ValidString(got) {
			t.Errorf("appendValue(%q, %d) = %q, want %q", tt.in, tt.max, got, tt.want)
		}
	}
}

func TestRetainedStringsAreCopies(t *testing.T) {
	c := NewConn(nil)
	buf := []byte("PURGE /path HTTP/1.1\r\nHost: host\r\nUser-Agent: ua\r\nTraceparent: " + tp + "\r\nTracestate: a=b\r\n\r\n")
	out, _ := c.Feed(Request, Chunk{Data: buf}, nil)
	for i := range buf {
		buf[i] = 'X' // the caller reuses its buffer
	}
	out, _ = c.Feed(Response, Chunk{Data: []byte("HTTP/1.1 204 No Content\r\n\r\n")}, out)
	want := req("PURGE", "/path", "host")
	want.UserAgent, want.TraceParent, want.TraceState = "ua", tp, "a=b"
	if len(out) != 1 || unstamped(out)[0].Request != want {
		t.Fatalf("got %+v, want %+v", out, want)
	}
}

func TestFirstFieldWins(t *testing.T) {
	f := newFeeder(t, nil)
	f.chunk(Request, []byte("GET / HTTP/1.1\r\nHost: first\r\nHost: second\r\nTraceparent: "+tp+"\r\ntraceparent: other\r\n\r\n"), 0)
	f.close()
	if len(f.ex) != 1 || f.ex[0].Request.Host != "first" || f.ex[0].Request.TraceParent != tp {
		t.Fatalf("got %+v", f.ex)
	}
}
