package discover

import (
	"bufio"
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
)

// Languages Runtime reports.
const (
	LangGo     = "go"
	LangPython = "python"
	LangJava   = "java"
	LangNode   = "node"
	LangRuby   = "ruby"
	LangPHP    = "php"
	LangDotNet = "dotnet"
	// LangNative is any other ELF executable: C, C++, Rust, ...
	LangNative = "native"
)

// TLS libraries Runtime reports.
const (
	// TLSLibssl is OpenSSL (or a compatible fork) loaded as a shared
	// library: its SSL_read/SSL_write are where plaintext can be seen.
	TLSLibssl = "libssl"
	// TLSStatic is OpenSSL or BoringSSL linked into the executable.
	TLSStatic = "static-openssl"
	// TLSGo is Go's crypto/tls.
	TLSGo = "crypto/tls"
)

// Bounds on what runtime detection reads. An executable or a maps file is
// controlled by whoever runs the process, so none of it may make sonde read
// or allocate without limit.
const (
	maxMapsLines   = 1 << 16
	maxMapsLine    = 8 << 10 // PATH_MAX and the fixed columns
	maxMappedFiles = 4096
	// maxELFRead caps the bytes read from one executable, whatever the
	// section headers claim.
	maxELFRead = 256 << 20
	// maxSymtab caps a symbol table or string table that is scanned.
	maxSymtab = 64 << 20
	// maxNeedleHits caps the places a symbol name is recorded at.
	maxNeedleHits = 64
)

// ErrReadLimit is returned when a file is larger than what detection reads.
var ErrReadLimit = errors.New("read limit reached")

// ReadError says which /proc file of a process could not be read.
type ReadError struct {
	File string // "exe" or "maps"
	Err  error
}

func (e *ReadError) Error() string { return e.File + ": " + e.Err.Error() }
func (e *ReadError) Unwrap() error { return e.Err }

// Runtime is the language and TLS library of a process.
type Runtime struct {
	// Language is one of the Lang* constants, or empty when unknown.
	Language string
	// GoVersion and GoModule come from the build info of a Go executable;
	// GoModule is the main module path (empty for a binary built outside a
	// module).
	GoVersion string
	GoModule  string
	// TLS is one of the TLS* constants, or empty when none was found.
	TLS string
	// TLSPath is the mapped file of a shared libssl, as the process sees it.
	TLSPath string
	// TLSVersion is the soname version of a shared libssl, e.g. "3" or
	// "1.1".
	TLSVersion string
	// Errs are *ReadError values for the files that could not be read;
	// the facts from the others are still set.
	Errs []error
}

// ExeInfo is what the executable file says, independently of the process.
type ExeInfo struct {
	ELF       bool
	GoVersion string
	GoModule  string
	// GoTLS is set when a Go executable contains crypto/tls's Conn.
	GoTLS bool
	// StaticSSL is set when the executable defines SSL_read and SSL_write.
	StaticSSL bool
}

// Inspector detects runtimes, and remembers what it learnt of each
// executable file: a host runs many processes of the same binary, and the
// executable is the costly part to read. It is not safe for concurrent use.
type Inspector struct {
	ProcRoot string
	exes     map[fileKey]exeResult
}

type fileKey struct {
	dev, ino uint64
	size     int64
	mtime    int64
}

type exeResult struct {
	info ExeInfo
	err  error
}

// Runtime detects the language and TLS library of pid. Only a process that
// is gone is an error; facts that cannot be read are listed in Errs.
func (in *Inspector) Runtime(pid int) (*Runtime, error) {
	root := in.ProcRoot
	if root == "" {
		root = "/proc"
	}
	dir := filepath.Join(root, strconv.Itoa(pid))
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrGone)
	}
	rt := &Runtime{}
	exeName, _ := os.Readlink(filepath.Join(dir, "exe"))
	exeName = strings.TrimSuffix(exeName, " (deleted)")

	info, err := in.exeInfo(filepath.Join(dir, "exe"))
	if err != nil {
		rt.Errs = append(rt.Errs, &ReadError{File: "exe", Err: err})
	}
	var mapped []string
	if f, err := os.Open(filepath.Join(dir, "maps")); err != nil {
		rt.Errs = append(rt.Errs, &ReadError{File: "maps", Err: err})
	} else {
		mapped, err = ParseMaps(f)
		f.Close()
		if err != nil {
			rt.Errs = append(rt.Errs, &ReadError{File: "maps", Err: err})
		}
	}
	rt.classify(exeName, info, mapped)
	return rt, nil
}

func (in *Inspector) exeInfo(name string) (ExeInfo, error) {
	f, err := os.Open(name)
	if err != nil {
		return ExeInfo{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return ExeInfo{}, err
	}
	var key fileKey
	sys, cacheable := st.Sys().(*syscall.Stat_t)
	if cacheable {
		key = fileKey{dev: uint64(sys.Dev), ino: sys.Ino, size: st.Size(), mtime: st.ModTime().UnixNano()}
		if r, ok := in.exes[key]; ok {
			return r.info, r.err
		}
	}
	info, err := InspectELF(f, st.Size())
	if cacheable {
		if in.exes == nil {
			in.exes = make(map[fileKey]exeResult)
		}
		in.exes[key] = exeResult{info, err}
	}
	return info, err
}

var (
	pythonExe = regexp.MustCompile(`^python[0-9.]*[dmu]?$`)
	rubyExe   = regexp.MustCompile(`^ruby[0-9.]*$`)
	phpExe    = regexp.MustCompile(`^php(-fpm|-cgi)?[0-9.]*$`)
	pythonLib = regexp.MustCompile(`^libpython[0-9.]*[dmu]?\.so`)
	rubyLib   = regexp.MustCompile(`^libruby[-0-9.]*\.so`)
	phpLib    = regexp.MustCompile(`^libphp[0-9.]*\.so`)
	nodeLib   = regexp.MustCompile(`^libnode\.so`)
)

// classify names the runtime from the executable's facts, its path and the
// files it maps. The executable's name goes first: gdb maps libpython, yet
// it is not a python program; a language runtime that lives in a shared
// library (libjvm, libcoreclr) shows under a launcher of any name.
func (rt *Runtime) classify(exe string, info ExeInfo, mapped []string) {
	base := path.Base(exe)
	libs := make([]string, len(mapped))
	for i, m := range mapped {
		libs[i] = path.Base(m)
	}
	hasLib := func(match func(string) bool) bool {
		for _, l := range libs {
			if match(l) {
				return true
			}
		}
		return false
	}
	prefix := func(p string) func(string) bool {
		return func(s string) bool { return strings.HasPrefix(s, p) }
	}
	switch {
	case info.GoVersion != "":
		rt.Language, rt.GoVersion, rt.GoModule = LangGo, info.GoVersion, info.GoModule
	case base == "java" || hasLib(prefix("libjvm.so")):
		rt.Language = LangJava
	case base == "dotnet" || hasLib(prefix("libcoreclr.so")):
		rt.Language = LangDotNet
	case exe != "" && pythonExe.MatchString(base):
		rt.Language = LangPython
	case base == "node" || base == "nodejs":
		rt.Language = LangNode
	case exe != "" && rubyExe.MatchString(base):
		rt.Language = LangRuby
	case exe != "" && phpExe.MatchString(base):
		rt.Language = LangPHP
	case hasLib(pythonLib.MatchString):
		rt.Language = LangPython
	case hasLib(nodeLib.MatchString):
		rt.Language = LangNode
	case hasLib(rubyLib.MatchString):
		rt.Language = LangRuby
	case hasLib(phpLib.MatchString):
		rt.Language = LangPHP
	case info.ELF:
		rt.Language = LangNative
	}

	for i, l := range libs {
		if v, ok := strings.CutPrefix(l, "libssl.so"); ok && (v == "" || v[0] == '.') {
			rt.TLS, rt.TLSPath, rt.TLSVersion = TLSLibssl, mapped[i], strings.TrimPrefix(v, ".")
			return
		}
	}
	switch {
	case info.StaticSSL:
		rt.TLS = TLSStatic
	case info.GoTLS:
		rt.TLS = TLSGo
	}
}

// ParseMaps returns the distinct files mapped in a /proc/PID/maps table, in
// the order they first appear. A table longer than sonde reads is cut, and
// the files seen so far come with an ErrReadLimit error.
func ParseMaps(r io.Reader) ([]string, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	seen := make(map[string]bool)
	var files []string
	for n := 0; ; n++ {
		if n == maxMapsLines || len(files) == maxMappedFiles {
			return files, fmt.Errorf("maps: more than %d lines or %d files: %w", maxMapsLines, maxMappedFiles, ErrReadLimit)
		}
		line, err := readLine(br, maxMapsLine)
		if name, ok := mappedFile(line); ok && !seen[name] {
			seen[name] = true
			files = append(files, name)
		}
		if err == io.EOF {
			return files, nil
		}
		if err != nil {
			return files, fmt.Errorf("maps: %w", err)
		}
	}
}

// readLine returns the next line without its newline. A line longer than
// limit is skipped whole and comes back empty: its tail must not be taken
// for a line of its own.
func readLine(br *bufio.Reader, limit int) ([]byte, error) {
	var line []byte
	tooLong := false
	for {
		chunk, err := br.ReadSlice('\n')
		if !tooLong {
			if len(line)+len(chunk) > limit+1 {
				tooLong, line = true, nil
			} else {
				line = append(line, chunk...)
			}
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		// At EOF, ReadSlice found no newline: line is the unterminated last
		// line, if any, and comes back with the io.EOF.
		return bytes.TrimSuffix(line, []byte{'\n'}), err
	}
}

// mappedFile returns the path column of a maps line when it names a file.
func mappedFile(line []byte) (string, bool) {
	// address perms offset dev inode path; path may contain spaces.
	rest := line
	for i := 0; i < 5; i++ {
		rest = bytes.TrimLeft(rest, " \t")
		j := bytes.IndexAny(rest, " \t")
		if j < 0 {
			return "", false
		}
		rest = rest[j:]
	}
	p := string(bytes.TrimLeft(rest, " \t"))
	p = strings.TrimSuffix(p, " (deleted)")
	if !strings.HasPrefix(p, "/") {
		return "", false
	}
	return p, true
}

// InspectELF reads what an executable says of its runtime: Go build info,
// and the TLS code linked into it. A file that is not ELF is not an error
// (ELF is false). A corrupt file gives an error, never a panic, and no more
// than maxELFRead bytes are read whatever its headers claim.
func InspectELF(r io.ReaderAt, size int64) (info ExeInfo, err error) {
	defer func() {
		if p := recover(); p != nil {
			info, err = ExeInfo{}, fmt.Errorf("corrupt executable: %v", p)
		}
	}()
	br := &budgetReader{r: r, left: maxELFRead}
	var magic [4]byte
	if _, err := br.ReadAt(magic[:], 0); err != nil || string(magic[:]) != elf.ELFMAG {
		return ExeInfo{}, nil
	}
	f, err := elf.NewFile(br)
	if err != nil {
		return ExeInfo{}, fmt.Errorf("parse elf: %w", err)
	}
	info.ELF = true
	if bi, err := buildinfo.Read(br); err == nil {
		info.GoVersion = bi.GoVersion
		info.GoModule = bi.Main.Path
	} else if br.exceeded() {
		return info, fmt.Errorf("go build info: %w", ErrReadLimit)
	}
	if info.GoVersion != "" {
		// Function names survive stripping in .gopclntab; the symbol table
		// does not.
		info.GoTLS, err = sectionContains(f, ".gopclntab", []byte("crypto/tls.(*Conn).Write\x00"))
		if err == nil && !info.GoTLS {
			info.GoTLS, err = definesAll(f, "crypto/tls.(*Conn).Write")
		}
		if err != nil {
			return info, fmt.Errorf("look for crypto/tls: %w", err)
		}
		return info, nil
	}
	info.StaticSSL, err = definesAll(f, "SSL_read", "SSL_write")
	if err != nil {
		return info, fmt.Errorf("look for SSL_read and SSL_write: %w", err)
	}
	return info, nil
}

// budgetReader fails every read once left bytes have been read, so that no
// header, however large the sizes it claims, makes detection read a whole
// disk or spin.
type budgetReader struct {
	r    io.ReaderAt
	left int64
}

func (b *budgetReader) ReadAt(p []byte, off int64) (int, error) {
	if int64(len(p)) > b.left {
		b.left = -1
		return 0, ErrReadLimit
	}
	n, err := b.r.ReadAt(p, off)
	b.left -= int64(n)
	return n, err
}

func (b *budgetReader) exceeded() bool { return b.left < 0 }

// sectionContains reports whether the named section holds needle. A
// missing section holds nothing.
func sectionContains(f *elf.File, name string, needle []byte) (bool, error) {
	s := f.Section(name)
	if s == nil || s.Type == elf.SHT_NOBITS {
		return false, nil
	}
	if s.Size > maxELFRead {
		return false, fmt.Errorf("section %s of %d bytes: %w", name, s.Size, ErrReadLimit)
	}
	if s.Flags&elf.SHF_COMPRESSED != 0 {
		return false, fmt.Errorf("section %s is compressed", name)
	}
	hits, err := findAll(s.ReaderAt, int64(s.Size), needle, 1)
	return len(hits) > 0, err
}

// findAll returns the offsets of needle in r, reading it in chunks, at most
// max of them.
func findAll(r io.ReaderAt, size int64, needle []byte, max int) ([]int64, error) {
	const chunk = 256 << 10
	buf := make([]byte, chunk+len(needle))
	var hits []int64
	for off := int64(0); off < size; off += chunk {
		n := min(int64(len(buf)), size-off)
		got, err := r.ReadAt(buf[:n], off)
		if err != nil && !(err == io.EOF && int64(got) == n) {
			return hits, err
		}
		b := buf[:got]
		for i := 0; ; {
			j := bytes.Index(b[i:], needle)
			if j < 0 {
				break
			}
			at := int64(i + j)
			// A hit in the overlap is found again by the next chunk.
			if at < chunk || off+chunk >= size {
				hits = append(hits, off+at)
				if len(hits) == max {
					return hits, nil
				}
			}
			i += j + 1
		}
	}
	return hits, nil
}

// definesAll reports whether the executable's symbol tables (.symtab or
// .dynsym) define every one of names. An undefined symbol, as a program
// linked against a shared libssl has, does not count. The string table is
// searched first, in chunks, so that a table without the names costs no
// symbol decoding at all.
func definesAll(f *elf.File, names ...string) (bool, error) {
	defined := make([]bool, len(names))
	for _, typ := range []elf.SectionType{elf.SHT_DYNSYM, elf.SHT_SYMTAB} {
		for _, s := range f.Sections {
			if s.Type != typ {
				continue
			}
			if err := markDefined(f, s, names, defined); err != nil {
				return false, err
			}
		}
	}
	for _, d := range defined {
		if !d {
			return false, nil
		}
	}
	return true, nil
}

func markDefined(f *elf.File, symtab *elf.Section, names []string, defined []bool) error {
	if int(symtab.Link) <= 0 || int(symtab.Link) >= len(f.Sections) {
		return fmt.Errorf("symbol table %s: bad string table index %d", symtab.Name, symtab.Link)
	}
	strtab := f.Sections[symtab.Link]
	if symtab.Size > maxSymtab || strtab.Size > maxSymtab {
		return fmt.Errorf("symbol table %s of %d bytes: %w", symtab.Name, symtab.Size, ErrReadLimit)
	}
	if strtab.Type == elf.SHT_NOBITS || symtab.Type == elf.SHT_NOBITS {
		return nil
	}
	if (strtab.Flags|symtab.Flags)&elf.SHF_COMPRESSED != 0 {
		return fmt.Errorf("symbol table %s is compressed", symtab.Name)
	}
	// Offsets in the string table at which each name starts. A linker may
	// share a name's bytes with the tail of a longer one, so every place
	// counts, not only those after a NUL.
	want := make(map[uint32]int)
	for i, name := range names {
		hits, err := findAll(strtab.ReaderAt, int64(strtab.Size), append([]byte(name), 0), maxNeedleHits)
		if err != nil {
			return fmt.Errorf("string table %s: %w", strtab.Name, err)
		}
		for _, h := range hits {
			want[uint32(h)] = i
		}
	}
	if len(want) == 0 {
		return nil
	}
	entSize, nameOff, shndxOff := 24, 0, 6
	if f.Class == elf.ELFCLASS32 {
		entSize, nameOff, shndxOff = 16, 0, 14
	}
	br := bufio.NewReaderSize(io.NewSectionReader(symtab.ReaderAt, 0, int64(symtab.Size)), 64<<10)
	ent := make([]byte, entSize)
	for {
		if _, err := io.ReadFull(br, ent); err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		} else if err != nil {
			return fmt.Errorf("symbol table %s: %w", symtab.Name, err)
		}
		i, ok := want[f.ByteOrder.Uint32(ent[nameOff:])]
		if ok && elf.SectionIndex(f.ByteOrder.Uint16(ent[shndxOff:])) != elf.SHN_UNDEF {
			defined[i] = true
		}
	}
}
