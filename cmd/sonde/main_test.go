package main

import (
	"bytes"
	"errors"
	"flag"
	"io"
	"log/slog"
	"net"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func TestByteSize(t *testing.T) {
	for in, want := range map[string]int{"4096": 4096, "64K": 64 << 10, "8M": 8 << 20, "1G": 1 << 30} {
		var b byteSize
		if err := b.Set(in); err != nil || int(b) != want {
			t.Errorf("Set(%q) = %d, %v; want %d", in, b, err, want)
		}
	}
	for _, bad := range []string{"", "M", "-1", "0", "12X", "1.5M"} {
		var b byteSize
		if err := b.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

func TestPIDList(t *testing.T) {
	var p pidList
	if err := p.Set("1, 22"); err != nil {
		t.Fatal(err)
	}
	if err := p.Set("333"); err != nil {
		t.Fatal(err)
	}
	if got := p.String(); got != "[1 22 333]" {
		t.Errorf("got %s", got)
	}
	for _, bad := range []string{"", "abc", "0", "-5", "1,,2"} {
		var q pidList
		if err := q.Set(bad); err == nil {
			t.Errorf("Set(%q) accepted", bad)
		}
	}
}

func TestValidateNamesTheFieldAndAcceptedValues(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--output", "xml"}, "--output \"xml\": accepted values are otlp, text, json"},
		{[]string{"--log-format", "yaml"}, "--log-format \"yaml\": accepted values are text, json"},
		{[]string{"--log-level", "loud"}, "--log-level \"loud\": accepted values are debug, info, warn, error"},
		{[]string{"--data-hooks", "kprobes"}, "--data-hooks \"kprobes\": accepted values are auto, socket, syscalls"},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		var cfg traceConfig
		cfg.register(fs)
		if err := fs.Parse(tc.args); err != nil {
			t.Fatal(err)
		}
		err := cfg.validate()
		if err == nil || err.Error() != tc.want {
			t.Errorf("%v: got %v, want %q", tc.args, err, tc.want)
		}
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	var cfg traceConfig
	cfg.register(fs)
	if err := fs.Parse(nil); err != nil || cfg.validate() != nil {
		t.Errorf("defaults do not validate: %v", cfg.validate())
	}
	if cfg.captureBytes != 4096 || cfg.ringBuffer != 8<<20 || cfg.maxConns != 65536 {
		t.Errorf("defaults: %+v", cfg)
	}
}

func TestUnknownCommandAndUsage(t *testing.T) {
	if code := run([]string{"frobnicate"}); code != 2 {
		t.Errorf("unknown command exit %d, want 2", code)
	}
	if code := run(nil); code != 2 {
		t.Errorf("no command exit %d, want 2", code)
	}
	if code := run([]string{"help"}); code != 0 {
		t.Errorf("help exit %d, want 0", code)
	}
	if code := traceCmd([]string{"--output", "bogus"}); code != 2 {
		t.Errorf("bad flag value exit %d, want 2", code)
	}
	if code := traceCmd([]string{"stray"}); code != 2 {
		t.Errorf("stray argument exit %d, want 2", code)
	}
	for _, c := range commands() {
		if !c.hidden && (c.summary == "" || strings.ToLower(c.summary[:1]) != c.summary[:1]) {
			t.Errorf("command %s summary %q: want a non-empty summary starting in lowercase", c.name, c.summary)
		}
	}
}

func TestValidateNewFlagChecks(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--capture-bytes", "10"}, `--capture-bytes 10: accepted values are 64 to 16384`},
		{[]string{"--ring-buffer", "3M"}, `--ring-buffer 3145728: accepted values are powers of two of 4096 or more, e.g. 8M`},
		{[]string{"--max-conns", "0"}, `--max-conns 0: accepted values are 1 or more`},
		{[]string{"--flush-timeout", "-1s"}, `--flush-timeout "-1s": accepted values are durations of 0 or more, e.g. 10s`},
		{[]string{"--metrics-addr", "9464"}, `--metrics-addr "9464": accepted values are host:port, e.g. 127.0.0.1:9464, or empty to disable metrics`},
		{[]string{"--metrics-addr", "localhost:http"}, `--metrics-addr "localhost:http": accepted values are host:port, e.g. 127.0.0.1:9464, or empty to disable metrics`},
	} {
		_, _, err := parseTrace(tc.args, io.Discard, func(string) (string, bool) { return "", false })
		if err == nil || err.Error() != tc.want {
			t.Errorf("%v: got %v, want %q", tc.args, err, tc.want)
		}
	}
}

func TestMetricsAddrRemembersWhetherItWasChosen(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want listenAddr
	}{
		{nil, listenAddr{addr: "127.0.0.1:9464"}},
		{[]string{"--metrics-addr", "127.0.0.1:9464"}, listenAddr{addr: "127.0.0.1:9464", explicit: true}},
		{[]string{"--metrics-addr", ""}, listenAddr{addr: "", explicit: true}},
		{[]string{"--metrics-addr", "[::1]:0"}, listenAddr{addr: "[::1]:0", explicit: true}},
	} {
		cfg, _, err := parseTrace(tc.args, io.Discard, func(string) (string, bool) { return "", false })
		if err != nil || cfg.metricsAddr != tc.want {
			t.Errorf("%v: got %+v, %v; want %+v", tc.args, cfg.metricsAddr, err, tc.want)
		}
	}
}

func TestListenMetrics(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	addr := taken.Addr().String()

	var logs bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logs, nil))

	// The default address taken: a warning, and sonde runs on.
	ln, err := listenMetrics(listenAddr{addr: addr}, log)
	if ln != nil || err != nil {
		t.Errorf("default address taken: got %v, %v; want no listener and no error", ln, err)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), addr) {
		t.Errorf("no warning naming %s: %q", addr, logs.String())
	}

	// An address the user chose: an error that says which and why.
	ln, err = listenMetrics(listenAddr{addr: addr, explicit: true}, log)
	if ln != nil || err == nil || !strings.Contains(err.Error(), "metrics address "+addr) || !errors.Is(err, syscall.EADDRINUSE) {
		t.Errorf("chosen address taken: got %v, %v", ln, err)
	}

	// Disabled.
	if ln, err := listenMetrics(listenAddr{addr: "", explicit: true}, log); ln != nil || err != nil {
		t.Errorf("disabled: got %v, %v", ln, err)
	}

	ln, err = listenMetrics(listenAddr{addr: "127.0.0.1:0", explicit: true}, log)
	if err != nil || ln == nil {
		t.Fatalf("free address: got %v, %v", ln, err)
	}
	ln.Close()
}

// Every reason the tracer counts has a series from the first scrape.
func TestParseErrorReasons(t *testing.T) {
	got := parseErrorReasons()
	for _, want := range []string{"not_http", "other", "bad_start_line", "bad_chunk", "too_many_pending"} {
		if !slices.Contains(got, want) {
			t.Errorf("%q missing from %v", want, got)
		}
	}
	if slices.Contains(got, "unknown") {
		t.Errorf("unknown in %v", got)
	}
}
