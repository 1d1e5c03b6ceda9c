package http2

import (
	"bytes"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
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
	for i := range len(data) { // not range data: that walks runes
		out[i] = data[i : i+1]
	}
	return out
}

// play feeds segs into f, splitting segment only (or every one if only < 0)
// with split; a segment's gap follows its last chunk.
func (f *feeder) play(segs []seg, only int, split splitter) *feeder {
	f.t.Helper()
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
	return f
}

func play(t testing.TB, l *Limits, segs []seg, only int, split splitter, closeAtEnd bool) *feeder {
	t.Helper()
	f := newFeeder(t, l).play(segs, only, split)
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

// wire builds HTTP/2 traffic with x/net's Framer and hpack.Encoder, one
// encoder per direction whose dynamic table persists, as in a real peer.
// Each method call is one write (one seg) unless batched with begin/end.
type wire struct {
	t     testing.TB
	segs  []seg
	enc   [2]*hpack.Encoder
	hbuf  [2]bytes.Buffer
	w     [2]bytes.Buffer
	fr    [2]*http2.Framer
	batch bool
}

func newWire(t testing.TB) *wire {
	w := &wire{t: t}
	for i := range w.enc {
		w.enc[i] = hpack.NewEncoder(&w.hbuf[i])
		w.fr[i] = http2.NewFramer(&w.w[i], nil)
		w.fr[i].AllowIllegalWrites = true
	}
	return w
}

// flush cuts what dir wrote into a seg.
func (w *wire) flush(dir Direction) {
	if w.batch || w.w[dir].Len() == 0 {
		return
	}
	w.segs = append(w.segs, seg{dir: dir, data: w.w[dir].String()})
	w.w[dir].Reset()
}

// begin and end batch frames of one direction into a single write.
func (w *wire) begin() { w.batch = true }
func (w *wire) end(dir Direction) {
	w.batch = false
	w.flush(dir)
}

func (w *wire) check(err error) {
	if err != nil {
		w.t.Fatal(err)
	}
}

// prefaces writes the client preface and SETTINGS, then the server's
// SETTINGS and both ACKs, as Go's client and server do.
func (w *wire) prefaces(serverSettings ...http2.Setting) {
	w.w[Request].WriteString(http2.ClientPreface)
	w.check(w.fr[Request].WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0}, http2.Setting{ID: http2.SettingInitialWindowSize, Val: 4 << 20}))
	w.check(w.fr[Request].WriteWindowUpdate(0, 1<<30))
	w.flush(Request)
	w.check(w.fr[Response].WriteSettings(append([]http2.Setting{{ID: http2.SettingMaxConcurrentStreams, Val: 250}}, serverSettings...)...))
	w.check(w.fr[Response].WriteSettingsAck())
	w.flush(Response)
	w.check(w.fr[Request].WriteSettingsAck())
	w.flush(Request)
}

// block encodes name, value pairs with dir's encoder.
func (w *wire) block(dir Direction, kv ...string) []byte {
	w.hbuf[dir].Reset()
	for i := 0; i < len(kv); i += 2 {
		f := hpack.HeaderField{Name: kv[i], Value: kv[i+1]}
		// As Go's http2 does: credentials are never indexed.
		f.Sensitive = f.Name == "authorization" || f.Name == "cookie" && len(f.Value) < 20
		w.check(w.enc[dir].WriteField(f))
	}
	return bytes.Clone(w.hbuf[dir].Bytes())
}

func (w *wire) headers(dir Direction, id uint32, end bool, kv ...string) {
	w.check(w.fr[dir].WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: w.block(dir, kv...), EndStream: end, EndHeaders: true}))
	w.flush(dir)
}

// headersSplit sends a header block as HEADERS plus CONTINUATION frames of
// at most n bytes, with padding and priority on the HEADERS frame.
func (w *wire) headersSplit(dir Direction, id uint32, end bool, n int, kv ...string) {
	b := w.block(dir, kv...)
	first := b[:min(n, len(b))]
	b = b[len(first):]
	w.check(w.fr[dir].WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(b) == 0,
		PadLength: 7, Priority: http2.PriorityParam{StreamDep: 0, Weight: 15}}))
	for len(b) > 0 {
		k := min(n, len(b))
		w.check(w.fr[dir].WriteContinuation(id, k == len(b), b[:k]))
		b = b[k:]
	}
	w.flush(dir)
}

func (w *wire) data(dir Direction, id uint32, end bool, body string) {
	w.check(w.fr[dir].WriteData(id, end, []byte(body)))
	w.flush(dir)
}

func (w *wire) dataPadded(dir Direction, id uint32, end bool, body string, pad int) {
	w.check(w.fr[dir].WriteDataPadded(id, end, []byte(body), make([]byte, pad)))
	w.flush(dir)
}

func (w *wire) rst(dir Direction, id uint32, code http2.ErrCode) {
	w.check(w.fr[dir].WriteRSTStream(id, code))
	w.flush(dir)
}

func (w *wire) raw(dir Direction, typ http2.FrameType, flags http2.Flags, id uint32, payload []byte) {
	w.check(w.fr[dir].WriteRawFrame(typ, flags, id, payload))
	w.flush(dir)
}

// get sends a typical request from a Go client.
func (w *wire) get(id uint32, path string, extra ...string) {
	kv := append([]string{":method", "GET", ":scheme", "https", ":authority", "api.example.com", ":path", path,
		"user-agent", "Go-http-client/2.0", "accept-encoding", "gzip"}, extra...)
	w.headers(Request, id, true, kv...)
}

// ok sends a 200 JSON response with body.
func (w *wire) ok(id uint32, body string) {
	w.begin()
	w.headers(Response, id, body == "", ":status", "200", "content-type", "application/json",
		"content-length", fmt.Sprint(len(body)), "date", "Mon, 02 Jan 2006 15:04:05 GMT")
	if body != "" {
		w.data(Response, id, true, body)
	}
	w.end(Response)
}

func getMeta(path string) RequestMeta {
	return RequestMeta{Method: "GET", Scheme: "https", Authority: "api.example.com", Path: path, UserAgent: "Go-http-client/2.0"}
}

func okMeta(body string) ResponseMeta {
	return ResponseMeta{StatusCode: 200, ContentType: "application/json", GRPCStatus: -1, BodySize: int64(len(body))}
}
