package http2

// stream is an open stream: a request whose exchange is not out yet.
type stream struct {
	id        uint32
	req       RequestMeta
	resp      ResponseMeta
	reqDone   bool // END_STREAM seen from the client
	respDone  bool // END_STREAM seen from the server
	respSeen  bool // a response HEADERS frame began
	respFinal bool // the final (non-1xx) response headers were seen
}

// find returns the index of the open stream id, -1 if none. Streams open at
// once are few, so a scan beats a map, and allocates nothing.
func (c *Conn) find(id uint32) int {
	for i := range c.streams {
		if c.streams[i].id == id {
			return i
		}
	}
	return -1
}

// open starts tracking client stream id, evicting the oldest when full.
func (c *Conn) open(id uint32, start uint64) {
	if len(c.streams) >= c.lim.MaxStreams {
		c.report(Request, TooManyStreams)
		c.emit(0, true, 0)
	}
	c.lastClient = id
	c.streams = append(c.streams, stream{
		id:   id,
		req:  RequestMeta{Start: start},
		resp: ResponseMeta{GRPCStatus: -1},
	})
}

// emit appends stream i to out and stops tracking it.
func (c *Conn) emit(i int, incomplete bool, code uint32) {
	s := &c.streams[i]
	c.out = append(c.out, Exchange{
		StreamID:   s.id,
		Request:    s.req,
		Response:   s.resp,
		Incomplete: incomplete,
		ResetCode:  code,
	})
	copy(c.streams[i:], c.streams[i+1:])
	c.streams[len(c.streams)-1] = stream{}
	c.streams = c.streams[:len(c.streams)-1]
}

// endSide records END_STREAM from one side of stream i, at stamp end; the
// exchange is out once both sides ended.
func (c *Conn) endSide(i int, dir Direction, end uint64) {
	s := &c.streams[i]
	if dir == Request {
		if s.reqDone {
			return
		}
		s.reqDone = true
		s.req.End = end
	} else {
		if s.respDone {
			return
		}
		s.respDone = true
		s.resp.End = end
	}
	if s.reqDone && s.respDone {
		c.emit(i, false, 0)
	}
}

// data counts a DATA frame of n body bytes.
func (c *Conn) data(d *dir, fh frameHeader, n int64) {
	i := c.find(fh.stream)
	if i < 0 {
		return
	}
	s := &c.streams[i]
	if d.dir == Request {
		if s.reqDone {
			return
		}
		s.req.BodySize += n
	} else {
		if s.respDone {
			return
		}
		if !s.respSeen {
			// DATA before HEADERS is a protocol error, or the
			// HEADERS frame was lost to a resync.
			s.respSeen = true
			s.resp.Start = d.frameStart
		}
		s.resp.BodySize += n
	}
	if fh.flags&flagEndStream != 0 {
		c.endSide(i, d.dir, d.chEnd)
	}
}

// rstStream ends a stream abruptly. A response that had ended makes a
// complete exchange still: servers reset requests they answered early
// (RFC 9113 §8.1).
func (c *Conn) rstStream(id, code uint32) {
	if i := c.find(id); i >= 0 {
		c.emit(i, !c.streams[i].respDone, code)
	}
}

// goAway from the server: client streams above last were not processed and
// never will be.
func (c *Conn) goAway(last uint32) {
	for i := 0; i < len(c.streams); {
		if s := &c.streams[i]; s.id > last {
			c.emit(i, true, 0)
			continue
		}
		i++
	}
}
