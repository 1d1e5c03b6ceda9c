package offsets

import (
	"bytes"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// tinyCode is a Go-shaped function: stack check, PUSH RBP, frame, RET.
var tinyCode = []byte{
	0x49, 0x3b, 0x66, 0x10, // cmp rsp, [r14+0x10]
	0x76, 0x0c, // jbe +12
	0x55,             // push rbp
	0x48, 0x89, 0xe5, // mov rbp, rsp
	0x48, 0x83, 0xec, 0x10, // sub rsp, 0x10
	0x48, 0x83, 0xc4, 0x10, // add rsp, 0x10
	0x5d, // pop rbp
	0xc3, // ret
}

// tinyELF builds a minimal x86-64 ELF that Inspect accepts: Go build info
// in .go.buildinfo and one function in .symtab. It is a few hundred bytes,
// where the smallest real Go binary is over a megabyte, which keeps fuzz
// seeds small and lets the fuzzer reach the interesting parsers quickly.
func tinyELF() []byte {
	const (
		base    = 0x400000
		textOff = 0x100
		infoOff = 0x140
		symOff  = 0x200
	)
	buf := make([]byte, symOff)
	le := binary.LittleEndian

	copy(buf[textOff:], tinyCode)

	info := []byte("\xff Go buildinf:\x08\x02")
	info = append(info, make([]byte, 32-len(info))...)
	ver := "go1.26.11"
	mod := "0123456789abcdef" + "path\tcmd/tiny\nmod\ttiny\t(devel)\t\n" + "fedcba9876543210"
	info = append(info, byte(len(ver)))
	info = append(info, ver...)
	info = binary.AppendUvarint(info, uint64(len(mod)))
	info = append(info, mod...)
	copy(buf[infoOff:], info)

	strtab := []byte("\x00main.f\x00")
	shstr := []byte("\x00.text\x00.go.buildinfo\x00.symtab\x00.strtab\x00.shstrtab\x00")
	sym := make([]byte, 48) // null symbol, then main.f
	le.PutUint32(sym[24:], 1)
	sym[24+4] = 0x12 // STB_GLOBAL, STT_FUNC
	le.PutUint16(sym[24+6:], 1)
	le.PutUint64(sym[24+8:], base+textOff)
	le.PutUint64(sym[24+16:], uint64(len(tinyCode)))
	buf = append(buf, sym...)
	strOff := len(buf)
	buf = append(buf, strtab...)
	shstrOff := len(buf)
	buf = append(buf, shstr...)
	for len(buf)%8 != 0 {
		buf = append(buf, 0)
	}
	shOff := len(buf)

	type sh struct {
		name, typ        uint32
		flags, addr, off uint64
		size             uint64
		link, info       uint32
		align, entsize   uint64
	}
	secs := []sh{
		{},
		{name: 1, typ: 1, flags: 6, addr: base + textOff, off: textOff, size: uint64(len(tinyCode)), align: 16},
		{name: 7, typ: 1, flags: 3, addr: base + infoOff, off: infoOff, size: uint64(len(info)), align: 16},
		{name: 21, typ: 2, off: symOff, size: 48, link: 4, info: 1, align: 8, entsize: 24},
		{name: 29, typ: 3, off: uint64(strOff), size: uint64(len(strtab)), align: 1},
		{name: 37, typ: 3, off: uint64(shstrOff), size: uint64(len(shstr)), align: 1},
	}
	for _, s := range secs {
		h := make([]byte, 64)
		le.PutUint32(h[0:], s.name)
		le.PutUint32(h[4:], s.typ)
		le.PutUint64(h[8:], s.flags)
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
	le.PutUint16(buf[16:], 2)  // ET_EXEC
	le.PutUint16(buf[18:], 62) // EM_X86_64
	le.PutUint32(buf[20:], 1)
	le.PutUint64(buf[24:], base+textOff)
	le.PutUint64(buf[32:], 64) // phoff
	le.PutUint64(buf[40:], uint64(shOff))
	le.PutUint16(buf[52:], 64) // ehsize
	le.PutUint16(buf[54:], 56) // phentsize
	le.PutUint16(buf[56:], 1)  // phnum
	le.PutUint16(buf[58:], 64) // shentsize
	le.PutUint16(buf[60:], uint16(len(secs)))
	le.PutUint16(buf[62:], uint16(len(secs)-1))

	ph := buf[64:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 5) // R+X
	le.PutUint64(ph[16:], base)
	le.PutUint64(ph[24:], base)
	le.PutUint64(ph[32:], uint64(len(buf)))
	le.PutUint64(ph[40:], uint64(len(buf)))
	le.PutUint64(ph[48:], 0x1000)
	return buf
}

func TestTinyELF(t *testing.T) {
	b, err := Inspect(bytes.NewReader(tinyELF()), int64(len(tinyELF())))
	if err != nil {
		t.Fatal(err)
	}
	if b.GoVersion() != "go1.26.11" || b.BuildInfo().Main.Path != "tiny" {
		t.Errorf("build info = %s %s", b.GoVersion(), b.BuildInfo().Main.Path)
	}
	fn, err := b.Func("main.f")
	if err != nil {
		t.Fatal(err)
	}
	if fn.Offset != 0x100 || fn.Source != FromSymtab {
		t.Errorf("Func = %+v, want offset 0x100 from symtab", fn)
	}
	off, inst, err := b.ProbeSite(fn)
	if err != nil || off != 0x106 || inst != "push rbp" {
		t.Errorf("ProbeSite = %#x %q %v, want 0x106 push rbp", off, inst, err)
	}
	rets, err := b.ReturnSites(fn)
	if err != nil || len(rets) != 1 || rets[0] != 0x100+uint64(len(tinyCode))-1 {
		t.Errorf("ReturnSites = %v %v", rets, err)
	}
	if _, err := b.FieldOffset("runtime.g", "goid"); !errors.Is(err, ErrNoDWARF) {
		t.Errorf("FieldOffset error = %v, want ErrNoDWARF", err)
	}
	// No .gopclntab: the fallback must fail cleanly.
	var fe *FormatError
	if _, err := b.funcPclntab("main.f"); !errors.As(err, &fe) {
		t.Errorf("pclntab lookup error = %v, want *FormatError", err)
	}
}

func TestInspectRejects(t *testing.T) {
	elf := tinyELF()
	for _, c := range []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"not ELF", []byte("#!/bin/sh\necho hi\n")},
		{"truncated header", elf[:40]},
		{"truncated sections", elf[:len(elf)-100]},
	} {
		if _, err := Inspect(bytes.NewReader(c.data), int64(len(c.data))); err == nil {
			t.Errorf("%s: Inspect succeeded", c.name)
		}
	}
	noInfo := bytes.Clone(elf)
	copy(noInfo[0x140:], "XXXX")
	if _, err := Inspect(bytes.NewReader(noInfo), int64(len(noInfo))); !errors.Is(err, ErrNotGo) {
		t.Errorf("no build info: error = %v, want ErrNotGo", err)
	}
}

// FuzzInspect feeds arbitrary files through every method: none may panic,
// and reads are bounded by the section limits.
func FuzzInspect(f *testing.F) {
	elf := tinyELF()
	f.Add(elf)
	f.Add(elf[:len(elf)/2])
	f.Fuzz(fuzzInspectBody)
}

func fuzzInspectBody(t *testing.T, data []byte) {
	b, err := Inspect(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		return
	}
	_ = b.GoVersion()
	b.Module("golang.org/x/net")
	for _, name := range []string{"main.f", "net/http.serverHandler.ServeHTTP"} {
		fn, err := b.Func(name)
		if err != nil {
			continue
		}
		if fn.Offset >= uint64(len(data)) {
			t.Fatalf("Func(%s).Offset %#x beyond %d-byte file", name, fn.Offset, len(data))
		}
		if off, _, err := b.ProbeSite(fn); err == nil && off >= uint64(len(data)) {
			t.Fatalf("ProbeSite offset %#x beyond file", off)
		}
		b.ReturnSites(fn)
	}
	b.funcPclntab("main.f")
	b.FieldOffset("runtime.g", "goid")
}

// FuzzProbeSite checks that a chosen site is inside the code, decodes to
// the instruction returned, and is one the kernel emulates.
func FuzzProbeSite(f *testing.F) {
	f.Add(tinyCode)
	f.Add([]byte{0x4c, 0x8d, 0xa4, 0x24, 0xf8, 0xfe, 0xff, 0xff, 0x4d, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0xaa, 0, 0, 0, 0x55})
	f.Fuzz(func(t *testing.T, code []byte) {
		off, in, err := probeSite(code)
		if err == nil {
			if off < 0 || off >= len(code) || !Emulated(in) {
				t.Fatalf("probeSite = %d %v on % x", off, in, code)
			}
			again, derr := decode(code[off:])
			if derr != nil || again != in {
				t.Fatalf("site %d decodes to %v (%v), reported %v", off, again, derr, in)
			}
		}
		rets, err := returnSites(code)
		if err == nil {
			for _, r := range rets {
				if r >= uint64(len(code)) || (code[r] != 0xc3 && code[r] != 0xc2) {
					// A RET with a prefix (e.g. F3 C3) starts with the prefix.
					if in, _ := decode(code[r:]); in.Op.String() != "RET" {
						t.Fatalf("return site %d is not a RET", r)
					}
				}
			}
		}
	})
}

var updateSeeds = flag.Bool("update-seeds", false, "rewrite the committed fuzz seed corpus under testdata/fuzz")

// TestSeedCorpus writes (with -update-seeds) or checks the committed seeds:
// the tiny ELF with a few targeted corruptions, in the Go corpus format.
func TestSeedCorpus(t *testing.T) {
	elf := tinyELF()
	corrupt := func(at int, b ...byte) []byte {
		c := bytes.Clone(elf)
		copy(c[at:], b)
		return c
	}
	le := binary.LittleEndian
	shOff := int(le.Uint64(elf[40:]))
	seeds := map[string][]byte{
		"tiny":             elf,
		"truncated-shdrs":  elf[:shOff+64*3],
		"huge-symtab":      corrupt(shOff+3*64+32, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f),
		"symtab-bad-link":  corrupt(shOff+3*64+40, 0x63),
		"phdr-huge-filesz": corrupt(64+32, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff),
		"func-past-eof":    corrupt(0x200+24+8, 0x00, 0x00, 0x50),
		"buildinfo-badlen": corrupt(0x140+32, 0xff),
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzInspect")
	for name, data := range seeds {
		content := fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)
		path := filepath.Join(dir, name)
		if *updateSeeds {
			if err := os.MkdirAll(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil || string(got) != content {
			t.Errorf("seed %s is missing or stale: run go test ./offsets -run TestSeedCorpus -update-seeds (%v)", path, err)
		}
		// Whatever Inspect makes of the seed, it must not panic.
		if b, err := Inspect(bytes.NewReader(data), int64(len(data))); err == nil {
			if fn, err := b.Func("main.f"); err == nil {
				b.ProbeSite(fn)
				b.ReturnSites(fn)
			}
		}
	}
}

func TestSectionLimits(t *testing.T) {
	elf := tinyELF()
	shOff := int(binary.LittleEndian.Uint64(elf[40:]))
	huge := bytes.Clone(elf)
	// .symtab claims 2^63-1 bytes: the lookup must refuse, not allocate.
	binary.LittleEndian.PutUint64(huge[shOff+3*64+32:], 1<<63-1)
	b, err := Inspect(bytes.NewReader(huge), int64(len(huge)))
	if err != nil {
		t.Fatal(err)
	}
	var fe *FormatError
	if _, err := b.Func("main.f"); !errors.As(err, &fe) {
		t.Errorf("Func with oversized .symtab: %v, want *FormatError", err)
	}
}
