package export

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"google.golang.org/grpc"
)

const (
	envMetricsEndpoint = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
	envMetricsProtocol = "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL"
)

// NewMeterProvider returns a MeterProvider whose metrics go over OTLP to
// the collector the standard variables name, as the spans do: the
// OTEL_EXPORTER_OTLP_* variables (and their _METRICS_ forms), and
// OTEL_METRIC_EXPORT_INTERVAL and OTEL_METRIC_EXPORT_TIMEOUT for the
// periodic reader. Its resource is sonde itself, merged with
// OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME. Shut it down to flush.
func NewMeterProvider(ctx context.Context) (*sdkmetric.MeterProvider, error) {
	useHTTP, err := otlpProtocol(envMetricsEndpoint, envMetricsProtocol)
	if err != nil {
		return nil, err
	}
	var exp sdkmetric.Exporter
	if useHTTP {
		exp, err = otlpmetrichttp.New(ctx)
	} else {
		exp, err = otlpmetricgrpc.New(ctx, otlpmetricgrpc.WithDialOption(grpc.WithConnectParams(reconnect)))
	}
	if err != nil {
		return nil, fmt.Errorf("otlp metric exporter: %w", err)
	}
	res, err := resource.Merge(resource.NewSchemaless(semconv.ServiceName("sonde")), resource.Environment())
	if err != nil {
		res = resource.NewSchemaless(semconv.ServiceName("sonde"))
	}
	return sdkmetric.NewMeterProvider(
		sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)),
		sdkmetric.WithResource(res),
	), nil
}
