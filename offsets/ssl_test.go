package offsets

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sondehq/sonde/internal/testutil"
)

const systemLibssl = "/usr/lib/x86_64-linux-gnu/libssl.so.3"

// Machine code for the synthetic functions, each instruction on its own.
var (
	xEndbr64   = []byte{0xf3, 0x0f, 0x1e, 0xfa}
	xSubRSP8   = []byte{0x48, 0x83, 0xec, 0x08}
	xSubRSP18  = []byte{0x48, 0x83, 0xec, 0x18}
	xAddRSP8   = []byte{0x48, 0x83, 0xc4, 0x08}
	xAddRSP18  = []byte{0x48, 0x83, 0xc4, 0x18}
	xCanary    = []byte{0x64, 0x48, 0x8b, 0x04, 0x25, 0x28, 0, 0, 0, 0x48, 0x89, 0x44, 0x24, 0x08} // mov rax, fs:0x28; mov [rsp+8], rax
	xXorEAX    = []byte{0x31, 0xc0}
	xTestEDX   = []byte{0x85, 0xd2}
	xJS        = []byte{0x78, 0x02}             // js +2
	xCmpRDX    = []byte{0x48, 0x39, 0xfa}       // cmp rdx, rdi
	xMovRCXRSP = []byte{0x48, 0x89, 0xe1}       // mov rcx, rsp
	xMovsxdRDX = []byte{0x48, 0x63, 0xd2}       // movsxd rdx, edx
	xMovEDX    = []byte{0xba, 0x10, 0, 0, 0}    // mov edx, 0x10
	xCallInd   = []byte{0xff, 0x15, 0, 0, 0, 0} // call [rip+0]
	xPushRBX   = []byte{0x53}
	xPopRBX    = []byte{0x5b}
	xPushR13   = []byte{0x41, 0x55}
	xPushR12   = []byte{0x41, 0x54}
	xPopR12    = []byte{0x41, 0x5c}
	xPopR13    = []byte{0x41, 0x5d}
	xPushR14   = []byte{0x41, 0x56}
	xPopR14    = []byte{0x41, 0x5e}
	xRet       = []byte{0xc3}
)

// callTo is a CALL rel32 to the named function of the same image.
type callTo string

// callAddr is a CALL rel32 to an absolute link-time address.
type callAddr uint64

// sslFn is one function of a synthetic image. Functions whose name starts
// with "_" get no symbol, like ssl_read_internal in a stripped libssl.
type sslFn struct {
	name string
	code []any // []byte, callTo or callAddr
}

// fakeText is sslText over one executable segment of synthetic code.
type fakeText struct {
	vaddr, off uint64
	text       []byte
	syms       map[uint64][]string
}

func (f fakeText) code(addr, n uint64) (uint64, []byte, error) {
	if addr < f.vaddr || addr-f.vaddr >= uint64(len(f.text)) {
		return 0, nil, fmt.Errorf("address %#x is in no executable PT_LOAD segment", addr)
	}
	rel := addr - f.vaddr
	return f.off + rel, f.text[rel:min(rel+n, uint64(len(f.text)))], nil
}

func (f fakeText) names(addr uint64) []string { return f.syms[addr] }

const (
	fakeVaddr = 0x401000
	fakeOff   = 0x1000
	fakeAlign = 0x40
)

// assemble lays fns out fakeAlign bytes apart from vaddr (loaded from file
// offset off), padded with INT3, and returns the image and the API
// functions among them.
func assemble(t testing.TB, vaddr, off uint64, fns ...sslFn) (fakeText, map[string]sslFunc) {
	t.Helper()
	addr := make(map[string]uint64)
	for i, fn := range fns {
		addr[fn.name] = vaddr + uint64(i)*fakeAlign
	}
	img := fakeText{vaddr: vaddr, off: off, text: bytes.Repeat([]byte{0xcc}, len(fns)*fakeAlign), syms: map[uint64][]string{}}
	api := make(map[string]sslFunc)
	for i, fn := range fns {
		var code []byte
		start := vaddr + uint64(i)*fakeAlign
		for _, part := range fn.code {
			switch p := part.(type) {
			case []byte:
				code = append(code, p...)
			case callTo, callAddr:
				target, ok := uint64(0), true
				if name, isName := p.(callTo); isName {
					target, ok = addr[string(name)]
				} else {
					target = uint64(p.(callAddr))
				}
				if !ok {
					t.Fatalf("%s calls unknown %s", fn.name, p)
				}
				next := start + uint64(len(code)) + 5
				code = binary.LittleEndian.AppendUint32(append(code, 0xe8), uint32(target-next))
			default:
				t.Fatalf("bad code part %T", part)
			}
		}
		if len(code) > fakeAlign {
			t.Fatalf("%s is %d bytes, over %d", fn.name, len(code), fakeAlign)
		}
		copy(img.text[i*fakeAlign:], code)
		if !strings.HasPrefix(fn.name, "_") {
			img.syms[start] = append(img.syms[start], fn.name)
		}
		if sslAPI[fn.name] {
			api[fn.name] = sslFunc{addr: start, size: uint64(len(code))}
		}
	}
	return img, api
}

// The shapes of OpenSSL 3.0's functions, reduced to what the rules look at.
var (
	readInternal  = sslFn{"_read_internal", []any{xPushR13, xPushR12, xXorEAX, xPopR12, xPopR13, xRet}}
	writeInternal = sslFn{"_write_internal", []any{xPushR14, xXorEAX, xPopR14, xRet}}
	handshake     = sslFn{"SSL_do_handshake", []any{xPushRBX, xXorEAX, xPopRBX, xRet}}
)

// plainFn is SSL_read or SSL_write: canary, negative length check, then
// the call with a pointer to a local as the fourth argument.
func plainFn(name string, callee any) sslFn {
	return sslFn{name, []any{xSubRSP18, xCanary, xXorEAX, xTestEDX, xJS, xMovRCXRSP, xMovsxdRDX, callee, xAddRSP18, xRet}}
}

// exFn is SSL_read_ex or SSL_write_ex: a forwarding call.
func exFn(name string, callee any) sslFn {
	return sslFn{name, []any{xSubRSP8, callee, xAddRSP8, xRet}}
}

// opensslShape is a whole OpenSSL 3.0-like image: functions 0 to 6 are
// the two internal functions, SSL_read, SSL_read_ex, SSL_write,
// SSL_write_ex and SSL_do_handshake.
func opensslShape() []sslFn {
	return []sslFn{
		readInternal,
		writeInternal,
		plainFn("SSL_read", callTo("_read_internal")),
		exFn("SSL_read_ex", callTo("_read_internal")),
		plainFn("SSL_write", callTo("_write_internal")),
		exFn("SSL_write_ex", callTo("_write_internal")),
		handshake,
	}
}

// fnOff is the file offset of function i of a synthetic image.
func fnOff(i int) uint64 { return fakeOff + uint64(i)*fakeAlign }

func fnAddr(i int) uint64 { return fakeVaddr + uint64(i)*fakeAlign }

// replace returns fns with the function of the same name replaced by fn.
func replace(fns []sslFn, repl ...sslFn) []sslFn {
	out := append([]sslFn(nil), fns...)
	for _, r := range repl {
		for i := range out {
			if out[i].name == r.name {
				out[i] = r
			}
		}
	}
	return out
}

// hide returns fns with the function old renamed to new, in place: with
// a leading "_", it keeps its code but loses its symbol.
func hide(fns []sslFn, old, new string) []sslFn {
	out := append([]sslFn(nil), fns...)
	for i := range out {
		if out[i].name == old {
			out[i].name = new
		}
	}
	return out
}

var (
	wantReadInternal  = SSLSite{SSLRead, CountPointer, "SSL_read_ex's callee at 0x401000", fnOff(0), "push r13", true}
	wantWriteInternal = SSLSite{SSLWrite, CountPointer, "SSL_write_ex's callee at 0x401040", fnOff(1), "push r14", true}
	wantHandshake     = SSLSite{SSLHandshake, CountNone, "SSL_do_handshake", fnOff(6), "push rbx", true}
	wantReadEntry     = SSLSite{SSLRead, CountReturn, "SSL_read", fnOff(2), "sub rsp, 0x18", false}
	wantReadExEntry   = SSLSite{SSLRead, CountPointer, "SSL_read_ex", fnOff(3), "sub rsp, 0x8", false}
	wantWriteEntry    = SSLSite{SSLWrite, CountReturn, "SSL_write", fnOff(4), "sub rsp, 0x18", false}
	wantWriteExEntry  = SSLSite{SSLWrite, CountPointer, "SSL_write_ex", fnOff(5), "sub rsp, 0x8", false}
)

// TestPlaceSSL runs the placement rules on synthetic machine code.
func TestPlaceSSL(t *testing.T) {
	other := sslFn{"_other", []any{[]byte{0x55}, xXorEAX, []byte{0x5d}, xRet}} // push rbp
	for _, c := range []struct {
		name string
		fns  []sslFn
		edit func(map[string]sslFunc)
		want []SSLSite
		err  string
	}{
		{
			name: "OpenSSL 3 shape: internal functions",
			fns:  opensslShape(),
			want: []SSLSite{wantReadInternal, wantWriteInternal, wantHandshake},
		},
		{
			name: "internal function with a symbol",
			fns: replace(hide(opensslShape(), "_read_internal", "ssl_read_internal"),
				plainFn("SSL_read", callTo("ssl_read_internal")), exFn("SSL_read_ex", callTo("ssl_read_internal"))),
			want: []SSLSite{{SSLRead, CountPointer, "ssl_read_internal", fnOff(0), "push r13", true}, wantWriteInternal, wantHandshake},
		},
		{
			name: "callee starts with sub: entry sites",
			fns:  replace(opensslShape(), sslFn{"_read_internal", []any{xSubRSP8, xAddRSP8, xRet}}),
			want: []SSLSite{wantWriteInternal, wantReadEntry, wantReadExEntry, wantHandshake},
		},
		{
			name: "no call: entry sites",
			fns: replace(opensslShape(),
				sslFn{"SSL_read", []any{xPushRBX, xXorEAX, xPopRBX, xRet}},
				sslFn{"SSL_read_ex", []any{xSubRSP8, xXorEAX, xAddRSP8, xRet}}),
			want: []SSLSite{wantWriteInternal, {SSLRead, CountReturn, "SSL_read", fnOff(2), "push rbx", true}, wantReadExEntry, wantHandshake},
		},
		{
			name: "SSL_read's first call goes elsewhere",
			fns:  append(replace(opensslShape(), plainFn("SSL_read", callTo("_other"))), other),
			want: []SSLSite{wantReadInternal, wantWriteInternal, wantReadEntry, wantHandshake},
		},
		{
			name: "no SSL_read_ex: callee not trusted",
			fns:  hide(opensslShape(), "SSL_read_ex", "_SSL_read_ex"),
			want: []SSLSite{wantWriteInternal, wantReadEntry, wantHandshake},
		},
		{
			name: "SSL_read_ex changes an argument before the call",
			fns:  replace(opensslShape(), sslFn{"SSL_read_ex", []any{xSubRSP8, xMovEDX, callTo("_read_internal"), xAddRSP8, xRet}}),
			want: []SSLSite{wantWriteInternal, wantReadEntry, wantReadExEntry, wantHandshake},
		},
		{
			name: "SSL_read_ex branches before the call",
			fns:  replace(opensslShape(), sslFn{"SSL_read_ex", []any{xSubRSP8, xTestEDX, xJS, callTo("_read_internal"), xAddRSP8, xRet}}),
			want: []SSLSite{wantWriteInternal, wantReadEntry, wantReadExEntry, wantHandshake},
		},
		{
			name: "indirect call first",
			fns:  replace(opensslShape(), sslFn{"SSL_read_ex", []any{xSubRSP8, xCallInd, callTo("_read_internal"), xAddRSP8, xRet}}),
			want: []SSLSite{wantWriteInternal, wantReadEntry, wantReadExEntry, wantHandshake},
		},
		{
			// Both _ex functions call one helper first: the internal
			// functions were inlined and this is something both run.
			name: "read and write share a callee",
			fns:  replace(opensslShape(), exFn("SSL_write_ex", callTo("_read_internal")), plainFn("SSL_write", callTo("_read_internal"))),
			want: []SSLSite{wantReadEntry, wantReadExEntry, wantWriteEntry, wantWriteExEntry, wantHandshake},
		},
		{
			name: "callee outside the executable segment",
			fns:  replace(opensslShape(), exFn("SSL_read_ex", callAddr(0x10)), plainFn("SSL_read", callAddr(0x10))),
			want: []SSLSite{wantWriteInternal, wantReadEntry, wantReadExEntry, wantHandshake},
		},
		{
			// LibreSSL: SSL_read_ex checks the length and calls SSL_read,
			// which then sees every byte; the callee is API, not internal.
			name: "SSL_read_ex calls SSL_read",
			fns: append(replace(opensslShape(),
				plainFn("SSL_read", callTo("_other")),
				sslFn{"SSL_read_ex", []any{xSubRSP8, xCmpRDX, xJS, callTo("SSL_read"), xAddRSP8, xRet}},
				exFn("SSL_write_ex", callTo("SSL_write"))), other),
			want: []SSLSite{wantReadEntry, wantWriteEntry, wantHandshake},
		},
		{
			name: "SSL_read calls SSL_read_ex",
			fns:  replace(opensslShape(), plainFn("SSL_read", callTo("SSL_read_ex"))),
			want: []SSLSite{wantReadInternal, wantWriteInternal, wantHandshake},
		},
		{
			// Neither can stand in for the other, so both keep a site.
			name: "SSL_read and SSL_read_ex call each other",
			fns:  replace(opensslShape(), plainFn("SSL_read", callTo("SSL_read_ex")), exFn("SSL_read_ex", callTo("SSL_read"))),
			want: []SSLSite{wantWriteInternal, wantReadEntry, wantReadExEntry, wantHandshake},
		},
		{
			name: "endbr64 entries",
			fns: []sslFn{
				{"SSL_read", append([]any{xEndbr64}, plainFn("", callTo("SSL_do_handshake")).code...)},
				{"SSL_write", []any{xEndbr64, xPushRBX, xXorEAX, xPopRBX, xRet}},
				{"SSL_do_handshake", append([]any{xEndbr64}, handshake.code...)},
			},
			want: []SSLSite{
				{SSLRead, CountReturn, "SSL_read", fnOff(0), "endbr64", false},
				{SSLWrite, CountReturn, "SSL_write", fnOff(1) + 4, "push rbx", true},
				{SSLHandshake, CountNone, "SSL_do_handshake", fnOff(2) + 4, "push rbx", true},
			},
		},
		{
			// What -fcf-protection makes of OpenSSL 3 (Ubuntu, Fedora).
			name: "endbr64 everywhere",
			fns: []sslFn{
				{"_read_internal", append([]any{xEndbr64}, readInternal.code...)},
				{"_write_internal", append([]any{xEndbr64}, writeInternal.code...)},
				{"SSL_read", append([]any{xEndbr64}, plainFn("", callTo("_read_internal")).code...)},
				{"SSL_read_ex", append([]any{xEndbr64}, exFn("", callTo("_read_internal")).code...)},
				{"SSL_write", append([]any{xEndbr64}, plainFn("", callTo("_write_internal")).code...)},
				{"SSL_write_ex", append([]any{xEndbr64}, exFn("", callTo("_write_internal")).code...)},
			},
			want: []SSLSite{
				{SSLRead, CountPointer, "SSL_read_ex's callee at 0x401000", fnOff(0) + 4, "push r13", true},
				{SSLWrite, CountPointer, "SSL_write_ex's callee at 0x401040", fnOff(1) + 4, "push r14", true},
			},
		},
		{
			name: "SSL_read and SSL_write at one address",
			fns:  []sslFn{{"SSL_read", []any{xPushRBX, xRet}}, {"SSL_write", []any{xPushRBX, xRet}}},
			edit: func(m map[string]sslFunc) { m["SSL_write"] = m["SSL_read"] },
			err:  "share the probe site",
		},
		{
			name: "first instruction does not decode",
			fns:  []sslFn{{"SSL_read", []any{[]byte{0x06}}}, {"SSL_write", []any{xPushRBX, xRet}}}, // PUSH ES is invalid in 64-bit mode
			err:  "first instruction does not decode",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			img, fns := assemble(t, fakeVaddr, fakeOff, c.fns...)
			if c.edit != nil {
				c.edit(fns)
			}
			got, err := placeSSL(img, fns)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("placeSSL = %v, %v; want error containing %q", got, err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("placeSSL =\n%s\nwant\n%s", formatSites(got), formatSites(c.want))
			}
		})
	}
}

func TestScanSSLFunc(t *testing.T) {
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	call := func(at, target uint64) []byte {
		return binary.LittleEndian.AppendUint32([]byte{0xe8}, uint32(target-(at+5)))
	}
	for _, c := range []struct {
		name     string
		code     []byte
		calls    []uint64
		forwards bool
	}{
		{"forwarder", cat(xSubRSP8, call(0x1004, 0x2000), xAddRSP8, xRet), []uint64{0x2000}, true},
		{"endbr64 forwarder", cat(xEndbr64, xSubRSP8, call(0x1008, 0x2000), xRet), []uint64{0x2000}, true},
		{"canary before the call", cat(xSubRSP18, xCanary, xXorEAX, call(0x1014, 0x900)), []uint64{0x900}, true},
		{"writes rcx", cat(xMovRCXRSP, call(0x1003, 0x2000)), []uint64{0x2000}, false},
		{"branch", cat(xTestEDX, xJS, call(0x1004, 0x2000), call(0x1009, 0x3000)), []uint64{0x2000, 0x3000}, false},
		{"stops at ret", cat(xRet, call(0x1001, 0x2000)), nil, false},
		{"stops at indirect call", cat(xCallInd, call(0x1006, 0x2000)), nil, false},
		{"stops at undecodable", cat([]byte{0x06}, call(0x1001, 0x2000)), nil, false},
		{"truncated call", []byte{0xe8, 0x00}, nil, false},
		{"empty", nil, nil, false},
	} {
		s := scanSSLFunc(c.code, 0x1000)
		if !reflect.DeepEqual(s.calls, c.calls) || s.forwards != c.forwards {
			t.Errorf("%s: scan = %#x forwards=%v, want %#x forwards=%v", c.name, s.calls, s.forwards, c.calls, c.forwards)
		}
	}
	// The scan is bounded by instruction count as well as by the bytes
	// it is given: a call after 32 NOPs is not seen.
	long := append(bytes.Repeat([]byte{0x90}, maxSSLScanInsts), call(0x1000+maxSSLScanInsts, 0x2000)...)
	if s := scanSSLFunc(long, 0x1000); len(s.calls) != 0 {
		t.Errorf("call after %d instructions found: %#x", maxSSLScanInsts, s.calls)
	}
}

func formatSites(sites []SSLSite) string {
	var b strings.Builder
	for _, s := range sites {
		fmt.Fprintf(&b, "\t%+v\n", s)
	}
	return b.String()
}

// siteKind is what must match between builds of the same OpenSSL: the
// offsets and names differ, the shape of the sites must not.
type siteKind struct {
	Op       SSLOp
	Count    SSLCount
	Mnemonic string
	Emulated bool
}

func kinds(sites []SSLSite) []siteKind {
	var out []siteKind
	for _, s := range sites {
		m, _, _ := strings.Cut(s.Inst, " ")
		out = append(out, siteKind{s.Op, s.Count, m, s.Emulated})
	}
	return out
}

// opensslKinds is what every build of OpenSSL 3.0 on x86-64 gives: the
// internal read and write functions, which begin with PUSH, and the
// handshake.
var opensslKinds = []siteKind{
	{SSLRead, CountPointer, "push", true},
	{SSLWrite, CountPointer, "push", true},
	{SSLHandshake, CountNone, "push", true},
}

// checkPush fails unless the bytes at off in the file at path decode to
// a PUSH of a register the kernel emulates.
func checkPush(t *testing.T, path string, off uint64) {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if off >= uint64(len(data)) {
		t.Fatalf("offset %#x beyond %d-byte %s", off, len(data), path)
	}
	in, err := x86asm.Decode(data[off:min(off+16, uint64(len(data)))], 64)
	if err != nil || in.Op != x86asm.PUSH || !Emulated(in) {
		t.Errorf("%s+%#x: % x decodes to %v (%v), want an emulated PUSH", filepath.Base(path), off, data[off:off+4], in, err)
	}
}

func TestSSLSitesSystemLibssl(t *testing.T) {
	if _, err := os.Stat(systemLibssl); err != nil {
		testutil.Unmet(t, "needs %s (libssl3): %v", systemLibssl, err)
	}
	sites, err := SSLSites(systemLibssl)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s:\n%s", systemLibssl, formatSites(sites))
	if got := kinds(sites); !reflect.DeepEqual(got, opensslKinds) {
		t.Fatalf("sites =\n%s\nwant kinds %v", formatSites(sites), opensslKinds)
	}
	entries := exportedOffsets(t, systemLibssl)
	for _, s := range sites[:2] {
		checkPush(t, systemLibssl, s.Offset)
		// The internal functions have no symbol in the packaged library.
		if !strings.Contains(s.Func, "_ex's callee at 0x") {
			t.Errorf("site %+v: Func does not name the callee", s)
		}
		if name, ok := entries[s.Offset]; ok {
			t.Errorf("site %+v is the entry of the exported %s, want an internal function", s, name)
		}
	}
	if s := sites[2]; entries[s.Offset] != "SSL_do_handshake" {
		t.Errorf("handshake site %+v is not the entry of SSL_do_handshake (%q)", s, entries[s.Offset])
	}
}

// exportedOffsets maps the file offsets of the functions in .dynsym to
// their names, read with debug/elf rather than our own parser.
func exportedOffsets(t *testing.T, path string) map[uint64]string {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.DynamicSymbols()
	if err != nil {
		t.Fatal(err)
	}
	out := make(map[uint64]string)
	for _, s := range syms {
		if elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Section != elf.SHN_UNDEF {
			out[fileOffset(t, f, s.Value)] = s.Name
		}
	}
	return out
}

// fileOffset maps a link-time address through the executable segments.
func fileOffset(t *testing.T, f *elf.File, addr uint64) uint64 {
	t.Helper()
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&elf.PF_X != 0 && addr >= p.Vaddr && addr-p.Vaddr < p.Filesz {
			return addr - p.Vaddr + p.Off
		}
	}
	t.Fatalf("address %#x is in no executable segment", addr)
	return 0
}

// symbolOffset returns the file offset of the function named name in
// .symtab, read with debug/elf.
func symbolOffset(t *testing.T, path, name string) uint64 {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range syms {
		if s.Name == name && elf.ST_TYPE(s.Info) == elf.STT_FUNC && s.Section != elf.SHN_UNDEF {
			return fileOffset(t, f, s.Value)
		}
	}
	t.Fatalf("%s: no function %s in .symtab", path, name)
	return 0
}

// sslProgram calls the OpenSSL functions sonde probes, so that linking it
// statically pulls them in. It declares them itself: the fixtures need the
// libraries, not the headers. It is never run.
const sslProgram = `typedef struct ssl_st SSL;
int SSL_read(SSL *, void *, int);
int SSL_write(SSL *, const void *, int);
int SSL_do_handshake(SSL *);

int main(int argc, char **argv)
{
	char buf[16];
	SSL *s = (SSL *)argv[0];
	if (argc > 5) {
		SSL_do_handshake(s);
		SSL_read(s, buf, sizeof buf);
		SSL_write(s, buf, sizeof buf);
	}
	return 0;
}
`

// gcc compiles src (C) into dir/name with args and returns the output path.
func gcc(t *testing.T, dir, name, src string, args ...string) string {
	t.Helper()
	srcPath := filepath.Join(dir, name+".c")
	if err := os.WriteFile(srcPath, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, name)
	cmd := exec.Command("gcc", append([]string{"-O2", "-o", out, srcPath}, args...)...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("gcc %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, b)
	}
	return out
}

func strip(t *testing.T, path string) string {
	t.Helper()
	out := path + ".stripped"
	if b, err := exec.Command("strip", "-o", out, path).CombinedOutput(); err != nil {
		t.Fatalf("strip %s: %v\n%s", path, err, b)
	}
	return out
}

// requireStaticOpenSSL requires gcc, strip and the static OpenSSL
// libraries (Debian: gcc, libssl-dev).
func requireStaticOpenSSL(t *testing.T) {
	t.Helper()
	testutil.RequireTool(t, "gcc")
	testutil.RequireTool(t, "strip")
	for _, lib := range []string{"libssl.a", "libcrypto.a"} {
		p := filepath.Join("/usr/lib/x86_64-linux-gnu", lib)
		if _, err := os.Stat(p); err != nil {
			testutil.Unmet(t, "needs %s (libssl-dev): %v", p, err)
		}
	}
}

// TestSSLSitesStaticOpenSSL links OpenSSL statically into executables of
// every layout and checks that the sites are the internal functions, as
// in the shared library, and that stripping loses them.
func TestSSLSitesStaticOpenSSL(t *testing.T) {
	requireStaticOpenSSL(t)
	var want []siteKind
	if shared, err := SSLSites(systemLibssl); err == nil {
		want = kinds(shared) // the same OpenSSL, built as a shared library
	} else {
		want = opensslKinds
	}
	static := []string{"-static", "-lssl", "-lcrypto", "-lpthread", "-ldl"}
	// Only OpenSSL static, libc dynamic: the executable has a .dynsym,
	// which holds no OpenSSL symbol unless -rdynamic exports them.
	partial := []string{"-Wl,-Bstatic", "-lssl", "-lcrypto", "-Wl,-Bdynamic"}
	for _, c := range []struct {
		name string
		args []string
		// exported: SSL_read is in .dynsym, so stripping .symtab
		// keeps the sites.
		exported bool
	}{
		{"static", static, false},
		{"static-pie", append([]string{"-static-pie"}, static[1:]...), false},
		{"pie", append([]string{"-pie", "-fPIE"}, partial...), false},
		{"no-pie", append([]string{"-no-pie"}, partial...), false},
		{"pie-rdynamic", append([]string{"-pie", "-fPIE", "-rdynamic"}, partial...), true},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			bin := gcc(t, dir, "prog", sslProgram, c.args...)
			sites, err := SSLSites(bin)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s:\n%s", c.name, formatSites(sites))
			if got := kinds(sites); !reflect.DeepEqual(got, want) {
				t.Fatalf("sites =\n%s\nwant kinds %v", formatSites(sites), want)
			}
			for i, name := range []string{"ssl_read_internal", "ssl_write_internal"} {
				s := sites[i]
				if s.Func != name {
					t.Errorf("site %+v: Func is not %s", s, name)
				}
				if off := symbolOffset(t, bin, name); s.Offset != off {
					t.Errorf("site %+v: offset is not %s's %#x", s, name, off)
				}
				checkPush(t, bin, s.Offset)
			}
			if off := symbolOffset(t, bin, "SSL_do_handshake"); sites[2].Offset != off {
				t.Errorf("handshake site %+v is not at SSL_do_handshake's %#x", sites[2], off)
			}

			stripped, err := SSLSites(strip(t, bin))
			if !c.exported {
				// Stripping removes .symtab, and nothing exports
				// SSL_read in .dynsym: no symbol says where OpenSSL is.
				if !errors.Is(err, ErrNoSSL) {
					t.Errorf("stripped: SSLSites = %v, %v; want ErrNoSSL", stripped, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("stripped: %v", err)
			}
			// strip moves no code, and -rdynamic exported the
			// internal functions too.
			if !reflect.DeepEqual(stripped, sites) {
				t.Errorf("stripped sites =\n%s\nwant\n%s", formatSites(stripped), formatSites(sites))
			}
		})
	}
}

// cetLibssl has OpenSSL 3.0's structure (SSL_read and SSL_read_ex call
// ssl_read_internal with the _ex signature) and is built with
// -fcf-protection, as Ubuntu and Fedora build libssl: every function that
// may be called from another file starts with ENDBR64.
const cetLibssl = `#include <stddef.h>
typedef struct ssl_st SSL;
extern int backend_read(SSL *, void *, size_t, size_t *);
extern int backend_write(SSL *, const void *, size_t, size_t *);
extern int backend_handshake(SSL *);
extern void note(SSL *, int);

__attribute__((noinline, visibility("hidden")))
int ssl_read_internal(SSL *s, void *buf, size_t num, size_t *readbytes)
{
	note(s, 1);
	int ret = backend_read(s, buf, num, readbytes);
	note(s, ret);
	return ret;
}

__attribute__((noinline, visibility("hidden")))
int ssl_write_internal(SSL *s, const void *buf, size_t num, size_t *written)
{
	note(s, 2);
	int ret = backend_write(s, buf, num, written);
	note(s, ret);
	return ret;
}

int SSL_read(SSL *s, void *buf, int num)
{
	size_t readbytes;
	if (num < 0)
		return -1;
	int ret = ssl_read_internal(s, buf, (size_t)num, &readbytes);
	return ret > 0 ? (int)readbytes : ret;
}

int SSL_read_ex(SSL *s, void *buf, size_t num, size_t *readbytes)
{
	int ret = ssl_read_internal(s, buf, num, readbytes);
	return ret < 0 ? 0 : ret;
}

int SSL_write(SSL *s, const void *buf, int num)
{
	size_t written;
	if (num < 0)
		return -1;
	int ret = ssl_write_internal(s, buf, (size_t)num, &written);
	return ret > 0 ? (int)written : ret;
}

int SSL_write_ex(SSL *s, const void *buf, size_t num, size_t *written)
{
	int ret = ssl_write_internal(s, buf, num, written);
	return ret < 0 ? 0 : ret;
}

int SSL_do_handshake(SSL *s)
{
	note(s, 3);
	int ret = backend_handshake(s);
	note(s, ret);
	return ret;
}
`

// TestSSLSitesCET checks the ENDBR64 rule on real compiler output: the
// sites are the PUSH right after each ENDBR64.
func TestSSLSitesCET(t *testing.T) {
	testutil.RequireTool(t, "gcc")
	testutil.RequireTool(t, "strip")
	dir := t.TempDir()
	lib := gcc(t, dir, "libfake.so", cetLibssl, "-fPIC", "-shared", "-fcf-protection=full")
	sites, err := SSLSites(lib)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s", formatSites(sites))
	if got := kinds(sites); !reflect.DeepEqual(got, opensslKinds) {
		t.Fatalf("sites =\n%s\nwant kinds %v", formatSites(sites), opensslKinds)
	}
	data, err := os.ReadFile(lib)
	if err != nil {
		t.Fatal(err)
	}
	for i, name := range []string{"ssl_read_internal", "ssl_write_internal", "SSL_do_handshake"} {
		s := sites[i]
		entry := symbolOffset(t, lib, name)
		if !bytes.HasPrefix(data[entry:], endbr64) {
			t.Fatalf("%s does not start with ENDBR64: % x (gcc without CET?)", name, data[entry:entry+4])
		}
		if s.Offset != entry+4 || s.Func != name {
			t.Errorf("site %+v, want %s at %#x+4", s, name, entry)
		}
		checkPush(t, lib, s.Offset)
	}

	// Stripped, the internal functions have no name but the same sites.
	stripped, err := SSLSites(strip(t, lib))
	if err != nil {
		t.Fatal(err)
	}
	for i := range stripped {
		if stripped[i].Offset != sites[i].Offset {
			t.Errorf("stripped site %+v, want offset %#x", stripped[i], sites[i].Offset)
		}
	}
	if !strings.HasPrefix(stripped[0].Func, "SSL_read_ex's callee at 0x") {
		t.Errorf("stripped read site is named %q", stripped[0].Func)
	}
}

func TestSSLSitesNoOpenSSL(t *testing.T) {
	testutil.RequireTool(t, "gcc")
	dir := t.TempDir()
	for _, lib := range []string{"libssl.so", "libcrypto.so"} {
		if _, err := os.Stat(filepath.Join("/usr/lib/x86_64-linux-gnu", lib)); err != nil {
			testutil.Unmet(t, "needs %s (libssl-dev): %v", lib, err)
		}
	}
	// A program that links against libssl.so has SSL_read in .dynsym,
	// but undefined.
	dyn := gcc(t, dir, "dynamic", sslProgram, "-lssl", "-lcrypto")
	if sites, err := SSLSites(dyn); !errors.Is(err, ErrNoSSL) {
		t.Errorf("dynamically linked program: SSLSites = %v, %v; want ErrNoSSL", sites, err)
	}
	// Our own test binary: a Go program without OpenSSL.
	if sites, err := SSLSites(os.Args[0]); !errors.Is(err, ErrNoSSL) {
		t.Errorf("Go test binary: SSLSites = %v, %v; want ErrNoSSL", sites, err)
	}
}

func TestSSLSitesRejects(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var fe *FormatError
	for _, c := range []struct{ name, path string }{
		{"script", write("script", []byte("#!/bin/sh\necho hi\n"))},
		{"empty", write("empty", nil)},
		{"tiny truncated", write("tiny", tinySSLELF(t, tinyDynsym)[:300])},
	} {
		if sites, err := SSLSites(c.path); !errors.As(err, &fe) {
			t.Errorf("%s: SSLSites = %v, %v; want *FormatError", c.name, sites, err)
		}
	}
	if _, err := SSLSites(filepath.Join(dir, "missing")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: error %v, want os.ErrNotExist", err)
	}
	if _, err := InspectSSL(bytes.NewReader(nil), -1); !errors.As(err, &fe) {
		t.Errorf("negative size: error %v, want *FormatError", err)
	}

	data, err := os.ReadFile(systemLibssl)
	if err != nil {
		testutil.Unmet(t, "needs %s (libssl3): %v", systemLibssl, err)
	}
	// Cut at the end of .text: the section headers at the end are gone.
	for _, n := range []int{len(data) / 2, len(data) - 1, 4096} {
		if sites, err := InspectSSL(bytes.NewReader(data[:n]), int64(n)); !errors.As(err, &fe) {
			t.Errorf("libssl truncated to %d bytes: InspectSSL = %v, %v; want *FormatError", n, sites, err)
		}
	}
	// The section headers intact but the code zeroed: 00 00 decodes as
	// ADD [RAX], AL and calls nothing, so every exported function gets
	// its own entry site, single-stepped.
	zeroed := bytes.Clone(data)
	f, err := elf.NewFile(bytes.NewReader(zeroed))
	if err != nil {
		t.Fatal(err)
	}
	text := f.Section(".text")
	clear(zeroed[text.Offset : text.Offset+text.Size])
	sites, err := InspectSSL(bytes.NewReader(zeroed), int64(len(zeroed)))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range sites {
		if s.Emulated || s.Inst != "add byte ptr [rax], al" {
			t.Errorf("zeroed libssl: site %+v", s)
		}
	}
}

// tinySym is a symbol of a tiny ELF.
type tinySym struct {
	name   string
	index  int // function index in the image
	bind   elf.SymBind
	versym uint16 // .gnu.version entry (dynsym only); 0x8000 hides it
}

type tinyLayout struct {
	typ  elf.SectionType // SHT_DYNSYM or SHT_SYMTAB; 0 for none
	syms []tinySym
}

var (
	tinyAPI = []tinySym{
		{"SSL_read", 2, elf.STB_GLOBAL, 2},
		{"SSL_read_ex", 3, elf.STB_GLOBAL, 2},
		{"SSL_write", 4, elf.STB_GLOBAL, 2},
		{"SSL_write_ex", 5, elf.STB_GLOBAL, 2},
		{"SSL_do_handshake", 6, elf.STB_GLOBAL, 2},
	}
	tinyDynsym = tinyLayout{elf.SHT_DYNSYM, tinyAPI}
	// An unstripped static executable's view: the internal functions
	// have (local) symbols, and one versioned name.
	tinySymtab = tinyLayout{elf.SHT_SYMTAB, append([]tinySym{
		{"ssl_read_internal", 0, elf.STB_LOCAL, 0},
		{"ssl_write_internal", 1, elf.STB_LOCAL, 0},
		{"SSL_read@@OPENSSL_3.0.0", 2, elf.STB_GLOBAL, 0},
		// An old version elsewhere must not win over the default.
		{"SSL_write@OPENSSL_1.0.0", 6, elf.STB_GLOBAL, 0},
	}, tinyAPI[1:]...)}
	// .dynsym with a hidden (non-default) SSL_write at the handshake.
	tinyVersioned = tinyLayout{elf.SHT_DYNSYM, append([]tinySym{
		{"SSL_write", 6, elf.STB_GLOBAL, 0x8003},
	}, tinyAPI...)}
	tinyNoSymbols = tinyLayout{}
)

const (
	tinyBase    = 0x400000
	tinyTextOff = 0x100
)

// tinySSLELF builds a small x86-64 ELF holding the OpenSSL-shaped code of
// opensslShape at file offset 0x100 and the given symbol table: a few KB
// where libssl.so is 700 KB, which keeps fuzz seeds small.
func tinySSLELF(t testing.TB, l tinyLayout) []byte {
	img, _ := assemble(t, tinyBase+tinyTextOff, tinyTextOff, opensslShape()...)
	le := binary.LittleEndian
	buf := make([]byte, tinyTextOff)
	buf = append(buf, img.text...)
	align := func() {
		for len(buf)%8 != 0 {
			buf = append(buf, 0)
		}
	}

	type sh struct {
		name            string
		typ             elf.SectionType
		flags           elf.SectionFlag
		addr, off, size uint64
		link, info      uint32
		align, entsize  uint64
	}
	secs := []sh{{}, {name: ".text", typ: elf.SHT_PROGBITS, flags: elf.SHF_ALLOC | elf.SHF_EXECINSTR, addr: tinyBase + tinyTextOff, off: tinyTextOff, size: uint64(len(img.text)), align: 16}}
	if l.typ != 0 {
		strtab := []byte{0}
		syms := make([]byte, 24) // the null symbol
		versym := []byte{0, 0}
		for _, s := range l.syms {
			e := make([]byte, 24)
			le.PutUint32(e[0:], uint32(len(strtab)))
			e[4] = byte(s.bind)<<4 | byte(elf.STT_FUNC)
			le.PutUint16(e[6:], 1) // .text
			le.PutUint64(e[8:], fnAddrIn(tinyBase+tinyTextOff, s.index))
			le.PutUint64(e[16:], fakeAlign)
			syms = append(syms, e...)
			strtab = append(append(strtab, s.name...), 0)
			versym = le.AppendUint16(versym, s.versym)
		}
		symName, strName := ".symtab", ".strtab"
		if l.typ == elf.SHT_DYNSYM {
			symName, strName = ".dynsym", ".dynstr"
		}
		align()
		symOff := len(buf)
		buf = append(buf, syms...)
		strOff := len(buf)
		buf = append(buf, strtab...)
		n := uint32(len(secs))
		secs = append(secs,
			sh{name: symName, typ: l.typ, off: uint64(symOff), size: uint64(len(syms)), link: n + 1, info: 1, align: 8, entsize: 24},
			sh{name: strName, typ: elf.SHT_STRTAB, off: uint64(strOff), size: uint64(len(strtab)), align: 1})
		if l.typ == elf.SHT_DYNSYM {
			align()
			vsOff := len(buf)
			buf = append(buf, versym...)
			secs = append(secs, sh{name: ".gnu.version", typ: elf.SHT_GNU_VERSYM, off: uint64(vsOff), size: uint64(len(versym)), link: n, align: 2, entsize: 2})
		}
	}
	shstr := []byte{0}
	nameOff := make([]uint32, len(secs)+1)
	for i, s := range append(secs, sh{name: ".shstrtab"}) {
		if i > 0 {
			nameOff[i] = uint32(len(shstr))
			shstr = append(append(shstr, s.name...), 0)
		}
	}
	shstrOff := len(buf)
	buf = append(buf, shstr...)
	secs = append(secs, sh{name: ".shstrtab", typ: elf.SHT_STRTAB, off: uint64(shstrOff), size: uint64(len(shstr)), align: 1})
	align()
	shOff := len(buf)
	for i, s := range secs {
		h := make([]byte, 64)
		le.PutUint32(h[0:], nameOff[i])
		le.PutUint32(h[4:], uint32(s.typ))
		le.PutUint64(h[8:], uint64(s.flags))
		le.PutUint64(h[16:], s.addr)
		le.PutUint64(h[24:], s.off)
		le.PutUint64(h[32:], s.size)
		le.PutUint32(h[40:], s.link)
		le.PutUint32(h[44:], s.info)
		le.PutUint64(h[48:], s.align)
		le.PutUint64(h[56:], s.entsize)
		buf = append(buf, h...)
	}

	copy(buf, "\x7fELF\x02\x01\x01")
	le.PutUint16(buf[16:], uint16(elf.ET_DYN))
	le.PutUint16(buf[18:], uint16(elf.EM_X86_64))
	le.PutUint32(buf[20:], 1)
	le.PutUint64(buf[32:], 64) // phoff
	le.PutUint64(buf[40:], uint64(shOff))
	le.PutUint16(buf[52:], 64) // ehsize
	le.PutUint16(buf[54:], 56) // phentsize
	le.PutUint16(buf[56:], 1)  // phnum
	le.PutUint16(buf[58:], 64) // shentsize
	le.PutUint16(buf[60:], uint16(len(secs)))
	le.PutUint16(buf[62:], uint16(len(secs)-1))
	ph := buf[64:]
	le.PutUint32(ph[0:], uint32(elf.PT_LOAD))
	le.PutUint32(ph[4:], uint32(elf.PF_R|elf.PF_X))
	le.PutUint64(ph[8:], 0) // offset
	le.PutUint64(ph[16:], tinyBase)
	le.PutUint64(ph[24:], tinyBase)
	le.PutUint64(ph[32:], uint64(len(buf)))
	le.PutUint64(ph[40:], uint64(len(buf)))
	le.PutUint64(ph[48:], 0x1000)
	return buf
}

func fnAddrIn(base uint64, i int) uint64 { return base + uint64(i)*fakeAlign }

func TestTinySSLELF(t *testing.T) {
	fileOff := func(i int) uint64 { return tinyTextOff + uint64(i)*fakeAlign }
	internals := []SSLSite{
		{SSLRead, CountPointer, "SSL_read_ex's callee at 0x400100", fileOff(0), "push r13", true},
		{SSLWrite, CountPointer, "SSL_write_ex's callee at 0x400140", fileOff(1), "push r14", true},
		{SSLHandshake, CountNone, "SSL_do_handshake", fileOff(6), "push rbx", true},
	}
	withNames := []SSLSite{internals[0], internals[1], internals[2]}
	withNames[0].Func, withNames[1].Func = "ssl_read_internal", "ssl_write_internal"
	for _, c := range []struct {
		name string
		l    tinyLayout
		want []SSLSite
	}{
		{"dynsym", tinyDynsym, internals},
		{"symtab", tinySymtab, withNames},
		{"hidden version", tinyVersioned, internals},
	} {
		data := tinySSLELF(t, c.l)
		got, err := InspectSSL(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("%s: sites =\n%s\nwant\n%s", c.name, formatSites(got), formatSites(c.want))
		}
	}
	data := tinySSLELF(t, tinyNoSymbols)
	if sites, err := InspectSSL(bytes.NewReader(data), int64(len(data))); !errors.Is(err, ErrNoSSL) {
		t.Errorf("no symbols: InspectSSL = %v, %v; want ErrNoSSL", sites, err)
	}
}

// sslSeeds are the committed seeds of FuzzSSLSites: the tiny ELFs and
// targeted corruptions of them.
func sslSeeds(t testing.TB) map[string][]byte {
	dyn := tinySSLELF(t, tinyDynsym)
	le := binary.LittleEndian
	shOff := int(le.Uint64(dyn[40:]))
	// Section headers: 0 null, 1 .text, 2 .dynsym, 3 .dynstr, 4 .gnu.version, 5 .shstrtab.
	corrupt := func(at int, b ...byte) []byte {
		c := bytes.Clone(dyn)
		copy(c[at:], b)
		return c
	}
	dynsymOff := int(le.Uint64(dyn[shOff+2*64+24:]))
	ff := bytes.Repeat([]byte{0xff}, 7)
	return map[string][]byte{
		"tiny-dynsym":          dyn,
		"tiny-symtab":          tinySSLELF(t, tinySymtab),
		"tiny-versioned":       tinySSLELF(t, tinyVersioned),
		"tiny-no-symbols":      tinySSLELF(t, tinyNoSymbols),
		"truncated-shdrs":      dyn[:shOff+3*64],
		"dynsym-huge":          corrupt(shOff+2*64+32, append(ff, 0x7f)...),
		"dynsym-bad-link":      corrupt(shOff+2*64+40, 0x63),
		"dynstr-nobits":        corrupt(shOff+3*64+4, byte(elf.SHT_NOBITS)),
		"versym-huge":          corrupt(shOff+4*64+32, append(ff, 0x7f)...),
		"phdr-huge-filesz":     corrupt(64+32, append(ff, 0xff)...),
		"phdr-offset-wraps":    corrupt(64+8, append(ff, 0xff)...),
		"ssl-read-past-eof":    corrupt(dynsymOff+24+8, 0x00, 0x00, 0x50),
		"ssl-read-ex-to-data":  corrupt(tinyTextOff+3*fakeAlign+5, 0x00, 0x00, 0x00, 0x80),
		"internal-undecodable": corrupt(tinyTextOff, 0x06),
	}
}

// TestSSLSeedCorpus writes (with -update-seeds) or checks the committed
// seeds of FuzzSSLSites, and runs the fuzz body on each.
func TestSSLSeedCorpus(t *testing.T) {
	dir := filepath.Join("testdata", "fuzz", "FuzzSSLSites")
	for name, data := range sslSeeds(t) {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		if len(content) > 64<<10 {
			t.Errorf("seed %s is %d bytes, keep seeds under 64 KiB", name, len(content))
		}
		path := filepath.Join(dir, name)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		} else if got, err := os.ReadFile(path); err != nil || string(got) != content {
			t.Errorf("seed %s is missing or stale: run go test ./offsets -run TestSSLSeedCorpus -update-seeds (%v)", path, err)
		}
		t.Run(name, func(t *testing.T) { fuzzSSLBody(t, data) })
	}
}

// FuzzSSLSites feeds arbitrary files to InspectSSL: it must not panic,
// must fail only with *FormatError or ErrNoSSL, and every site it returns
// must lie in the file on the instruction it names.
func FuzzSSLSites(f *testing.F) {
	for _, data := range sslSeeds(f) {
		f.Add(data)
	}
	f.Fuzz(fuzzSSLBody)
}

func fuzzSSLBody(t *testing.T, data []byte) {
	sites, err := InspectSSL(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		var fe *FormatError
		if !errors.As(err, &fe) && !errors.Is(err, ErrNoSSL) {
			t.Fatalf("error %T %v is neither *FormatError nor ErrNoSSL", err, err)
		}
		return
	}
	for i, s := range sites {
		if i > 0 && s.Offset <= sites[i-1].Offset {
			t.Fatalf("sites not sorted and unique: %+v", sites)
		}
		if s.Offset >= uint64(len(data)) {
			t.Fatalf("site %+v beyond the %d-byte file", s, len(data))
		}
		if s.Op < SSLRead || s.Op > SSLHandshake || s.Count < CountReturn || s.Count > CountNone ||
			(s.Op == SSLHandshake) != (s.Count == CountNone) {
			t.Fatalf("site %+v: bad op or count", s)
		}
		code := data[s.Offset:min(s.Offset+16, uint64(len(data)))]
		if s.Inst == "endbr64" {
			if !bytes.HasPrefix(code, endbr64) || s.Emulated {
				t.Fatalf("site %+v: % x", s, code)
			}
			continue
		}
		in, err := decode(code)
		if err != nil || Emulated(in) != s.Emulated {
			t.Fatalf("site %+v: % x decodes to %v (%v)", s, code, in, err)
		}
	}
}
