package http1

import "fmt"

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
	// means the tail was not captured (a gap); sendfile chunks have no
	// Data at all. A Size below len(Data) is treated as len(Data).
	Size int
	// Start and End are opaque stamps of the first and last byte of the
	// chunk; they are copied into messages untouched.
	Start, End uint64
	// Pos, when not 0, is the position of the chunk's first byte in its
	// direction's stream, counting one per byte (a TCP sequence number,
	// say); each message then reports the Pos of its own first byte.
	Pos uint64
}

// Limits bound the memory and work spent on one connection. A nil *Limits,
// or a zero field, means the default.
type Limits struct {
	// MaxHeadBytes bounds a message head (start line and fields) and a
	// chunked trailer section. Default 16 KiB.
	MaxHeadBytes int
	// MaxPending bounds requests queued while waiting for their response;
	// beyond it the oldest is emitted as incomplete. Default 64.
	MaxPending int
	// MaxValueBytes bounds each retained string (target, host, ...);
	// longer values are cut. Default 2 KiB.
	MaxValueBytes int
}

// Defaults applied to zero Limits fields.
const (
	DefaultMaxHeadBytes  = 16 << 10
	DefaultMaxPending    = 64
	DefaultMaxValueBytes = 2 << 10
)

func (l *Limits) resolve() Limits {
	var r Limits
	if l != nil {
		r = *l
	}
	if r.MaxHeadBytes <= 0 {
		r.MaxHeadBytes = DefaultMaxHeadBytes
	}
	if r.MaxPending <= 0 {
		r.MaxPending = DefaultMaxPending
	}
	if r.MaxValueBytes <= 0 {
		r.MaxValueBytes = DefaultMaxValueBytes
	}
	return r
}

// RequestMeta is what the parser retains of a request. Only the fields
// listed here are kept; every other header, including credentials and
// cookies, is validated and forgotten. Strings are copies, valid UTF-8 and at
// most Limits.MaxValueBytes long.
type RequestMeta struct {
	Method string
	// Target is the request-target as sent, except that userinfo in an
	// absolute-form target ("http://user:pass@host/") is removed. The
	// query string is kept: exporters should redact it as they see fit.
	Target string
	// Proto is "1.0" or "1.1"; empty only when HeadTruncated cut the
	// start line.
	Proto       string
	Host        string
	UserAgent   string
	TraceParent string
	// TraceState is the first tracestate field line only.
	TraceState string
	// ContentLength is the Content-Length header, -1 when absent.
	ContentLength int64
	Chunked       bool
	// BodySize counts body bytes that moved, gaps included; for chunked
	// bodies it counts chunk data, not framing.
	BodySize int64
	// Start is the stamp of the chunk carrying the first byte, End the
	// stamp of the chunk carrying the last one.
	Start, End uint64
	// Pos is the position of the first byte (Chunk.Pos plus its offset in
	// the chunk), 0 when unknown.
	Pos uint64
	// HeadTruncated: a gap hid part of the head, so fields after it
	// (possibly the framing) are unknown and the body was not followed.
	HeadTruncated bool
	// BodyTruncated: a gap or error hit the chunked framing, so BodySize
	// is a lower bound.
	BodyTruncated bool
}

// ResponseMeta is what the parser retains of a final (non-1xx) response.
type ResponseMeta struct {
	Proto         string
	StatusCode    int
	ContentLength int64
	Chunked       bool
	BodySize      int64
	Start, End    uint64
	Pos           uint64 // as RequestMeta.Pos
	// Close reports that the connection will close after this response:
	// either side asked for it, HTTP/1.0 without keep-alive, or the body
	// is delimited by the close.
	Close         bool
	HeadTruncated bool
	BodyTruncated bool
}

// Exchange pairs a request with its response.
type Exchange struct {
	Request  RequestMeta
	Response ResponseMeta
	// Incomplete reports that no complete response was seen: the request
	// was flushed by Close, evicted by Limits.MaxPending, or overtaken after
	// the response direction lost sync. Response then holds whatever
	// was parsed of it (StatusCode 0 if nothing).
	Incomplete bool
}

// pending is a request waiting for its response, or, when responded is set,
// a response waiting for the end of its request body (early responses such
// as 413 are legal).
type pending struct {
	seq       uint64
	req       RequestMeta
	resp      ResponseMeta
	reqDone   bool
	responded bool
	// stale marks a request that was waiting when the response direction
	// lost a message: a later response most likely belongs to a newer
	// request, so stale ones are skipped when a fresher one exists.
	stale bool
	// reqClose: the request asked the server to close after responding.
	reqClose bool
}

// Conn parses both directions of one HTTP/1.x connection and pairs requests
// with responses in FIFO order. It is not safe for concurrent use.
type Conn struct {
	lim      Limits
	ready    bool
	s        [2]stream
	q        []pending // ring buffer of pending requests
	qHead    int
	qLen     int
	seq      uint64
	upgraded bool

	// Per-call state, so emitting and reporting need no plumbing.
	out []Exchange
	err error
}

// NewConn returns a parser for a new connection. l may be nil.
func NewConn(l *Limits) *Conn {
	c := &Conn{}
	c.setup(l)
	return c
}

func (c *Conn) setup(l *Limits) {
	c.lim = l.resolve()
	c.s[Request].dir = Request
	c.s[Response].dir = Response
	for i := range c.s {
		c.s[i].reset()
	}
	c.ready = true
}

// JoinMidStream tells c that bytes of the connection went unseen: the
// tracer attached to a connection already open, or lost events. Both
// directions then wait, as after a parse error, for a chunk that begins with
// a plausible start line (LooksLikeRequest, LooksLikeResponse) instead of
// taking the next chunk for the start of a message: a read can begin
// anywhere in a message, and "OST /echo HTTP/1.1" is a well-formed request
// line with an unknown method.
func (c *Conn) JoinMidStream() {
	if !c.ready {
		c.setup(nil)
	}
	for i := range c.s {
		c.s[i].reset()
		c.s[i].st = stResync
	}
}

// Upgraded reports that the connection left HTTP/1.x (101 Switching
// Protocols, or a successful CONNECT); all later bytes are ignored.
func (c *Conn) Upgraded() bool { return c.upgraded }

// Feed parses one chunk moving in direction dir and appends the exchanges
// it completes to out. It returns the first error met in this call; parsing
// goes on after errors, resyncing as described in the package doc, so the
// returned exchanges are valid even when err is not nil.
func (c *Conn) Feed(dir Direction, ch Chunk, out []Exchange) ([]Exchange, error) {
	if dir > Response {
		return out, fmt.Errorf("%w: %d", ErrDirection, dir)
	}
	if !c.ready {
		c.setup(nil)
	}
	if c.upgraded {
		return out, nil
	}
	c.out, c.err = out, nil
	c.feed(&c.s[dir], ch)
	out, err := c.out, c.err
	c.out, c.err = nil, nil
	return out, err
}

// Close ends the connection: a body delimited by the close is complete, and
// every exchange still open is appended to out in order, as Incomplete
// unless its response completed. Partial heads are dropped. c is then reset
// and may be reused for another connection.
func (c *Conn) Close(out []Exchange) []Exchange {
	if !c.ready {
		c.setup(nil)
	}
	c.out = out
	if !c.upgraded {
		rs := &c.s[Response]
		switch {
		case rs.st == stUntilClose:
			c.done(rs)
		case rs.st.inBody() && !rs.drop:
			if p := c.find(rs.seq); p != nil {
				p.resp = rs.resp
				p.resp.BodySize = rs.body
				p.resp.End = rs.chEnd
			}
		}
		if rq := &c.s[Request]; rq.st.inBody() {
			if p := c.find(rq.seq); p != nil {
				p.req.BodySize = rq.body
				p.req.End = rq.chEnd
			}
		}
	}
	for c.qLen > 0 {
		c.emitFront()
	}
	out = c.out
	c.out, c.err = nil, nil
	c.upgraded = false
	c.seq = 0
	c.qHead = 0
	for i := range c.q {
		c.q[i] = pending{}
	}
	for i := range c.s {
		c.s[i].reset()
	}
	return out
}

// report records the first error of the current Feed call.
func (c *Conn) report(dir Direction, r Reason) {
	if c.err == nil {
		c.err = &ParseError{Dir: dir, Reason: r}
	}
}

func (c *Conn) at(i int) *pending {
	return &c.q[(c.qHead+i)%len(c.q)]
}

// find returns the queued entry with sequence number seq, or nil once it has
// been emitted or evicted.
func (c *Conn) find(seq uint64) *pending {
	for i := 0; i < c.qLen; i++ {
		if p := c.at(i); p.seq == seq {
			return p
		}
	}
	return nil
}

// push queues a request whose head is complete, evicting the oldest when
// full, and returns its sequence number.
func (c *Conn) push(req *RequestMeta, done, reqClose bool) uint64 {
	if c.qLen == c.lim.MaxPending {
		c.emitFront()
		c.report(Request, TooManyPending)
	}
	if c.qLen == len(c.q) {
		n := min(max(4, 2*len(c.q)), c.lim.MaxPending)
		q := make([]pending, n)
		for i := 0; i < c.qLen; i++ {
			q[i] = *c.at(i)
		}
		c.q, c.qHead = q, 0
	}
	c.seq++
	*c.at(c.qLen) = pending{seq: c.seq, req: *req, reqDone: done, reqClose: reqClose}
	c.qLen++
	return c.seq
}

// emitFront pops the oldest entry into out, as Incomplete unless its
// response completed.
func (c *Conn) emitFront() {
	p := c.at(0)
	c.out = append(c.out, Exchange{Request: p.req, Response: p.resp, Incomplete: !p.responded})
	*p = pending{}
	c.qHead = (c.qHead + 1) % len(c.q)
	c.qLen--
}

// drain emits entries, in order, whose request and response are both over.
func (c *Conn) drain() {
	for c.qLen > 0 {
		if p := c.at(0); !p.responded || !p.reqDone {
			return
		}
		c.emitFront()
	}
}

// target picks the request a new response answers: the oldest unanswered one
// that is not stale, after flushing the stale ones queued before it; failing
// that, the oldest stale one.
func (c *Conn) target() *pending {
	first, fresh := -1, -1
	for i := 0; i < c.qLen; i++ {
		p := c.at(i)
		if p.responded {
			continue
		}
		if first < 0 {
			first = i
		}
		if !p.stale {
			fresh = i
			break
		}
	}
	if first < 0 {
		return nil
	}
	if fresh < 0 {
		return c.at(first)
	}
	seq := c.at(fresh).seq
	for c.at(0).seq != seq {
		c.emitFront()
	}
	return c.at(0)
}

// markStale is called when the response direction loses a message whose
// request is unknown.
func (c *Conn) markStale() {
	for i := 0; i < c.qLen; i++ {
		if p := c.at(i); !p.responded {
			p.stale = true
		}
	}
}
