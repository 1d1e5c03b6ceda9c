package tracer

import (
	"net/netip"
	"slices"
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
// An end joined in the middle (the process was selected after it
// connected) does not know its ordinals; its exchanges match by time
// alone, oldest first, which keeps the order of sequential and pipelined
// exchanges.
// The server span then becomes the client span's child, in its trace.
//
//   - A server span waits for its client span only when the other end of
//     its connection is a connection sonde tracks on this host, and for at
//     most Options.LinkHold (at most Options.LinkMax spans wait); a server span that carries an incoming traceparent
//     keeps it and waits for nothing. Unmatched, it is exported alone:
//     nothing is lost.
//   - The match also wants the server span to start while the client span
//     is under way (both come from the same monotonic clock), so that
//     ordinals thrown off by a parse error or a missed exchange do not
//     link the wrong pair.
//   - A linked server span is exported once its client span's trace ID is
//     final: the client span may itself wait for its own parent (a Go
//     client call waits for the request it was made for), so the server
//     span is held as that client span's child, as a Go client call is
//     held for its request.
const (
	// linkSlack is how far a server span's start may lie outside its
	// client span: the client's first write is stamped when it returns,
	// which may be after the server's read has, by the time the client's
	// thread waits to run again.
	linkSlack = 50 * time.Millisecond
	// linkClientTTL bounds how long a client span waits for a server span
	// to link: the server's view of an exchange comes before the client's.
	linkClientTTL = 2 * time.Second
)

// linkKey names one exchange on one connection as both its ends see it.
type linkKey struct {
	tuple linkTuple
	seq   uint64 // HTTP/1: 1-based ordinal, 0 when unknown; HTTP/2: stream ID | linkStream
}

// linkTuple names a connection: client address and port, server address
// and port.
type linkTuple [2]netip.AddrPort

const linkStream = 1 << 63

// sameExchange reports whether two keys of one connection may name the same
// exchange: equal, or one of them an HTTP/1 exchange whose ordinal is not
// known (its end was joined in the middle, when a process was selected
// after it connected), which the time check alone then decides.
func sameExchange(a, b uint64) bool {
	return a == b || (a == 0 && b&linkStream == 0) || (b == 0 && a&linkStream == 0)
}

type linkClient struct {
	span  *export.Span
	key   linkKey
	at    time.Time
	final bool // exported: its trace ID can no longer change
	// held: with injection on, a client span waits (until heldUntil) for
	// its server span before it is exported, so that it can still join
	// the trace the server's calls named on the wire.
	held      bool
	heldUntil time.Time
}

// proxied is a client span of a process that also serves, waiting for the
// server span it was made for (holdProxied).
type proxied struct {
	span           *export.Span
	tgid           uint32
	method, target string
	deadline       time.Time
}

type linkServer struct {
	span     *export.Span
	key      linkKey
	deadline time.Time
}

// linkState is the tracer's state for same-host linking. Only the event
// loop uses it. Spans wait in lists per connection, oldest first: there
// are as many as its exchanges in flight.
type linkState struct {
	keys               map[*export.Span]linkKey     // spans that may link, until they settle
	clients            map[linkTuple][]*linkClient  // settled client spans, for servers to come
	byID               map[trace.SpanID]*linkClient // the same, by span ID
	waiting            map[linkTuple][]*linkServer  // final server spans waiting for their client
	parents            map[trace.SpanID]bool        // client spans a server span waits for
	proxied            []*proxied                   // client spans of serving processes, in arrival order
	nClients, nWaiting int
}

func (l *linkState) init() {
	l.keys = make(map[*export.Span]linkKey)
	l.clients = make(map[linkTuple][]*linkClient)
	l.byID = make(map[trace.SpanID]*linkClient)
	l.waiting = make(map[linkTuple][]*linkServer)
	l.parents = make(map[trace.SpanID]bool)
}

// noteLink records which exchange a socket-view span is, when the other end
// of its connection is traced on this host. seq is its ordinal or stream.
func (t *Tracer) noteLink(c *conn, s *export.Span, seq uint64) {
	if seq == 0 || t.opts.LinkHold < 0 || !c.local.IsValid() || !c.remote.IsValid() || len(t.linking.keys) >= t.opts.LinkMax {
		return
	}
	if seq&linkStream == 0 && c.midStream {
		seq = 0 // ordinals count from the connection's first exchange
	}
	if !t.conns.traced(c.remote, c.local) {
		return
	}
	k := linkKey{tuple: linkTuple{c.remote, c.local}, seq: seq}
	if s.Kind == trace.SpanKindClient {
		k.tuple = linkTuple{c.local, c.remote}
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
	ws := t.linking.waiting[k.tuple]
	for i, w := range ws {
		if sameExchange(w.key.seq, k.seq) && linkable(s, w.span) {
			t.linking.waiting[k.tuple] = slices.Delete(ws, i, i+1)
			if len(t.linking.waiting[k.tuple]) == 0 {
				delete(t.linking.waiting, k.tuple)
			}
			t.linking.nWaiting--
			t.link(c, w.span)
			return
		}
	}
	if t.linking.nClients >= t.opts.LinkMax {
		return
	}
	t.linking.clients[k.tuple] = append(t.linking.clients[k.tuple], c)
	t.linking.byID[s.SpanID] = c
	t.linking.nClients++
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
	cs := t.linking.clients[k.tuple]
	for i, c := range cs {
		if sameExchange(c.key.seq, k.seq) && linkable(c.span, s) {
			t.linking.clients[k.tuple] = slices.Delete(cs, i, i+1)
			if len(t.linking.clients[k.tuple]) == 0 {
				delete(t.linking.clients, k.tuple)
			}
			t.linking.nClients--
			delete(t.linking.byID, c.span.SpanID)
			t.link(c, s)
			return
		}
	}
	if t.linking.nWaiting >= t.opts.LinkMax {
		t.finalize(s)
		return
	}
	t.linking.waiting[k.tuple] = append(t.linking.waiting[k.tuple], &linkServer{span: s, key: k, deadline: time.Now().Add(t.opts.LinkHold)})
	t.linking.nWaiting++
}

// linkable reports whether server began while client was under way. Only
// starts are compared: a span's end is taken at different points on each
// side (a Go client's when its response headers are parsed, a server's
// when its last byte is written), and a descheduled thread stamps an
// OpenSSL call's end late, by milliseconds on a loaded machine.
func linkable(client, server *export.Span) bool {
	return !server.Start.Before(client.Start.Add(-linkSlack)) && !server.Start.After(client.End.Add(linkSlack))
}

// link makes server the child of client, in client's trace, and exports it
// once that trace is final.
func (t *Tracer) link(c *linkClient, server *export.Span) {
	client := c.span
	if server.TraceID != client.TraceID && t.callsNamedTrace(server) {
		// The server's calls named its trace on the wire (injection).
		if c.final || client.Parent.IsValid() || injected(client) {
			// The client's trace is fixed: the server keeps the one the
			// other host is in, unlinked.
			t.stats.injectDetached.Add(1)
			t.releaseHeld(c)
			t.finalize(server)
			return
		}
		// The client is a root whose trace nothing fixed yet: it joins
		// the server's, so that both hosts hold one tree.
		client.TraceID = server.TraceID
	}
	t.stats.linked.Add(1)
	server.TraceID = client.TraceID
	server.Parent = trace.NewSpanContext(trace.SpanContextConfig{
		TraceID: client.TraceID, SpanID: client.SpanID, TraceFlags: trace.FlagsSampled, Remote: true,
	})
	if c.final || !t.holdChild(client.SpanID, server) {
		t.finalize(server)
		t.releaseHeld(c)
		return
	}
	t.linking.parents[client.SpanID] = true
	t.releaseHeld(c) // exports the client, then the server in its trace
}

// holdClient keeps a settled client span from export until its server
// span comes, when injection is on: a client exported first could not
// join the trace its server's calls named on the wire. (Over TLS the
// client's view can complete before the server's.)
func (t *Tracer) holdClient(s *export.Span) bool {
	c := t.linking.byID[s.SpanID]
	if t.inject == nil || c == nil {
		return false
	}
	c.held, c.heldUntil = true, time.Now().Add(t.opts.LinkHold)
	return true
}

// releaseHeld exports a client span holdClient kept.
func (t *Tracer) releaseHeld(c *linkClient) {
	if c.held {
		c.held = false
		t.finalize(c.span)
	}
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
	t.expireProxied(now, all)
	var expired []*export.Span
	for tuple, ws := range t.linking.waiting {
		kept := ws[:0]
		for _, w := range ws {
			if all || now.After(w.deadline) {
				expired = append(expired, w.span)
				t.linking.nWaiting--
				continue
			}
			kept = append(kept, w)
		}
		if len(kept) == 0 {
			delete(t.linking.waiting, tuple)
		} else {
			t.linking.waiting[tuple] = kept
		}
	}
	var unheld []*linkClient
	for tuple, cs := range t.linking.clients {
		kept := cs[:0]
		for _, c := range cs {
			if c.held && (all || now.After(c.heldUntil) || now.Sub(c.at) > linkClientTTL) {
				unheld = append(unheld, c)
			}
			if all || now.Sub(c.at) > linkClientTTL {
				delete(t.linking.byID, c.span.SpanID)
				t.linking.nClients--
				continue
			}
			kept = append(kept, c)
		}
		if len(kept) == 0 {
			delete(t.linking.clients, tuple)
		} else {
			t.linking.clients[tuple] = kept
		}
	}
	for _, s := range expired {
		t.stats.linkUnmatched.Add(1)
		t.finalize(s)
	}
	for _, c := range unheld {
		t.releaseHeld(c)
	}
	if all {
		clear(t.linking.keys)
	}
}

// In-process linking for programs sonde has no probes in, such as nginx:
// a proxy forwards the request it serves, so a client exchange of a
// process that serves, with the method and target of one of its server
// exchanges and inside that exchange's time, is that exchange's child.
// Of several such server exchanges (identical requests served at once)
// the oldest still unclaimed is taken, so identical concurrent requests
// may swap their downstream calls, which the same-host link then still
// places inside a server span of the right shape. A client span no server
// span claims within Options.LinkHold is exported alone.

// holdProxied holds a settled client span of a process that serves, for
// the server span it was made for.
func (t *Tracer) holdProxied(tgid uint32, s *export.Span, method, target string) {
	if len(t.linking.proxied) >= t.opts.LinkMax {
		t.finalize(s)
		return
	}
	hold := t.opts.LinkHold
	if hold < 0 {
		hold = defaultLinkHold
	}
	t.linking.proxied = append(t.linking.proxied, &proxied{span: s, tgid: tgid, method: method, target: target, deadline: time.Now().Add(hold)})
}

// claimProxied makes the held client spans that server (of tgid, with this
// method and target) forwarded its children: they are exported once its
// trace is final.
func (t *Tracer) claimProxied(tgid uint32, server *export.Span, method, target string) {
	kept := t.linking.proxied[:0]
	claimed := false
	for _, p := range t.linking.proxied {
		if claimed || p.tgid != tgid || p.method != method || p.target != target || !linkable(server, p.span) {
			kept = append(kept, p)
			continue
		}
		claimed = true // one downstream call per served request
		if injected(p.span) && p.span.TraceID != server.TraceID {
			// The forwarded request named a trace on the wire: the served
			// request joins it when its own is not fixed yet, else the
			// call stays in the trace the receiving side is in.
			if server.Parent.IsValid() {
				t.stats.injectDetached.Add(1)
				t.finalize(p.span)
				continue
			}
			server.TraceID = p.span.TraceID
		}
		t.stats.proxyLinked.Add(1)
		p.span.TraceID = server.TraceID
		p.span.Parent = trace.NewSpanContext(trace.SpanContextConfig{
			TraceID: server.TraceID, SpanID: server.SpanID, TraceFlags: trace.FlagsSampled,
		})
		if !t.holdChild(server.SpanID, p.span) {
			t.finalize(p.span)
		}
	}
	clear(t.linking.proxied[len(kept):])
	t.linking.proxied = kept
}

// expireProxied exports the client spans no server span claimed in time.
func (t *Tracer) expireProxied(now time.Time, all bool) {
	kept := t.linking.proxied[:0]
	var expired []*export.Span
	for _, p := range t.linking.proxied {
		if all || now.After(p.deadline) {
			expired = append(expired, p.span)
			continue
		}
		kept = append(kept, p)
	}
	clear(t.linking.proxied[len(kept):])
	t.linking.proxied = kept
	for _, s := range expired {
		t.finalize(s)
	}
}
