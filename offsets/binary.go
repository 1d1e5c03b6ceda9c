// Package offsets inspects the binaries sonde attaches uprobes to: Go
// executables, so that it can probe net/http and friends without relying
// on DWARF being present, and OpenSSL-compatible libraries and executables
// (SSLSites), so that it can read TLS plaintext.
//
// A Binary answers four questions about an x86-64 Go ELF file: which
// toolchain and module versions built it, where a function lives (address,
// size and the file offset a uprobe needs), where inside that function a
// probe is cheap (an instruction the kernel emulates rather than
// single-steps), and, when DWARF is present, at which offset a struct field
// sits.
//
// Every input is treated as hostile. Every size the standard library's
// debug/* parsers would trust (header tables, section and compressed
// sizes, build info string lengths) is checked against the real file size
// before they see it, because they allocate what a header claims before
// reading it; panics from those parsers are turned into *FormatError.
package offsets

import (
	"debug/elf"
	"debug/gosym"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"strings"
	"sync"
)

// Limits on what Inspect is willing to read. They are far above what real
// programs need (a large Kubernetes binary has a ~40 MiB .gopclntab and
// ~20 MiB .symtab) and exist so that a crafted header cannot make us
// allocate gigabytes.
const (
	maxPclntab  = 256 << 20
	maxSymtab   = 256 << 20
	maxDWARF    = 1 << 30
	maxFuncSize = 4 << 20
)

var (
	// ErrNotFound is returned when a function, struct or field does not
	// exist in the binary.
	ErrNotFound = errors.New("not found")
	// ErrNoDWARF is returned by FieldOffset for binaries built without
	// debug information (for example with -ldflags='-s -w').
	ErrNoDWARF = errors.New("no DWARF debug information")
	// ErrNotGo is returned for ELF files that carry no Go build information.
	ErrNotGo = errors.New("not a Go binary")
)

// FormatError reports a malformed or unsupported binary, including a panic
// recovered from one of the standard library parsers.
type FormatError struct {
	Op  string // what was being read, e.g. "read .gopclntab"
	Err error
}

func (e *FormatError) Error() string { return "malformed binary: " + e.Op + ": " + e.Err.Error() }
func (e *FormatError) Unwrap() error { return e.Err }

// Binary is an opened Go executable. Its methods are safe for concurrent
// use; the symbol, pclntab and DWARF tables are parsed on first use.
type Binary struct {
	r      io.ReaderAt
	size   int64
	closer io.Closer
	elf    *elf.File
	info   *debug.BuildInfo

	symOnce sync.Once
	syms    map[string]elf.Symbol
	symErr  error

	pclnOnce sync.Once
	pcln     *gosym.Table
	pclnErr  error

	dwarfOnce sync.Once
	structs   map[string]map[string]uint64
	dwarfErr  error
	typeUnit  string    // the compile unit indexed first (typeUnit)
	restOnce  sync.Once // the other units, indexed on a miss
	restErr   error
}

// Open opens the Go executable at path. The caller must Close it.
func Open(path string) (*Binary, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open binary: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat binary: %w", err)
	}
	b, err := Inspect(f, st.Size())
	if err != nil {
		f.Close()
		return nil, err
	}
	b.closer = f
	return b, nil
}

// Inspect reads a Go executable of the given size from r. r must stay
// readable for as long as the Binary is used.
func Inspect(r io.ReaderAt, size int64) (*Binary, error) {
	if size < 0 {
		return nil, &FormatError{Op: "inspect", Err: fmt.Errorf("negative size %d", size)}
	}
	sr := io.NewSectionReader(r, 0, size)
	b := &Binary{r: sr, size: size}

	if err := checkELFLayout(sr, size); err != nil {
		return nil, &FormatError{Op: "parse ELF header", Err: err}
	}
	err := protect("parse ELF header", func() (err error) {
		b.elf, err = elf.NewFile(sr)
		return err
	})
	if err != nil {
		return nil, err
	}
	// readBuildInfo is our own bounded code, so needs no protect; its
	// errors already say whether the file is not Go (ErrNotGo, which
	// callers tell apart from corruption they should report), too old
	// (*UnsupportedError) or corrupt (*FormatError).
	if b.info, err = b.readBuildInfo(); err != nil {
		return nil, fmt.Errorf("read build info: %w", err)
	}
	return b, nil
}

// Close releases the file opened by Open. It is a no-op for Inspect.
func (b *Binary) Close() error {
	if b.closer == nil {
		return nil
	}
	return b.closer.Close()
}

// GoVersion is the toolchain that built the binary, e.g. "go1.22.12".
// Experiment suffixes such as " X:boringcrypto" are stripped.
func (b *Binary) GoVersion() string {
	v, _, _ := strings.Cut(b.info.GoVersion, " ")
	return v
}

// BuildInfo returns the embedded build information: main module, module
// dependencies and build settings.
func (b *Binary) BuildInfo() *debug.BuildInfo { return b.info }

// Module returns the version of the module at path linked into the binary,
// following replace directives; ok is false when it is not a dependency.
func (b *Binary) Module(path string) (version string, ok bool) {
	mods := append([]*debug.Module{&b.info.Main}, b.info.Deps...)
	for _, m := range mods {
		if m == nil || m.Path != path {
			continue
		}
		if m.Replace != nil {
			return m.Replace.Version, true
		}
		return m.Version, true
	}
	return "", false
}

// protect runs fn and converts both its error and any panic into a
// *FormatError: debug/elf, debug/gosym and debug/dwarf are not hardened
// against crafted input and do panic on some of it.
func protect(op string, fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = &FormatError{Op: op, Err: fmt.Errorf("panic: %v", r)}
		}
	}()
	if err := fn(); err != nil {
		var fe *FormatError
		if errors.As(err, &fe) {
			return err
		}
		return &FormatError{Op: op, Err: err}
	}
	return nil
}

// sectionData reads a whole section, refusing ones larger than limit so a
// crafted size cannot trigger a huge allocation.
func (b *Binary) sectionData(s *elf.Section, limit uint64) ([]byte, error) {
	n, err := b.checkSection(s)
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("section %s is %d bytes, over the %d byte limit", s.Name, n, limit)
	}
	return s.Data()
}
