package servicemap

import (
	"context"
	"fmt"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Metrics records calls as the service graph metrics of Grafana Tempo's
// metrics generator, under the names and labels Grafana's service graph
// view queries: traces_service_graph_request_total and
// traces_service_graph_request_failed_total (counters), and
// traces_service_graph_request_client_seconds and
// traces_service_graph_request_server_seconds (histograms), each by client
// and server, with connection_type="virtual_node" when one end is an
// address sonde does not trace.
type Metrics struct {
	total, failed metric.Int64Counter
	client, srv   metric.Float64Histogram

	// Observe runs once per span: building the edge's attribute set
	// (sorting, hashing, boxing) was a twentieth of sonde's CPU at 10k
	// spans/s, so each edge's set is built once.
	mu   sync.Mutex
	sets map[edge]metric.MeasurementOption
}

type edge struct {
	client, server string
	external       bool
}

// setsMax bounds the cache of attribute sets; past it the cache starts
// over, which costs only the rebuilding.
const setsMax = 4096

// Buckets of the latency histograms, in seconds: from 1 ms, where HTTP
// services on one host answer, to 10 s.
var latencyBuckets = []float64{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}

// NewMetrics creates the instruments on a meter of mp.
func NewMetrics(mp metric.MeterProvider) (*Metrics, error) {
	meter := mp.Meter("github.com/sondehq/sonde/servicegraph")
	var m Metrics
	var err error
	if m.total, err = meter.Int64Counter("traces_service_graph_request_total",
		metric.WithDescription("Requests between two nodes of the service map")); err != nil {
		return nil, fmt.Errorf("service graph metrics: %w", err)
	}
	if m.failed, err = meter.Int64Counter("traces_service_graph_request_failed_total",
		metric.WithDescription("Failed requests between two nodes of the service map")); err != nil {
		return nil, fmt.Errorf("service graph metrics: %w", err)
	}
	if m.client, err = meter.Float64Histogram("traces_service_graph_request_client_seconds", metric.WithUnit("s"),
		metric.WithDescription("Request time as the client saw it"), metric.WithExplicitBucketBoundaries(latencyBuckets...)); err != nil {
		return nil, fmt.Errorf("service graph metrics: %w", err)
	}
	if m.srv, err = meter.Float64Histogram("traces_service_graph_request_server_seconds", metric.WithUnit("s"),
		metric.WithDescription("Request time as the server saw it"), metric.WithExplicitBucketBoundaries(latencyBuckets...)); err != nil {
		return nil, fmt.Errorf("service graph metrics: %w", err)
	}
	return &m, nil
}

// Observe records one call: it is an Options.Observe.
func (m *Metrics) Observe(c Call) {
	ctx := context.Background()
	opt := m.attributes(edge{client: c.Client, server: c.Server, external: c.External})
	m.total.Add(ctx, 1, opt)
	if c.Failed {
		m.failed.Add(ctx, 1, opt)
	}
	if c.ClientTime > 0 {
		m.client.Record(ctx, c.ClientTime.Seconds(), opt)
	}
	if c.ServerTime > 0 {
		m.srv.Record(ctx, c.ServerTime.Seconds(), opt)
	}
}

func (m *Metrics) attributes(e edge) metric.MeasurementOption {
	m.mu.Lock()
	defer m.mu.Unlock()
	if opt, ok := m.sets[e]; ok {
		return opt
	}
	kvs := []attribute.KeyValue{attribute.String("client", e.client), attribute.String("server", e.server)}
	if e.external {
		kvs = append(kvs, attribute.String("connection_type", "virtual_node"))
	}
	opt := metric.WithAttributeSet(attribute.NewSet(kvs...))
	if m.sets == nil || len(m.sets) >= setsMax {
		m.sets = make(map[edge]metric.MeasurementOption)
	}
	m.sets[e] = opt
	return opt
}
