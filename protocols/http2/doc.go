// Package http2 reconstructs HTTP/2 exchanges (RFC 9113), gRPC included,
// from bytes captured on a socket.
//
// A tracer sees each TCP connection as a sequence of chunks, one per read or
// write syscall (or SSL_read/SSL_write call), in two directions. Conn is fed
// those chunks and emits an Exchange per stream, a request and its
// response, once both sides ended the stream (END_STREAM), or when it is
// reset, refused by GOAWAY, evicted or closed. It parses incrementally: a
// frame may be split at any byte across chunks, and one chunk may carry
// many frames of many interleaved streams.
//
// # Framing without buffering DATA
//
// Conn splits frames itself from their 9-byte headers rather than handing
// the byte stream to a general HTTP/2 framer, because captured bodies are
// large and mostly uncaptured: a DATA payload is only counted (BodySize),
// never buffered, so a gap inside it costs nothing and a megabyte body
// costs no memory. Other frames are small; they are buffered whole, up to
// Limits.MaxFrameBytes, and parsed when complete. Frames that would make a
// peer close the connection (a wrong length for the type, stream 0 where a
// stream is needed, padding beyond the payload, a header block interrupted)
// are reported as BadFrame and the direction resyncs; unknown frame types
// are skipped, as RFC 9113 requires.
//
// # HPACK per direction
//
// Each direction has its own hpack.Decoder whose dynamic table persists
// across header blocks, as the peer's encoder's does: a repeated request is
// mostly table indexes that only decode right if every earlier block of
// that direction was decoded. So every block is decoded, including those of
// streams not tracked and of server pushes (counted in Stats, no
// exchange), and CONTINUATION fragments are fed in order. The table bound
// comes from the SETTINGS_HEADER_TABLE_SIZE that the other side announced
// (the server's SETTINGS bound the client's encoder), capped at 64 KiB.
//
// Only an allowlist is retained: the pseudo-headers, user-agent,
// traceparent, tracestate, content-type, grpc-status and grpc-message.
// Everything else, Authorization and cookies included, is decoded and
// dropped in the decoder callback; a field the sender marked never-indexed
// is dropped even if allowlisted. Retained strings are at most
// Limits.MaxValueBytes, valid UTF-8 without control characters. A block
// decoding to more than Limits.MaxHeaderListBytes is still decoded, to keep
// the table right, but its values are dropped (HeadersTooLarge).
//
// # Gaps and HeadersUnknown
//
// Capture keeps only a prefix of each chunk; Chunk.Size says how many bytes
// really moved. A gap inside a DATA payload (or any skipped payload) is just
// counted. A gap inside a header block loses the block, and with it the
// direction's dynamic table: from then on every header block of that
// direction comes out HeadersUnknown, with empty strings, because a table
// out of sync decodes indexes to the values of other requests, and a span
// labelled with another stream's path or traceparent is worse than an
// unlabelled one. Streams still come out, with their ids, stamps, body
// sizes and ends. The one way back is provable: a block that opens with a
// dynamic table size update to 0 empties the table, after which its content
// is known again; this is trusted only while frame boundaries are known. A
// gap that hides a frame header loses framing (LostSync), and the direction
// resyncs.
//
// # Joining mid-stream and resync
//
// After JoinMidStream, or a resync, a chunk is taken to start at a frame
// boundary only if its first 9 bytes are a plausible frame header (a known
// type, only that type's flags, the reserved bit clear, stream id 0 exactly
// where RFC 9113 requires it, a bounded length) and so is the header after
// that frame when the chunk holds it; other chunks are dropped. Writers
// usually start syscalls at frame boundaries, which makes this cheap and
// effective, but a boundary found so is a guess (DATA payloads can hold
// anything), and the dynamic table is unknown anyway, so the direction's
// header blocks stay HeadersUnknown for the rest of the connection. A HEADERS
// frame seen after the join on a stream that was opened before it and sent
// nothing else since (request trailers) is taken as a new request.
package http2
