package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/otlptest"
	"github.com/sondehq/sonde/internal/testutil"
)

// BenchmarkNginxTLS measures what reading TLS costs nginx: a hello
// location served over HTTPS to wrk (1 thread, 10 keep-alive connections),
// untraced and traced rounds alternating in one run. Traced, every request
// passes sonde's OpenSSL probes (SSL_read and SSL_write, each an entry
// probe on an emulated PUSH plus a return probe) and its socket
// tracepoints, and becomes a span exported over OTLP/gRPC.
//
// Reported: the throughput ratio traced/untraced; nginx's CPU per request
// (master and worker) and what tracing adds to it, also with --tls=false
// (sockets only: the ciphertext is seen and recognised, no span is made),
// which splits the cost between the socket path and the OpenSSL probes;
// sonde's CPU per request and peak RSS; and the kernel's run-time
// accounting of the OpenSSL programs per request, in a round of its own
// (bpf_stats costs every run).
func BenchmarkNginxTLS(b *testing.B) {
	wrk := testutil.RequireTool(b, "wrk")
	testutil.RequireRoot(b)
	testutil.RequireBPF(b)
	const rounds = 3
	duration := envDuration("SONDE_BENCH_DURATION", 5*time.Second)
	cert, key := tlsCert(b)
	port := freePort(b)
	addr := "127.0.0.1:" + port
	nginx := startNginx(b, addr, fmt.Sprintf(`
  server {
    listen %s ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    access_log off;
    keepalive_requests 1000000;
    location / { return 200 "hello\n"; }
  }`, addr, cert, key))
	pids := append([]int{nginx.pid()}, childPIDs(nginx.pid())...)
	var base, traced, socketsOnly runStats
	var nginxAdded, tlsOffAdded added
	var sondeCPU, sslRun time.Duration
	var sslRequests int64
	var sondeRSS int64
	for range b.N {
		for range rounds {
			baseRound := nginxRound(b, wrk, addr, pids, duration, nil)
			base.add(baseRound)
			socketsRound := nginxRound(b, wrk, addr, pids, duration, &tracedStats{noTLS: true})
			socketsOnly.add(socketsRound)
			tlsOffAdded.add(baseRound, socketsRound)
			var t tracedStats
			tracedRound := nginxRound(b, wrk, addr, pids, duration, &t)
			traced.add(tracedRound)
			nginxAdded.add(baseRound, tracedRound)
			sondeCPU += t.cpu
			sondeRSS = max(sondeRSS, t.rss)

			t = tracedStats{bpfStats: true}
			r := nginxRound(b, wrk, addr, pids, duration, &t)
			sslRun += t.bpf
			sslRequests += r.requests
			sondeRSS = max(sondeRSS, t.rss)
		}
	}
	b.ReportMetric(traced.rate()/base.rate(), "throughput_ratio")
	b.ReportMetric(base.rate(), "untraced_req/s")
	b.ReportMetric(traced.rate(), "traced_req/s")
	b.ReportMetric(base.cpuPerReq(), "nginx_µs/req_untraced")
	nginxAdded.report(b, "nginx_µs_added/req")
	tlsOffAdded.report(b, "nginx_µs_added/req_tls_off")
	b.ReportMetric(perReq(sondeCPU, traced.requests), "sonde_µs/req")
	b.ReportMetric(perReq(sslRun, sslRequests), "openssl_bpf_µs/req")
	b.ReportMetric(float64(sondeRSS)/(1<<20), "sonde_peak_RSS_MB")
	b.ReportMetric(0, "ns/op")
}

// nginxRound loads nginx for d, traced when traced is set, and returns the
// requests served and nginx's CPU (every process in pids) meanwhile.
func nginxRound(b *testing.B, wrk, addr string, pids []int, d time.Duration, traced *tracedStats) runStats {
	b.Helper()
	var s *sondeRun
	var rcv *otlptest.Counter
	if traced != nil {
		rcv = otlptest.StartCounter(b)
		s = startSonde(b, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.Endpoint()},
			"--pid", strconv.Itoa(pids[0]), "--output", "otlp", fmt.Sprintf("--tls=%v", !traced.noTLS))
	}
	cpu0 := cpuOf(b, pids)
	var sonde0, run0 time.Duration
	if traced != nil {
		sonde0 = cpuOf(b, []int{s.pid()})
		if traced.bpfStats {
			defer enableBPFStats(b).Close()
			run0 = programRunTime(b, "ssl_")
		}
	}
	out := run(b, wrk, "-t1", "-c10", fmt.Sprintf("-d%ds", int(d.Seconds())), "https://"+addr+"/")
	m := wrkRequests.FindStringSubmatch(out)
	if m == nil || strings.Contains(out, "Non-2xx") || strings.Contains(out, "Socket errors") {
		b.Fatalf("wrk:\n%s", out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	elapsed, _ := time.ParseDuration(m[2] + m[3])
	if traced != nil && traced.bpfStats {
		traced.bpf = programRunTime(b, "ssl_") - run0
	}
	cpu1 := cpuOf(b, pids)
	if traced != nil {
		time.Sleep(500 * time.Millisecond) // sonde finishes the round's backlog
		traced.cpu = cpuOf(b, []int{s.pid()}) - sonde0
		var err error
		if traced.rss, err = peakRSS(s.pid()); err != nil {
			b.Fatal(err)
		}
		r := s.stop(b)
		// Every request must have become an https span, or the figures
		// flatter us.
		if got := int64(r.stat("spans")); got < n && !traced.noTLS {
			b.Fatalf("%d requests but %d spans (lost %v, tls_unpaired %v)", n, got, r.stats["lost"], r.stats["tls_unpaired"])
		}
		if got := rcv.Spans(); got < n && !traced.noTLS {
			b.Fatalf("%d requests but the receiver got %d spans", n, got)
		}
		if r.stat("parse_errors_total") != 0 {
			b.Fatalf("parse errors on TLS connections: %v", r.stats["parse_errors"])
		}
	}
	return runStats{requests: n, elapsed: elapsed, cpu: cpu1 - cpu0}
}

func cpuOf(b *testing.B, pids []int) time.Duration {
	b.Helper()
	var total time.Duration
	for _, pid := range pids {
		c, err := procCPU(pid)
		if err != nil {
			b.Fatal(err)
		}
		total += c
	}
	return total
}

// BenchmarkSSLProbeCall measures what sonde's OpenSSL probes cost one call
// of a probed function in the host's libssl: an entry probe on an emulated
// PUSH and a return probe. Rounds of a tight loop of calls alternate
// untraced, traced while the process is not selected (the probes are on
// the file, so every process that uses it pays the breakpoint and the
// return trampoline, and the programs return at once) and traced while it
// is selected.
func BenchmarkSSLProbeCall(b *testing.B) {
	gcc := testutil.RequireTool(b, "gcc")
	testutil.RequireRoot(b)
	testutil.RequireBPF(b)
	loop := filepath.Join(b.TempDir(), "sslloop")
	if out, err := exec.Command(gcc, "-O2", "-o", loop, "testdata/sslloop/sslloop.c", "-lssl", "-lcrypto").CombinedOutput(); err != nil {
		b.Fatalf("build sslloop: %v\n%s", err, out)
	}
	const rounds, calls = 5, 200000
	var untraced, unselected, selected float64
	for range b.N {
		for range rounds {
			untraced += sslLoop(b, loop, calls)
			s := startSonde(b, nil, "--exe", "/nonexistent/*")
			unselected += sslLoop(b, loop, calls)
			s.stop(b)
			s = startSonde(b, nil, "--exe", loop)
			selected += sslLoop(b, loop, calls)
			s.stop(b)
		}
	}
	n := float64(b.N * rounds)
	b.ReportMetric(untraced/n, "ns/call_untraced")
	b.ReportMetric((unselected-untraced)/n, "ns/call_added_unselected")
	b.ReportMetric((selected-untraced)/n, "ns/call_added_selected")
	b.ReportMetric(0, "ns/op")
}

func sslLoop(b *testing.B, loop string, calls int) float64 {
	b.Helper()
	out := run(b, loop, strconv.Itoa(calls))
	var ns float64
	if _, err := fmt.Sscanf(out, "%f ns/call", &ns); err != nil {
		b.Fatalf("sslloop said %q", out)
	}
	return ns
}
