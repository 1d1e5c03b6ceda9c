package http1

import (
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// seg is what one side writes in one go; a gap of uncaptured bytes may
// follow its data.
type seg struct {
	dir  Direction
	data string
	gap  int
}

// feeder feeds chunks with increasing stamps and collects the results.
type feeder struct {
	t     testing.TB
	c     *Conn
	stamp uint64
	ex    []Exchange
	errs  []error
}

func newFeeder(t testing.TB, l *Limits) *feeder {
	return &feeder{t: t, c: NewConn(l)}
}

// chunk feeds data plus gap uncaptured bytes and returns the stamps used.
func (f *feeder) chunk(dir Direction, data []byte, gap int) (start, end uint64) {
	f.t.Helper()
	f.stamp += 10
	start, end = f.stamp, f.stamp+5
	var err error
	f.ex, err = f.c.Feed(dir, Chunk{Data: data, Size: len(data) + gap, Start: start, End: end}, f.ex)
	if err != nil {
		var pe *ParseError
		if !errors.As(err, &pe) {
			f.t.Fatalf("Feed error %v is not a *ParseError", err)
		}
		f.errs = append(f.errs, err)
	}
	return start, end
}

func (f *feeder) close() { f.ex = f.c.Close(f.ex) }

// reasons lists the reasons of the collected errors.
func (f *feeder) reasons() []Reason {
	var rs []Reason
	for _, err := range f.errs {
		var pe *ParseError
		errors.As(err, &pe)
		rs = append(rs, pe.Reason)
	}
	return rs
}

// splitter cuts a segment's data into the chunks it is fed as.
type splitter func(data string) []string

func whole(data string) []string { return []string{data} }

func at(p int) splitter {
	return func(data string) []string {
		if p <= 0 || p >= len(data) {
			return []string{data}
		}
		return []string{data[:p], data[p:]}
	}
}

func bytewise(data string) []string {
	out := make([]string, len(data))
	for i := range data {
		out[i] = data[i : i+1]
	}
	return out
}

// play feeds segs, splitting segment only (or every one if only < 0) with
// split; a segment's gap follows its last chunk.
func play(t testing.TB, l *Limits, segs []seg, only int, split splitter, closeAtEnd bool) *feeder {
	t.Helper()
	f := newFeeder(t, l)
	for i, s := range segs {
		parts := []string{s.data}
		if only < 0 || only == i {
			parts = split(s.data)
		}
		for j, p := range parts {
			gap := 0
			if j == len(parts)-1 {
				gap = s.gap
			}
			f.chunk(s.dir, []byte(p), gap)
		}
	}
	if closeAtEnd {
		f.close()
	}
	return f
}

// unstamped drops stamps, which depend on how input was split.
func unstamped(ex []Exchange) []Exchange {
	out := make([]Exchange, len(ex))
	for i, e := range ex {
		e.Request.Start, e.Request.End = 0, 0
		e.Response.Start, e.Response.End = 0, 0
		out[i] = e
	}
	return out
}

func diff(got, want []Exchange) string {
	if reflect.DeepEqual(got, want) {
		return ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, "got %d exchanges, want %d\n", len(got), len(want))
	for i := range max(len(got), len(want)) {
		var g, w any = "<none>", "<none>"
		if i < len(got) {
			g = got[i]
		}
		if i < len(want) {
			w = want[i]
		}
		if !reflect.DeepEqual(g, w) {
			fmt.Fprintf(&b, "#%d\n got  %+v\n want %+v\n", i, g, w)
		}
	}
	return b.String()
}

// req and resp build expectations with the defaults of a message without
// Content-Length.
func req(method, target, host string) RequestMeta {
	return RequestMeta{Method: method, Target: target, Proto: "1.1", Host: host, ContentLength: -1}
}

func resp(code int) ResponseMeta {
	return ResponseMeta{Proto: "1.1", StatusCode: code, ContentLength: -1}
}

func withCL(r RequestMeta, n int64) RequestMeta {
	r.ContentLength, r.BodySize = n, n
	return r
}

func respCL(code int, n int64) ResponseMeta {
	r := resp(code)
	r.ContentLength, r.BodySize = n, n
	return r
}

// strs returns every string reachable from v, for secret checks.
func strs(v reflect.Value, out []string) []string {
	switch v.Kind() {
	case reflect.String:
		return append(out, v.String())
	case reflect.Struct:
		for i := range v.NumField() {
			out = strs(v.Field(i), out)
		}
	case reflect.Slice, reflect.Array:
		for i := range v.Len() {
			out = strs(v.Index(i), out)
		}
	case reflect.Pointer, reflect.Interface:
		if !v.IsNil() {
			out = strs(v.Elem(), out)
		}
	}
	return out
}
