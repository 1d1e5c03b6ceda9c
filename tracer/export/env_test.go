package export

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/otlptest"
)

func TestFormatFromEnvironment(t *testing.T) {
	span := &Span{TraceID: tid(1), SpanID: sid(1), Name: "GET /", Start: base, End: base, Resource: frontend}

	t.Run("text by default", func(t *testing.T) {
		cleanEnv(t)
		var out syncBuffer
		e := newExporter(t, &Options{Writer: &out, TextDelay: time.Minute})
		if e.Format() != FormatText {
			t.Fatalf("format %q, want text", e.Format())
		}
		e.Export(span)
		shutdown(t, e)
		if got := out.String(); !strings.HasPrefix(got, "trace "+tid(1).String()) {
			t.Fatalf("output %q, want a text tree", got)
		}
	})
	for _, name := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		t.Run(name, func(t *testing.T) {
			cleanEnv(t)
			rcv := otlptest.Start(t)
			t.Setenv(name, "http://"+rcv.Endpoint())
			var out syncBuffer
			e := newExporter(t, &Options{Writer: &out})
			if e.Format() != FormatOTLP {
				t.Fatalf("format %q, want otlp", e.Format())
			}
			e.Export(span)
			shutdown(t, e)
			if got := rcv.WaitSpans(t, 1, 5*time.Second); got[0].SpanID != sid(1).String() {
				t.Fatalf("received %+v", got)
			}
			if out.String() != "" {
				t.Fatalf("otlp also wrote %q", out.String())
			}
		})
	}
}

func TestConfigurationErrors(t *testing.T) {
	for _, c := range []struct {
		name   string
		opts   *Options
		env    map[string]string
		substr []string
	}{
		{
			name:   "protocol",
			opts:   &Options{Format: FormatOTLP},
			env:    map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
			substr: []string{`OTEL_EXPORTER_OTLP_PROTOCOL="http/json"`, `"grpc"`, `"http/protobuf"`},
		},
		{
			name: "traces protocol wins",
			opts: nil,
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":        "http://127.0.0.1:4317",
				"OTEL_EXPORTER_OTLP_PROTOCOL":        "grpc",
				"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "thrift",
			},
			substr: []string{`OTEL_EXPORTER_OTLP_TRACES_PROTOCOL="thrift"`},
		},
		{
			name:   "endpoint without scheme",
			opts:   &Options{Format: FormatOTLP},
			env:    map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "collector:4317"},
			substr: []string{`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="collector:4317"`, "http://"},
		},
		{
			name:   "sampler",
			opts:   &Options{Format: FormatJSON},
			env:    map[string]string{"OTEL_TRACES_SAMPLER": "jaeger_remote"},
			substr: []string{`OTEL_TRACES_SAMPLER="jaeger_remote"`, "parentbased_traceidratio"},
		},
		{
			name:   "sampler ratio",
			opts:   &Options{Format: FormatJSON},
			env:    map[string]string{"OTEL_TRACES_SAMPLER": "traceidratio", "OTEL_TRACES_SAMPLER_ARG": "5%"},
			substr: []string{`OTEL_TRACES_SAMPLER_ARG="5%"`},
		},
		{
			name:   "format",
			opts:   &Options{Format: "zipkin"},
			substr: []string{`"zipkin"`, `"otlp"`, `"text"`, `"json"`},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			cleanEnv(t)
			for k, v := range c.env {
				t.Setenv(k, v)
			}
			e, err := New(t.Context(), c.opts)
			if err == nil {
				e.Shutdown(t.Context())
				t.Fatal("New succeeded")
			}
			for _, s := range c.substr {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q lacks %s", err, s)
				}
			}
		})
	}
}

func TestSamplerRatioAccepted(t *testing.T) {
	cleanEnv(t)
	t.Setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
	t.Setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &syncBuffer{}})
	const n = 400
	for i := range n {
		// Root spans with well-spread trace IDs: the ratio decides.
		id := tid(0)
		id[0], id[1], id[8], id[9] = byte(i*37), byte(i>>8), byte(i*59), byte(i)
		e.Export(&Span{TraceID: id, SpanID: sid(1), Name: "s", Start: base, End: base})
	}
	shutdown(t, e)
	st := e.Stats()
	if st.Exported == 0 || st.NotSampled == 0 || st.Exported+st.NotSampled != n {
		t.Fatalf("stats %+v, want a mix of sampled and not sampled", st)
	}
}

// The metrics exporter reads the same variables as the spans', and its own
// _METRICS_ forms, and refuses what the SDK would silently ignore.
func TestMeterProviderEnv(t *testing.T) {
	for _, tc := range []struct {
		env  map[string]string
		fail string
	}{
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{map[string]string{"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "udp"}, "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"},
		{map[string]string{"OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "collector:4317"}, "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf"}, ""},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1"}, ""},
	} {
		for k, v := range tc.env {
			t.Setenv(k, v)
		}
		mp, err := NewMeterProvider(context.Background())
		switch {
		case tc.fail == "" && err != nil:
			t.Errorf("%v: %v", tc.env, err)
		case tc.fail != "" && (err == nil || !strings.Contains(err.Error(), tc.fail)):
			t.Errorf("%v: %v, want an error naming %s", tc.env, err, tc.fail)
		}
		if mp != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			mp.Shutdown(ctx)
			cancel()
		}
		for k := range tc.env {
			os.Unsetenv(k)
		}
	}
}
