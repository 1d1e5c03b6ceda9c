package export

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"math"
	"strconv"
	"sync"
	"time"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// jsonExporter writes one JSON object per span and line, each batch in a
// single Write so that lines from concurrent writers never interleave.
type jsonExporter struct {
	mu  sync.Mutex
	w   io.Writer
	buf []byte
}

func newJSONExporter(w io.Writer) *jsonExporter { return &jsonExporter{w: w} }

func (x *jsonExporter) ExportSpans(_ context.Context, spans []sdktrace.ReadOnlySpan) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	b := x.buf[:0]
	for _, s := range spans {
		b = appendSpanJSON(b, s)
		b = append(b, '\n')
	}
	x.buf = b
	if _, err := x.w.Write(b); err != nil {
		return fmt.Errorf("write json: %w", err)
	}
	return nil
}

func (*jsonExporter) Shutdown(context.Context) error { return nil }

func appendSpanJSON(b []byte, s sdktrace.ReadOnlySpan) []byte {
	sc := s.SpanContext()
	tid, sid := sc.TraceID(), sc.SpanID()
	b = append(b, `{"trace_id":"`...)
	b = hex.AppendEncode(b, tid[:])
	b = append(b, `","span_id":"`...)
	b = hex.AppendEncode(b, sid[:])
	b = append(b, `","parent_span_id":"`...)
	if p := s.Parent(); p.HasSpanID() {
		pid := p.SpanID()
		b = hex.AppendEncode(b, pid[:])
	}
	b = append(b, `","name":`...)
	b = appendJSONString(b, s.Name())
	b = append(b, `,"kind":"`...)
	b = append(b, kindName(s.SpanKind())...)
	b = append(b, `","start":"`...)
	b = s.StartTime().UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","end":"`...)
	b = s.EndTime().UTC().AppendFormat(b, time.RFC3339Nano)
	st := s.Status()
	b = append(b, `","status":{"code":"`...)
	b = append(b, st.Code.String()...)
	b = append(b, `","message":`...)
	b = appendJSONString(b, st.Description)
	b = append(b, `},"attributes":{`...)
	for i, kv := range s.Attributes() {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONKeyValue(b, kv)
	}
	b = append(b, `},"resource":{`...)
	for it, i := s.Resource().Iter(), 0; it.Next(); i++ {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONKeyValue(b, it.Attribute())
	}
	return append(b, "}}"...)
}

func kindName(k trace.SpanKind) string {
	switch k {
	case trace.SpanKindServer:
		return "server"
	case trace.SpanKindClient:
		return "client"
	case trace.SpanKindProducer:
		return "producer"
	case trace.SpanKindConsumer:
		return "consumer"
	default:
		return "internal"
	}
}

func appendJSONKeyValue(b []byte, kv attribute.KeyValue) []byte {
	b = appendJSONString(b, string(kv.Key))
	b = append(b, ':')
	return appendJSONValue(b, kv.Value)
}

// appendJSONValue keeps each attribute's JSON type, so that consumers such
// as jq can compare numbers and booleans without parsing strings.
func appendJSONValue(b []byte, v attribute.Value) []byte {
	switch v.Type() {
	case attribute.BOOL:
		return strconv.AppendBool(b, v.AsBool())
	case attribute.INT64:
		return strconv.AppendInt(b, v.AsInt64(), 10)
	case attribute.FLOAT64:
		return appendJSONFloat(b, v.AsFloat64())
	case attribute.STRING:
		return appendJSONString(b, v.AsString())
	case attribute.BOOLSLICE:
		return appendJSONArray(b, v.AsBoolSlice(), strconv.AppendBool)
	case attribute.INT64SLICE:
		return appendJSONArray(b, v.AsInt64Slice(), func(b []byte, n int64) []byte { return strconv.AppendInt(b, n, 10) })
	case attribute.FLOAT64SLICE:
		return appendJSONArray(b, v.AsFloat64Slice(), appendJSONFloat)
	case attribute.STRINGSLICE:
		return appendJSONArray(b, v.AsStringSlice(), appendJSONString)
	case attribute.BYTESLICE:
		b = append(b, '"')
		b = base64.StdEncoding.AppendEncode(b, v.AsByteSlice())
		return append(b, '"')
	case attribute.SLICE:
		return appendJSONArray(b, v.AsSlice(), appendJSONValue)
	case attribute.MAP:
		b = append(b, '{')
		for i, kv := range v.AsMap() {
			if i > 0 {
				b = append(b, ',')
			}
			b = appendJSONKeyValue(b, kv)
		}
		return append(b, '}')
	default:
		return append(b, "null"...)
	}
}

func appendJSONArray[T any](b []byte, vs []T, appendOne func([]byte, T) []byte) []byte {
	b = append(b, '[')
	for i, v := range vs {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendOne(b, v)
	}
	return append(b, ']')
}

// appendJSONFloat writes NaN and infinities, which JSON numbers cannot
// express, as strings rather than failing the whole line.
func appendJSONFloat(b []byte, f float64) []byte {
	switch {
	case math.IsNaN(f):
		return append(b, `"NaN"`...)
	case math.IsInf(f, 1):
		return append(b, `"+Inf"`...)
	case math.IsInf(f, -1):
		return append(b, `"-Inf"`...)
	}
	return strconv.AppendFloat(b, f, 'g', -1, 64)
}

const hexDigits = "0123456789abcdef"

// appendJSONString quotes s. Captured traffic can hold any bytes: invalid
// UTF-8 becomes U+FFFD so that every line stays valid JSON.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '"', '\\':
				b = append(b, '\\', c)
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		// U+2028 and U+2029 are valid JSON but end lines in JavaScript.
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
