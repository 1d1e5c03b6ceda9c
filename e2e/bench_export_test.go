package e2e

import (
	"fmt"
	"os/exec"
	"strconv"
	"testing"

	"github.com/sondehq/sonde/internal/otlptest"
)

// BenchmarkExportFloor measures what exporting a span costs on this machine
// and nothing else, in a process that does nothing else
// (testdata/spanfloor), to a receiver in this process: the OpenTelemetry
// SDK as an instrumented program uses it (a span started and ended through
// its tracer, the batch processor, the OTLP/gRPC exporter), and sonde's
// exporter, which is built on the same SDK. Rounds alternate, A/B. This is
// the floor under sonde's CPU per request: every request becomes a span
// that goes this way.
func BenchmarkExportFloor(b *testing.B) {
	const rounds, spans = 3, 100000
	r := otlptest.StartCounter(b)
	cpu := map[string]int64{}
	for range b.N {
		for range rounds {
			for _, mode := range []string{"sdk", "sonde"} {
				before := r.Spans()
				cmd := exec.Command(bins.spanfloor, "-mode", mode, "-n", strconv.Itoa(spans))
				cmd.Env = append(cmd.Environ(), "OTEL_EXPORTER_OTLP_ENDPOINT=http://"+r.Endpoint(), "OTEL_EXPORTER_OTLP_INSECURE=true")
				out, err := cmd.CombinedOutput()
				if err != nil {
					b.Fatalf("spanfloor -mode %s: %v\n%s", mode, err, out)
				}
				var n, ns int64
				if _, err := fmt.Sscanf(string(out), "spans %d cpu_ns %d", &n, &ns); err != nil {
					b.Fatalf("spanfloor said %q", out)
				}
				if got := r.Spans() - before; got != spans {
					b.Fatalf("mode %s: the receiver got %d spans, want %d", mode, got, spans)
				}
				cpu[mode] += ns
			}
		}
	}
	n := float64(b.N * rounds * spans)
	b.ReportMetric(float64(cpu["sdk"])/n/1000, "sdk_cpu_µs/span")
	b.ReportMetric(float64(cpu["sonde"])/n/1000, "sonde_export_cpu_µs/span")
	b.ReportMetric(float64(cpu["sonde"])/float64(cpu["sdk"]), "sonde/sdk")
	b.ReportMetric(0, "ns/op")
}
