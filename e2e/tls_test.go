package e2e

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
)

// HTTPS read through sonde's OpenSSL probes: the plaintext of SSL_read and
// SSL_write gives the same spans as plain HTTP/1.x, with url.scheme https,
// and the ciphertext on the same sockets gives neither a span nor a parse
// error. Every peer is an untouched Debian program linked with Debian's
// libssl3: nginx, curl, openssl and /usr/bin/python3 (not the pyenv
// python3 that may come first in PATH).

// tlsPython is Debian's python3, linked with the system libssl.
const tlsPython = "/usr/bin/python3"

// tlsScripts holds the python servers and clients of these tests.
var tlsScripts = filepath.Join("testdata", "tls")

func requirePython(t testing.TB) string {
	t.Helper()
	if _, err := os.Stat(tlsPython); err != nil {
		testutil.Unmet(t, "needs Debian's %s: %v", tlsPython, err)
	}
	return tlsPython
}

func tlsScript(t testing.TB, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join(tlsScripts, name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// tlsCert makes a self-signed certificate for localhost and 127.0.0.1.
func tlsCert(t testing.TB) (cert, key string) {
	t.Helper()
	openssl := testutil.RequireTool(t, "openssl")
	dir := t.TempDir()
	cert, key = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	run(t, openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=localhost",
		"-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-days", "1",
		"-keyout", key, "-out", cert)
	return cert, key
}

// startNginx runs nginx, a master and one worker, with every file it writes
// in a temporary directory and the given server blocks. It waits until the
// worker is forked and addr accepts connections.
func startNginx(t testing.TB, addr, servers string) *proc {
	t.Helper()
	return startNginxWith(t, nil, addr, servers)
}

// startNginxWith starts nginx under a command prefix, such as one that
// enters a network namespace.
func startNginxWith(t testing.TB, prefix []string, addr, servers string) *proc {
	t.Helper()
	nginx := testutil.RequireTool(t, "nginx")
	dir := t.TempDir()
	conf := fmt.Sprintf(`daemon off;
master_process on;
worker_processes 1;
user root;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 512; }
http {
  access_log %[1]s/access.log;
  client_body_temp_path %[1]s/client_body;
  proxy_temp_path %[1]s/proxy;
  fastcgi_temp_path %[1]s/fastcgi;
  uwsgi_temp_path %[1]s/uwsgi;
  scgi_temp_path %[1]s/scgi;
  default_type text/plain;
%[2]s
}
`, dir, servers)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	args := append(append(prefix[:len(prefix):len(prefix)], nginx), "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
	p := startProc(t, nil, args[0], args[1:]...)
	// Registered after startProc's cleanup, so it runs first: a SIGKILLed
	// master leaves its worker running and holding the port, so ask the
	// master to stop, and kill what is left of its workers after.
	t.Cleanup(func() {
		if !p.alive() {
			return
		}
		workers := childPIDs(p.pid())
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			p.done <- nil
		case <-time.After(10 * time.Second):
		}
		for _, w := range workers {
			syscall.Kill(w, syscall.SIGKILL)
		}
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Logf("nginx error.log:\n%s", tail(string(b), 20))
		}
	})
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(readFile(filepath.Join(dir, "nginx.pid")), strconv.Itoa(p.pid())) {
		if !p.alive() || time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			t.Fatalf("nginx did not start: %s\n%s", p.stderr.String(), b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// The master writes its pid file before it forks the worker.
	for len(childPIDs(p.pid())) == 0 {
		if !p.alive() || time.Now().After(deadline) {
			t.Fatalf("nginx started no worker: %s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	waitPort(t, addr)
	return p
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// childPIDs lists the children of pid.
func childPIDs(pid int) []int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(b)) {
		if n, err := strconv.Atoi(f); err == nil {
			out = append(out, n)
		}
	}
	return out
}

// startTLSPythonServer runs testdata/tls/server.py on a free port and
// returns it with the port.
func startTLSPythonServer(t testing.TB, cert, key string) (*proc, string) {
	t.Helper()
	python := requirePython(t)
	port := freePort(t)
	p := startProc(t, nil, python, tlsScript(t, "server.py"), port, cert, key)
	waitFor(t, 15*time.Second, "the python TLS server", func() bool {
		if !p.alive() {
			t.Fatalf("the python TLS server exited: %s", p.stderr.String())
		}
		return strings.Contains(p.stdout.String(), "listening "+port)
	})
	return p, port
}

func exeName(s span) string { return s.res("process.executable.name") }

func isPython(s span) bool { return strings.HasPrefix(exeName(s), "python3") }

// tlsSummary describes spans by kind, executable and scheme, with a few
// samples, for a failure message.
func tlsSummary(r sondeResult) string {
	counts := map[string]int{}
	for _, s := range r.spans {
		counts[fmt.Sprintf("%s/%s/%s", s.Kind, exeName(s), s.attr("url.scheme"))]++
	}
	keys := make([]string, 0, len(counts))
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	fmt.Fprintf(&b, "%d spans (kind/exe/scheme):", len(r.spans))
	for _, k := range keys {
		fmt.Fprintf(&b, " %s=%d", k, counts[k])
	}
	fmt.Fprintf(&b, "\nparse_errors %v, tls_unpaired %v, lost %v", r.stats["parse_errors"], r.stats["tls_unpaired"], r.stats["lost"])
	// Each span in one line: which exchange, of which process, when.
	for _, s := range r.spans {
		what := s.attr("url.full")
		if what == "" {
			what = s.attr("url.path")
		}
		fmt.Fprintf(&b, "\n  %s %s pid=%s %s %s span=%s parent=%s start=%s status=%s", s.Kind, exeName(s), s.res("process.pid"), s.Name, what,
			s.SpanID, s.ParentSpanID, s.Start.Format("15:04:05.000000"), s.attr("http.response.status_code"))
	}
	return b.String()
}

// wantTLSClean: the ciphertext was neither parsed nor taken for garbage,
// and every plaintext chunk belonged to a known socket.
func wantTLSClean(t *testing.T, r sondeResult) {
	t.Helper()
	wantNoParseErrors(t, r)
	if n := r.stat("tls_unpaired"); n != 0 {
		t.Errorf("%v plaintext chunks on sockets sonde did not know (tls_unpaired)", n)
	}
	if n := r.stat("lost"); n != 0 {
		t.Errorf("%v events lost", n)
	}
}

// sslAttached returns the files whose OpenSSL functions sonde said it
// probed.
func sslAttached(r sondeResult) []string {
	var files []string
	for _, l := range r.logs {
		if l["msg"] == "OpenSSL probes attached" {
			files = append(files, fmt.Sprint(l["file"]))
		}
	}
	return files
}

func wantLibsslProbed(t *testing.T, r sondeResult) {
	t.Helper()
	for _, f := range sslAttached(r) {
		if strings.Contains(filepath.Base(f), "libssl.so") {
			return
		}
	}
	t.Errorf("sonde did not log \"OpenSSL probes attached\" for a libssl; it did for %q", sslAttached(r))
}

// curl to nginx over TLS, nginx proxying in plain HTTP to python: both legs
// of nginx are traced, the TLS one with url.scheme https.
func TestTLSNginxProxy(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	python := requirePython(t)
	cert, key := tlsCert(t)
	www := t.TempDir()
	os.WriteFile(filepath.Join(www, "hello.txt"), []byte("hello over TLS\n"), 0o644)
	const n = 20

	s := startSonde(t, nil, "--exe", "nginx", "--exe", "curl", "--exe", "python3*")
	backend := freePort(t)
	py := startProc(t, nil, python, "-m", "http.server", "--bind", "127.0.0.1", "--directory", www, backend)
	waitPort(t, "127.0.0.1:"+backend)
	port := freePort(t)
	startNginx(t, "127.0.0.1:"+port, fmt.Sprintf(`  server {
    listen 127.0.0.1:%s ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    location / { proxy_pass http://127.0.0.1:%s; }
  }`, port, cert, key, backend))
	target := "https://127.0.0.1:" + port + "/hello.txt"
	for i := range n {
		out := run(t, curl, "-sk", "--http1.1", "-w", "\n%{http_code}", target)
		if out != "hello over TLS\n\n200" {
			t.Fatalf("curl %d got %q", i, out)
		}
	}
	r := s.stop(t)

	curls := filter(r.spans, func(s span) bool { return exeName(s) == "curl" })
	nginxServer := filter(r.spans, func(s span) bool { return exeName(s) == "nginx" && s.Kind == "server" })
	nginxClient := filter(r.spans, func(s span) bool { return exeName(s) == "nginx" && s.Kind == "client" })
	pyServer := filter(r.spans, byPID(py.pid()))
	if len(curls) != n || len(nginxServer) != n || len(nginxClient) != n || len(pyServer) != n || len(r.spans) != 4*n {
		t.Fatalf("want %d spans each of curl, nginx server, nginx client, python server; got %d, %d, %d, %d\n%s",
			n, len(curls), len(nginxServer), len(nginxClient), len(pyServer), tlsSummary(r))
	}
	for _, sp := range curls {
		wantAttrs(t, sp, map[string]string{
			"url.scheme": "https", "url.full": target, "http.request.method": "GET",
			"http.response.status_code": "200", "server.address": "127.0.0.1", "server.port": port,
			"network.protocol.version": "1.1",
		})
		if sp.Kind != "client" {
			t.Errorf("curl span is not a client span: %s", sp)
		}
	}
	for _, sp := range nginxServer {
		wantAttrs(t, sp, map[string]string{
			"url.scheme": "https", "url.path": "/hello.txt", "http.request.method": "GET",
			"http.response.status_code": "200", "server.address": "127.0.0.1", "server.port": port,
			"client.address": "127.0.0.1", "network.protocol.version": "1.1",
		})
	}
	for _, sp := range nginxClient {
		wantAttrs(t, sp, map[string]string{
			"url.scheme": "http", "url.full": "http://127.0.0.1:" + backend + "/hello.txt",
			"http.response.status_code": "200", "server.port": backend,
		})
	}
	for _, sp := range pyServer {
		wantAttrs(t, sp, map[string]string{
			"url.scheme": "http", "url.path": "/hello.txt", "http.response.status_code": "200",
		})
		if sp.Kind != "server" {
			t.Errorf("python span is not a server span: %s", sp)
		}
	}
	// Twenty curl processes, twenty connections to nginx.
	if c := len(distinct(nginxServer, "network.peer.port")); c != n {
		t.Errorf("want nginx server spans from %d connections, got %d", n, c)
	}
	// Same-host linking, through TLS and in clear: nginx's server span is
	// the child of curl's span, python's of nginx's upstream call.
	wantLinked(t, "nginx server under curl", nginxServer, curls)
	wantLinked(t, "python under nginx", pyServer, nginxClient)
	wantTLSClean(t, r)
	wantLibsslProbed(t, r)
}

// curl speaking HTTP/2 to nginx, negotiated by ALPN: the plaintext of
// SSL_read/SSL_write is HTTP/2 frames, parsed into one span per stream on
// each side.
func TestTLSNginxHTTP2(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	if !strings.Contains(run(t, curl, "--version"), "HTTP2") {
		testutil.Unmet(t, "curl has no HTTP/2")
	}
	cert, key := tlsCert(t)
	const n = 10

	s := startSonde(t, nil, "--exe", "nginx", "--exe", "curl")
	port := freePort(t)
	// nginx 1.22 (bookworm) enables HTTP/2 on the listen line; "http2 on;"
	// came with 1.25.1.
	startNginx(t, "127.0.0.1:"+port, fmt.Sprintf(`  server {
    listen 127.0.0.1:%s ssl http2;
    ssl_certificate %s;
    ssl_certificate_key %s;
    location / { return 200 "ok\n"; }
  }`, port, cert, key))
	for i := range n {
		out := run(t, curl, "-sk", "--http2", "-w", "\n%{http_code} %{http_version}", fmt.Sprintf("https://127.0.0.1:%s/h2/%d", port, i))
		if out != "ok\n\n200 2" {
			t.Fatalf("curl %d got %q", i, out)
		}
	}
	r := s.stop(t)
	wantLibsslProbed(t, r)
	// One HTTP/2 connection per curl: seen on both ends, client and server.
	if got := r.stat("http2_conns"); got != 2*n {
		t.Errorf("%v HTTP/2 connections recognised, want %d (curl's and nginx's end of each)\n%s", got, 2*n, tlsSummary(r))
	}
	curls := filter(r.spans, func(s span) bool { return exeName(s) == "curl" })
	servers := filter(r.spans, func(s span) bool { return exeName(s) == "nginx" })
	if len(curls) != n || len(servers) != n {
		t.Fatalf("want %d curl and %d nginx spans, got %d and %d\n%s", n, n, len(curls), len(servers), tlsSummary(r))
	}
	for i := range n {
		path := fmt.Sprintf("/h2/%d", i)
		c := findSpan(t, curls, "url.full", "https://127.0.0.1:"+port+path)
		wantAttrs(t, c, map[string]string{
			"url.scheme": "https", "network.protocol.version": "2", "http.request.method": "GET",
			"http.response.status_code": "200", "server.address": "127.0.0.1", "server.port": port,
		})
		sv := findSpan(t, servers, "url.path", path)
		wantAttrs(t, sv, map[string]string{
			"url.scheme": "https", "network.protocol.version": "2", "http.response.status_code": "200",
			"client.address": "127.0.0.1",
		})
		if c.Kind != "client" || sv.Kind != "server" {
			t.Errorf("kinds %s and %s, want client and server", c.Kind, sv.Kind)
		}
	}
	if r.stat("http2_headers_unknown") != 0 {
		t.Errorf("%v streams with unknown headers on connections seen from their start", r.stat("http2_headers_unknown"))
	}
	wantTLSClean(t, r)
	// What holds before and after the HTTP/2 parser: the frames (and the
	// preface, "PRI * HTTP/2.0") are never taken for HTTP/1 messages.
	for _, sp := range r.spans {
		if sp.attr("network.protocol.version") != "2" {
			t.Errorf("an HTTP/1 span made of HTTP/2 plaintext: %s", sp)
		}
	}
}

// A python client over one keep-alive http.client connection, then through
// urllib, to nginx over TLS.
func TestTLSPythonClient(t *testing.T) {
	python := requirePython(t)
	cert, key := tlsCert(t)

	s := startSonde(t, nil, "--exe", "nginx", "--exe", "python3*")
	port := freePort(t)
	startNginx(t, "127.0.0.1:"+port, fmt.Sprintf(`  server {
    listen 127.0.0.1:%s ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    location / { return 200 "ok\n"; }
  }`, port, cert, key))
	out := run(t, python, tlsScript(t, "client.py"), "keepalive", port, cert)
	if !strings.Contains(out, "keepalive ok 15") {
		t.Fatalf("client: %s", out)
	}
	r := s.stop(t)

	clients := filter(r.spans, func(s span) bool { return isPython(s) && s.Kind == "client" })
	servers := filter(r.spans, func(s span) bool { return exeName(s) == "nginx" && s.Kind == "server" })
	if len(clients) != 15 || len(servers) != 15 || len(r.spans) != 30 {
		t.Fatalf("want 15 python client and 15 nginx server spans, got %d and %d\n%s", len(clients), len(servers), tlsSummary(r))
	}
	base := "https://127.0.0.1:" + port
	var want []string
	for i := range 10 {
		want = append(want, fmt.Sprintf("/ka/%d", i))
	}
	for i := range 5 {
		want = append(want, fmt.Sprintf("/url/%d", i))
	}
	for _, p := range want {
		c := findSpan(t, clients, "url.full", base+p)
		wantAttrs(t, c, map[string]string{
			"url.scheme": "https", "http.request.method": "GET", "http.response.status_code": "200",
			"server.address": "127.0.0.1", "server.port": port,
		})
		sv := findSpan(t, servers, "url.path", p)
		wantAttrs(t, sv, map[string]string{"url.scheme": "https", "http.response.status_code": "200", "server.port": port})
	}
	// The ten http.client requests shared one connection.
	ka := filter(servers, func(s span) bool { return strings.HasPrefix(s.attr("url.path"), "/ka/") })
	if c := len(distinct(ka, "network.peer.port")); c != 1 {
		t.Errorf("want the keep-alive requests on one connection, nginx saw %d", c)
	}
	wantTLSClean(t, r)
	wantLibsslProbed(t, r)
}

// openssl's own test server and client: s_server -www answers a GET with a
// status page, HTTP/1.0 without Content-Length, written through a
// buffering BIO and ended by closing the connection.
func TestTLSOpenSSLTools(t *testing.T) {
	openssl := testutil.RequireTool(t, "openssl")
	cert, key := tlsCert(t)

	s := startSonde(t, nil, "--exe", "openssl")
	port := freePort(t)
	srv := startProc(t, nil, openssl, "s_server", "-accept", "127.0.0.1:"+port, "-cert", cert, "-key", key, "-www")
	// s_server prints ACCEPT once it listens; no probe connection needed.
	waitFor(t, 15*time.Second, "s_server", func() bool {
		if !srv.alive() {
			t.Fatalf("s_server exited: %s %s", srv.stdout.String(), srv.stderr.String())
		}
		return strings.Contains(srv.stdout.String(), "ACCEPT")
	})
	cl := exec.Command(openssl, "s_client", "-connect", "127.0.0.1:"+port, "-quiet")
	cl.Stdin = strings.NewReader("GET /status HTTP/1.0\r\n\r\n")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cl.Output(); close(done) }()
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		cl.Process.Kill()
		<-done
		t.Fatalf("s_client did not finish: %q", out)
	}
	if err != nil || !strings.HasPrefix(string(out), "HTTP/1.0 200 ok\r\n") {
		t.Fatalf("s_client: %v, %q", err, tail(string(out), 5))
	}
	r := s.stop(t)

	servers := filter(r.spans, func(s span) bool { return s.Kind == "server" })
	clients := filter(r.spans, func(s span) bool { return s.Kind == "client" })
	if len(servers) != 1 || len(clients) != 1 || len(r.spans) != 2 {
		t.Fatalf("want one server and one client span, got %d and %d\n%s", len(servers), len(clients), tlsSummary(r))
	}
	wantAttrs(t, servers[0], map[string]string{
		"url.scheme": "https", "url.path": "/status", "http.request.method": "GET",
		"http.response.status_code": "200", "server.port": port, "network.protocol.version": "1.0",
	})
	if servers[0].res("process.pid") != strconv.Itoa(srv.pid()) {
		t.Errorf("server span not of s_server (pid %d): %s", srv.pid(), servers[0])
	}
	wantAttrs(t, clients[0], map[string]string{
		"url.scheme": "https", "url.full": "https://127.0.0.1:" + port + "/status",
		"http.response.status_code": "200", "server.port": port,
	})
	if clients[0].res("process.pid") != strconv.Itoa(cl.Process.Pid) {
		t.Errorf("client span not of s_client (pid %d): %s", cl.Process.Pid, clients[0])
	}
	wantTLSClean(t, r)
	wantLibsslProbed(t, r)
}

// codeInPath is NNN of a /code/NNN path or URL.
func codeInPath(t *testing.T, u string) string {
	t.Helper()
	p, err := url.Parse(u)
	if err != nil {
		t.Fatalf("bad url %q: %v", u, err)
	}
	code, ok := strings.CutPrefix(p.Path, "/code/")
	if !ok {
		t.Fatalf("not a /code/ url: %q", u)
	}
	return code
}

// Sixteen threads of one python client, each with its own keep-alive
// connection, against a threading python server: every response's status
// is named by its request's path, so a span pairing a request with another
// connection's response shows.
func TestTLSConcurrentClients(t *testing.T) {
	python := requirePython(t)
	cert, key := tlsCert(t)

	s := startSonde(t, nil, "--exe", "python3*")
	srv, port := startTLSPythonServer(t, cert, key)
	out := run(t, python, tlsScript(t, "client.py"), "concurrent", port, cert)
	if !strings.Contains(out, "concurrent ok 320") {
		t.Fatalf("client: %s", out)
	}
	r := s.stop(t)

	servers := filter(r.spans, byPID(srv.pid()))
	clients := filter(r.spans, func(s span) bool { return s.res("process.pid") != strconv.Itoa(srv.pid()) })
	if len(servers) != 320 || len(clients) != 320 {
		t.Fatalf("want 320 server and 320 client spans, got %d and %d\n%s", len(servers), len(clients), tlsSummary(r))
	}
	bad := 0
	queries := map[string]bool{}
	for _, sp := range servers {
		if sp.Kind != "server" || sp.attr("url.scheme") != "https" || sp.attr("server.port") != port ||
			sp.attr("http.response.status_code") != codeInPath(t, sp.attr("url.path")) {
			if bad++; bad <= 5 {
				t.Errorf("server span: %s", sp)
			}
		}
		queries[sp.attr("url.query")] = true
	}
	for _, sp := range clients {
		if sp.Kind != "client" || sp.attr("url.scheme") != "https" ||
			sp.attr("server.port") != port || sp.attr("network.peer.port") != port ||
			sp.attr("http.response.status_code") != codeInPath(t, sp.attr("url.full")) {
			if bad++; bad <= 10 {
				t.Errorf("client span: %s", sp)
			}
		}
	}
	if bad > 0 {
		t.Errorf("%d bad spans", bad)
	}
	if len(queries) != 320 {
		t.Errorf("want 320 distinct requests on the server, got %d", len(queries))
	}
	if c := len(distinct(servers, "network.peer.port")); c != 16 {
		t.Errorf("want 16 connections, the server saw %d", c)
	}
	wantTLSClean(t, r)
	wantLibsslProbed(t, r)
}

// Reads that OpenSSL serves from its own buffer: the client reads each
// 20 KB response with recv(100), so most SSL_read calls make no syscall.
// The five requests share one keep-alive connection, so a body byte missed
// would leave the parser short of the Content-Length and the next
// response would not pair.
func TestTLSBufferedReads(t *testing.T) {
	python := requirePython(t)
	cert, key := tlsCert(t)

	s := startSonde(t, nil, "--exe", "python3*")
	srv, port := startTLSPythonServer(t, cert, key)
	out := run(t, python, tlsScript(t, "client.py"), "buffered", port, cert)
	if !strings.Contains(out, "buffered ok 5") {
		t.Fatalf("client: %s", out)
	}
	t.Logf("client: %s", strings.TrimSpace(out))
	r := s.stop(t)

	servers := filter(r.spans, byPID(srv.pid()))
	clients := filter(r.spans, func(s span) bool { return s.res("process.pid") != strconv.Itoa(srv.pid()) })
	if len(clients) != 5 || len(servers) != 5 {
		t.Fatalf("want 5 client and 5 server spans, got %d and %d\n%s", len(clients), len(servers), tlsSummary(r))
	}
	for i := range 5 {
		c := findSpan(t, clients, "url.full", fmt.Sprintf("https://127.0.0.1:%s/big?n=20000&r=%d", port, i))
		wantAttrs(t, c, map[string]string{"url.scheme": "https", "http.response.status_code": "200", "server.port": port})
		if c.Kind != "client" {
			t.Errorf("not a client span: %s", c)
		}
		if c.attr("sonde.capture.truncated") != "" {
			t.Errorf("client span marked truncated: %s", c)
		}
		sv := findSpan(t, servers, "url.query", fmt.Sprintf("n=20000&r=%d", i))
		wantAttrs(t, sv, map[string]string{"url.scheme": "https", "url.path": "/big", "http.response.status_code": "200"})
	}
	wantTLSClean(t, r)
	wantLibsslProbed(t, r)
}

// With --tls=false no library is probed: HTTPS stays ciphertext, which is
// recognised and counted, never parsed as garbage, while plain HTTP on the
// same host is traced as before.
func TestTLSOff(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	cert, key := tlsCert(t)
	const n = 5

	s := startSonde(t, nil, "--exe", "nginx", "--exe", "curl", "--tls=false")
	tlsPort, plainPort := freePort(t), freePort(t)
	startNginx(t, "127.0.0.1:"+tlsPort, fmt.Sprintf(`  server {
    listen 127.0.0.1:%s ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    location / { return 200 "ok\n"; }
  }
  server {
    listen 127.0.0.1:%s;
    location / { return 200 "ok\n"; }
  }`, tlsPort, cert, key, plainPort))
	waitPort(t, "127.0.0.1:"+plainPort)
	for i := range n {
		run(t, curl, "-sk", "--http1.1", fmt.Sprintf("https://127.0.0.1:%s/secret/%d", tlsPort, i))
		run(t, curl, "-s", fmt.Sprintf("http://127.0.0.1:%s/plain/%d", plainPort, i))
	}
	r := s.stop(t)
	if files := sslAttached(r); len(files) != 0 || r.stat("ssl_libraries") != 0 {
		t.Errorf("--tls=false probed %v (ssl_libraries %v)", files, r.stats["ssl_libraries"])
	}
	for _, sp := range r.spans {
		if sp.attr("url.scheme") != "http" || strings.Contains(sp.attr("url.path")+sp.attr("url.full"), "/secret/") {
			t.Errorf("a span of TLS traffic with --tls=false: %s", sp)
		}
	}
	if got := len(r.spans); got != 2*n {
		t.Errorf("want %d plain HTTP spans (curl and nginx), got %d\n%s", 2*n, got, tlsSummary(r))
	}
	if r.stat("ciphertext_events") == 0 {
		t.Errorf("no ciphertext recognised on %d TLS connections", n)
	}
	wantNoParseErrors(t, r)
}
