package main

import (
	"fmt"
	"log/slog"
	"net"
	"strconv"

	"github.com/sondehq/sonde/tracer/servicemap"
	"github.com/sondehq/sonde/tracer/ui"
)

// uiAddr resolves --ui: a port alone, or an address with no host, binds to
// loopback; the page shows what the traced services do, so it is only
// reachable from elsewhere when a host is named.
func uiAddr(s string) (string, error) {
	if s == "" {
		return "", nil
	}
	if _, err := strconv.Atoi(s); err == nil {
		s = ":" + s
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", fmt.Errorf("%q: want PORT or HOST:PORT", s)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return "", fmt.Errorf("%q: bad port", s)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// serveUI serves the live page on addr until the returned stop is called.
func serveUI(addr string, live *servicemap.Live, recent *ui.Recent, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("ui address %s: %w", addr, err)
	}
	if ip := net.ParseIP(ln.Addr().(*net.TCPAddr).IP.String()); ip != nil && !ip.IsLoopback() {
		log.Warn("the live page is reachable from other hosts: it shows what the traced services call", "addr", ln.Addr().String())
	}
	log.Info("serving the live page", "url", "http://"+ln.Addr().String()+"/")
	return serveHTTP(ln, ui.Handler(live, recent), "ui", log), nil
}
