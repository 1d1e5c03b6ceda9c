// Package metrics exposes sonde's own health to Prometheus: whether spans
// leave, whether the kernel loses events, how full the ring buffer runs.
//
// The counters live in the tracer and the exporter already; the Collector
// reads a fresh Snapshot of them at every scrape instead of mirroring them
// into Prometheus metrics, so there is one source of truth and nothing to
// keep in step.
package metrics

import (
	"fmt"
	"net/http"
	"runtime"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Namespace prefixes every metric of the Collector.
const Namespace = "sonde"

// Snapshot is the state of sonde at one instant. Counters only grow during
// a run.
type Snapshot struct {
	// Export.
	SpansExported  uint64 // accepted by the collector, or written out
	SpansDropped   uint64 // never sent: queue full, or still pending at exit
	ExportFailures uint64 // spans in exports that failed

	// Tracer.
	Spans              uint64            // spans built from exchanges
	Events             uint64            // events the kernel wrote to the ring buffer
	EventsLost         uint64            // events the kernel dropped, the ring buffer being full
	RingBufferSize     int               // bytes
	RingBufferPending  int               // bytes written by the kernel and not yet read
	ParseErrors        map[string]uint64 // by reason
	Processes          int               // processes traced now
	AttachFailures     uint64            // probes that could not be attached
	TargetsFull        uint64            // processes the kernel could not select: pid beyond its targets bitmap
	TLSUnpaired        uint64            // TLS plaintext whose socket was unknown, not reported
	UnreadCalls        uint64            // socket sends and receives by calls sonde cannot read (io_uring, 32-bit)
	SSLLibraries       int               // files whose OpenSSL functions are probed
	Connections        int               // connections tracked now
	ConnectionsEvicted uint64            // dropped to respect the connection limit
	ExchangesLost      uint64            // given up because their events were lost
	BadRecords         uint64            // ring-buffer records that did not decode

	// Processes selected after start: how many, and the delay from their
	// exec (or the rescan that found them) to their selection.
	Attached       uint64
	AttachDelaySum time.Duration
	AttachDelayMax time.Duration
}

// Build describes the running binary for the build_info metric.
type Build struct {
	Version  string
	Revision string // VCS revision, empty when unknown
}

// Options configures a Collector.
type Options struct {
	Build Build
	// ParseErrorReasons are exported with a zero value before they first
	// occur, so that the series exist from the first scrape: rate() and
	// alerts on a series that appears only at the first error miss that
	// error.
	ParseErrorReasons []string
}

type simple struct {
	desc  *prometheus.Desc
	typ   prometheus.ValueType
	value func(*Snapshot) float64
}

// Collector is a prometheus.Collector of sonde's own metrics.
type Collector struct {
	snapshot    func() Snapshot
	reasons     []string
	simple      []simple
	parseErrors *prometheus.Desc
	attachDelay *prometheus.Desc
	buildInfo   prometheus.Metric
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a Collector that calls snapshot at every scrape.
// snapshot must be safe to call concurrently with the work it observes.
func NewCollector(snapshot func() Snapshot, opts *Options) *Collector {
	var o Options
	if opts != nil {
		o = *opts
	}
	c := &Collector{snapshot: snapshot, reasons: slices.Clone(o.ParseErrorReasons)}
	counter := func(name, help string, v func(*Snapshot) uint64) {
		c.simple = append(c.simple, simple{
			desc:  prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, nil, nil),
			typ:   prometheus.CounterValue,
			value: func(s *Snapshot) float64 { return float64(v(s)) },
		})
	}
	gauge := func(name, help string, v func(*Snapshot) float64) {
		c.simple = append(c.simple, simple{
			desc:  prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", name), help, nil, nil),
			typ:   prometheus.GaugeValue,
			value: v,
		})
	}

	counter("spans_exported_total", "Spans accepted by the OTLP collector or written out.",
		func(s *Snapshot) uint64 { return s.SpansExported })
	counter("spans_dropped_total", "Spans never sent: the export queue was full, or they were still pending at exit.",
		func(s *Snapshot) uint64 { return s.SpansDropped })
	counter("span_export_failures_total", "Spans in exports that failed, e.g. to an unreachable collector.",
		func(s *Snapshot) uint64 { return s.ExportFailures })
	counter("spans_total", "Spans built from HTTP exchanges and handed to the exporter.",
		func(s *Snapshot) uint64 { return s.Spans })
	counter("events_total", "Events the kernel wrote to the ring buffer.",
		func(s *Snapshot) uint64 { return s.Events })
	counter("events_lost_total", "Events the kernel dropped because the ring buffer was full; raise --ring-buffer or lower --capture-bytes.",
		func(s *Snapshot) uint64 { return s.EventsLost })
	gauge("ring_buffer_size_bytes", "Size of the kernel-to-user ring buffer.",
		func(s *Snapshot) float64 { return float64(s.RingBufferSize) })
	gauge("ring_buffer_pending_bytes", "Bytes the kernel wrote to the ring buffer and sonde has not read yet.",
		func(s *Snapshot) float64 { return float64(s.RingBufferPending) })
	gauge("ring_buffer_fill_ratio", "Pending bytes over the ring buffer size; near 1, events are about to be lost.",
		fillRatio)
	gauge("processes_traced", "Processes traced now.",
		func(s *Snapshot) float64 { return float64(s.Processes) })
	counter("probe_attach_failures_total", "Probes that could not be attached; what they would have seen is missing.",
		func(s *Snapshot) uint64 { return s.AttachFailures })
	counter("targets_full_total", "Processes the kernel could not select, at exec or fork, because their pid lies beyond its targets bitmap.",
		func(s *Snapshot) uint64 { return s.TargetsFull })
	counter("tls_unpaired_total", "TLS plaintext of an SSL object whose socket sonde never saw, not reported.",
		func(s *Snapshot) uint64 { return s.TLSUnpaired })
	counter("unread_calls_total", "TCP sends and receives of traced processes by calls whose buffer sonde cannot find (io_uring, 32-bit processes), not parsed.",
		func(s *Snapshot) uint64 { return s.UnreadCalls })
	gauge("ssl_libraries_probed", "Files (libssl, or executables with OpenSSL linked in) whose SSL_read and SSL_write are probed.",
		func(s *Snapshot) float64 { return float64(s.SSLLibraries) })
	gauge("connections_tracked", "TCP connections tracked now.",
		func(s *Snapshot) float64 { return float64(s.Connections) })
	counter("connections_evicted_total", "Connections dropped, least recently used first, to respect --max-conns.",
		func(s *Snapshot) uint64 { return s.ConnectionsEvicted })
	counter("exchanges_lost_total", "HTTP exchanges given up because some of their events were lost.",
		func(s *Snapshot) uint64 { return s.ExchangesLost })
	gauge("attach_delay_max_seconds", "Longest delay from a process's exec, or the rescan that found it, to its selection.",
		func(s *Snapshot) float64 { return s.AttachDelayMax.Seconds() })
	counter("records_bad_total", "Ring-buffer records that did not decode.",
		func(s *Snapshot) uint64 { return s.BadRecords })

	c.parseErrors = prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "parse_errors_total"),
		"Connections or directions that could not be parsed as HTTP, by reason.", []string{"reason"}, nil)
	c.attachDelay = prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "attach_delay_seconds"),
		"Delay from the exec of a process selected after start, or the rescan that found it, to its selection.", nil, nil)
	c.buildInfo = prometheus.MustNewConstMetric(
		prometheus.NewDesc(prometheus.BuildFQName(Namespace, "", "build_info"),
			"Always 1; the labels describe the running sonde.", []string{"version", "revision", "goversion"}, nil),
		prometheus.GaugeValue, 1, o.Build.Version, o.Build.Revision, runtime.Version())
	return c
}

func fillRatio(s *Snapshot) float64 {
	if s.RingBufferSize <= 0 {
		return 0
	}
	return float64(s.RingBufferPending) / float64(s.RingBufferSize)
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, m := range c.simple {
		ch <- m.desc
	}
	ch <- c.parseErrors
	ch <- c.attachDelay
	ch <- c.buildInfo.Desc()
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	for _, m := range c.simple {
		ch <- prometheus.MustNewConstMetric(m.desc, m.typ, m.value(&s))
	}
	reasons := slices.Clone(c.reasons)
	for r := range s.ParseErrors {
		if !slices.Contains(reasons, r) {
			reasons = append(reasons, r)
		}
	}
	slices.Sort(reasons)
	for _, r := range reasons {
		ch <- prometheus.MustNewConstMetric(c.parseErrors, prometheus.CounterValue, float64(s.ParseErrors[r]), r)
	}
	ch <- prometheus.MustNewConstSummary(c.attachDelay, s.Attached, s.AttachDelaySum.Seconds(), nil)
	ch <- c.buildInfo
}

// NewRegistry returns a registry holding c and the standard Go runtime and
// process collectors, so that sonde's own CPU, memory and file descriptors
// are watched alongside its counters.
func NewRegistry(c *Collector) (*prometheus.Registry, error) {
	reg := prometheus.NewRegistry()
	for _, col := range []prometheus.Collector{
		c,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := reg.Register(col); err != nil {
			return nil, fmt.Errorf("metrics: register collector: %w", err)
		}
	}
	return reg, nil
}

// Handler serves g in the Prometheus exposition format. A collector that
// fails does not fail the scrape: the other metrics still matter most when
// something is wrong.
func Handler(g prometheus.Gatherer) http.Handler {
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
