package http1

import "errors"

// ErrDirection is returned by Feed for a Direction other than Request or
// Response: a caller bug rather than a property of the traffic.
var ErrDirection = errors.New("http1: invalid direction")

// Reason classifies a parse failure. Its String form is stable snake_case so
// callers can use it directly as a metric label.
type Reason uint8

const (
	// BadStartLine: the request line or status line is malformed, which
	// is also how non-HTTP traffic (TLS, binary protocols) shows up.
	BadStartLine Reason = iota + 1
	// BadHeader: a header or trailer field line is malformed.
	BadHeader
	// HeadTooLarge: the head exceeded Limits.MaxHeadBytes.
	HeadTooLarge
	// BadContentLength: Content-Length is not a decimal number, overflows,
	// or conflicts with another Content-Length.
	BadContentLength
	// BadTransferEncoding: Transfer-Encoding is malformed, applies chunked
	// twice, or (on a request) does not end in chunked.
	BadTransferEncoding
	// BadChunk: chunked framing (size line or CRLF after data) is malformed.
	BadChunk
	// UnmatchedResponse: a response arrived with no request waiting for it;
	// it is parsed to stay in sync and then dropped.
	UnmatchedResponse
	// LostSync: uncaptured bytes (a gap) fell where framing had to be read,
	// so message boundaries are unknown until the direction resyncs.
	LostSync
	// TooManyPending: more than Limits.MaxPending requests awaited a
	// response; the oldest was emitted as incomplete.
	TooManyPending
)

var reasonNames = [...]string{
	BadStartLine:        "bad_start_line",
	BadHeader:           "bad_header",
	HeadTooLarge:        "head_too_large",
	BadContentLength:    "bad_content_length",
	BadTransferEncoding: "bad_transfer_encoding",
	BadChunk:            "bad_chunk",
	UnmatchedResponse:   "unmatched_response",
	LostSync:            "lost_sync",
	TooManyPending:      "too_many_pending",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return "unknown"
}

// ParseError reports why bytes in one direction could not be parsed. After
// it, that direction discards input until it resyncs (see the package doc).
type ParseError struct {
	Dir    Direction
	Reason Reason
}

func (e *ParseError) Error() string {
	return "http1: " + e.Dir.String() + ": " + e.Reason.String()
}
