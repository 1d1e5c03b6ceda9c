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
	} {
		t.Run(tc.name, func(t *testing.T) {
			dataHooks = "syscalls"
			defer func() { dataHooks = "" }()
			tc.test(t)
		})
	}
}
