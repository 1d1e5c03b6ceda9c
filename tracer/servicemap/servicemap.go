// Package servicemap builds the map of who calls whom from spans: nodes are
// services, and an edge goes from a client to the server it called, with
// the calls' count, errors and latency quantiles.
//
// A call is a client span. Its server is the service of the server span
// that is its child (same-host linking, or a propagated traceparent makes
// one), or, when none is seen, the address it called (server.address and
// server.port), marked external. A server span whose parent no client span
// of the input explains is a call from outside: its edge comes from the
// peer address, also external.
//
// A Builder takes spans in any order: a client span waits up to Options.Wait
// for the server span that explains it before it counts as a call to an
// address, and a server span with a parent waits as long for its client
// span. Memory is bounded by Options.MaxPending and Options.MaxEdges.
package servicemap

import (
	"math"
	"sort"
	"time"
)

// Kind is a span's kind, as far as the map cares.
type Kind uint8

const (
	KindOther Kind = iota
	KindServer
	KindClient
)

// Span is what the map needs of a span.
type Span struct {
	SpanID, ParentID [8]byte // ParentID all zero: no parent
	Kind             Kind
	Service          string
	// Peer names the other end by address: for a client span the server
	// it called (server.address:server.port), for a server span its
	// client (client.address or network.peer.address).
	Peer       string
	Start, End time.Time
	Error      bool
}

// Edge is what the calls from one node to another did.
type Edge struct {
	Client, Server string
	// External marks an edge whose client or server is an address, not a
	// traced service.
	External bool
	Requests uint64
	Errors   uint64
	P50, P99 time.Duration
	hist     *histogram
}

// Map is a snapshot of the service map.
type Map struct {
	Nodes []Node
	Edges []Edge
}

// Node is a service, or an address sonde does not trace.
type Node struct {
	Name     string
	External bool
}

// Call is one call the map counted, for observers such as the service
// graph metrics. A duration is 0 when its side was not seen.
type Call struct {
	Client, Server         string
	External               bool
	ClientTime, ServerTime time.Duration
	Failed                 bool
}

// Options bounds a Builder. A nil *Options means the defaults.
type Options struct {
	// Observe, when set, sees every call as it is counted.
	Observe    func(Call)
	Wait       time.Duration // default 2s
	MaxPending int           // client spans waiting, and as many server spans; default 65536
	MaxEdges   int           // default 4096; calls beyond it are counted in Dropped
}

type edgeKey struct {
	client, server       string
	clientExt, serverExt bool // the end is an address, not a traced service
}

type pendingSpan struct {
	span    Span
	arrived time.Time
}

// Builder accumulates spans into a map. It is not safe for concurrent use.
type Builder struct {
	opts    Options
	edges   map[edgeKey]*Edge
	pending map[[8]byte]*pendingSpan // client spans by span ID
	servers map[[8]byte]*pendingSpan // server spans by parent ID
	// explained remembers client spans already matched to a server span,
	// so that a second server child (a retried delivery) is not a call
	// from outside.
	explained map[[8]byte]time.Time
	// Dropped counts calls that found no room: MaxEdges reached, or a
	// client span beyond MaxPending (counted at once, as a call to its
	// address).
	Dropped uint64
}

// NewBuilder returns an empty Builder.
func NewBuilder(opts *Options) *Builder {
	var o Options
	if opts != nil {
		o = *opts
	}
	if o.Wait <= 0 {
		o.Wait = 2 * time.Second
	}
	if o.MaxPending <= 0 {
		o.MaxPending = 65536
	}
	if o.MaxEdges <= 0 {
		o.MaxEdges = 4096
	}
	return &Builder{opts: o, edges: map[edgeKey]*Edge{}, pending: map[[8]byte]*pendingSpan{}, servers: map[[8]byte]*pendingSpan{}, explained: map[[8]byte]time.Time{}}
}

// Add takes one span, arrived at now.
func (b *Builder) Add(s Span, now time.Time) {
	switch s.Kind {
	case KindClient:
		if srv, ok := b.servers[s.SpanID]; ok {
			delete(b.servers, s.SpanID)
			b.matched(s, srv.span, now)
			return
		}
		if len(b.pending) >= b.opts.MaxPending {
			b.toAddress(s)
			return
		}
		b.pending[s.SpanID] = &pendingSpan{span: s, arrived: now}
	case KindServer:
		if c, ok := b.pending[s.ParentID]; ok {
			delete(b.pending, s.ParentID)
			b.matched(c.span, s, now)
			return
		}
		if s.ParentID == ([8]byte{}) {
			b.fromAddress(s)
			return
		}
		if _, ok := b.explained[s.ParentID]; ok {
			return
		}
		if len(b.servers) >= b.opts.MaxPending {
			b.fromAddress(s)
			return
		}
		// Its client span may come later.
		b.servers[s.ParentID] = &pendingSpan{span: s, arrived: now}
	}
}

func (b *Builder) matched(client, server Span, now time.Time) {
	b.explained[client.SpanID] = now
	// The client's view of the call is its latency: it includes the
	// network.
	b.count(edgeKey{client: client.Service, server: server.Service}, client.End.Sub(client.Start), server.End.Sub(server.Start), client.Error || server.Error)
}

func (b *Builder) toAddress(c Span) {
	b.count(edgeKey{client: c.Service, server: peerName(c.Peer), serverExt: true}, c.End.Sub(c.Start), 0, c.Error)
}

func (b *Builder) fromAddress(s Span) {
	b.count(edgeKey{client: peerName(s.Peer), server: s.Service, clientExt: true}, 0, s.End.Sub(s.Start), s.Error)
}

// Flush counts the spans that waited longer than Options.Wait (all of them
// with all set) for their other end: client spans as calls to their
// addresses, server spans as calls from theirs.
func (b *Builder) Flush(now time.Time, all bool) {
	for id, c := range b.pending {
		if all || now.Sub(c.arrived) >= b.opts.Wait {
			delete(b.pending, id)
			b.toAddress(c.span)
		}
	}
	for id, s := range b.servers {
		if all || now.Sub(s.arrived) >= b.opts.Wait {
			delete(b.servers, id)
			b.fromAddress(s.span)
		}
	}
	for id, at := range b.explained {
		if all || now.Sub(at) >= b.opts.Wait {
			delete(b.explained, id)
		}
	}
}

func peerName(p string) string {
	if p == "" {
		return "unknown"
	}
	return p
}

// count counts a call; its latency is the client's view when there is one,
// else the server's.
func (b *Builder) count(k edgeKey, clientTime, serverTime time.Duration, failed bool) {
	if b.opts.Observe != nil {
		b.opts.Observe(Call{Client: k.client, Server: k.server, External: k.clientExt || k.serverExt,
			ClientTime: clientTime, ServerTime: serverTime, Failed: failed})
	}
	d := clientTime
	if d == 0 {
		d = serverTime
	}
	e := b.edges[k]
	if e == nil {
		if len(b.edges) >= b.opts.MaxEdges {
			b.Dropped++
			return
		}
		e = &Edge{Client: k.client, Server: k.server, External: k.clientExt || k.serverExt, hist: &histogram{}}
		b.edges[k] = e
	}
	e.Requests++
	if failed {
		e.Errors++
	}
	e.hist.add(d)
}

// Map returns a snapshot: nodes by name, edges by client then server.
func (b *Builder) Map() Map {
	var m Map
	external := map[string]bool{} // a name is a service if any edge says so
	note := func(name string, ext bool) {
		if was, ok := external[name]; !ok || was {
			external[name] = ext
		}
	}
	for k, e := range b.edges {
		c := *e
		c.P50, c.P99 = e.hist.quantile(0.50), e.hist.quantile(0.99)
		c.hist = nil
		m.Edges = append(m.Edges, c)
		note(k.client, k.clientExt)
		note(k.server, k.serverExt)
	}
	for name, ext := range external {
		m.Nodes = append(m.Nodes, Node{Name: name, External: ext})
	}
	sort.Slice(m.Nodes, func(i, j int) bool { return m.Nodes[i].Name < m.Nodes[j].Name })
	sort.Slice(m.Edges, func(i, j int) bool {
		a, c := m.Edges[i], m.Edges[j]
		if a.Client != c.Client {
			return a.Client < c.Client
		}
		return a.Server < c.Server
	})
	return m
}

// histogram holds latencies in logarithmic buckets, eight per power of two
// from 1 µs: a quantile is known within about 9%, in constant memory.
type histogram struct {
	counts [histBuckets]uint64
	total  uint64
}

const (
	histSub     = 8
	histBuckets = 40 * histSub // 1 µs to about 12 days
)

func bucketOf(d time.Duration) int {
	us := float64(d) / float64(time.Microsecond)
	if us <= 1 {
		return 0
	}
	i := int(math.Log2(us) * histSub)
	return min(i, histBuckets-1)
}

func bucketUpper(i int) time.Duration {
	return time.Duration(math.Exp2(float64(i+1)/histSub) * float64(time.Microsecond))
}

func (h *histogram) add(d time.Duration) {
	h.counts[bucketOf(d)]++
	h.total++
}

// quantile returns the upper bound of the bucket holding quantile q.
func (h *histogram) quantile(q float64) time.Duration {
	if h.total == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.total)))
	var seen uint64
	for i, n := range h.counts {
		seen += n
		if seen >= rank {
			return bucketUpper(i)
		}
	}
	return bucketUpper(histBuckets - 1)
}
