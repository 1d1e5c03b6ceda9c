package export

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
)

const (
	envEndpoint       = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envTracesEndpoint = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
	envProtocol       = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envTracesProtocol = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
	envSampler        = "OTEL_TRACES_SAMPLER"
	envSamplerArg     = "OTEL_TRACES_SAMPLER_ARG"
	envScheduleDelay  = "OTEL_BSP_SCHEDULE_DELAY"
)

// resolveFormat applies the documented default: OTLP when the environment
// names a collector, text otherwise.
func resolveFormat(f Format) (Format, error) {
	switch f {
	case FormatOTLP, FormatText, FormatJSON:
		return f, nil
	case "":
		if os.Getenv(envEndpoint) != "" || os.Getenv(envTracesEndpoint) != "" {
			return FormatOTLP, nil
		}
		return FormatText, nil
	default:
		return "", fmt.Errorf("unknown format %q: want %q, %q or %q", f, FormatOTLP, FormatText, FormatJSON)
	}
}

// newOTLP builds the OTLP exporter that the environment asks for. The SDK
// exporters' clients read every other OTEL_EXPORTER_OTLP_* variable
// themselves.
func newOTLP(ctx context.Context) (sdktrace.SpanExporter, error) {
	useHTTP, err := otlpProtocol(envTracesEndpoint, envTracesProtocol)
	if err != nil {
		return nil, err
	}
	var client otlptrace.Client
	if useHTTP {
		client = otlptracehttp.NewClient()
	} else {
		dial := []grpc.DialOption{grpc.WithConnectParams(reconnect)}
		var opts []otlptracegrpc.Option
		if !sdkEncoding {
			dial = append(dial, grpc.WithDefaultCallOptions(grpc.ForceCodecV2(traceCodec)))
			// The codec bounds the request instead, at no cost.
			opts = append(opts, otlptracegrpc.WithMaxRequestSize(0))
		}
		client = otlptracegrpc.NewClient(append(opts, otlptracegrpc.WithDialOption(dial...))...)
	}
	var exp sdktrace.SpanExporter
	if sdkEncoding {
		exp, err = otlptrace.New(ctx, client)
	} else {
		exp, err = newSpanExporter(ctx, client)
	}
	if err != nil {
		return nil, fmt.Errorf("otlp exporter: %w", err)
	}
	return exp, nil
}

// otlpProtocol checks the endpoints a signal's exporter will read and says
// whether its protocol is http/protobuf (else grpc), from the general
// variables or the signal's own (endpointVar, protocolVar), which win.
func otlpProtocol(endpointVar, protocolVar string) (useHTTP bool, err error) {
	// The SDK ignores a malformed endpoint and silently falls back to
	// localhost, which hides a typo behind "connection refused".
	for _, name := range []string{envEndpoint, endpointVar} {
		if err := checkEndpoint(name); err != nil {
			return false, err
		}
	}
	name, protocol := envProtocol, os.Getenv(envProtocol)
	if p := os.Getenv(protocolVar); p != "" {
		name, protocol = protocolVar, p
	}
	switch strings.TrimSpace(protocol) {
	case "", "grpc":
		return false, nil
	case "http/protobuf":
		return true, nil
	}
	return false, fmt.Errorf("%s=%q is not supported: use \"grpc\" or \"http/protobuf\"", name, protocol)
}

// traceCodec encodes every trace exporter's requests; what it keeps between
// requests, a size hint and a spare buffer, is safe to share.
var traceCodec = newRequestCodec()

// sdkEncoding makes the requests as the SDK's exporter does, with its
// transform and gRPC's proto codec, for the A/B benchmark of the pipeline.
var sdkEncoding = false

// reconnect shortens gRPC's reconnect backoff, which grows to two minutes by
// default: a collector that restarts would otherwise see no span for many
// seconds after it is back, and every span made meanwhile fails to export.
var reconnect = grpc.ConnectParams{
	Backoff: backoff.Config{
		BaseDelay:  250 * time.Millisecond,
		Multiplier: 1.6,
		Jitter:     0.2,
		MaxDelay:   2 * time.Second,
	},
	MinConnectTimeout: 5 * time.Second,
}

func checkEndpoint(name string) error {
	v := os.Getenv(name)
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%s=%q: want a URL such as http://collector:4317", name, v)
	}
	return nil
}

// checkSampler rejects sampler settings that the SDK would otherwise replace
// by its default with only a message on the error handler: an SRE who asked
// for 1% sampling must not silently get 100%.
func checkSampler() error {
	s := strings.ToLower(strings.TrimSpace(os.Getenv(envSampler)))
	switch s {
	case "", "always_on", "always_off", "parentbased_always_on", "parentbased_always_off":
		return nil
	case "traceidratio", "parentbased_traceidratio":
		arg := strings.TrimSpace(os.Getenv(envSamplerArg))
		if arg == "" {
			return nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return fmt.Errorf("%s=%q: want a ratio between 0 and 1", envSamplerArg, arg)
		}
		return nil
	default:
		return fmt.Errorf("%s=%q is not supported: use always_on, always_off, traceidratio, "+
			"parentbased_always_on, parentbased_always_off or parentbased_traceidratio", envSampler, s)
	}
}
