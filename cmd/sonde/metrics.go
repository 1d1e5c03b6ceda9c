package main

// sonde's own Prometheus endpoint, served while `sonde trace` runs.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"time"

	"github.com/sondehq/sonde/tracer"
	"github.com/sondehq/sonde/tracer/export"
	"github.com/sondehq/sonde/tracer/metrics"
	"github.com/sondehq/sonde/tracer/servicemap"
)

// listenMetrics binds the metrics address. It returns a nil listener when
// metrics are disabled, or when the default address is taken: another
// agent there must not keep sonde from tracing, whereas an address the user
// chose is one they will scrape, so failing to bind it is an error.
func listenMetrics(a listenAddr, log *slog.Logger) (net.Listener, error) {
	if a.addr == "" {
		return nil, nil
	}
	ln, err := net.Listen("tcp", a.addr)
	if err == nil {
		return ln, nil
	}
	if a.explicit {
		return nil, fmt.Errorf("metrics address %s: %w (choose another with --metrics-addr, or disable metrics with --metrics-addr '')", a.addr, err)
	}
	log.Warn("running without metrics: the default metrics address is not available; choose another with --metrics-addr",
		"addr", a.addr, "error", err)
	return nil, nil
}

// serveMetrics serves /metrics on ln until the returned stop is called.
func serveMetrics(ln net.Listener, snap func() metrics.Snapshot, live *servicemap.Live, log *slog.Logger) (stop func(), err error) {
	reg, err := metrics.NewRegistry(metrics.NewCollector(snap, &metrics.Options{
		Build:             metrics.Build{Version: version, Revision: vcsRevision()},
		ParseErrorReasons: parseErrorReasons(),
	}))
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics.Handler(reg))
	if live != nil {
		mux.HandleFunc("/map", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			_ = servicemap.WriteJSON(w, live.Map())
		})
	}
	stop = serveHTTP(ln, mux, "metrics", log)
	log.Info("serving metrics", "url", "http://"+ln.Addr().String()+"/metrics")
	return stop, nil
}

// serveHTTP serves h on ln until the returned stop is called; what names
// the server in its error log.
func serveHTTP(ln net.Listener, h http.Handler, what string, log *slog.Logger) (stop func()) {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelWarn),
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			log.Error(what+" server stopped", "error", err)
		}
	}()
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := srv.Shutdown(ctx); err != nil {
			_ = srv.Close()
		}
		<-done
	}
}

// snapshot reads the tracer's and the exporter's counters for a scrape.
func snapshot(t *tracer.Tracer, exp *export.Exporter) func() metrics.Snapshot {
	return func() metrics.Snapshot {
		s, e := t.Stats(), exp.Stats()
		return metrics.Snapshot{
			SpansExported:      e.Exported,
			SpansDropped:       e.Dropped,
			ExportFailures:     e.Failed,
			Spans:              s.Spans,
			Events:             s.Events,
			EventsLost:         s.Lost,
			RingBufferSize:     s.RingBufferSize,
			RingBufferPending:  s.RingBufferPending,
			ParseErrors:        s.ParseErrors,
			Processes:          s.Processes,
			AttachFailures:     s.AttachFailures,
			TargetsFull:        s.TargetsFull,
			TLSUnpaired:        s.TLSUnpaired,
			UnreadCalls:        s.UnreadCalls,
			SSLLibraries:       s.SSLLibraries,
			Connections:        s.Conns,
			ConnectionsEvicted: s.ConnsEvicted,
			ExchangesLost:      s.LostExchanges,
			BadRecords:         s.BadRecords,
			Attached:           s.Attached,
			AttachDelaySum:     s.AttachDelaySum,
			AttachDelayMax:     s.AttachDelayMax,
		}
	}
}

// parseErrorReasons lists the reasons the tracer counts parse errors by, so
// that each series exists, at zero, before its first error.
func parseErrorReasons() []string { return tracer.ParseErrorReasons() }

// vcsRevision is the commit the binary was built from, when Go recorded it.
func vcsRevision() string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, s := range info.Settings {
			if s.Key == "vcs.revision" {
				return s.Value
			}
		}
	}
	return ""
}
