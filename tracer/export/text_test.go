package export

import (
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

func TestTextTree(t *testing.T) {
	cleanEnv(t)
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatText, Writer: &out, TextDelay: time.Minute})

	spans := orderTrace()
	// Exported first but started last: siblings are ordered by start time.
	e.Export(&Span{TraceID: tid(0x36), SpanID: sid(0xc0), Parent: remoteParent(tid(0x36), sid(0xb7), true),
		Name: "render", Kind: trace.SpanKindInternal,
		Start: base.Add(6 * time.Millisecond), End: base.Add(6300 * time.Microsecond), Resource: frontend})
	for _, s := range spans {
		e.Export(s)
	}
	// A second trace with two roots: one whose parent was never seen, and
	// a true root that started earlier.
	e.Export(&Span{TraceID: tid(2), SpanID: sid(0x21), Parent: remoteParent(tid(2), sid(0x99), true),
		Name: "POST", Kind: trace.SpanKindClient, Start: base.Add(2 * time.Second), End: base.Add(3500 * time.Millisecond),
		Attributes: []attribute.KeyValue{semconv.ServerAddress("orders"), semconv.ServerPort(8080)},
		Resource:   orders})
	e.Export(&Span{TraceID: tid(2), SpanID: sid(0x20), Name: "poll", Kind: trace.SpanKindConsumer,
		Start: base, End: base.Add(42 * time.Microsecond)})
	shutdown(t, e)

	want := `trace 4bf92f3577b34da6a3ce929d0e0e4736  (4 spans, 12.3 ms)
└─ SERVER GET /api/orders  200  12.3 ms  [frontend pid 812]  parent 00f067aa0ba90201
   ├─ CLIENT GET  200  4.1 ms  http://orders:8080/v1/list  [frontend pid 812]
   │  └─ SERVER GET /v1/list  503  ERROR: upstream unavailable  3.9 ms  [orders pid 901]
   └─ INTERNAL render  0.300 ms  [frontend pid 812]
trace 4bf92f3577b34da6a3ce929d0e0e4702  (2 spans, 3.50 s)
├─ CONSUMER poll  0.042 ms
└─ CLIENT POST  1.50 s  orders:8080  [orders pid 901]  parent 00f067aa0ba90299
`
	if got := out.String(); got != want {
		t.Fatalf("text output:\n%s\nwant:\n%s", got, want)
	}
	st := e.Stats()
	if st.Exported != 6 {
		t.Fatalf("stats %+v, want 6 exported", st)
	}
	checkBalance(t, st)
}

func TestTextServerPathAndEscaping(t *testing.T) {
	cleanEnv(t)
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatText, Writer: &out, TextDelay: time.Minute})
	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Name: "GET", Kind: trace.SpanKindServer,
		Start: base, End: base.Add(1500 * time.Microsecond),
		Attributes: []attribute.KeyValue{semconv.URLPath("/x\x1b[2J\u202e"), attribute.String("rpc.response.status_code", "OK")},
		Resource:   orders})
	shutdown(t, e)

	want := `trace 4bf92f3577b34da6a3ce929d0e0e4701  (1 span, 1.5 ms)
└─ SERVER GET  OK  1.5 ms  /x\x1b[2J\u202e  [orders pid 901]
`
	if got := out.String(); got != want {
		t.Fatalf("text output:\n%q\nwant:\n%q", got, want)
	}
}

func TestTextCycleStillPrinted(t *testing.T) {
	a := &Span{TraceID: tid(1), SpanID: sid(1), Parent: remoteParent(tid(1), sid(2), true), Name: "a", Start: base, End: base}
	b := &Span{TraceID: tid(1), SpanID: sid(2), Parent: remoteParent(tid(1), sid(1), true), Name: "b", Start: base.Add(time.Millisecond), End: base.Add(time.Millisecond)}
	cleanEnv(t)
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatText, Writer: &out, TextDelay: time.Minute})
	e.Export(a)
	e.Export(b)
	shutdown(t, e)
	got := out.String()
	if strings.Count(got, "INTERNAL a") != 1 || strings.Count(got, "INTERNAL b") != 1 {
		t.Fatalf("cycle output:\n%s\nwant both spans once", got)
	}
	if !strings.Contains(got, "└─ INTERNAL a  0.000 ms  parent 00f067aa0ba90202\n   └─ INTERNAL b") {
		t.Fatalf("cycle output:\n%s\nwant b under a", got)
	}
}

func TestTextWaitsForQuietTrace(t *testing.T) {
	cleanEnv(t)
	var out syncBuffer
	const delay = 500 * time.Millisecond
	e := newExporter(t, &Options{Format: FormatText, Writer: &out, TextDelay: delay})

	begin := time.Now()
	e.Export(&Span{TraceID: tid(1), SpanID: sid(1), Name: "first", Start: base, End: base})
	time.Sleep(100 * time.Millisecond)
	e.Export(&Span{TraceID: tid(1), SpanID: sid(2), Parent: remoteParent(tid(1), sid(1), true),
		Name: "second", Start: base, End: base})
	waitFor(t, func() bool { return out.String() != "" })
	if waited := time.Since(begin); waited < delay {
		t.Fatalf("trace printed after %v, before being quiet for %v", waited, delay)
	}
	got := out.String()
	if strings.Count(got, "trace ") != 1 || !strings.Contains(got, "(2 spans,") || !strings.Contains(got, "   └─ INTERNAL second") {
		t.Fatalf("output:\n%s\nwant one trace holding both spans", got)
	}
	if st := e.Stats(); st.Exported != 2 || st.Pending != 0 {
		t.Fatalf("stats %+v before Shutdown, want 2 exported", st)
	}
}

func TestTextMemoryBound(t *testing.T) {
	cleanEnv(t)
	var out syncBuffer
	e := newExporter(t, &Options{Format: FormatText, Writer: &out, TextDelay: time.Minute, TextMaxSpans: 2})
	for i := range 3 {
		e.Export(&Span{TraceID: tid(byte(i + 1)), SpanID: sid(1), Name: "s", Start: base, End: base})
	}
	// The third span exceeds the bound: the oldest trace is printed early.
	waitFor(t, func() bool { return e.Stats().Exported == 1 })
	if got := out.String(); !strings.HasPrefix(got, "trace "+tid(1).String()) || strings.Count(got, "trace ") != 1 {
		t.Fatalf("early output:\n%s\nwant the oldest trace only", got)
	}
	shutdown(t, e)
	st := e.Stats()
	if st.Exported != 3 || st.Dropped != 0 {
		t.Fatalf("stats %+v, want all 3 printed", st)
	}
	if got := out.String(); strings.Count(got, "trace ") != 3 {
		t.Fatalf("output:\n%s\nwant 3 traces", got)
	}
}

func TestAppendDuration(t *testing.T) {
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{0, "0.000 ms"},
		{42 * time.Microsecond, "0.042 ms"},
		{12345 * time.Microsecond, "12.3 ms"},
		{999 * time.Millisecond, "999.0 ms"},
		{61 * time.Second, "61.00 s"},
	} {
		if got := string(appendDuration(nil, c.d)); got != c.want {
			t.Errorf("appendDuration(%v) = %q, want %q", c.d, got, c.want)
		}
	}
}
