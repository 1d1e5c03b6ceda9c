package otlptest

import (
	"context"
	"testing"
	"time"

	colmetricspb "go.opentelemetry.io/proto/otlp/collector/metrics/v1"
	metricspb "go.opentelemetry.io/proto/otlp/metrics/v1"
)

// Point is one received data point of a sum or a histogram, flattened out
// of its resource, scope and metric.
type Point struct {
	Metric     string
	Unit       string
	Attributes map[string]any
	Resource   map[string]any
	Time       time.Time
	// Value is a sum's value (int64 and double sums alike).
	Value float64
	// Count and Sum are a histogram's.
	Count uint64
	Sum   float64
	// Monotonic and Cumulative describe a sum.
	Monotonic, Cumulative bool
}

type metricsService struct {
	colmetricspb.UnimplementedMetricsServiceServer
	r *Receiver
}

// Export implements the collector's MetricsService.
func (m metricsService) Export(_ context.Context, req *colmetricspb.ExportMetricsServiceRequest) (*colmetricspb.ExportMetricsServiceResponse, error) {
	var pts []Point
	for _, rm := range req.ResourceMetrics {
		res := attrMap(rm.GetResource().GetAttributes())
		for _, sm := range rm.ScopeMetrics {
			for _, mt := range sm.Metrics {
				switch d := mt.Data.(type) {
				case *metricspb.Metric_Sum:
					for _, dp := range d.Sum.DataPoints {
						v := dp.GetAsDouble()
						if _, ok := dp.Value.(*metricspb.NumberDataPoint_AsInt); ok {
							v = float64(dp.GetAsInt())
						}
						pts = append(pts, Point{Metric: mt.Name, Unit: mt.Unit, Attributes: attrMap(dp.Attributes), Resource: res,
							Time: unixNano(dp.TimeUnixNano), Value: v, Monotonic: d.Sum.IsMonotonic,
							Cumulative: d.Sum.AggregationTemporality == metricspb.AggregationTemporality_AGGREGATION_TEMPORALITY_CUMULATIVE})
					}
				case *metricspb.Metric_Histogram:
					for _, dp := range d.Histogram.DataPoints {
						pts = append(pts, Point{Metric: mt.Name, Unit: mt.Unit, Attributes: attrMap(dp.Attributes), Resource: res,
							Time: unixNano(dp.TimeUnixNano), Count: dp.Count, Sum: dp.GetSum()})
					}
				}
			}
		}
	}
	m.r.mu.Lock()
	m.r.points = append(m.r.points, pts...)
	m.r.mu.Unlock()
	return &colmetricspb.ExportMetricsServiceResponse{}, nil
}

// Points returns every data point received so far, in arrival order.
func (r *Receiver) Points() []Point {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Point(nil), r.points...)
}

// WaitPoints waits until ok accepts the points received so far, failing
// tb after timeout.
func (r *Receiver) WaitPoints(tb testing.TB, timeout time.Duration, ok func([]Point) bool) []Point {
	tb.Helper()
	deadline := time.Now().Add(timeout)
	for {
		pts := r.Points()
		if ok(pts) {
			return pts
		}
		if time.Now().After(deadline) {
			tb.Fatalf("otlptest: %d metric points after %v, not the ones wanted", len(pts), timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
