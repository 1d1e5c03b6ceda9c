package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
)

// Binaries built once per test run by TestMain.
var bins struct {
	dir                                string
	sonde, goserver, goclient, rategen string
	sleepserver, h2cserver, grpcpair   string
	spanfloor, syscallfloor, uringsend string
	vecpeer                            string
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "sonde-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bins.dir = dir
	bins.sonde = filepath.Join(dir, "sonde")
	bins.goserver = filepath.Join(dir, "goserver")
	bins.goclient = filepath.Join(dir, "goclient")
	bins.rategen = filepath.Join(dir, "rategen")
	bins.sleepserver = filepath.Join(dir, "sleepserver")
	bins.h2cserver = filepath.Join(dir, "h2cserver")
	bins.grpcpair = filepath.Join(dir, "grpcpair")
	bins.spanfloor = filepath.Join(dir, "spanfloor")
	bins.syscallfloor = filepath.Join(dir, "syscallfloor")
	bins.uringsend = filepath.Join(dir, "uringsend")
	bins.vecpeer = filepath.Join(dir, "vecpeer")
	for out, pkg := range map[string]string{
		bins.sonde:        "../cmd/sonde",
		bins.goserver:     "./testdata/goserver",
		bins.goclient:     "./testdata/goclient",
		bins.rategen:      "./testdata/rategen",
		bins.sleepserver:  "./testdata/sleepserver",
		bins.h2cserver:    "./testdata/h2cserver",
		bins.grpcpair:     "./testdata/grpcpair",
		bins.spanfloor:    "./testdata/spanfloor",
		bins.syscallfloor: "./testdata/syscallfloor",
		bins.uringsend:    "./testdata/uringsend",
		bins.vecpeer:      "./testdata/vecpeer",
	} {
		cmd := exec.Command("go", "build", "-o", out, pkg)
		if b, err := cmd.CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "build %s: %v\n%s", pkg, err, b)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// requireTracing ends the test unless sonde can trace on this machine.
func requireTracing(t testing.TB) {
	t.Helper()
	testutil.RequireRoot(t)
	testutil.RequireBPF(t)
	testutil.RequireTracepoints(t)
}

// span is one line of `sonde trace --output json`.
type span struct {
	TraceID      string    `json:"trace_id"`
	SpanID       string    `json:"span_id"`
	ParentSpanID string    `json:"parent_span_id"`
	Name         string    `json:"name"`
	Kind         string    `json:"kind"`
	Start        time.Time `json:"start"`
	End          time.Time `json:"end"`
	Status       struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	} `json:"status"`
	Attributes map[string]any `json:"attributes"`
	Resource   map[string]any `json:"resource"`
	raw        string
}

func (s span) attr(k string) string {
	v, ok := s.Attributes[k]
	if !ok {
		return ""
	}
	if f, ok := v.(float64); ok {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

func (s span) res(k string) string {
	v, ok := s.Resource[k]
	if !ok {
		return ""
	}
	if f, ok := v.(float64); ok {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return fmt.Sprint(v)
}

func (s span) String() string { return s.raw }

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// sondeRun is a running `sonde trace`.
type sondeRun struct {
	cmd            *exec.Cmd
	stdout, stderr lockedBuffer
	done           chan error
}

type sondeResult struct {
	spans []span
	stats map[string]any
	logs  []map[string]any
}

// startSonde runs `sonde trace --output json --log-format json ARGS` and
// waits until every probe is attached. env is added to sonde's environment.
func startSonde(t testing.TB, env []string, args ...string) *sondeRun {
	t.Helper()
	return startSondeBinary(t, bins.sonde, env, args...)
}

// startSondeBinary is startSonde with another sonde build, at path bin.
func startSondeBinary(t testing.TB, bin string, env []string, args ...string) *sondeRun {
	t.Helper()
	requireTracing(t)
	s := launchSonde(t, exec.Command(bin, traceArgs(args)...), env)
	s.waitReady(t, 60*time.Second)
	return s
}

// dataHooks, when set, is the --data-hooks of every sonde the tests start
// (TestSyscallDataHooks), and waitReady checks that sonde took them.
var dataHooks string

// traceArgs are sonde's arguments for a test run: JSON logs, and JSON spans
// unless the test chose an output.
func traceArgs(args []string) []string {
	full := append([]string{"trace", "--log-format", "json"}, args...)
	if !hasFlag(args, "--output") {
		full = append(full, "--output", "json")
	}
	if dataHooks != "" && !hasFlag(args, "--data-hooks") {
		full = append(full, "--data-hooks", dataHooks)
	}
	return full
}

// launchSonde starts cmd, a sonde run, capturing its output, and makes
// sure it is gone when the test ends.
func launchSonde(t testing.TB, cmd *exec.Cmd, env []string) *sondeRun {
	t.Helper()
	s := &sondeRun{cmd: cmd, done: make(chan error, 1)}
	s.cmd.Env = append(os.Environ(), env...)
	s.cmd.Stdout, s.cmd.Stderr = &s.stdout, &s.stderr
	if err := s.cmd.Start(); err != nil {
		t.Fatalf("start sonde: %v", err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			s.cmd.Process.Kill()
			<-s.done
		}
		if t.Failed() {
			t.Logf("sonde stderr:\n%s", tail(s.stderr.String(), 40))
		}
	})
	return s
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == name || strings.HasPrefix(a, name+"=") {
			return true
		}
	}
	return false
}

// stop sends SIGINT, waits for sonde to flush and exit, and parses what it
// wrote. A non-zero exit fails the test.
func (s *sondeRun) stop(t testing.TB) sondeResult {
	t.Helper()
	// Let the kernel's last events of the traffic reach the ring buffer.
	time.Sleep(300 * time.Millisecond)
	s.cmd.Process.Signal(syscall.SIGINT)
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("sonde exited with %v\n%s", err, tail(s.stderr.String(), 40))
		}
	case <-time.After(30 * time.Second):
		s.cmd.Process.Kill()
		t.Fatalf("sonde did not exit within 30s of SIGINT\n%s", tail(s.stderr.String(), 40))
	}
	var r sondeResult
	sc := bufio.NewScanner(strings.NewReader(s.stdout.String()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var sp span
		if err := json.Unmarshal(sc.Bytes(), &sp); err != nil {
			t.Fatalf("sonde wrote a line that is not a JSON span: %v\n%s", err, sc.Text())
		}
		sp.raw = sc.Text()
		r.spans = append(r.spans, sp)
	}
	for _, line := range strings.Split(s.stderr.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) != nil {
			continue
		}
		r.logs = append(r.logs, rec)
		if rec["msg"] == "final stats" {
			r.stats = rec
		}
	}
	if r.stats == nil {
		t.Fatalf("sonde logged no final stats:\n%s", tail(s.stderr.String(), 40))
	}
	return r
}

func (r sondeResult) stat(name string) float64 {
	v, _ := r.stats[name].(float64)
	return v
}

// filter returns the spans for which keep is true.
func filter(spans []span, keep func(span) bool) []span {
	var out []span
	for _, s := range spans {
		if keep(s) {
			out = append(out, s)
		}
	}
	return out
}

func byPID(pid int) func(span) bool {
	want := strconv.Itoa(pid)
	return func(s span) bool { return s.res("process.pid") == want }
}

func tail(s string, lines int) string {
	parts := strings.Split(s, "\n")
	if len(parts) > lines {
		parts = parts[len(parts)-lines:]
	}
	return strings.Join(parts, "\n")
}

// proc is a peer program started by a test and killed at its end.
type proc struct {
	cmd    *exec.Cmd
	stdout lockedBuffer
	stderr lockedBuffer
	done   chan error
}

func startProc(t testing.TB, env []string, name string, args ...string) *proc {
	t.Helper()
	p := &proc{done: make(chan error, 1)}
	p.cmd = exec.Command(name, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.stdout, &p.stderr
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			p.cmd.Process.Kill()
			<-p.done
		}
	})
	return p
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// alive reports whether the process is still running.
func (p *proc) alive() bool {
	select {
	case err := <-p.done:
		p.done <- err
		return false
	default:
		return true
	}
}

// goServer is testdata/goserver, a plain net/http server.
type goServer struct {
	*proc
	addr string
}

func startGoServer(t testing.TB, env ...string) *goServer {
	t.Helper()
	return startGoServerUnder(t, nil, env...)
}

// startGoServerUnder starts the Go server under a command prefix such as
// taskset's.
func startGoServerUnder(t testing.TB, prefix []string, env ...string) *goServer {
	t.Helper()
	var p *proc
	if len(prefix) > 0 {
		p = startProc(t, env, prefix[0], append(prefix[1:], bins.goserver)...)
	} else {
		p = startProc(t, env, bins.goserver)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if line, _, ok := strings.Cut(p.stdout.String(), "\n"); ok {
			addr, ok := strings.CutPrefix(line, "listening ")
			if !ok {
				t.Fatalf("goserver said %q", line)
			}
			return &goServer{proc: p, addr: addr}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("goserver did not start: %s", p.stderr.String())
	return nil
}

func (g *goServer) port() string {
	_, port, _ := net.SplitHostPort(g.addr)
	return port
}

// served stops the server and returns how many requests it handled.
func (g *goServer) served(t testing.TB) int {
	t.Helper()
	g.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-g.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("goserver did not stop")
	}
	for _, line := range strings.Split(g.stdout.String(), "\n") {
		if n, ok := strings.CutPrefix(line, "served "); ok {
			v, err := strconv.Atoi(n)
			if err != nil {
				t.Fatalf("goserver said %q", line)
			}
			return v
		}
	}
	t.Fatalf("goserver did not report its count: %q", g.stdout.String())
	return 0
}

func freePort(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	_, port, _ := net.SplitHostPort(l.Addr().String())
	return port
}

func waitPort(t testing.TB, addr string) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("nothing listens on %s", addr)
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// startSondeUnder is startSonde with sonde run through a command prefix,
// such as setpriv or unshare: prefix[0] is executed with the rest of
// prefix, then sonde and its arguments.
func startSondeUnder(t testing.TB, prefix, env []string, args ...string) *sondeRun {
	t.Helper()
	requireTracing(t)
	argv := append(append(append([]string{}, prefix[1:]...), bins.sonde), traceArgs(args)...)
	s := launchSonde(t, exec.Command(prefix[0], argv...), env)
	s.waitReady(t, 60*time.Second)
	return s
}

// waitReady waits until sonde logs that it is tracing.
func (s *sondeRun) waitReady(t testing.TB, timeout time.Duration) {
	t.Helper()
	deadline := time.After(timeout)
	for !strings.Contains(s.stderr.String(), `"msg":"tracing"`) {
		select {
		case err := <-s.done:
			s.done <- err
			t.Fatalf("sonde exited before tracing: %v\n%s", err, s.stderr.String())
		case <-deadline:
			t.Fatalf("sonde not ready after %v:\n%s", timeout, s.stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	if want := `"data_hooks":"` + dataHooks + `"`; dataHooks != "" && !strings.Contains(s.stderr.String(), want) {
		t.Fatalf("sonde is not tracing with --data-hooks %s:\n%s", dataHooks, s.stderr.String())
	}
}

// pid is the process id of sonde, or of the prefix that execs it.
func (s *sondeRun) pid() int { return s.cmd.Process.Pid }

// exited reports whether sonde has exited, without waiting.
func (s *sondeRun) exited() bool {
	select {
	case err := <-s.done:
		s.done <- err
		return true
	default:
		return false
	}
}

// kill sends SIGKILL and waits for sonde to be gone.
func (s *sondeRun) kill(t testing.TB) {
	t.Helper()
	s.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case <-s.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("sonde did not die of SIGKILL")
	}
}

// logRecords parses the JSON log records sonde wrote so far.
func (s *sondeRun) logRecords() []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(s.stderr.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil {
			out = append(out, rec)
		}
	}
	return out
}

// countLogs counts the log records whose message starts with prefix.
func (s *sondeRun) countLogs(prefix string) int {
	n := 0
	for _, rec := range s.logRecords() {
		if strings.HasPrefix(fmt.Sprint(rec["msg"]), prefix) {
			n++
		}
	}
	return n
}

// jsonSpans parses the spans sonde wrote to stdout so far; a line still
// being written is left out.
func (s *sondeRun) jsonSpans() []span {
	var out []span
	for _, line := range strings.Split(s.stdout.String(), "\n") {
		var sp span
		if json.Unmarshal([]byte(line), &sp) == nil {
			sp.raw = line
			out = append(out, sp)
		}
	}
	return out
}

// waitFor polls cond until it holds, and fails the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// procStatusKB reads a "kB" field of /proc/PID/status, such as VmHWM or
// VmRSS; it returns -1 when the process or the field is gone.
func procStatusKB(pid int, field string) int {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, field+":"); ok {
			n, err := strconv.Atoi(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")))
			if err == nil {
				return n
			}
		}
	}
	return -1
}
