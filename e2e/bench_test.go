package e2e

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"

	"github.com/sondehq/sonde/internal/otlptest"
	"github.com/sondehq/sonde/internal/testutil"
)

// BenchmarkHTTPHello measures what tracing costs a Go net/http hello server.
// Untraced and traced rounds alternate in one run, so that the machine's
// noise hits both sides alike. Spans go over OTLP/gRPC to a receiver in this
// process, as they would to a collector, which counts them and keeps
// nothing (otlptest.Counter): a collector would not share these 2 cores,
// and one that decodes every span would charge sonde for its own work.
//
// Two loads, because they answer different questions:
//   - closed loop, wrk as fast as it can (1 thread, 10 keep-alive
//     connections): the throughput ratio traced/untraced, sonde's CPU per
//     request and its peak RSS. On 2 cores sonde competes with the server
//     and wrk, so the ratio includes sonde's own CPU.
//   - open loop, a fixed rate for both sides: the server CPU that tracing
//     adds per request. A Go server's CPU per request depends on how busy
//     it is, so this is only comparable at the same request rate; and it
//     wanders from round to round by more than tracing adds, so the figure
//     is the median of the rounds' differences, with their spread (added).
//   - the kernel's own accounting of sonde's BPF programs (bpf_stats) over
//     an open-loop round of its own: the socket path's cost per request,
//     the hits of the unselected load generator included, and the Go
//     probes' (all the server's: the load generator is another
//     executable, which they are not placed in).
//
// The socket path alone is BenchmarkSocketPath's.
func BenchmarkHTTPHello(b *testing.B) {
	wrk := testutil.RequireTool(b, "wrk")
	testutil.RequireRoot(b)
	testutil.RequireBPF(b)
	rounds, duration, rate := benchSettings(3)
	var closedBase, closedTraced, openBase, openTraced runStats
	var serverAdded added
	var sondeClosed, sondeOpen, bpfOpen, bpfGoOpen time.Duration
	var bpfRequests int64
	var sondeRSS int64
	for range b.N {
		for range rounds {
			closedBase.add(benchRound(b, duration, false, wrkLoad(wrk), nil))
			var t tracedStats
			closedTraced.add(benchRound(b, duration, true, wrkLoad(wrk), &t))
			sondeClosed += t.cpu
			sondeRSS = max(sondeRSS, t.rss)

			base := benchRound(b, duration, false, rateLoad(rate), nil)
			openBase.add(base)
			t = tracedStats{}
			traced := benchRound(b, duration, true, rateLoad(rate), &t)
			openTraced.add(traced)
			serverAdded.add(base, traced)
			sondeOpen += t.cpu
			sondeRSS = max(sondeRSS, t.rss)

			// BPF run-time accounting costs every program run a little:
			// a round of its own, kept out of the CPU figures above.
			t = tracedStats{bpfStats: true}
			statsRound := benchRound(b, duration, true, rateLoad(rate), &t)
			bpfOpen += t.bpf
			bpfGoOpen += t.bpfGo
			bpfRequests += statsRound.requests
			sondeRSS = max(sondeRSS, t.rss)
		}
	}
	b.ReportMetric(closedTraced.rate()/closedBase.rate(), "throughput_ratio")
	b.ReportMetric(closedBase.rate(), "untraced_req/s")
	b.ReportMetric(closedTraced.rate(), "traced_req/s")
	b.ReportMetric(perReq(sondeClosed, closedTraced.requests), "sonde_µs/req_at_max")
	serverAdded.report(b, "server_µs_added/req")
	b.ReportMetric(openBase.cpuPerReq(), "server_µs/req_untraced")
	b.ReportMetric(perReq(bpfOpen, bpfRequests), "bpf_µs/req")
	b.ReportMetric(perReq(bpfGoOpen, bpfRequests), "bpf_go_probes_µs/req")
	b.ReportMetric(perReq(sondeOpen, openTraced.requests), "sonde_µs/req")
	b.ReportMetric(float64(sondeRSS)/(1<<20), "sonde_peak_RSS_MB")
	b.ReportMetric(0, "ns/op") // the wall time of the whole run says nothing
}

// BenchmarkSocketPath measures the socket path alone (--go=false
// --tls=false), issue 2's target, on the Go hello server at a fixed request
// rate:
//   - the server CPU it adds per request. Two identical servers run side by
//     side under the same load at the same time, one traced and one not,
//     and the figure is the difference of their CPU per request, the
//     median over the rounds with its spread. Rounds one after another, as
//     BenchmarkHTTPHello's, leave the figure at the mercy of what the
//     machine does between them: on a shared VM an untraced server's CPU
//     per request moved from 33 to 51 µs between rounds, ten times what
//     tracing adds. Side by side, both servers live through the same
//     moments. Measured three times: with both servers pinned to one CPU
//     and the load generators and sonde on the others, which is what
//     tracing costs the server's own syscalls, as on a host with cores to
//     spare; the same with the data path at the syscall exits
//     (--data-hooks=syscalls, what kernels before 6.3 get), an A/B of the
//     two data paths in one run; and as the scheduler places everything,
//     where sonde's own work shares the servers' cores.
//     SONDE_BENCH_OTHER names another sonde build to run pinned beside
//     this one in every round, for an A/B of two builds in one run. The
//     two builds' BPF run time is then also measured, pinned, one after
//     the other in every round, and paired: the finer measure of a change
//     to the programs: their paired differences spread by about 0.2
//     µs/req where the server CPU's spread by 0.5 to 1.
//   - what every process on the host pays per syscall while sonde runs,
//     traced or not, which side by side is paid by both servers and so
//     left out of the difference: syscallfloor's least time per syscall
//     with sonde running (tracing only an idle process) less without it,
//     rounds alternating, the median of the pairs. Two syscalls: getppid,
//     which nothing of sonde's hooks, and a read of /dev/zero, which the
//     socket-layer hooks never see (the syscall hooks' sys_exit program
//     would turn it away). With the socket hooks no syscall tracepoint is
//     attached, and both should cost nothing more. With the server's read
//     and write calls per request
//     (/proc/PID/io), the pinned figure plus these is what tracing adds to
//     the server in all (_with_floor).
//   - its BPF run time in two rounds of their own, one tracing the server
//     and one tracing only an idle process. The second is the floor every
//     process pays on each syscall while sonde runs, selected or not; the
//     server and the load generator make the same syscalls per request
//     (one write, a read and a read that finds nothing), so half of it is
//     the load generator's, and the server's own share is the first
//     round's figure less that half.
func BenchmarkSocketPath(b *testing.B) {
	testutil.RequireRoot(b)
	testutil.RequireBPF(b)
	rounds, duration, rate := benchSettings(5)
	var added, addedPinned, addedPinnedSyscalls, addedOther added
	// SONDE_BENCH_OTHER names another sonde build (a variant of the BPF
	// programs, say) to measure pinned beside this one, round by round.
	other := os.Getenv("SONDE_BENCH_OTHER")
	var floorGet, floorRead []float64
	var hooked, hookedRequests int64
	var bpfSelected, bpfFloor time.Duration
	var selectedRequests, floorRequests int64
	// Per round, µs/req, when another build is measured: the BPF run time
	// of the two builds' programs, the finer measure of a change to them.
	var bpfThis, bpfOther []float64
	for range b.N {
		for i := range rounds {
			// Which of the two servers is traced alternates, so that
			// neither's place (started first, its memory, its PID) is
			// always the traced one's.
			first := i%2 == 0
			if runtime.NumCPU() > 1 {
				if other != "" && !first {
					addedOther.add(sideBySide(b, duration, rate, true, first, "socket", other))
				}
				un, tr := sideBySide(b, duration, rate, true, first, "socket", bins.sonde)
				addedPinned.add(un, tr)
				hooked += un.syscalls
				hookedRequests += un.requests
				if other != "" && first {
					addedOther.add(sideBySide(b, duration, rate, true, first, "socket", other))
				}
				addedPinnedSyscalls.add(sideBySide(b, duration, rate, true, first, "syscalls", bins.sonde))
			}
			added.add(sideBySide(b, duration, rate, false, first, "socket", bins.sonde))
			get, read := syscallFloor(b)
			floorGet, floorRead = append(floorGet, get), append(floorRead, read)
			if other != "" && runtime.NumCPU() > 1 {
				// Pinned, as the server's CPU is measured above: unpinned,
				// sonde's own work on the server's CPU doubles the spread.
				bpfRun := func(bin string) float64 {
					t := tracedStats{bpfStats: true, noGo: true, noTLS: true, pin: true, sonde: bin}
					return perReq(t.bpf, benchRound(b, duration, true, rateLoad(rate), &t).requests)
				}
				var this, that float64
				if first {
					this = bpfRun(bins.sonde)
					that = bpfRun(other)
				} else {
					that = bpfRun(other)
					this = bpfRun(bins.sonde)
				}
				bpfThis, bpfOther = append(bpfThis, this), append(bpfOther, that)
			}
			t := tracedStats{bpfStats: true, noGo: true, noTLS: true}
			statsRound := benchRound(b, duration, true, rateLoad(rate), &t)
			bpfSelected += t.bpf
			selectedRequests += statsRound.requests
			t = tracedStats{bpfStats: true, noGo: true, noTLS: true, other: true}
			statsRound = benchRound(b, duration, true, rateLoad(rate), &t)
			bpfFloor += t.bpf
			floorRequests += statsRound.requests
		}
	}
	selected := perReq(bpfSelected, selectedRequests)
	floor := perReq(bpfFloor, floorRequests)
	floorReadMedian := median(floorRead)
	if addedPinned.rounds() > 0 {
		addedPinned.report(b, "server_µs_added/req_pinned")
		perRequest := float64(hooked) / float64(hookedRequests)
		b.ReportMetric(perRequest, "server_hooked_syscalls/req")
		b.ReportMetric(addedPinned.median()+perRequest*floorReadMedian/1000, "server_µs_added/req_pinned_with_floor")
		addedPinnedSyscalls.report(b, "server_µs_added/req_pinned_syscall_hooks")
		if addedOther.rounds() > 0 {
			addedOther.report(b, "server_µs_added/req_pinned_other")
			// Paired by round: the two builds ran one after the other.
			diffs := pairedDiffs(addedOther.diffs, addedPinned.diffs)
			b.Logf("other less this, round by round (µs/req): %.2f", diffs)
			b.ReportMetric(median(diffs), "server_µs_added/req_pinned_other_less_this")
		}
	}
	if len(bpfOther) > 0 {
		diffs := pairedDiffs(bpfOther, bpfThis)
		b.Logf("BPF run time, other less this, round by round (µs/req): %.3f", diffs)
		b.ReportMetric(median(bpfThis), "bpf_µs/req_pinned")
		b.ReportMetric(median(bpfOther), "bpf_µs/req_pinned_other")
		b.ReportMetric(median(diffs), "bpf_µs/req_pinned_other_less_this")
	}
	added.report(b, "server_µs_added/req")
	b.Logf("syscall floor, round by round (ns): getppid %.1f, read %.1f", floorGet, floorRead)
	b.ReportMetric(median(floorGet), "floor_ns/syscall")
	b.ReportMetric(floorReadMedian, "floor_ns/read")
	b.ReportMetric(selected, "bpf_µs/req")
	b.ReportMetric(floor, "bpf_unselected_µs/req")
	b.ReportMetric(selected-floor/2, "bpf_server_µs/req")
	b.ReportMetric(0, "ns/op")
}

// pairedDiffs returns a[i] - b[i] for each round i of an A/B pair.
func pairedDiffs(a, b []float64) []float64 {
	diffs := make([]float64, len(a))
	for i := range diffs {
		diffs[i] = a[i] - b[i]
	}
	return diffs
}

// sideBySide runs two identical Go servers at once, each under a load
// generator of its own at half of rate requests a second (together as
// many as one server serves in benchRound), and traces one of them (the
// first started when first) with the socket path alone, by the sonde at
// path sonde. It returns the untraced and the traced server's figures over
// the same interval. pin puts both servers on the last CPU and everything
// else on the others.
func sideBySide(b *testing.B, d time.Duration, rate int, pin, first bool, dataHooks, sonde string) (untraced, traced runStats) {
	b.Helper()
	var prefix []string
	if pin {
		prefix = serverCPUs()
		defer pinSelf(b)()
	}
	srvs := [2]*goServer{startGoServerUnder(b, prefix), startGoServerUnder(b, prefix)}
	for _, s := range srvs {
		defer s.cmd.Process.Kill()
	}
	if !first {
		srvs[0], srvs[1] = srvs[1], srvs[0]
	}
	tr, un := srvs[0], srvs[1]
	rcv := otlptest.StartCounter(b)
	requireTracing(b)
	s := launchSonde(b, exec.Command(sonde, traceArgs([]string{"--pid", fmt.Sprint(tr.pid()), "--output", "otlp",
		"--go=false", "--tls=false", "--data-hooks", dataHooks})...), []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.Endpoint()})
	s.waitReady(b, 60*time.Second)
	var cpu0 [2]time.Duration
	var io0 [2]int64
	for i, srv := range []*goServer{un, tr} {
		var err error
		if cpu0[i], err = procCPU(srv.pid()); err != nil {
			b.Fatal(err)
		}
		if io0[i], err = procSyscalls(srv.pid()); err != nil {
			b.Fatal(err)
		}
	}
	var loads [2]struct {
		n       int64
		elapsed time.Duration
		err     error
	}
	var wg sync.WaitGroup
	for i, srv := range []*goServer{un, tr} {
		wg.Go(func() {
			l := &loads[i]
			l.n, l.elapsed, l.err = rateRun(srv.addr, rate/2, d)
		})
	}
	wg.Wait()
	var out [2]runStats
	for i, srv := range []*goServer{un, tr} {
		cpu1, err := procCPU(srv.pid())
		if err != nil {
			b.Fatal(err)
		}
		io1, err := procSyscalls(srv.pid())
		if err != nil {
			b.Fatal(err)
		}
		if loads[i].err != nil {
			b.Fatal(loads[i].err)
		}
		out[i] = runStats{requests: loads[i].n, elapsed: loads[i].elapsed, cpu: cpu1 - cpu0[i], syscalls: io1 - io0[i]}
	}
	r := s.stop(b)
	if got := int64(r.stat("spans")); got < out[1].requests {
		b.Fatalf("%d requests but %d spans (lost %v)", out[1].requests, got, r.stats["lost"])
	}
	if got := rcv.Spans(); got < out[1].requests {
		b.Fatalf("%d requests but the receiver got %d spans", out[1].requests, got)
	}
	return out[0], out[1]
}

// benchSettings are the Go hello benchmarks' rounds (SONDE_BENCH_ROUNDS,
// else rounds), the length of each (SONDE_BENCH_DURATION, 5s) and the
// fixed request rate of the open-loop ones (SONDE_BENCH_RATE, 10000/s).
func benchSettings(rounds int) (int, time.Duration, int) {
	if r, err := strconv.Atoi(os.Getenv("SONDE_BENCH_ROUNDS")); err == nil && r > 0 {
		rounds = r
	}
	rate := 10000
	if r, err := strconv.Atoi(os.Getenv("SONDE_BENCH_RATE")); err == nil {
		rate = r
	}
	return rounds, envDuration("SONDE_BENCH_DURATION", 5*time.Second), rate
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}

func perReq(d time.Duration, n int64) float64 { return float64(d.Microseconds()) / float64(n) }

type runStats struct {
	requests int64
	elapsed  time.Duration
	cpu      time.Duration // server CPU
	syscalls int64         // server read and write calls (sideBySide only)
}

func (r *runStats) add(o runStats) {
	r.requests += o.requests
	r.elapsed += o.elapsed
	r.cpu += o.cpu
}

func (r runStats) rate() float64      { return float64(r.requests) / r.elapsed.Seconds() }
func (r runStats) cpuPerReq() float64 { return perReq(r.cpu, r.requests) }

// added collects, round by round, the server CPU per request that tracing
// added: traced minus the untraced round next to it. A Go server's CPU per
// request at a fixed rate wanders by more than tracing adds from one round
// to the next, so the figure is the median of the rounds' differences,
// with their spread beside it, not the difference of the sums. What makes
// it wander (another process on the core, the hypervisor, the Go
// scheduler's timing) only ever adds CPU, so the least traced round less
// the least untraced one is reported too: the two rounds least disturbed.
type added struct {
	diffs, base, traced []float64
}

func (a *added) add(base, traced runStats) {
	a.diffs = append(a.diffs, traced.cpuPerReq()-base.cpuPerReq())
	a.base = append(a.base, base.cpuPerReq())
	a.traced = append(a.traced, traced.cpuPerReq())
}

func (a added) rounds() int { return len(a.diffs) }

func (a added) median() float64 { return median(a.diffs) }

func median(v []float64) float64 {
	s := slices.Sorted(slices.Values(v))
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (a added) spread() float64 {
	if len(a.diffs) == 0 {
		return 0
	}
	return slices.Max(a.diffs) - slices.Min(a.diffs)
}

func (a added) least() float64 {
	if len(a.diffs) == 0 {
		return 0
	}
	return slices.Min(a.traced) - slices.Min(a.base)
}

func (a added) report(b *testing.B, unit string) {
	b.Logf("%s, round by round: %.2f (untraced %.2f, traced %.2f)", unit, a.diffs, a.base, a.traced)
	b.ReportMetric(a.median(), unit)
	b.ReportMetric(a.spread(), unit+"_spread")
	b.ReportMetric(a.least(), unit+"_least")
}

type tracedStats struct {
	bpfStats bool   // measure BPF run time (kernel.bpf_stats_enabled)
	noTLS    bool   // run sonde with --tls=false
	noGo     bool   // run sonde with --go=false
	other    bool   // select an idle process, not the server
	sonde    string // the sonde binary; "" is the one built for the tests
	// pin puts the server on the last CPU and the load generator and sonde
	// on the others; it applies to untraced rounds too.
	pin bool
	cpu time.Duration // sonde's CPU
	rss int64         // sonde's peak RSS
	bpf time.Duration // run time of sonde's programs, all processes' hits
	// bpfSockets is the socket programs' share when bpf counts others.
	bpfSockets time.Duration
	bpfGo      time.Duration // the Go probe programs', when bpf is the sockets'

}

// A load sends requests to addr for d and says how many succeeded in how
// long.
type load func(b *testing.B, addr string, d time.Duration) (int64, time.Duration)

var wrkRequests = regexp.MustCompile(`(\d+) requests in ([0-9.]+)(m?s)`)

func wrkLoad(wrk string) load {
	return func(b *testing.B, addr string, d time.Duration) (int64, time.Duration) {
		out := run(b, wrk, "-t1", "-c10", fmt.Sprintf("-d%ds", int(d.Seconds())), "http://"+addr+"/hello")
		m := wrkRequests.FindStringSubmatch(out)
		if m == nil || strings.Contains(out, "Non-2xx") || strings.Contains(out, "Socket errors") {
			b.Fatalf("wrk:\n%s", out)
		}
		n, _ := strconv.ParseInt(m[1], 10, 64)
		elapsed, _ := time.ParseDuration(m[2] + m[3])
		return n, elapsed
	}
}

var rategenLine = regexp.MustCompile(`^ok (\d+) failed (\d+) late (\d+) seconds ([0-9.]+)`)

func rateLoad(rate int) load {
	return func(b *testing.B, addr string, d time.Duration) (int64, time.Duration) {
		n, elapsed, err := rateRun(addr, rate, d)
		if err != nil {
			b.Fatal(err)
		}
		return n, elapsed
	}
}

// rateRun sends rate requests a second to addr for d with rategen and says
// how many succeeded in how long. It fails when the machine could not
// hold the rate.
func rateRun(addr string, rate int, d time.Duration) (int64, time.Duration, error) {
	out, err := exec.Command(bins.rategen, "-addr", addr, "-rate", strconv.Itoa(rate), "-duration", d.String()).CombinedOutput()
	m := rategenLine.FindStringSubmatch(string(out))
	if err != nil || m == nil {
		return 0, 0, fmt.Errorf("rategen: %v\n%s", err, out)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	secs, _ := strconv.ParseFloat(m[4], 64)
	if want := int64(float64(rate) * d.Seconds() * 0.95); n < want {
		return 0, 0, fmt.Errorf("rategen reached %d requests, want at least %d: the machine cannot hold %d req/s", n, want, rate)
	}
	return n, time.Duration(secs * float64(time.Second)), nil
}

func benchRound(b *testing.B, d time.Duration, trace bool, send load, traced *tracedStats) runStats {
	b.Helper()
	pin := traced != nil && traced.pin
	var srv *goServer
	if pin {
		srv = startGoServerUnder(b, serverCPUs())
		defer pinSelf(b)()
	} else {
		srv = startGoServer(b)
	}
	defer srv.cmd.Process.Kill()
	var s *sondeRun
	var rcv *otlptest.Counter
	if trace {
		rcv = otlptest.StartCounter(b)
		target := srv.pid()
		if traced.other {
			idle := startProc(b, nil, "sleep", "600")
			defer idle.cmd.Process.Kill()
			target = idle.pid()
		}
		args := []string{"--pid", fmt.Sprint(target), "--output", "otlp",
			fmt.Sprintf("--go=%v", !traced.noGo), fmt.Sprintf("--tls=%v", !traced.noTLS)}
		if prof := os.Getenv("SONDE_BENCH_CPUPROFILE"); prof != "" {
			args = append(args, "--cpu-profile", prof)
		}
		bin := traced.sonde
		if bin == "" {
			bin = bins.sonde
		}
		s = startSondeBinary(b, bin, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.Endpoint()}, args...)
	}
	cpu0, err := procCPU(srv.pid())
	if err != nil {
		b.Fatal(err)
	}
	var sonde0, bpf0, bpfGo0 time.Duration
	if trace {
		if sonde0, err = procCPU(s.cmd.Process.Pid); err != nil {
			b.Fatal(err)
		}
		if traced.bpfStats {
			defer enableBPFStats(b).Close()
			bpf0, bpfGo0 = programRunTime(b, socketPrograms...), programRunTime(b, "go_")
		}
	}
	n, elapsed := send(b, srv.addr, d)
	if trace && traced.bpfStats {
		traced.bpf = programRunTime(b, socketPrograms...) - bpf0
		traced.bpfGo = programRunTime(b, "go_") - bpfGo0
	}
	cpu1, err := procCPU(srv.pid())
	if err != nil {
		b.Fatal(err)
	}
	if trace {
		// Let sonde finish the backlog of this round before reading its
		// CPU: the work is the requests', whenever it is done.
		time.Sleep(500 * time.Millisecond)
		sonde1, err := procCPU(s.cmd.Process.Pid)
		if err != nil {
			b.Fatal(err)
		}
		traced.cpu = sonde1 - sonde0
		if traced.rss, err = peakRSS(s.cmd.Process.Pid); err != nil {
			b.Fatal(err)
		}
		r := s.stop(b)
		if traced.other {
			// The server was not selected: nothing of it may be traced.
			if got := int64(r.stat("spans")); got != 0 {
				b.Fatalf("the server was not selected but gave %d spans", got)
			}
			return runStats{requests: n, elapsed: elapsed, cpu: cpu1 - cpu0}
		}
		// Every request must have become a span, or the figures flatter us.
		if got := int64(r.stat("spans")); got < n {
			b.Fatalf("%d requests but %d spans (lost %v)", n, got, r.stats["lost"])
		}
		if got := rcv.Spans(); got < n {
			b.Fatalf("%d requests but the receiver got %d spans", n, got)
		}
	}
	return runStats{requests: n, elapsed: elapsed, cpu: cpu1 - cpu0}
}

// serverCPUs is the taskset prefix of a pinned round's server: the last
// CPU, which pinSelf keeps everything else off.
func serverCPUs() []string { return []string{"taskset", "-c", strconv.Itoa(runtime.NumCPU() - 1)} }

// pinSelf moves every thread of this process, and so every process it
// starts from now on (the load generator, sonde), off the server's CPU, and
// returns what undoes that. The OTLP receiver's goroutines run here too.
func pinSelf(b *testing.B) func() {
	var old, set unix.CPUSet
	if err := unix.SchedGetaffinity(0, &old); err != nil {
		b.Fatal(err)
	}
	for c := range max(runtime.NumCPU()-1, 1) {
		set.Set(c)
	}
	setAll := func(cpus *unix.CPUSet) {
		tasks, err := os.ReadDir("/proc/self/task")
		if err != nil {
			b.Fatal(err)
		}
		for _, task := range tasks {
			tid, _ := strconv.Atoi(task.Name())
			// A thread may have exited since the listing.
			unix.SchedSetaffinity(tid, cpus)
		}
	}
	setAll(&set)
	return func() { setAll(&old) }
}

// socketPrograms are the name prefixes of the socket object's programs.
var socketPrograms = []string{"exit_", "sock_", "process_"}

// enableBPFStats turns the kernel's run-time accounting of BPF programs on
// until the returned closer is closed.
func enableBPFStats(b *testing.B) io.Closer {
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		b.Fatalf("enable BPF run-time stats: %v", err)
	}
	return stats
}

// programRunTime sums the kernel-measured run time of the loaded programs
// whose names start with one of prefixes, as sonde names its own.
func programRunTime(b *testing.B, prefixes ...string) time.Duration {
	var total time.Duration
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if err != nil {
			return total
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue
		}
		info, err := p.Info()
		if err == nil && slices.ContainsFunc(prefixes, func(pre string) bool { return strings.HasPrefix(info.Name, pre) }) {
			if st, err := p.Stats(); err == nil {
				total += st.Runtime
			}
		}
		p.Close()
	}
}

// procCPU is the CPU time of a process, all threads, in nanoseconds from
// the scheduler's accounting: /proc/PID/stat counts 10 ms ticks, which at
// 10k requests a second over a few seconds is a quarter of a microsecond a
// request, as coarse as the figures it is to resolve. Threads that exited
// are not counted; Go's runtime keeps its threads.
func procCPU(pid int) (time.Duration, error) {
	tasks, err := os.ReadDir(fmt.Sprintf("/proc/%d/task", pid))
	if err != nil {
		return 0, err
	}
	var total time.Duration
	for _, task := range tasks {
		data, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%s/schedstat", pid, task.Name()))
		if err != nil {
			continue // exited since the listing
		}
		f := strings.Fields(string(data))
		if len(f) < 1 {
			return 0, fmt.Errorf("/proc/%d/task/%s/schedstat: %q", pid, task.Name(), data)
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/task/%s/schedstat: %w", pid, task.Name(), err)
		}
		total += time.Duration(ns)
	}
	return total, nil
}

// procSyscalls is how many read and write calls a process made (syscr
// and syscw of /proc/PID/io): the calls a sonde program sees, as the read
// of syscallFloor does.
func procSyscalls(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	if err != nil {
		return 0, err
	}
	var total int64
	found := 0
	for line := range strings.Lines(string(data)) {
		k, v, _ := strings.Cut(strings.TrimSpace(line), ": ")
		if k == "syscr" || k == "syscw" {
			n, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/io: %w", pid, err)
			}
			total += n
			found++
		}
	}
	if found != 2 {
		return 0, fmt.Errorf("/proc/%d/io has no syscr and syscw", pid)
	}
	return total, nil
}

// syscallFloor runs syscallfloor on the last CPU with sonde running,
// tracing only an idle process, and without it, and returns what sonde
// adds to a getppid and to a read, in ns. The runs without sonde bracket
// those with it, and each side's least is taken: this machine's speed
// wanders over seconds, and only ever downwards from its best.
func syscallFloor(b *testing.B) (getppid, read float64) {
	b.Helper()
	defer pinSelf(b)()
	type times struct{ get, read float64 }
	measure := func(least *times) {
		out := run(b, serverCPUs()[0], append(serverCPUs()[1:], bins.syscallfloor)...)
		var t times
		if _, err := fmt.Sscanf(out, "getppid %g read %g", &t.get, &t.read); err != nil {
			b.Fatalf("syscallfloor: %q: %v", out, err)
		}
		if least.get == 0 || t.get < least.get {
			least.get = t.get
		}
		if least.read == 0 || t.read < least.read {
			least.read = t.read
		}
	}
	var without, with times
	measure(&without)
	idle := startProc(b, nil, "sleep", "600")
	defer idle.cmd.Process.Kill()
	s := startSonde(b, nil, "--pid", fmt.Sprint(idle.pid()), "--go=false", "--tls=false")
	measure(&with)
	measure(&with)
	s.stop(b)
	measure(&without)
	return with.get - without.get, with.read - without.read
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
