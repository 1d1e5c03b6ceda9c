package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/sondehq/sonde/tracer"
	"github.com/sondehq/sonde/tracer/discover"
	"github.com/sondehq/sonde/tracer/export"
	"github.com/sondehq/sonde/tracer/features"
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
	logFormat    string
	logLevel     string
	flushTimeout time.Duration
	cpuProfile   string
}

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
	fs.StringVar(&c.cpuProfile, "cpu-profile", "", "write a CPU profile of sonde itself to this file (for performance work)")
}

func (c *traceConfig) validate() error {
	switch c.output {
	case "", "otlp", "text", "json":
	default:
		return fmt.Errorf("--output %q: accepted values are otlp, text, json", c.output)
	}
	switch c.logFormat {
	case "text", "json":
	default:
		return fmt.Errorf("--log-format %q: accepted values are text, json", c.logFormat)
	}
	if _, err := parseLevel(c.logLevel); err != nil {
		return err
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return l, fmt.Errorf("--log-level %q: accepted values are debug, info, warn, error", s)
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
	fs := flag.NewFlagSet("sonde trace", flag.ContinueOnError)
	var cfg traceConfig
	cfg.register(fs)
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: sonde trace [flags]\n\nAttach to running programs and emit one span per HTTP/1.x exchange.\nOTLP export is configured with the standard OTEL_EXPORTER_OTLP_* variables.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sonde trace: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "sonde trace:", err)
		return 2
	}
	log := cfg.logger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := runTrace(ctx, &cfg, log, os.Stdout, nil); err != nil {
		log.Error("sonde trace failed", "error", err)
		return 1
	}
	return 0
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
	exp, err := export.New(ctx, &export.Options{Format: export.Format(cfg.output), Writer: out})
	if err != nil {
		return fmt.Errorf("set up export: %w", err)
	}
	t, err := tracer.New(&tracer.Options{
		PIDs:            cfg.pids,
		Exe:             cfg.exes,
		Select:          cfg.selects,
		Exclude:         cfg.excludes,
		CaptureBytes:    cfg.captureBytes,
		RingBufferBytes: int(cfg.ringBuffer),
		MaxConns:        cfg.maxConns,
		Sink:            exp,
		Logger:          log,
	})
	if err != nil {
		_ = exp.Shutdown(context.Background())
		return err
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
		"conns_evicted", s.ConnsEvicted,
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

type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(s string) error { *l = append(*l, s); return nil }

// byteSize accepts 4096, 64K, 8M or 1G.
type byteSize int

func (b *byteSize) String() string { return strconv.Itoa(int(*b)) }
func (b *byteSize) Set(s string) error {
	mult := 1
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
		return fmt.Errorf("%q is not a size", s)
	}
	*b = byteSize(n * mult)
	return nil
}
