package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	spec "github.com/sondehq/sonde/internal/gospec"
	"github.com/sondehq/sonde/internal/testutil"
)

// grpc-go under uprobes: the gRPC pair built against the oldest supported
// grpc-go, one from the middle and the newest (gospec.GRPCE2E), stripped so
// that the offsets come from offsets/grpc.json; bins.grpcpair is the same
// program at this module's grpc-go with DWARF.

var grpcBuilds struct {
	once sync.Once
	dir  string
	bins map[string]string // by grpc-go version
	err  error
	took time.Duration
}

// grpcpairAt returns the gRPC pair built against each of spec.GRPCE2E,
// stripped. The builds resolve grpc-go through the module proxy, three at
// once.
func grpcpairAt(t *testing.T) map[string]string {
	t.Helper()
	grpcBuilds.once.Do(func() {
		start := time.Now()
		grpcBuilds.dir = filepath.Join(bins.dir, "grpc-versions")
		grpcBuilds.bins = map[string]string{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, v := range spec.GRPCE2E {
			wg.Add(1)
			go func() {
				defer wg.Done()
				bin, err := spec.BuildGRPC(grpcBuilds.dir, "testdata/grpcpair", v, "grpcpair-"+v, "-ldflags=-s -w")
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					grpcBuilds.err = errors.Join(grpcBuilds.err, err)
					return
				}
				grpcBuilds.bins[v] = bin
			}()
		}
		wg.Wait()
		grpcBuilds.took = time.Since(start)
	})
	if grpcBuilds.err != nil {
		t.Fatalf("build the gRPC pair: %v", grpcBuilds.err)
	}
	return grpcBuilds.bins
}

// waitGoProbesOn waits until sonde has attached its Go probes to every
// executable in paths, with grpc-go's among them, and wants no warning.
func waitGoProbesOn(t *testing.T, s *sondeRun, paths ...string) {
	t.Helper()
	waitFor(t, 60*time.Second, "Go probes with grpc-go on "+strings.Join(paths, ", "), func() bool {
		attached := map[string]bool{}
		for _, rec := range s.logRecords() {
			if rec["msg"] == "Go probes attached" && rec["grpc"] == true {
				attached[fmt.Sprint(rec["exe"])] = true
			}
		}
		for _, p := range paths {
			if !attached[p] {
				return false
			}
		}
		return true
	})
	wantNoGoProbeWarnings(t, s)
}

var grpcMethods = []string{"Unary", "ServerStream", "ClientStream", "Bidi"}

// checkGRPCSpans checks the spans of one side of `grpcpair client ADDR
// rounds`: each kind of call rounds times and one failing call, every one
// a single span from the Go probes (merged with its socket view: nothing
// doubled), named by its method, with its status.
func checkGRPCSpans(t *testing.T, label string, spans []span, rounds int, port string) {
	t.Helper()
	count := map[string]int{}
	for _, sp := range spans {
		count[sp.Name]++
		want := map[string]string{
			"rpc.system.name": "grpc", "rpc.method": sp.Name, "rpc.response.status_code": "OK",
			"sonde.source": "go", "network.protocol.version": "2",
		}
		if sp.Kind == "client" {
			want["server.address"], want["server.port"] = "127.0.0.1", port
		}
		if sp.Name == "sonde.test.Echo/Fail" {
			want["rpc.response.status_code"], want["error.type"] = "NOT_FOUND", "NOT_FOUND"
			if sp.Status.Code != "Error" || sp.Status.Message != "no such echo" {
				t.Errorf("%s: the failing call's span: %s", label, sp)
			}
		} else if sp.Status.Code == "Error" {
			t.Errorf("%s: a call that succeeded fails its span: %s", label, sp)
		}
		if sp.End.Before(sp.Start) {
			t.Errorf("%s: span ends before it starts: %s", label, sp)
		}
		for k, v := range want {
			if got := sp.attr(k); got != v {
				t.Errorf("%s: %s=%q, want %q: %s", label, k, got, v, sp)
			}
		}
	}
	for _, m := range grpcMethods {
		if got := count["sonde.test.Echo/"+m]; got != rounds {
			t.Errorf("%s: %d spans of %s, want %d", label, got, m, rounds)
		}
	}
	if got := count["sonde.test.Echo/Fail"]; got != 1 {
		t.Errorf("%s: %d spans of Fail, want 1", label, got)
	}
	if len(spans) != rounds*len(grpcMethods)+1 {
		names := make([]string, 0, len(spans))
		for _, sp := range spans {
			names = append(names, sp.Kind+" "+sp.Name+" "+sp.attr("sonde.source"))
		}
		sort.Strings(names)
		t.Errorf("%s: %d spans, want %d: %v", label, len(spans), rounds*len(grpcMethods)+1, names)
	}
}

// Unary, server-streaming, client-streaming and bidi calls of grpc-go
// v1.56, v1.66 and the newest, stripped (offsets from the table), and of
// this module's grpc-go with DWARF: each call is one server and one client
// span from the uprobes, whose streaming spans end with the stream.
func TestGRPCGoProbes(t *testing.T) {
	requireTracing(t)
	testutil.RequireUprobes(t)
	versions := grpcpairAt(t)
	t.Logf("gRPC pair built against %d grpc-go versions in %v", len(versions), grpcBuilds.took.Round(time.Millisecond))
	type target struct {
		label, bin string
		srv        *proc
		addr       string
	}
	var targets []*target
	for _, v := range spec.GRPCE2E {
		targets = append(targets, &target{label: "grpc " + v + " stripped", bin: versions[v]})
	}
	targets = append(targets, &target{label: "grpc of go.mod, DWARF", bin: bins.grpcpair})
	var paths []string
	for _, tg := range targets {
		tg.srv, tg.addr = startListener(t, tg.bin, "server")
		paths = append(paths, tg.bin)
	}
	s := startSonde(t, nil, "--exe", filepath.Join(grpcBuilds.dir, "grpcpair-*"), "--exe", bins.grpcpair)
	waitGoProbesOn(t, s, paths...)
	const rounds = 3
	clients := map[*target]*proc{}
	for _, tg := range targets {
		// The client is the same executable: its probes are in place
		// when it starts.
		c := startProc(t, nil, tg.bin, "client", tg.addr, strconv.Itoa(rounds))
		if err := <-c.done; err != nil || c.stdout.String() != fmt.Sprintf("ok %d\n", rounds) {
			t.Fatalf("%s client: %v %q %s", tg.label, err, c.stdout.String(), c.stderr.String())
		}
		clients[tg] = c
	}
	want := 2 * len(targets) * (rounds*len(grpcMethods) + 1)
	waitFor(t, 30*time.Second, "the gRPC spans", func() bool {
		n := 0
		for _, sp := range s.jsonSpans() {
			if strings.Contains(sp.Name, "sonde.test.Echo/") {
				n++
			}
		}
		return n >= want
	})
	r := s.stop(t)
	for _, tg := range targets {
		_, port, _ := strings.Cut(tg.addr, ":")
		checkGRPCSpans(t, tg.label+" server", filter(r.spans, byPID(tg.srv.pid())), rounds, port)
		checkGRPCSpans(t, tg.label+" client", filter(r.spans, byPID(clients[tg].pid())), rounds, port)
	}
	if got := r.stat("go_grpc_spans"); got != float64(want) {
		t.Errorf("go_grpc_spans = %v, want %d", got, want)
	}
	wantNoParseErrors(t, r)
}

// In-process linking: an HTTP request to a Go front makes a gRPC call,
// whose handler makes an HTTP call to python. In each Go process the call
// made while serving is the child of the span served, and an incoming
// traceparent, in HTTP headers or in gRPC metadata (from grpcurl), is the
// parent of what it starts.
func TestGRPCInProcess(t *testing.T) {
	requireTracing(t)
	testutil.RequireUprobes(t)
	python := testutil.RequireTool(t, "python3")
	curl := testutil.RequireTool(t, "curl")
	grpcurl := grpcurlBin(t)

	pyPort := freePort(t)
	py := startProc(t, nil, python, "-m", "http.server", "--bind", "127.0.0.1", pyPort)
	waitPort(t, "127.0.0.1:"+pyPort)
	srv, addr := startListener(t, bins.grpcpair, "server", "http://127.0.0.1:"+pyPort+"/")
	front, frontAddr := startListener(t, bins.grpcpair, "front", addr)
	s := startSonde(t, nil, "--pid", strconv.Itoa(srv.pid()), "--pid", strconv.Itoa(front.pid()), "--pid", strconv.Itoa(py.pid()))
	waitGoProbesOn(t, s, bins.grpcpair)

	const n = 3
	traceIDs := map[string]string{} // trace ID → the caller's span ID
	for i := range n {
		tid, sid := fmt.Sprintf("%032x", 0xabc000+i), fmt.Sprintf("%016x", 0xdef000+i)
		traceIDs[tid] = sid
		out, err := exec.Command(curl, "-sS", "-H", "traceparent: 00-"+tid+"-"+sid+"-01", "http://"+frontAddr+"/").CombinedOutput()
		if err != nil || string(out) != "front" {
			t.Fatalf("curl: %v %q", err, out)
		}
	}
	// grpcurl sends the traceparent as gRPC metadata.
	gtid, gsid := strings.Repeat("5", 32), strings.Repeat("6", 16)
	proto := writeEchoProto(t)
	out, err := exec.Command(grpcurl, "-plaintext", "-import-path", filepath.Dir(proto), "-proto", filepath.Base(proto),
		"-H", "traceparent: 00-"+gtid+"-"+gsid+"-01", "-d", `{"data":"aGk="}`, addr, "sonde.test.Echo/Unary").CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"data": "aGk="`) {
		t.Fatalf("grpcurl: %v\n%s", err, out)
	}

	waitFor(t, 30*time.Second, "the chain's spans", func() bool {
		return len(filter(s.jsonSpans(), byPID(py.pid()))) >= n+1
	})
	r := s.stop(t)
	byID := map[string]span{}
	for _, sp := range r.spans {
		byID[sp.SpanID] = sp
	}
	child := func(parent span, pid int, kind, name string) (span, bool) {
		for _, sp := range filter(r.spans, byPID(pid)) {
			if sp.ParentSpanID == parent.SpanID && sp.TraceID == parent.TraceID && sp.Kind == kind && sp.Name == name {
				return sp, true
			}
		}
		return span{}, false
	}
	served := 0
	for _, sp := range filter(r.spans, byPID(front.pid())) {
		if sp.Kind != "server" {
			continue
		}
		served++
		if traceIDs[sp.TraceID] != sp.ParentSpanID {
			t.Errorf("front's span does not continue the incoming traceparent: %s", sp)
		}
		call, ok := child(sp, front.pid(), "client", "sonde.test.Echo/Unary")
		if !ok {
			t.Errorf("front: no gRPC client call under %s", sp)
			continue
		}
		if call.attr("sonde.source") != "go" {
			t.Errorf("front's gRPC call is not from the probes: %s", call)
		}
	}
	if served != n {
		t.Errorf("front served %d spans, want %d", served, n)
	}
	handled, withParent := 0, 0
	for _, sp := range filter(r.spans, byPID(srv.pid())) {
		if sp.Kind != "server" {
			continue
		}
		handled++
		if sp.Name != "sonde.test.Echo/Unary" || sp.attr("sonde.source") != "go" {
			t.Errorf("gRPC server span: %s", sp)
		}
		if sp.TraceID == gtid {
			withParent++
			if sp.ParentSpanID != gsid {
				t.Errorf("the gRPC server span does not continue grpcurl's traceparent: %s", sp)
			}
		}
		get, ok := child(sp, srv.pid(), "client", "GET")
		if !ok {
			t.Errorf("gRPC handler: no HTTP client call under %s", sp)
			continue
		}
		if get.attr("sonde.source") != "go" || get.attr("url.full") != "http://127.0.0.1:"+pyPort+"/" {
			t.Errorf("the handler's HTTP call: %s", get)
		}
	}
	if handled != n+1 || withParent != 1 {
		t.Errorf("gRPC server spans: %d (want %d), %d in grpcurl's trace (want 1)", handled, n+1, withParent)
	}
	if got := len(filter(r.spans, byPID(py.pid()))); got != n+1 {
		t.Errorf("python served %d spans, want %d", got, n+1)
	}
}

// grpcurl, a gRPC client no one here wrote, against the grpc-go server:
// the calls it makes, a good one and a failing one, are the server's spans
// with the right names and codes.
func TestGRPCurl(t *testing.T) {
	requireTracing(t)
	testutil.RequireUprobes(t)
	grpcurl := grpcurlBin(t)
	proto := writeEchoProto(t)
	srv, addr := startListener(t, bins.grpcpair, "server")
	s := startSonde(t, nil, "--pid", strconv.Itoa(srv.pid()), "--exe", "grpcurl")
	waitGoProbesOn(t, s, bins.grpcpair)
	call := func(method string) ([]byte, error) {
		return exec.Command(grpcurl, "-plaintext", "-import-path", filepath.Dir(proto), "-proto", filepath.Base(proto),
			"-d", `{"data":"aGk="}`, addr, "sonde.test.Echo/"+method).CombinedOutput()
	}
	const n = 3
	for range n {
		if out, err := call("Unary"); err != nil {
			t.Fatalf("grpcurl Unary: %v\n%s", err, out)
		}
	}
	if out, err := call("Fail"); err == nil || !strings.Contains(string(out), "NotFound") {
		t.Fatalf("grpcurl Fail: %v\n%s", err, out)
	}
	waitFor(t, 30*time.Second, "grpcurl's spans", func() bool {
		return len(filter(s.jsonSpans(), func(sp span) bool { return exeName(sp) == "grpcurl" })) >= n+1
	})
	r := s.stop(t)
	for _, side := range []struct {
		label string
		spans []span
	}{
		{"grpc-go server", filter(r.spans, byPID(srv.pid()))},
		{"grpcurl", filter(r.spans, func(sp span) bool { return exeName(sp) == "grpcurl" })},
	} {
		count := map[string]int{}
		for _, sp := range side.spans {
			count[sp.Name+" "+sp.attr("rpc.response.status_code")]++
			if sp.attr("rpc.system.name") != "grpc" || (sp.Name == "sonde.test.Echo/Fail") != (sp.Status.Code == "Error") {
				t.Errorf("%s: %s", side.label, sp)
			}
		}
		if count["sonde.test.Echo/Unary OK"] != n || count["sonde.test.Echo/Fail NOT_FOUND"] != 1 || len(side.spans) != n+1 {
			t.Errorf("%s: spans %v, want %d Unary OK and one Fail NOT_FOUND", side.label, count, n)
		}
	}
}

// An attach while a gRPC connection is open: its HPACK state was built
// before sonde saw a byte, so the socket view cannot decode the headers of
// later calls; the probes read the method from the process, and every call
// is one span with its own name, never another stream's.
func TestGRPCAttachMidConnection(t *testing.T) {
	requireTracing(t)
	testutil.RequireUprobes(t)
	srv, addr := startListener(t, bins.grpcpair, "server")
	const n = 5
	hold := startProc(t, nil, bins.grpcpair, "hold", addr, strconv.Itoa(n))
	waitFor(t, 15*time.Second, "the long-lived client's first call", func() bool {
		return strings.Contains(hold.stdout.String(), "ready")
	})
	s := startSonde(t, nil, "--pid", strconv.Itoa(srv.pid()), "--pid", strconv.Itoa(hold.pid()))
	waitGoProbesOn(t, s, bins.grpcpair)
	if err := hold.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	if err := <-hold.done; err != nil {
		t.Fatalf("hold: %v %s", err, hold.stderr.String())
	}
	waitFor(t, 30*time.Second, "the calls' spans", func() bool {
		return len(s.jsonSpans()) >= 2*n
	})
	time.Sleep(1500 * time.Millisecond) // any socket view left alone is exported after its hold
	r := s.stop(t)
	for _, pid := range []int{srv.pid(), hold.pid()} {
		spans := filter(r.spans, byPID(pid))
		if len(spans) != n {
			t.Errorf("pid %d: %d spans, want %d", pid, len(spans), n)
		}
		for _, sp := range spans {
			if sp.Name != "sonde.test.Echo/Unary" || sp.attr("sonde.source") != "go" || sp.attr("rpc.response.status_code") != "OK" {
				t.Errorf("pid %d: %s", pid, sp)
			}
			if sp.attr("sonde.http2.headers_unknown") != "" {
				t.Errorf("a span the probes read whole says its headers are unknown: %s", sp)
			}
		}
	}
	t.Logf("http2 headers unknown: %v, parse errors: %v", r.stats["http2_headers_unknown"], r.stats["parse_errors"])
}

var grpcurlInstall struct {
	once sync.Once
	path string
	err  error
}

// grpcurlVersion is the grpcurl the tests install from the module proxy.
const grpcurlVersion = "v1.9.4"

// grpcurlBin installs grpcurl once per user cache (it takes minutes to
// build) and returns its path.
func grpcurlBin(t *testing.T) string {
	t.Helper()
	grpcurlInstall.once.Do(func() {
		base, err := os.UserCacheDir()
		if err != nil {
			base = os.TempDir()
		}
		dir := filepath.Join(base, "sonde-e2e", "grpcurl-"+grpcurlVersion)
		bin := filepath.Join(dir, "grpcurl")
		if fi, err := os.Stat(bin); err == nil && fi.Mode().IsRegular() {
			grpcurlInstall.path = bin
			return
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			grpcurlInstall.err = err
			return
		}
		// Installed beside its final place and renamed: an interrupted
		// install leaves no half-written binary.
		work, err := os.MkdirTemp(dir, "install-")
		if err != nil {
			grpcurlInstall.err = err
			return
		}
		defer os.RemoveAll(work)
		cmd := exec.Command("go", "install", "github.com/fullstorydev/grpcurl/cmd/grpcurl@"+grpcurlVersion)
		cmd.Env = append(os.Environ(), "GOBIN="+work, "GOFLAGS=", "GOWORK=off", "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			grpcurlInstall.err = fmt.Errorf("go install grpcurl: %w\n%s", err, out)
			return
		}
		if err := os.Rename(filepath.Join(work, "grpcurl"), bin); err != nil {
			grpcurlInstall.err = err
			return
		}
		grpcurlInstall.path = bin
	})
	if grpcurlInstall.err != nil {
		t.Fatal(grpcurlInstall.err)
	}
	return grpcurlInstall.path
}

// writeEchoProto writes the schema of the gRPC pair's service for grpcurl:
// the pair passes raw bytes through, so any message shape echoes.
func writeEchoProto(t *testing.T) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "echo.proto")
	const src = `syntax = "proto3";
package sonde.test;
message Msg { bytes data = 1; }
service Echo {
  rpc Unary(Msg) returns (Msg);
  rpc Fail(Msg) returns (Msg);
}
`
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestGRPCConnectionReuse: the Go probes remember each grpc-go server
// connection's fd by the address of its transport, which a closed
// connection leaves free for a later one. Clients that connect a few at a
// time, round after round, against a server that collects its garbage
// after every little allocation: each call must still meet its socket view
// on its own connection, one span per call from the probes, none doubled.
func TestGRPCConnectionReuse(t *testing.T) {
	requireTracing(t)
	testutil.RequireUprobes(t)
	srv, addr := startListenerEnv(t, []string{"GOGC=1"}, bins.grpcpair, "server")
	s := startSonde(t, nil, "--pid", strconv.Itoa(srv.pid()))
	waitGoProbesOn(t, s, bins.grpcpair)
	const rounds, clients = 8, 3
	for range rounds {
		var wg sync.WaitGroup
		errs := make(chan error, clients)
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				if out, err := exec.Command(bins.grpcpair, "client", addr, "1").CombinedOutput(); err != nil {
					errs <- fmt.Errorf("grpcpair client: %v\n%s", err, out)
				}
			}()
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
	}
	calls := rounds * clients * (len(grpcMethods) + 1)
	waitFor(t, 30*time.Second, "a span per call", func() bool { return len(s.jsonSpans()) >= calls })
	r := s.stop(t)
	spans := filter(r.spans, byPID(srv.pid()))
	if len(spans) != calls {
		t.Errorf("%d server spans, want %d", len(spans), calls)
	}
	for _, sp := range spans {
		if sp.Kind != "server" || sp.attr("sonde.source") != "go" {
			t.Errorf("not a server span from the Go probes (its twin was not met): %s", sp)
		}
	}
}
