package tracer

import (
	"container/list"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/sondehq/sonde/protocols/http1"
	"github.com/sondehq/sonde/protocols/http2"
)

type role uint8

const (
	roleUnknown role = iota
	roleServer
	roleClient
)

func (r role) String() string {
	switch r {
	case roleServer:
		return "server"
	case roleClient:
		return "client"
	}
	return "unknown"
}

// connKey names a connection as the process sees it. The kernel socket
// address in conn.sock tells a reused fd from the connection it replaced.
type connKey struct {
	tgid uint32
	fd   int32
}

type conn struct {
	key           connKey
	sock          uint64
	role          role
	local, remote netip.AddrPort
	// Address strings, made once per connection rather than per span.
	localAddr, remoteAddr string
	http                  *http1.Conn
	proc                  *process
	elem                  *list.Element

	// inError is set by a parse error and cleared by the next exchange, so a
	// connection that is not HTTP at all counts one error, not one per read.
	inError bool
	// exchanges counts the exchanges parsed on this connection.
	exchanges uint64
	// fed is set once bytes of the connection went to the parser.
	fed bool
	// tls is set once the connection is known to carry TLS: its bytes on
	// the wire are ciphertext, and only the OpenSSL probes' plaintext is
	// parsed.
	tls bool
	// tlsFrom is the direction (dirEgress, dirIngress) that sent record-like
	// bytes first, while the connection is not known to be TLS yet.
	tlsFrom uint8
	// plaintext is set once an OpenSSL probe reported the connection's
	// plaintext.
	plaintext bool
	// h2 parses the connection once it is known to speak HTTP/2.
	h2 *http2.Conn
	// upgrade is an exchange answered by 101, held until the connection's
	// next bytes say what it switched to.
	upgrade *http1.Exchange
	// midStream is set when sonde may have missed the start of the
	// connection's bytes: it was open before sonde attached, or its TLS
	// session began before its library was probed.
	midStream bool
}

// connTable holds connection state with a hard cap: under connection churn
// or a flood of sockets the least recently used connection is evicted.
type connTable struct {
	byKey map[connKey]*conn
	// bySock lists the connections on a kernel socket, oldest first: a
	// close event names only a socket, and processes that share it (after
	// a fork) each have their own connection on it.
	bySock  map[uint64][]*conn
	perProc map[uint32]int // connections per tgid: most exiting processes have none
	// byTuple counts connections by (local, remote): same-host linking
	// asks whether the other end of a connection is tracked too.
	byTuple map[[2]netip.AddrPort]int
	closed  map[[2]netip.AddrPort]time.Time // recently removed, for traced
	// servers counts server connections per tgid: a process that serves
	// and calls out may be a proxy (see holdProxied).
	servers map[uint32]int
	lru     *list.List // front = most recently used
	max     int
	limits  *http1.Limits
	// Read by Stats from other goroutines while the event loop changes
	// the table.
	evicted atomic.Uint64
	count   atomic.Int64
}

func newConnTable(max int, limits *http1.Limits) *connTable {
	return &connTable{byKey: make(map[connKey]*conn), bySock: make(map[uint64][]*conn), perProc: make(map[uint32]int), byTuple: make(map[[2]netip.AddrPort]int),
		closed: make(map[[2]netip.AddrPort]time.Time), servers: make(map[uint32]int),
		lru: list.New(), max: max, limits: limits}
}

// traced reports whether a tracked connection has, or had a moment ago,
// these local and remote addresses: whether sonde sees that end of a
// connection too. A moment ago, because the end that closes first (a
// server answering HTTP/1.0) may be gone before the other end's view of
// the last exchange is complete.
func (t *connTable) traced(local, remote netip.AddrPort) bool {
	tuple := [2]netip.AddrPort{local, remote}
	if t.byTuple[tuple] > 0 {
		return true
	}
	at, ok := t.closed[tuple]
	return ok && time.Since(at) < closedTupleTTL
}

// serves reports whether tgid has a server connection open.
func (t *connTable) serves(tgid uint32) bool { return t.servers[tgid] > 0 }

// closedTupleTTL is how long a closed connection's addresses are
// remembered for traced; closedTupleMax bounds how many are.
const (
	closedTupleTTL = 5 * time.Second
	closedTupleMax = 65536
)

// pruneClosed forgets the closed connections older than closedTupleTTL.
func (t *connTable) pruneClosed(now time.Time) {
	for k, at := range t.closed {
		if now.Sub(at) >= closedTupleTTL {
			delete(t.closed, k)
		}
	}
}

// onSock returns the connections of every process on kernel socket sock,
// in a slice of its own.
func (t *connTable) onSock(sock uint64) []*conn {
	return slices.Clone(t.bySock[sock])
}

func (t *connTable) get(k connKey) *conn {
	c := t.byKey[k]
	if c != nil {
		t.lru.MoveToFront(c.elem)
	}
	return c
}

// add starts tracking a connection. It returns the connection it evicted to
// make room, if any, so the caller can flush what it held.
func (t *connTable) add(c *conn) (evicted *conn) {
	if old := t.byKey[c.key]; old != nil {
		// Callers close the old connection first; should one not, the
		// replaced connection is handed back rather than leaked in the LRU.
		t.remove(old)
		evicted = old
	} else if len(t.byKey) >= t.max {
		if back := t.lru.Back(); back != nil {
			evicted = back.Value.(*conn)
			t.remove(evicted)
			t.evicted.Add(1)
		}
	}
	c.http = http1.NewConn(t.limits)
	c.localAddr, c.remoteAddr = c.local.Addr().String(), c.remote.Addr().String()
	c.elem = t.lru.PushFront(c)
	t.byKey[c.key] = c
	t.bySock[c.sock] = append(t.bySock[c.sock], c)
	t.perProc[c.key.tgid]++
	t.byTuple[[2]netip.AddrPort{c.local, c.remote}]++
	if c.role == roleServer {
		t.servers[c.key.tgid]++
	}
	t.count.Store(int64(len(t.byKey)))
	return evicted
}

func (t *connTable) remove(c *conn) {
	if t.byKey[c.key] == c {
		delete(t.byKey, c.key)
		if cs := slices.DeleteFunc(t.bySock[c.sock], func(o *conn) bool { return o == c }); len(cs) > 0 {
			t.bySock[c.sock] = cs
		} else {
			delete(t.bySock, c.sock)
		}
		t.lru.Remove(c.elem)
		if t.perProc[c.key.tgid]--; t.perProc[c.key.tgid] <= 0 {
			delete(t.perProc, c.key.tgid)
		}
		tuple := [2]netip.AddrPort{c.local, c.remote}
		if t.byTuple[tuple]--; t.byTuple[tuple] <= 0 {
			delete(t.byTuple, tuple)
		}
		if len(t.closed) < closedTupleMax {
			t.closed[tuple] = time.Now()
		}
		if c.role == roleServer {
			if t.servers[c.key.tgid]--; t.servers[c.key.tgid] <= 0 {
				delete(t.servers, c.key.tgid)
			}
		}
		t.count.Store(int64(len(t.byKey)))
	}
}

// ofProcess returns the connections of tgid.
func (t *connTable) ofProcess(tgid uint32) []*conn {
	n := t.perProc[tgid]
	if n == 0 {
		return nil
	}
	out := make([]*conn, 0, n)
	for k, c := range t.byKey {
		if k.tgid == tgid {
			out = append(out, c)
		}
	}
	return out
}

func (t *connTable) len() int { return len(t.byKey) }
