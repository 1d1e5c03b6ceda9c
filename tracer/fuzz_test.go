package tracer

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"unsafe"

	"github.com/sondehq/sonde/tracer/discover"
)

// Seeds live in testdata/fuzz/<FuzzName>/ as well; the f.Add calls keep the
// plain `go test` run meaningful if those files are removed.

func FuzzViewEvent(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, eventHeaderSize))
	f.Fuzz(func(t *testing.T, raw []byte) {
		e, data, err := viewEvent(raw)
		if len(raw) < eventHeaderSize {
			if !errors.Is(err, errShortRecord) || e != nil || data != nil {
				t.Fatalf("%d bytes: %v, %v, %v; want errShortRecord", len(raw), e, data, err)
			}
			return
		}
		captured := binary.NativeEndian.Uint32(raw[unsafe.Offsetof(socketEvent{}.Captured):])
		room := len(raw) - eventHeaderSize
		if uint64(captured) > uint64(room) {
			if !errors.Is(err, errShortRecord) || e != nil || data != nil {
				t.Fatalf("captured %d > %d: %v, %v, %v; want errShortRecord", captured, room, e, data, err)
			}
			return
		}
		if err != nil || e == nil {
			t.Fatalf("valid record: %v", err)
		}
		if e.Captured != captured || len(data) != int(captured) {
			t.Fatalf("captured %d, header says %d, payload %d bytes", captured, e.Captured, len(data))
		}
		if unsafe.Pointer(e) != unsafe.Pointer(&raw[0]) {
			t.Fatalf("header is a copy")
		}
		if len(data) > 0 && &data[0] != &raw[eventHeaderSize] {
			t.Fatalf("payload is not the bytes after the header")
		}
		// The accessors never panic and agree with the raw fields.
		if l := e.local(); l.Port() != e.Sport || l.Addr().Is4In6() {
			t.Fatalf("local() = %v", l)
		}
		if r := e.remote(); r.Port() != e.Dport || r.Addr().Is4In6() {
			t.Fatalf("remote() = %v", r)
		}
		if c := e.command(); len(c) > len(e.Comm) || strings.IndexByte(c, 0) >= 0 {
			t.Fatalf("command() = %q", c)
		}
	})
}

func FuzzResourceAttributes(f *testing.F) {
	f.Add("service.name=a,b=c")
	f.Fuzz(func(t *testing.T, s string) {
		kvs := parseResourceAttributes(s)
		if len(kvs) > strings.Count(s, ",")+1 {
			t.Fatalf("%d attributes from %d pairs", len(kvs), strings.Count(s, ",")+1)
		}
		for _, kv := range kvs {
			k := string(kv.Key)
			if k == "" || k != strings.TrimSpace(k) {
				t.Fatalf("key %q: empty or not trimmed", k)
			}
			if strings.ContainsAny(k, ",=") || !strings.Contains(s, k) {
				t.Fatalf("key %q is not one of the input's", k)
			}
			if !kv.Valid() {
				t.Fatalf("invalid attribute %v", kv)
			}
		}
		// A value that does not decode discards everything; otherwise
		// every pair is kept in order, and pairs without "%" as written.
		for _, pair := range strings.Split(s, ",") {
			k, v, ok := strings.Cut(pair, "=")
			if !ok || strings.TrimSpace(k) == "" {
				continue
			}
			if _, err := url.PathUnescape(strings.TrimSpace(v)); err != nil {
				if len(kvs) != 0 {
					t.Fatalf("undecodable pair %q, yet attributes %v", pair, kvs)
				}
				return
			}
		}
		i := 0
		for _, pair := range strings.Split(s, ",") {
			k, v, ok := strings.Cut(pair, "=")
			if !ok || strings.TrimSpace(k) == "" {
				continue
			}
			if i >= len(kvs) {
				t.Fatalf("pair %q missing from %v", pair, kvs)
			}
			if string(kvs[i].Key) != strings.TrimSpace(k) {
				t.Fatalf("pair %q gave key %q", pair, kvs[i].Key)
			}
			if !strings.Contains(v, "%") && kvs[i].Value.AsString() != strings.TrimSpace(v) {
				t.Fatalf("pair %q gave value %q", pair, kvs[i].Value.AsString())
			}
			i++
		}
		if i != len(kvs) {
			t.Fatalf("%d pairs, %d attributes", i, len(kvs))
		}
	})
}

// listenRows returns, for the text of /proc/net/tcp, the local-address
// field of each row in LISTEN state, as far as readListening may read.
func listenRows(text string) (rows []string, complete bool) {
	complete = true
	for n, line := range strings.Split(text, "\n") {
		if n >= discover.MaxNetLines || len(line) >= bufio.MaxScanTokenSize-2 {
			// Not read: bufio.Scanner stops at a line this long.
			return rows, false
		}
		f := strings.Fields(strings.TrimSuffix(line, "\r"))
		if len(f) >= 4 && f[3] == "0A" {
			rows = append(rows, f[1])
		}
	}
	return rows, complete
}

func FuzzReadListening(f *testing.F) {
	f.Add(procNetTCP)
	f.Fuzz(func(t *testing.T, text string) {
		ports := map[uint16]bool{}
		readListening(strings.NewReader(text), ports)
		rows, complete := listenRows(text)
		want := map[uint16]bool{}
		for _, local := range rows {
			_, hex, _ := strings.Cut(local, ":")
			if p, err := strconv.ParseUint(hex, 16, 16); err == nil {
				want[uint16(p)] = true
			}
		}
		for p := range ports {
			if !want[p] {
				t.Fatalf("port %#x reported, but no LISTEN row has it (rows %q)", p, rows)
			}
		}
		if complete {
			for p := range want {
				if !ports[p] {
					t.Fatalf("port %#x of a LISTEN row missed", p)
				}
			}
		}
	})
}

func FuzzRedactQuery(f *testing.F) {
	f.Add("token=abc&x=1")
	f.Fuzz(func(t *testing.T, q string) {
		out := redactQuery(q)
		if again := redactQuery(out); again != out {
			t.Fatalf("not idempotent: %q -> %q -> %q", q, out, again)
		}
		in, got := strings.Split(q, "&"), strings.Split(out, "&")
		if len(in) != len(got) {
			t.Fatalf("%q -> %q: %d parameters became %d", q, out, len(in), len(got))
		}
		for i := range in {
			k, _, ok := strings.Cut(in[i], "=")
			key := k
			if dec, err := url.QueryUnescape(k); err == nil {
				key = dec
			}
			if ok && redactedQueryKeys[strings.ToLower(key)] {
				if got[i] != k+"="+redacted {
					t.Fatalf("%q -> %q: parameter %q kept its value as %q", q, out, in[i], got[i])
				}
			} else if got[i] != in[i] {
				t.Fatalf("%q -> %q: parameter %q changed to %q", q, out, in[i], got[i])
			}
		}
	})
}
