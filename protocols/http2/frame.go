package http2

import (
	"encoding/binary"

	"golang.org/x/net/http2/hpack"
)

// clientPreface starts every HTTP/2 connection in the Request direction
// (RFC 9113 §3.4).
const clientPreface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

const frameHeaderLen = 9

// Frame types and flags of RFC 9113 §6.
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameSettings     = 0x4
	framePushPromise  = 0x5
	framePing         = 0x6
	frameGoAway       = 0x7
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream  = 0x1
	flagAck        = 0x1
	flagEndHeaders = 0x4
	flagPadded     = 0x8
	flagPriority   = 0x20
)

// validFlags are the flags each known type defines, for resync: a real
// frame header seldom sets undefined flags, a random one often does.
var validFlags = [...]uint8{
	frameData:         flagEndStream | flagPadded,
	frameHeaders:      flagEndStream | flagEndHeaders | flagPadded | flagPriority,
	framePriority:     0,
	frameRSTStream:    0,
	frameSettings:     flagAck,
	framePushPromise:  flagEndHeaders | flagPadded,
	framePing:         flagAck,
	frameGoAway:       0,
	frameWindowUpdate: 0,
	frameContinuation: flagEndHeaders,
}

// maxResyncData bounds the length of a DATA frame accepted as the first
// frame after a resync. Peers may allow up to 16 MiB, but common stacks
// write at most 16 KiB (gRPC) to 1 MiB (Go) per frame, and a bound rejects
// most random headers, which would claim megabytes.
const maxResyncData = 1 << 20

// SETTINGS_HEADER_TABLE_SIZE: its default, and the most this parser lets a
// peer's encoder use (more makes the HPACK state unknown), since each
// direction's dynamic table lives in the Conn.
const (
	initialTableSize = 4096
	maxTableSize     = 64 << 10
	settingTableSize = 0x1
)

// state is where a direction stands in its byte stream.
type state uint8

const (
	stPreface state = iota // the client preface
	stHeader               // a frame header
	stPayload              // a frame payload
	stResync               // waiting for a chunk that starts with a frame
)

type frameHeader struct {
	length int
	typ    uint8
	flags  uint8
	stream uint32
}

func parseFrameHeader(b []byte) frameHeader {
	return frameHeader{
		length: int(b[0])<<16 | int(b[1])<<8 | int(b[2]),
		typ:    b[3],
		flags:  b[4],
		stream: binary.BigEndian.Uint32(b[5:]) & (1<<31 - 1),
	}
}

// role is what a header block means to the stream it is on.
type role uint8

const (
	roleNone     role = iota // not wanted: decoded only to keep HPACK in sync
	roleRequest              // a request's headers
	roleResponse             // a response's headers or trailers
)

// block is a header block being received: a HEADERS or PUSH_PROMISE frame
// and the CONTINUATION frames after it.
type block struct {
	active    bool
	stream    uint32
	role      role
	endStream bool
	unknown   bool // not decoded: the values must not be used
}

// dir is one direction of a connection.
type dir struct {
	dir Direction
	lim *Limits
	st  state
	// first: the next frame is the peer's first and must be SETTINGS.
	first bool

	preface int // bytes of the client preface matched

	hdr  [frameHeaderLen]byte
	hdrN int
	fh   frameHeader
	// frameStart is the Start stamp of the chunk with the frame's first byte.
	frameStart      uint64
	chStart, chEnd  uint64
	remain          int    // payload bytes still to come
	keep            int    // payload bytes to buffer: a prefix of the payload
	buf             []byte // the buffered prefix
	damaged         bool   // a gap hid part of the buffered prefix
	tooLarge        bool   // a header-block frame over MaxFrameBytes, skipped
	blk             block
	dec             *hpack.Decoder
	hpackOK         bool // the dynamic table is known
	trusted         bool // frame boundaries known since the connection start
	tableMax        uint32
	hv              values // the header block's retained values
	limitsFailed    bool   // the block exceeded MaxHeaderListBytes
	headerListBytes int
}

func (d *dir) reset() {
	d.st = stHeader
	d.first = true
	d.preface = 0
	d.hdrN = 0
	d.remain, d.keep = 0, 0
	d.buf = d.buf[:0]
	d.damaged, d.tooLarge = false, false
	d.blk = block{}
	d.hpackOK, d.trusted = true, true
	d.tableMax = initialTableSize
	d.resetDecoder()
	d.hv = values{}
}

// resetDecoder brings the decoder back to the state of a new connection:
// an empty dynamic table of the initial size. hpack.Decoder has no Reset,
// but shrinking the table to 0 evicts every entry, and a second Close
// clears what a failed first one left.
func (d *dir) resetDecoder() {
	_ = d.dec.Close()
	_ = d.dec.Close()
	d.dec.SetMaxDynamicTableSize(0)
	d.dec.SetAllowedMaxDynamicTableSize(d.tableMax)
	d.dec.SetMaxDynamicTableSize(min(d.tableMax, initialTableSize))
	d.dec.SetMaxStringLength(d.lim.MaxHeaderListBytes)
	d.dec.SetEmitEnabled(true)
}

// resync puts d in search of a frame boundary. Whatever the bytes skipped
// held, the dynamic table can no longer be trusted, and neither can the
// boundary found, so HPACK stays unknown for the rest of the connection.
func (d *dir) resync() {
	d.st = stResync
	d.first = false
	d.hdrN = 0
	d.remain, d.keep = 0, 0
	d.buf = d.buf[:0]
	d.damaged, d.tooLarge = false, false
	d.hpackOK, d.trusted = false, false
}

func (c *Conn) feed(d *dir, ch Chunk) {
	d.chStart, d.chEnd = ch.Start, ch.End
	data := ch.Data
	gap := max(ch.Size-len(data), 0)
	if d.st == stResync {
		if !plausibleStart(d.dir, data, &c.lim) {
			return
		}
		d.st = stHeader
	}
	for len(data) > 0 {
		var n int
		switch d.st {
		case stPreface:
			n = min(len(data), len(clientPreface)-d.preface)
			if string(data[:n]) != clientPreface[d.preface:d.preface+n] {
				c.badPreface(d)
				return
			}
			if d.preface += n; d.preface == len(clientPreface) {
				d.st = stHeader
			}
		case stHeader:
			if d.hdrN == 0 {
				d.frameStart = ch.Start
			}
			n = copy(d.hdr[d.hdrN:], data)
			if d.hdrN += n; d.hdrN == frameHeaderLen {
				c.frameHeader(d)
			}
		case stPayload:
			n = min(d.remain, len(data))
			if k := d.keep - len(d.buf); k > 0 {
				d.buf = append(d.buf, data[:min(k, n)]...)
			}
			if d.remain -= n; d.remain == 0 {
				c.frameEnd(d)
			}
		case stResync:
			// An error mid-chunk: where the next frame starts is unknown.
			return
		}
		if c.dead {
			return
		}
		data = data[n:]
	}
	if gap > 0 {
		c.gap(d, gap)
	}
}

// gap accounts for n bytes that moved but were not captured.
func (c *Conn) gap(d *dir, n int) {
	switch d.st {
	case stPreface, stHeader:
		// The gap holds (part of) a frame header: boundaries are lost.
		c.lostSync(d, LostSync)
	case stPayload:
		k := min(n, d.remain)
		if len(d.buf) < d.keep {
			d.damaged = true
		}
		if d.remain -= k; d.remain == 0 {
			c.frameEnd(d)
		}
		if n > k && d.st != stResync {
			// The next frame began inside the gap.
			c.lostSync(d, LostSync)
		}
	}
}

// lostSync reports r and resyncs d. A header block in progress is lost, and
// ends as unknown so its stream still comes out.
func (c *Conn) lostSync(d *dir, r Reason) {
	c.report(d.dir, r)
	if d.blk.active {
		d.blk.unknown = true
		c.endBlock(d)
	}
	d.resync()
}

func (c *Conn) badPreface(d *dir) {
	c.report(d.dir, BadPreface)
	c.dead = true
}

// frameHeader acts on a complete frame header: checks it and sets up how
// its payload is read.
func (c *Conn) frameHeader(d *dir) {
	fh := parseFrameHeader(d.hdr[:])
	d.fh = fh
	d.hdrN = 0
	if d.first {
		// RFC 9113 §3.4: each side's preface ends with a SETTINGS frame.
		if fh.typ != frameSettings || fh.flags&flagAck != 0 || fh.stream != 0 || fh.length%6 != 0 {
			c.badPreface(d)
			return
		}
		d.first = false
	}
	if !validFrame(d.dir, fh) || d.blk.active && (fh.typ != frameContinuation || fh.stream != d.blk.stream) {
		c.lostSync(d, BadFrame)
		return
	}
	d.buf = d.buf[:0]
	d.damaged, d.tooLarge = false, false
	d.remain = fh.length
	switch fh.typ {
	case frameData:
		d.keep = 0
		if fh.flags&flagPadded != 0 {
			d.keep = 1 // the pad length
		}
	case frameHeaders, framePushPromise, frameContinuation, frameSettings:
		d.keep = fh.length
		if fh.length > c.lim.MaxFrameBytes {
			d.keep = 0
			d.tooLarge = true
			c.report(d.dir, FrameTooLarge)
		}
	case frameRSTStream:
		d.keep = 4
	case frameGoAway:
		d.keep = 8 // last stream id and error code; the debug data is skipped
	default:
		d.keep = 0
	}
	if d.remain == 0 {
		c.frameEnd(d)
		return
	}
	d.st = stPayload
}

// validFrame applies the frame-size and stream-id rules of RFC 9113 §6 that
// make a peer close the connection: breaking them means garbage or lost
// framing. Unknown types are legal and skipped.
func validFrame(dir Direction, fh frameHeader) bool {
	switch fh.typ {
	case frameData, frameHeaders, frameContinuation:
		return fh.stream != 0
	case framePriority:
		return fh.stream != 0 && fh.length == 5
	case frameRSTStream:
		return fh.stream != 0 && fh.length == 4
	case frameSettings:
		return fh.stream == 0 && fh.length%6 == 0 && (fh.flags&flagAck == 0 || fh.length == 0)
	case framePushPromise:
		return fh.stream != 0 && dir == Response
	case framePing:
		return fh.stream == 0 && fh.length == 8
	case frameGoAway:
		return fh.stream == 0 && fh.length >= 8
	case frameWindowUpdate:
		return fh.length == 4
	}
	return true
}

// plausibleHeader is stricter than validFrame, for a guessed boundary: a
// known type, the reserved bit clear, only defined flags, a length within
// limits, and client streams odd.
func plausibleHeader(dir Direction, b []byte, l *Limits) bool {
	fh := parseFrameHeader(b)
	if fh.typ > frameContinuation || b[5]&0x80 != 0 || fh.flags&^validFlags[fh.typ] != 0 || !validFrame(dir, fh) {
		return false
	}
	if fh.typ == frameData {
		if fh.length > maxResyncData {
			return false
		}
	} else if fh.length > l.MaxFrameBytes {
		return false
	}
	if fh.typ == frameHeaders && dir == Request && fh.stream%2 == 0 {
		return false
	}
	return true
}

// plausibleStart reports whether a chunk can be taken to start at a frame
// boundary: its first frame header is plausible, and so is the next one when
// the chunk holds it.
func plausibleStart(dir Direction, data []byte, l *Limits) bool {
	if len(data) < frameHeaderLen || !plausibleHeader(dir, data, l) {
		return false
	}
	next := frameHeaderLen + parseFrameHeader(data).length
	if next+frameHeaderLen <= len(data) && !plausibleHeader(dir, data[next:], l) {
		return false
	}
	return true
}

// frameEnd acts on a frame whose payload has all moved.
func (c *Conn) frameEnd(d *dir) {
	d.st = stHeader
	fh := d.fh
	p := d.buf
	whole := !d.damaged && len(p) == d.keep
	if d.dir == Request && fh.stream%2 == 1 && fh.stream > c.lastClient && fh.typ != frameHeaders && fh.typ != framePriority {
		// A client frame on a stream not seen opening: the stream was
		// opened before a join or resync (only HEADERS opens a stream,
		// and only PRIORITY may name an idle one). Its ids are spent, so
		// a HEADERS frame on it later is trailers, not a new request.
		c.lastClient = fh.stream
	}
	switch fh.typ {
	case frameData:
		body := int64(fh.length)
		if fh.flags&flagPadded != 0 {
			body-- // the pad length byte
			if whole {
				if int(p[0]) >= fh.length {
					c.lostSync(d, BadFrame)
					return
				}
				body -= int64(p[0])
			}
		}
		c.data(d, fh, body)
	case frameHeaders, framePushPromise, frameContinuation:
		c.headerFrame(d, whole && !d.tooLarge)
	case frameSettings:
		if whole && !d.tooLarge && fh.flags&flagAck == 0 {
			c.settings(d, p)
		}
	case frameRSTStream:
		if whole {
			c.rstStream(fh.stream, binary.BigEndian.Uint32(p))
		}
	case frameGoAway:
		if whole && d.dir == Response {
			c.goAway(binary.BigEndian.Uint32(p) & (1<<31 - 1))
		}
	}
	d.buf = d.buf[:0]
}

// settings applies SETTINGS_HEADER_TABLE_SIZE: it bounds the dynamic table
// of the encoder on the other side, so the decoder of the opposite direction
// (RFC 9113 §6.5.2). Losing a SETTINGS frame costs little: the table's real
// size is set by size updates inside the header blocks, and this bound only
// checks them.
func (c *Conn) settings(d *dir, p []byte) {
	for ; len(p) >= 6; p = p[6:] {
		if binary.BigEndian.Uint16(p) != settingTableSize {
			continue
		}
		o := &c.d[1-d.dir]
		o.tableMax = min(binary.BigEndian.Uint32(p[2:]), maxTableSize)
		o.dec.SetAllowedMaxDynamicTableSize(o.tableMax)
	}
}
