package offsets

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
)

// maxCompressionRatio bounds how much larger than its bytes on disk a
// compressed section may claim to be. 1032:1 is the most DEFLATE can
// achieve; zstd can in theory exceed it, but debug sections compress
// about 4:1 in practice, so a larger claim is a corrupt header.
const maxCompressionRatio = 1032

// checkELFLayout validates, from the raw bytes, every size that
// debug/elf.NewFile trusts before it reads: the program and section header
// tables and the section name table. NewFile allocates what a header
// claims (up to 10 MiB per table) before finding out that the file is
// shorter, so without this a 64-byte input costs megabytes and
// milliseconds, which is what stalled the fuzzer.
func checkELFLayout(r io.ReaderAt, size int64) error {
	var h [64]byte
	if size < int64(len(h)) {
		return fmt.Errorf("%d-byte file is shorter than an ELF64 header", size)
	}
	if _, err := r.ReadAt(h[:], 0); err != nil {
		return fmt.Errorf("read ELF header: %w", err)
	}
	if !bytes.Equal(h[:4], []byte(elf.ELFMAG)) {
		return fmt.Errorf("bad magic % x", h[:4])
	}
	// Checked here rather than after NewFile, so that a big-endian or
	// 32-bit file is not parsed at all.
	if elf.Class(h[elf.EI_CLASS]) != elf.ELFCLASS64 || elf.Data(h[elf.EI_DATA]) != elf.ELFDATA2LSB {
		return fmt.Errorf("unsupported %s %s binary, want x86-64", elf.Class(h[elf.EI_CLASS]), elf.Data(h[elf.EI_DATA]))
	}
	le := binary.LittleEndian
	if m := elf.Machine(le.Uint16(h[18:])); m != elf.EM_X86_64 {
		return fmt.Errorf("unsupported %s binary, want x86-64", m)
	}
	if t := elf.Type(le.Uint16(h[16:])); t != elf.ET_EXEC && t != elf.ET_DYN {
		return fmt.Errorf("unsupported ELF type %s", t)
	}
	phoff, shoff := le.Uint64(h[32:]), le.Uint64(h[40:])
	phentsize, phnum := uint64(le.Uint16(h[54:])), uint64(le.Uint16(h[56:]))
	shentsize, shnum := uint64(le.Uint16(h[58:])), uint64(le.Uint16(h[60:]))
	shstrndx := uint64(le.Uint16(h[62:]))
	if phnum > 0 {
		if phentsize != 56 {
			return fmt.Errorf("program header size %d, want 56", phentsize)
		}
		if !inFile(phoff, phnum*phentsize, size) {
			return fmt.Errorf("%d program headers at %#x lie outside the file", phnum, phoff)
		}
	}
	if shoff == 0 {
		return nil // no section headers: NewFile reads nothing more
	}
	if shentsize != 64 {
		return fmt.Errorf("section header size %d, want 64", shentsize)
	}
	// With 0xff00 sections or more, the real count and name table index
	// live in section header 0 (ELF extended numbering).
	var sh0 [64]byte
	if !inFile(shoff, 64, size) {
		return fmt.Errorf("section headers at %#x lie outside the file", shoff)
	}
	if _, err := r.ReadAt(sh0[:], int64(shoff)); err != nil {
		return fmt.Errorf("read section header 0: %w", err)
	}
	if shnum == 0 {
		shnum = le.Uint64(sh0[32:])
	}
	if shstrndx == uint64(elf.SHN_XINDEX) {
		shstrndx = uint64(le.Uint32(sh0[40:]))
	}
	if shnum > uint64(size)/64 || !inFile(shoff, shnum*64, size) {
		return fmt.Errorf("%d section headers at %#x lie outside the file", shnum, shoff)
	}
	if shstrndx == 0 || shstrndx >= shnum {
		return nil // NewFile rejects an out-of-range index without reading
	}
	var sh [64]byte
	if _, err := r.ReadAt(sh[:], int64(shoff+shstrndx*64)); err != nil {
		return fmt.Errorf("read section name table header: %w", err)
	}
	if elf.SectionType(le.Uint32(sh[4:])) != elf.SHT_STRTAB {
		return nil // NewFile rejects it without reading
	}
	off, n := le.Uint64(sh[24:]), le.Uint64(sh[32:])
	if !inFile(off, n, size) {
		return fmt.Errorf("section name table (%d bytes at %#x) lies outside the file", n, off)
	}
	if elf.SectionFlag(le.Uint64(sh[8:]))&elf.SHF_COMPRESSED != 0 {
		return fmt.Errorf("compressed section name table")
	}
	return nil
}

// inFile reports whether n bytes at off lie within a file of the given
// size, without overflowing.
func inFile(off, n uint64, size int64) bool {
	return off <= uint64(size) && n <= uint64(size)-off
}

// checkSection validates s before its data is read: it must lie within the
// file and, if compressed, claim an uncompressed size within
// maxCompressionRatio of its bytes on disk. It returns the uncompressed
// size. Section.Data allocates the claimed size before reading, up to
// 10 MiB at a time, so an unchecked header is an allocation the input
// does not pay for.
func (b *Binary) checkSection(s *elf.Section) (uint64, error) {
	if s.Type == elf.SHT_NOBITS {
		return 0, fmt.Errorf("section %s has no data", s.Name)
	}
	if !inFile(s.Offset, s.FileSize, b.size) {
		return 0, fmt.Errorf("section %s (%d bytes at %#x) lies outside the file", s.Name, s.FileSize, s.Offset)
	}
	size := s.Size
	if s.Flags&elf.SHF_COMPRESSED == 0 && strings.HasPrefix(s.Name, ".zdebug") {
		// The older GNU format: "ZLIB" and a big-endian 64-bit size.
		// debug/elf reads this header only when the data is opened, and
		// then trusts it.
		var h [12]byte
		if n, _ := b.r.ReadAt(h[:], int64(s.Offset)); n == len(h) && s.FileSize >= 12 && string(h[:4]) == "ZLIB" {
			size = binary.BigEndian.Uint64(h[4:])
		}
	}
	if size != s.FileSize && size/maxCompressionRatio > s.FileSize {
		return 0, fmt.Errorf("section %s claims %d bytes uncompressed from %d", s.Name, size, s.FileSize)
	}
	return size, nil
}
