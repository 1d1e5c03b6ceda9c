package export

import (
	"bytes"
	"encoding/json"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"
)

type jsonStatus struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

type jsonSpan struct {
	TraceID      string         `json:"trace_id"`
	SpanID       string         `json:"span_id"`
	ParentSpanID string         `json:"parent_span_id"`
	Name         string         `json:"name"`
	Kind         string         `json:"kind"`
	Start        string         `json:"start"`
	End          string         `json:"end"`
	Status       jsonStatus     `json:"status"`
	Attributes   map[string]any `json:"attributes"`
	Resource     map[string]any `json:"resource"`
}

var jsonKeys = []string{"trace_id", "span_id", "parent_span_id", "name", "kind", "start", "end", "status", "attributes", "resource"}

// parseJSONLines decodes the json format strictly: every line one object
// with exactly the documented keys, in the documented order.
func parseJSONLines(t *testing.T, out string) []jsonSpan {
	t.Helper()
	if out == "" {
		return nil
	}
	if !strings.HasSuffix(out, "\n") {
		t.Fatalf("output does not end with a newline: %q", out)
	}
	var spans []jsonSpan
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		dec := json.NewDecoder(strings.NewReader(line))
		dec.DisallowUnknownFields()
		var s jsonSpan
		if err := dec.Decode(&s); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if dec.More() {
			t.Fatalf("line %q holds more than one value", line)
		}
		if got := topLevelKeys(t, line); !reflect.DeepEqual(got, jsonKeys) {
			t.Fatalf("line %q: keys %v, want %v", line, got, jsonKeys)
		}
		spans = append(spans, s)
	}
	return spans
}

func topLevelKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	var keys []string
	depth := 0
	expectKey := false
	for {
		tok, err := dec.Token()
		if err != nil {
			break
		}
		switch v := tok.(type) {
		case json.Delim:
			if v == '{' || v == '[' {
				depth++
			} else {
				depth--
			}
			expectKey = depth == 1
			continue
		case string:
			if depth == 1 && expectKey {
				keys = append(keys, v)
				expectKey = false
				continue
			}
		}
		if depth == 1 {
			expectKey = true
		}
	}
	return keys
}

func TestJSONPreservesSpans(t *testing.T) {
	cleanEnv(t)
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &out})
	in := orderTrace()
	// A zone other than UTC must still come out as UTC.
	in[0].Start = in[0].Start.In(time.FixedZone("CET", 3600))
	for _, s := range in {
		e.Export(s)
	}
	shutdown(t, e)

	lines := parseJSONLines(t, out.String())
	if len(lines) != len(in) {
		t.Fatalf("%d lines, want %d", len(lines), len(in))
	}
	for i, want := range in {
		got := lines[i]
		if got.TraceID != want.TraceID.String() || got.SpanID != want.SpanID.String() || got.ParentSpanID != want.Parent.SpanID().String() {
			t.Errorf("line %d: ids %s/%s/%s", i, got.TraceID, got.SpanID, got.ParentSpanID)
		}
		if got.Name != want.Name || got.Kind != kindName(want.Kind) {
			t.Errorf("line %d: name/kind %q/%q", i, got.Name, got.Kind)
		}
		if wantStart := want.Start.UTC().Format(time.RFC3339Nano); got.Start != wantStart {
			t.Errorf("line %d: start %s, want %s", i, got.Start, wantStart)
		}
		if wantEnd := want.End.UTC().Format(time.RFC3339Nano); got.End != wantEnd {
			t.Errorf("line %d: end %s, want %s", i, got.End, wantEnd)
		}
		wantStatus := jsonStatus{Code: want.Status.String()}
		if want.Status == codes.Error {
			wantStatus.Message = want.StatusDescription
		}
		if got.Status != wantStatus {
			t.Errorf("line %d: status %+v, want %+v", i, got.Status, wantStatus)
		}
		if !reflect.DeepEqual(got.Resource, jsonRoundTrip(t, resourceMap(want.Resource))) {
			t.Errorf("line %d: resource %v", i, got.Resource)
		}
	}
	if !strings.HasSuffix(lines[0].Start, "12:00:00.123456789Z") {
		t.Errorf("start %s not in UTC with nanoseconds", lines[0].Start)
	}
	wantAttrs := map[string]any{
		"http.request.method": "GET", "url.path": "/api/orders", "http.response.status_code": float64(200),
		"sonde.tls": false, "sonde.ratio": 0.25, "sonde.tags": []any{"a", "b"},
	}
	if !reflect.DeepEqual(lines[0].Attributes, wantAttrs) {
		t.Errorf("attributes %v, want %v", lines[0].Attributes, wantAttrs)
	}
	if lines[0].Status.Code != "Unset" || lines[2].Status.Code != "Error" {
		t.Errorf("status codes %q, %q", lines[0].Status.Code, lines[2].Status.Code)
	}
}

func jsonRoundTrip(t *testing.T, v map[string]any) map[string]any {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestJSONRootHasEmptyParent(t *testing.T) {
	cleanEnv(t)
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &out})
	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Name: "root", Kind: trace.SpanKindProducer, Start: base, End: base, Status: codes.Ok})
	shutdown(t, e)
	got := parseJSONLines(t, out.String())
	if len(got) != 1 || got[0].TraceID != tid(1).String() || got[0].SpanID != sid(1).String() ||
		got[0].ParentSpanID != "" || got[0].Kind != "producer" || got[0].Status.Code != "Ok" {
		t.Fatalf("lines %+v, want one producer root %s/%s with empty parent and Ok status", got, tid(1), sid(1))
	}
}

func TestJSONValueTypes(t *testing.T) {
	cleanEnv(t)
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatJSON, Writer: &out})
	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Start: base, End: base,
		Name: "line\nbreak \"quoted\" \\ \x01 \xff \u2028 ünï",
		Attributes: []attribute.KeyValue{
			attribute.Int64("int", -9007199254740993), // beyond float64 precision
			attribute.Float64("float", 1e-7),
			attribute.Float64("nan", math.NaN()),
			attribute.Float64("inf", math.Inf(-1)),
			attribute.BoolSlice("bools", []bool{true, false}),
			attribute.Int64Slice("ints", []int64{1, -2}),
			attribute.Float64Slice("floats", []float64{0.5}),
			attribute.StringSlice("empty", []string{}),
			attribute.String("k\"ey", "v"),
		},
		Resource: resource.NewSchemaless(attribute.Int("process.pid", 42)),
	})
	shutdown(t, e)

	raw := out.String()
	lines := parseJSONLines(t, raw)
	if len(lines) != 1 {
		t.Fatalf("%d lines, want 1", len(lines))
	}
	if want := "line\nbreak \"quoted\" \\ \x01 \ufffd \u2028 ünï"; lines[0].Name != want {
		t.Errorf("name %q, want %q", lines[0].Name, want)
	}
	if strings.Contains(raw, "\u2028") {
		t.Errorf("U+2028 written unescaped")
	}

	// Numbers are decoded exactly, not through float64.
	dec := json.NewDecoder(bytes.NewReader([]byte(raw)))
	dec.UseNumber()
	var m struct {
		Attributes map[string]any `json:"attributes"`
		Resource   map[string]any `json:"resource"`
	}
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"int":    json.Number("-9007199254740993"),
		"float":  json.Number("1e-07"),
		"nan":    "NaN",
		"inf":    "-Inf",
		"bools":  []any{true, false},
		"ints":   []any{json.Number("1"), json.Number("-2")},
		"floats": []any{json.Number("0.5")},
		"empty":  []any{},
		"k\"ey":  "v",
	}
	if !reflect.DeepEqual(m.Attributes, want) {
		t.Errorf("attributes %#v\nwant %#v", m.Attributes, want)
	}
	if !reflect.DeepEqual(m.Resource, map[string]any{"process.pid": json.Number("42")}) {
		t.Errorf("resource %#v", m.Resource)
	}
}

func TestAppendJSONValueNested(t *testing.T) {
	v := attribute.SliceValue(attribute.StringValue("a"), attribute.MapValue(attribute.Bool("b", true)))
	got := string(appendJSONValue(nil, v))
	if got != `["a",{"b":true}]` {
		t.Fatalf("nested value %s", got)
	}
	if got := string(appendJSONValue(nil, attribute.ByteSliceValue([]byte{0xff, 0}))); got != `"/wA="` {
		t.Fatalf("bytes %s, want base64", got)
	}
	if got := string(appendJSONValue(nil, attribute.Value{})); got != "null" {
		t.Fatalf("empty value %s, want null", got)
	}
}
