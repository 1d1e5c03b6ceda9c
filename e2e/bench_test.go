package e2e

import (
	"bufio"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/otlptest"
	"github.com/sondehq/sonde/internal/testutil"
)

// BenchmarkHTTPHello measures what tracing costs a Go net/http hello server
// under wrk: untraced and traced rounds alternate in one run, so that the
// machine's noise hits both sides alike. Spans go over OTLP/gRPC to a
// receiver in this process, as they would to a collector.
//
// Reported per request: the throughput ratio traced/untraced, the server
// CPU added by tracing, sonde's own CPU, and sonde's peak RSS.
func BenchmarkHTTPHello(b *testing.B) {
	wrk := testutil.RequireTool(b, "wrk")
	testutil.RequireRoot(b)
	testutil.RequireBPF(b)
	const rounds = 3
	duration := 5 * time.Second
	if d, err := time.ParseDuration(os.Getenv("SONDE_BENCH_DURATION")); err == nil {
		duration = d
	}
	var base, traced runStats
	var sondeCPU time.Duration
	var sondeRSS int64
	for range b.N {
		for range rounds {
			base.add(benchRound(b, wrk, duration, false, nil, nil))
			var cpu time.Duration
			var rss int64
			traced.add(benchRound(b, wrk, duration, true, &cpu, &rss))
			sondeCPU += cpu
			sondeRSS = max(sondeRSS, rss)
		}
	}
	ratio := traced.rate() / base.rate()
	added := traced.cpuPerReq() - base.cpuPerReq()
	own := float64(sondeCPU.Microseconds()) / float64(traced.requests)
	b.ReportMetric(ratio, "throughput_ratio")
	b.ReportMetric(base.rate(), "untraced_req/s")
	b.ReportMetric(traced.rate(), "traced_req/s")
	b.ReportMetric(added, "server_µs_added/req")
	b.ReportMetric(own, "sonde_µs/req")
	b.ReportMetric(float64(sondeRSS)/(1<<20), "sonde_peak_RSS_MB")
	b.ReportMetric(0, "ns/op") // wall time of the whole run says nothing
}

type runStats struct {
	requests int64
	elapsed  time.Duration
	cpu      time.Duration // server CPU
}

func (r *runStats) add(o runStats) {
	r.requests += o.requests
	r.elapsed += o.elapsed
	r.cpu += o.cpu
}

func (r runStats) rate() float64 { return float64(r.requests) / r.elapsed.Seconds() }
func (r runStats) cpuPerReq() float64 {
	return float64(r.cpu.Microseconds()) / float64(r.requests)
}

var wrkRequests = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(m?s)`)

func benchRound(b *testing.B, wrk string, d time.Duration, trace bool, sondeCPU *time.Duration, sondeRSS *int64) runStats {
	b.Helper()
	srv := startGoServer(b)
	defer srv.cmd.Process.Kill()
	var s *sondeRun
	if trace {
		rcv := otlptest.Start(b)
		args := []string{"--pid", fmt.Sprint(srv.pid()), "--output", "otlp"}
		if prof := os.Getenv("SONDE_BENCH_CPUPROFILE"); prof != "" {
			args = append(args, "--cpu-profile", prof)
		}
		s = startSonde(b, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.Endpoint()}, args...)
	}
	cpu0, err := procCPU(srv.pid())
	if err != nil {
		b.Fatal(err)
	}
	out := run(b, wrk, "-t1", "-c10", fmt.Sprintf("-d%ds", int(d.Seconds())), "http://"+srv.addr+"/hello")
	cpu1, err := procCPU(srv.pid())
	if err != nil {
		b.Fatal(err)
	}
	m := wrkRequests.FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("cannot read wrk's output:\n%s", out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	elapsed, _ := time.ParseDuration(m[2] + m[3])
	if strings.Contains(out, "Non-2xx") || strings.Contains(out, "Socket errors") {
		b.Fatalf("wrk saw errors:\n%s", out)
	}
	if trace {
		if *sondeCPU, err = procCPU(s.cmd.Process.Pid); err != nil {
			b.Fatal(err)
		}
		if *sondeRSS, err = peakRSS(s.cmd.Process.Pid); err != nil {
			b.Fatal(err)
		}
		r := s.stop(b)
		// Every request must have become a span, or the figures flatter us.
		if got := int64(r.stat("spans")); got < n {
			b.Fatalf("%d requests but %d spans (lost %v)", n, got, r.stats["lost"])
		}
	}
	return runStats{requests: n, elapsed: elapsed, cpu: cpu1 - cpu0}
}

// procCPU is the user+system CPU time of a process, all threads.
func procCPU(pid int) (time.Duration, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the parenthesised command name; utime and stime are
	// the 12th and 13th of them.
	s := string(data)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(ut+st) * time.Second / ticks, nil
}

// peakRSS is VmHWM of a process in bytes.
func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
}
