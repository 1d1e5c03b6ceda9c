package collector

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

// sample mimics the debug exporter's output file for two exports whose log
// entries interleaved: both summaries come first, then both detailed texts,
// each closed by the blank line zap adds. It covers the sections the real
// collector tests cannot easily provoke: entity refs, scope attributes and a
// value that spans lines including a blank one.
var sample = strings.Join([]string{
	"Traces\t{\"resource spans\": 2, \"spans\": 2}",
	"Traces\t{\"resource spans\": 1, \"spans\": 1}",
	"ResourceSpans #0",
	"Resource SchemaURL: https://opentelemetry.io/schemas/1.43.0",
	"Resource attributes:",
	"     -> service.name: Str(shop)",
	"     -> process.pid: Int(77)",
	"Resource entity refs:",
	"     -> Entity ref #0:",
	"          -> Type: service",
	"          -> ID keys:",
	"               -> service.name",
	"ScopeSpans #0",
	"ScopeSpans SchemaURL: ",
	"InstrumentationScope sonde 1.0.0",
	"InstrumentationScope attributes:",
	"     -> scope.attr: Str(ignored)",
	"Span #0",
	"    Trace ID       : 0af7651916cd43dd8448eb211c80319c",
	"    Parent ID      : ",
	"    ID             : b7ad6b7169203331",
	"    Name           : GET /",
	"    Kind           : Server",
	"    TraceState     : a=b",
	"    Start time     : 2026-03-14 15:09:26.535897932 +0000 UTC",
	"    End time       : 2026-03-14 15:09:26.577897939 +0000 UTC",
	"    Status code    : Error",
	"    Status message : two",
	"lines",
	"    DroppedAttributesCount: 1",
	"    DroppedEventsCount: 2",
	"    DroppedLinksCount: 3",
	"Attributes:",
	"     -> note: Str(a (b) c",
	"",
	"     d)",
	"     -> code: Int(500)",
	"Events:",
	"SpanEvent #0",
	"     -> Name: retry",
	"     -> Timestamp: 2026-03-14 15:09:26.536 +0000 UTC",
	"     -> DroppedAttributesCount: 0",
	"     -> Attributes::",
	"          -> attempt: Int(2)",
	"Links:",
	"SpanLink #0",
	"     -> Trace ID: 00000000000000000000000000000001",
	"     -> ID: 0000000000000002",
	"     -> TraceState: ",
	"     -> DroppedAttributesCount: 0",
	"     -> Attributes::",
	"          -> why: Str(batch)",
	"ResourceSpans #1",
	"Resource SchemaURL: ",
	"Resource attributes:",
	"     -> service.name: Str(db)",
	"ScopeSpans #0",
	"ScopeSpans SchemaURL: ",
	"InstrumentationScope  ",
	"Span #0",
	"    Trace ID       : 0af7651916cd43dd8448eb211c80319c",
	"    Parent ID      : b7ad6b7169203331",
	"    ID             : 00f067aa0ba902b7",
	"    Name           : query",
	"    Kind           : Client",
	"    Start time     : 1970-01-01 00:00:00 +0000 UTC",
	"    End time       : 1970-01-01 00:00:01 +0000 UTC",
	"    Status code    : Unset",
	"    Status message : ",
	"    DroppedAttributesCount: 0",
	"    DroppedEventsCount: 0",
	"    DroppedLinksCount: 0",
	"",
	"ResourceSpans #0",
	"Resource SchemaURL: ",
	"ScopeSpans #0",
	"ScopeSpans SchemaURL: ",
	"InstrumentationScope x ",
	"Span #0",
	"    Trace ID       : 4bf92f3577b34da6a3ce929d0e0e4736",
	"    Parent ID      : ",
	"    ID             : 53995c3f42cd8ad8",
	"    Name           : lone",
	"    Kind           : Internal",
	"    Start time     : 2026-01-02 03:04:05.000000006 +0000 UTC",
	"    End time       : 2026-01-02 03:04:06.000000006 +0000 UTC",
	"    Status code    : Ok",
	"    Status message : ",
	"    DroppedAttributesCount: 0",
	"    DroppedEventsCount: 0",
	"    DroppedLinksCount: 0",
	"Attributes:",
	"     -> flag: Bool(true)",
	"",
	"",
}, "\n")

func TestParseSample(t *testing.T) {
	got := parse([]byte(sample))
	want := []Span{
		{
			TraceID: "0af7651916cd43dd8448eb211c80319c", SpanID: "b7ad6b7169203331", TraceState: "a=b",
			Name: "GET /", Kind: "Server",
			Start:      time.Date(2026, 3, 14, 15, 9, 26, 535897932, time.UTC),
			End:        time.Date(2026, 3, 14, 15, 9, 26, 577897939, time.UTC),
			StatusCode: "Error", StatusMessage: "two\nlines",
			Attributes:             map[string]string{"note": "a (b) c\n\n     d", "code": "500"},
			AttributeTypes:         map[string]string{"note": "Str", "code": "Int"},
			Resource:               map[string]string{"service.name": "shop", "process.pid": "77"},
			ResourceTypes:          map[string]string{"service.name": "Str", "process.pid": "Int"},
			ResourceSchemaURL:      "https://opentelemetry.io/schemas/1.43.0",
			ScopeName:              "sonde",
			ScopeVersion:           "1.0.0",
			DroppedAttributesCount: 1, DroppedEventsCount: 2, DroppedLinksCount: 3,
			Events: []Event{{
				Name: "retry", Time: time.Date(2026, 3, 14, 15, 9, 26, 536000000, time.UTC),
				Attributes: map[string]string{"attempt": "2"},
			}},
			Links: []Link{{
				TraceID: "00000000000000000000000000000001", SpanID: "0000000000000002",
				Attributes: map[string]string{"why": "batch"},
			}},
		},
		{
			TraceID: "0af7651916cd43dd8448eb211c80319c", SpanID: "00f067aa0ba902b7", ParentID: "b7ad6b7169203331",
			Name: "query", Kind: "Client",
			Start: time.Unix(0, 0).UTC(), End: time.Unix(1, 0).UTC(),
			StatusCode: "Unset",
			Attributes: map[string]string{}, AttributeTypes: map[string]string{},
			Resource: map[string]string{"service.name": "db"}, ResourceTypes: map[string]string{"service.name": "Str"},
		},
		{
			TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", SpanID: "53995c3f42cd8ad8",
			Name: "lone", Kind: "Internal",
			Start:      time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC),
			End:        time.Date(2026, 1, 2, 3, 4, 6, 6, time.UTC),
			StatusCode: "Ok",
			Attributes: map[string]string{"flag": "true"}, AttributeTypes: map[string]string{"flag": "Bool"},
			Resource: map[string]string{}, ResourceTypes: map[string]string{},
			ScopeName: "x",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("parse mismatch\n got: %#v\nwant: %#v", got, want)
	}
}

// TestParseEveryPrefix stands in for a read racing the exporter's write:
// whatever prefix of the file is visible, Spans may only miss the newest
// spans, never report a shortened one.
func TestParseEveryPrefix(t *testing.T) {
	full := parse([]byte(sample))
	if len(full) != 3 {
		t.Fatalf("full sample parsed into %d spans, want 3", len(full))
	}
	for n := range len(sample) {
		got := parse([]byte(sample[:n]))
		if len(got) > len(full) || len(got) > 0 && !reflect.DeepEqual(got, full[:len(got)]) {
			t.Fatalf("prefix of %d bytes (ending %q) parsed into %#v", n, sample[max(0, n-40):n], got)
		}
	}
}

// TestParseSharedResource guards against spans of one resource aliasing its
// attribute maps, which would let one test's edits leak into another span.
func TestParseSharedResource(t *testing.T) {
	text := strings.Join([]string{
		"ResourceSpans #0",
		"Resource attributes:",
		"     -> service.name: Str(a)",
		"ScopeSpans #0",
		"Span #0",
		"    Name           : one",
		"    DroppedLinksCount: 0",
		"Span #1",
		"    Name           : two",
		"    DroppedLinksCount: 0",
		"", "",
	}, "\n")
	got := parse([]byte(text))
	if len(got) != 2 {
		t.Fatalf("got %d spans, want 2", len(got))
	}
	got[0].Resource["service.name"] = "changed"
	if got[1].Resource["service.name"] != "a" {
		t.Errorf("spans share their resource map")
	}
}

func TestTail(t *testing.T) {
	for _, tc := range []struct {
		in   string
		n    int
		want string
	}{
		{"a\nb\nc\n", 2, "b\nc"},
		{"a\nb\nc", 5, "a\nb\nc"},
		{"\nb\n", 1, "b"},
		{"", 3, ""},
	} {
		if got := string(tail([]byte(tc.in), tc.n)); got != tc.want {
			t.Errorf("tail(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
		}
	}
}
