// Package collector runs a real OpenTelemetry Collector for sonde's e2e
// tests, so that they prove export into the stack users already run rather
// than into a stand-in OTLP server.
//
// The collector is built by the official builder from manifest.yaml (see
// Build) and run with an OTLP receiver on loopback and the debug exporter at
// detailed verbosity. Spans parses what the debug exporter printed, which is
// exactly what the collector made of the received data.
package collector

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	startAttempts = 3
	readyTimeout  = 30 * time.Second
	stopTimeout   = 10 * time.Second
	logTailLines  = 60
)

// Collector is a running collector process owned by one test.
type Collector struct {
	grpcAddr string
	httpAddr string
	logPath  string // the collector's own stdout and stderr
	outPath  string // the debug exporter's output

	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned
	err    error         // cmd.Wait's result, valid after exited is closed

	logShown int // bytes of the log already printed by WaitSpans
}

// Start runs a collector for the duration of tb and waits until its OTLP
// receiver accepts connections. Every collector listens on ports of its own
// and writes only below tb.TempDir, so tests may run them in parallel.
func Start(tb testing.TB) *Collector {
	tb.Helper()
	bin := Build(tb)
	dir := tb.TempDir()
	begin := time.Now()
	for attempt := 1; ; attempt++ {
		c, err := launch(bin, dir, attempt)
		if err == nil {
			err = c.waitReady()
		}
		if err == nil {
			tb.Cleanup(func() { c.stop(tb) })
			tb.Logf("collector: ready in %s, OTLP gRPC %s, HTTP %s", time.Since(begin).Round(time.Millisecond), c.grpcAddr, c.httpAddr)
			return c
		}
		var log string
		if c != nil {
			c.kill()
			log = c.logTail(logTailLines)
		}
		// Free ports are picked by binding and releasing them, so another
		// process may grab one before the collector binds it; a fresh pair
		// almost always works.
		if attempt < startAttempts && strings.Contains(log, "address already in use") {
			tb.Logf("collector: port taken before the collector bound it, retrying")
			continue
		}
		tb.Fatalf("collector: start: %v\ncollector log tail:\n%s", err, log)
	}
}

func launch(bin, dir string, attempt int) (*Collector, error) {
	ports, err := freePorts(2)
	if err != nil {
		return nil, err
	}
	suffix := strconv.Itoa(attempt)
	c := &Collector{
		grpcAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0])),
		httpAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1])),
		logPath:  filepath.Join(dir, "collector-"+suffix+".log"),
		outPath:  filepath.Join(dir, "debug-"+suffix+".out"),
		exited:   make(chan struct{}),
	}
	cfgPath := filepath.Join(dir, "config-"+suffix+".yaml")
	if err := os.WriteFile(cfgPath, []byte(c.config()), 0o644); err != nil {
		return nil, err
	}
	logFile, err := os.Create(c.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()

	c.cmd = exec.Command(bin, "--config=file:"+cfgPath)
	c.cmd.Dir = dir
	c.cmd.Stdout = logFile
	c.cmd.Stderr = logFile
	c.cmd.SysProcAttr = sysProcAttr(false)
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		c.err = c.cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

// config writes the debug exporter's output to a file of its own so that
// parsing never has to pick it out of the collector's log, and without the
// exporter queue so that a span is in that file by the time the export RPC
// returns, and with sampling that never drops an entry, since every export
// logs the same summary message. The collector's own metrics are off: their
// default endpoint is a fixed port that parallel collectors would fight over.
func (c *Collector) config() string {
	return fmt.Sprintf(`receivers:
  otlp:
    protocols:
      grpc:
        endpoint: %s
      http:
        endpoint: %s
exporters:
  debug:
    verbosity: detailed
    use_internal_logger: false
    output_paths: [%s]
    sampling_initial: 1000000
    sampling_thereafter: 1
    sending_queue:
      enabled: false
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: info
    # Without these the resource is repeated on every log line, burying
    # the messages in the tails that failing tests print. Only the legacy
    # inline form can drop the defaults; the collector warns about it once.
    resource:
      service.instance.id: null
      service.name: null
      service.version: null
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [debug]
`, c.grpcAddr, c.httpAddr, strconv.Quote(c.outPath))
}

// freePorts holds all listeners until every port is picked so that the
// kernel cannot hand out the same port twice.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// readyMessage is what service v0.162.0 logs once every component started.
// Waiting for it as well as dialing keeps a foreign process that took one of
// the ports from passing for the collector.
const readyMessage = "Everything is ready. Begin running and processing data."

func (c *Collector) waitReady() error {
	deadline := time.Now().Add(readyTimeout)
	for {
		select {
		case <-c.exited:
			return fmt.Errorf("collector exited before its receiver was ready: %v", c.err)
		default:
		}
		if c.logContains(readyMessage) && dialable(c.grpcAddr) && dialable(c.httpAddr) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("receiver not accepting connections on %s and %s after %s", c.grpcAddr, c.httpAddr, readyTimeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (c *Collector) logContains(s string) bool {
	data, err := os.ReadFile(c.logPath)
	return err == nil && bytes.Contains(data, []byte(s))
}

func dialable(addr string) bool {
	conn, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return false
	}
	conn.Close()
	return true
}

// Endpoint is the host:port of the OTLP/gRPC receiver.
func (c *Collector) Endpoint() string { return c.grpcAddr }

// HTTPEndpoint is the host:port of the OTLP/HTTP receiver.
func (c *Collector) HTTPEndpoint() string { return c.httpAddr }

// Spans returns every span the debug exporter has printed so far, in the
// order the collector exported them. An export still being written is left
// out until it is complete.
func (c *Collector) Spans() []Span {
	data, err := os.ReadFile(c.outPath)
	if err != nil {
		return nil
	}
	return parse(data)
}

// WaitSpans polls until at least n spans satisfy match (nil matches every
// span) and returns all matching spans seen by then. On timeout it fails tb
// with what the collector did receive and the tail of its log.
func (c *Collector) WaitSpans(tb testing.TB, n int, timeout time.Duration, match func(Span) bool) []Span {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		all := c.Spans()
		var got []Span
		for _, s := range all {
			if match == nil || match(s) {
				got = append(got, s)
			}
		}
		if len(got) >= n {
			return got
		}
		exited := false
		select {
		case <-c.exited:
			exited = true
		default:
		}
		if exited || time.Now().After(deadline) {
			var b strings.Builder
			fmt.Fprintf(&b, "collector: want %d matching spans, got %d after %s; %d spans received in total:\n", n, len(got), timeout, len(all))
			for i, s := range all {
				if i == 40 {
					fmt.Fprintf(&b, "  ... %d more\n", len(all)-i)
					break
				}
				fmt.Fprintf(&b, "  %s\n", s)
			}
			if exited {
				fmt.Fprintf(&b, "the collector exited: %v\n", c.err)
			}
			fmt.Fprintf(&b, "collector log tail:\n%s", c.logTail(logTailLines))
			c.logShown = c.logSize()
			tb.Fatal(b.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// stop ends the collector gracefully so that it flushes and its shutdown
// errors show up in the log, and kills it if it does not stop in time.
func (c *Collector) stop(tb testing.TB) {
	select {
	case <-c.exited:
		// Nobody but stop signals the collector, so an early exit is a crash
		// that may explain missing spans.
		tb.Errorf("collector: exited during the test: %v\ncollector log tail:\n%s", c.err, c.logTail(logTailLines))
		return
	default:
	}
	c.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-c.exited:
	case <-time.After(stopTimeout):
		tb.Logf("collector: no exit %s after SIGTERM, killing it", stopTimeout)
		c.kill()
	}
	if !tb.Failed() {
		return
	}
	if c.logShown == 0 {
		tb.Logf("collector: log tail:\n%s", c.logTail(logTailLines))
		return
	}
	// WaitSpans already printed the tail; only the shutdown is news.
	if data, err := os.ReadFile(c.logPath); err == nil && len(data) > c.logShown {
		tb.Logf("collector: log since the tail above:\n%s", tail(data[c.logShown:], logTailLines))
	}
}

func (c *Collector) logSize() int {
	fi, err := os.Stat(c.logPath)
	if err != nil {
		return 0
	}
	return int(fi.Size())
}

func (c *Collector) kill() {
	c.cmd.Process.Kill()
	<-c.exited
}

func (c *Collector) logTail(n int) string {
	data, err := os.ReadFile(c.logPath)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	return string(tail(data, n))
}

func tail(data []byte, n int) []byte {
	lines := bytes.Split(bytes.TrimRight(data, "\n"), []byte("\n"))
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return bytes.Join(lines, []byte("\n"))
}
