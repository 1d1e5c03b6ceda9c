// Package http1 reconstructs HTTP/1.x exchanges from bytes captured on a
// socket.
//
// A tracer sees each TCP connection as a sequence of chunks, one per read or
// write syscall, in two directions. Conn is fed those chunks and emits an
// Exchange, a request paired with its response, each time both are complete.
// It handles keep-alive and pipelining (responses pair with requests in
// FIFO order), Content-Length, chunked and close-delimited bodies, HEAD,
// 204, 304, interim 1xx responses and protocol switches (101, CONNECT). It
// parses incrementally: a message may be split at any byte across chunks,
// and one chunk may carry many messages.
//
// Only a few request fields are retained (see RequestMeta); all others are
// validated and dropped unseen, so credentials such as Authorization or
// Cookie can never reach an exporter. Retained strings are copies bounded by
// Limits.MaxValueBytes; the head being parsed is bounded by
// Limits.MaxHeadBytes and the request queue by Limits.MaxPending, so memory
// per connection is bounded whatever the input.
//
// # Gaps
//
// Capture keeps only a prefix of each syscall's bytes; Chunk.Size says how
// many really moved. The uncaptured tail, a gap, is accounted without being
// seen: inside a Content-Length body or a chunk's data it only shortens
// what remains, and inside a close-delimited body it only grows it, so the
// parser stays in sync across large bodies and sendfile. A gap anywhere
// else (a head, a chunk-size line, a trailer) hides the message framing.
// What was parsed is still emitted: a request whose method is known is
// queued with HeadTruncated set so its response pairs with it, and a response
// is paired likewise; a chunked body is closed with BodyTruncated set. The
// direction then reports LostSync and resyncs.
//
// # Resync
//
// After a gap in framing or any ParseError, a direction discards the rest
// of the chunk and every following chunk until one whose data begins with a
// plausible start line (LooksLikeRequest, LooksLikeResponse). Syscalls of
// HTTP clients and servers usually start at message boundaries, which
// is what makes this cheap resync effective. When the response direction
// loses a message, the requests waiting at that moment are marked stale: the
// next response pairs with a newer request if there is one, and the stale
// ones are emitted as Incomplete.
package http1
