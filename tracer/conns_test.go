package tracer

import (
	"net/netip"
	"slices"
	"testing"
)

func newTestConn(tgid uint32, fd int32) *conn {
	return &conn{
		key:    connKey{tgid, fd},
		sock:   uint64(tgid)<<32 | uint64(fd),
		role:   roleClient,
		local:  netip.MustParseAddrPort("10.0.0.1:40000"),
		remote: netip.MustParseAddrPort("[2001:db8::1]:80"),
	}
}

// lruOrder lists the keys from most to least recently used.
func lruOrder(tab *connTable) []connKey {
	var out []connKey
	for e := tab.lru.Front(); e != nil; e = e.Next() {
		out = append(out, e.Value.(*conn).key)
	}
	return out
}

func TestConnTableAdd(t *testing.T) {
	tab := newConnTable(4, nil)
	c := newTestConn(1, 3)
	if ev := tab.add(c); ev != nil {
		t.Fatalf("add evicted %v", ev.key)
	}
	if c.http == nil {
		t.Errorf("add did not give the connection a parser")
	}
	if c.localAddr != "10.0.0.1" || c.remoteAddr != "2001:db8::1" {
		t.Errorf("addresses %q, %q", c.localAddr, c.remoteAddr)
	}
	if tab.get(connKey{1, 3}) != c || tab.len() != 1 {
		t.Errorf("get after add: %v, len %d", tab.get(connKey{1, 3}), tab.len())
	}
	if tab.get(connKey{1, 4}) != nil || tab.get(connKey{2, 3}) != nil {
		t.Errorf("get of unknown keys found something")
	}
}

func TestConnTableLRU(t *testing.T) {
	tab := newConnTable(3, nil)
	a, b, c, d, e := newTestConn(1, 1), newTestConn(1, 2), newTestConn(1, 3), newTestConn(2, 1), newTestConn(2, 2)
	for _, x := range []*conn{a, b, c} {
		if ev := tab.add(x); ev != nil {
			t.Fatalf("add %v evicted %v below the cap", x.key, ev.key)
		}
	}
	if got, want := lruOrder(tab), []connKey{c.key, b.key, a.key}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}

	// get makes a the most recently used: b is now the oldest.
	tab.get(a.key)
	if got, want := lruOrder(tab), []connKey{a.key, c.key, b.key}; !slices.Equal(got, want) {
		t.Fatalf("order after get %v, want %v", got, want)
	}
	if ev := tab.add(d); ev != b {
		t.Fatalf("add at the cap evicted %v, want %v", keyOf(ev), b.key)
	}
	if tab.len() != 3 || tab.evicted.Load() != 1 || tab.get(b.key) != nil {
		t.Errorf("after eviction: len %d, evicted %d, b still there: %v", tab.len(), tab.evicted.Load(), tab.get(b.key) != nil)
	}
	if got, want := lruOrder(tab), []connKey{d.key, a.key, c.key}; !slices.Equal(got, want) {
		t.Fatalf("order %v, want %v", got, want)
	}

	// A get of a missing key changes nothing.
	tab.get(connKey{9, 9})
	if ev := tab.add(e); ev != c {
		t.Fatalf("evicted %v, want %v", keyOf(ev), c.key)
	}
	if tab.evicted.Load() != 2 || tab.len() != 3 || tab.lru.Len() != 3 {
		t.Errorf("evicted %d, len %d, lru %d", tab.evicted.Load(), tab.len(), tab.lru.Len())
	}
}

func keyOf(c *conn) any {
	if c == nil {
		return nil
	}
	return c.key
}

func TestConnTableCapOne(t *testing.T) {
	tab := newConnTable(1, nil)
	prev := newTestConn(1, 0)
	tab.add(prev)
	for fd := int32(1); fd < 100; fd++ {
		c := newTestConn(1, fd)
		if ev := tab.add(c); ev != prev {
			t.Fatalf("fd %d: evicted %v, want %v", fd, keyOf(ev), prev.key)
		}
		if tab.len() != 1 || tab.lru.Len() != 1 {
			t.Fatalf("len %d, lru %d", tab.len(), tab.lru.Len())
		}
		prev = c
	}
	if tab.evicted.Load() != 99 {
		t.Errorf("evicted %d, want 99", tab.evicted.Load())
	}
}

func TestConnTableRemove(t *testing.T) {
	tab := newConnTable(8, nil)
	a, b := newTestConn(1, 1), newTestConn(1, 2)
	tab.add(a)
	tab.add(b)
	tab.remove(a)
	if tab.get(a.key) != nil || tab.len() != 1 || tab.lru.Len() != 1 {
		t.Errorf("after remove: get %v, len %d, lru %d", tab.get(a.key), tab.len(), tab.lru.Len())
	}
	// Removing twice is harmless.
	tab.remove(a)
	if tab.len() != 1 || tab.lru.Len() != 1 {
		t.Errorf("second remove: len %d, lru %d", tab.len(), tab.lru.Len())
	}

	// A stale connection whose fd was reused does not remove its successor.
	old := newTestConn(1, 2)
	old.sock = 1
	tab.remove(old)
	if tab.get(b.key) != b || tab.lru.Len() != 1 {
		t.Errorf("remove of a stale conn removed the live one")
	}
	if tab.evicted.Load() != 0 {
		t.Errorf("remove counted as eviction")
	}
}

func TestConnTableOfProcess(t *testing.T) {
	tab := newConnTable(16, nil)
	for _, k := range []connKey{{1, 3}, {1, 4}, {2, 3}, {1, 9}, {3, 1}} {
		tab.add(newTestConn(k.tgid, k.fd))
	}
	fds := func(tgid uint32) []int32 {
		var out []int32
		for _, c := range tab.ofProcess(tgid) {
			if c.key.tgid != tgid {
				t.Errorf("ofProcess(%d) returned %v", tgid, c.key)
			}
			out = append(out, c.key.fd)
		}
		slices.Sort(out)
		return out
	}
	if got := fds(1); !slices.Equal(got, []int32{3, 4, 9}) {
		t.Errorf("ofProcess(1) fds %v", got)
	}
	if got := fds(2); !slices.Equal(got, []int32{3}) {
		t.Errorf("ofProcess(2) fds %v", got)
	}
	if got := fds(7); len(got) != 0 {
		t.Errorf("ofProcess(7) fds %v", got)
	}
	// Callers remove what ofProcess returns while holding the slice.
	for _, c := range tab.ofProcess(1) {
		tab.remove(c)
	}
	if tab.len() != 2 || len(tab.ofProcess(1)) != 0 {
		t.Errorf("after removing process 1: len %d", tab.len())
	}
}

func TestRoleString(t *testing.T) {
	for r, want := range map[role]string{roleServer: "server", roleClient: "client", roleUnknown: "unknown", role(9): "unknown"} {
		if got := r.String(); got != want {
			t.Errorf("role(%d) = %q, want %q", r, got, want)
		}
	}
}

// The per-process count stays exact through add, replace, evict and remove,
// so that ofProcess can answer "none" without a scan.
func TestConnTablePerProcessCount(t *testing.T) {
	tab := newConnTable(3, nil)
	mk := func(tgid uint32, fd int32) *conn { return &conn{key: connKey{tgid, fd}} }
	a, b := mk(1, 3), mk(1, 4)
	tab.add(a)
	tab.add(b)
	tab.add(mk(2, 3))
	if got := len(tab.ofProcess(1)); got != 2 || tab.perProc[1] != 2 {
		t.Fatalf("process 1: %d conns, count %d", got, tab.perProc[1])
	}
	tab.add(mk(3, 3)) // evicts a, the least recently used
	if tab.perProc[1] != 1 || len(tab.ofProcess(1)) != 1 {
		t.Fatalf("after eviction: count %d", tab.perProc[1])
	}
	tab.add(mk(1, 4)) // replaces b: same key
	if tab.perProc[1] != 1 {
		t.Fatalf("after replacing: count %d", tab.perProc[1])
	}
	for _, c := range tab.ofProcess(1) {
		tab.remove(c)
	}
	if _, ok := tab.perProc[1]; ok || tab.ofProcess(1) != nil {
		t.Fatalf("process 1 still counted: %v", tab.perProc)
	}
	if len(tab.perProc) != 2 || tab.len() != 2 {
		t.Fatalf("counts %v for %d conns", tab.perProc, tab.len())
	}
}

// A close names a socket, not an fd or a process: onSock finds every
// process's connection on it, and forgets one once it is removed or
// replaced.
func TestConnTableOnSock(t *testing.T) {
	tab := newConnTable(4, nil)
	a, b := newTestConn(1, 3), newTestConn(2, 3)
	b.sock = a.sock // one socket in two processes, as after a fork
	tab.add(a)
	tab.add(b)
	if got := tab.onSock(a.sock); len(got) != 2 || got[0] != a || got[1] != b {
		t.Fatalf("onSock: %v", got)
	}
	if got := tab.onSock(a.sock + 1); len(got) != 0 {
		t.Errorf("onSock of an unknown socket found %v", got)
	}
	tab.remove(a)
	if got := tab.onSock(a.sock); len(got) != 1 || got[0] != b {
		t.Errorf("after remove: %v", got)
	}
	// The same fd with a new socket replaces the connection under both
	// of its names.
	c := newTestConn(2, 3)
	c.sock = b.sock + 1
	if ev := tab.add(c); ev != b {
		t.Fatalf("add over a tracked fd handed back %v", ev)
	}
	if old, got := tab.onSock(b.sock), tab.onSock(c.sock); len(old) != 0 || len(got) != 1 || got[0] != c || len(tab.bySock) != 1 {
		t.Errorf("after replace: old %v, new %v, %d by socket", old, got, len(tab.bySock))
	}
	// Eviction forgets the socket too.
	for fd := int32(10); fd < 14; fd++ {
		tab.add(newTestConn(5, fd))
	}
	if got := tab.onSock(c.sock); len(got) != 0 || len(tab.bySock) != tab.len() {
		t.Errorf("after eviction: %v, %d by socket, %d connections", got, len(tab.bySock), tab.len())
	}
}
