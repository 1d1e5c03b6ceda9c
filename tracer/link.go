package tracer

import (
	"net/netip"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/tracer/export"
)

// Same-host linking: when sonde traces both ends of a TCP connection, the
// client span of process A and the server span of process B describe the
// same exchange. They are matched by the connection, as both ends name it
// (client address and port, server address and port), and the exchange's
// place on it: its ordinal for HTTP/1 (keep-alive reuse and pipelining
// keep requests in order on both ends), its stream ID for HTTP/2 and gRPC.
// The server span then becomes the client span's child, in its trace.
//
//   - A server span waits for its client span only when the other end of
//     its connection is a connection sonde tracks on this host, and for at
//     most linkHold; a server span that carries an incoming traceparent
//     keeps it and waits for nothing. Unmatched, it is exported alone:
//     nothing is lost.
//   - The match also wants the server span inside the client span's time
//     (both come from the same monotonic clock), so that ordinals thrown
//     off by a parse error or a missed exchange do not link the wrong
//     pair.
//   - A linked server span is exported once its client span's trace ID is
//     final: the client span may itself wait for its own parent (a Go
//     client call waits for the request it was made for), so the server
//     span is held as that client span's child, as a Go client call is
//     held for its request.
const (
	linkHold = time.Second
	// linkSlack is how far a server span may stick out of its client
	// span: the client's first write returns after the server's read may
	// have.
	linkSlack = 5 * time.Millisecond
	// linkClientTTL bounds how long a client span waits for a server span
	// to link: the server's view of an exchange comes before the client's.
	linkClientTTL = 2 * time.Second
	linkMax       = 65536
)

// linkKey names one exchange on one connection as both its ends see it.
type linkKey struct {
	client, server netip.AddrPort
	seq            uint64 // HTTP/1: 1-based ordinal; HTTP/2: stream ID | linkStream
}

const linkStream = 1 << 63

type linkClient struct {
	span  *export.Span
	key   linkKey
	at    time.Time
	final bool // exported: its trace ID can no longer change
}

type linkServer struct {
	span     *export.Span
	key      linkKey
	deadline time.Time
}

// linkState is the tracer's state for same-host linking. Only the event
// loop uses it.
type linkState struct {
	keys    map[*export.Span]linkKey     // spans that may link, until they settle
	clients map[linkKey]*linkClient      // settled client spans, for servers to come
	byID    map[trace.SpanID]*linkClient // the same, by span ID
	waiting map[linkKey]*linkServer      // final server spans waiting for their client
	parents map[trace.SpanID]bool        // client spans a server span waits for
}

func (l *linkState) init() {
	l.keys = make(map[*export.Span]linkKey)
	l.clients = make(map[linkKey]*linkClient)
	l.byID = make(map[trace.SpanID]*linkClient)
	l.waiting = make(map[linkKey]*linkServer)
	l.parents = make(map[trace.SpanID]bool)
}

// noteLink records which exchange a socket-view span is, when the other end
// of its connection is traced on this host. seq is its ordinal or stream.
func (t *Tracer) noteLink(c *conn, s *export.Span, seq uint64) {
	if seq == 0 || !c.local.IsValid() || !c.remote.IsValid() || len(t.linking.keys) >= linkMax {
		return
	}
	if seq&linkStream == 0 && c.midStream {
		return // ordinals count from the connection's first exchange
	}
	if !t.conns.traced(c.remote, c.local) {
		return
	}
	k := linkKey{client: c.remote, server: c.local, seq: seq}
	if s.Kind == trace.SpanKindClient {
		k.client, k.server = c.local, c.remote
	}
	t.linking.keys[s] = k
	t.stats.linkCandidates.Add(1)
}

// moveLink hands the link of a socket view to the Go view it merged into.
func (t *Tracer) moveLink(from, to *export.Span) {
	if k, ok := t.linking.keys[from]; ok {
		delete(t.linking.keys, from)
		t.linking.keys[to] = k
	}
}

// settleClient registers a client span whose identity is final (its Go
// twin merged, or none to come), and links the server span waiting for it.
func (t *Tracer) settleClient(s *export.Span) {
	k, ok := t.linking.keys[s]
	if !ok {
		return
	}
	delete(t.linking.keys, s)
	c := &linkClient{span: s, key: k, at: time.Now()}
	if w := t.linking.waiting[k]; w != nil && linkable(s, w.span) {
		delete(t.linking.waiting, k)
		t.link(c, w.span)
		return
	}
	if old := t.linking.clients[k]; old != nil {
		delete(t.linking.byID, old.span.SpanID)
	}
	if len(t.linking.clients) < linkMax {
		t.linking.clients[k] = c
		t.linking.byID[s.SpanID] = c
	}
}

// finishServer takes a server span whose own view is complete: it is
// exported now, or linked to its client span, or waits for it.
func (t *Tracer) finishServer(s *export.Span) {
	k, ok := t.linking.keys[s]
	if ok {
		delete(t.linking.keys, s)
	}
	if !ok || s.Parent.IsValid() {
		t.finalize(s)
		return
	}
	if c := t.linking.clients[k]; c != nil && linkable(c.span, s) {
		delete(t.linking.clients, k)
		delete(t.linking.byID, c.span.SpanID)
		t.link(c, s)
		return
	}
	if old := t.linking.waiting[k]; old != nil {
		// The key's earlier exchange never found its client.
		t.finalize(old.span)
	}
	if len(t.linking.waiting) >= linkMax {
		t.finalize(s)
		return
	}
	t.linking.waiting[k] = &linkServer{span: s, key: k, deadline: time.Now().Add(linkHold)}
}

// linkable reports whether server lies within client's time.
func linkable(client, server *export.Span) bool {
	return !server.Start.Before(client.Start.Add(-linkSlack)) && !server.End.After(client.End.Add(linkSlack))
}

// link makes server the child of client, in client's trace, and exports it
// once that trace is final.
func (t *Tracer) link(c *linkClient, server *export.Span) {
	t.stats.linked.Add(1)
	client := c.span
	server.TraceID = client.TraceID
	server.Parent = trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: client.TraceID, SpanID: client.SpanID, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	if c.final || !t.holdChild(client.SpanID, server) {
		t.finalize(server)
		return
	}
	t.linking.parents[client.SpanID] = true
}

// finalize exports a span whose trace ID is final, then the spans held for
// it: a server span's Go client calls, a client span's linked server span.
func (t *Tracer) finalize(s *export.Span) {
	t.exportSpan(s)
	if c := t.linking.byID[s.SpanID]; c != nil {
		c.final = true
	}
	if s.Kind == trace.SpanKindServer || t.linking.parents[s.SpanID] {
		delete(t.linking.parents, s.SpanID)
		t.releaseChildren(s)
	}
}

// expireLinks exports server spans whose client never came, and forgets
// client spans no server linked to. With all set, everything goes.
func (t *Tracer) expireLinks(now time.Time, all bool) {
	for k, w := range t.linking.waiting {
		if all || now.After(w.deadline) {
			delete(t.linking.waiting, k)
			t.stats.linkUnmatched.Add(1)
			t.finalize(w.span)
		}
	}
	for k, c := range t.linking.clients {
		if all || now.Sub(c.at) > linkClientTTL {
			delete(t.linking.clients, k)
			delete(t.linking.byID, c.span.SpanID)
		}
	}
	if all {
		clear(t.linking.keys)
	}
}
