package offsets

import (
	"debug/elf"
	"debug/gosym"
	"errors"
	"fmt"
)

// Source says which table a Function came from.
type Source string

const (
	// FromSymtab: the ELF .symtab, present unless the binary was built
	// with -ldflags=-s.
	FromSymtab Source = "symtab"
	// FromPclntab: Go's own function table, which survives stripping
	// because the runtime needs it for stack traces.
	FromPclntab Source = "pclntab"
)

// Function locates one function in the binary.
type Function struct {
	Name string
	// Addr is the link-time virtual address of the entry point.
	Addr uint64
	// Size in bytes. From .gopclntab it runs up to the next function and
	// so includes alignment padding.
	Size uint64
	// Offset is the file offset of Addr: what a uprobe attaches to.
	Offset uint64
	Source Source
}

// Func finds a function by its fully qualified Go name, e.g.
// "net/http.(*Transport).roundTrip". It prefers .symtab and falls back to
// .gopclntab, so stripped binaries work too.
func (b *Binary) Func(name string) (Function, error) {
	fn, err := b.funcSymtab(name)
	if err == nil || !errors.Is(err, errNoTable) {
		return fn, err
	}
	return b.funcPclntab(name)
}

// errNoTable says a lookup table is absent, so the next one should be
// tried; any other error is final.
var errNoTable = errors.New("table absent")

func (b *Binary) funcSymtab(name string) (Function, error) {
	b.symOnce.Do(func() {
		s := b.elf.Section(".symtab")
		if s == nil {
			b.symErr = errNoTable
			return
		}
		// Symbols reads .symtab and the string table it links to.
		for _, t := range []*elf.Section{s, b.linked(s)} {
			if t == nil {
				continue // Symbols reports the bad link
			}
			n, err := b.checkSection(t)
			if err == nil && n > maxSymtab {
				err = fmt.Errorf("section %s is %d bytes, over the %d byte limit", t.Name, n, maxSymtab)
			}
			if err != nil {
				b.symErr = &FormatError{Op: "read .symtab", Err: err}
				return
			}
		}
		var syms []elf.Symbol
		b.symErr = protect("read .symtab", func() (err error) {
			syms, err = b.elf.Symbols()
			return err
		})
		if b.symErr != nil {
			return
		}
		b.syms = make(map[string]elf.Symbol)
		for _, s := range syms {
			if elf.ST_TYPE(s.Info) == elf.STT_FUNC {
				b.syms[s.Name] = s
			}
		}
	})
	if b.symErr != nil {
		return Function{}, b.symErr
	}
	s, ok := b.syms[name]
	if !ok {
		return Function{}, fmt.Errorf("function %s: %w", name, ErrNotFound)
	}
	return b.function(name, s.Value, s.Size, FromSymtab)
}

func (b *Binary) funcPclntab(name string) (Function, error) {
	b.pclnOnce.Do(func() {
		b.pclnErr = protect("read .gopclntab", func() error {
			s := b.elf.Section(".gopclntab")
			if s == nil {
				// Before Go 1.26, PIE binaries keep the table in relro
				// memory, because its header holds pointers that need
				// dynamic relocation.
				s = b.elf.Section(".data.rel.ro.gopclntab")
			}
			if s == nil {
				// Binaries whose section headers were removed would need
				// a scan for the pcHeader magic; not implemented.
				return fmt.Errorf("no .gopclntab section")
			}
			data, err := b.sectionData(s, maxPclntab)
			if err != nil {
				return err
			}
			text := b.elf.Section(".text")
			if text == nil {
				return fmt.Errorf("no .text section")
			}
			// gosym takes the start of text from us rather than from the
			// pclntab header because the header value is a dynamic
			// relocation in PIE files and reads as zero on disk.
			lt := gosym.NewLineTable(data, text.Addr)
			b.pcln, err = gosym.NewTable(nil, lt)
			return err
		})
	})
	if b.pclnErr != nil {
		return Function{}, b.pclnErr
	}
	f := b.pcln.LookupFunc(name)
	if f == nil {
		return Function{}, fmt.Errorf("function %s: %w", name, ErrNotFound)
	}
	if f.End < f.Entry {
		return Function{}, &FormatError{Op: "read .gopclntab", Err: fmt.Errorf("function %s ends before it starts", name)}
	}
	return b.function(name, f.Entry, f.End-f.Entry, FromPclntab)
}

// function fills in the file offset from the executable PT_LOAD segment
// that maps addr. Using segments rather than sections is what the kernel
// does when it turns a uprobe's file offset into an address, and it works
// the same for ET_EXEC and ET_DYN (PIE) files.
func (b *Binary) function(name string, addr, size uint64, src Source) (Function, error) {
	for _, p := range b.elf.Progs {
		if p.Type != elf.PT_LOAD || p.Flags&elf.PF_X == 0 {
			continue
		}
		if addr < p.Vaddr || addr-p.Vaddr >= p.Filesz {
			continue
		}
		off := addr - p.Vaddr + p.Off
		if off >= uint64(b.size) {
			break
		}
		return Function{Name: name, Addr: addr, Size: size, Offset: off, Source: src}, nil
	}
	return Function{}, &FormatError{Op: "locate " + name, Err: fmt.Errorf("address %#x is in no executable PT_LOAD segment", addr)}
}

// code reads up to n bytes of fn's machine code, never past the end of
// the function or of the file.
func (b *Binary) code(fn Function, n uint64) ([]byte, error) {
	if fn.Size < n {
		n = fn.Size
	}
	if fn.Offset >= uint64(b.size) {
		return nil, &FormatError{Op: "read " + fn.Name, Err: fmt.Errorf("offset %#x beyond end of file", fn.Offset)}
	}
	if rest := uint64(b.size) - fn.Offset; n > rest {
		n = rest
	}
	buf := make([]byte, n)
	if _, err := b.r.ReadAt(buf, int64(fn.Offset)); err != nil {
		return nil, &FormatError{Op: "read " + fn.Name, Err: err}
	}
	return buf, nil
}

// linked returns the section s.Link names, or nil when out of range.
func (b *Binary) linked(s *elf.Section) *elf.Section {
	if s.Link == 0 || int(s.Link) >= len(b.elf.Sections) {
		return nil
	}
	return b.elf.Sections[s.Link]
}
