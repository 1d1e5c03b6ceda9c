package e2e

import (
	"fmt"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/otlptest"
	"github.com/sondehq/sonde/internal/testutil"
)

// BenchmarkGRPCUnary measures what tracing costs a grpc-go unary server
// under closed-loop load: 8 goroutines of one client process calling as
// fast as they can over one connection. Untraced, traced with the Go
// probes, and traced from the sockets alone (--go=false) alternate in one
// run, so that the machine's noise hits every side alike. Only the server
// is selected; spans go over OTLP/gRPC to a receiver in this process.
//
// Reported: the throughput ratio traced/untraced, the server CPU per call
// that tracing adds (at the lower traced rate a Go server spends a little
// more per call, so this is an upper bound), sonde's CPU per call and its
// peak RSS; and the ratio and added CPU of the socket-only leg, which
// split the probes' share from the socket path's. A fourth round, traced
// with the kernel's run-time accounting on (which costs every program run
// a little, so it is kept out of the figures above), gives the run time of
// the Go probe programs and of the socket programs per call: the client
// runs the same executable, so its hits of the Go probes, which leave at
// once, are in that figure too.
func BenchmarkGRPCUnary(b *testing.B) {
	testutil.RequireRoot(b)
	testutil.RequireBPF(b)
	const rounds = 3
	duration := envDuration("SONDE_BENCH_DURATION", 5*time.Second)
	var base, traced, sockets runStats
	var serverAdded, socketsAdded added
	var sondeCPU, bpfGo, bpfSockets time.Duration
	var bpfCalls int64
	var sondeRSS int64
	for range b.N {
		for range rounds {
			baseRound := grpcRound(b, duration, nil)
			base.add(baseRound)
			var t tracedStats
			tracedRound := grpcRound(b, duration, &t)
			traced.add(tracedRound)
			serverAdded.add(baseRound, tracedRound)
			sondeCPU += t.cpu
			sondeRSS = max(sondeRSS, t.rss)
			t = tracedStats{noGo: true}
			socketsRound := grpcRound(b, duration, &t)
			sockets.add(socketsRound)
			socketsAdded.add(baseRound, socketsRound)
			t = tracedStats{bpfStats: true}
			statsRound := grpcRound(b, duration, &t)
			bpfGo += t.bpf
			bpfSockets += t.bpfSockets
			bpfCalls += statsRound.requests
		}
	}
	b.ReportMetric(traced.rate()/base.rate(), "throughput_ratio")
	b.ReportMetric(sockets.rate()/base.rate(), "throughput_ratio_sockets_only")
	b.ReportMetric(base.rate(), "untraced_calls/s")
	b.ReportMetric(traced.rate(), "traced_calls/s")
	serverAdded.report(b, "server_µs_added/call")
	socketsAdded.report(b, "server_µs_added/call_sockets_only")
	b.ReportMetric(base.cpuPerReq(), "server_µs/call_untraced")
	b.ReportMetric(perReq(sondeCPU, traced.requests), "sonde_µs/call")
	b.ReportMetric(perReq(bpfGo, bpfCalls), "bpf_go_probes_µs/call")
	b.ReportMetric(perReq(bpfSockets, bpfCalls), "bpf_sockets_µs/call")
	b.ReportMetric(float64(sondeRSS)/(1<<20), "sonde_peak_RSS_MB")
	b.ReportMetric(0, "ns/op")
}

var grpcLoadLine = regexp.MustCompile(`^ok (\d+) seconds ([0-9.]+)`)

// grpcRound serves for d under load, traced when traced is not nil.
func grpcRound(b *testing.B, d time.Duration, traced *tracedStats) runStats {
	b.Helper()
	srv := startProc(b, nil, bins.grpcpair, "server")
	defer srv.cmd.Process.Kill()
	var addr string
	waitFor(b, 15*time.Second, "the gRPC server", func() bool {
		var ok bool
		addr, ok = listenLine(srv.stdout.String())
		return ok
	})
	var s *sondeRun
	var rcv *otlptest.Counter
	if traced != nil {
		rcv = otlptest.StartCounter(b)
		args := []string{"--pid", strconv.Itoa(srv.pid()), "--output", "otlp"}
		if traced.noGo {
			args = append(args, "--go=false")
		}
		s = startSonde(b, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.Endpoint()}, args...)
		if !traced.noGo {
			waitFor(b, 60*time.Second, "Go probes on the gRPC server", func() bool {
				return s.countLogs("Go probes attached") > 0
			})
		}
	}
	cpu0, err := procCPU(srv.pid())
	if err != nil {
		b.Fatal(err)
	}
	var sonde0, go0, sockets0 time.Duration
	if s != nil {
		if sonde0, err = procCPU(s.pid()); err != nil {
			b.Fatal(err)
		}
		if traced.bpfStats {
			defer enableBPFStats(b).Close()
			go0, sockets0 = programRunTime(b, "go_"), programRunTime(b, socketPrograms...)
		}
	}
	out := run(b, bins.grpcpair, "load", addr, "8", d.String())
	if s != nil && traced.bpfStats {
		traced.bpf = programRunTime(b, "go_") - go0
		traced.bpfSockets = programRunTime(b, socketPrograms...) - sockets0
	}
	m := grpcLoadLine.FindStringSubmatch(out)
	if m == nil {
		b.Fatalf("grpcpair load:\n%s", out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	secs, _ := strconv.ParseFloat(m[2], 64)
	cpu1, err := procCPU(srv.pid())
	if err != nil {
		b.Fatal(err)
	}
	if s != nil {
		time.Sleep(500 * time.Millisecond) // the backlog of this round is its work too
		sonde1, err := procCPU(s.pid())
		if err != nil {
			b.Fatal(err)
		}
		traced.cpu = sonde1 - sonde0
		if traced.rss, err = peakRSS(s.pid()); err != nil {
			b.Fatal(err)
		}
		r := s.stop(b)
		// Every call must have become a span, or the figures flatter us.
		if got := int64(r.stat("spans")); got < n {
			b.Fatalf("%d calls but %d spans (lost %v)", n, got, r.stats["lost"])
		}
		if got := rcv.Spans(); got < n {
			b.Fatalf("%d calls but the receiver got %d spans", n, got)
		}
		if !traced.noGo && int64(r.stat("go_grpc_spans")) < n {
			b.Fatalf("%d calls but %d spans from the Go probes", n, int64(r.stat("go_grpc_spans")))
		}
	}
	return runStats{requests: n, elapsed: time.Duration(secs * float64(time.Second)), cpu: cpu1 - cpu0}
}

// listenLine reads the "listening ADDR" line a test server prints first.
func listenLine(out string) (string, bool) {
	var addr string
	if _, err := fmt.Sscanf(out, "listening %s\n", &addr); err != nil {
		return "", false
	}
	return addr, true
}
