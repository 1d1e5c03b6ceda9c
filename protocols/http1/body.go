package http1

// maxChunkLine bounds a chunk-size line including extensions, as net/http
// does, so extensions cannot make the parser spin on one line forever.
const maxChunkLine = 4096

// Phases of chunkLine.
const (
	chDigits uint8 = iota // hex size
	chBWS                 // whitespace after the size
	chExt                 // chunk extensions, validated but ignored
	chCR                  // CR seen, LF expected
)

// chunkSize consumes a chunk-size line and returns the bytes used.
func (c *Conn) chunkSize(s *stream, data []byte) int {
	k := &s.chunk
	for i, b := range data {
		k.n++
		if k.n > maxChunkLine {
			c.fail(s, BadChunk)
			return i + 1
		}
		switch k.phase {
		case chDigits:
			if v := unhex(b); v >= 0 {
				if k.size>>59 != 0 {
					c.fail(s, BadChunk) // would overflow int64
					return i + 1
				}
				k.size = k.size<<4 | int64(v)
				k.digits++
				continue
			}
			if k.digits == 0 {
				c.fail(s, BadChunk)
				return i + 1
			}
			if !c.chunkSep(s, b) {
				return i + 1
			}
		case chBWS:
			if b == ' ' || b == '\t' {
				continue
			}
			if !c.chunkSep(s, b) {
				return i + 1
			}
		case chExt:
			switch {
			case b == '\r':
				k.phase = chCR
			case b == '\n':
				c.chunkLineDone(s)
				return i + 1
			case class[b]&cValue == 0:
				c.fail(s, BadChunk)
				return i + 1
			}
		case chCR:
			if b != '\n' {
				c.fail(s, BadChunk)
				return i + 1
			}
			c.chunkLineDone(s)
			return i + 1
		}
	}
	return len(data)
}

// chunkSep handles the byte ending the size digits or the whitespace after
// them. It reports whether the line goes on within this state.
func (c *Conn) chunkSep(s *stream, b byte) bool {
	k := &s.chunk
	switch b {
	case ' ', '\t':
		k.phase = chBWS
	case ';':
		k.phase = chExt
	case '\r':
		k.phase = chCR
	case '\n':
		c.chunkLineDone(s)
		return false
	default:
		c.fail(s, BadChunk)
		return false
	}
	return true
}

func (c *Conn) chunkLineDone(s *stream) {
	size := s.chunk.size
	s.chunk = chunkLine{}
	if size == 0 {
		s.st = stTrailer
		s.headBytes = 0
		return
	}
	s.remain = size
	s.st = stChunkData
}

// chunkEnd consumes the CRLF after chunk data. A bare LF is accepted like
// everywhere else in framing.
func (c *Conn) chunkEnd(s *stream, data []byte) int {
	k := &s.chunk
	for i, b := range data {
		switch {
		case b == '\n':
			s.st = stChunkSize
			s.chunk = chunkLine{}
			return i + 1
		case b == '\r' && k.phase == 0:
			k.phase = chCR
		default:
			c.fail(s, BadChunk)
			return i + 1
		}
	}
	return len(data)
}

func unhex(b byte) int {
	switch {
	case '0' <= b && b <= '9':
		return int(b - '0')
	case 'a' <= b && b <= 'f':
		return int(b-'a') + 10
	case 'A' <= b && b <= 'F':
		return int(b-'A') + 10
	}
	return -1
}
