package http2

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// recorder captures the plaintext a client moves, one seg per Read or
// Write call, as a tracer sees syscalls or SSL_read/SSL_write.
type recorder struct {
	mu   sync.Mutex
	segs []seg
}

func (r *recorder) add(dir Direction, p []byte) {
	r.mu.Lock()
	r.segs = append(r.segs, seg{dir: dir, data: string(p)})
	r.mu.Unlock()
}

func (r *recorder) recorded() []seg {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seg(nil), r.segs...)
}

type recConn struct {
	net.Conn
	r *recorder
}

func (c recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.r.add(Response, p[:n])
	}
	return n, err
}

func (c recConn) Write(p []byte) (int, error) {
	// Recorded before it moves, so that no response can precede it.
	c.r.add(Request, p)
	return c.Conn.Write(p)
}

// h2cServer serves HTTP/2 without TLS (prior knowledge and Upgrade).
func h2cServer(t *testing.T) *httptest.Server {
	mux := http.NewServeMux()
	mux.HandleFunc("/hello", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Header().Set("Set-Cookie", "sid=S3CRET")
		io.WriteString(w, "hello "+r.URL.Query().Get("n"))
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.WriteHeader(http.StatusCreated)
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		w.Write(bytes.Repeat([]byte("B"), 100_000))
	})
	mux.HandleFunc("/trailer", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Sum")
		io.WriteString(w, "body")
		w.Header().Set("X-Sum", "42")
	})
	srv := httptest.NewServer(h2c.NewHandler(mux, &http2.Server{}))
	t.Cleanup(srv.Close)
	return srv
}

type call struct {
	method, path, body string
	status             int
	respBody           int64
}

// recordH2C runs calls (concurrently when parallel) over one recorded h2c
// connection.
func recordH2C(t *testing.T, srv *httptest.Server, calls []call, parallel bool) []seg {
	rec := &recorder{}
	tr := &http2.Transport{
		AllowHTTP: true,
		DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return recConn{c, rec}, nil
		},
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	do := func(c call) {
		var body io.Reader
		if c.body != "" {
			body = strings.NewReader(c.body)
		}
		req, err := http.NewRequest(c.method, srv.URL+c.path, body)
		if err != nil {
			t.Error(err)
			return
		}
		req.Header.Set("Traceparent", tp)
		req.Header.Set("Authorization", "Bearer S3CRET")
		resp, err := client.Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.ProtoMajor != 2 {
			t.Errorf("%s %s: %s %s", c.method, c.path, resp.Proto, resp.Status)
		}
	}
	// One request first, so that every other reuses its connection.
	do(calls[0])
	var wg sync.WaitGroup
	for _, c := range calls[1:] {
		if parallel {
			wg.Go(func() { do(c) })
		} else {
			do(c)
		}
	}
	wg.Wait()
	tr.CloseIdleConnections()
	return rec.recorded()
}

// checkCalls matches exchanges with calls by path.
func checkCalls(t *testing.T, how string, f *feeder, calls []call, host string) {
	t.Helper()
	if len(f.errs) != 0 {
		t.Fatalf("%s: errors %v", how, f.errs)
	}
	if len(f.ex) != len(calls) {
		t.Fatalf("%s: %d exchanges for %d calls", how, len(f.ex), len(calls))
	}
	byPath := map[string]call{}
	for _, c := range calls {
		byPath[c.path] = c
	}
	ids := map[uint32]bool{}
	for _, e := range f.ex {
		c, ok := byPath[e.Request.Path]
		r := e.Request
		if !ok || e.Incomplete || ids[e.StreamID] || r.Method != c.method || r.Scheme != "http" || r.Authority != host ||
			r.UserAgent != "Go-http-client/2.0" || r.TraceParent != tp || r.BodySize != int64(len(c.body)) ||
			e.Response.StatusCode != c.status || e.Response.BodySize != c.respBody || r.HeadersUnknown || e.Response.HeadersUnknown {
			t.Fatalf("%s: exchange %+v does not match %+v", how, e, c)
		}
		ids[e.StreamID] = true
	}
}

func TestRecordedH2C(t *testing.T) {
	srv := h2cServer(t)
	host := strings.TrimPrefix(srv.URL, "http://")
	small := []call{
		{"GET", "/hello?n=1", "", 200, 7},
		{"GET", "/hello?n=2", "", 200, 7},
		{"POST", "/echo", "ping-pong", 201, 9},
		{"GET", "/trailer", "", 200, 4},
		{"GET", "/hello?n=3", "", 200, 7},
	}
	segs := recordH2C(t, srv, small, false)
	for _, split := range []splitter{whole, bytewise} {
		checkCalls(t, "small", play(t, nil, segs, -1, split, true), small, host)
	}
	for i, s := range segs {
		for p := 1; p < len(s.data); p++ {
			checkCalls(t, fmt.Sprintf("segment %d split at %d", i, p), play(t, nil, segs, i, at(p), true), small, host)
		}
	}
	// Secrets went over the wire but not into exchanges.
	f := play(t, nil, segs, -1, whole, true)
	for _, e := range f.ex {
		if strings.Contains(fmt.Sprint(e), "S3CRET") {
			t.Fatalf("secret retained: %+v", e)
		}
	}

	// Concurrent requests, large bodies in both directions: interleaved
	// streams and many DATA frames.
	var calls []call
	for i := range 8 {
		calls = append(calls, call{"GET", fmt.Sprintf("/hello?n=%d", 10+i), "", 200, 8})
	}
	calls = append(calls, call{"GET", "/big", "", 200, 100_000},
		call{"POST", "/echo", strings.Repeat("e", 70_000), 201, 70_000})
	calls[0].path = "/hello?n=99"
	segs = recordH2C(t, srv, calls, true)
	checkCalls(t, "parallel", play(t, nil, segs, -1, whole, true), calls, host)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 20 {
		random := func(data string) (out []string) {
			for len(data) > 0 {
				n := min(len(data), 1+rng.IntN(3000))
				out, data = append(out, data[:n]), data[n:]
			}
			return out
		}
		checkCalls(t, fmt.Sprintf("parallel, random chunking %d", i), play(t, nil, segs, -1, random, true), calls, host)
	}
	// Capture cut to 256 bytes per syscall: DATA payloads are only
	// counted, so big bodies do not lose sync... unless a frame header
	// falls in the uncaptured tail, which the parser must survive.
	var cut []seg
	for _, s := range segs {
		if n := len(s.data); n > 256 {
			s.data, s.gap = s.data[:256], n-256
		}
		cut = append(cut, s)
	}
	f = play(t, nil, cut, -1, whole, true)
	for _, e := range f.ex {
		if !e.Request.HeadersUnknown && !strings.HasPrefix(e.Request.Path, "/") {
			t.Fatalf("cut capture: %+v", e)
		}
	}
}

// TestRecordedUpgrade records an HTTP/1.1 Upgrade to h2c: the tracer's
// HTTP/1 parser sees the 101 and hands over with StartUpgraded.
func TestRecordedUpgrade(t *testing.T) {
	srv := h2cServer(t)
	rec := &recorder{}
	raw, err := net.Dial("tcp", strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	conn := recConn{raw, rec}
	upgrade := "GET /hello?n=up HTTP/1.1\r\nHost: h2c.test\r\nConnection: Upgrade, HTTP2-Settings\r\n" +
		"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n"
	io.WriteString(conn, upgrade)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 101 {
		t.Fatalf("upgrade: %v %v", resp, err)
	}
	fr := http2.NewFramer(conn, br)
	io.WriteString(conn, http2.ClientPreface)
	fr.WriteSettings()
	for done := false; !done; {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.DataFrame:
			done = f.StreamEnded()
		}
	}
	segs := rec.recorded()
	// What the HTTP/1 parser consumed is the upgrade request and the 101
	// head; the rest of that read is HTTP/2 already.
	var h2 []seg
	for _, s := range segs {
		if s.dir == Request && s.data == upgrade {
			continue
		}
		if s.dir == Response && strings.HasPrefix(s.data, "HTTP/1.1 101") {
			i := strings.Index(s.data, "\r\n\r\n") + 4
			if s.data = s.data[i:]; s.data == "" {
				continue
			}
		}
		h2 = append(h2, s)
	}
	for _, split := range []splitter{whole, bytewise} {
		f := newFeeder(t, nil)
		f.c.StartUpgraded(RequestMeta{Method: "GET", Path: "/hello?n=up", Authority: "h2c.test", Start: 1, End: 1})
		f.play(h2, -1, split)
		f.close()
		if len(f.errs) != 0 || len(f.ex) != 1 {
			t.Fatalf("errors %v, exchanges %+v", f.errs, f.ex)
		}
		e := f.ex[0]
		if e.StreamID != 1 || e.Incomplete || e.Request.Path != "/hello?n=up" || e.Response.StatusCode != 200 ||
			e.Response.ContentType != "text/plain" || e.Response.BodySize != 8 {
			t.Fatalf("exchange %+v", e)
		}
	}
}

// TestRecordedGRPC records grpc-go's health service, OK and error statuses,
// over one connection.
func TestRecordedGRPC(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	hs := health.NewServer()
	hs.SetServingStatus("up", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	defer srv.Stop()

	rec := &recorder{}
	cc, err := grpc.NewClient("passthrough:///"+lis.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent("sonde-test"),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			if err != nil {
				return nil, err
			}
			return recConn{c, rec}, nil
		}))
	if err != nil {
		t.Fatal(err)
	}
	client := healthpb.NewHealthClient(cc)
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", tp, "authorization", "Bearer S3CRET")
	services := []string{"up", "missing", "up", "", "missing"}
	for _, svc := range services {
		_, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		if want := codes.OK; svc == "missing" {
			want = codes.NotFound
			if status.Code(err) != want {
				t.Fatalf("check %q: %v", svc, err)
			}
		} else if err != nil {
			t.Fatalf("check %q: %v", svc, err)
		}
	}
	cc.Close()
	segs := rec.recorded()

	for _, split := range []splitter{whole, bytewise} {
		f := play(t, nil, segs, -1, split, true)
		if len(f.errs) != 0 || len(f.ex) != len(services) {
			t.Fatalf("errors %v, %d exchanges", f.errs, len(f.ex))
		}
		sort.Slice(f.ex, func(i, j int) bool { return f.ex[i].StreamID < f.ex[j].StreamID })
		for i, e := range f.ex {
			r := e.Request
			wantStatus := 0
			if services[i] == "missing" {
				wantStatus = int(codes.NotFound)
			}
			if !e.IsGRPC() || e.Incomplete || r.Method != "POST" || r.Path != "/grpc.health.v1.Health/Check" ||
				!strings.HasPrefix(r.UserAgent, "sonde-test grpc-go/") || r.TraceParent != tp || r.BodySize != int64(5+len(services[i])+2*min(len(services[i]), 1)) ||
				e.Response.StatusCode != 200 || e.Response.GRPCStatus != wantStatus {
				t.Fatalf("call %d (%q): %+v", i, services[i], e)
			}
			if wantStatus != 0 && !strings.Contains(e.Response.GRPCMessage, "unknown service") {
				t.Fatalf("call %d: grpc-message %q", i, e.Response.GRPCMessage)
			}
			if strings.Contains(fmt.Sprint(e), "S3CRET") {
				t.Fatalf("secret retained: %+v", e)
			}
		}
	}
	for i, s := range segs {
		for p := 1; p < len(s.data); p++ {
			f := play(t, nil, segs, i, at(p), true)
			if len(f.errs) != 0 || len(f.ex) != len(services) {
				t.Fatalf("segment %d split at %d: errors %v, %d exchanges", i, p, f.errs, len(f.ex))
			}
		}
	}
}
