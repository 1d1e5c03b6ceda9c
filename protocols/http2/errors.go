package http2

import "errors"

// ErrDirection is returned by Feed for a Direction other than Request or
// Response: a caller bug rather than a property of the traffic.
var ErrDirection = errors.New("http2: invalid direction")

// Reason classifies a parse failure. Its String form is stable snake_case so
// callers can use it directly as a metric label.
type Reason uint8

const (
	// BadPreface: the connection does not start as HTTP/2 does (the client
	// preface, then a SETTINGS frame from each side). Nothing more is
	// parsed on the connection until Close.
	BadPreface Reason = iota + 1
	// BadFrame: a frame violates RFC 9113 framing (wrong length for its
	// type, stream 0 where a stream is needed, padding longer than the
	// payload, a header block interrupted by another frame). Frame
	// boundaries can no longer be trusted: the direction resyncs.
	BadFrame
	// FrameTooLarge: a frame other than DATA exceeded Limits.MaxFrameBytes
	// and was skipped unread; for a header block, the direction's HPACK
	// state is lost with it.
	FrameTooLarge
	// HPACK: a header block failed to decode or was partly uncaptured, so
	// the direction's dynamic table is unknown from then on and its header
	// blocks come out HeadersUnknown.
	HPACK
	// HeadersTooLarge: a header block decoded to more than
	// Limits.MaxHeaderListBytes; it was decoded to keep HPACK in sync but
	// its values were dropped (HeadersUnknown).
	HeadersTooLarge
	// TooManyStreams: more than Limits.MaxStreams streams were open; the
	// oldest was emitted as Incomplete.
	TooManyStreams
	// LostSync: uncaptured bytes (a gap) hid a frame header, so frame
	// boundaries are unknown until the direction resyncs.
	LostSync
)

var reasonNames = [...]string{
	BadPreface:      "bad_preface",
	BadFrame:        "bad_frame",
	FrameTooLarge:   "frame_too_large",
	HPACK:           "hpack",
	HeadersTooLarge: "headers_too_large",
	TooManyStreams:  "too_many_streams",
	LostSync:        "lost_sync",
}

func (r Reason) String() string {
	if int(r) < len(reasonNames) && reasonNames[r] != "" {
		return reasonNames[r]
	}
	return "unknown"
}

// ParseError reports why bytes in one direction could not be parsed.
type ParseError struct {
	Dir    Direction
	Reason Reason
}

func (e *ParseError) Error() string {
	return "http2: " + e.Dir.String() + ": " + e.Reason.String()
}
