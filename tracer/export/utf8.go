package export

import (
	"strings"
	"unicode/utf8"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
)

// Strings in OTLP are protobuf strings, which must be valid UTF-8: the
// protobuf encoder refuses a message holding one that is not, and with it
// the whole batch. Captured bytes are whatever a peer sent, so one raw 0xff
// in a request path would cost hundreds of other spans. Invalid sequences
// are replaced with U+FFFD instead, as encoding/json does for the printing
// formats, and the span is counted.

// validSpan returns s itself when all its strings are valid UTF-8, and a
// repaired copy otherwise; s may be shared, so it is never changed.
func validSpan(s *Span) (_ *Span, repaired bool) {
	if spanValidUTF8(s) {
		return s, false
	}
	c := *s
	c.Name = validString(s.Name)
	c.StatusDescription = validString(s.StatusDescription)
	c.Attributes = validAttributes(s.Attributes)
	return &c, true
}

func spanValidUTF8(s *Span) bool {
	return utf8.ValidString(s.Name) && utf8.ValidString(s.StatusDescription) && attributesValidUTF8(s.Attributes)
}

// attributesValidUTF8 looks into the attribute types sonde makes; it makes
// no SLICE or MAP values.
func attributesValidUTF8(attrs []attribute.KeyValue) bool {
	for _, kv := range attrs {
		if !utf8.ValidString(string(kv.Key)) {
			return false
		}
		switch kv.Value.Type() {
		case attribute.STRING:
			if !utf8.ValidString(kv.Value.AsString()) {
				return false
			}
		case attribute.STRINGSLICE:
			for _, v := range kv.Value.AsStringSlice() {
				if !utf8.ValidString(v) {
					return false
				}
			}
		}
	}
	return true
}

// validAttributes returns a repaired copy of attrs.
func validAttributes(attrs []attribute.KeyValue) []attribute.KeyValue {
	out := make([]attribute.KeyValue, len(attrs))
	for i, kv := range attrs {
		key := attribute.Key(validString(string(kv.Key)))
		switch kv.Value.Type() {
		case attribute.STRING:
			out[i] = key.String(validString(kv.Value.AsString()))
		case attribute.STRINGSLICE:
			vs := kv.Value.AsStringSlice()
			for j, v := range vs {
				vs[j] = validString(v)
			}
			out[i] = key.StringSlice(vs)
		default:
			out[i] = attribute.KeyValue{Key: key, Value: kv.Value}
		}
	}
	return out
}

// validResource returns r, or r with its attributes repaired.
func validResource(r *resource.Resource) (_ *resource.Resource, repaired bool) {
	if r == nil || attributesValidUTF8(r.Attributes()) {
		return r, false
	}
	return resource.NewWithAttributes(validString(r.SchemaURL()), validAttributes(r.Attributes())...), true
}

func validString(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, string(utf8.RuneError))
}
