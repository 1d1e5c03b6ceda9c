package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"math/bits"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"

	"github.com/sondehq/sonde/internal/otlptest"
	"github.com/sondehq/sonde/internal/testutil"
)

// maxHWM bounds sonde's peak resident memory in these tests.
const maxHWMKB = 200 << 10

// sondePID returns the pid of the sonde process of a run.
func sondeHWM(t *testing.T, s *sondeRun) int {
	t.Helper()
	kb := procStatusKB(s.pid(), "VmHWM")
	if kb <= 0 {
		t.Fatalf("cannot read VmHWM of sonde (pid %d)", s.pid())
	}
	return kb
}

// get sends one request from this (untraced) process and drains the body.
func get(c *http.Client, url string) error {
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("%s: %s", url, resp.Status)
	}
	return nil
}

// switchableProxy forwards a fixed loopback port to a backend. Down closes
// the listener and every connection, so that the port refuses connections
// as a dead collector's does; Up listens on the same port again.
type switchableProxy struct {
	addr, backend string
	mu            sync.Mutex
	l             net.Listener
	conns         map[net.Conn]bool
}

func newProxy(t *testing.T, backend string) *switchableProxy {
	p := &switchableProxy{addr: "127.0.0.1:" + freePort(t), backend: backend, conns: map[net.Conn]bool{}}
	p.up(t)
	t.Cleanup(p.down)
	return p
}

func (p *switchableProxy) up(t *testing.T) {
	t.Helper()
	var l net.Listener
	var err error
	waitFor(t, 10*time.Second, "the proxy port to be free again", func() bool {
		l, err = net.Listen("tcp", p.addr)
		return err == nil
	})
	p.mu.Lock()
	p.l = l
	p.mu.Unlock()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			b, err := net.Dial("tcp", p.backend)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns[c], p.conns[b] = true, true
			p.mu.Unlock()
			go func() { io.Copy(b, c); b.Close() }()
			go func() { io.Copy(c, b); c.Close() }()
		}
	}()
}

func (p *switchableProxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.l != nil {
		p.l.Close()
		p.l = nil
	}
	for c := range p.conns {
		c.Close()
	}
	p.conns = map[net.Conn]bool{}
}

// The collector goes away for 30 s and comes back on the same port. sonde
// keeps running, says so while it is down, counts what it could not
// export, stays within its memory, and exports again once it is back.
func TestCollectorDownAndBack(t *testing.T) {
	rcv := otlptest.Start(t)
	proxy := newProxy(t, rcv.Endpoint())
	srv := startGoServer(t)
	s := startSonde(t, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + proxy.addr,
		"OTEL_EXPORTER_OTLP_TIMEOUT=1000", "OTEL_BSP_SCHEDULE_DELAY=100",
	}, "--pid", fmt.Sprint(srv.pid()), "--output", "otlp", "--flush-timeout", "5s")
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	phase := func(name string, i int) string {
		return fmt.Sprintf("http://%s/hello?phase=%s&i=%d", srv.addr, name, i)
	}
	inPhase := func(name string) func(otlptest.Span) bool {
		return func(sp otlptest.Span) bool {
			return strings.HasPrefix(fmt.Sprint(sp.Attributes["url.query"]), "phase="+name)
		}
	}
	count := func(keep func(otlptest.Span) bool) int {
		n := 0
		for _, sp := range rcv.Spans() {
			if keep(sp) {
				n++
			}
		}
		return n
	}

	for i := range 5 {
		if err := get(client, phase("before", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "the spans made before the outage", func() bool { return count(inPhase("before")) == 5 })

	proxy.down()
	warnedBefore := s.countLogs("spans not exported")
	down := 0
	for end := time.Now().Add(30 * time.Second); time.Now().Before(end); down++ {
		if err := get(client, phase("down", down)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(20 * time.Millisecond)
		if s.exited() {
			t.Fatalf("sonde exited while the collector was down:\n%s", tail(s.stderr.String(), 20))
		}
	}
	if s.countLogs("spans not exported") == warnedBefore {
		t.Errorf("no warning logged during 30 s without a collector")
	}
	proxy.up(t)

	// The exporter reconnects with backoff: keep sending until a span made
	// after the outage arrives. Spans made before it reconnects may fail.
	upAt := time.Now()
	after := 0
	waitFor(t, 90*time.Second, "a span made after the collector came back", func() bool {
		if err := get(client, phase("after", after)); err != nil {
			t.Fatal(err)
		}
		after++
		time.Sleep(100 * time.Millisecond)
		return count(inPhase("after")) > 0
	})
	recovered := time.Since(upAt)
	// Once reconnected, every span arrives again.
	const steady = 10
	for i := range steady {
		if err := get(client, phase("steady", i)); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "every span made once export recovered", func() bool { return count(inPhase("steady")) == steady })
	hwm := sondeHWM(t, s)
	r := s.stop(t)
	t.Logf("%d requests while down; export recovered %v after the collector came back; sonde VmHWM %d kB; final stats %v",
		down, recovered.Round(time.Millisecond), hwm, r.stats)
	if hwm > maxHWMKB {
		t.Errorf("sonde peaked at %d kB of RSS", hwm)
	}
	if r.stat("spans_dropped")+r.stat("export_failures") < float64(down)/2 {
		t.Errorf("%d spans made while the collector was down, but few counted as dropped or failed: %v", down, r.stats)
	}
	after += steady
	if n := r.stat("spans"); n < float64(5+down+after) {
		t.Errorf("sonde made %v spans for %d requests", n, 5+down+after)
	}
}

// A traced process killed in the middle of a request: sonde goes on tracing
// the other target, and counts the request that will never be answered.
func TestTracedProcessKilledMidRequest(t *testing.T) {
	slow := startProc(t, nil, bins.sleepserver)
	waitFor(t, 10*time.Second, "sleepserver to listen", func() bool { return strings.Contains(slow.stdout.String(), "\n") })
	line, _, _ := strings.Cut(slow.stdout.String(), "\n")
	slowAddr := strings.TrimPrefix(line, "listening ")
	other := startGoServer(t)
	s := startSonde(t, nil, "--pid", fmt.Sprintf("%d,%d", slow.pid(), other.pid()))

	client := &http.Client{Timeout: time.Minute}
	failed := make(chan error, 1)
	go func() { failed <- get(client, "http://"+slowAddr+"/sleep?d=1m") }()
	waitFor(t, 10*time.Second, "the request to be held", func() bool { return strings.Contains(slow.stdout.String(), "sleeping") })
	slow.cmd.Process.Kill()
	select {
	case err := <-failed:
		if err == nil {
			t.Fatal("the request to the killed server succeeded")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request did not fail when its server was killed")
	}
	waitFor(t, 10*time.Second, "sonde to see the exit", func() bool { return s.countLogs("process exited") > 0 })
	if s.exited() {
		t.Fatalf("sonde exited with its target")
	}
	c := &http.Client{}
	for i := range 5 {
		if err := get(c, fmt.Sprintf("http://%s/hello?after=%d", other.addr, i)); err != nil {
			t.Fatal(err)
		}
	}
	r := s.stop(t)
	others := filter(r.spans, byPID(other.pid()))
	if len(others) != 5 {
		t.Errorf("want 5 spans of the surviving server after the kill, got %d: %v", len(others), r.spans)
	}
	for _, sp := range others {
		if sp.Kind != "server" || sp.attr("url.path") != "/hello" || sp.attr("http.response.status_code") != "200" {
			t.Errorf("span: %s", sp)
		}
	}
	// The held request is accounted for: either as an error span saying
	// the connection ended without a response, or as pending at exit.
	killed := filter(r.spans, byPID(slow.pid()))
	switch {
	case len(killed) == 1:
		sp := killed[0]
		if sp.Kind != "server" || sp.attr("url.path") != "/sleep" || sp.Status.Code != "Error" || sp.attr("http.response.status_code") != "" {
			t.Errorf("span of the request cut by the kill: %s", sp)
		}
	case len(killed) == 0 && r.stat("pending_at_exit") == 1:
	default:
		t.Errorf("the held request is not accounted for once: %d spans %v, stats %v", len(killed), killed, r.stats)
	}
}

// 100,000 short connections (no keep-alive) to a traced server: sonde's
// memory stays bounded, the kernel maps do not fill, and the connections
// are forgotten once closed.
func TestManyShortConnections(t *testing.T) {
	bpftool := testutil.RequireTool(t, "bpftool")
	const total, workers = 100_000, 8
	srv := startGoServer(t)
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()))
	// The server closes each connection (the client asks it to), so the
	// client's ports do not pile up in TIME_WAIT.
	tr := &http.Transport{DisableKeepAlives: true}
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	var next, failures atomic.Int64
	var wg sync.WaitGroup
	began := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= total {
				if err := get(client, "http://"+srv.addr+"/hello"); err != nil {
					if failures.Add(1) == 1 {
						t.Errorf("request: %v", err)
					}
				}
			}
		}()
	}
	wg.Wait()
	took := time.Since(began)
	// Every connection is closed; let sonde read what is left.
	var spans int
	waitFor(t, 30*time.Second, "sonde to catch up", func() bool {
		spans = countLines(s.stdout.String())
		return spans >= total-int(failures.Load())-total/100
	})
	maps := sondeMaps(t, s.pid())
	entries := map[string]int{}
	for name, id := range maps {
		switch name {
		case "lossy":
			entries[name] = mapEntries(t, bpftool, id)
		case "targets":
			entries[name] = selectedCount(t, id, srv.pid())
		}
	}
	hwm := sondeHWM(t, s)
	r := s.stop(t)
	t.Logf("%d connections in %v; %d spans; sonde VmHWM %d kB; map entries %v; stats %v",
		total, took.Round(time.Millisecond), len(r.spans), hwm, entries, r.stats)
	if hwm > maxHWMKB {
		t.Errorf("sonde peaked at %d kB of RSS", hwm)
	}
	served := srv.served(t)
	if d := served - len(r.spans); d < 0 || d > served/100 {
		t.Errorf("%d requests served, %d spans", served, len(r.spans))
	}
	if entries["targets"] > 4 {
		t.Errorf("targets selects %d processes for one traced process", entries["targets"])
	}
	if entries["lossy"] > 100 || entries["lossy"] >= 16384 {
		t.Errorf("lossy holds %d entries after the connections closed", entries["lossy"])
	}
	if r.stat("conns_evicted") != 0 {
		t.Errorf("connections evicted although each was closed: %v", r.stats)
	}
	if v, ok := r.stats["conns_at_exit"]; ok && v.(float64) > 10 {
		t.Errorf("%v connections still tracked at the end", v)
	}
	if r.stat("pending_at_exit") > 10 {
		t.Errorf("%v requests left pending", r.stat("pending_at_exit"))
	}
}

func countLines(s string) int { return strings.Count(s, "\n") }

// sondeMaps returns the BPF maps held by a process, by name, from the
// fdinfo of its file descriptors: another sonde on the machine does not
// confuse it.
func sondeMaps(t *testing.T, pid int) map[string]int {
	t.Helper()
	dir := fmt.Sprintf("/proc/%d/fdinfo", pid)
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	ids := map[int]bool{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "map_id:"); ok {
				if id, err := strconv.Atoi(strings.TrimSpace(v)); err == nil {
					ids[id] = true
				}
			}
		}
	}
	var all []struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(run(t, "bpftool", "-j", "map", "show")), &all); err != nil {
		t.Fatal(err)
	}
	out := map[string]int{}
	for _, m := range all {
		if ids[m.ID] {
			out[m.Name] = m.ID
		}
	}
	if _, ok := out["targets"]; !ok {
		t.Fatalf("no targets map among sonde's maps %v", out)
	}
	return out
}

func mapEntries(t *testing.T, bpftool string, id int) int {
	t.Helper()
	var entries []json.RawMessage
	if err := json.Unmarshal([]byte(run(t, bpftool, "-j", "map", "dump", "id", strconv.Itoa(id))), &entries); err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// selectedCount is how many processes the kernel's targets bitmap
// (bpf/headers/maps.h) selects; pid must be among them.
func selectedCount(t *testing.T, id, pid int) int {
	t.Helper()
	m, err := ebpf.NewMapFromID(ebpf.MapID(id))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	var word uint32
	var w uint64
	n := 0
	it := m.Iterate()
	for it.Next(&word, &w) {
		n += bits.OnesCount64(w)
		if word == uint32(pid/64) && w&(1<<(pid%64)) == 0 {
			t.Errorf("the traced server, pid %d, is not selected in the targets bitmap", pid)
		}
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// SIGKILL gives sonde no chance to detach: the kernel must still free every
// program and link once its file descriptors are gone.
func TestNothingLeftAttachedAfterKill(t *testing.T) {
	bpftool := testutil.RequireTool(t, "bpftool")
	srv := startGoServer(t)
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()), "--inject")
	during := sondePrograms(t, bpftool)
	if len(during) == 0 {
		t.Fatal("bpftool shows no program of sonde's while it runs")
	}
	var names []string
	for _, n := range during {
		names = append(names, n)
	}
	// With --inject, sockops on the cgroup root and sk_msg on the sockhash
	// are among what must go.
	for _, want := range []string{"inject_sockops", "inject_msg"} {
		if !slices.Contains(names, want) {
			t.Fatalf("program %s not loaded with --inject; loaded: %v", want, names)
		}
	}
	progIDs := map[int]bool{}
	for id := range during {
		progIDs[id] = true
	}
	s.kill(t)
	waitFor(t, 10*time.Second, "the kernel to free sonde's programs", func() bool {
		after := sondePrograms(t, bpftool)
		for id := range during {
			if _, ok := after[id]; ok {
				return false
			}
		}
		return true
	})
	var links []struct {
		ID     int `json:"id"`
		ProgID int `json:"prog_id"`
	}
	if err := json.Unmarshal([]byte(run(t, bpftool, "-j", "link", "list")), &links); err != nil {
		t.Fatal(err)
	}
	for _, l := range links {
		if progIDs[l.ProgID] {
			t.Errorf("link %d of program %d survives SIGKILL", l.ID, l.ProgID)
		}
	}
	var perf []struct {
		ProgID int `json:"prog_id"`
	}
	if err := json.Unmarshal([]byte(run(t, bpftool, "-j", "perf", "list")), &perf); err != nil {
		t.Fatal(err)
	}
	for _, p := range perf {
		if progIDs[p.ProgID] {
			t.Errorf("perf event of program %d survives SIGKILL", p.ProgID)
		}
	}
	// The sockhash goes last: with it the kernel restores every socket in it.
	waitFor(t, 10*time.Second, "the kernel to free the injection maps", func() bool {
		var bpfMaps []struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal([]byte(run(t, bpftool, "-j", "map", "show")), &bpfMaps); err != nil {
			t.Fatal(err)
		}
		for _, m := range bpfMaps {
			if m.Name == "inject_socks" || m.Name == "inject_states" {
				return false
			}
		}
		return true
	})
	if !srv.alive() {
		t.Errorf("the traced server died with sonde")
	}
}

// A keep-alive connection stays open across a sonde restart: the second
// sonde picks it up with the right role on each side.
func TestRestartPicksUpOpenConnections(t *testing.T) {
	srv := startGoServer(t)
	client := startProc(t, nil, bins.goclient, "-url", "http://"+srv.addr+"/hello", "-n", "0", "-interval", "20ms")
	waitFor(t, 10*time.Second, "the client's first response", func() bool { return strings.Contains(client.stdout.String(), "200") })
	pids := fmt.Sprintf("%d,%d", srv.pid(), client.pid())
	enough := func(s *sondeRun) func() bool {
		return func() bool {
			sp := s.jsonSpans()
			return len(filter(sp, byPID(srv.pid()))) >= 5 && len(filter(sp, byPID(client.pid()))) >= 5
		}
	}
	first := startSonde(t, nil, "--pid", pids)
	waitFor(t, 20*time.Second, "spans from the first sonde", enough(first))
	r1 := first.stop(t)
	second := startSonde(t, nil, "--pid", pids)
	waitFor(t, 20*time.Second, "spans from the second sonde", enough(second))
	r2 := second.stop(t)
	if !client.alive() {
		t.Fatalf("the client stopped: %s", client.stderr.String())
	}
	ports := map[string]bool{}
	for i, r := range []sondeResult{r1, r2} {
		servers := filter(r.spans, byPID(srv.pid()))
		clients := filter(r.spans, byPID(client.pid()))
		for _, sp := range servers {
			if sp.Kind != "server" || sp.attr("url.path") != "/hello" || sp.attr("http.response.status_code") != "200" {
				t.Errorf("run %d: server span %s", i+1, sp)
			}
			ports[sp.attr("network.peer.port")] = true
		}
		for _, sp := range clients {
			if sp.Kind != "client" || sp.attr("url.full") != "http://"+srv.addr+"/hello" || sp.attr("server.port") != srv.port() {
				t.Errorf("run %d: client span %s", i+1, sp)
			}
		}
	}
	// One connection, opened before the first sonde, seen by both.
	if len(ports) != 1 {
		t.Errorf("want one connection across both runs, got peer ports %v", ports)
	}
}

// A burst into a tiny ring buffer: losses are logged while sonde runs and
// counted, and every request after the burst is traced correctly.
func TestRingBufferBurstThenRecovery(t *testing.T) {
	srv := startGoServer(t)
	// Small enough that the burst (800 requests with 16 KiB bodies) overflows
	// it many times over, large enough that the 20 sequential requests after
	// it fit while the reader catches up on a loaded machine: with the Go
	// probes' events a request takes about 650 bytes, and 16K left no margin.
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()), "--ring-buffer", "64K")
	body := strings.Repeat("x", 16<<10)
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := &http.Client{}
			for i := range 50 {
				resp, err := c.Post(fmt.Sprintf("http://%s/echo?burst=%d-%d", srv.addr, w, i), "text/plain", strings.NewReader(body))
				if err != nil {
					t.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	wg.Wait()
	waitFor(t, 15*time.Second, "the losses to be logged while running", func() bool { return s.countLogs("ring buffer full") > 0 })
	// After the burst, one connection at a time: each request must be seen.
	c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	const after = 20
	for i := range after {
		if err := get(c, fmt.Sprintf("http://%s/hello?after=%d", srv.addr, i)); err != nil {
			t.Fatal(err)
		}
	}
	// The keep-alive connections of the burst, which lost events, serve
	// again too.
	for i := range after {
		resp, err := http.Get(fmt.Sprintf("http://%s/status/201?reused=%d", srv.addr, i))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	r := s.stop(t)
	if r.stat("lost") == 0 {
		t.Fatalf("a 64 KiB ring buffer lost nothing under the burst: %v", r.stats)
	}
	fresh := filter(r.spans, func(sp span) bool { return strings.HasPrefix(sp.attr("url.query"), "after=") })
	if len(fresh) != after {
		t.Errorf("want %d spans after the burst, got %d (stats %v)", after, len(fresh), r.stats)
	}
	for _, sp := range fresh {
		if sp.Name != "GET /hello" || sp.attr("url.path") != "/hello" || sp.attr("http.response.status_code") != "200" || sp.Kind != "server" {
			t.Errorf("span after the burst: %s", sp)
		}
	}
	reused := filter(r.spans, func(sp span) bool { return strings.HasPrefix(sp.attr("url.query"), "reused=") })
	if len(reused) < after-1 {
		t.Errorf("want about %d spans on the burst's connections, got %d (stats %v)", after, len(reused), r.stats)
	}
	for _, sp := range reused {
		if sp.attr("url.path") != "/status/201" || sp.attr("http.response.status_code") != "201" {
			t.Errorf("span stitched across the losses: %s", sp)
		}
	}
	for _, sp := range r.spans {
		if m := sp.attr("http.request.method"); (m == "POST") != (sp.attr("url.path") == "/echo") {
			t.Errorf("span mixing two requests: %s", sp)
		}
	}
}
