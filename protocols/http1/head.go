package http1

import (
	"bytes"
	"strings"
	"unicode/utf8"
)

// lines consumes field-line input (a head or a trailer section) and returns
// how many bytes of data it used. Complete lines are parsed in place; only a
// line split across chunks is copied, into s.line.
func (c *Conn) lines(s *stream, data []byte) int {
	if s.st == stHead && s.headBytes == 0 {
		s.start = s.chBeg
		s.pos = 0
		if s.chPos != 0 {
			s.pos = s.chPos + uint64(s.at)
		}
	}
	i := bytes.IndexByte(data, '\n')
	if i < 0 {
		if s.headBytes+len(data) > c.lim.MaxHeadBytes {
			c.fail(s, HeadTooLarge)
			return len(data)
		}
		s.headBytes += len(data)
		s.line = append(s.line, data...)
		// Reject non-HTTP early rather than buffer MaxHeadBytes of it.
		if s.st == stHead && s.lineNo == 0 && !startPrefixOK(s.dir, s.line) {
			c.fail(s, BadStartLine)
		}
		return len(data)
	}
	n := i + 1
	if s.headBytes+n > c.lim.MaxHeadBytes {
		c.fail(s, HeadTooLarge)
		return n
	}
	s.headBytes += n
	line := data[:i]
	if len(s.line) > 0 {
		s.line = append(s.line, line...)
		line = s.line
	}
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	c.line(s, line)
	s.line = s.line[:0]
	return n
}

func (c *Conn) line(s *stream, line []byte) {
	if s.st == stTrailer {
		if len(line) == 0 {
			c.done(s)
		} else if _, _, ok := splitField(line); !ok {
			c.fail(s, BadHeader)
		}
		return
	}
	if s.lineNo == 0 {
		if len(line) == 0 {
			// RFC 9112 §2.2: tolerate empty lines before a message, as
			// some clients send a stray CRLF after a body.
			s.headBytes = 0
			return
		}
		var ok bool
		if s.dir == Request {
			ok = s.requestLine(line, c.lim.MaxValueBytes)
		} else {
			ok = s.statusLine(line)
		}
		if !ok {
			c.fail(s, BadStartLine)
			return
		}
		s.lineNo = 1
		return
	}
	if len(line) == 0 {
		if s.dir == Request {
			c.requestHeadDone(s)
		} else {
			c.responseHeadDone(s)
		}
		return
	}
	s.lineNo++
	if line[0] == ' ' || line[0] == '\t' {
		// obs-fold continues the previous value; none of the fields
		// retained or interpreted here is legitimately folded.
		if !validValue(line) {
			c.fail(s, BadHeader)
		}
		return
	}
	if r := s.field(line, c.lim.MaxValueBytes); r != 0 {
		c.fail(s, r)
	}
}

// requestLine parses method SP request-target SP HTTP-version.
func (s *stream) requestLine(line []byte, maxValue int) bool {
	method, target, proto, ok := splitRequestLine(line)
	if !ok {
		return false
	}
	s.setMethod(method, maxValue)
	s.keepTarget(target, maxValue)
	s.req.Proto = proto
	return true
}

func splitRequestLine(line []byte) (method, target []byte, proto string, ok bool) {
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || sp > maxMethodLen || !isToken(line[:sp]) {
		return nil, nil, "", false
	}
	rest := line[sp+1:]
	sp2 := bytes.IndexByte(rest, ' ')
	if sp2 <= 0 || !isTarget(rest[:sp2]) {
		return nil, nil, "", false
	}
	proto = version(rest[sp2+1:])
	return line[:sp], rest[:sp2], proto, proto != ""
}

// partialRequestLine salvages what a gap left of a request line: the
// method must be complete, the target may be cut.
func (s *stream) partialRequestLine(line []byte, maxValue int) bool {
	line = bytes.TrimSuffix(line, []byte{'\r'})
	sp := bytes.IndexByte(line, ' ')
	if sp <= 0 || sp > maxMethodLen || !isToken(line[:sp]) {
		return false
	}
	rest := line[sp+1:]
	target := rest
	if sp2 := bytes.IndexByte(rest, ' '); sp2 >= 0 {
		target = rest[:sp2]
		s.req.Proto = version(rest[sp2+1:])
	}
	if len(target) > 0 && !isTarget(target) {
		return false
	}
	s.setMethod(line[:sp], maxValue)
	s.keepTarget(target, maxValue)
	return true
}

// statusLine parses HTTP-version SP 3DIGIT [SP reason-phrase]. The space
// before an empty reason is optional in practice.
func (s *stream) statusLine(line []byte) bool {
	return validReason(line) && s.statusPrefix(line)
}

// validReason checks what follows the status code.
func validReason(line []byte) bool {
	return len(line) <= 12 || line[12] == ' ' && validValue(line[13:])
}

// statusPrefix parses the first 12 bytes of a status line.
func (s *stream) statusPrefix(line []byte) bool {
	proto, code := splitStatus(line)
	if code == 0 {
		return false
	}
	s.resp.Proto, s.resp.StatusCode = proto, code
	return true
}

// splitStatus parses "HTTP/1.x NNN", returning a zero code if it is not.
func splitStatus(line []byte) (proto string, code int) {
	if len(line) < 12 {
		return "", 0
	}
	proto = version(line[:8])
	if proto == "" || line[8] != ' ' {
		return "", 0
	}
	d0, d1, d2 := line[9], line[10], line[11]
	if d0 < '1' || d0 > '5' || !isDigit(d1) || !isDigit(d2) {
		return "", 0
	}
	return proto, int(d0-'0')*100 + int(d1-'0')*10 + int(d2-'0')
}

func version(b []byte) string {
	if len(b) != 8 || string(b[:7]) != "HTTP/1." {
		return ""
	}
	switch b[7] {
	case '0':
		return "1.0"
	case '1':
		return "1.1"
	}
	return ""
}

// field parses one field line, keeping only the allow-listed values. It
// returns a non-zero Reason on error.
func (s *stream) field(line []byte, maxValue int) Reason {
	name, value, ok := splitField(line)
	if !ok {
		return BadHeader
	}
	switch fieldID(name) {
	case idContentLength:
		n, ok := parseContentLength(value)
		if !ok || (s.h.cl >= 0 && s.h.cl != n) {
			return BadContentLength
		}
		s.h.cl = n
	case idTransferEncoding:
		if !s.h.transferEncoding(value) {
			return BadTransferEncoding
		}
	case idConnection:
		s.h.connection(value)
	case idHost:
		if s.dir == Request {
			s.keepField(fHost, value, nil, maxValue)
		}
	case idUserAgent:
		if s.dir == Request {
			s.keepField(fUserAgent, value, nil, maxValue)
		}
	case idTraceParent:
		if s.dir == Request {
			s.keepField(fTraceParent, value, nil, maxValue)
		}
	case idTraceState:
		if s.dir == Request {
			s.keepField(fTraceState, value, nil, maxValue)
		}
	}
	return 0
}

// splitField splits "name: value", trimming optional whitespace around the
// value. No whitespace is allowed before the colon (RFC 9112 §5.1).
func splitField(line []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 || !isToken(line[:colon]) {
		return nil, nil, false
	}
	value = trimOWS(line[colon+1:])
	if !validValue(value) {
		return nil, nil, false
	}
	return line[:colon], value, true
}

func parseContentLength(v []byte) (int64, bool) {
	// A list of identical values is tolerated (RFC 9110 §8.6), as
	// produced by proxies that merge duplicate fields.
	n := int64(-1)
	for len(v) > 0 {
		var elem []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			elem, v = trimOWS(v[:i]), v[i+1:]
		} else {
			elem, v = trimOWS(v), nil
		}
		m, ok := parseDecimal(elem)
		if !ok || (n >= 0 && m != n) {
			return 0, false
		}
		n = m
	}
	return n, n >= 0
}

func parseDecimal(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	var n int64
	for _, c := range b {
		if !isDigit(c) {
			return 0, false
		}
		d := int64(c - '0')
		if n > (1<<63-1-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}

// transferEncoding folds one Transfer-Encoding field into h.
func (h *headInfo) transferEncoding(v []byte) bool {
	h.te = true
	for len(v) > 0 {
		var elem []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			elem, v = v[:i], v[i+1:]
		} else {
			elem, v = v, nil
		}
		if i := bytes.IndexByte(elem, ';'); i >= 0 {
			elem = elem[:i] // transfer parameters
		}
		elem = trimOWS(elem)
		if len(elem) == 0 {
			continue // empty list elements are allowed
		}
		if !isToken(elem) {
			return false
		}
		if equalFold(elem, "chunked") {
			if h.chunked {
				return false // RFC 9112 §7: never applied twice
			}
			h.chunked, h.chunkedLast = true, true
		} else {
			h.chunkedLast = false
		}
	}
	return true
}

func (h *headInfo) connection(v []byte) {
	for len(v) > 0 {
		var elem []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			elem, v = trimOWS(v[:i]), v[i+1:]
		} else {
			elem, v = trimOWS(v), nil
		}
		switch {
		case equalFold(elem, "close"):
			h.close = true
		case equalFold(elem, "keep-alive"):
			h.keepAlive = true
		}
	}
}

func (c *Conn) requestHeadDone(s *stream) {
	h := &s.h
	if h.te && !h.chunkedLast {
		// Without chunked last the request length is unknowable
		// (RFC 9112 §6.3): a classic smuggling vector.
		c.fail(s, BadTransferEncoding)
		return
	}
	s.fillRequest()
	reqClose := h.close || (s.req.Proto == "1.0" && !h.keepAlive)
	switch {
	case h.te:
		s.req.Chunked = true
		s.st = stChunkSize
	case h.cl > 0:
		s.remain = h.cl
		s.st = stLength
	default:
		s.req.End = s.chEnd
		c.push(&s.req, true, reqClose)
		s.reset()
		return
	}
	s.seq = c.push(&s.req, false, reqClose)
}

// fillRequest turns retained values into the strings of s.req.
func (s *stream) fillRequest() {
	var v [nFields]string
	s.strings(&v)
	if v[fMethod] != "" {
		s.req.Method = v[fMethod]
	}
	s.req.Target = v[fTarget]
	s.req.Host = v[fHost]
	s.req.UserAgent = v[fUserAgent]
	s.req.TraceParent = v[fTraceParent]
	s.req.TraceState = v[fTraceState]
	s.req.ContentLength = s.h.cl
	s.req.Start = s.start
	s.req.Pos = s.pos
}

func (c *Conn) responseHeadDone(s *stream) {
	h := &s.h
	code := s.resp.StatusCode
	if code < 200 && code != 101 {
		// Interim responses precede the final one for the same request.
		s.reset()
		return
	}
	p := c.target()
	method := ""
	if p == nil {
		c.report(Response, UnmatchedResponse)
		s.drop = true
	} else {
		s.seq, s.reqClose, method = p.seq, p.reqClose, p.req.Method
	}
	s.resp.Start = s.start
	s.resp.Pos = s.pos
	s.resp.ContentLength = h.cl
	s.resp.Chunked = h.te && h.chunkedLast
	s.resp.Close = h.close || (s.resp.Proto == "1.0" && !h.keepAlive) || s.reqClose
	if code == 101 || (method == "CONNECT" && code/100 == 2) {
		c.upgrade(s, p)
		return
	}
	switch {
	case method == "HEAD" || code == 204 || code == 304:
		c.done(s)
	case h.te && h.chunkedLast:
		s.st = stChunkSize
	case h.te:
		// RFC 9112 §6.3: a response whose final coding is not
		// chunked runs until the connection closes.
		s.resp.Close = true
		s.st = stUntilClose
	case h.cl == 0:
		c.done(s)
	case h.cl > 0:
		s.remain = h.cl
		s.st = stLength
	default:
		s.resp.Close = true
		s.st = stUntilClose
	}
}

// truncatedHead handles a gap inside a head: whatever was parsed is emitted
// as a HeadTruncated message, and the direction resyncs.
func (c *Conn) truncatedHead(s *stream) {
	if s.lineNo == 0 {
		var ok bool
		if s.dir == Request {
			ok = s.partialRequestLine(s.line, c.lim.MaxValueBytes)
		} else {
			ok = s.statusPrefix(s.line)
		}
		if !ok {
			c.fail(s, LostSync)
			return
		}
	}
	c.report(s.dir, LostSync)
	if s.dir == Request {
		s.fillRequest()
		s.req.HeadTruncated = true
		s.req.End = s.chEnd
		c.push(&s.req, true, s.h.close || (s.req.Proto == "1.0" && !s.h.keepAlive))
	} else if code := s.resp.StatusCode; code >= 200 || code == 101 {
		s.resp.HeadTruncated = true
		s.resp.Start = s.start
		s.resp.Pos = s.pos
		s.resp.ContentLength = s.h.cl
		s.resp.Chunked = s.h.chunkedLast
		p := c.target()
		if p != nil {
			s.seq = p.seq
			if code == 101 || (p.req.Method == "CONNECT" && code/100 == 2) {
				c.upgrade(s, p)
				return
			}
			c.done(s)
		}
	}
	s.reset()
	s.st = stResync
}

// setMethod interns well-known methods so they cost no allocation.
func (s *stream) setMethod(m []byte, maxValue int) {
	if k := knownMethod(m); k != "" {
		s.req.Method = k
		return
	}
	s.keepField(fMethod, m, nil, maxValue)
}

// keepTarget retains the request-target minus any userinfo, which can only
// carry credentials.
func (s *stream) keepTarget(t []byte, maxValue int) {
	if i := bytes.Index(t, []byte("://")); i > 0 && isScheme(t[:i]) {
		auth := t[i+3:]
		end := bytes.IndexAny(auth, "/?#")
		if end < 0 {
			end = len(auth)
		}
		if at := bytes.LastIndexByte(auth[:end], '@'); at >= 0 {
			s.keepField(fTarget, t[:i+3], auth[at+1:], maxValue)
			return
		}
	}
	s.keepField(fTarget, t, nil, maxValue)
}

// keepField copies a (and b after it) into the retained value i, unless i was
// already set: the first occurrence of a field wins.
func (s *stream) keepField(i int, a, b []byte, maxValue int) {
	if s.fld[i].set {
		return
	}
	off := len(s.keep)
	s.keep = appendValue(s.keep, a, maxValue)
	s.keep = appendValue(s.keep, b, maxValue-(len(s.keep)-off))
	s.fld[i] = span{off: off, n: len(s.keep) - off, set: true}
}

// appendValue appends at most max bytes of v as valid UTF-8: bytes that are
// not are replaced by U+FFFD, and a cut never splits a character.
func appendValue(dst, v []byte, max int) []byte {
	if max <= 0 {
		return dst
	}
	ascii := true
	for _, c := range v {
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		return append(dst, v[:min(len(v), max)]...)
	}
	for len(v) > 0 {
		r, size := utf8.DecodeRune(v)
		w := utf8.RuneLen(r)
		if max < w {
			break
		}
		if r == utf8.RuneError && size == 1 {
			dst = utf8.AppendRune(dst, utf8.RuneError)
		} else {
			dst = append(dst, v[:size]...)
		}
		max -= w
		v = v[size:]
	}
	return dst
}

// strings converts retained values to strings with at most one allocation.
func (s *stream) strings(v *[nFields]string) {
	total := 0
	var fresh [nFields]bool
	for i, f := range s.fld {
		if !f.set {
			continue
		}
		if b := s.keep[f.off : f.off+f.n]; string(b) == s.prev[i] {
			v[i] = s.prev[i]
		} else {
			fresh[i] = true
			total += f.n
		}
	}
	if total > 0 {
		var sb strings.Builder
		sb.Grow(total)
		for i, f := range s.fld {
			if fresh[i] {
				sb.Write(s.keep[f.off : f.off+f.n])
			}
		}
		all := sb.String()
		for i, f := range s.fld {
			if fresh[i] {
				v[i], all = all[:f.n], all[f.n:]
			}
		}
	}
	for i, f := range s.fld {
		if f.set {
			s.prev[i] = v[i]
		}
	}
	s.keep = s.keep[:0]
	s.fld = [nFields]span{}
}
