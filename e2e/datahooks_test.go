package e2e

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
)

// nginx serves static files with sendfile(2): the kernel moves the file's
// pages into the socket, with no user buffer for sonde to read. The byte
// count alone must keep the parser's place, or the next response on the
// keep-alive connection is lost: large and small files alternate on one
// connection.
func TestNginxSendfile(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	www := t.TempDir()
	files := []struct {
		name string
		size int
	}{{"a.bin", 300 << 10}, {"b.txt", 12}, {"c.bin", 200<<10 + 17}, {"d.txt", 5}}
	for i, f := range files {
		if err := os.WriteFile(filepath.Join(www, f.name), bytes.Repeat([]byte{'a' + byte(i)}, f.size), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	s := startSonde(t, nil, "--exe", "nginx", "--exe", "curl")
	port := freePort(t)
	startNginx(t, "127.0.0.1:"+port, fmt.Sprintf(`  sendfile on;
  tcp_nopush on;
  server {
    listen 127.0.0.1:%s;
    root %s;
  }`, port, www))
	waitPort(t, "127.0.0.1:"+port)
	args := []string{"-sS", "-w", "%{num_connects} %{size_download}\n"}
	for _, f := range files {
		args = append(args, "-o", "/dev/null", "http://127.0.0.1:"+port+"/"+f.name)
	}
	out := run(t, curl, args...)
	want := ""
	for i, f := range files {
		connects := 0 // the first transfer connects, the others reuse it
		if i == 0 {
			connects = 1
		}
		want += fmt.Sprintf("%d %d\n", connects, f.size)
	}
	if out != want {
		t.Fatalf("curl did not fetch the files over one connection: got %q, want %q", out, want)
	}
	r := s.stop(t)

	wantNoParseErrors(t, r)
	servers := filter(r.spans, func(s span) bool { return exeName(s) == "nginx" })
	clients := filter(r.spans, func(s span) bool { return exeName(s) == "curl" })
	if len(servers) != len(files) || len(clients) != len(files) {
		t.Fatalf("want %d nginx and %d curl spans, got %d and %d:\n%v", len(files), len(files), len(servers), len(clients), r.spans)
	}
	peer := ""
	for _, f := range files {
		sv := findSpan(t, servers, "url.path", "/"+f.name)
		wantAttrs(t, sv, map[string]string{"http.request.method": "GET", "http.response.status_code": "200"})
		if peer == "" {
			peer = sv.attr("network.peer.port")
		} else if got := sv.attr("network.peer.port"); got != peer {
			t.Errorf("%s served to port %s, the others to %s: not one connection", f.name, got, peer)
		}
		c := findSpan(t, clients, "url.full", "http://127.0.0.1:"+port+"/"+f.name)
		wantAttrs(t, c, map[string]string{"http.response.status_code": "200"})
	}
}

// A client that moves its bytes through io_uring makes no read or write
// syscall on its socket: the socket hooks see the bytes move, in a call
// whose registers name no buffer. They are counted and logged as unread,
// never taken from a wrong buffer, and the client runs on unharmed.
func TestIOUringCountedUnread(t *testing.T) {
	python := testutil.RequireTool(t, "python3")
	port := freePort(t)
	startProc(t, nil, python, "-m", "http.server", "--bind", "127.0.0.1", "--directory", t.TempDir(), port)
	addr := "127.0.0.1:" + port
	waitPort(t, addr)
	s := startSonde(t, nil, "--exe", "uringsend")
	if out := run(t, bins.uringsend, addr); !strings.HasPrefix(out, "HTTP/1.0 404") {
		t.Fatalf("uringsend got %q, want python's 404", out)
	}
	const warning = "socket bytes moved by calls sonde cannot read"
	waitFor(t, 10*time.Second, "the unread calls to be logged", func() bool { return s.countLogs(warning) > 0 })
	r := s.stop(t)
	// The send, and the receive, which completes inline or from a worker.
	if n := r.stat("unread_calls"); n < 2 {
		t.Errorf("unread_calls = %v, want the send and the receive", n)
	}
	if len(r.spans) != 0 {
		t.Errorf("spans from bytes sonde could not read:\n%v", r.spans)
	}
}

// mmsgAttached is what sonde logs when it attaches the sendmmsg and
// recvmmsg exits on demand.
const mmsgAttached = "a traced process moves TCP bytes with sendmmsg/recvmmsg"

// startVecServer starts testdata/vecpeer's server on the calls named and
// returns its address.
func startVecServer(t *testing.T, calls string) string {
	t.Helper()
	p := startProc(t, nil, bins.vecpeer, calls, "serve")
	var addr string
	waitFor(t, 10*time.Second, "vecpeer to listen", func() bool {
		line, _, ok := strings.Cut(p.stdout.String(), "\n")
		addr, _ = strings.CutPrefix(line, "listening ")
		return ok
	})
	return addr
}

// vecPaths are what TestVectoredCalls and TestMmsgMessages request, and the
// status each gets.
var vecPaths = map[string]string{"/a": "200", "/status/404": "404", "/b": "200"}

// getVec requests vecPaths with testdata/vecpeer's client on the calls
// named, over one connection.
func getVec(t *testing.T, calls, addr string) {
	t.Helper()
	if out := run(t, bins.vecpeer, calls, "get", addr, "/a", "/status/404", "/b"); out != "200 16\n404 0\n200 16\n" {
		t.Fatalf("vecpeer %s get: got %q", calls, out)
	}
}

// wantVecSpans checks that spans hold a server and a client span of each
// of vecPaths, and nothing else, with the server span the client's child.
func wantVecSpans(t *testing.T, spans []span, addr string) {
	t.Helper()
	servers := filter(spans, func(s span) bool { return s.Kind == "server" })
	clients := filter(spans, func(s span) bool { return s.Kind == "client" })
	if len(servers) != len(vecPaths) || len(clients) != len(vecPaths) {
		t.Fatalf("want %d server and %d client spans, got %d and %d:\n%v", len(vecPaths), len(vecPaths), len(servers), len(clients), spans)
	}
	for path, status := range vecPaths {
		sv := findSpan(t, servers, "url.path", path)
		wantAttrs(t, sv, map[string]string{"http.request.method": "GET", "http.response.status_code": status,
			"user_agent.original": "vecpeer", "network.protocol.version": "1.1"})
		c := findSpan(t, clients, "url.full", "http://"+addr+path)
		wantAttrs(t, c, map[string]string{"http.request.method": "GET", "http.response.status_code": status})
		if sv.TraceID != c.TraceID || sv.ParentSpanID != c.SpanID {
			t.Errorf("server span of %s is not the client span's child:\n%s\n%s", path, c, sv)
		}
	}
}

// HTTP/1.1 moved by writev and readv, and by sendmsg and recvmsg, alone:
// each request and response is sent in two iovecs, and received into two
// buffers, the first too small for either. The bytes are read from every
// iovec in order.
func TestVectoredCalls(t *testing.T) {
	for _, calls := range []string{"vec", "msg"} {
		t.Run(calls, func(t *testing.T) {
			addr := startVecServer(t, calls)
			s := startSonde(t, nil, "--exe", "vecpeer")
			getVec(t, calls, addr)
			r := s.stop(t)
			wantNoParseErrors(t, r)
			wantVecSpans(t, r.spans, addr)
			if n := r.stat("unread_calls"); n != 0 {
				t.Errorf("unread_calls = %v, want 0", n)
			}
		})
	}
}

// HTTP/1.1 over TCP moved by sendmmsg and recvmmsg alone: each request and
// response is two messages of one call, received into a vector whose first
// buffer is too small for either. The socket-layer hooks see each message
// move, but not where it sits in the vector: a selected process's first
// such call is counted as unread, and sonde attaches the two calls' exit
// programs, which read every message from then on. With the syscall hooks
// the exits are the data path from the start.
func TestMmsgMessages(t *testing.T) {
	addr := startVecServer(t, "mmsg")
	s := startSonde(t, nil, "--exe", "vecpeer")
	syscallHooks := dataHooks == "syscalls"
	if out := run(t, bins.vecpeer, "mmsg", "get", addr, "/warmup"); out != "200 16\n" {
		t.Fatalf("warm-up exchange: got %q", out)
	}
	if !syscallHooks {
		waitFor(t, 10*time.Second, "the sendmmsg/recvmmsg exits to be attached", func() bool { return s.countLogs(mmsgAttached) > 0 })
	}
	getVec(t, "mmsg", addr)
	r := s.stop(t)

	warmup := func(s span) bool {
		return s.attr("url.path") == "/warmup" || strings.HasSuffix(s.attr("url.full"), "/warmup")
	}
	wantVecSpans(t, filter(r.spans, func(s span) bool { return !warmup(s) }), addr)
	if syscallHooks {
		wantNoParseErrors(t, r)
		if n := r.stat("unread_calls"); n != 0 {
			t.Errorf("unread_calls = %v with the syscall hooks, want 0", n)
		}
		if n := len(filter(r.spans, warmup)); n != 2 {
			t.Errorf("want the warm-up's server and client spans, got %d:\n%v", n, r.spans)
		}
		if s.countLogs(mmsgAttached) != 0 {
			t.Errorf("the exits were attached on demand, but they are the data path already")
		}
		return
	}
	// The warm-up's calls, seen before the exits were attached: counted,
	// and at most one parse error at each end of its connection.
	if n := r.stat("unread_calls"); n < 2 {
		t.Errorf("unread_calls = %v, want the warm-up's calls", n)
	}
	if n := r.stat("parse_errors_total"); n > 2 {
		t.Errorf("parse_errors_total = %v, want at most the warm-up connection's two ends", n)
	}
	if n := s.countLogs(mmsgAttached); n != 1 {
		t.Errorf("the exits were attached %d times, want once", n)
	}
}

// With --data-hooks=socket sonde attaches no syscall tracepoint, ever:
// sendmmsg and recvmmsg bytes stay counted and logged as unread, with no
// span from them, and the peers run on unharmed.
func TestMmsgSocketHooksOnly(t *testing.T) {
	addr := startVecServer(t, "mmsg")
	s := startSonde(t, nil, "--exe", "vecpeer", "--data-hooks", "socket")
	if out := run(t, bins.vecpeer, "mmsg", "get", addr, "/a", "/b"); out != "200 16\n200 16\n" {
		t.Fatalf("vecpeer mmsg get: got %q", out)
	}
	const warning = "socket bytes moved by calls sonde cannot read"
	waitFor(t, 10*time.Second, "the unread calls to be logged", func() bool { return s.countLogs(warning) > 0 })
	// Both ends' sends and receives of the two exchanges.
	waitFor(t, 10*time.Second, "every call to be counted", func() bool {
		return s.countLogs(mmsgAttached) > 0 || unreadLogged(s) >= 8
	})
	r := s.stop(t)
	if n := s.countLogs(mmsgAttached); n != 0 {
		t.Errorf("sonde attached the sendmmsg/recvmmsg exits with --data-hooks=socket")
	}
	if n := r.stat("unread_calls"); n < 8 {
		t.Errorf("unread_calls = %v, want at least each side's 2 sends and 2 receives", n)
	}
	if len(r.spans) != 0 {
		t.Errorf("spans from bytes sonde did not read:\n%v", r.spans)
	}
}

// unreadLogged is the calls_total of sonde's last unread-calls warning.
func unreadLogged(s *sondeRun) float64 {
	var last float64
	for _, rec := range s.logRecords() {
		if msg, _ := rec["msg"].(string); strings.HasPrefix(msg, "socket bytes moved by calls sonde cannot read") {
			last, _ = rec["calls_total"].(float64)
		}
	}
	return last
}

// Kernels before 6.3 have no socket-layer tracepoints, and sonde reads
// socket bytes at the syscall exits instead (--data-hooks=syscalls, what
// auto falls back to). The core HTTP/1 tests run again on that path.
func TestSyscallDataHooks(t *testing.T) {
	for _, tc := range []struct {
		name string
		test func(*testing.T)
	}{
		{"PythonServerCurlClient", TestPythonServerCurlClient},
		{"GoServerAndClient", TestGoServerAndClient},
		{"WrkKeepAlive", TestWrkKeepAlive},
		{"SplitAndPipelined", TestSplitAndPipelined},
		{"CloseDelimitedBody", TestCloseDelimitedBody},
		{"GarbageOnConnection", TestGarbageOnConnection},
		{"ConnectionOpenedBeforeAttach", TestConnectionOpenedBeforeAttach},
		{"NginxSendfile", TestNginxSendfile},
		{"TLSOpenSSLTools", TestTLSOpenSSLTools},
		{"VectoredCalls", TestVectoredCalls},
		{"MmsgMessages", TestMmsgMessages},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataHooks = "syscalls"
			defer func() { dataHooks = "" }()
			tc.test(t)
		})
	}
}
