package offsets

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"runtime/debug"
)

// The build information blob the Go linker writes (see
// debug/buildinfo): a 16-byte-aligned 32-byte header starting with this
// magic, then, since Go 1.18, the toolchain version and the module text as
// varint-prefixed strings.
var buildInfoMagic = []byte("\xff Go buildinf:")

const (
	buildInfoHeader  = 32
	buildInfoAlign   = 16
	buildInfoInline  = 0x2 // flag: strings follow the header (Go 1.18+)
	maxBuildInfo     = 16 << 20
	buildInfoScanBuf = 64 << 10
)

// readBuildInfo finds and decodes the build information blob. It replaces
// debug/buildinfo.Read, which parses the ELF file a second time, reads
// 1 MiB search chunks and allocates the string lengths it finds before
// checking them against the file; here every read is bounded by the bytes
// that actually exist. Only the Go 1.18+ format is decoded: older
// toolchains predate the register ABI details sonde depends on.
func (b *Binary) readBuildInfo() (*debug.BuildInfo, error) {
	start, end, vaddr, ok := b.buildInfoRange()
	if !ok {
		return nil, fmt.Errorf("no data segment: %w", ErrNotGo)
	}
	at, err := b.findBuildInfo(start, end, vaddr)
	if err != nil {
		return nil, err
	}
	var hdr [buildInfoHeader]byte
	if _, err := b.r.ReadAt(hdr[:], int64(at)); err != nil {
		return nil, &FormatError{Op: "read build info", Err: err}
	}
	if hdr[15]&buildInfoInline == 0 {
		// The pre-1.18 format holds pointers instead of strings.
		e := &UnsupportedError{Version: "go1.17 or older"}
		if t, err := embeddedTable(); err == nil {
			e.Min, e.Max = fmt.Sprintf("go1.%d", t.minMinor), fmt.Sprintf("go1.%d", t.maxMinor)
		}
		return nil, e
	}
	pos := at + buildInfoHeader
	vers, err := b.readVarString(&pos, end)
	if err != nil {
		return nil, &FormatError{Op: "read build info version", Err: err}
	}
	mod, err := b.readVarString(&pos, end)
	if err != nil {
		return nil, &FormatError{Op: "read build info modules", Err: err}
	}
	if vers == "" {
		return nil, fmt.Errorf("empty toolchain version: %w", ErrNotGo)
	}
	// The module text is framed by 16 sentinel bytes on each side so that
	// it can be found in memory; a missing frame means no module data.
	if len(mod) >= 33 && mod[len(mod)-17] == '\n' {
		mod = mod[16 : len(mod)-16]
	} else {
		mod = ""
	}
	info, err := debug.ParseBuildInfo(mod)
	if err != nil {
		return nil, &FormatError{Op: "parse build info", Err: err}
	}
	info.GoVersion = vers
	return info, nil
}

// buildInfoRange returns the file range to search for the blob and the
// virtual address of its start, which fixes the alignment: the
// .go.buildinfo section when there is one, else the first writable data
// segment, where the linker puts it first.
func (b *Binary) buildInfoRange() (start, end, vaddr uint64, ok bool) {
	if s := b.elf.Section(".go.buildinfo"); s != nil && s.Type != elf.SHT_NOBITS && s.Flags&elf.SHF_COMPRESSED == 0 {
		if inFile(s.Offset, s.FileSize, b.size) {
			return s.Offset, s.Offset + s.FileSize, s.Addr, true
		}
	}
	for _, p := range b.elf.Progs {
		if p.Type == elf.PT_LOAD && p.Flags&(elf.PF_X|elf.PF_W) == elf.PF_W && p.Off <= uint64(b.size) {
			end := p.Off + min(p.Filesz, uint64(b.size)-p.Off)
			return p.Off, end, p.Vaddr, true
		}
	}
	return 0, 0, 0, false
}

// findBuildInfo returns the file offset of the first magic in
// [start, end) whose virtual address is aligned.
func (b *Binary) findBuildInfo(start, end, vaddr uint64) (uint64, error) {
	buf := make([]byte, min(end-start, buildInfoScanBuf))
	for off := start; off < end; {
		n := min(uint64(len(buf)), end-off)
		chunk := buf[:n]
		if _, err := b.r.ReadAt(chunk, int64(off)); err != nil {
			return 0, &FormatError{Op: "read build info", Err: err}
		}
		for i := 0; ; {
			j := bytes.Index(chunk[i:], buildInfoMagic)
			if j < 0 {
				break
			}
			at := off + uint64(i+j)
			if (at-start+vaddr)%buildInfoAlign == 0 {
				if end-at < buildInfoHeader {
					return 0, fmt.Errorf("truncated build info header: %w", ErrNotGo)
				}
				return at, nil
			}
			i += j + 1
		}
		if n < uint64(len(buildInfoMagic)) || off+n >= end {
			break
		}
		// Overlap chunks so that a magic across the boundary is found.
		off += n - uint64(len(buildInfoMagic)) + 1
	}
	return 0, fmt.Errorf("no build info: %w", ErrNotGo)
}

// readVarString reads a uvarint length and that many bytes at *pos,
// refusing lengths that run past end.
func (b *Binary) readVarString(pos *uint64, end uint64) (string, error) {
	var lb [binary.MaxVarintLen64]byte
	avail := min(uint64(len(lb)), end-min(*pos, end))
	if avail == 0 {
		return "", errors.New("truncated")
	}
	if _, err := b.r.ReadAt(lb[:avail], int64(*pos)); err != nil {
		return "", err
	}
	n, w := binary.Uvarint(lb[:avail])
	if w <= 0 {
		return "", errors.New("bad length")
	}
	*pos += uint64(w)
	if n > end-*pos || n > maxBuildInfo {
		return "", fmt.Errorf("length %d runs past the end of the data", n)
	}
	s := make([]byte, n)
	if _, err := b.r.ReadAt(s, int64(*pos)); err != nil {
		return "", err
	}
	*pos += n
	return string(s), nil
}
