package offsets

import (
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"slices"
	"strings"
)

// FieldOffset returns the byte offset of field within the Go struct type
// structName, e.g. ("net/http.Request", "Method"), read from DWARF. It
// returns an error wrapping ErrNoDWARF for stripped binaries and
// ErrNotFound when the struct or field does not exist; a struct the linker
// dropped because nothing used it is indistinguishable from a missing one.
func (b *Binary) FieldOffset(structName, field string) (uint64, error) {
	b.dwarfOnce.Do(func() {
		if b.typeUnit == "" {
			b.typeUnit = typeUnit
		}
		b.structs = make(map[string]map[string]uint64)
		b.dwarfErr = b.loadStructs(func(unit string) bool { return unit == b.typeUnit })
	})
	if b.dwarfErr != nil {
		return 0, fmt.Errorf("field %s.%s: %w", structName, field, b.dwarfErr)
	}
	fields, ok := b.structs[structName]
	if !ok {
		// Not where Go's linker puts types: a linker that does otherwise
		// costs one pass over every other unit, the first time.
		b.restOnce.Do(func() { b.restErr = b.loadStructs(func(unit string) bool { return unit != b.typeUnit }) })
		if b.restErr != nil {
			return 0, fmt.Errorf("field %s.%s: %w", structName, field, b.restErr)
		}
		fields, ok = b.structs[structName]
	}
	if !ok {
		return 0, fmt.Errorf("struct %s: %w", structName, ErrNotFound)
	}
	off, ok := fields[field]
	if !ok {
		return 0, fmt.Errorf("field %s.%s: %w", structName, field, ErrNotFound)
	}
	return off, nil
}

// typeUnit is the compile unit Go's linker emits every type into; the
// others hold functions and variables, three quarters of the entries.
const typeUnit = "runtime"

// loadStructs indexes the member offsets of every struct in the compile
// units scan accepts (by name), in one pass over .debug_info: cheaper than
// one pass per lookup, since sonde asks for a dozen fields. The other units
// are skipped without being decoded. A struct already indexed is kept.
func (b *Binary) loadStructs(scan func(unit string) bool) error {
	var total uint64
	found := false
	debug := make(map[int]bool)
	for i, s := range b.elf.Sections {
		if !strings.HasPrefix(s.Name, ".debug_") && !strings.HasPrefix(s.Name, ".zdebug_") {
			continue
		}
		if s.Name == ".debug_info" || s.Name == ".zdebug_info" {
			found = true
		}
		n, err := b.checkSection(s)
		if err != nil {
			return &FormatError{Op: "read DWARF", Err: err}
		}
		debug[i] = true
		total += n
	}
	if !found {
		return ErrNoDWARF
	}
	// For ET_DYN files debug/elf also reads the relocation sections that
	// apply to debug sections.
	if b.elf.Type != elf.ET_EXEC {
		for _, s := range b.elf.Sections {
			if (s.Type == elf.SHT_REL || s.Type == elf.SHT_RELA) && debug[int(s.Info)] {
				n, err := b.checkSection(s)
				if err != nil {
					return &FormatError{Op: "read DWARF", Err: err}
				}
				total += n
			}
		}
	}
	if total > maxDWARF {
		return &FormatError{Op: "read DWARF", Err: fmt.Errorf("debug sections total %d bytes, over the %d byte limit", total, maxDWARF)}
	}
	structs := b.structs
	err := protect("read DWARF", func() error {
		d, err := b.typeDWARF()
		if err != nil {
			return err
		}
		r := d.Reader()
		var cur map[string]uint64 // members of the struct being read, or nil
		depth := 0                // nesting below the current struct
		for {
			e, err := r.Next()
			if err != nil {
				return err
			}
			if e == nil {
				return nil
			}
			if e.Tag == dwarf.TagCompileUnit {
				cur, depth = nil, 0
				if name, _ := e.Val(dwarf.AttrName).(string); !scan(name) {
					r.SkipChildren() // to the next unit, undecoded
				}
				continue
			}
			if e.Tag == 0 { // end of a children list
				if depth > 0 {
					depth--
					if depth == 0 {
						cur = nil
					}
				}
				continue
			}
			if depth == 1 && e.Tag == dwarf.TagMember && cur != nil {
				name, _ := e.Val(dwarf.AttrName).(string)
				if loc, ok := e.Val(dwarf.AttrDataMemberLoc).(int64); ok && loc >= 0 {
					cur[name] = uint64(loc)
				}
			}
			if depth == 0 && e.Tag == dwarf.TagStructType && e.Children {
				name, _ := e.Val(dwarf.AttrName).(string)
				if _, dup := structs[name]; !dup && name != "" {
					cur = make(map[string]uint64)
					structs[name] = cur
				}
				depth = 1
				continue
			}
			if depth > 0 && e.Children {
				depth++
			}
		}
	})
	return err
}

// typeSections are the debug sections that decoding .debug_info's entries
// can refer to. The line, location and range tables, most of a Go binary's
// DWARF, are left unread: decompressing them, and decoding every unit, took
// sonde's peak RSS attaching to a gRPC server from 60 MB to 71.
var typeSections = []string{"abbrev", "info", "str", "addr", "line_str", "str_offsets"}

// typeDWARF reads .debug_info with what its entries refer to, and nothing
// else. Binaries whose debug sections debug/elf must first transform
// (.zdebug compression, relocations) get its full reader.
func (b *Binary) typeDWARF() (*dwarf.Data, error) {
	data := make(map[string][]byte)
	loaded := make(map[int]bool)
	for i, s := range b.elf.Sections {
		if strings.HasPrefix(s.Name, ".zdebug_") {
			return b.elf.DWARF()
		}
		name, ok := strings.CutPrefix(s.Name, ".debug_")
		if !ok || !slices.Contains(typeSections, name) {
			continue
		}
		d, err := s.Data()
		if err != nil {
			return nil, fmt.Errorf("section %s: %w", s.Name, err)
		}
		data[name] = d
		loaded[i] = true
	}
	if b.elf.Type != elf.ET_EXEC {
		for _, s := range b.elf.Sections {
			if (s.Type == elf.SHT_REL || s.Type == elf.SHT_RELA) && loaded[int(s.Info)] {
				return b.elf.DWARF()
			}
		}
	}
	d, err := dwarf.New(data["abbrev"], nil, nil, data["info"], nil, nil, nil, data["str"])
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"addr", "line_str", "str_offsets"} {
		if data[name] == nil {
			continue
		}
		if err := d.AddSection(".debug_"+name, data[name]); err != nil {
			return nil, err
		}
	}
	return d, nil
}
