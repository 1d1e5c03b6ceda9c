package e2e

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
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

// The Go uprobes, proven on every supported toolchain: testdata/gochain
// built by the newest patch of each minor version in the offsets matrix
// (gospec.Latest), each three ways, run over HTTP/1.1 and
// over HTTPS with HTTP/2, under one sonde.

// gochainModes are the build modes of the matrix, the offsets tests' own.
var gochainModes = []struct {
	name  string
	flags []string
}{
	{"default", nil},
	{"stripped", []string{"-ldflags=-s -w"}},
	{"pie", []string{"-buildmode=pie"}},
}

// gochainBin is testdata/gochain built by one toolchain in one mode.
type gochainBin struct {
	toolchain string
	minor     int
	mode      string
	path      string
}

var gochain struct {
	once        sync.Once
	dir         string // every binary, and nothing else: sonde selects exe=dir/*
	bins        []*gochainBin
	unavailable []error // toolchains that could not be downloaded
	err         error
	took        time.Duration
}

// gochainBins builds the matrix once per test binary run and returns it.
// A toolchain that cannot be downloaded skips the test locally and fails
// it in CI; a toolchain that fails to build fails it.
func gochainBins(t *testing.T) []*gochainBin {
	t.Helper()
	gochain.once.Do(buildGochains)
	if gochain.err != nil {
		t.Fatal(gochain.err)
	}
	if len(gochain.unavailable) > 0 {
		testutil.Unmet(t, "%v", errors.Join(gochain.unavailable...))
	}
	return gochain.bins
}

func buildGochains() {
	start := time.Now()
	defer func() { gochain.took = time.Since(start) }()
	tcs := spec.Latest
	src, err := os.ReadFile(filepath.Join("testdata", "gochain", "main.go"))
	if err != nil {
		gochain.err = err
		return
	}
	gochain.dir = filepath.Join(bins.dir, "gochain")
	var mu sync.Mutex
	var wg sync.WaitGroup
	var errs []error
	// Toolchains build in parallel, three at a time, as the offsets tests
	// do; a toolchain's modes build in sequence, sharing its cache.
	sem := make(chan struct{}, 3)
	for _, tc := range tcs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			mod := filepath.Join(bins.dir, "gochain-src", tc)
			err := os.MkdirAll(mod, 0o755)
			if err == nil {
				err = os.MkdirAll(gochain.dir, 0o755)
			}
			if err == nil {
				err = os.WriteFile(filepath.Join(mod, "main.go"), src, 0o644)
			}
			if err == nil {
				err = os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module gochain\n\ngo 1.21\n"), 0o644)
			}
			if err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
				return
			}
			if out, err := spec.GoCmd(mod, tc, "version").CombinedOutput(); err != nil {
				mu.Lock()
				gochain.unavailable = append(gochain.unavailable,
					fmt.Errorf("toolchain %s unavailable: %v: %s", tc, err, strings.TrimSpace(string(out))))
				mu.Unlock()
				return
			}
			for _, m := range gochainModes {
				b := &gochainBin{toolchain: tc, minor: spec.Minor(tc), mode: m.name,
					path: filepath.Join(gochain.dir, "gochain-"+tc+"-"+m.name)}
				args := append([]string{"build", "-trimpath", "-o", b.path}, m.flags...)
				out, err := spec.GoCmd(mod, tc, append(args, ".")...).CombinedOutput()
				mu.Lock()
				if err != nil {
					errs = append(errs, fmt.Errorf("%s build %s: %v\n%s", tc, m.name, err, out))
				} else {
					gochain.bins = append(gochain.bins, b)
				}
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	gochain.err = errors.Join(errs...)
	sort.Slice(gochain.bins, func(i, j int) bool {
		a, b := gochain.bins[i], gochain.bins[j]
		if a.minor != b.minor {
			return a.minor < b.minor
		}
		return modeIndex(a.mode) < modeIndex(b.mode)
	})
}

func modeIndex(mode string) int {
	for i, m := range gochainModes {
		if m.name == mode {
			return i
		}
	}
	return -1
}

// chainProc is a running gochain.
type chainProc struct {
	*proc
	bin         *gochainBin
	tls         bool
	front, back string
	client      *http.Client
	wantRoute   bool // its ServeMux reports Request.Pattern
	tag         string
	mu          sync.Mutex
	ids         []string // the /chain IDs it was asked for
	errs        []string // what the test's own client saw go wrong
}

func (c *chainProc) name() string {
	proto := "h1"
	if c.tls {
		proto = "h2+tls"
	}
	return c.bin.toolchain + "/" + c.bin.mode + "/" + proto
}

func (c *chainProc) scheme() string {
	if c.tls {
		return "https"
	}
	return "http"
}

// startChain starts a gochain. Plain ones run the Go 1.22 ServeMux
// (GODEBUG=httpmuxgo121=0), so that Go 1.23+ fills Request.Pattern; TLS
// ones keep what their go.mod's "go 1.21" selects, the Go 1.21 mux, which
// fills no Pattern on any version: sonde must then report no route.
func startChain(t *testing.T, b *gochainBin, useTLS bool, args ...string) *chainProc {
	t.Helper()
	c := &chainProc{bin: b, tls: useTLS}
	c.tag = strings.NewReplacer("go1.", "g", ".", "_").Replace(b.toolchain) + "-" + b.mode
	env := []string{"GODEBUG=httpmuxgo121=0"}
	var cert string
	if useTLS {
		c.tag += "-tls"
		cert = filepath.Join(t.TempDir(), "cert.pem")
		env = []string{"GOCHAIN_CERT=" + cert}
		args = append([]string{"-tls"}, args...)
	}
	c.wantRoute = !useTLS && b.minor >= 23
	c.proc = startProc(t, env, b.path, args...)
	deadline := time.Now().Add(15 * time.Second)
	for c.back == "" {
		if time.Now().After(deadline) || !c.alive() {
			t.Fatalf("%s did not start: %q %s", c.name(), c.stdout.String(), c.stderr.String())
		}
		for _, line := range strings.Split(c.stdout.String(), "\n") {
			if v, ok := strings.CutPrefix(line, "front "); ok {
				c.front = v
			}
			if v, ok := strings.CutPrefix(line, "back "); ok {
				c.back = v
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	tr := &http.Transport{ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 32}
	if useTLS {
		pemBytes, err := os.ReadFile(cert)
		if err != nil {
			t.Fatalf("%s: %v", c.name(), err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			t.Fatalf("%s wrote no certificate to %s", c.name(), cert)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	}
	c.client = &http.Client{Transport: tr, Timeout: 20 * time.Second}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

// chain asks for /chain/ID and records what went wrong, if anything.
func (c *chainProc) chain(id string) {
	c.mu.Lock()
	c.ids = append(c.ids, id)
	c.mu.Unlock()
	fail := func(format string, args ...any) {
		c.mu.Lock()
		c.errs = append(c.errs, fmt.Sprintf("/chain/"+id+": "+format, args...))
		c.mu.Unlock()
	}
	resp, err := c.client.Get(c.scheme() + "://" + c.front + "/chain/" + id)
	if err != nil {
		fail("%v", err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	wantMajor := 1
	if c.tls {
		wantMajor = 2
	}
	switch {
	case resp.StatusCode != 200:
		fail("status %s: %s", resp.Status, body)
	case resp.ProtoMajor != wantMajor:
		fail("served over %s, want HTTP/%d", resp.Proto, wantMajor)
	case strings.TrimSpace(string(body)) != "chain "+id:
		fail("body %q", body)
	}
}

// drive asks for n chains in sequence, then conc chains at once.
func (c *chainProc) drive(n, conc int) {
	for i := 0; i < n; i++ {
		c.chain(fmt.Sprintf("%s-s%d", c.tag, i))
	}
	var wg sync.WaitGroup
	for i := 0; i < conc; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			c.chain(fmt.Sprintf("%s-c%d", c.tag, i))
		}(i)
	}
	wg.Wait()
}

// wantSpans is how many spans the chains asked of c make: per chain its
// server span, and per leaf a client span and a server span.
func (c *chainProc) wantSpans() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return 7 * len(c.ids)
}

// waitGoProbes waits until sonde attached its Go probes to every binary,
// and fails on any Go program it left to socket capture.
func waitGoProbes(t *testing.T, s *sondeRun, paths []string) {
	t.Helper()
	waitFor(t, 60*time.Second, "Go probes on every gochain binary", func() bool {
		attached := map[string]bool{}
		for _, rec := range s.logRecords() {
			if rec["msg"] == "Go probes attached" {
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

func wantNoGoProbeWarnings(t *testing.T, s *sondeRun) {
	t.Helper()
	for _, rec := range s.logRecords() {
		msg := fmt.Sprint(rec["msg"])
		if strings.HasPrefix(msg, "Go program left to socket capture") || strings.HasPrefix(msg, "Go probe not attached") {
			t.Errorf("sonde: %v", rec)
		}
	}
}

// waitChainSpans waits, for at most timeout, until sonde has written as
// many spans of the processes as their chains make, so that no view
// still waits for its twin when sonde is stopped.
func waitChainSpans(s *sondeRun, procs []*chainProc, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		spans := s.jsonSpans()
		done := true
		for _, c := range procs {
			if len(filter(spans, byPID(c.pid()))) < c.wantSpans() {
				done = false
				break
			}
		}
		if done {
			// A duplicate, if any, comes within a twin's hold.
			time.Sleep(1500 * time.Millisecond)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// checkChains checks the spans of one gochain against the chains it was
// asked for, reporting through errorf, and returns their shape with the
// IDs, ports and timings taken out: the same program gives the same shape
// whatever its build mode.
func checkChains(c *chainProc, all []span, errorf func(format string, args ...any)) []string {
	c.mu.Lock()
	ids := slices.Clone(c.ids)
	for _, e := range c.errs {
		errorf("test client: %s", e)
	}
	c.mu.Unlock()
	mine := filter(all, byPID(c.pid()))
	version := "1.1"
	if c.tls {
		version = "2"
	}
	servers := map[string][]span{} // by url.path
	clients := map[string][]span{} // by the path of url.full
	for _, s := range mine {
		if s.attr("sonde.source") != "go" {
			errorf("a span not from the Go probes: %s", s)
		}
		switch s.Kind {
		case "server":
			servers[s.attr("url.path")] = append(servers[s.attr("url.path")], s)
		case "client":
			path := s.attr("url.full")
			if _, rest, ok := strings.Cut(path, "://"); ok {
				path = rest[strings.IndexByte(rest+"/", '/'):]
			}
			clients[path] = append(clients[path], s)
		default:
			errorf("a span of kind %q: %s", s.Kind, s)
		}
	}
	if len(mine) != c.wantSpans() {
		errorf("%d spans, want %d (%d chains)", len(mine), c.wantSpans(), len(ids))
	}
	one := func(what string, m map[string][]span, key string) (span, bool) {
		got := m[key]
		if len(got) != 1 {
			errorf("%d %s spans for %s, want 1: %v", len(got), what, key, got)
			return span{}, false
		}
		delete(m, key)
		return got[0], true
	}
	route := func(s span, want string) {
		if !c.wantRoute {
			want = ""
		}
		if got := s.attr("http.route"); got != want {
			errorf("http.route = %q, want %q: %s", got, want, s)
		}
		name := "GET"
		if want != "" {
			name += " " + want
		}
		if s.Name != name {
			errorf("name %q, want %q: %s", s.Name, name, s)
		}
	}
	common := func(s span) {
		for k, v := range map[string]string{
			"http.request.method":       "GET",
			"http.response.status_code": "200",
			"url.scheme":                c.scheme(),
			"network.protocol.version":  version,
		} {
			if got := s.attr(k); got != v {
				errorf("%s = %q, want %q: %s", k, got, v, s)
			}
		}
		if s.Status.Code == "Error" {
			errorf("status Error: %s", s)
		}
		if !s.End.After(s.Start) {
			errorf("ends before it starts: %s", s)
		}
	}
	var shape []string
	norm := strings.NewReplacer(c.tag, "ID", c.back, "BACK", c.front, "FRONT")
	shapeOf := func(s span, rel string) string {
		keys := []string{"http.route", "http.request.method", "http.response.status_code", "url.scheme",
			"network.protocol.version", "url.path", "url.full", "server.address", "sonde.source"}
		parts := []string{s.Kind, s.Name, s.Status.Code, rel}
		for _, k := range keys {
			parts = append(parts, k+"="+s.attr(k))
		}
		return norm.Replace(strings.Join(parts, " "))
	}
	for _, id := range ids {
		srv, ok := one("server", servers, "/chain/"+id)
		if !ok {
			continue
		}
		common(srv)
		route(srv, "/chain/")
		shape = append(shape, shapeOf(srv, "root="+strconv.FormatBool(srv.ParentSpanID == "")))
		for _, leaf := range []string{"-a", "-b", "-c"} {
			path := "/leaf/" + id + leaf
			url := c.scheme() + "://" + c.back + path
			if cl, ok := one("client", clients, path); ok {
				common(cl)
				if got := cl.attr("url.full"); got != url {
					errorf("url.full = %q, want %q: %s", got, url, cl)
				}
				if cl.ParentSpanID != srv.SpanID || cl.TraceID != srv.TraceID {
					errorf("client %s: parent %s in trace %s, want its request %s in trace %s: %s",
						path, cl.ParentSpanID, cl.TraceID, srv.SpanID, srv.TraceID, cl)
				}
				if cl.attr("server.address") != "127.0.0.1" {
					errorf("server.address = %q: %s", cl.attr("server.address"), cl)
				}
				shape = append(shape, shapeOf(cl, "child-of-chain="+strconv.FormatBool(cl.ParentSpanID == srv.SpanID)))
			}
			if ls, ok := one("server", servers, path); ok {
				common(ls)
				route(ls, "/leaf/")
				shape = append(shape, shapeOf(ls, ""))
			}
		}
	}
	// What is left was not asked for: a duplicate, or a call crossed
	// with another request's.
	for _, m := range []map[string][]span{servers, clients} {
		for k, ss := range m {
			errorf("%d unexpected spans for %s: %v", len(ss), k, ss)
		}
	}
	sort.Strings(shape)
	return shape
}

// TestGoMatrix: every toolchain, every build mode, HTTP/1.1 and HTTP/2
// over TLS, all under one sonde. Each process gets 3 chains in sequence;
// the default builds get 16 more at once, whose calls must each stay with
// their own request.
func TestGoMatrix(t *testing.T) {
	requireTracing(t)
	testutil.RequireUprobes(t)
	binsList := gochainBins(t)
	t.Logf("gochain matrix: %d binaries built in %v", len(binsList), gochain.took.Round(time.Millisecond))

	var procs []*chainProc
	var paths []string
	for _, b := range binsList {
		paths = append(paths, b.path)
		for _, useTLS := range []bool{false, true} {
			procs = append(procs, startChain(t, b, useTLS))
		}
	}
	start := time.Now()
	s := startSonde(t, nil, "--select", "exe="+gochain.dir+"/*")
	waitGoProbes(t, s, paths)
	t.Logf("sonde attached to %d binaries in %v", len(paths), time.Since(start).Round(time.Millisecond))

	var wg sync.WaitGroup
	for _, c := range procs {
		wg.Add(1)
		go func(c *chainProc) {
			defer wg.Done()
			conc := 0
			if c.bin.mode == "default" {
				conc = 16
			}
			c.drive(3, conc)
		}(c)
	}
	wg.Wait()
	t.Logf("requests done in %v", time.Since(start).Round(time.Millisecond))
	waitChainSpans(s, procs, 30*time.Second)
	t.Logf("spans in %v", time.Since(start).Round(time.Millisecond))
	stopAt := time.Now()
	r := s.stop(t)
	t.Logf("sonde stopped %v after it started (SIGINT at about %s; final stats at %v)", time.Since(start).Round(time.Millisecond),
		stopAt.Add(300*time.Millisecond).UTC().Format("15:04:05.000"), r.stats["time"])
	wantNoGoProbeWarnings(t, s)
	dumpSpans(t, r)
	// The socket view cannot read TLS: each TLS connection counts as one
	// not_http parse error, which the Go view makes up for.
	t.Logf("parse errors: %v", r.stats["parse_errors"])

	type cell struct {
		errs  []string
		shape []string
	}
	cells := map[*chainProc]*cell{}
	for _, c := range procs {
		cl := &cell{}
		cl.shape = checkChains(c, r.spans, func(format string, args ...any) {
			cl.errs = append(cl.errs, fmt.Sprintf(format, args...))
		})
		cells[c] = cl
	}
	// A toolchain's build modes must agree: compare each with its default
	// build, same protocol.
	for _, c := range procs {
		if c.bin.mode == "default" {
			continue
		}
		for _, d := range procs {
			if d.bin.toolchain != c.bin.toolchain || d.bin.mode != "default" || d.tls != c.tls {
				continue
			}
			// The default build had 16 more chains: compare the shared ones.
			want := slices.DeleteFunc(slices.Clone(cells[d].shape), func(s string) bool {
				return strings.Contains(s, "ID-c")
			})
			if !slices.Equal(cells[c].shape, want) {
				cells[c].errs = append(cells[c].errs, fmt.Sprintf("spans differ from the default build's:\n got %q\nwant %q", cells[c].shape, want))
			}
		}
	}

	// The table, then the details.
	var tb strings.Builder
	fmt.Fprintf(&tb, "\n%-12s", "toolchain")
	for _, m := range gochainModes {
		fmt.Fprintf(&tb, " %-14s %-14s", m.name+"/h1", m.name+"/h2+tls")
	}
	tb.WriteString("\n")
	for i := 0; i < len(procs); i += 2 * len(gochainModes) {
		fmt.Fprintf(&tb, "%-12s", procs[i].bin.toolchain)
		for _, c := range procs[i : i+2*len(gochainModes)] {
			res := "ok"
			if n := len(cells[c].errs); n > 0 {
				res = fmt.Sprintf("FAIL(%d)", n)
			}
			fmt.Fprintf(&tb, " %-14s", res)
		}
		tb.WriteString("\n")
	}
	t.Logf("matrix (%d spans):%s", len(r.spans), tb.String())
	for _, c := range procs {
		reportGrouped(t, c, cells[c].errs)
	}
}

// reportGrouped reports a process's errors once per kind, with a count
// and the first example: a wrong attribute is wrong on every span.
func reportGrouped(t *testing.T, c *chainProc, errs []string) {
	t.Helper()
	type group struct {
		n     int
		first string
	}
	groups := map[string]*group{}
	var order []string
	for _, e := range errs {
		kind := e
		if i := strings.IndexAny(e, "\":/"); i > 0 {
			kind = e[:i]
		}
		if groups[kind] == nil {
			groups[kind] = &group{first: e}
			order = append(order, kind)
		}
		groups[kind].n++
	}
	for _, k := range order {
		t.Errorf("%s (pid %d): %d× %s", c.name(), c.pid(), groups[k].n, groups[k].first)
	}
}

// TestGoChurn: goroutine stacks that grow, move and shrink by the
// thousand while sonde's Go probes are attached must not hurt the
// program, on any toolchain: it runs to its end and exits 0, and the
// requests it served meanwhile succeed and have their spans.
func TestGoChurn(t *testing.T) {
	requireTracing(t)
	testutil.RequireUprobes(t)
	var defaults []*gochainBin
	var paths []string
	for _, b := range gochainBins(t) {
		if b.mode == "default" {
			defaults = append(defaults, b)
			paths = append(paths, b.path)
		}
	}
	// The programs wait, idle, for sonde's probes; then SIGUSR1 starts
	// their churn and their clock.
	const runFor = 5 * time.Second
	var procs []*chainProc
	for _, b := range defaults {
		procs = append(procs, startChain(t, b, false, "-churn", "10000", "-runfor", runFor.String(), "-wait"))
	}
	t0 := time.Now()
	s := startSonde(t, nil, "--select", "exe="+gochain.dir+"/*")
	waitGoProbes(t, s, paths)
	t.Logf("sonde attached to %d binaries in %v", len(paths), time.Since(t0).Round(time.Millisecond))
	for _, c := range procs {
		if err := c.cmd.Process.Signal(syscall.SIGUSR1); err != nil {
			t.Fatalf("%s: %v", c.name(), err)
		}
	}
	var wg sync.WaitGroup
	for _, c := range procs {
		wg.Add(1)
		go func(c *chainProc) {
			defer wg.Done()
			for i := 0; i < 4; i++ {
				c.chain(fmt.Sprintf("%s-s%d", c.tag, i))
				time.Sleep(300 * time.Millisecond)
			}
		}(c)
	}
	wg.Wait()
	for _, c := range procs {
		select {
		case err := <-c.done:
			c.done <- err
			if err != nil {
				t.Errorf("%s exited with %v\nstderr:\n%s", c.name(), err, tail(c.stderr.String(), 30))
			}
		case <-time.After(runFor + 30*time.Second):
			t.Fatalf("%s still runs %v after its end", c.name(), runFor+30*time.Second)
		}
		for _, bad := range []string{"fatal error", "panic", "SIGSEGV", "SIGILL", "SIGTRAP", "unexpected", "traceback"} {
			if strings.Contains(c.stderr.String(), bad) {
				t.Errorf("%s wrote %q:\n%s", c.name(), bad, tail(c.stderr.String(), 30))
				break
			}
		}
		out := c.stdout.String()
		var churned, deep, failed int
		for _, line := range strings.Split(out, "\n") {
			if strings.HasPrefix(line, "churned ") {
				fmt.Sscanf(line, "churned %d deep calls %d failed chains %d ", &churned, &deep, &failed)
			}
		}
		if churned != 10000 || deep < 12 || failed != 0 {
			t.Errorf("%s: %d goroutines churned (want 10000), %d calls made from deep stacks (want 12+), %d chains failed: %q",
				c.name(), churned, deep, failed, out)
		}
		if i := strings.LastIndex(out, "churned"); i >= 0 {
			t.Logf("%s: %s", c.name(), strings.TrimSpace(out[i:]))
		}
	}
	t.Logf("all exited %v after sonde started", time.Since(t0).Round(time.Millisecond))
	waitChainSpans(s, procs, 30*time.Second)
	t.Logf("spans in %v after sonde started", time.Since(t0).Round(time.Millisecond))
	r := s.stop(t)
	t.Logf("sonde stopped %v after it started", time.Since(t0).Round(time.Millisecond))
	wantNoGoProbeWarnings(t, s)
	dumpSpans(t, r)
	for _, c := range procs {
		var errs []string
		checkChains(c, r.spans, func(format string, args ...any) {
			errs = append(errs, fmt.Sprintf(format, args...))
		})
		reportGrouped(t, c, errs)
	}
}

// dumpSpans writes every span, one JSON line each, to the file named by
// $SONDE_E2E_SPANS, if set: the evidence behind a failure.
func dumpSpans(t *testing.T, r sondeResult) {
	t.Helper()
	path := os.Getenv("SONDE_E2E_SPANS")
	if path == "" {
		return
	}
	var b strings.Builder
	for _, s := range r.spans {
		b.WriteString(s.raw + "\n")
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Error(err)
	}
}

// TestGoConnectionReuse: the Go probes remember each HTTP/1 server
// connection's fd by the address of its net/http conn, which a closed
// connection leaves free for a later one. Hundreds of short connections,
// opened a few at once while idle ones come and go so that their fds
// differ, each carry one request with a traceparent of its own. A Go span
// gets its traceparent only from its socket twin, which it meets by fd: a
// remembered fd of an earlier connection would leave it in a trace of its
// own, and its twin as a second span.
func TestGoConnectionReuse(t *testing.T) {
	requireTracing(t)
	testutil.RequireUprobes(t)
	// A collection after every little allocation: a closed connection's
	// conn is freed and soon taken again by a new one.
	srv := startGoServer(t, "GOGC=1")
	s := startSonde(t, nil, "--pid", strconv.Itoa(srv.pid()))
	waitGoProbes(t, s, []string{bins.goserver})

	const workers, perWorker = 4, 75
	parents := make(map[string]string) // the request's path, by trace ID
	var mu sync.Mutex
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var idle []net.Conn // shift the fds the next connections get
			defer func() {
				for _, c := range idle {
					c.Close()
				}
			}()
			for i := range perWorker {
				traceID := fmt.Sprintf("%08x%024x", 0x5eed0000+w, i+1)
				parentID := fmt.Sprintf("%016x", uint64(w)<<32|uint64(i+1))
				path := fmt.Sprintf("/hello?w=%d&i=%d", w, i)
				if err := oneRequest(srv.addr, path, "00-"+traceID+"-"+parentID+"-01"); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				parents[traceID] = parentID
				mu.Unlock()
				switch {
				case i%5 == 0:
					c, err := net.Dial("tcp", srv.addr)
					if err != nil {
						errs <- err
						return
					}
					idle = append(idle, c)
				case i%7 == 0 && len(idle) > 0:
					idle[0].Close()
					idle = idle[1:]
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	want := workers * perWorker
	r := s.stop(t)
	servers := filter(r.spans, func(sp span) bool { return sp.Kind == "server" })
	if len(servers) != want {
		t.Errorf("%d server spans, want %d", len(servers), want)
	}
	for _, sp := range servers {
		if sp.attr("sonde.source") != "go" {
			t.Errorf("a server span not from the Go probes (its twin was not met): %s", sp)
			continue
		}
		parent, ok := parents[sp.TraceID]
		if !ok || sp.ParentSpanID != parent {
			t.Errorf("span in trace %s with parent %q, want the request's traceparent (parent %q): %s",
				sp.TraceID, sp.ParentSpanID, parent, sp)
		}
	}
}

// oneRequest sends one GET on a connection of its own, which the server
// closes after the response.
func oneRequest(addr, path, traceparent string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req := "GET " + path + " HTTP/1.1\r\nHost: " + addr + "\r\ntraceparent: " + traceparent + "\r\nConnection: close\r\n\r\n"
	if _, err := io.WriteString(c, req); err != nil {
		return err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer resp.Body.Close()
	if _, err := io.Copy(io.Discard, resp.Body); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: status %d", path, resp.StatusCode)
	}
	return nil
}
