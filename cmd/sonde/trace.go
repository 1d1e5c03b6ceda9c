package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sondehq/sonde/tracer"
	"github.com/sondehq/sonde/tracer/discover"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/sondehq/sonde/tracer/export"
	"github.com/sondehq/sonde/tracer/features"
	"github.com/sondehq/sonde/tracer/servicemap"
	"github.com/sondehq/sonde/tracer/ui"
)

// traceConfig is what `sonde trace` and `sonde demo` share.
type traceConfig struct {
	pids         pidList
	exes         stringList
	selects      ruleList
	excludes     ruleList
	output       string
	captureBytes int
	ringBuffer   byteSize
	maxConns     int
	tls          bool
	goProbes     bool
	inject       bool
	dataHooks    string
	record       string
	linkHold     time.Duration
	linkMax      int
	ui           string
	logFormat    string
	logLevel     string
	flushTimeout time.Duration
	metricsAddr  listenAddr
	cpuProfile   string
}

// defaultMetricsAddr is on loopback: sonde's counters say which processes
// are traced, which is not for every host on the network to read.
const defaultMetricsAddr = "127.0.0.1:9464"

func (c *traceConfig) register(fs *flag.FlagSet) {
	fs.Var(&c.pids, "pid", "trace this process id (repeatable, or comma-separated)")
	fs.Var(&c.exes, "exe", "trace processes whose executable matches this glob (repeatable); without --pid or --exe every process is traced")
	fs.Var(&c.selects, "select", "trace processes matching this rule (repeatable): comma-separated key=value with keys exe, cmdline, port, cgroup, container, otel_service_name; e.g. exe=/usr/bin/python3*,port=8080")
	fs.Var(&c.excludes, "exclude", "never trace processes matching this rule (repeatable; same form as --select); wins over every selection")
	fs.StringVar(&c.output, "output", "", "where spans go: otlp, text or json (default: otlp when OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, else text)")
	fs.IntVar(&c.captureBytes, "capture-bytes", 4096, fmt.Sprintf("payload bytes captured per syscall (64..%d); enough for request and status lines and headers", tracer.MaxCaptureBytes))
	c.ringBuffer = 8 << 20
	fs.Var(&c.ringBuffer, "ring-buffer", "kernel ring buffer size, a power of two (e.g. 8M, 32M)")
	fs.IntVar(&c.maxConns, "max-conns", 65536, "connections tracked at once; beyond it the least recently used is dropped and counted")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format on stderr: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.DurationVar(&c.flushTimeout, "flush-timeout", 10*time.Second, "how long to wait for pending spans to be exported at exit")
	c.metricsAddr = listenAddr{addr: defaultMetricsAddr}
	fs.Var(&c.metricsAddr, "metrics-addr", "serve Prometheus metrics on `host:port`, at /metrics; empty disables them. When the default address is taken, sonde warns and runs without metrics; an address given explicitly must work")
	fs.DurationVar(&c.linkHold, "link-hold", time.Second, "how long a server span whose client sonde also traces waits for that client's span, to become its child (0s: no same-host linking)")
	fs.IntVar(&c.linkMax, "link-max", 65536, "how many spans wait for their other end at once; beyond it they are exported unlinked")
	fs.StringVar(&c.ui, "ui", "", "serve a live page of the service map and the recent traces on this address (PORT binds to 127.0.0.1)")
	fs.StringVar(&c.record, "record", "", "also write every span to this file, as JSON lines, for sonde map --from FILE")
	fs.BoolVar(&c.inject, "inject", false, "write a W3C traceparent into plaintext HTTP/1 requests to other hosts that carry none, so that the receiving side joins the trace (sockops and sk_msg; traffic on the host is never changed)")
	fs.StringVar(&c.dataHooks, "data-hooks", "auto", "where socket bytes are read: socket (the kernel's sock_send_length and sock_recv_length tracepoints, 6.3 on, the cheaper), syscalls (the sys_exit tracepoints of read, write and the like), or auto: socket where the kernel has it")
	fs.BoolVar(&c.goProbes, "go", true, "trace Go programs (net/http, grpc-go) with uprobes on their own functions (--go=false: only the sockets)")
	fs.BoolVar(&c.tls, "tls", true, "read HTTPS in clear from programs that use OpenSSL, with uprobes on their libssl (--tls=false: only the sockets, where TLS is ciphertext)")
	fs.StringVar(&c.cpuProfile, "cpu-profile", "", "write a CPU profile of sonde itself to this file (for performance work)")
}

// validate checks the values the flags carry, with the rules loadConfig
// applies to the file's keys.
func (c *traceConfig) validate() error {
	for _, v := range []struct {
		flag string
		err  error
	}{
		{"output", checkOutput(c.output)},
		{"capture-bytes", checkCaptureBytes(c.captureBytes)},
		{"ring-buffer", checkRingBuffer(c.ringBuffer)},
		{"max-conns", checkMaxConns(c.maxConns)},
		{"log-format", checkLogFormat(c.logFormat)},
		{"log-level", checkLogLevel(c.logLevel)},
		{"flush-timeout", checkFlushTimeout(c.flushTimeout)},
		{"link-hold", checkLinkHold(c.linkHold)},
		{"link-max", checkMaxConns(c.linkMax)},
		{"ui", checkUI(c.ui)},
		{"metrics-addr", checkMetricsAddr(c.metricsAddr.addr)},
		{"data-hooks", checkDataHooks(c.dataHooks)},
	} {
		if v.err != nil {
			return fmt.Errorf("--%s %w", v.flag, v.err)
		}
	}
	return nil
}

// The check functions describe a bad value and what is accepted; the
// caller puts the flag or key name in front.

func checkOutput(s string) error {
	switch s {
	case "", "otlp", "text", "json":
		return nil
	}
	return fmt.Errorf("%q: accepted values are otlp, text, json", s)
}

func checkDataHooks(s string) error {
	if _, err := tracer.ParseDataHooks(s); err != nil {
		return fmt.Errorf("%q: accepted values are auto, socket, syscalls", s)
	}
	return nil
}

func checkCaptureBytes(n int) error {
	if n < 64 || n > tracer.MaxCaptureBytes {
		return fmt.Errorf("%d: accepted values are 64 to %d", n, tracer.MaxCaptureBytes)
	}
	return nil
}

func checkRingBuffer(b byteSize) error {
	if b < 4096 || b&(b-1) != 0 {
		return fmt.Errorf("%d: accepted values are powers of two of 4096 or more, e.g. 8M", b)
	}
	return nil
}

func checkMaxConns(n int) error {
	if n < 1 {
		return fmt.Errorf("%d: accepted values are 1 or more", n)
	}
	return nil
}

func checkLogFormat(s string) error {
	switch s {
	case "text", "json":
		return nil
	}
	return fmt.Errorf("%q: accepted values are text, json", s)
}

func checkLogLevel(s string) error {
	_, err := parseLevel(s)
	return err
}

func checkUI(s string) error {
	_, err := uiAddr(s)
	return err
}

func checkLinkHold(d time.Duration) error {
	if d < 0 || d > time.Minute {
		return fmt.Errorf("%q: accepted values are durations from 0s to 1m", d)
	}
	return nil
}

func checkFlushTimeout(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%q: accepted values are durations of 0 or more, e.g. 10s", d)
	}
	return nil
}

func checkMetricsAddr(s string) error {
	if s == "" {
		return nil
	}
	_, port, err := net.SplitHostPort(s)
	if err == nil {
		_, err = strconv.ParseUint(port, 10, 16)
	}
	if err != nil {
		return fmt.Errorf("%q: accepted values are host:port, e.g. 127.0.0.1:9464, or empty to disable metrics", s)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("%q: accepted values are debug, info, warn, error", s)
	}
	return l, nil
}

func (c *traceConfig) logger(w io.Writer) *slog.Logger {
	level, _ := parseLevel(c.logLevel)
	opts := &slog.HandlerOptions{Level: level}
	if c.logFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func traceCmd(args []string) int {
	cfg, env, err := parseTrace(args, os.Stderr, os.LookupEnv)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		if !errors.Is(err, errFlagParse) {
			fmt.Fprintln(os.Stderr, "sonde trace:", err)
		}
		return 2
	}
	for _, v := range env {
		if err := os.Setenv(v.name, v.value); err != nil {
			fmt.Fprintf(os.Stderr, "sonde trace: set %s: %v\n", v.name, err)
			return 2
		}
	}
	log := cfg.logger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runTrace(ctx, cfg, log, os.Stdout, nil); err != nil {
		log.Error("sonde trace failed", "error", err)
		return 1
	}
	return 0
}

// errFlagParse is a command line the flag package rejected; it has printed
// the reason and the usage already.
var errFlagParse = errors.New("bad command line")

// parseTrace reads the command line and the config file it names into a
// checked traceConfig, in order of precedence: flags, then the environment,
// then the file, then the defaults. The environment only holds OTLP
// settings, so the file's otlp section comes back as the variables to set
// where the environment has none.
func parseTrace(args []string, stderr io.Writer, lookupEnv func(string) (string, bool)) (*traceConfig, []envVar, error) {
	fs := flag.NewFlagSet("sonde trace", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var cfg traceConfig
	cfg.register(fs)
	configPath := fs.String("config", "", "read settings from this YAML file; flags given on the command line win over the environment (OTEL_*), which wins over the file")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), `usage: sonde trace [--config FILE] [flags]

Attach to running programs and emit one span per HTTP/1.x exchange.
OTLP export is configured with the standard OTEL_EXPORTER_OTLP_* variables,
or with the otlp section of the config file.

Precedence: flags on the command line > environment (OTEL_*) > config file
> defaults. A flag given explicitly wins even when it equals its default.

flags:`)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil, nil, err
		}
		return nil, nil, fmt.Errorf("%w: %w", errFlagParse, err)
	}
	if fs.NArg() > 0 {
		return nil, nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	// Flags first: a bad flag is reported as a flag even when the file
	// would have replaced nothing.
	if err := cfg.validate(); err != nil {
		return nil, nil, err
	}
	var env []envVar
	if *configPath != "" {
		fc, err := loadConfig(*configPath)
		if err != nil {
			return nil, nil, err
		}
		fc.apply(&cfg, flagsSet(fs))
		env = fc.OTLP.environ(lookupEnv)
	}
	return &cfg, env, nil
}

// runTrace traces until ctx is done, then flushes and logs the final stats.
// ready, when set, runs once every probe is attached.
func runTrace(ctx context.Context, cfg *traceConfig, log *slog.Logger, out io.Writer, ready func()) error {
	if err := features.CheckPrivileges(); err != nil {
		return err
	}
	if cfg.cpuProfile != "" {
		f, err := os.Create(cfg.cpuProfile)
		if err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return fmt.Errorf("cpu profile: %w", err)
		}
		defer pprof.StopCPUProfile()
	}
	// Bound before the slow attach so that a taken address fails at once.
	metricsLn, err := listenMetrics(cfg.metricsAddr, log)
	if err != nil {
		return err
	}
	if metricsLn != nil {
		defer metricsLn.Close()
	}
	exp, err := export.New(ctx, &export.Options{Format: export.Format(cfg.output), Writer: out})
	if err != nil {
		return fmt.Errorf("set up export: %w", err)
	}
	sinks := teeSink{exp}
	var recorder *export.Exporter
	if cfg.record != "" {
		f, err := os.Create(cfg.record)
		if err != nil {
			_ = exp.Shutdown(context.Background())
			return fmt.Errorf("record: %w", err)
		}
		defer f.Close()
		if recorder, err = export.New(ctx, &export.Options{Format: export.FormatJSON, Writer: f}); err != nil {
			_ = exp.Shutdown(context.Background())
			return fmt.Errorf("record: %w", err)
		}
		sinks = append(sinks, recorder)
	}
	// The live service map serves sonde map on the metrics address, and,
	// when spans go over OTLP, the service graph metrics go with them.
	var live *servicemap.Live
	var meters *sdkmetric.MeterProvider
	if exp.Format() == export.FormatOTLP {
		if meters, err = export.NewMeterProvider(ctx); err != nil {
			_ = exp.Shutdown(context.Background())
			return fmt.Errorf("set up metrics export: %w", err)
		}
	}
	var recent *ui.Recent
	if cfg.ui != "" {
		recent = ui.NewRecent(nil)
		sinks = append(sinks, recent)
	}
	if metricsLn != nil || meters != nil || recent != nil {
		var opts servicemap.Options
		if meters != nil {
			graph, err := servicemap.NewMetrics(meters)
			if err != nil {
				_ = exp.Shutdown(context.Background())
				return err
			}
			opts.Observe = graph.Observe
		}
		live = servicemap.NewLive(&opts)
		sinks = append(sinks, live)
		flushCtx, stopFlush := context.WithCancel(ctx)
		defer stopFlush()
		go live.FlushEvery(flushCtx, time.Second)
	}
	dataHooks, err := tracer.ParseDataHooks(cfg.dataHooks)
	if err != nil {
		_ = exp.Shutdown(context.Background())
		return err
	}
	t, err := tracer.New(&tracer.Options{
		PIDs:            cfg.pids,
		Exe:             cfg.exes,
		Select:          cfg.selects,
		Exclude:         cfg.excludes,
		CaptureBytes:    cfg.captureBytes,
		RingBufferBytes: int(cfg.ringBuffer),
		MaxConns:        cfg.maxConns,
		NoSSLProbes:     !cfg.tls,
		NoGoProbes:      !cfg.goProbes,
		Inject:          cfg.inject,
		DataHooks:       dataHooks,
		LinkHold:        linkHold(cfg.linkHold),
		LinkMax:         cfg.linkMax,
		Sink:            sinks.sink(),
		Logger:          log,
	})
	if err != nil {
		_ = exp.Shutdown(context.Background())
		return err
	}
	if metricsLn != nil {
		stopMetrics, err := serveMetrics(metricsLn, snapshot(t, exp), live, log)
		if err != nil {
			t.Close()
			_ = exp.Shutdown(context.Background())
			return err
		}
		defer stopMetrics()
	}
	if recent != nil {
		addr, _ := uiAddr(cfg.ui)
		stopUI, err := serveUI(addr, live, recent, log)
		if err != nil {
			t.Close()
			_ = exp.Shutdown(context.Background())
			return err
		}
		defer stopUI()
	}
	if ready != nil {
		ready()
	}
	watchCtx, stopWatch := context.WithCancel(ctx)
	go watchExport(watchCtx, log, exp)
	runErr := t.Run(ctx)
	stopWatch()
	t.Close()

	flushCtx, cancel := context.WithTimeout(context.Background(), cfg.flushTimeout)
	defer cancel()
	shutErr := exp.Shutdown(flushCtx)
	if live != nil {
		live.Close()
	}
	if meters != nil {
		if err := meters.Shutdown(flushCtx); err != nil {
			log.Error("service graph metrics not exported", "error", err)
		}
	}
	if recorder != nil {
		if err := recorder.Shutdown(flushCtx); err != nil {
			log.Error("record: spans not written", "file", cfg.record, "error", err)
		}
		if st := recorder.Stats(); st.Exported != st.Received {
			log.Warn("record: spans not written", "file", cfg.record, "received", st.Received, "written", st.Exported, "error", st.LastError)
		}
	}
	logFinalStats(log, t.Stats(), exp.Stats())
	if runErr != nil {
		return runErr
	}
	if shutErr != nil {
		return fmt.Errorf("flush spans: %w", shutErr)
	}
	return nil
}

// watchExport logs, at most every few seconds, when spans failed to export
// or were dropped: a dead collector must be visible while sonde runs, not
// only in the final stats.
func watchExport(ctx context.Context, log *slog.Logger, exp *export.Exporter) {
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	var last export.Stats
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		s := exp.Stats()
		if s.Failed > last.Failed || s.Dropped > last.Dropped {
			var lastErr string
			if s.LastError != nil {
				lastErr = s.LastError.Error()
			}
			log.Warn("spans not exported",
				"failed", s.Failed-last.Failed, "dropped", s.Dropped-last.Dropped,
				"failed_total", s.Failed, "dropped_total", s.Dropped, "last_error", lastErr)
		}
		last = s
	}
}

func logFinalStats(log *slog.Logger, s tracer.Stats, e export.Stats) {
	reasons := make([]any, 0, len(s.ParseErrors))
	var parseErrors uint64
	for r, n := range s.ParseErrors {
		reasons = append(reasons, slog.Uint64(r, n))
		parseErrors += n
	}
	log.Info("final stats",
		"events", s.Events,
		"lost", s.Lost,
		"resyncs_after_loss", s.Resyncs,
		"exchanges_lost", s.LostExchanges,
		"truncated", s.Truncated,
		slog.Group("parse_errors", reasons...),
		"parse_errors_total", parseErrors,
		"spans", s.Spans,
		"spans_exported", e.Exported,
		"spans_dropped", e.Dropped,
		"export_failures", e.Failed,
		"spans_utf8_repaired", e.Repaired,
		"conns_evicted", s.ConnsEvicted,
		"conns_joined", s.ConnsJoined,
		"conns_at_exit", s.Conns,
		"processes_attached", s.Attached,
		"attach_failures", s.AttachFailures,
		"targets_full", s.TargetsFull,
		"ssl_libraries", s.SSLLibraries,
		"tls_unpaired", s.TLSUnpaired,
		"unread_calls", s.UnreadCalls,
		"ciphertext_events", s.Ciphertext,
		"http2_conns", s.HTTP2Conns,
		"http2_headers_unknown", s.HTTP2HeadersUnknown,
		"go_spans", s.GoSpans,
		"go_grpc_spans", s.GoGRPCSpans,
		"link_candidates", s.LinkCandidates,
		"linked", s.Linked,
		"link_unmatched", s.LinkUnmatched,
		"proxy_linked", s.ProxyLinked,
		"injected", s.Injected,
		"inject_present", s.InjectPresent,
		"inject_off", s.InjectOff,
		"inject_failed", s.InjectFailed,
		"inject_adopted", s.InjectAdopted,
		"inject_unmatched", s.InjectUnmatched,
		"inject_detached", s.InjectDetached,
		"go_merged", s.GoMerged,
		"go_socket_only", s.GoSocketOnly,
		"pending_at_exit", s.PendingAtExit,
		"bad_records", s.BadRecords,
	)
}

// pidList is a repeatable, comma-separated list of process ids.
type pidList []int

func (p *pidList) String() string { return fmt.Sprint([]int(*p)) }
func (p *pidList) Set(s string) error {
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return fmt.Errorf("%q is not a process id", f)
		}
		*p = append(*p, n)
	}
	return nil
}

// ruleList is a repeatable selector rule (see discover.ParseRule).
type ruleList []discover.Rule

func (l *ruleList) String() string {
	parts := make([]string, len(*l))
	for i, r := range *l {
		parts[i] = r.String()
	}
	return strings.Join(parts, " ")
}

func (l *ruleList) Set(s string) error {
	r, err := discover.ParseRule(s)
	if err != nil {
		return err
	}
	*l = append(*l, r)
	return nil
}

// listenAddr is the metrics address. It records whether the user chose it,
// on the command line or in the config file, because only then is failing
// to bind it an error.
type listenAddr struct {
	addr     string
	explicit bool
}

func (a *listenAddr) String() string { return a.addr }
func (a *listenAddr) Set(s string) error {
	a.addr, a.explicit = s, true
	return nil
}

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// byteSize accepts 4096, 64K, 8M or 1G.
type byteSize int

func (b *byteSize) String() string { return strconv.Itoa(int(*b)) }
func (b *byteSize) Set(in string) error {
	s, mult := in, 1
	switch {
	case strings.HasSuffix(s, "K"):
		mult, s = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mult, s = 1<<20, strings.TrimSuffix(s, "M")
	case strings.HasSuffix(s, "G"):
		mult, s = 1<<30, strings.TrimSuffix(s, "G")
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return fmt.Errorf("%q is not a size", in)
	}
	*b = byteSize(n * mult)
	return nil
}

// teeSink hands every span to each of its sinks.
type teeSink []tracer.Sink

func (ts teeSink) Export(s *export.Span) {
	for _, sink := range ts {
		sink.Export(s)
	}
}

// sink is the one sink itself when there is only one.
func (ts teeSink) sink() tracer.Sink {
	if len(ts) == 1 {
		return ts[0]
	}
	return ts
}

// linkHold maps the CLI's 0s (off) to the tracer's negative hold.
func linkHold(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
