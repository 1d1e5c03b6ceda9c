package e2e

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// sonde serves its own counters on --metrics-addr while it traces, and
// they move with the traffic it sees.
func TestMetricsEndpoint(t *testing.T) {
	srv := startGoServer(t)
	addr := "127.0.0.1:" + freePort(t)
	const ringBuffer = 16 << 20
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()), "--ring-buffer", "16M", "--metrics-addr", addr)
	if !strings.Contains(s.stderr.String(), `"url":"http://`+addr+`/metrics"`) {
		t.Errorf("sonde does not say where it serves metrics:\n%s", s.stderr.String())
	}

	run(t, bins.goclient, "-url", "http://"+srv.addr+"/hello", "-n", "5")

	// Spans are built as the ring buffer is read: wait for them to show.
	var m scrape
	deadline := time.Now().Add(15 * time.Second)
	for {
		m = scrapeMetrics(t, "http://"+addr+"/metrics")
		if m.value(t, "sonde_spans_total") >= 5 || time.Now().After(deadline) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if v := m.value(t, "sonde_spans_total"); v < 5 {
		t.Errorf("sonde_spans_total = %v after 5 requests", v)
	}
	if v := m.value(t, "sonde_events_total"); v <= 0 {
		t.Errorf("sonde_events_total = %v", v)
	}
	if v := m.value(t, "sonde_ring_buffer_size_bytes"); v != ringBuffer {
		t.Errorf("sonde_ring_buffer_size_bytes = %v, want %d", v, ringBuffer)
	}
	for _, family := range []string{
		"sonde_parse_errors_total", "sonde_attach_delay_seconds", "sonde_build_info",
		"sonde_spans_exported_total", "sonde_events_lost_total", "go_goroutines", "process_resident_memory_bytes",
	} {
		if !m.hasFamily(family) {
			t.Errorf("no %s family in /metrics", family)
		}
	}
	if _, ok := m.samples[`sonde_parse_errors_total{reason="not_http"}`]; !ok {
		t.Errorf("parse errors have no not_http series before any error")
	}

	r := s.stop(t)
	// What was scraped cannot be ahead of what sonde reports at exit.
	if got := r.stat("spans"); got < m.value(t, "sonde_spans_total") {
		t.Errorf("final stats report %v spans, fewer than the %v scraped", got, m.value(t, "sonde_spans_total"))
	}
	// The server is shut down with sonde.
	if _, err := http.Get("http://" + addr + "/metrics"); err == nil {
		t.Errorf("metrics still served after sonde exited")
	}
}

// Metrics are on by default, on loopback; when the default address is
// taken, sonde warns and traces all the same.
func TestMetricsDefaultAddressTaken(t *testing.T) {
	requireTracing(t)
	srv := startGoServer(t)
	// Hold the default port if it is free; if something else holds it, the
	// outcome must be the same.
	if l, err := net.Listen("tcp", "127.0.0.1:9464"); err == nil {
		defer l.Close()
	}
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()))
	run(t, bins.goclient, "-url", "http://"+srv.addr+"/hello", "-n", "2")
	r := s.stop(t)
	var warned bool
	for _, l := range r.logs {
		if l["level"] == "WARN" && l["addr"] == "127.0.0.1:9464" {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning about the default metrics address")
	}
	if len(filter(r.spans, byPID(srv.pid()))) != 2 {
		t.Errorf("want 2 spans despite metrics being off, got %v", r.spans)
	}
}

// An address the user chose must work: sonde fails before tracing.
func TestMetricsChosenAddressTaken(t *testing.T) {
	requireTracing(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	out, err := exec.Command(bins.sonde, "trace", "--pid", "1", "--metrics-addr", l.Addr().String()).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("want exit status 1, got %v:\n%s", err, out)
	}
	if !strings.Contains(string(out), "metrics address "+l.Addr().String()) || !strings.Contains(string(out), "address already in use") {
		t.Errorf("the error does not say which address and why:\n%s", out)
	}
	if strings.Contains(string(out), `msg=tracing`) {
		t.Errorf("sonde attached before failing:\n%s", out)
	}
}

// scrape is one /metrics page in the text exposition format.
type scrape struct {
	text    string
	samples map[string]string // series, with its labels as written, to value
}

func scrapeMetrics(t *testing.T, url string) scrape {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: status %d, %v\n%s", resp.StatusCode, err, body)
	}
	s := scrape{text: string(body), samples: map[string]string{}}
	for _, line := range strings.Split(s.text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			t.Fatalf("bad exposition line %q", line)
		}
		s.samples[line[:i]] = line[i+1:]
	}
	return s
}

func (s scrape) value(t *testing.T, series string) float64 {
	t.Helper()
	v, ok := s.samples[series]
	if !ok {
		t.Fatalf("no %s in /metrics:\n%s", series, s.text)
	}
	f, err := strconv.ParseFloat(v, 64)
	if err != nil {
		t.Fatalf("%s = %q: %v", series, v, err)
	}
	return f
}

func (s scrape) hasFamily(name string) bool {
	return strings.Contains(s.text, "\n# TYPE "+name+" ") || strings.HasPrefix(s.text, "# TYPE "+name+" ")
}
