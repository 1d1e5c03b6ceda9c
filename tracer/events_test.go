package tracer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"unsafe"
)

// encodeEvent lays out e and payload as the kernel writes them into the ring
// buffer: the header in native byte order, then the captured bytes.
func encodeEvent(t testing.TB, e *socketEvent, payload []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := binary.Write(&b, binary.NativeEndian, e); err != nil {
		t.Fatal(err)
	}
	b.Write(payload)
	return b.Bytes()
}

func setComm(e *socketEvent, s string) {
	for i := range e.Comm {
		e.Comm[i] = 0
	}
	for i := 0; i < len(s) && i < len(e.Comm); i++ {
		e.Comm[i] = int8(s[i])
	}
}

// The header has no padding: its encoded size is its in-memory size, so the
// C side and viewEvent agree on where the payload starts.
func TestEventHeaderLayout(t *testing.T) {
	if n := binary.Size(socketEvent{}); n != eventHeaderSize {
		t.Fatalf("encoded header %d bytes, in memory %d", n, eventHeaderSize)
	}
	if eventHeaderSize%8 != 0 {
		t.Errorf("header size %d is not a multiple of 8: the payload would be misaligned", eventHeaderSize)
	}
}

func TestViewEvent(t *testing.T) {
	want := socketEvent{
		Ts: 123456789, Sock: 0xffff888812345678, Tgid: 1000, Tid: 1001, Fd: 7,
		Size: 9000, Captured: 5, Sport: 8080, Dport: 43210,
		Kind: eventData, Dir: dirIngress, Syscall: 3, Family: 10,
	}
	want.Saddr = netip.MustParseAddr("::ffff:10.0.0.1").As16()
	want.Daddr = netip.MustParseAddr("2001:db8::7").As16()
	setComm(&want, "nginx")
	raw := encodeEvent(t, &want, []byte("hello, and more bytes than captured"))

	e, data, err := viewEvent(raw)
	if err != nil {
		t.Fatal(err)
	}
	if *e != want {
		t.Errorf("header = %+v, want %+v", *e, want)
	}
	if string(data) != "hello" {
		t.Errorf("payload = %q, want the %d captured bytes", data, want.Captured)
	}
	// In place: no copy.
	if unsafe.Pointer(e) != unsafe.Pointer(&raw[0]) || &data[0] != &raw[eventHeaderSize] {
		t.Errorf("viewEvent copied the record")
	}
	if e.command() != "nginx" {
		t.Errorf("command() = %q", e.command())
	}

	// Exactly as long as it claims.
	e, data, err = viewEvent(raw[:eventHeaderSize+5])
	if err != nil || len(data) != 5 || e.Tgid != 1000 {
		t.Errorf("exact record: %v, %q", err, data)
	}

	// No payload at all.
	want.Captured = 0
	raw = encodeEvent(t, &want, nil)
	if e, data, err := viewEvent(raw); err != nil || len(data) != 0 || e.Size != 9000 {
		t.Errorf("empty payload: %v, %q", err, data)
	}
}

func TestViewEventShort(t *testing.T) {
	for _, n := range []int{0, 1, 8, eventHeaderSize - 1} {
		e, data, err := viewEvent(make([]byte, n))
		if !errors.Is(err, errShortRecord) || e != nil || data != nil {
			t.Errorf("viewEvent(%d bytes) = %v, %v, %v; want errShortRecord", n, e, data, err)
		}
	}
	// A header that claims more than the record holds.
	for _, tc := range []struct {
		captured uint32
		payload  int
	}{
		{1, 0},
		{100, 99},
		{4096, 10},
		{0xffffffff, 64},
	} {
		raw := encodeEvent(t, &socketEvent{Kind: eventData, Captured: tc.captured}, make([]byte, tc.payload))
		e, data, err := viewEvent(raw)
		if !errors.Is(err, errShortRecord) || e != nil || data != nil {
			t.Errorf("captured %d, payload %d: %v, %v, %v; want errShortRecord", tc.captured, tc.payload, e, data, err)
		}
	}
}

func TestEventAddresses(t *testing.T) {
	for _, tc := range []struct {
		saddr, daddr string
		sport, dport uint16
		local, rem   string
	}{
		{"::ffff:127.0.0.1", "::ffff:10.1.2.3", 8080, 50000, "127.0.0.1:8080", "10.1.2.3:50000"},
		{"::1", "2001:db8::5", 443, 1, "[::1]:443", "[2001:db8::5]:1"},
		{"::", "::", 0, 0, "[::]:0", "[::]:0"},
		{"::ffff:0.0.0.0", "::ffff:255.255.255.255", 1, 65535, "0.0.0.0:1", "255.255.255.255:65535"},
	} {
		var e socketEvent
		e.Saddr = netip.MustParseAddr(tc.saddr).As16()
		e.Daddr = netip.MustParseAddr(tc.daddr).As16()
		e.Sport, e.Dport = tc.sport, tc.dport
		if got := e.local().String(); got != tc.local {
			t.Errorf("local(%s) = %s, want %s", tc.saddr, got, tc.local)
		}
		if got := e.remote().String(); got != tc.rem {
			t.Errorf("remote(%s) = %s, want %s", tc.daddr, got, tc.rem)
		}
		if l := e.local(); l.Addr().Is4In6() {
			t.Errorf("local() kept the mapping: %s", l)
		}
	}
}

func TestEventCommand(t *testing.T) {
	for _, tc := range []struct {
		comm []byte
		want string
	}{
		{nil, ""},
		{[]byte("curl"), "curl"},
		{[]byte("0123456789abcdef"), "0123456789abcdef"}, // no NUL: all 16 bytes
		{[]byte("a\x00bc"), "a"},
		{[]byte("caf\xc3\xa9"), "caf\u00e9"}, // bytes above 0x7f survive the int8 round trip
		{[]byte{0xff, 0x80, 0x7f}, "\xff\x80\x7f"},
	} {
		var e socketEvent
		for i, b := range tc.comm {
			e.Comm[i] = int8(b)
		}
		if got := e.command(); got != tc.want {
			t.Errorf("command(%q) = %q, want %q", tc.comm, got, tc.want)
		}
	}
}

// readSeed decodes a one-argument []byte seed of a Go fuzz corpus.
func readSeed(t *testing.T, fuzz, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", "fuzz", fuzz, name))
	if err != nil {
		t.Fatal(err)
	}
	header, body, _ := strings.Cut(string(b), "\n")
	body = strings.TrimSpace(body)
	lit, ok := strings.CutPrefix(body, "[]byte(")
	if header != "go test fuzz v1" || !ok || !strings.HasSuffix(lit, ")") {
		t.Fatalf("seed %s/%s is not a []byte corpus file", fuzz, name)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(lit, ")"))
	if err != nil {
		t.Fatalf("seed %s/%s: %v", fuzz, name, err)
	}
	return []byte(s)
}

// The committed FuzzViewEvent seeds are laid out as the kernel writes
// records, so the fuzzer starts from real events.
func TestViewEventSeeds(t *testing.T) {
	e, data, err := viewEvent(readSeed(t, "FuzzViewEvent", "data-request"))
	if err != nil {
		t.Fatal(err)
	}
	if e.Kind != eventData || e.Dir != dirIngress || e.command() != "curl" || e.local().String() != "127.0.0.1:8080" {
		t.Errorf("data-request header: %+v", e)
	}
	if !strings.HasPrefix(string(data), "GET /api") || int(e.Size) != len(data) {
		t.Errorf("data-request payload %q, size %d", data, e.Size)
	}
	e, data, err = viewEvent(readSeed(t, "FuzzViewEvent", "data-truncated"))
	if err != nil || e.Size <= e.Captured || len(data) != 16 {
		t.Errorf("data-truncated: %v, %+v", err, e)
	}
	for _, name := range []string{"captured-beyond-record", "captured-max", "short-header"} {
		if _, _, err := viewEvent(readSeed(t, "FuzzViewEvent", name)); !errors.Is(err, errShortRecord) {
			t.Errorf("%s: %v, want errShortRecord", name, err)
		}
	}
	e, _, err = viewEvent(readSeed(t, "FuzzViewEvent", "accept-v6-full-comm"))
	if err != nil || e.Kind != eventAccept || e.local().String() != "[2001:db8::1]:8080" || e.command() != "0123456789abcdef" {
		t.Errorf("accept-v6-full-comm: %v, %+v", err, e)
	}
}
