package http2

import (
	"fmt"
	"strings"

	"golang.org/x/net/http2/hpack"
)

// Direction says which side of an exchange a chunk belongs to. The caller
// maps socket reads and writes onto it from the connection's role.
type Direction uint8

const (
	Request  Direction = iota // bytes sent by the client
	Response                  // bytes sent by the server
)

func (d Direction) String() string {
	switch d {
	case Request:
		return "request"
	case Response:
		return "response"
	}
	return "invalid"
}

// Chunk is what one read or write syscall moved.
type Chunk struct {
	// Data holds the captured bytes: a prefix of what moved. The parser
	// copies what it keeps, so the caller may reuse the buffer.
	Data []byte
	// Size is the number of bytes that really moved. Size > len(Data)
	// means the tail was not captured (a gap). A Size below len(Data) is
	// treated as len(Data).
	Size int
	// Start and End are opaque stamps of the first and last byte of the
	// chunk; they are copied into messages untouched.
	Start, End uint64
}

// Limits bound the memory and work spent on one connection. A nil *Limits,
// or a zero field, means the default.
type Limits struct {
	// MaxStreams bounds the streams tracked at once; opening one more
	// emits the oldest as Incomplete. Default 256.
	MaxStreams int
	// MaxFrameBytes bounds the payload of a frame other than DATA that is
	// buffered to be parsed (DATA is only counted, never buffered). Larger
	// frames are skipped; a skipped header block makes its direction's
	// HPACK state unknown. Default 64 KiB.
	MaxFrameBytes int
	// MaxValueBytes bounds each retained string; longer values are cut.
	// Default 2 KiB.
	MaxValueBytes int
	// MaxHeaderListBytes bounds a decoded header block, counted as
	// SETTINGS_MAX_HEADER_LIST_SIZE counts it (name + value + 32 per
	// field), and each single HPACK string. A larger block is still
	// decoded, to keep the dynamic table right, but comes out
	// HeadersUnknown; a larger string makes the HPACK state unknown.
	// Default 64 KiB.
	MaxHeaderListBytes int
}

// Defaults applied to zero Limits fields.
const (
	DefaultMaxStreams         = 256
	DefaultMaxFrameBytes      = 64 << 10
	DefaultMaxValueBytes      = 2 << 10
	DefaultMaxHeaderListBytes = 64 << 10
)

func (l *Limits) resolve() Limits {
	var r Limits
	if l != nil {
		r = *l
	}
	if r.MaxStreams <= 0 {
		r.MaxStreams = DefaultMaxStreams
	}
	if r.MaxFrameBytes <= 0 {
		r.MaxFrameBytes = DefaultMaxFrameBytes
	}
	if r.MaxValueBytes <= 0 {
		r.MaxValueBytes = DefaultMaxValueBytes
	}
	if r.MaxHeaderListBytes <= 0 {
		r.MaxHeaderListBytes = DefaultMaxHeaderListBytes
	}
	return r
}

// RequestMeta is what the parser retains of a request. Only the fields
// listed here are kept; every other header, including credentials and
// cookies, is decoded (HPACK requires it) and forgotten. Strings are valid
// UTF-8 without control characters and at most Limits.MaxValueBytes long.
type RequestMeta struct {
	// Pseudo-headers.
	Method, Scheme, Authority, Path string
	UserAgent, TraceParent          string
	// TraceState is the first tracestate field only.
	TraceState  string
	ContentType string
	// Start is the stamp of the chunk carrying the first byte of the
	// HEADERS frame, End that of the chunk that ended the request (the end
	// of the frame carrying END_STREAM).
	Start, End uint64
	// BodySize counts DATA payload bytes, gaps included; padding is
	// excluded where it was captured.
	BodySize int64
	// HeadersUnknown: the header block could not be decoded (HPACK state
	// unknown after a gap or a mid-stream join, block too large), so the
	// strings above are empty. They are never guessed: a dynamic table out
	// of sync decodes to other requests' values.
	HeadersUnknown bool
}

// ResponseMeta is what the parser retains of a response.
type ResponseMeta struct {
	// StatusCode is the final (non-1xx) :status, 0 if unknown.
	StatusCode  int
	ContentType string
	// GRPCStatus is the grpc-status of the trailers, or of a Trailers-Only
	// response (one HEADERS frame ending the stream); -1 when absent.
	GRPCStatus int
	// GRPCMessage is grpc-message as sent (percent-encoded).
	GRPCMessage string
	// Start is the stamp of the chunk carrying the first byte of the first
	// response HEADERS frame (1xx included), End that of the chunk ending
	// the response.
	Start, End uint64
	BodySize   int64
	// HeadersUnknown: a header block of the response (headers or
	// trailers) could not be decoded. Values from blocks that did decode
	// are kept: a status from the headers survives lost trailers.
	HeadersUnknown bool
}

// Exchange is one stream: a request and its response.
type Exchange struct {
	StreamID uint32
	Request  RequestMeta
	Response ResponseMeta
	// Incomplete reports that the stream did not end normally: it was
	// reset before its response ended, refused by GOAWAY, evicted by
	// Limits.MaxStreams, or still open at Close.
	Incomplete bool
	// ResetCode is the RST_STREAM error code when the stream was reset,
	// 0 otherwise (NO_ERROR is 0 as well: a server may reset a request it
	// answered early, RFC 9113 §8.1).
	ResetCode uint32
}

// IsGRPC reports whether the request is gRPC: its content-type is
// application/grpc, possibly with a +format suffix or parameters.
func (x *Exchange) IsGRPC() bool {
	ct, ok := strings.CutPrefix(x.Request.ContentType, "application/grpc")
	return ok && (ct == "" || ct[0] == '+' || ct[0] == ';')
}

// Stats counts what the parser skipped on purpose, as opposed to the
// failures reported by ParseError.
type Stats struct {
	// PushPromises counts PUSH_PROMISE frames: pushed streams produce no
	// exchange.
	PushPromises uint64
	// UnknownBlocks counts header blocks that could not be decoded and left
	// HeadersUnknown set (after JoinMidStream, that is every block).
	UnknownBlocks uint64
}

// Conn parses both directions of one HTTP/2 connection. It is not safe for
// concurrent use.
type Conn struct {
	lim     Limits
	ready   bool
	dead    bool // bad preface: not HTTP/2, nothing more is parsed
	d       [2]dir
	streams []stream // open streams, oldest first
	// lastClient is the highest client stream id seen opening: a request
	// HEADERS frame at or below it belongs to a stream already gone.
	lastClient uint32
	stats      Stats

	// Per-call state, so emitting and reporting need no plumbing.
	out []Exchange
	err error
}

// NewConn returns a parser for a new connection, which expects the client
// preface in the Request direction and a SETTINGS frame first in the
// Response direction. l may be nil.
func NewConn(l *Limits) *Conn {
	c := &Conn{}
	c.setup(l)
	return c
}

func (c *Conn) setup(l *Limits) {
	c.lim = l.resolve()
	for i := range c.d {
		d := &c.d[i]
		d.dir = Direction(i)
		d.lim = &c.lim
		if d.dec == nil {
			d.dec = hpack.NewDecoder(initialTableSize, d.emit)
		}
	}
	c.ready = true
	c.reset()
}

// reset makes c a fresh connection, keeping buffers.
func (c *Conn) reset() {
	c.dead = false
	for i := range c.streams {
		c.streams[i] = stream{}
	}
	c.streams = c.streams[:0]
	c.lastClient = 0
	c.stats = Stats{}
	for i := range c.d {
		c.d[i].reset()
	}
	c.d[Request].st = stPreface
}

// JoinMidStream tells c that it is attached to a connection already open:
// there is no preface, and each direction waits for a chunk that begins
// with a plausible frame header (see the package doc). The HPACK state of
// both directions is unknown for the rest of the connection, so every
// header block comes out HeadersUnknown; streams still produce exchanges
// with their ids, stamps, end and body sizes.
func (c *Conn) JoinMidStream() {
	if !c.ready {
		c.setup(nil)
	}
	c.dead = false
	for i := range c.d {
		c.d[i].resync()
	}
}

// StartUpgraded starts c on a connection upgraded from HTTP/1.1 (h2c,
// RFC 7540 §3.2): stream 1 is the upgrading request, already sent whole and
// described by req; the client preface comes next in the Request
// direction, and the server's SETTINGS then the response on stream 1 in the
// Response direction.
func (c *Conn) StartUpgraded(req RequestMeta) {
	if !c.ready {
		c.setup(nil)
	}
	c.reset()
	c.streams = append(c.streams, stream{id: 1, req: req, resp: ResponseMeta{GRPCStatus: -1}, reqDone: true})
	c.lastClient = 1
}

// Feed parses one chunk moving in direction dir and appends the exchanges
// it completes to out. It returns the first error met in this call; parsing
// goes on after errors where it can (see the package doc), so the returned
// exchanges are valid even when err is not nil.
func (c *Conn) Feed(dir Direction, ch Chunk, out []Exchange) ([]Exchange, error) {
	if dir > Response {
		return out, fmt.Errorf("%w: %d", ErrDirection, dir)
	}
	if !c.ready {
		c.setup(nil)
	}
	if c.dead {
		return out, nil
	}
	c.out, c.err = out, nil
	c.feed(&c.d[dir], ch)
	out, err := c.out, c.err
	c.out, c.err = nil, nil
	return out, err
}

// Close ends the connection: every stream still open is appended to out,
// oldest first, as Incomplete unless its response had ended. c is then reset
// (Stats included) and may be reused for another connection.
func (c *Conn) Close(out []Exchange) []Exchange {
	if !c.ready {
		c.setup(nil)
	}
	c.out = out
	for len(c.streams) > 0 {
		s := &c.streams[0]
		c.emit(0, !s.respDone, 0)
	}
	out = c.out
	c.out, c.err = nil, nil
	c.reset()
	return out
}

// Stats returns the counters of the connection since it started.
func (c *Conn) Stats() Stats { return c.stats }

// report records the first error of the current Feed call.
func (c *Conn) report(dir Direction, r Reason) {
	if c.err == nil {
		c.err = &ParseError{Dir: dir, Reason: r}
	}
}

// LooksLikeHTTP2 reports whether data starts an HTTP/2 connection: the client
// preface, or a server's first frame, a SETTINGS frame (type 4, not ACK,
// stream 0, a length that is a multiple of 6).
func LooksLikeHTTP2(data []byte) bool {
	if len(data) >= len(clientPreface) && string(data[:len(clientPreface)]) == clientPreface {
		return true
	}
	if len(data) < frameHeaderLen {
		return false
	}
	fh := parseFrameHeader(data)
	return fh.typ == frameSettings && fh.flags&flagAck == 0 && data[5]&0x80 == 0 && fh.stream == 0 && fh.length%6 == 0
}

// LooksLikeFrames reports whether data, bytes of one direction of a
// connection sonde joined in the middle, starts at what looks like an
// HTTP/2 frame boundary: a plausible frame header, and the next one too
// when data holds it. It is how a caller tells an HTTP/2 connection that
// was open before it attached, to hand it to a Conn set to JoinMidStream.
func LooksLikeFrames(dir Direction, data []byte) bool {
	l := (*Limits)(nil).resolve()
	return plausibleStart(dir, data, &l)
}
