package e2e

import (
	"fmt"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/otlptest"
	"github.com/sondehq/sonde/internal/testutil"
)

// BenchmarkInject measures what traceparent injection costs the client
// whose requests it writes into: wrk (1 thread, 10 keep-alive connections)
// against a Go hello server in a network namespace, traced by sonde
// without and with --inject, in alternating rounds of one run. The figures
// are wrk's CPU per request (its own and the kernel's on its behalf, where
// sk_msg runs), its throughput, and the kernel's run time of the injection
// programs per request (bpf_stats, a round of its own).
func BenchmarkInject(b *testing.B) {
	wrk := testutil.RequireTool(b, "wrk")
	testutil.RequireRoot(b)
	testutil.RequireBPF(b)
	ns := newNetns(b)
	backend := startProc(b, nil, "ip", append(ns.in()[1:], bins.goserver, "-addr", ns.peerIP+":0")...)
	addr := waitListening(b, backend)
	const rounds = 3
	duration := envDuration("SONDE_BENCH_DURATION", 5*time.Second)
	var plain, injected injectRound
	var bpf time.Duration
	var bpfRequests int64
	for range b.N {
		for range rounds {
			plain.add(wrkInjectRound(b, wrk, addr, duration, false, false))
			injected.add(wrkInjectRound(b, wrk, addr, duration, true, false))
			r := wrkInjectRound(b, wrk, addr, duration, true, true)
			bpf += r.bpf
			bpfRequests += r.requests
		}
	}
	b.ReportMetric(injected.rate()/plain.rate(), "throughput_ratio")
	b.ReportMetric(perReq(plain.cpu, plain.requests), "client_µs/req_traced")
	b.ReportMetric(perReq(injected.cpu, injected.requests)-perReq(plain.cpu, plain.requests), "client_µs_added/req_by_inject")
	b.ReportMetric(perReq(bpf, bpfRequests), "inject_bpf_µs/req")
	b.ReportMetric(0, "ns/op")
}

type injectRound struct {
	requests int64
	elapsed  time.Duration
	cpu      time.Duration // wrk's
	bpf      time.Duration // run time of the injection programs
}

func (r *injectRound) add(o injectRound) {
	r.requests += o.requests
	r.elapsed += o.elapsed
	r.cpu += o.cpu
}

func (r injectRound) rate() float64 { return float64(r.requests) / r.elapsed.Seconds() }

func wrkInjectRound(b *testing.B, wrk, addr string, d time.Duration, inject, bpfStats bool) injectRound {
	b.Helper()
	rcv := otlptest.StartCounter(b)
	args := []string{"--exe", "wrk", "--output", "otlp"}
	if inject {
		args = append(args, "--inject")
	}
	s := startSonde(b, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.Endpoint()}, args...)
	var bpf0 time.Duration
	if bpfStats {
		defer enableBPFStats(b).Close()
		bpf0 = programRunTime(b, "inject_")
	}
	cmd := exec.Command(wrk, "-t1", "-c10", fmt.Sprintf("-d%ds", int(d.Seconds())), "http://"+addr+"/hello")
	out, err := cmd.CombinedOutput()
	if err != nil {
		b.Fatalf("wrk: %v\n%s", err, out)
	}
	var r injectRound
	if bpfStats {
		r.bpf = programRunTime(b, "inject_") - bpf0
	}
	m := wrkRequests.FindStringSubmatch(string(out))
	if m == nil || strings.Contains(string(out), "Non-2xx") || strings.Contains(string(out), "Socket errors") {
		b.Fatalf("wrk:\n%s", out)
	}
	r.requests, _ = strconv.ParseInt(m[1], 10, 64)
	r.elapsed, _ = time.ParseDuration(m[2] + m[3])
	ru := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	r.cpu = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	res := s.stop(b)
	if inject && res.stat("injected") < float64(r.requests) {
		b.Fatalf("injected %v headers into %d requests", res.stat("injected"), r.requests)
	}
	return r
}
