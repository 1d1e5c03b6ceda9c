package e2e

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/e2e/collector"
	"github.com/sondehq/sonde/internal/otlptest"
	"github.com/sondehq/sonde/internal/testutil"
)

const (
	incomingTrace  = "0af7651916cd43dd8448eb211c80319c"
	incomingParent = "b7ad6b7169203331"
)

// Spans reach an OTLP/gRPC receiver configured only through the standard
// OTEL_EXPORTER_OTLP_* variables, with IDs, parent and resource intact.
func TestOTLPExport(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	rcv := otlptest.Start(t)
	srv := startGoServer(t, "OTEL_SERVICE_NAME=checkout", "OTEL_RESOURCE_ATTRIBUTES=deployment.environment.name=e2e")
	s := startSonde(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.Endpoint()},
		"--pid", fmt.Sprint(srv.pid()), "--output", "otlp")
	before := time.Now()
	run(t, curl, "-sS", "-o", "/dev/null", "-H", "traceparent: 00-"+incomingTrace+"-"+incomingParent+"-01",
		"-H", "Authorization: Basic "+secret, "http://"+srv.addr+"/status/500")
	after := time.Now()
	spans := rcv.WaitSpans(t, 1, 30*time.Second)
	r := s.stop(t)
	if len(r.spans) != 0 {
		t.Errorf("with --output otlp nothing goes to stdout, got %d lines", len(r.spans))
	}
	if len(spans) != 1 {
		t.Fatalf("want 1 span, got %d", len(spans))
	}
	sp := spans[0]
	if sp.TraceID != incomingTrace || sp.ParentSpanID != incomingParent || len(sp.SpanID) != 16 {
		t.Errorf("ids: trace %s parent %s span %s", sp.TraceID, sp.ParentSpanID, sp.SpanID)
	}
	// A Go server: its probes know the ServeMux route, which names the span.
	if sp.Kind != "server" || sp.Name != "GET /status/{code}" || sp.Attributes["http.route"] != "/status/{code}" || sp.StatusCode != "Error" {
		t.Errorf("kind %s name %s status %s", sp.Kind, sp.Name, sp.StatusCode)
	}
	if sp.Start.Before(before.Add(-time.Second)) || sp.End.After(after.Add(time.Second)) || !sp.End.After(sp.Start) {
		t.Errorf("span %v..%v outside the request window %v..%v", sp.Start, sp.End, before, after)
	}
	for k, want := range map[string]any{"http.request.method": "GET", "url.path": "/status/500", "http.response.status_code": int64(500), "error.type": "500"} {
		if sp.Attributes[k] != want {
			t.Errorf("attribute %s = %#v, want %#v", k, sp.Attributes[k], want)
		}
	}
	for k, want := range map[string]any{"service.name": "checkout", "deployment.environment.name": "e2e", "process.pid": int64(srv.pid()), "process.executable.name": "goserver"} {
		if sp.Resource[k] != want {
			t.Errorf("resource %s = %#v, want %#v", k, sp.Resource[k], want)
		}
	}
	if fmt.Sprint(sp.Attributes, sp.Resource) == "" || strings.Contains(fmt.Sprint(sp.Attributes, sp.Resource), secret) {
		t.Errorf("secret exported: %v", sp.Attributes)
	}
	if r.stat("spans_exported") != 1 {
		t.Errorf("final stats: %v", r.stats)
	}
}

// The same through a real OpenTelemetry Collector built with the official
// builder, read back from its debug exporter.
func TestCollectorExport(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	requireTracing(t)
	col := collector.Start(t)
	srv := startGoServer(t, "OTEL_SERVICE_NAME=inventory")
	s := startSonde(t, []string{
		"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://" + col.Endpoint(),
		"OTEL_EXPORTER_OTLP_TRACES_INSECURE=true",
	}, "--pid", fmt.Sprint(srv.pid()), "--output=") // empty: chosen from the endpoint variable
	for i := range 3 {
		run(t, curl, "-sS", "-o", "/dev/null", "-H", "traceparent: 00-"+incomingTrace+"-"+incomingParent+"-01",
			fmt.Sprintf("http://%s/hello?i=%d", srv.addr, i))
	}
	spans := col.WaitSpans(t, 3, 60*time.Second, func(s collector.Span) bool { return s.TraceID == incomingTrace })
	s.stop(t)
	for _, sp := range spans {
		if sp.ParentID != incomingParent || !strings.EqualFold(sp.Kind, "server") || sp.Name != "GET /hello" {
			t.Errorf("span: %v", sp)
		}
		if sp.Attributes["url.path"] != "/hello" || sp.Attributes["http.response.status_code"] != "200" || sp.AttributeTypes["http.response.status_code"] != "Int" {
			t.Errorf("attributes: %v %v", sp.Attributes, sp.AttributeTypes)
		}
		if sp.Resource["service.name"] != "inventory" || sp.Resource["process.pid"] != fmt.Sprint(srv.pid()) {
			t.Errorf("resource: %v", sp.Resource)
		}
		if !sp.End.After(sp.Start) {
			t.Errorf("times: %v .. %v", sp.Start, sp.End)
		}
	}
	if n := len(distinct2(spans)); n != 3 {
		t.Errorf("want 3 distinct span ids, got %d", n)
	}
}

func distinct2(spans []collector.Span) map[string]bool {
	m := map[string]bool{}
	for _, s := range spans {
		m[s.SpanID] = true
	}
	return m
}

// A collector that is not there: sonde and the traced server keep running,
// failures are counted and logged, and exit stays within the flush timeout.
func TestDeadCollector(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	srv := startGoServer(t)
	dead := "127.0.0.1:" + freePort(t) // nothing listens there
	s := startSonde(t, []string{
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + dead,
		"OTEL_EXPORTER_OTLP_TIMEOUT=1000", "OTEL_BSP_SCHEDULE_DELAY=100",
	}, "--pid", fmt.Sprint(srv.pid()), "--output", "otlp", "--flush-timeout", "3s")
	for range 5 {
		run(t, curl, "-sS", "-o", "/dev/null", "http://"+srv.addr+"/hello")
	}
	time.Sleep(6 * time.Second) // an export attempt fails and is logged
	began := time.Now()
	r := s.stop(t)
	if took := time.Since(began); took > 10*time.Second {
		t.Errorf("exit took %v with a dead collector", took)
	}
	if !srv.alive() {
		t.Fatal("the traced server died")
	}
	if r.stat("spans") != 5 || r.stat("spans_exported") != 0 || r.stat("export_failures")+r.stat("spans_dropped") != 5 {
		t.Errorf("want 5 spans, none exported, all counted as failed or dropped: %v", r.stats)
	}
	warned := false
	for _, l := range r.logs {
		if l["msg"] == "spans not exported" {
			warned = true
		}
	}
	if !warned {
		t.Errorf("no warning logged while the collector was down")
	}
}

// A path that percent-decodes to bytes that are not UTF-8, and a service
// name that is not either, must not cost the batch they are in: OTLP
// strings must be UTF-8, so the bytes are replaced, and counted.
func TestOTLPInvalidUTF8(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	rcv := otlptest.Start(t)
	srv := startGoServer(t, "OTEL_SERVICE_NAME=caf\xe9")
	s := startSonde(t, []string{"OTEL_EXPORTER_OTLP_ENDPOINT=http://" + rcv.Endpoint()},
		"--pid", fmt.Sprint(srv.pid()), "--output", "otlp")
	run(t, curl, "-sS", "-o", "/dev/null", "http://"+srv.addr+"/caf%E9")
	run(t, curl, "-sS", "-o", "/dev/null", "http://"+srv.addr+"/hello")
	spans := rcv.WaitSpans(t, 2, 30*time.Second)
	r := s.stop(t)
	paths := map[any]bool{}
	for _, sp := range spans {
		paths[sp.Attributes["url.path"]] = true
		if sp.Resource["service.name"] != "caf\uFFFD" {
			t.Errorf("service.name %q, want the invalid byte replaced", sp.Resource["service.name"])
		}
	}
	if len(spans) != 2 || !paths["/caf\uFFFD"] || !paths["/hello"] {
		t.Errorf("spans with paths %v, want /caf\uFFFD and /hello", paths)
	}
	if r.stat("spans_exported") != 2 || r.stat("spans_utf8_repaired") != 2 {
		t.Errorf("final stats: %v", r.stats)
	}
}
