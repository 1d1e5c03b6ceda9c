package http1

import "bytes"

// maxMethodLen bounds a method token. RFC 9110 sets no limit, but no real
// method comes close, and a bound lets junk be rejected after a few bytes.
const maxMethodLen = 32

// Character classes of RFC 9110 §5.6.2 and §5.5.
const (
	cToken  = 1 << iota // tchar
	cValue              // field-vchar, SP or HTAB
	cTarget             // VCHAR or obs-text: what a request-target may hold
)

var class = func() (t [256]uint8) {
	for c := 0; c < 256; c++ {
		switch {
		case c == ' ' || c == '\t':
			t[c] |= cValue
		case c > ' ' && c < 0x7f:
			t[c] |= cValue | cTarget
		case c >= 0x80:
			t[c] |= cValue | cTarget
		}
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c < 0x80 && bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), byte(c)) >= 0 {
			t[c] |= cToken
		}
	}
	return t
}()

func isToken(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if class[c]&cToken == 0 {
			return false
		}
	}
	return true
}

func isTarget(b []byte) bool {
	for _, c := range b {
		if class[c]&cTarget == 0 {
			return false
		}
	}
	return true
}

func validValue(b []byte) bool {
	for _, c := range b {
		if class[c]&cValue == 0 {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func trimOWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == '\t') {
		b = b[:len(b)-1]
	}
	return b
}

// equalFold compares b with lower-case ASCII s, ignoring the case of b.
func equalFold(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range len(b) {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}

// isScheme reports an RFC 3986 scheme: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ).
func isScheme(b []byte) bool {
	for i, c := range b {
		alpha := 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z'
		if !alpha && (i == 0 || !isDigit(c) && c != '+' && c != '-' && c != '.') {
			return false
		}
	}
	return len(b) > 0
}

// Fields the parser interprets or retains.
const (
	idOther = iota
	idContentLength
	idTransferEncoding
	idConnection
	idHost
	idUserAgent
	idTraceParent
	idTraceState
)

func fieldID(name []byte) int {
	switch len(name) {
	case 4:
		if equalFold(name, "host") {
			return idHost
		}
	case 10:
		switch {
		case equalFold(name, "connection"):
			return idConnection
		case equalFold(name, "user-agent"):
			return idUserAgent
		case equalFold(name, "tracestate"):
			return idTraceState
		}
	case 11:
		if equalFold(name, "traceparent") {
			return idTraceParent
		}
	case 14:
		if equalFold(name, "content-length") {
			return idContentLength
		}
	case 17:
		if equalFold(name, "transfer-encoding") {
			return idTransferEncoding
		}
	}
	return idOther
}

// methods are the methods LooksLikeRequest accepts: RFC 9110, PATCH and
// the WebDAV ones seen in practice. Other tokens still parse mid-stream.
var methods = [...]string{
	"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
	"PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE", "LOCK", "UNLOCK",
}

// maxResyncHold bounds the fragment kept in resync: "PROPPATCH " and
// "HTTP/1.1 200" fit.
const maxResyncHold = 16

// couldStartMessage reports whether b, too short for LooksLikeRequest or
// LooksLikeResponse to say yes, is the beginning of what they would accept.
func couldStartMessage(dir Direction, b []byte) bool {
	if len(b) == 0 {
		return false
	}
	if dir == Response {
		return len(b) < 12 && statusPrefixOK(b)
	}
	for _, m := range methods {
		if len(b) <= len(m)+1 && string(b) == (m + " ")[:len(b)] {
			return true
		}
	}
	return false
}

// knownMethod returns the interned name of a method in methods, or "".
func knownMethod(b []byte) string {
	for _, m := range methods {
		if string(b) == m {
			return m
		}
	}
	return ""
}

// startPrefixOK reports whether b, an incomplete first line, can still
// become a valid start line for dir. It looks at a bounded prefix only.
func startPrefixOK(dir Direction, b []byte) bool {
	const window = 64
	if len(b) == 1 && b[0] == '\r' {
		return true // maybe a tolerated empty line before the message
	}
	if len(b) > window {
		b = b[:window]
	}
	if dir == Response {
		return statusPrefixOK(b)
	}
	return requestPrefixOK(b)
}

func requestPrefixOK(b []byte) bool {
	i := 0
	for i < len(b) && class[b[i]]&cToken != 0 {
		i++
	}
	if i > maxMethodLen {
		return false
	}
	if i == len(b) {
		return true
	}
	if i == 0 || b[i] != ' ' {
		return false
	}
	i++
	j := i
	for i < len(b) && class[b[i]]&cTarget != 0 {
		i++
	}
	if i == len(b) {
		return true
	}
	if i == j || b[i] != ' ' {
		return false
	}
	return versionPrefixOK(b[i+1:])
}

// versionPrefixOK reports whether b is a prefix of "HTTP/1.x\r".
func versionPrefixOK(b []byte) bool {
	const v = "HTTP/1."
	n := min(len(b), len(v))
	if string(b[:n]) != v[:n] {
		return false
	}
	if len(b) > 7 && b[7] != '0' && b[7] != '1' {
		return false
	}
	return len(b) <= 8 || len(b) == 9 && b[8] == '\r'
}

// statusPrefixOK reports whether b is a prefix of "HTTP/1.x NNN".
func statusPrefixOK(b []byte) bool {
	const pattern = "HTTP/1.x NNN"
	for i, c := range b {
		if i >= len(pattern) {
			return c == ' ' || c == '\r'
		}
		var ok bool
		switch p := pattern[i]; {
		case p == 'x':
			ok = c == '0' || c == '1'
		case p == 'N' && i == 9:
			ok = '1' <= c && c <= '5'
		case p == 'N':
			ok = isDigit(c)
		default:
			ok = c == p
		}
		if !ok {
			return false
		}
	}
	return true
}

// LooksLikeRequest reports whether b plausibly begins with an HTTP/1.x
// request line: a well-known method, a space, and a request-target, with
// what follows valid as far as b goes. It is how a direction that lost sync
// recognises where to start again.
func LooksLikeRequest(b []byte) bool {
	sp := bytes.IndexByte(b[:min(len(b), len("PROPPATCH")+1)], ' ')
	if sp < 0 || knownMethod(b[:sp]) == "" || len(b) == sp+1 || b[sp+1] == ' ' {
		return false
	}
	if lf := bytes.IndexByte(b, '\n'); lf >= 0 {
		_, _, _, ok := splitRequestLine(bytes.TrimSuffix(b[:lf], []byte{'\r'}))
		return ok
	}
	return requestPrefixOK(b)
}

// LooksLikeResponse reports whether b plausibly begins with an HTTP/1.x
// status line: "HTTP/1.0 " or "HTTP/1.1 " and a status code.
func LooksLikeResponse(b []byte) bool {
	if len(b) < 12 {
		return false
	}
	if lf := bytes.IndexByte(b, '\n'); lf >= 0 {
		line := bytes.TrimSuffix(b[:lf], []byte{'\r'})
		_, code := splitStatus(line)
		return code != 0 && validReason(line)
	}
	return statusPrefixOK(b[:min(len(b), 13)])
}
