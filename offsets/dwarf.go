package offsets

import (
	"debug/dwarf"
	"debug/elf"
	"fmt"
	"strings"
)

// FieldOffset returns the byte offset of field within the Go struct type
// structName, e.g. ("net/http.Request", "Method"), read from DWARF. It
// returns an error wrapping ErrNoDWARF for stripped binaries and
// ErrNotFound when the struct or field does not exist; a struct the linker
// dropped because nothing used it is indistinguishable from a missing one.
func (b *Binary) FieldOffset(structName, field string) (uint64, error) {
	b.dwarfOnce.Do(func() { b.dwarfErr = b.loadStructs() })
	if b.dwarfErr != nil {
		return 0, fmt.Errorf("field %s.%s: %w", structName, field, b.dwarfErr)
	}
	fields, ok := b.structs[structName]
	if !ok {
		return 0, fmt.Errorf("struct %s: %w", structName, ErrNotFound)
	}
	off, ok := fields[field]
	if !ok {
		return 0, fmt.Errorf("field %s.%s: %w", structName, field, ErrNotFound)
	}
	return off, nil
}

// loadStructs indexes every struct's member offsets in one pass over
// .debug_info: cheaper than one pass per lookup, since sonde asks for a
// dozen fields.
func (b *Binary) loadStructs() error {
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
	structs := make(map[string]map[string]uint64)
	err := protect("read DWARF", func() error {
		d, err := b.elf.DWARF()
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
	if err != nil {
		return err
	}
	b.structs = structs
	return nil
}
