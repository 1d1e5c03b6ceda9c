package metrics

import (
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func known() Snapshot {
	return Snapshot{
		SpansExported:      90,
		SpansDropped:       3,
		ExportFailures:     7,
		Spans:              100,
		Events:             12345,
		EventsLost:         6,
		RingBufferSize:     8 << 20,
		RingBufferPending:  2 << 20,
		ParseErrors:        map[string]uint64{"bad_header": 2, "not_http": 5},
		Processes:          4,
		AttachFailures:     1,
		TargetsFull:        2,
		TLSUnpaired:        11,
		UnreadCalls:        12,
		SSLLibraries:       2,
		Connections:        17,
		ConnectionsEvicted: 8,
		ExchangesLost:      9,
		BadRecords:         10,
		Attached:           3,
		AttachDelaySum:     1500 * time.Millisecond,
		AttachDelayMax:     750 * time.Millisecond,
	}
}

func TestCollectorExposition(t *testing.T) {
	c := NewCollector(known, &Options{
		Build:             Build{Version: "v1.2.3", Revision: "abc123"},
		ParseErrorReasons: []string{"bad_start_line", "not_http"},
	})
	want := `# HELP sonde_attach_delay_max_seconds Longest delay from a process's exec, or the rescan that found it, to its selection.
# TYPE sonde_attach_delay_max_seconds gauge
sonde_attach_delay_max_seconds 0.75
# HELP sonde_attach_delay_seconds Delay from the exec of a process selected after start, or the rescan that found it, to its selection.
# TYPE sonde_attach_delay_seconds summary
sonde_attach_delay_seconds_sum 1.5
sonde_attach_delay_seconds_count 3
# HELP sonde_build_info Always 1; the labels describe the running sonde.
# TYPE sonde_build_info gauge
sonde_build_info{goversion="` + runtime.Version() + `",revision="abc123",version="v1.2.3"} 1
# HELP sonde_connections_evicted_total Connections dropped, least recently used first, to respect --max-conns.
# TYPE sonde_connections_evicted_total counter
sonde_connections_evicted_total 8
# HELP sonde_connections_tracked TCP connections tracked now.
# TYPE sonde_connections_tracked gauge
sonde_connections_tracked 17
# HELP sonde_events_lost_total Events the kernel dropped because the ring buffer was full; raise --ring-buffer or lower --capture-bytes.
# TYPE sonde_events_lost_total counter
sonde_events_lost_total 6
# HELP sonde_events_total Events the kernel wrote to the ring buffer.
# TYPE sonde_events_total counter
sonde_events_total 12345
# HELP sonde_exchanges_lost_total HTTP exchanges given up because some of their events were lost.
# TYPE sonde_exchanges_lost_total counter
sonde_exchanges_lost_total 9
# HELP sonde_parse_errors_total Connections or directions that could not be parsed as HTTP, by reason.
# TYPE sonde_parse_errors_total counter
sonde_parse_errors_total{reason="bad_header"} 2
sonde_parse_errors_total{reason="bad_start_line"} 0
sonde_parse_errors_total{reason="not_http"} 5
# HELP sonde_probe_attach_failures_total Probes that could not be attached; what they would have seen is missing.
# TYPE sonde_probe_attach_failures_total counter
sonde_probe_attach_failures_total 1
# HELP sonde_processes_traced Processes traced now.
# TYPE sonde_processes_traced gauge
sonde_processes_traced 4
# HELP sonde_records_bad_total Ring-buffer records that did not decode.
# TYPE sonde_records_bad_total counter
sonde_records_bad_total 10
# HELP sonde_ring_buffer_fill_ratio Pending bytes over the ring buffer size; near 1, events are about to be lost.
# TYPE sonde_ring_buffer_fill_ratio gauge
sonde_ring_buffer_fill_ratio 0.25
# HELP sonde_ring_buffer_pending_bytes Bytes the kernel wrote to the ring buffer and sonde has not read yet.
# TYPE sonde_ring_buffer_pending_bytes gauge
sonde_ring_buffer_pending_bytes 2.097152e+06
# HELP sonde_ring_buffer_size_bytes Size of the kernel-to-user ring buffer.
# TYPE sonde_ring_buffer_size_bytes gauge
sonde_ring_buffer_size_bytes 8.388608e+06
# HELP sonde_span_export_failures_total Spans in exports that failed, e.g. to an unreachable collector.
# TYPE sonde_span_export_failures_total counter
sonde_span_export_failures_total 7
# HELP sonde_spans_dropped_total Spans never sent: the export queue was full, or they were still pending at exit.
# TYPE sonde_spans_dropped_total counter
sonde_spans_dropped_total 3
# HELP sonde_spans_exported_total Spans accepted by the OTLP collector or written out.
# TYPE sonde_spans_exported_total counter
sonde_spans_exported_total 90
# HELP sonde_spans_total Spans built from HTTP exchanges and handed to the exporter.
# TYPE sonde_spans_total counter
sonde_spans_total 100
# HELP sonde_ssl_libraries_probed Files (libssl, or executables with OpenSSL linked in) whose SSL_read and SSL_write are probed.
# TYPE sonde_ssl_libraries_probed gauge
sonde_ssl_libraries_probed 2
# HELP sonde_targets_full_total Processes the kernel could not select, at exec or fork, because their pid lies beyond its targets bitmap.
# TYPE sonde_targets_full_total counter
sonde_targets_full_total 2
# HELP sonde_tls_unpaired_total TLS plaintext of an SSL object whose socket sonde never saw, not reported.
# TYPE sonde_tls_unpaired_total counter
sonde_tls_unpaired_total 11
# HELP sonde_unread_calls_total TCP sends and receives of traced processes by calls whose buffer sonde cannot find (io_uring, 32-bit processes), not parsed.
# TYPE sonde_unread_calls_total counter
sonde_unread_calls_total 12
`
	// No metric names: every metric the collector emits must be listed.
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("lint: %s: %s", p.Metric, p.Text)
	}
}

// Every family is there from the first scrape, before anything happened,
// so that dashboards and alerts do not depend on the first event.
func TestCollectorZeroSnapshot(t *testing.T) {
	c := NewCollector(func() Snapshot { return Snapshot{} }, &Options{ParseErrorReasons: []string{"not_http"}})
	want := `# HELP sonde_ring_buffer_fill_ratio Pending bytes over the ring buffer size; near 1, events are about to be lost.
# TYPE sonde_ring_buffer_fill_ratio gauge
sonde_ring_buffer_fill_ratio 0
# HELP sonde_parse_errors_total Connections or directions that could not be parsed as HTTP, by reason.
# TYPE sonde_parse_errors_total counter
sonde_parse_errors_total{reason="not_http"} 0
# HELP sonde_attach_delay_seconds Delay from the exec of a process selected after start, or the rescan that found it, to its selection.
# TYPE sonde_attach_delay_seconds summary
sonde_attach_delay_seconds_sum 0
sonde_attach_delay_seconds_count 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want),
		"sonde_ring_buffer_fill_ratio", "sonde_parse_errors_total", "sonde_attach_delay_seconds"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(c); n != 23 {
		t.Errorf("collected %d metrics, want 23: 20 plain, 1 parse error reason, the summary and build_info", n)
	}
}

// The snapshot is taken at scrape time, not when the collector is built.
func TestCollectorReadsAtScrapeTime(t *testing.T) {
	var spans atomic.Uint64
	c := NewCollector(func() Snapshot { return Snapshot{Spans: spans.Load()} }, nil)
	for _, n := range []uint64{0, 5, 42} {
		spans.Store(n)
		want := "# HELP sonde_spans_total Spans built from HTTP exchanges and handed to the exporter.\n" +
			"# TYPE sonde_spans_total counter\n" +
			"sonde_spans_total " + map[uint64]string{0: "0", 5: "5", 42: "42"}[n] + "\n"
		if err := testutil.CollectAndCompare(c, strings.NewReader(want), "sonde_spans_total"); err != nil {
			t.Errorf("after %d spans: %v", n, err)
		}
	}
}

func TestHandlerServesSondeGoAndProcessMetrics(t *testing.T) {
	reg, err := NewRegistry(NewCollector(known, &Options{Build: Build{Version: "v9"}}))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(Handler(reg))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d:\n%s", resp.StatusCode, body)
	}
	for _, want := range []string{
		"\nsonde_spans_total 100\n",
		`sonde_build_info{goversion="` + runtime.Version() + `",revision="",version="v9"} 1`,
		"\ngo_goroutines ",
		"\nprocess_resident_memory_bytes ",
		"\nprocess_open_fds ",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("no %q in /metrics", want)
		}
	}
}

func TestNewRegistryRejectsADuplicate(t *testing.T) {
	reg, err := NewRegistry(NewCollector(known, nil))
	if err != nil {
		t.Fatal(err)
	}
	if err := reg.Register(NewCollector(known, nil)); err == nil {
		t.Error("a second sonde collector registered: its metrics would collide")
	}
}
