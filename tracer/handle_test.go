package tracer

import (
	"log/slog"
	"net/netip"
	"testing"
	"time"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

// handTracer is a Tracer built by hand, without BPF: records are given to
// handle as the ring buffer would give them.
func handTracer(t *testing.T, fp *fakeProc, maxConns int) (*Tracer, *collectSink) {
	t.Helper()
	sink := &collectSink{}
	sel, err := newSelector(fp.root, nil)
	if err != nil {
		t.Fatal(err)
	}
	tr := &Tracer{
		opts:      Options{Sink: sink, ProcRoot: fp.root, MaxConns: maxConns, LinkHold: defaultLinkHold, LinkMax: defaultLinkMax},
		log:       slog.New(slog.DiscardHandler),
		clock:     clock{offset: 1_700_000_000_000_000_000},
		ids:       newIDSource(),
		host:      "test-host",
		conns:     newConnTable(maxConns, nil),
		procs:     make(map[uint32]*process),
		listen:    make(map[uint32]listenCache),
		selection: sel,
		rejected:  make(map[uint32]bool),
	}
	tr.stats.parseErrors = make(map[string]uint64)
	tr.gostate.init()
	tr.linking.init()
	return tr, sink
}

// sock describes one connection as the kernel reports it.
type sock struct {
	tgid          uint32
	fd            int32
	id            uint64
	local, remote string
	comm          string
}

func (s sock) event(kind uint8) *socketEvent {
	e := &socketEvent{Kind: kind, Tgid: s.tgid, Tid: s.tgid, Fd: s.fd, Sock: s.id}
	l, r := netip.MustParseAddrPort(s.local), netip.MustParseAddrPort(s.remote)
	e.Saddr, e.Sport = netip.AddrFrom16(l.Addr().As16()).As16(), l.Port()
	e.Daddr, e.Dport = netip.AddrFrom16(r.Addr().As16()).As16(), r.Port()
	if l.Addr().Is4() {
		e.Family = 2
	} else {
		e.Family = 10
	}
	setComm(e, s.comm)
	return e
}

func (s sock) open(t *testing.T, tr *Tracer, kind uint8) {
	t.Helper()
	tr.handle(encodeEvent(t, s.event(kind), nil))
}

// data sends a payload through the tracer; size > len(payload) marks a
// capture cut short.
func (s sock) data(t *testing.T, tr *Tracer, dir uint8, ts uint64, payload string, size int) {
	t.Helper()
	e := s.event(eventData)
	e.Dir, e.Ts = dir, ts
	e.Captured, e.Size = uint32(len(payload)), uint32(max(size, len(payload)))
	tr.handle(encodeEvent(t, e, []byte(payload)))
}

// close reports the socket's last close as the kernel does: at the
// socket, with the fd already gone.
func (s sock) close(t *testing.T, tr *Tracer) {
	t.Helper()
	e := s.event(eventClose)
	e.Fd = -1
	tr.handle(encodeEvent(t, e, nil))
}

const (
	getRequest = "GET /orders?id=1&token=s3cr3t HTTP/1.1\r\nHost: shop.local:8080\r\nUser-Agent: t/1\r\n\r\n"
	okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
)

func TestHandleServerExchange(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(100, "/srv/shopd")
	fp.environ(100, "OTEL_SERVICE_NAME=shop")
	tr, sink := handTracer(t, fp, 16)
	s := sock{tgid: 100, fd: 5, id: 0xa1, local: "[::ffff:10.0.0.1]:8080", remote: "[::ffff:10.0.0.2]:50000", comm: "shopd"}

	s.open(t, tr, eventAccept)
	if c := tr.conns.get(connKey{100, 5}); c == nil || c.role != roleServer || c.proc == nil || c.proc.service != "shop" {
		t.Fatalf("accepted connection: %+v", c)
	}
	s.data(t, tr, dirIngress, 1_000, getRequest, 0)
	s.data(t, tr, dirEgress, 5_000, okResponse, 0)
	s.close(t, tr)

	if len(sink.spans) != 1 {
		t.Fatalf("%d spans, want 1", len(sink.spans))
	}
	sp := sink.spans[0]
	if sp.Kind != trace.SpanKindServer || sp.Name != "GET" || sp.Status != codes.Unset {
		t.Errorf("span %q kind %v status %v", sp.Name, sp.Kind, sp.Status)
	}
	if !sp.Start.Equal(time.Unix(0, 1_000+tr.clock.offset)) || !sp.End.Equal(time.Unix(0, 5_000+tr.clock.offset)) {
		t.Errorf("times %v..%v", sp.Start, sp.End)
	}
	a := spanAttrs(t, sp)
	if a["url.query"].AsString() != "id=1&token=REDACTED" || a["client.address"].AsString() != "10.0.0.2" ||
		a["server.port"].AsInt64() != 8080 || a["http.response.status_code"].AsInt64() != 200 {
		t.Errorf("attributes %v", sp.Attributes)
	}
	if v, _ := resourceValue(t, sp.Resource, "service.name"); v != "shop" {
		t.Errorf("resource service.name = %v", v)
	}
	if v, _ := resourceValue(t, sp.Resource, "host.name"); v != "test-host" {
		t.Errorf("resource host.name = %v", v)
	}
	st := tr.Stats()
	if st.Records != 4 || st.Spans != 1 || st.Conns != 0 || st.BadRecords != 0 || st.Truncated != 0 || len(st.ParseErrors) != 0 {
		t.Errorf("stats %+v", st)
	}
}

func TestHandleClientExchange(t *testing.T) {
	fp := newFakeProc(t)
	tr, sink := handTracer(t, fp, 16)
	s := sock{tgid: 200, fd: 9, id: 0xb2, local: "10.0.0.2:41000", remote: "10.0.0.9:80", comm: "curl"}
	s.open(t, tr, eventConnect)
	s.data(t, tr, dirEgress, 10, "GET / HTTP/1.1\r\nHost: api.local\r\n\r\n", 0)
	s.data(t, tr, dirIngress, 20, "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", 0)
	if len(sink.spans) != 1 {
		t.Fatalf("%d spans, want 1", len(sink.spans))
	}
	sp := sink.spans[0]
	a := spanAttrs(t, sp)
	if sp.Kind != trace.SpanKindClient || sp.Status != codes.Error || a["url.full"].AsString() != "http://api.local/" {
		t.Errorf("span kind %v status %v url.full %q", sp.Kind, sp.Status, a["url.full"].AsString())
	}
	// No exe and no environ: the service is named after comm.
	if v, _ := resourceValue(t, sp.Resource, "service.name"); v != "curl" {
		t.Errorf("service.name = %v, want curl", v)
	}
}

// A connection already open when sonde started gets its role from the
// process's listening sockets, else from the first bytes.
func TestHandleRoleOfPreexisting(t *testing.T) {
	fp := newFakeProc(t)
	fp.write(300, "net/tcp", procNetTCP) // listens on 0x1F90 = 8080
	tr, _ := handTracer(t, fp, 16)

	// The first bytes seen are a response going out on the listening
	// port: the request was missed, but the role is right all the same.
	srv := sock{tgid: 300, fd: 4, id: 1, local: "10.0.0.1:8080", remote: "10.0.0.2:50000"}
	srv.data(t, tr, dirEgress, 5, okResponse, 0)
	if c := tr.conns.get(connKey{300, 4}); c == nil || c.role != roleServer {
		t.Fatalf("role on a listening port: %+v", c)
	}

	for _, tc := range []struct {
		dir     uint8
		payload string
		want    role
	}{
		{dirIngress, getRequest, roleServer},
		{dirEgress, okResponse, roleServer},
		{dirEgress, getRequest, roleClient},
		{dirIngress, okResponse, roleClient},
		{dirIngress, "\x16\x03\x01 not http", roleClient},
	} {
		fd := int32(10 + len(tr.conns.byKey))
		s := sock{tgid: 300, fd: fd, id: uint64(fd), local: "10.0.0.1:41000", remote: "10.0.0.3:80"}
		s.data(t, tr, tc.dir, 5, tc.payload, 0)
		if c := tr.conns.get(connKey{300, fd}); c == nil || c.role != tc.want {
			t.Errorf("first bytes %q dir %d: role %v, want %v", tc.payload[:8], tc.dir, c.role, tc.want)
		}
	}
	if _, ok := tr.listen[300]; !ok {
		t.Errorf("listening ports not cached")
	}
}

func TestHandleCounters(t *testing.T) {
	fp := newFakeProc(t)
	tr, sink := handTracer(t, fp, 16)
	s := sock{tgid: 1, fd: 3, id: 7, local: "127.0.0.1:80", remote: "127.0.0.1:5000"}
	s.open(t, tr, eventAccept)

	// A capture cut short counts as truncated, except for sendfile.
	s.data(t, tr, dirIngress, 1, "GET / HTTP/1.1\r\n", 100)
	e := s.event(eventData)
	e.Dir, e.Syscall, e.Size = dirEgress, sysSendfile, 1<<20
	tr.handle(encodeEvent(t, e, nil))

	// Records that do not decode, and kinds nobody knows.
	tr.handle(make([]byte, eventHeaderSize-1))
	tr.handle(encodeEvent(t, &socketEvent{Kind: 99}, nil))

	st := tr.Stats()
	if st.Truncated != 1 || st.BadRecords != 1 || st.UnknownEvents != 1 || st.Records != 5 {
		t.Errorf("stats %+v", st)
	}

	// Bytes that are not HTTP count one parse error per connection, not one
	// per read.
	tr, sink = handTracer(t, fp, 16)
	junk := sock{tgid: 1, fd: 4, id: 8, local: "127.0.0.1:80", remote: "127.0.0.1:5001"}
	junk.open(t, tr, eventAccept)
	for range 5 {
		junk.data(t, tr, dirIngress, 2, "\x00\x01\x02 binary protocol \xff\r\n\r\n", 0)
	}
	if got := tr.Stats().ParseErrors; got["not_http"] != 1 || len(got) != 1 {
		t.Errorf("parse errors %v, want one not_http", got)
	}
	if len(sink.spans) != 0 {
		t.Errorf("%d spans from junk", len(sink.spans))
	}

	// After an exchange parsed, an error is counted by its reason.
	tr, sink = handTracer(t, fp, 16)
	good := sock{tgid: 1, fd: 5, id: 9, local: "127.0.0.1:80", remote: "127.0.0.1:5002"}
	good.open(t, tr, eventAccept)
	good.data(t, tr, dirIngress, 1, getRequest, 0)
	good.data(t, tr, dirEgress, 2, okResponse, 0)
	good.data(t, tr, dirIngress, 3, "\x00\x01 not a request\r\n\r\n", 0)
	good.data(t, tr, dirIngress, 4, "\x00\x01 not a request\r\n\r\n", 0)
	pe := tr.Stats().ParseErrors
	total := uint64(0)
	for _, n := range pe {
		total += n
	}
	if len(sink.spans) != 1 || total != 1 || pe["not_http"] != 0 {
		t.Errorf("%d spans, parse errors %v: want 1 span and one error with a parser reason", len(sink.spans), pe)
	}
}

// A reused fd with a new kernel socket ends the old connection: its pending
// request is reported as incomplete.
func TestHandleFDReuse(t *testing.T) {
	fp := newFakeProc(t)
	tr, sink := handTracer(t, fp, 16)
	old := sock{tgid: 1, fd: 3, id: 7, local: "127.0.0.1:80", remote: "127.0.0.1:5000"}
	old.open(t, tr, eventAccept)
	old.data(t, tr, dirIngress, 100, getRequest, 0)

	// The close of the old socket was missed; a close for another socket
	// on the same fd is ignored.
	stale := old
	stale.id = 999
	stale.close(t, tr)
	if tr.conns.get(connKey{1, 3}) == nil {
		t.Fatalf("close of another socket ended the connection")
	}

	reused := old
	reused.id = 8
	reused.data(t, tr, dirIngress, 200, getRequest, 0)
	if len(sink.spans) != 1 {
		t.Fatalf("%d spans, want the old connection's incomplete one", len(sink.spans))
	}
	sp := sink.spans[0]
	if sp.Status != codes.Error || spanAttrs(t, sp)["error.type"].AsString() != "incomplete_response" {
		t.Errorf("old request: status %v, attributes %v", sp.Status, sp.Attributes)
	}
	if c := tr.conns.get(connKey{1, 3}); c == nil || c.sock != 8 {
		t.Errorf("new connection not tracked: %+v", c)
	}

	// An accept on an fd still tracked replaces it the same way.
	again := old
	again.id = 9
	again.open(t, tr, eventAccept)
	if len(sink.spans) != 2 || tr.conns.get(connKey{1, 3}).sock != 9 {
		t.Errorf("accept over a tracked fd: %d spans", len(sink.spans))
	}
}

// The kernel reports a socket's last close, with no fd, in whichever
// process closed it last (bpf/socket.c sock_state): no process holds the
// socket any more, so it ends every process's connection on it and no
// other. A forking server's parent may close its copy after the child that
// served closed its own, and the parent's close then ends the child's
// exchange.
func TestHandleCloseBySocket(t *testing.T) {
	for _, closer := range []string{"child", "parent"} {
		t.Run(closer, func(t *testing.T) {
			fp := newFakeProc(t)
			tr, sink := handTracer(t, fp, 16)
			parent := sock{tgid: 1, fd: 4, id: 0x77, local: "127.0.0.1:80", remote: "127.0.0.1:5000"}
			parent.open(t, tr, eventAccept)
			child := parent
			child.tgid, child.fd = 2, 5 // the child holds the socket under another fd
			child.data(t, tr, dirIngress, 100, "GET / HTTP/1.0\r\n\r\n", 0)
			child.data(t, tr, dirEgress, 200, "HTTP/1.0 200 OK\r\n\r\nuntil close", 0)
			if len(sink.spans) != 0 {
				t.Fatalf("a body delimited by the close ended before it: %d spans", len(sink.spans))
			}

			other := child
			other.id = 0x78
			other.close(t, tr)
			if tr.conns.get(connKey{2, 5}) == nil || tr.conns.get(connKey{1, 4}) == nil || len(sink.spans) != 0 {
				t.Fatalf("the close of another socket ended the connection")
			}
			last := child
			if closer == "parent" {
				last = parent
			}
			last.close(t, tr)
			if tr.conns.get(connKey{2, 5}) != nil || len(sink.spans) != 1 {
				t.Fatalf("the last close: connection %v, %d spans", tr.conns.get(connKey{2, 5}), len(sink.spans))
			}
			if a := spanAttrs(t, sink.spans[0]); a["http.response.status_code"].AsInt64() != 200 {
				t.Errorf("span attributes %v", sink.spans[0].Attributes)
			}
			if tr.conns.get(connKey{1, 4}) != nil {
				t.Errorf("the parent's connection outlived the socket")
			}
		})
	}
}

// Eviction and exit: evicted connections are counted, not reported;
// connections of an exiting process are closed and reported.
func TestHandleEvictAndExit(t *testing.T) {
	fp := newFakeProc(t)
	tr, sink := handTracer(t, fp, 1)
	a := sock{tgid: 1, fd: 3, id: 1, local: "127.0.0.1:80", remote: "127.0.0.1:5000"}
	b := sock{tgid: 2, fd: 3, id: 2, local: "127.0.0.1:80", remote: "127.0.0.1:5001"}
	a.open(t, tr, eventAccept)
	a.data(t, tr, dirIngress, 1, getRequest, 0)
	b.open(t, tr, eventAccept) // evicts a
	st := tr.Stats()
	if st.ConnsEvicted != 1 || st.PendingAtExit != 1 || st.Conns != 1 || len(sink.spans) != 0 {
		t.Errorf("after eviction: %+v, %d spans", st, len(sink.spans))
	}

	b.data(t, tr, dirIngress, 2, getRequest, 0)
	tr.handle(encodeEvent(t, &socketEvent{Kind: eventExit, Tgid: 2}, nil))
	if len(sink.spans) != 1 || sink.spans[0].Status != codes.Error {
		t.Fatalf("exit did not report the pending request: %d spans", len(sink.spans))
	}
	if tr.conns.len() != 0 || tr.procs[2] != nil {
		t.Errorf("exit left state: %d conns, proc %v", tr.conns.len(), tr.procs[2])
	}
}

// With a selection, events of processes outside it are dropped, forks of
// selected processes join it, and an exec that still matches keeps it.
func TestHandleSelection(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(10, "/usr/bin/app")
	fp.exe(11, "/usr/bin/app")
	tr, sink := handTracer(t, fp, 16)
	var err error
	if tr.selection, err = newSelector(fp.root, []string{"app"}); err != nil {
		t.Fatal(err)
	}
	tr.selected = map[uint32]bool{10: true}
	tr.explicit = map[uint32]bool{}

	out := sock{tgid: 11, fd: 3, id: 1, local: "127.0.0.1:80", remote: "127.0.0.1:5000"}
	out.open(t, tr, eventAccept)
	if tr.conns.len() != 0 {
		t.Fatalf("event of an unselected process tracked")
	}

	tr.handle(encodeEvent(t, &socketEvent{Kind: eventFork, Tgid: 11}, nil))
	if !tr.selected[11] {
		t.Fatalf("fork not selected")
	}
	out.open(t, tr, eventAccept)
	if tr.conns.len() != 1 {
		t.Fatalf("event of a forked process not tracked")
	}

	// exec of a matching program: identity re-read, still selected.
	tr.procs[11].service = "stale"
	exec := &socketEvent{Kind: eventExec, Tgid: 11}
	setComm(exec, "app")
	tr.handle(encodeEvent(t, exec, nil))
	if !tr.selected[11] || tr.procs[11] == nil || tr.procs[11].service != "app" {
		t.Errorf("exec of a matching program: selected %v, proc %+v", tr.selected[11], tr.procs[11])
	}

	tr.handle(encodeEvent(t, &socketEvent{Kind: eventExit, Tgid: 11}, nil))
	if tr.selected[11] || tr.conns.len() != 0 {
		t.Errorf("exit kept the process selected")
	}
	if len(sink.spans) != 0 {
		t.Errorf("%d spans", len(sink.spans))
	}
}

func TestTracepointOf(t *testing.T) {
	for _, tc := range []struct {
		section, group, event string
		ok                    bool
	}{
		{"tracepoint/syscalls/sys_exit_read", "syscalls", "sys_exit_read", true},
		{"raw_tracepoint/sched_process_exec", "", "sched_process_exec", true},
		{"raw_tracepoint/", "", "", false},
		{"tracepoint/syscalls", "", "", false},
		{"kprobe/tcp_connect", "", "", false},
	} {
		g, e, ok := tracepointOf(tc.section)
		if ok != tc.ok || ok && (g != tc.group || e != tc.event) {
			t.Errorf("tracepointOf(%q) = %q, %q, %v", tc.section, g, e, ok)
		}
	}
}

// abandonAll (sonde exiting) counts pending requests without reporting them.
func TestAbandonAll(t *testing.T) {
	tr, sink := handTracer(t, newFakeProc(t), 16)
	for fd := int32(3); fd < 6; fd++ {
		s := sock{tgid: 1, fd: fd, id: uint64(fd), local: "127.0.0.1:80", remote: "127.0.0.1:5000"}
		s.open(t, tr, eventAccept)
		if fd != 5 {
			s.data(t, tr, dirIngress, 1, getRequest, 0)
		}
	}
	tr.abandonAll()
	st := tr.Stats()
	if st.PendingAtExit != 2 || st.Conns != 0 || len(sink.spans) != 0 {
		t.Errorf("after abandonAll: %+v, %d spans", st, len(sink.spans))
	}
}

func TestTargetDescription(t *testing.T) {
	fp := newFakeProc(t)
	for _, tc := range []struct {
		pids []int
		exe  []string
		want string
	}{
		{nil, nil, "all processes"},
		{[]int{2, 1}, nil, "pids 1,2"},
		{nil, []string{"nginx"}, "rule exe=nginx"},
		{[]int{3}, []string{"py*"}, "pids 3, rule exe=py*"},
	} {
		tr, _ := handTracer(t, fp, 1)
		tr.opts.PIDs, tr.opts.Exe = tc.pids, tc.exe
		var err error
		if tr.selection, err = newSelection(fp.root, tc.pids, tc.exe, nil, nil); err != nil {
			t.Fatal(err)
		}
		if got := tr.targetDescription(); got != tc.want {
			t.Errorf("targetDescription() = %q, want %q", got, tc.want)
		}
	}
}
