package http1

// state is where a direction stands in its byte stream.
type state uint8

const (
	stHead       state = iota // start line and field lines
	stLength                  // Content-Length body
	stChunkSize               // chunk-size line, extensions included
	stChunkData               // chunk data
	stChunkEnd                // CRLF after chunk data
	stTrailer                 // trailer field lines
	stUntilClose              // body delimited by the connection close
	stResync                  // discarding until a chunk starts a message
)

// inBody reports states in which the message is already queued or paired.
func (s state) inBody() bool { return s >= stLength && s <= stUntilClose }

// Indexes of retained strings in stream.fld.
const (
	fMethod = iota
	fTarget
	fHost
	fUserAgent
	fTraceParent
	fTraceState
	nFields
)

// span locates a retained value in stream.keep.
type span struct {
	off, n int
	set    bool
}

// headInfo collects what the field lines say about framing and persistence.
type headInfo struct {
	cl          int64 // -1: no Content-Length
	te          bool  // Transfer-Encoding present
	chunked     bool  // chunked seen in Transfer-Encoding
	chunkedLast bool  // chunked is the final coding
	close       bool
	keepAlive   bool
}

// chunkLine is the chunk-size line decoder, byte at a time so that a line
// may be split anywhere.
type chunkLine struct {
	phase  uint8
	digits int
	size   int64
	n      int // line length so far
}

// stream is one direction of a connection.
type stream struct {
	dir   Direction
	st    state
	chEnd uint64 // End stamp of the chunk being fed
	chBeg uint64 // Start stamp of the chunk being fed
	start uint64 // Start stamp of the current message's first byte
	chPos uint64 // Pos of the chunk being fed, 0 if unknown
	at    int    // bytes of that chunk consumed before the current step
	pos   uint64 // Pos of the current message's first byte

	line      []byte // partial line carried across chunks
	headBytes int
	lineNo    int
	h         headInfo
	req       RequestMeta
	resp      ResponseMeta

	// Retained values are gathered in keep and turned into strings with one
	// allocation per message; prev lets identical values (same Host, same
	// User-Agent on keep-alive) be reused without any.
	keep []byte
	fld  [nFields]span
	prev [nFields]string

	remain    int64 // bytes left in a Content-Length body or chunk
	body      int64
	truncBody bool
	chunk     chunkLine

	// hold keeps, in resync, a chunk too short to tell whether it starts a
	// message (see couldStartMessage), with the Start stamp of that chunk.
	hold      []byte
	holdStart uint64

	seq      uint64 // request: its queue entry; response: the request it answers
	drop     bool   // response: unmatched, parse then forget
	reqClose bool   // response: its request asked for close
}

// reset prepares for the next message, keeping buffers for reuse.
func (s *stream) reset() {
	s.st = stHead
	s.line = s.line[:0]
	s.headBytes, s.lineNo = 0, 0
	s.h = headInfo{cl: -1}
	s.req = RequestMeta{}
	s.resp = ResponseMeta{}
	s.keep = s.keep[:0]
	s.fld = [nFields]span{}
	s.remain, s.body, s.truncBody = 0, 0, false
	s.chunk = chunkLine{}
	s.seq, s.drop, s.reqClose = 0, false, false
}

func (s *stream) looksLikeStart(b []byte) bool {
	if s.dir == Request {
		return LooksLikeRequest(b)
	}
	return LooksLikeResponse(b)
}

func (c *Conn) feed(s *stream, ch Chunk) {
	s.chBeg, s.chEnd, s.chPos = ch.Start, ch.End, ch.Pos
	data := ch.Data
	gap := max(ch.Size-len(data), 0)
	if s.st == stResync {
		start := ch.Start
		if len(s.hold) > 0 {
			// A new slice: hold must stay a few bytes, not grow to a chunk.
			start = s.holdStart
			s.chPos = 0 // the held bytes came from another chunk
			data = append(append(make([]byte, 0, len(s.hold)+len(data)), s.hold...), data...)
		}
		if !s.looksLikeStart(data) {
			// Go's net/http server keeps a 1-byte read pending on idle
			// keep-alive connections, so a request may arrive as "G"
			// then "ET / HTTP/1.1...": keep such a fragment for the next
			// chunk. A gap after it would make the two not adjacent.
			if gap == 0 && len(data) <= maxResyncHold && couldStartMessage(s.dir, data) {
				s.hold = append(s.hold[:0], data...)
				s.holdStart = start
			} else {
				s.hold = s.hold[:0]
			}
			return
		}
		s.reset()
		s.hold = s.hold[:0]
		s.chBeg = start
	}
	total := len(data)
	for len(data) > 0 {
		var n int
		s.at = total - len(data)
		switch s.st {
		case stHead, stTrailer:
			n = c.lines(s, data)
		case stLength:
			n = int(min(s.remain, int64(len(data))))
			s.remain -= int64(n)
			s.body += int64(n)
			if s.remain == 0 {
				c.done(s)
			}
		case stChunkSize:
			n = c.chunkSize(s, data)
		case stChunkData:
			n = int(min(s.remain, int64(len(data))))
			s.remain -= int64(n)
			s.body += int64(n)
			if s.remain == 0 {
				s.st = stChunkEnd
				s.chunk = chunkLine{}
			}
		case stChunkEnd:
			n = c.chunkEnd(s, data)
		case stUntilClose:
			n = len(data)
			s.body += int64(n)
		case stResync:
			// An error ended the message mid-chunk; where the next one
			// starts inside this chunk is unknowable.
			return
		}
		if c.upgraded {
			return
		}
		data = data[n:]
	}
	if gap > 0 {
		c.gap(s, int64(gap))
	}
}

// gap accounts for n bytes that moved but were not captured.
func (c *Conn) gap(s *stream, n int64) {
	switch s.st {
	case stHead:
		if s.headBytes == 0 {
			// A whole message start is missing: nothing to keep.
			c.fail(s, LostSync)
			return
		}
		c.truncatedHead(s)
	case stLength:
		k := min(n, s.remain)
		s.remain -= k
		s.body += k
		if s.remain == 0 {
			c.done(s)
			if n > k {
				// The next message began inside the gap.
				c.fail(s, LostSync)
			}
		}
	case stChunkData:
		k := min(n, s.remain)
		s.remain -= k
		s.body += k
		if n > k {
			c.fail(s, LostSync)
		} else if s.remain == 0 {
			s.st = stChunkEnd
			s.chunk = chunkLine{}
		}
	case stChunkSize, stChunkEnd, stTrailer:
		c.fail(s, LostSync)
	case stUntilClose:
		s.body += n
	}
}

// fail reports r and puts s in resync. A message already queued or paired is
// finished with what is known of it; one still in its head is lost.
func (c *Conn) fail(s *stream, r Reason) {
	c.report(s.dir, r)
	switch {
	case s.st == stHead && s.dir == Response:
		// Some request's response vanished; see pending.stale.
		c.markStale()
	case s.st.inBody():
		if s.st != stTrailer {
			s.truncBody = true
		}
		c.done(s)
	}
	s.reset()
	s.st = stResync
}

// done completes the current message at the current chunk.
func (c *Conn) done(s *stream) {
	if s.dir == Request {
		if p := c.find(s.seq); p != nil {
			p.req.BodySize = s.body
			p.req.End = s.chEnd
			p.req.BodyTruncated = s.truncBody
			p.reqDone = true
		}
	} else if !s.drop {
		if p := c.find(s.seq); p != nil {
			p.resp = s.resp
			p.resp.BodySize = s.body
			p.resp.End = s.chEnd
			p.resp.BodyTruncated = s.truncBody
			p.responded = true
			p.stale = false
		}
	}
	c.drain()
	s.reset()
}

// upgrade ends HTTP/1.x on the connection after response s answered p.
func (c *Conn) upgrade(s *stream, p *pending) {
	if p != nil {
		p.resp = s.resp
		p.resp.End = s.chEnd
		p.responded = true
		p.stale = false
		if !p.reqDone {
			if rq := &c.s[Request]; rq.seq == p.seq && rq.st.inBody() {
				p.req.BodySize = rq.body
				p.req.End = rq.chEnd
			}
			p.reqDone = true
		}
		c.drain()
	}
	c.upgraded = true
}
