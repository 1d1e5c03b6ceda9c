package collector

import (
	"bytes"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"time"
)

// Span is one span as the collector's debug exporter printed it. IDs are
// lowercase hex and empty when unset. Kind and StatusCode use the collector's
// spelling: Unspecified, Internal, Server, Client, Producer, Consumer; Unset,
// Ok, Error.
//
// Attribute values are the collector's string form of the value: Str values
// verbatim, Int and Double in decimal, Bool as true or false, Bytes in base64,
// Slice and Map as JSON. The *Types maps hold the OTLP value type of each key
// (Str, Int, Double, Bool, Bytes, Slice, Map, Empty), so a test can tell an
// Int 200 from a Str "200".
type Span struct {
	TraceID    string
	SpanID     string
	ParentID   string
	TraceState string
	Name       string
	Kind       string
	Start      time.Time
	End        time.Time

	StatusCode    string
	StatusMessage string

	Attributes     map[string]string
	AttributeTypes map[string]string

	Resource               map[string]string
	ResourceTypes          map[string]string
	ResourceSchemaURL      string
	ScopeName              string
	ScopeVersion           string
	DroppedAttributesCount uint32
	DroppedEventsCount     uint32
	DroppedLinksCount      uint32

	Events []Event
	Links  []Link
}

// Event is a span event; Attributes holds values as in Span.Attributes.
type Event struct {
	Name       string
	Time       time.Time
	Attributes map[string]string
}

// Link is a span link; Attributes holds values as in Span.Attributes.
type Link struct {
	TraceID    string
	SpanID     string
	TraceState string
	Attributes map[string]string
}

// String summarises the span for failure messages.
func (s Span) String() string {
	return fmt.Sprintf("%q kind=%s trace=%s span=%s parent=%s status=%s service=%q",
		s.Name, s.Kind, s.TraceID, s.SpanID, s.ParentID, s.StatusCode, s.Resource["service.name"])
}

// timeLayout is how pcommon.Timestamp prints: time.Time.String of a UTC time
// without a monotonic reading.
const timeLayout = "2006-01-02 15:04:05.999999999 -0700 MST"

// parse reads the debug exporter's output: per export, a one-line summary
// ("Traces\t{...}") and the detailed text, each written as a separate log
// entry. Concurrent exports can interleave those entries, so the detailed
// text is recognised by its own first line instead of by pairing it with a
// summary. Zap ends the entry with a newline after a text that already ends
// in one; that blank line marks a complete entry, which is how an entry still
// being written is told apart from a finished one.
//
// Values are printed unescaped, so a value holding a blank line makes that
// mark ambiguous while it is the last line written. The entry is then taken
// as complete only if it does not stop inside a span's fixed fields or an
// open "Type(" value; a value with a line ending in ')' right before a blank
// line can still be cut there by a read racing the write.
func parse(data []byte) []Span {
	// A line without its newline may still be growing.
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		return nil
	}
	lines := strings.Split(string(data[:end]), "\n")
	var spans []Span
	for i := 0; i < len(lines); i++ {
		if lines[i] != "ResourceSpans #0" {
			continue
		}
		j := entryEnd(lines, i)
		if j < 0 {
			break
		}
		entry, closed := parseEntry(lines[i:j])
		if !closed && j == len(lines)-1 {
			// The blank line may belong to a value whose rest is not
			// written yet; a later read will tell.
			break
		}
		spans = append(spans, entry...)
		i = j
	}
	return spans
}

// entryEnd finds the blank line closing the entry that starts at lines[i],
// or -1 if it is not complete yet. A blank line followed by anything but the
// start of another entry is part of a multi-line attribute value.
func entryEnd(lines []string, i int) int {
	for j := i + 1; j < len(lines); j++ {
		if lines[j] != "" {
			continue
		}
		if j+1 == len(lines) || lines[j+1] == "ResourceSpans #0" || strings.HasPrefix(lines[j+1], "Traces\t") {
			return j
		}
	}
	return -1
}

type section int

const (
	secNone section = iota
	secResource
	secIgnored // entity refs and scope attributes: not part of Span
	secSpanAttrs
	secEvents
	secLinks
)

const (
	attrPrefix       = "     -> "
	nestedAttrPrefix = "          -> "
)

type entryParser struct {
	spans []*Span

	resource, resourceTypes map[string]string
	schemaURL               string
	scopeName, scopeVersion string

	sec section
	// incomplete is set while the text read so far cannot be the end of an
	// entry: a span before its last fixed field, an event or link before
	// its last one, or an attribute value before its closing parenthesis.
	incomplete bool
	// more extends the last value read with a line that the debug exporter
	// printed as is: values containing newlines span several lines.
	more func(line string)
}

func parseEntry(lines []string) (spans []Span, closed bool) {
	p := &entryParser{}
	for _, l := range lines {
		p.line(l)
	}
	out := make([]Span, len(p.spans))
	for i, s := range p.spans {
		// Spans of one resource shared its maps while parsing, because a
		// continuation line may still have extended them.
		s.Resource = maps.Clone(s.Resource)
		s.ResourceTypes = maps.Clone(s.ResourceTypes)
		out[i] = *s
	}
	return out, !p.incomplete
}

func (p *entryParser) cur() *Span {
	if len(p.spans) == 0 {
		return nil
	}
	return p.spans[len(p.spans)-1]
}

func (p *entryParser) line(l string) {
	switch {
	case strings.HasPrefix(l, "ResourceSpans #"):
		p.resource, p.resourceTypes = map[string]string{}, map[string]string{}
		p.schemaURL, p.scopeName, p.scopeVersion = "", "", ""
		p.sec, p.more = secNone, nil
	case strings.HasPrefix(l, "Resource SchemaURL: "):
		p.schemaURL = strings.TrimPrefix(l, "Resource SchemaURL: ")
		p.sec, p.more = secNone, nil
	case l == "Resource attributes:":
		p.sec, p.more = secResource, nil
	case l == "Resource entity refs:", l == "InstrumentationScope attributes:":
		p.sec, p.more = secIgnored, nil
	case strings.HasPrefix(l, "ScopeSpans #"), strings.HasPrefix(l, "ScopeSpans SchemaURL: "):
		p.sec, p.more = secNone, nil
	case strings.HasPrefix(l, "InstrumentationScope "):
		// Printed as "name version"; scope names carry no spaces in practice,
		// versions never do.
		rest := strings.TrimPrefix(l, "InstrumentationScope ")
		if k := strings.LastIndexByte(rest, ' '); k >= 0 {
			p.scopeName, p.scopeVersion = rest[:k], rest[k+1:]
		} else {
			p.scopeName, p.scopeVersion = rest, ""
		}
		p.sec, p.more = secNone, nil
	case strings.HasPrefix(l, "Span #"):
		p.spans = append(p.spans, &Span{
			Attributes:        map[string]string{},
			AttributeTypes:    map[string]string{},
			Resource:          p.resource,
			ResourceTypes:     p.resourceTypes,
			ResourceSchemaURL: p.schemaURL,
			ScopeName:         p.scopeName,
			ScopeVersion:      p.scopeVersion,
		})
		p.sec, p.more, p.incomplete = secNone, nil, true
	case p.cur() != nil && l == "Attributes:":
		p.sec, p.more = secSpanAttrs, nil
	case p.cur() != nil && l == "Events:":
		p.sec, p.more = secEvents, nil
	case p.cur() != nil && l == "Links:":
		p.sec, p.more = secLinks, nil
	case p.cur() != nil && p.sec == secEvents && strings.HasPrefix(l, "SpanEvent #"):
		s := p.cur()
		s.Events = append(s.Events, Event{Attributes: map[string]string{}})
		p.more, p.incomplete = nil, true
	case p.cur() != nil && p.sec == secLinks && strings.HasPrefix(l, "SpanLink #"):
		s := p.cur()
		s.Links = append(s.Links, Link{Attributes: map[string]string{}})
		p.more, p.incomplete = nil, true
	case isSpanField(l) && p.cur() != nil:
		p.spanField(l)
	case strings.HasPrefix(l, nestedAttrPrefix):
		p.nested(strings.TrimPrefix(l, nestedAttrPrefix))
	case strings.HasPrefix(l, attrPrefix):
		p.attr(strings.TrimPrefix(l, attrPrefix))
	default:
		if p.more != nil {
			p.more(l)
		}
	}
}

// isSpanField matches the span's own fields, printed as "    %-15s: %s":
// four spaces, where attribute lines have five before their arrow.
func isSpanField(l string) bool {
	return len(l) > 4 && strings.HasPrefix(l, "    ") && l[4] != ' ' && strings.Contains(l, ":")
}

func (p *entryParser) spanField(l string) {
	s := p.cur()
	key, val, _ := strings.Cut(l[4:], ":")
	key = strings.TrimSpace(key)
	val = strings.TrimPrefix(val, " ")
	p.sec, p.more = secNone, nil
	switch key {
	case "Trace ID":
		s.TraceID = val
	case "Parent ID":
		s.ParentID = val
	case "ID":
		s.SpanID = val
	case "Name":
		s.Name = val
		p.more = func(l string) { s.Name += "\n" + l }
	case "Kind":
		s.Kind = val
	case "TraceState":
		s.TraceState = val
	case "Start time":
		s.Start = parseTime(val)
	case "End time":
		s.End = parseTime(val)
	case "Status code":
		s.StatusCode = val
	case "Status message":
		s.StatusMessage = val
		p.more = func(l string) { s.StatusMessage += "\n" + l }
	case "DroppedAttributesCount":
		s.DroppedAttributesCount = parseCount(val)
	case "DroppedEventsCount":
		s.DroppedEventsCount = parseCount(val)
	case "DroppedLinksCount":
		s.DroppedLinksCount = parseCount(val)
		p.incomplete = false
	}
}

// attr handles "     -> " lines: attributes of the resource or span, or
// the fields of the current event or link.
func (p *entryParser) attr(kv string) {
	p.more = nil
	switch p.sec {
	case secResource:
		p.put(p.resource, p.resourceTypes, kv)
	case secSpanAttrs:
		s := p.cur()
		p.put(s.Attributes, s.AttributeTypes, kv)
	case secEvents:
		if s := p.cur(); len(s.Events) > 0 {
			p.eventField(&s.Events[len(s.Events)-1], kv)
		}
	case secLinks:
		if s := p.cur(); len(s.Links) > 0 {
			p.linkField(&s.Links[len(s.Links)-1], kv)
		}
	}
}

// nested handles attributes of events and links, indented one level deeper.
func (p *entryParser) nested(kv string) {
	p.more = nil
	s := p.cur()
	switch {
	case s == nil:
	case p.sec == secEvents && len(s.Events) > 0:
		p.put(s.Events[len(s.Events)-1].Attributes, nil, kv)
	case p.sec == secLinks && len(s.Links) > 0:
		p.put(s.Links[len(s.Links)-1].Attributes, nil, kv)
	}
}

func (p *entryParser) eventField(e *Event, kv string) {
	key, val, _ := strings.Cut(kv, ": ")
	switch key {
	case "Name":
		e.Name = val
		p.more = func(l string) { e.Name += "\n" + l }
	case "Timestamp":
		e.Time = parseTime(val)
	case "DroppedAttributesCount":
		p.incomplete = false
	}
}

func (p *entryParser) linkField(lk *Link, kv string) {
	key, val, _ := strings.Cut(kv, ": ")
	switch key {
	case "Trace ID":
		lk.TraceID = val
	case "ID":
		lk.SpanID = val
	case "TraceState":
		lk.TraceState = val
	case "DroppedAttributesCount":
		p.incomplete = false
	}
}

// put stores "key: Type(value)". The value is printed unescaped, so it may
// continue on the following lines and contain parentheses of its own; only
// the outermost pair delimits it.
func (p *entryParser) put(vals, types map[string]string, kv string) {
	key, raw, ok := strings.Cut(kv, ": ")
	if !ok {
		return
	}
	set := func() {
		p.incomplete = !strings.HasSuffix(raw, ")")
		typ, val := splitValue(raw)
		vals[key] = val
		if types != nil {
			types[key] = typ
		}
	}
	set()
	p.more = func(l string) {
		raw += "\n" + l
		set()
	}
}

func splitValue(raw string) (typ, val string) {
	open := strings.IndexByte(raw, '(')
	if open <= 0 || !strings.HasSuffix(raw, ")") {
		return "", raw
	}
	return raw[:open], raw[open+1 : len(raw)-1]
}

func parseTime(s string) time.Time {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return time.Time{}
	}
	return t.UTC()
}

func parseCount(s string) uint32 {
	n, _ := strconv.ParseUint(s, 10, 32)
	return uint32(n)
}
