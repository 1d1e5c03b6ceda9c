package http2

import (
	"strings"
	"unicode/utf8"

	"golang.org/x/net/http2/hpack"
)

// Indexes of retained values in values.v.
const (
	fMethod = iota
	fScheme
	fAuthority
	fPath
	fStatus
	fUserAgent
	fTraceParent
	fTraceState
	fContentType
	fGRPCStatus
	fGRPCMessage
	nFields
)

// fieldID maps an allowlisted field name to its index, -1 for every other
// name. HTTP/2 field names are lower case on the wire (RFC 9113 §8.2.1), so
// no case folding is needed.
func fieldID(name string) int {
	switch name {
	case ":method":
		return fMethod
	case ":scheme":
		return fScheme
	case ":authority":
		return fAuthority
	case ":path":
		return fPath
	case ":status":
		return fStatus
	case "user-agent":
		return fUserAgent
	case "traceparent":
		return fTraceParent
	case "tracestate":
		return fTraceState
	case "content-type":
		return fContentType
	case "grpc-status":
		return fGRPCStatus
	case "grpc-message":
		return fGRPCMessage
	}
	return -1
}

// values are the allowlisted fields of one header block.
type values struct {
	v   [nFields]string
	set [nFields]bool
}

// emit is the hpack callback of d's decoder. It sees every field, secrets
// included, and keeps allowlisted values only. The strings come from hpack,
// which copied them out of the caller's buffer (string conversion) or holds
// them in its dynamic table; they are immutable, so keeping them costs no
// copy.
func (d *dir) emit(f hpack.HeaderField) {
	d.headerListBytes += int(f.Size())
	if d.headerListBytes > d.lim.MaxHeaderListBytes {
		// Keep decoding, for the dynamic table, but stop producing
		// strings nobody will read.
		d.limitsFailed = true
		d.dec.SetEmitEnabled(false)
		return
	}
	if d.blk.role == roleNone || f.Sensitive {
		// A never-indexed field is one the sender flagged as secret.
		return
	}
	i := fieldID(f.Name)
	if i < 0 || d.hv.set[i] {
		return // the first occurrence wins
	}
	d.hv.set[i] = true
	d.hv.v[i] = cleanValue(f.Value, d.lim.MaxValueBytes)
}

// cleanValue returns s cut to max bytes as valid UTF-8 without control
// characters: those and invalid bytes become U+FFFD, and a cut never splits
// a character. The common case, short printable ASCII, is s itself. A cut
// value is copied so it does not pin a long hpack string.
func cleanValue(s string, max int) string {
	clean := len(s) <= max
	for i := 0; clean && i < len(s); i++ {
		clean = s[i] >= 0x20 && s[i] < 0x7f
	}
	if clean {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			r = utf8.RuneError
		}
		if b.Len()+utf8.RuneLen(r) > max {
			break
		}
		b.WriteRune(r) // invalid bytes arrive as RuneError already
	}
	return b.String()
}

// headerFrame handles HEADERS, PUSH_PROMISE and CONTINUATION frames. whole
// says the payload was captured and buffered.
func (c *Conn) headerFrame(d *dir, whole bool) {
	fh := d.fh
	p := d.buf
	if fh.typ == frameContinuation {
		if !d.blk.active {
			// After a resync, the rest of a block whose start was
			// skipped; in sync, a protocol error.
			if d.trusted {
				c.lostSync(d, BadFrame)
			}
			return
		}
	} else {
		if whole {
			var ok bool
			if p, ok = fragment(fh, p); !ok {
				c.lostSync(d, BadFrame)
				return
			}
		}
		c.beginBlock(d, fh, whole)
	}
	b := &d.blk
	switch {
	case !whole:
		c.loseHPACK(d, !d.tooLarge) // too large was reported already
		b.unknown = true
	case !b.unknown:
		if _, err := d.dec.Write(p); err != nil {
			c.loseHPACK(d, true)
			b.unknown = true
		}
	}
	if fh.flags&flagEndHeaders != 0 {
		c.endBlock(d)
	}
}

// fragment returns the header block fragment of a HEADERS or PUSH_PROMISE
// payload, without padding, priority or promised stream id.
func fragment(fh frameHeader, p []byte) ([]byte, bool) {
	pad := 0
	if fh.flags&flagPadded != 0 {
		if len(p) == 0 {
			return nil, false
		}
		pad, p = int(p[0]), p[1:]
	}
	skip := 0
	if fh.typ == framePushPromise {
		skip = 4
	} else if fh.flags&flagPriority != 0 {
		skip = 5
	}
	if skip+pad > len(p) {
		return nil, false
	}
	return p[skip : len(p)-pad], true
}

// loseHPACK marks d's dynamic table unknown, reporting it once.
func (c *Conn) loseHPACK(d *dir, report bool) {
	if d.hpackOK && report {
		c.report(d.dir, HPACK)
	}
	d.hpackOK = false
}

// beginBlock starts a header block and finds what it means.
func (c *Conn) beginBlock(d *dir, fh frameHeader, whole bool) {
	d.blk = block{active: true, stream: fh.stream, endStream: fh.flags&flagEndStream != 0}
	b := &d.blk
	d.hv = values{}
	d.headerListBytes, d.limitsFailed = 0, false
	d.dec.SetEmitEnabled(true)
	switch {
	case fh.typ == framePushPromise:
		// Pushed streams are ignored, but their header blocks are in
		// the server's HPACK context and must be decoded.
		c.stats.PushPromises++
		b.endStream = false
	case d.dir == Request:
		if i := c.find(fh.stream); i >= 0 {
			// Trailers: nothing in them is retained.
			b.role = roleNone
		} else if fh.stream%2 == 1 && fh.stream > c.lastClient {
			c.open(fh.stream, d.frameStart)
			b.role = roleRequest
		}
	default:
		if i := c.find(fh.stream); i >= 0 {
			b.role = roleResponse
			if s := &c.streams[i]; !s.respSeen {
				s.respSeen = true
				s.resp.Start = d.frameStart
			}
		}
	}
	if !d.hpackOK && d.trusted && whole && tableReset(d.buf, fh) {
		// The block empties the dynamic table before using it, so the
		// table is known again (see tableReset).
		d.resetDecoder()
		d.hpackOK = true
	}
	b.unknown = !d.hpackOK
	if b.role == roleNone {
		// Decoded for the dynamic table only: hpack need not build
		// strings for fields it does not index.
		d.dec.SetEmitEnabled(false)
	}
}

// tableReset reports whether a block's first fragment opens with dynamic
// table size updates one of which is 0. Such an update evicts every entry,
// so whatever the table held before, from there on its content is known.
// It is trusted only where frame boundaries are known (d.trusted): after a
// resync the "block" could be bytes of a DATA payload that happen to look
// like frames, and decoding them would label a span with whatever they say.
func tableReset(payload []byte, fh frameHeader) bool {
	p, ok := fragment(fh, payload)
	if !ok {
		return false
	}
	for len(p) > 0 && p[0]&0xe0 == 0x20 {
		// A 5-bit prefix integer (RFC 7541 §5.1).
		v, n := uint64(p[0]&0x1f), 1
		if v == 0x1f {
			var m uint
			for ; n < len(p) && n < 6; n++ {
				v += uint64(p[n]&0x7f) << m
				m += 7
				if p[n]&0x80 == 0 {
					break
				}
			}
			if n >= len(p) || n >= 6 {
				return false
			}
			n++
		}
		if v == 0 {
			return true
		}
		p = p[n:]
	}
	return false
}

// endBlock completes the header block of d and applies it to its stream.
func (c *Conn) endBlock(d *dir) {
	b := &d.blk
	if !b.unknown {
		if err := d.dec.Close(); err != nil {
			c.loseHPACK(d, true)
			b.unknown = true
		}
	}
	if b.unknown {
		c.stats.UnknownBlocks++
	} else if d.limitsFailed {
		c.report(d.dir, HeadersTooLarge)
		b.unknown = true
	}
	blk := *b
	d.blk = block{}
	i := c.find(blk.stream)
	if i < 0 || blk.role == roleNone && !blk.endStream {
		return
	}
	s := &c.streams[i]
	hv := &d.hv
	switch blk.role {
	case roleRequest:
		if blk.unknown {
			s.req.HeadersUnknown = true
			break
		}
		r := &s.req
		r.Method, r.Scheme, r.Authority, r.Path = hv.v[fMethod], hv.v[fScheme], hv.v[fAuthority], hv.v[fPath]
		r.UserAgent, r.TraceParent, r.TraceState = hv.v[fUserAgent], hv.v[fTraceParent], hv.v[fTraceState]
		r.ContentType = hv.v[fContentType]
	case roleResponse:
		r := &s.resp
		if blk.unknown {
			r.HeadersUnknown = true
			// Whether it was 1xx, final or trailers is unknown too.
			s.respFinal = true
			break
		}
		if !s.respFinal {
			code := parseStatus(hv.v[fStatus])
			if code >= 100 && code < 200 && !blk.endStream {
				break // interim: the final response is still to come
			}
			s.respFinal = true
			r.StatusCode = code
			r.ContentType = hv.v[fContentType]
		}
		if blk.endStream {
			// Trailers, or a Trailers-Only response.
			if hv.set[fGRPCStatus] {
				r.GRPCStatus = parseGRPCStatus(hv.v[fGRPCStatus])
				r.GRPCMessage = hv.v[fGRPCMessage]
			}
		}
	}
	if blk.endStream {
		c.endSide(i, d.dir, d.chEnd)
	}
	hv.v = [nFields]string{}
}

// parseStatus parses a 3-digit :status, 0 when malformed.
func parseStatus(s string) int {
	if len(s) != 3 {
		return 0
	}
	n := 0
	for i := 0; i < 3; i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0
		}
		n = n*10 + int(s[i]-'0')
	}
	if n < 100 {
		return 0
	}
	return n
}

// parseGRPCStatus parses a grpc-status code, -1 when malformed.
func parseGRPCStatus(s string) int {
	if len(s) == 0 || len(s) > 4 {
		return -1
	}
	n := 0
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return -1
		}
		n = n*10 + int(s[i]-'0')
	}
	return n
}
