package offsets

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"golang.org/x/arch/x86/x86asm"
)

// SSLOp is what an OpenSSL probe site observes.
type SSLOp uint8

const (
	SSLRead      SSLOp = iota + 1 // plaintext read into buf
	SSLWrite                      // plaintext written from buf
	SSLHandshake                  // SSL_do_handshake: no plaintext; its nested syscalls tie the SSL to its socket
)

func (o SSLOp) String() string {
	switch o {
	case SSLRead:
		return "read"
	case SSLWrite:
		return "write"
	case SSLHandshake:
		return "handshake"
	}
	return fmt.Sprintf("SSLOp(%d)", uint8(o))
}

// SSLCount says where a site's function returns the byte count.
type SSLCount uint8

const (
	CountReturn  SSLCount = iota + 1 // the return value is the count (SSL_read, SSL_write)
	CountPointer                     // returns >0 on success and stores the count through the 4th argument (the _ex functions and ssl_read_internal/ssl_write_internal)
	CountNone                        // SSLHandshake
)

func (c SSLCount) String() string {
	switch c {
	case CountReturn:
		return "return"
	case CountPointer:
		return "pointer"
	case CountNone:
		return "none"
	}
	return fmt.Sprintf("SSLCount(%d)", uint8(c))
}

// SSLSite is one place to attach an entry uprobe and a uretprobe (on the
// same address) in an OpenSSL-compatible library. The site is always a
// function entry, or the instruction right after an ENDBR64 that starts
// one: nothing before it has moved RSP, so [RSP] holds the return address
// the kernel hijacks for the uretprobe, and the argument registers are
// those of the call.
type SSLSite struct {
	Op    SSLOp
	Count SSLCount
	// Func is what is probed: "SSL_read_ex", the symbol of an internal
	// function when the binary has one (e.g. "ssl_read_internal" in an
	// unstripped static executable), or else a description such as
	// "SSL_read_ex's callee at 0x352d0" (a link-time address).
	Func string
	// Offset is the file offset for the uprobe: what
	// link.Executable.Uprobe's UprobeOptions.Address wants.
	Offset uint64
	// Inst is the instruction at Offset in Intel syntax.
	Inst string
	// Emulated says the kernel emulates that instruction (about 0.6 µs
	// per hit) rather than single-stepping it (about 17 µs).
	Emulated bool
}

// ErrNoSSL is returned for an ELF file that does not define both SSL_read
// and SSL_write, in .dynsym or .symtab: a program that merely links
// against libssl.so, a library that is not OpenSSL, or a static executable
// whose symbols were stripped.
var ErrNoSSL = errors.New("no OpenSSL API")

// Limits of the placement rules. An exported wrapper such as SSL_read is a
// dozen instructions up to its call of the internal function; 32
// instructions or 160 bytes cover that with room to spare while keeping a
// crafted function from being decoded at length.
const (
	maxSSLScanInsts = 32
	maxSSLScanBytes = 160
	// maxSymName bounds the scan for a symbol name's terminating NUL, so
	// that a string table without one costs linear, not quadratic, time.
	maxSymName = 512
)

// endbr64 (F3 0F 1E FA) starts every externally visible function in code
// built with -fcf-protection (Ubuntu, Fedora). x86asm does not know it.
var endbr64 = []byte{0xf3, 0x0f, 0x1e, 0xfa}

// The API functions the placement rules look up.
var sslAPI = map[string]bool{
	"SSL_read": true, "SSL_read_ex": true,
	"SSL_write": true, "SSL_write_ex": true,
	"SSL_do_handshake": true,
}

// sslOps pairs each plaintext operation with its two exported functions.
var sslOps = []struct {
	op        SSLOp
	plain, ex string
}{
	{SSLRead, "SSL_read", "SSL_read_ex"},
	{SSLWrite, "SSL_write", "SSL_write_ex"},
}

// SSLSites returns the probe sites for the shared library (libssl.so.*) or
// executable (OpenSSL or BoringSSL linked statically) at path, sorted by
// Offset. An ELF file that does not define SSL_read and SSL_write returns
// an error wrapping ErrNoSSL; a malformed one returns a *FormatError.
//
// The sites are placed so that every plaintext byte is reported once, at
// an instruction the kernel emulates where possible. For each operation
// (read: SSL_read and SSL_read_ex; write: SSL_write and SSL_write_ex):
//
//  1. The exported function is decoded from its entry (at most 32
//     instructions or 160 bytes, stopping at a RET, JMP, indirect CALL or
//     undecodable byte) up to its first CALL rel32. If the _ex function
//     exists, passes its four arguments to that call untouched (nothing
//     before it branches or writes RDI, RSI, RDX or RCX), and the callee
//     is no exported SSL_* function and starts with an emulated
//     instruction (or ENDBR64 and then one), the callee is the internal
//     function with the _ex signature: ssl_read_internal(SSL *, void *buf,
//     size_t num, size_t *readbytes) in OpenSSL 1.1.1 and 3.x, which
//     begins with PUSH. Its entry becomes the site of the _ex function,
//     with CountPointer, and also of SSL_read when SSL_read's own first
//     CALL rel32 goes to the same address (SSL_read passes a pointer to
//     a local as the fourth argument). A site there is emulated where
//     the exported entries (SUB RSP) are single-stepped, and it also sees
//     reads made through an SSL BIO, which calls the internal function
//     directly. If the read and write callees are the same function, it
//     is neither (a helper both call first when the internal functions
//     were inlined) and is not used.
//  2. Otherwise the site is the exported function's own entry, with
//     CountReturn for SSL_read and SSL_write and CountPointer for the _ex
//     functions, and Emulated false when the kernel single-steps it. An
//     entry that is ENDBR64 followed by an emulated instruction gets its
//     site on the latter: ENDBR64 changes no register, so the probe sees
//     the same arguments and return address, and is emulated. An exported
//     function left to this rule whose first CALL rel32 goes straight to
//     its sibling (LibreSSL's SSL_read_ex calls SSL_read) gets no site of
//     its own, as its sibling's site sees the same bytes; a call through
//     the PLT is not followed.
//  3. Sites are deduplicated by Offset: SSL_read and SSL_read_ex sharing
//     the internal function give one site. Two different operations on one
//     site are an error.
//  4. SSL_do_handshake, when defined, gets a site at its entry, placed as
//     in rule 2, with SSLHandshake and CountNone.
//
// Only SSL_read and SSL_write are required; SSL_read_ex, SSL_write_ex
// (absent before OpenSSL 1.1.1 and in BoringSSL) and SSL_do_handshake are
// used when defined. Symbols come from .dynsym and .symtab; only defined
// functions count, and only the default version of a versioned one.
func SSLSites(path string) ([]SSLSite, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open binary: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat binary: %w", err)
	}
	return InspectSSL(f, st.Size())
}

// InspectSSL is SSLSites on the ELF file of the given size in r.
func InspectSSL(r io.ReaderAt, size int64) ([]SSLSite, error) {
	if size < 0 {
		return nil, &FormatError{Op: "inspect", Err: fmt.Errorf("negative size %d", size)}
	}
	sr := io.NewSectionReader(r, 0, size)
	if err := checkELFLayout(sr, size); err != nil {
		return nil, &FormatError{Op: "parse ELF header", Err: err}
	}
	// Binary's bounded section and code readers need no build info, so
	// a libssl without any can borrow them.
	b := &Binary{r: sr, size: size}
	err := protect("parse ELF header", func() (err error) {
		b.elf, err = elf.NewFile(sr)
		return err
	})
	if err != nil {
		return nil, err
	}
	var syms *sslSymbols
	err = protect("read symbols", func() (err error) {
		syms, err = b.readSSLSymbols()
		return err
	})
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"SSL_read", "SSL_write"} {
		if _, ok := syms.funcs[name]; !ok {
			return nil, fmt.Errorf("%s not defined: %w", name, ErrNoSSL)
		}
	}
	var sites []SSLSite
	err = protect("place OpenSSL probes", func() (err error) {
		sites, err = placeSSL(elfText{b, syms}, syms.funcs)
		return err
	})
	return sites, err
}

// sslFunc is a defined function symbol.
type sslFunc struct{ addr, size uint64 }

// sslText is what the placement rules need of a binary. It is an interface
// so that tests can run the rules on bare machine code.
type sslText interface {
	// code returns the file offset of the link-time address addr and up to
	// n bytes of machine code from there, never past the end of the
	// executable segment that maps addr; an error when none does.
	code(addr, n uint64) (off uint64, code []byte, err error)
	// names returns the names of the function symbols at addr.
	names(addr uint64) []string
}

// placeSSL applies the rules documented on SSLSites to the API functions
// in fns (by name; SSL_read and SSL_write must be present).
func placeSSL(t sslText, fns map[string]sslFunc) ([]SSLSite, error) {
	type decoded struct {
		off   uint64
		entry sslInst
		scan  sslScan
	}
	dec := make(map[string]decoded, len(fns))
	// In a fixed order, so that a malformed file always reports the same
	// error.
	names := make([]string, 0, len(fns))
	for name := range fns {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		fn := fns[name]
		n := uint64(maxSSLScanBytes)
		if fn.size != 0 && fn.size < n {
			n = fn.size
		}
		off, code, err := t.code(fn.addr, n)
		if err != nil {
			return nil, fmt.Errorf("locate %s: %w", name, err)
		}
		entry, err := entrySite(code, fn.addr)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		dec[name] = decoded{off, entry, scanSSLFunc(code, fn.addr)}
	}
	isAPI := func(addr uint64) bool {
		for _, fn := range fns {
			if fn.addr == addr {
				return true
			}
		}
		for _, n := range t.names(addr) {
			if strings.HasPrefix(n, "SSL_") {
				return true
			}
		}
		return false
	}

	// Rule 1: the internal function of each operation, if any.
	type internal struct {
		site   SSLSite
		target uint64
		ok     bool
	}
	ints := make([]internal, len(sslOps))
	for i, o := range sslOps {
		ex, ok := dec[o.ex]
		if !ok || len(ex.scan.calls) == 0 || !ex.scan.forwards {
			continue
		}
		target := ex.scan.calls[0]
		if isAPI(target) {
			continue
		}
		off, code, err := t.code(target, 16)
		if err != nil {
			continue // e.g. a call into data: not a function we can probe
		}
		e, err := entrySite(code, target)
		if err != nil || !e.emulated {
			continue
		}
		name := fmt.Sprintf("%s's callee at %#x", o.ex, target)
		if n := t.names(target); len(n) > 0 {
			name = n[0]
		}
		ints[i] = internal{
			site:   SSLSite{Op: o.op, Count: CountPointer, Func: name, Offset: off + uint64(e.off), Inst: e.text, Emulated: true},
			target: target,
			ok:     true,
		}
	}
	if ints[0].ok && ints[1].ok && ints[0].target == ints[1].target {
		ints[0].ok, ints[1].ok = false, false
	}

	var sites []SSLSite
	entrySiteOf := func(op SSLOp, name string, count SSLCount) SSLSite {
		d := dec[name]
		return SSLSite{Op: op, Count: count, Func: name, Offset: d.off + uint64(d.entry.off), Inst: d.entry.text, Emulated: d.entry.emulated}
	}
	for i, o := range sslOps {
		in := ints[i]
		for _, name := range []string{o.plain, o.ex} {
			d, ok := dec[name]
			if !ok {
				continue
			}
			calls := d.scan.calls
			if in.ok && (name == o.ex || len(calls) > 0 && calls[0] == in.target) {
				sites = append(sites, in.site)
				continue
			}
			if sib, ok := fns[sibling(o.plain, o.ex, name)]; ok && contains(calls, sib.addr) &&
				!contains(dec[sibling(o.plain, o.ex, name)].scan.calls, fns[name].addr) {
				continue // rule 2: the sibling's site sees these bytes
			}
			count := CountReturn
			if name == o.ex {
				count = CountPointer
			}
			sites = append(sites, entrySiteOf(o.op, name, count))
		}
	}
	if _, ok := dec["SSL_do_handshake"]; ok {
		sites = append(sites, entrySiteOf(SSLHandshake, "SSL_do_handshake", CountNone))
	}

	sort.SliceStable(sites, func(i, j int) bool { return sites[i].Offset < sites[j].Offset })
	out := sites[:0]
	for _, s := range sites {
		if n := len(out); n > 0 && out[n-1].Offset == s.Offset {
			if p := out[n-1]; p.Op != s.Op || p.Count != s.Count {
				return nil, fmt.Errorf("%s (%s) and %s (%s) share the probe site at %#x", p.Func, p.Op, s.Func, s.Op, s.Offset)
			}
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

func sibling(plain, ex, name string) string {
	if name == plain {
		return ex
	}
	return plain
}

func contains(xs []uint64, x uint64) bool {
	for _, v := range xs {
		if v == x {
			return true
		}
	}
	return false
}

// sslInst is the probe site at a function's entry.
type sslInst struct {
	off      int    // from the entry: 0, or 4 past an ENDBR64
	text     string // Intel syntax
	emulated bool
}

// entrySite returns the site at the entry of the function whose code,
// loaded at addr, is code: its first instruction, or the one after a
// leading ENDBR64 when that one is emulated.
func entrySite(code []byte, addr uint64) (sslInst, error) {
	if bytes.HasPrefix(code, endbr64) {
		if in, err := decode(code[len(endbr64):]); err == nil && Emulated(in) {
			off := len(endbr64)
			return sslInst{off: off, text: x86asm.IntelSyntax(in, addr+uint64(off), nil), emulated: true}, nil
		}
		return sslInst{text: "endbr64"}, nil
	}
	in, err := decode(code)
	if err != nil {
		// The kernel would refuse a uprobe here anyway, and the symbol is
		// not where the code is.
		return sslInst{}, fmt.Errorf("first instruction does not decode: %w", err)
	}
	return sslInst{text: x86asm.IntelSyntax(in, addr, nil), emulated: Emulated(in)}, nil
}

// sslScan is what the placement rules learn from decoding the start of an
// exported function.
type sslScan struct {
	// calls are the targets of the CALL rel32 instructions met before the
	// decoding stopped, in order.
	calls []uint64
	// forwards says that the first call receives the function's own
	// first four arguments: nothing before it branches or may write
	// RDI, RSI, RDX or RCX.
	forwards bool
}

// scanSSLFunc decodes the function whose code, loaded at addr, is code, in
// straight line from its entry, stopping at anything after which the next
// instruction need not run: RET, JMP, an indirect CALL (whose target we
// cannot know), a trap, or bytes that do not decode.
func scanSSLFunc(code []byte, addr uint64) sslScan {
	s := sslScan{forwards: true}
	pc := 0
	if bytes.HasPrefix(code, endbr64) {
		pc = len(endbr64)
	}
	for n := 0; pc < len(code) && n < maxSSLScanInsts; n++ {
		in, err := decode(code[pc:])
		if err != nil {
			break
		}
		next := pc + in.Len
		if in.Op == x86asm.CALL && in.Len == 5 && code[pc] == 0xe8 {
			rel, ok := in.Args[0].(x86asm.Rel)
			if !ok {
				break
			}
			s.calls = append(s.calls, addr+uint64(next)+uint64(int64(rel)))
			pc = next
			continue
		}
		if endsStraightLine(in.Op) {
			break
		}
		if len(s.calls) == 0 && !keepsArgs(in) {
			s.forwards = false
		}
		pc = next
	}
	if len(s.calls) == 0 {
		s.forwards = false
	}
	return s
}

func endsStraightLine(op x86asm.Op) bool {
	switch op {
	case x86asm.RET, x86asm.LRET, x86asm.JMP, x86asm.LJMP, x86asm.CALL, x86asm.LCALL,
		x86asm.INT, x86asm.INTO, x86asm.IRET, x86asm.IRETQ, x86asm.HLT,
		x86asm.UD0, x86asm.UD1, x86asm.UD2, x86asm.SYSCALL:
		return true
	}
	return false
}

// keepsArgs reports whether in certainly leaves control flow and the four
// argument registers of the SysV ABI alone. It is a whitelist of what
// compilers put before a forwarding call: frame set-up, the stack
// protector's canary load and store, and comparisons.
func keepsArgs(in x86asm.Inst) bool {
	switch in.Op {
	case x86asm.NOP, x86asm.CMP, x86asm.TEST, x86asm.PUSH:
		return true
	case x86asm.MOV, x86asm.MOVZX, x86asm.MOVSX, x86asm.MOVSXD, x86asm.LEA,
		x86asm.ADD, x86asm.SUB, x86asm.AND, x86asm.OR, x86asm.XOR:
		switch a := in.Args[0].(type) {
		case x86asm.Mem:
			return true
		case x86asm.Reg:
			return !argReg(a)
		}
	}
	return false
}

// argReg reports whether r is (part of) RDI, RSI, RDX or RCX.
func argReg(r x86asm.Reg) bool {
	switch r {
	case x86asm.RDI, x86asm.EDI, x86asm.DI, x86asm.DIB,
		x86asm.RSI, x86asm.ESI, x86asm.SI, x86asm.SIB,
		x86asm.RDX, x86asm.EDX, x86asm.DX, x86asm.DL, x86asm.DH,
		x86asm.RCX, x86asm.ECX, x86asm.CX, x86asm.CL, x86asm.CH:
		return true
	}
	return false
}

// elfText is sslText on an ELF file.
type elfText struct {
	b    *Binary
	syms *sslSymbols
}

// code maps addr through the executable PT_LOAD segment that holds it, as
// the kernel does for a uprobe's offset, the same for ET_EXEC and ET_DYN.
func (t elfText) code(addr, n uint64) (uint64, []byte, error) {
	for _, p := range t.b.elf.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X == 0 {
			continue
		}
		if addr < p.Vaddr || addr-p.Vaddr >= p.Filesz {
			continue
		}
		rel := addr - p.Vaddr
		off := p.Off + rel
		if off < p.Off || off >= uint64(t.b.size) {
			return 0, nil, fmt.Errorf("address %#x maps to offset %#x beyond the end of the file", addr, off)
		}
		n = min(n, p.Filesz-rel, uint64(t.b.size)-off)
		buf := make([]byte, n)
		if _, err := t.b.r.ReadAt(buf, int64(off)); err != nil {
			return 0, nil, fmt.Errorf("read code at %#x: %w", addr, err)
		}
		return off, buf, nil
	}
	return 0, nil, fmt.Errorf("address %#x is in no executable PT_LOAD segment", addr)
}

func (t elfText) names(addr uint64) []string { return t.syms.names(addr) }

// sslSymbols holds the raw symbol tables, which are searched rather than
// turned into a map: the placement rules need the few API functions and
// the names at one or two addresses, where a libcrypto linked statically
// has tens of thousands of symbols.
type sslSymbols struct {
	tables []symTable
	funcs  map[string]sslFunc // the defined functions named in sslAPI
}

type symTable struct {
	syms, strs []byte
	// versym is .gnu.version, parallel to .dynsym; nil for .symtab.
	versym  []byte
	dynamic bool
}

// readSSLSymbols reads .dynsym (with its version table) and .symtab.
// It parses them itself instead of calling debug/elf's Symbols and
// DynamicSymbols: both allocate a Symbol for every entry, and
// DynamicSymbols also parses the version definitions, whose entry
// counts a crafted file can make cost time quadratic in its size.
func (b *Binary) readSSLSymbols() (*sslSymbols, error) {
	s := &sslSymbols{funcs: make(map[string]sslFunc)}
	rank := make(map[string]int)
	// Like debug/elf, use the first table of each type.
	for _, typ := range []elf.SectionType{elf.SHT_DYNSYM, elf.SHT_SYMTAB} {
		sec := b.elf.SectionByType(typ)
		if sec == nil {
			continue
		}
		t := symTable{dynamic: typ == elf.SHT_DYNSYM}
		var err error
		if t.syms, err = b.sectionData(sec, maxSymtab); err != nil {
			return nil, err
		}
		str := b.linked(sec)
		if str == nil {
			return nil, fmt.Errorf("symbol table %s links to no string table", sec.Name)
		}
		if t.strs, err = b.sectionData(str, maxSymtab); err != nil {
			return nil, err
		}
		if vs := b.elf.SectionByType(elf.SHT_GNU_VERSYM); t.dynamic && vs != nil {
			if t.versym, err = b.sectionData(vs, maxSymtab); err != nil {
				return nil, err
			}
		}
		s.tables = append(s.tables, t)
		t.each(func(name []byte, def bool, bind elf.SymBind, fn sslFunc) {
			if !def || !sslAPI[string(name)] {
				return
			}
			// Prefer what the dynamic linker binds to, then global
			// symbols over local ones (BoringSSL built with hidden
			// visibility has only local ones in an executable).
			r := 0
			if !t.dynamic {
				r = 1
				if bind == elf.STB_LOCAL {
					r = 2
				}
			}
			if old, ok := rank[string(name)]; !ok || r < old {
				rank[string(name)] = r
				s.funcs[string(name)] = fn
			}
		})
	}
	return s, nil
}

// names returns the names of the defined functions at addr, without
// version suffixes, each once.
func (s *sslSymbols) names(addr uint64) []string {
	var out []string
	for _, t := range s.tables {
		t.each(func(name []byte, _ bool, _ elf.SymBind, fn sslFunc) {
			if fn.addr != addr {
				return
			}
			for _, n := range out {
				if n == string(name) {
					return
				}
			}
			out = append(out, string(name))
		})
	}
	return out
}

// each calls fn for every defined function symbol (STT_FUNC, in a section,
// at a non-zero address) in t, with its name stripped of any version
// suffix and whether that version is the default one.
func (t symTable) each(fn func(name []byte, def bool, bind elf.SymBind, f sslFunc)) {
	le := binary.LittleEndian
	// Entry 0 is the null symbol.
	for i := 1; (i+1)*24 <= len(t.syms); i++ {
		e := t.syms[i*24 : (i+1)*24]
		info := e[4]
		if elf.ST_TYPE(info) != elf.STT_FUNC || elf.SectionIndex(le.Uint16(e[6:])) == elf.SHN_UNDEF {
			continue
		}
		value, size := le.Uint64(e[8:]), le.Uint64(e[16:])
		if value == 0 {
			continue
		}
		name, ok := cString(t.strs, le.Uint32(e[0:]))
		if !ok {
			continue
		}
		def := true
		if at := bytes.IndexByte(name, '@'); at >= 0 {
			// .symtab spells versions into the name: "@@" marks the
			// default, a single "@" an old version kept for binaries
			// linked against it.
			def = bytes.HasPrefix(name[at:], []byte("@@"))
			name = name[:at]
		}
		if t.versym != nil && 2*i+2 <= len(t.versym) && le.Uint16(t.versym[2*i:])&0x8000 != 0 {
			def = false // VERSYM_HIDDEN: not the default version
		}
		fn(name, def, elf.ST_BIND(info), sslFunc{addr: value, size: size})
	}
}

// cString returns the NUL-terminated string at off in a string table, or
// false when it is out of range, unterminated or longer than maxSymName.
func cString(strs []byte, off uint32) ([]byte, bool) {
	if uint64(off) >= uint64(len(strs)) {
		return nil, false
	}
	s := strs[off:]
	if len(s) > maxSymName {
		s = s[:maxSymName]
	}
	end := bytes.IndexByte(s, 0)
	if end < 0 {
		return nil, false
	}
	return s[:end], true
}
