package tracer

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sys/unix"

	"github.com/sondehq/sonde/protocols/http1"
	"github.com/sondehq/sonde/protocols/http2"
	"github.com/sondehq/sonde/tracer/discover"
	"github.com/sondehq/sonde/tracer/export"
)

// handle dispatches one ring-buffer record. It runs on the event loop only.
func (t *Tracer) handle(raw []byte) {
	t.stats.records.Add(1)
	e, data, err := viewEvent(raw)
	if err != nil {
		t.stats.badRecords.Add(1)
		return
	}
	if t.selected != nil && e.Kind != eventExec && e.Kind != eventFork && !t.selected[e.Tgid] {
		return // selected provisionally by the kernel, then withdrawn
	}
	switch e.Kind {
	case eventData:
		if !t.mmsgSeen && t.dataHooks == DataHooksSocket && (e.Syscall == sysSendmmsg || e.Syscall == sysRecvmmsg) {
			t.onMmsg()
		}
		t.onData(e, data)
	case eventAccept:
		t.onOpen(e, roleServer)
	case eventConnect:
		t.onOpen(e, roleClient)
	case eventClose:
		// Seen at the socket once its last reference is gone, in whichever
		// process closed it last (bpf/socket.c sock_state): no process
		// holds it any more. A forking server's parent may close its copy
		// after the child that served has closed its own.
		for _, c := range t.conns.onSock(e.Sock) {
			t.closeConn(c)
		}
	case eventExec:
		t.onExec(e, data)
	case eventExit:
		t.onExit(e.Tgid, t.sinceMono(e.Ts))
	case eventGoServer, eventGoClient:
		t.onGoSpan(e, data)
	case eventInject:
		t.onInject(e, data)
	case eventFork:
		if t.selected != nil { // the kernel sends none when tracing all
			t.selected[e.Tgid] = true
		}
	default:
		t.stats.unknownEvents.Add(1)
	}
}

func (t *Tracer) onOpen(e *socketEvent, r role) {
	key := connKey{e.Tgid, e.Fd}
	if old := t.conns.get(key); old != nil {
		// The close of the previous connection on this fd was not seen.
		t.closeConn(old)
	}
	t.track(&conn{key: key, sock: e.Sock, role: r, local: e.local(), remote: e.remote()}, e.command())
}

// track starts following a connection. The process is identified now,
// while it surely runs: a short-lived client may be gone by the time its
// first exchange completes.
func (t *Tracer) track(c *conn, comm string) {
	c.proc = t.process(c.key.tgid, comm)
	if ev := t.conns.add(c); ev != nil {
		t.abandon(ev)
	}
}

func (t *Tracer) onData(e *socketEvent, data []byte) {
	plaintext := e.Flags&flagTLS != 0
	key := connKey{e.Tgid, e.Fd}
	c := t.conns.get(key)
	if c != nil && c.sock != e.Sock {
		t.closeConn(c)
		c = nil
	}
	if c == nil {
		c = &conn{key: key, sock: e.Sock, local: e.local(), remote: e.remote()}
		// Opened while the socket-layer hooks ran (bpf/socket.c
		// note_opened), these are its first bytes. Else it was opened
		// before sonde attached: its role comes from the kernel's
		// listening sockets, else from what the bytes say.
		var opened bool
		c.role, opened = t.openedRole(socketOpenKey{Sock: e.Sock, Sport: e.Sport, Dport: e.Dport}, e.Ts)
		if !opened {
			c.midStream = true
			t.stats.connsJoined.Add(1)
			c.role = t.roleOf(e, data)
		}
		t.track(c, e.command())
		if c.midStream {
			c.http.JoinMidStream()
		}
	} else if e.Flags&flagAfterLoss != 0 {
		t.restartAfterLoss(c)
	}
	if !plaintext && t.ciphertext(c, e.Dir, data) {
		return
	}
	if plaintext && !c.plaintext {
		// The first plaintext of the connection. Ciphertext before it
		// means the session began before its library was probed, so this
		// may be the middle of a message; bytes the parser took for
		// plaintext were ciphertext. Either way it starts over, at the
		// next message start.
		if c.tls || c.fed {
			c.http.Close(t.xbuf[:0])
			c.http.JoinMidStream()
			c.inError = false
			c.midStream = true
		}
		c.tls, c.plaintext = true, true
	}
	if e.Size > e.Captured && e.Syscall != sysSendfile {
		t.stats.truncated.Add(1)
	}
	request := (c.role == roleServer) == (e.Dir == dirIngress)
	if c.upgrade != nil && c.h2 == nil {
		t.upgradeHTTP2(c, data)
	}
	if c.h2 != nil || (!c.fed && t.startHTTP2(c, h2Direction(request), data)) {
		c.fed = true
		t.feedHTTP2(c, h2Direction(request), e, data)
		return
	}
	c.fed = true
	dir := http1.Response
	if request {
		dir = http1.Request
	}
	// One stamp per chunk, taken when the syscall returned: received bytes
	// were there then, and sent bytes had left (a write of a few KiB to a
	// socket returns within microseconds of its start).
	ch := http1.Chunk{Data: data, Size: int(e.Size), Start: e.Ts, End: e.Ts}
	if e.SeqKnown != 0 {
		ch.Pos = 1<<32 | uint64(e.TcpSeq) // never 0; the low 32 bits are the sequence number
	}
	xs, err := c.http.Feed(dir, ch, t.xbuf[:0])
	if err != nil {
		t.parseError(c, err)
	}
	t.emit(c, xs)
}

// ciphertext reports whether bytes seen on the socket are TLS records, to
// be left out of parsing: the handshake, or the records of a library sonde
// does not probe (Go's crypto/tls, whose requests the Go probes see). They
// are not garbage either. A connection is TLS once both of its sides were
// seen sending records, or once an OpenSSL probe reported its plaintext;
// until then, record-like bytes from one side are only held back, and an
// answer in clear from the other side (a plain HTTP server answering a TLS
// client with 400) makes them what they were: not HTTP.
func (t *Tracer) ciphertext(c *conn, dir uint8, data []byte) bool {
	if c.tls {
		t.stats.ciphertext.Add(1)
		return true
	}
	if c.fed {
		return false
	}
	switch {
	case looksLikeTLSRecord(data):
		if c.tlsFrom != 0 && c.tlsFrom != dir {
			c.tls = true
		}
		c.tlsFrom = dir
		t.stats.ciphertext.Add(1)
		return true
	case c.tlsFrom != 0:
		c.fed = true
		t.parseError(c, errTLSAnsweredInClear)
		return true
	}
	return false
}

// errTLSAnsweredInClear: record-like bytes from one side, an answer in
// clear from the other. Nothing on the connection is parsed.
var errTLSAnsweredInClear = errors.New("TLS records answered in clear")

func h2Direction(request bool) http2.Direction {
	if request {
		return http2.Request
	}
	return http2.Response
}

// looksLikeTLSRecord reports whether data starts with a TLS record header:
// a content type from change_cipher_spec (20) to application_data (23),
// protocol version 3.0 to 3.4 (SSL 3.0 to TLS 1.3 on the wire), and a
// length TLS allows. No HTTP/1 or HTTP/2 message starts with these bytes.
func looksLikeTLSRecord(data []byte) bool {
	if len(data) < 5 {
		return false
	}
	n := int(data[3])<<8 | int(data[4])
	return data[0] >= 20 && data[0] <= 23 && data[1] == 3 && data[2] <= 4 && n > 0 && n <= 1<<14+2048
}

// deliver exports a span of the socket view or, in a process under Go
// probes, hands it to the merge with its Go twin. seq is the exchange's
// place on the connection, for same-host linking (link.go).
func (t *Tracer) deliver(c *conn, s *export.Span, covered bool, method, target string, seq uint64) {
	t.noteLink(c, s, seq)
	if covered {
		path, _ := splitTarget(target)
		var stream uint32
		if seq&linkStream != 0 {
			stream = uint32(seq)
		}
		t.onSocketView(c, s, method, path, stream)
		return
	}
	switch {
	case s.Kind == trace.SpanKindServer:
		t.claimProxied(c.key.tgid, s, method, target)
	case s.Kind == trace.SpanKindClient && t.opts.LinkHold >= 0 && t.conns.serves(c.key.tgid):
		t.settleClient(s)
		t.holdProxied(c.key.tgid, s, method, target)
		return
	}
	t.settleSocketView(s)
}

// settleSocketView exports a socket-view span that has no Go twin.
func (t *Tracer) settleSocketView(s *export.Span) {
	if s.Kind == trace.SpanKindServer {
		t.finishServer(s)
		return
	}
	t.settleClient(s)
	if !t.holdClient(s) {
		t.finalize(s)
	}
}

// emit turns finished exchanges into spans.
func (t *Tracer) emit(c *conn, xs []http1.Exchange) {
	if len(xs) == 0 {
		return
	}
	c.inError = false
	first := c.exchanges + 1
	c.exchanges += uint64(len(xs))
	covered := t.goProbes.covers(c.key.tgid)
	for i := range xs {
		seq := first + uint64(i)
		if xs[i].Response.StatusCode == 101 && !xs[i].Incomplete {
			// Held until the next bytes say what the connection switched
			// to: for h2c, the upgraded request's span is stream 1's.
			x := xs[i]
			c.upgrade = &x
			continue
		}
		s := t.httpSpan(c, c.proc, &xs[i])
		t.takeInjected(c, s, seq)
		t.deliver(c, s, covered, xs[i].Request.Method, xs[i].Request.Target, seq)
	}
	t.xbuf = xs[:0]
}

func (t *Tracer) parseError(c *conn, err error) {
	if c.inError {
		return
	}
	c.inError = true
	reason := "other"
	var pe *http1.ParseError
	var pe2 *http2.ParseError
	switch {
	case errors.As(err, &pe):
		reason = pe.Reason.String()
	case errors.As(err, &pe2):
		reason = http2Reason(pe2.Reason)
	}
	if c.exchanges == 0 {
		// Nothing on this connection ever parsed: most likely another
		// protocol, or bytes from the middle of a message.
		reason = "not_http"
	}
	t.stats.mu.Lock()
	t.stats.parseErrors[reason]++
	t.stats.mu.Unlock()
	t.log.Debug("parse error", "pid", c.key.tgid, "exe", c.proc.exe, "fd", c.key.fd, "reason", reason, "error", err)
}

// restartAfterLoss forgets what was parsed on a connection whose events the
// kernel could not all deliver: bytes are missing between the last event and
// this one, and parsing on would pair the wrong messages. The requests that
// were waiting for a response are counted as lost; parsing resumes at the
// next message start.
func (t *Tracer) restartAfterLoss(c *conn) {
	t.stats.resyncs.Add(1)
	t.stats.lostExchanges.Add(uint64(len(c.http.Close(t.xbuf[:0]))))
	c.http.JoinMidStream()
	if c.h2 != nil {
		// Frames are missing: the streams open now cannot end whole, and
		// HPACK cannot be trusted on this connection again.
		t.stats.lostExchanges.Add(uint64(len(c.h2.Close(t.h2buf[:0]))))
		c.h2.JoinMidStream()
	}
	c.inError = true // the loss is counted; what follows until resync is not a parse error
}

// closeConn finishes a connection the process closed: a body delimited by
// the close ends here, and a request left without a response is reported.
func (t *Tracer) closeConn(c *conn) {
	t.conns.remove(c)
	t.emit(c, c.http.Close(t.xbuf[:0]))
	t.forgetInjections(c)
	t.flushUpgrade(c)
	if c.h2 != nil {
		t.emitHTTP2(c, c.h2.Close(t.h2buf[:0]))
	}
}

// abandon drops a connection sonde stops watching (evicted, or sonde is
// exiting): its pending requests are counted, not reported as failures.
func (t *Tracer) abandon(c *conn) {
	t.conns.remove(c)
	t.forgetInjections(c)
	t.flushUpgrade(c)
	t.stats.pendingAtExit.Add(uint64(len(c.http.Close(t.xbuf[:0]))))
	if c.h2 != nil {
		t.stats.pendingAtExit.Add(uint64(len(c.h2.Close(t.h2buf[:0]))))
	}
}

func (t *Tracer) abandonAll() {
	for _, c := range t.conns.byKey {
		t.abandon(c)
	}
}

// openedRole takes the kernel's note of how the connection on a socket and
// ports was opened, when the socket-layer hooks noted it (bpf/socket.c
// note_opened) before its first bytes moved at ts: accepted, it serves;
// connected, it is a client.
func (t *Tracer) openedRole(key socketOpenKey, ts uint64) (role, bool) {
	if t.dataHooks != DataHooksSocket {
		return 0, false
	}
	m := t.coll.Maps["opened"]
	var note socketOpenNote
	if err := m.Lookup(key, &note); err != nil || note.Ts > ts {
		// None, or the note of a later connection on the same socket
		// and ports: the events are read after the fact, the map is as
		// it is now.
		return 0, false
	}
	// Taken: a connection the table dropped and meets again is one
	// joined in the middle.
	_ = m.Delete(key)
	switch note.How {
	case openedPassive:
		return roleServer, true
	case openedActive:
		return roleClient, true
	}
	return 0, false
}

func (t *Tracer) roleOf(e *socketEvent, data []byte) role {
	lc, ok := t.listen[e.Tgid]
	if !ok || time.Since(lc.at) > time.Second {
		lc = listenCache{at: time.Now(), ports: listeningPorts(t.opts.ProcRoot, e.Tgid)}
		t.listen[e.Tgid] = lc
	}
	if lc.ports[e.Sport] {
		return roleServer
	}
	ingress := e.Dir == dirIngress
	switch {
	case http1.LooksLikeRequest(data):
		if ingress {
			return roleServer
		}
	case http1.LooksLikeResponse(data):
		if !ingress {
			return roleServer
		}
	case looksLikeTLSRecord(data) && data[0] == 22 && len(data) > 5 && data[5] == 1:
		// A ClientHello: handshake (22), message client_hello (1).
		if ingress {
			return roleServer
		}
	}
	return roleClient
}

// process returns what is known of tgid, reading /proc the first time.
func (t *Tracer) process(tgid uint32, comm string) *process {
	if p := t.procs[tgid]; p != nil {
		return p
	}
	p := readProcess(t.opts.ProcRoot, tgid, comm, t.host)
	t.procs[tgid] = p
	t.goProbes.add(t.opts.ProcRoot, tgid)
	t.sslProbes.add(t.opts.ProcRoot, tgid)
	return p
}

// onExec confirms or withdraws the kernel's provisional selection of a
// process that just called execve. The payload is the path the kernel
// executed and the start of the new argv, so that a process gone before
// this runs is still decided on what it was.
func (t *Tracer) onExec(e *socketEvent, payload []byte) {
	delete(t.procs, e.Tgid) // exec replaced the program: re-read its identity
	t.goProbes.remove(e.Tgid)
	t.sslProbes.forget(e.Tgid)
	delete(t.rejected, e.Tgid)
	path, args, _ := bytes.Cut(payload, []byte{0})
	p, ok, reason := t.selection.decideExec(e.Tgid, string(path), discover.ParseCmdline(args))
	if ok {
		if !t.selected[e.Tgid] {
			t.noteAttached(e.Tgid, p.Exe, reason, t.sinceMono(e.Ts))
		}
		t.selected[e.Tgid] = true
		t.process(e.Tgid, e.command())
		return
	}
	if t.selected[e.Tgid] {
		// A selected process (or the child of one) became another program.
		for _, c := range t.conns.ofProcess(e.Tgid) {
			t.abandon(c)
		}
		t.log.Info("process no longer traced", "pid", e.Tgid, "exe", p.Exe, "reason", reason)
	}
	t.reject(e.Tgid)
	delete(t.selected, e.Tgid)
	if err := t.targets.Remove(e.Tgid); err != nil {
		t.log.Warn("cannot withdraw provisional selection", "pid", e.Tgid, "exe", p.Exe, "error", err)
	}
}

// reject remembers a decision not to trace, so rescans skip the process
// unless what it is judged on can change.
func (t *Tracer) reject(pid uint32) {
	if !t.selection.mutable() {
		t.rejected[pid] = true
	}
}

// noteAttached records that a process became a target, and how long after
// its exec (or the rescan that found it) userspace confirmed it.
func (t *Tracer) noteAttached(pid uint32, exe, reason string, delay time.Duration) {
	t.stats.attached.Add(1)
	t.stats.attachDelaySum.Add(int64(delay))
	for {
		old := t.stats.attachDelayMax.Load()
		if int64(delay) <= old || t.stats.attachDelayMax.CompareAndSwap(old, int64(delay)) {
			break
		}
	}
	t.log.Info("tracing process", "pid", pid, "exe", exe, "reason", reason, "delay", delay.Round(time.Microsecond))
}

// sinceMono is the time elapsed since a kernel CLOCK_MONOTONIC stamp.
func (t *Tracer) sinceMono(ts uint64) time.Duration {
	var now unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &now); err != nil || uint64(now.Nano()) < ts {
		return 0
	}
	return time.Duration(uint64(now.Nano()) - ts)
}

// onExit lets go of a process that exited; delay is how long after the exit
// that happened, for the log.
func (t *Tracer) onExit(tgid uint32, delay time.Duration) {
	for _, c := range t.conns.ofProcess(tgid) {
		t.closeConn(c)
	}
	var exe string
	if p := t.procs[tgid]; p != nil {
		exe = p.exe
	}
	delete(t.procs, tgid)
	delete(t.listen, tgid)
	delete(t.rejected, tgid)
	t.goProbes.remove(tgid)
	t.sslProbes.forget(tgid)
	if t.selected != nil {
		delete(t.selected, tgid)
		delete(t.explicit, tgid)
		t.log.Info("process exited", "pid", tgid, "exe", exe, "delay", delay.Round(time.Microsecond))
	}
}

func (t *Tracer) addTarget(pid uint32) error {
	if err := t.targets.Add(pid); err != nil {
		return fmt.Errorf("add pid %d to targets: %w", pid, err)
	}
	t.selected[pid] = true
	// Read its identity now, while it surely runs: logs and spans need it
	// even if it is gone when its first event is handled.
	t.process(pid, "")
	return nil
}

// selectInitial fills the target map before any probe is attached.
func (t *Tracer) selectInitial() error {
	for _, pid := range t.opts.PIDs {
		t.explicit[uint32(pid)] = true
	}
	pids, err := discover.Scan(t.opts.ProcRoot)
	if err != nil {
		return err
	}
	if !t.selection.enabled() {
		// Every process is traced: the Go programs among those running get
		// their probes in the background.
		for _, pid := range pids {
			if uint32(pid) != t.opts.selfPID() {
				t.goProbes.add(t.opts.ProcRoot, uint32(pid))
				t.sslProbes.add(t.opts.ProcRoot, uint32(pid))
			}
		}
		t.sslProbes.addHost("/")
		return nil
	}
	children := make(map[int][]*discover.Process)
	var chosen []*discover.Process
	for _, pid := range pids {
		p := t.selection.inspect(uint32(pid), discover.FieldStat)
		children[p.PPID] = append(children[p.PPID], p)
		ok, reason := t.selection.decide(p)
		if !ok {
			t.reject(uint32(pid))
			continue
		}
		if err := t.addTarget(uint32(pid)); err != nil {
			return err
		}
		chosen = append(chosen, p)
		t.log.Info("tracing process", "pid", pid, "exe", p.Exe, "reason", reason)
	}
	// The kernel selects the children a selected process forks from now
	// on; those it forked before (the workers of an nginx master given by
	// --pid) are selected here, unless excluded.
	for len(chosen) > 0 {
		parent := chosen[0]
		chosen = chosen[1:]
		for _, c := range children[parent.PID] {
			if t.selected[uint32(c.PID)] {
				continue
			}
			if _, excluded := t.selection.rules.Excluded(c); excluded || uint32(c.PID) == t.opts.selfPID() {
				continue
			}
			if err := t.addTarget(uint32(c.PID)); err != nil {
				return err
			}
			delete(t.rejected, uint32(c.PID))
			chosen = append(chosen, c)
			t.log.Info("tracing process", "pid", c.PID, "exe", c.Exe, "reason", fmt.Sprintf("child of traced pid %d", parent.PID))
		}
	}
	for pid := range t.explicit {
		if !t.selected[pid] {
			t.log.Warn("process given by --pid is excluded by a rule", "pid", pid)
		}
	}
	// The Go programs and OpenSSL libraries of the processes selected at
	// start have their probes before tracing starts, so that their first
	// exchanges are seen whole.
	t.sslProbes.addHost("/")
	t.goProbes.wait()
	t.sslProbes.wait()
	return nil
}

// rescan selects running processes that became targets without an exec the
// kernel reported: one that opened the listening port a rule names, one
// whose exec event was lost, or the child of a process selected late.
// Processes rejected on facts that cannot change are not read again.
func (t *Tracer) rescan() {
	if !t.selection.watchExec() {
		return
	}
	began := time.Now()
	pids, err := discover.Scan(t.opts.ProcRoot)
	if err != nil {
		t.log.Warn("cannot list processes", "error", err)
		return
	}
	live := make(map[uint32]bool, len(pids))
	for _, pid := range pids {
		id := uint32(pid)
		live[id] = true
		if t.selected[id] || t.rejected[id] {
			continue
		}
		p := t.selection.inspect(id, 0)
		ok, reason := t.selection.decide(p)
		if !ok {
			t.reject(id)
			continue
		}
		if err := t.addTarget(id); err != nil {
			t.log.Warn("cannot select process", "pid", id, "exe", p.Exe, "error", err)
			continue
		}
		t.noteAttached(id, p.Exe, reason, time.Since(began))
	}
	for pid := range t.rejected {
		if !live[pid] {
			delete(t.rejected, pid)
		}
	}
}

func (t *Tracer) targetDescription() string {
	return t.selection.describe()
}
