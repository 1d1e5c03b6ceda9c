package ui

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/tracer/export"
	"github.com/sondehq/sonde/tracer/servicemap"
)

var t0 = time.Unix(1_800_000_000, 0)

func spanOf(traceN, n, parent int, service string, kind trace.SpanKind, start, d time.Duration, failed bool) *export.Span {
	s := &export.Span{Name: "GET", Kind: kind, Start: t0.Add(start), End: t0.Add(start + d),
		Resource: resource.NewSchemaless(semconv.ServiceName(service))}
	s.TraceID[0], s.TraceID[15] = 1, byte(traceN)
	s.SpanID[0], s.SpanID[7] = 1, byte(n)
	if parent > 0 {
		var p trace.SpanID
		p[0], p[7] = 1, byte(parent)
		s.Parent = trace.NewSpanContext(trace.SpanContextConfig{TraceID: s.TraceID, SpanID: p, TraceFlags: trace.FlagsSampled})
	}
	if failed {
		s.Status = codes.Error
	}
	return s
}

// Recent keeps the newest traces, each with its spans in start order, and
// no more than its bounds.
func TestRecentBounds(t *testing.T) {
	r := NewRecent(&Options{MaxTraces: 3, MaxSpansPerTrace: 2})
	for tr := 1; tr <= 5; tr++ {
		for n := 3; n >= 1; n-- {
			r.Export(spanOf(tr, n, 0, "svc", trace.SpanKindServer, time.Duration(n)*time.Millisecond, time.Millisecond, false))
		}
	}
	ts := r.Traces()
	if len(ts) != 3 || ts[0].ID[15] != 5 || ts[2].ID[15] != 3 {
		t.Fatalf("traces %v", ts)
	}
	for _, tr := range ts {
		if len(tr.Spans) != 2 || !tr.Spans[0].Start.Before(tr.Spans[1].Start) {
			t.Errorf("trace %x: %+v", tr.ID, tr.Spans)
		}
	}
}

// The page shows the map's nodes as SVG and each trace as a waterfall of
// its spans, indented by depth, failures marked.
func TestPage(t *testing.T) {
	live := servicemap.NewLive(nil)
	r := NewRecent(nil)
	spans := []*export.Span{
		spanOf(1, 1, 0, "frontend", trace.SpanKindClient, 0, 10*time.Millisecond, false),
		spanOf(1, 2, 1, "inventory", trace.SpanKindServer, time.Millisecond, 8*time.Millisecond, true),
	}
	for _, s := range spans {
		live.Export(s)
		r.Export(s)
	}
	srv := httptest.NewServer(Handler(live, r))
	defer srv.Close()
	get := func(path string) string {
		resp, err := srv.Client().Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	page := get("/")
	for _, want := range []string{`<svg`, `data-name="frontend"`, `data-name="inventory"`, `class="edge" data-client="frontend" data-server="inventory"`,
		`<details class="trace failed"`, `2 spans · 2 services`, `padding-left:1em">inventory · server GET`, `class="bar error"`} {
		if !strings.Contains(page, want) {
			t.Errorf("page lacks %q:\n%s", want, page)
		}
	}
	if svg := get("/map.svg"); !strings.HasPrefix(svg, "<svg") || !strings.Contains(svg, servicemap.NodeFill) {
		t.Errorf("map.svg: %s", svg)
	}
	if !strings.Contains(get("/traces.html"), `data-trace="`) {
		t.Error("traces.html lists no trace")
	}
	if resp, _ := srv.Client().Get(srv.URL + "/nope"); resp.StatusCode != 404 {
		t.Errorf("/nope: %d", resp.StatusCode)
	}
}

// Names are escaped wherever the page shows them.
func TestPageEscapes(t *testing.T) {
	live := servicemap.NewLive(nil)
	r := NewRecent(nil)
	s := spanOf(1, 1, 0, `<script>alert(1)</script>`, trace.SpanKindServer, 0, time.Millisecond, false)
	s.Name = `"><img src=x>`
	live.Export(s)
	r.Export(s)
	srv := httptest.NewServer(Handler(live, r))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	body := strings.Replace(string(b), "<script>\n//", "", 1) // the page's own script
	if strings.Contains(body, "<script>alert") || strings.Contains(body, `<img src=x>`) {
		t.Errorf("unescaped names in the page:\n%s", body)
	}
}
