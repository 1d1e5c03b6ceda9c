// Package tracer loads sonde's BPF programs, attaches them to syscall
// tracepoints, reads the captured socket events and turns them into spans.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"

	"github.com/sondehq/sonde/protocols/http1"
	"github.com/sondehq/sonde/protocols/http2"
	"github.com/sondehq/sonde/tracer/features"
)

// Tracer is a loaded and attached set of probes and the state built from
// their events. Run it with Run; release it with Close.
type Tracer struct {
	opts Options
	log  *slog.Logger
	spec *ebpf.CollectionSpec // as loaded: attach reads its section names
	coll *ebpf.Collection
	// goColl holds the Go uprobe programs; its maps shared with coll are
	// coll's own.
	goColl   *ebpf.Collection
	goProbes *goProbes
	// inject is nil unless Options.Inject.
	inject *injector
	// sslColl holds the OpenSSL uprobe programs, sharing coll's maps.
	sslColl   *ebpf.Collection
	sslProbes *sslProbes
	gostate   goState
	linking   linkState
	links     []link.Link
	reader    *ringbuf.Reader

	clock clock
	ids   idSource
	host  string

	conns     *connTable
	procs     map[uint32]*process
	selection *selection
	targets   targetMap // the kernel's targets map
	// rejected are processes decided against on facts that cannot change
	// until they exec; rescans skip them.
	rejected map[uint32]bool
	lastScan time.Time
	// selected is the userspace view of the kernel's targets map, nil when
	// every process is traced. Events of other processes can still arrive
	// (provisional exec selection) and are dropped.
	selected map[uint32]bool
	explicit map[uint32]bool // --pid: kept whatever they exec
	listen   map[uint32]listenCache

	xbuf  []http1.Exchange
	h2buf []http2.Exchange

	stats    counters
	lastLost uint64
	// lastTargetsFull is the kernel's targets-full count at the last report.
	lastTargetsFull uint64
	lastTLSUnpaired uint64
	lastUnreadCalls uint64
	// dataHooks is the data path attached: DataHooksSocket or
	// DataHooksSyscalls.
	dataHooks DataHooks
	// mmsgSeen is set at the first sendmmsg or recvmmsg the socket-layer
	// hooks report, when their exits are attached if Options allow.
	mmsgSeen bool
	// final holds the kernel counters read just before Close frees them.
	final   *[counterMax]uint64
	closeMu sync.Mutex
	closed  bool
}

type listenCache struct {
	at    time.Time
	ports map[uint16]bool
}

// counters are written by the event loop and read by Stats from anywhere.
type counters struct {
	records, badRecords, truncated, spans atomic.Uint64
	pendingAtExit, unknownEvents          atomic.Uint64
	resyncs, lostExchanges                atomic.Uint64
	connsJoined                           atomic.Uint64
	ciphertext, http2Conns                atomic.Uint64
	http2HeadersUnknown                   atomic.Uint64
	attached, attachFailures              atomic.Uint64
	goSpans, goMerged, goSocketOnly       atomic.Uint64
	goGRPCSpans                           atomic.Uint64
	linkCandidates, linked, linkUnmatched atomic.Uint64
	proxyLinked                           atomic.Uint64
	injectAdopted, injectUnmatched        atomic.Uint64
	injectDetached                        atomic.Uint64
	attachDelaySum, attachDelayMax        atomic.Int64 // ns
	processes                             atomic.Int64

	mu          sync.Mutex
	parseErrors map[string]uint64
}

// New loads the BPF programs and attaches them. Nothing is traced until Run.
func New(opts *Options) (*Tracer, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	t := &Tracer{
		opts:     o,
		log:      o.Logger,
		ids:      newIDSource(),
		conns:    newConnTable(o.MaxConns, nil),
		procs:    make(map[uint32]*process),
		listen:   make(map[uint32]listenCache),
		rejected: make(map[uint32]bool),
	}
	t.selection, err = newSelection(o.ProcRoot, o.PIDs, o.Exe, o.Select, o.Exclude)
	if err != nil {
		return nil, err
	}
	if t.selection.enabled() {
		t.selected = make(map[uint32]bool)
		t.explicit = make(map[uint32]bool)
	}
	t.stats.parseErrors = make(map[string]uint64)
	t.gostate.init()
	t.linking.init()
	t.host, _ = os.Hostname()
	if err := t.clock.sync(); err != nil {
		return nil, fmt.Errorf("read clocks: %w", err)
	}
	// Reject a pid that does not exist before loading anything.
	for _, pid := range o.PIDs {
		if _, err := os.Stat(filepath.Join(o.ProcRoot, strconv.Itoa(pid))); err != nil {
			return nil, fmt.Errorf("pid %d: no such process", pid)
		}
	}

	if mounted, path, err := features.EnsureTracefs(); err != nil {
		return nil, fmt.Errorf("tracefs: %w", err)
	} else if mounted {
		t.log.Info("mounted tracefs", "path", path)
	}
	if (!o.NoGoProbes || !o.NoSSLProbes) && !features.CanUprobe() {
		t.log.Warn("no CAP_SYS_ADMIN: the kernel refuses uprobes, so Go programs are traced from their sockets alone and HTTPS is not read")
		t.opts.NoGoProbes, t.opts.NoSSLProbes = true, true
	}
	began := time.Now()
	if err := t.load(); err != nil {
		t.Close()
		return nil, err
	}
	loaded := time.Now()
	if err := t.selectInitial(); err != nil {
		t.Close()
		return nil, err
	}
	if err := t.attach(); err != nil {
		t.Close()
		return nil, err
	}
	t.log.Debug("probes ready", "load", loaded.Sub(began).Round(time.Millisecond), "attach", time.Since(loaded).Round(time.Millisecond))
	return t, nil
}

func (t *Tracer) load() error {
	spec, err := loadSocket()
	if err != nil {
		return fmt.Errorf("read bpf object: %w", err)
	}
	vars := map[string]any{
		"cfg_capture_bytes": uint32(t.opts.CaptureBytes),
		"cfg_self_tgid":     uint32(os.Getpid()),
		"cfg_trace_all":     boolByte(!t.selection.enabled()),
		"cfg_watch_exec":    boolByte(t.selection.watchExec()),
		"cfg_wakeup_bytes":  uint32(min(t.opts.RingBufferBytes/8, 256<<10)),
		"cfg_inject":        boolByte(t.opts.Inject),
	}
	for name, v := range vars {
		vs, ok := spec.Variables[name]
		if !ok {
			return fmt.Errorf("bpf object has no variable %s", name)
		}
		if err := vs.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	spec.Maps["events"].MaxEntries = uint32(t.opts.RingBufferBytes)
	cpus, err := ebpf.PossibleCPU()
	if err != nil {
		return fmt.Errorf("count cpus: %w", err)
	}
	spec.Maps["scratch"].MaxEntries = uint32(cpus)

	t.spec = spec
	t.coll, err = ebpf.NewCollection(spec)
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return fmt.Errorf("load bpf programs: %+v", ve)
		}
		return fmt.Errorf("load bpf programs: %w", err)
	}
	bits, err := mapTargets(t.coll.Maps["targets"])
	if err != nil {
		return err
	}
	t.targets = bits
	if !t.opts.NoGoProbes {
		if err := t.loadGo(vars); err != nil {
			return err
		}
	}
	if !t.opts.NoSSLProbes {
		if err := t.loadSSL(vars); err != nil {
			return err
		}
	}
	if t.opts.Inject {
		if err := t.loadInject(vars); err != nil {
			return err
		}
	}
	t.reader, err = ringbuf.NewReader(t.coll.Maps["events"])
	if err != nil {
		return fmt.Errorf("open ring buffer: %w", err)
	}
	return nil
}

// loadGo loads the Go uprobe programs, sharing the socket object's ring
// buffer, targets and counters, with the same switches.
func (t *Tracer) loadGo(vars map[string]any) error {
	spec, err := loadGohttp()
	if err != nil {
		return fmt.Errorf("read go bpf object: %w", err)
	}
	t.goColl, err = t.loadSharing("go", spec, vars, sharedMaps)
	if err != nil {
		return err
	}
	t.goProbes = newGoProbes(t.goColl, t.log, &t.stats.attachFailures)
	return nil
}

// loadSSL loads the OpenSSL uprobe programs. Their probes are placed as
// selected processes show which libraries they use.
func (t *Tracer) loadSSL(vars map[string]any) error {
	spec, err := loadOpenssl()
	if err != nil {
		return fmt.Errorf("read openssl bpf object: %w", err)
	}
	t.sslColl, err = t.loadSharing("openssl", spec, vars, append([]string{"ssl_calls", "ssl_socks"}, sharedMaps...))
	if err != nil {
		return err
	}
	enable := func() error {
		if err := t.coll.Variables["tls_watch"].Set(uint32(1)); err != nil {
			return fmt.Errorf("switch on the ssl call lookup: %w", err)
		}
		return nil
	}
	t.sslProbes = newSSLProbes(t.sslColl, t.log, &t.stats.attachFailures, enable)
	return nil
}

// sharedMaps are the socket object's maps that every other object uses as
// its own: one ring buffer, one target set, one set of counters.
var sharedMaps = []string{"events", "targets", "counters", "scratch", "lossy", "lossy_count", "inject_served"}

// loadSharing loads another object with the socket object's switches and
// the named maps of its own replaced by the socket object's.
func (t *Tracer) loadSharing(what string, spec *ebpf.CollectionSpec, vars map[string]any, maps []string) (*ebpf.Collection, error) {
	return t.loadSharingFrom(what, spec, vars, maps, nil)
}

// loadSharingFrom is loadSharing with more replacements, from objects other
// than the socket object.
func (t *Tracer) loadSharingFrom(what string, spec *ebpf.CollectionSpec, vars map[string]any, maps []string, more map[string]*ebpf.Map) (*ebpf.Collection, error) {
	for _, name := range []string{"cfg_self_tgid", "cfg_trace_all", "cfg_wakeup_bytes", "cfg_capture_bytes", "cfg_inject"} {
		if err := spec.Variables[name].Set(vars[name]); err != nil {
			return nil, fmt.Errorf("set %s of %s object: %w", name, what, err)
		}
	}
	shared := map[string]*ebpf.Map{}
	for _, name := range maps {
		m := t.coll.Maps[name]
		// The loader sized some of them; the replacement must agree.
		spec.Maps[name].MaxEntries = m.MaxEntries()
		shared[name] = m
	}
	for name, m := range more {
		spec.Maps[name].MaxEntries = m.MaxEntries()
		shared[name] = m
	}
	coll, err := ebpf.NewCollectionWithOptions(spec, ebpf.CollectionOptions{MapReplacements: shared})
	if err != nil {
		var ve *ebpf.VerifierError
		if errors.As(err, &ve) {
			return nil, fmt.Errorf("load %s bpf programs: %+v", what, ve)
		}
		return nil, fmt.Errorf("load %s bpf programs: %w", what, err)
	}
	return coll, nil
}

func boolByte(b bool) uint8 {
	if b {
		return 1
	}
	return 0
}

// essential tracepoints: without them sonde cannot produce a single span.
// Every other one only narrows what is seen, so its failure degrades.
var essential = map[string]bool{"inet_sock_set_state": true}

// The data path (bpf/socket.c) reads bytes at the socket layer's two
// tracepoints, which must attach both or neither, or at the syscall exits
// of the calls that move bytes, of which read and write are essential, and
// of accept and connect. With the socket layer's, no syscall tracepoint is
// attached (but sendmmsg's and recvmmsg's, once needed: onMmsg): while one
// is, every syscall of every process on the host takes the kernel's slow
// path.
var (
	socketLayerPrograms   = []string{"sock_send", "sock_recv"}
	essentialSyscallHooks = map[string]bool{"sys_exit_read": true, "sys_exit_write": true, "sys_exit_accept4": true}
)

// attachSocketLayer attaches the socket-layer data programs unless the
// options ask for the syscall ones, and reports whether it did. In
// DataHooksAuto their absence (a kernel before 6.3) is no error.
func (t *Tracer) attachSocketLayer() (bool, error) {
	if t.opts.DataHooks == DataHooksSyscalls {
		return false, nil
	}
	var links []link.Link
	for _, name := range socketLayerPrograms {
		_, event, ok := tracepointOf(t.spec.Programs[name].SectionName)
		if !ok {
			return false, fmt.Errorf("program %s: unexpected section %q", name, t.spec.Programs[name].SectionName)
		}
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: event, Program: t.coll.Programs[name]})
		if err != nil {
			closeLinks(links)
			if t.opts.DataHooks == DataHooksSocket {
				return false, fmt.Errorf("attach raw tracepoint %s: %w", event, err)
			}
			t.log.Info("socket-layer tracepoints not attached; reading socket bytes at syscall exit",
				"tracepoint", event, "error", err)
			return false, nil
		}
		links = append(links, l)
	}
	t.links = append(t.links, links...)
	return true, nil
}

func (t *Tracer) attach() error {
	socketLayer, err := t.attachSocketLayer()
	if err != nil {
		return err
	}
	t.dataHooks = DataHooksSyscalls
	if socketLayer {
		t.dataHooks = DataHooksSocket
		if err := t.coll.Variables["opened_watch"].Set(uint32(1)); err != nil {
			return fmt.Errorf("switch on the opened map: %w", err)
		}
	}
	for name, ps := range t.spec.Programs {
		if slices.Contains(socketLayerPrograms, name) {
			continue
		}
		group, event, ok := tracepointOf(ps.SectionName)
		if !ok {
			return fmt.Errorf("program %s: unexpected section %q", name, ps.SectionName)
		}
		if socketLayer && group == "syscalls" {
			continue
		}
		var l link.Link
		var err error
		if group == "" {
			l, err = link.AttachRawTracepoint(link.RawTracepointOptions{Name: event, Program: t.coll.Programs[name]})
		} else {
			l, err = link.Tracepoint(group, event, t.coll.Programs[name], nil)
		}
		if err != nil {
			if essential[event] || (!socketLayer && essentialSyscallHooks[event]) {
				return fmt.Errorf("attach %s/%s: %w", group, event, err)
			}
			t.stats.attachFailures.Add(1)
			t.log.Warn("tracepoint not attached; traffic through it is not seen",
				"tracepoint", group+"/"+event, "error", err)
			continue
		}
		t.links = append(t.links, l)
	}
	if err := t.attachInject(); err != nil {
		// Tracing goes on without it: nothing sent is changed.
		t.stats.attachFailures.Add(1)
		t.log.Warn("traceparent injection is off", "error", err)
		t.inject.close()
		t.inject = nil
	}
	return t.setRunning(true)
}

// mmsgExits are the exit programs that read sendmmsg and recvmmsg
// messages, which the socket-layer hooks can only count.
var mmsgExits = []string{"exit_sendmmsg", "exit_recvmmsg"}

// onMmsg is called at the first sendmmsg or recvmmsg of a selected process
// on TCP that the socket-layer hooks report. With DataHooksAuto it attaches
// the two calls' exit programs and hands the calls over to them (mmsg_watch
// in bpf/socket.c): a message's place in its vector is known only at the
// exit. Any syscall tracepoint puts every syscall on the host on the
// kernel's tracing slow path, so they are attached only once a traced
// process is seen to need them. The call that triggered this, and those
// before the switch, were counted as unread.
func (t *Tracer) onMmsg() {
	t.mmsgSeen = true
	if t.opts.DataHooks != DataHooksAuto {
		return // --data-hooks=socket: no syscall tracepoint, ever
	}
	links, err := t.attachMmsgExits()
	if err != nil {
		closeLinks(links)
		t.stats.attachFailures.Add(1)
		t.log.Warn("sendmmsg/recvmmsg exits not attached; their TCP bytes stay unread", "error", err)
		return
	}
	t.links = append(t.links, links...)
	t.log.Info("a traced process moves TCP bytes with sendmmsg/recvmmsg: their exit tracepoints are attached to read them, and every syscall on the host now takes the kernel's tracing path (--data-hooks=socket keeps them off)")
}

// attachMmsgExits attaches the mmsgExits and switches them on, returning
// what it attached so far, which the caller closes on error.
func (t *Tracer) attachMmsgExits() ([]link.Link, error) {
	var links []link.Link
	for _, name := range mmsgExits {
		_, event, _ := tracepointOf(t.spec.Programs[name].SectionName)
		l, err := link.Tracepoint("syscalls", event, t.coll.Programs[name], nil)
		if err != nil {
			return links, fmt.Errorf("attach syscalls/%s: %w", event, err)
		}
		links = append(links, l)
	}
	if err := t.coll.Variables["mmsg_watch"].Set(uint32(1)); err != nil {
		return links, fmt.Errorf("switch on the exits: %w", err)
	}
	return links, nil
}

// setRunning switches every program on or off at once (see running in
// bpf/socket.c).
func (t *Tracer) setRunning(on bool) error {
	v, ok := t.coll.Variables["running"]
	if !ok {
		return fmt.Errorf("bpf object has no variable running")
	}
	var val uint32
	if on {
		val = 1
	}
	if err := v.Set(val); err != nil {
		return fmt.Errorf("switch probes on or off: %w", err)
	}
	for what, coll := range map[string]*ebpf.Collection{"go": t.goColl, "openssl": t.sslColl, "inject": t.inject.collection()} {
		if coll == nil {
			continue
		}
		if err := coll.Variables["running"].Set(val); err != nil {
			return fmt.Errorf("switch %s probes on or off: %w", what, err)
		}
	}
	return nil
}

// tracepointOf splits "tracepoint/GROUP/EVENT"; a raw tracepoint
// ("raw_tracepoint/EVENT") has no group.
func tracepointOf(section string) (group, event string, ok bool) {
	if rest, ok := strings.CutPrefix(section, "raw_tracepoint/"); ok {
		return "", rest, rest != ""
	}
	rest, ok := strings.CutPrefix(section, "tracepoint/")
	if !ok {
		return "", "", false
	}
	return strings.Cut(rest, "/")
}

// pollInterval bounds how long an event waits in the ring buffer when
// traffic is too light to trigger a wakeup.
const pollInterval = 50 * time.Millisecond

// Run reads events until ctx is done, then detaches the probes, drains what
// the kernel already wrote and returns.
func (t *Tracer) Run(ctx context.Context) error {
	var rec ringbuf.Record
	lastTick := time.Now()
	t.log.Info("tracing", "probes", len(t.links), "targets", t.targetDescription(), "data_hooks", t.dataHooks.String())
	t.countProcesses()
	t.reader.SetDeadline(time.Now().Add(pollInterval))
	for ctx.Err() == nil {
		err := t.reader.ReadInto(&rec)
		switch {
		case err == nil:
			t.handle(rec.RawSample)
			// Under sustained load the ring never drains and the deadline
			// never fires: look at the clock now and then all the same.
			if t.stats.records.Load()%4096 != 0 {
				continue
			}
		case errors.Is(err, os.ErrDeadlineExceeded):
			// The kernel wakes us only when much is pending (see
			// cfg_wakeup_bytes); between wakeups, poll.
			t.reader.SetDeadline(time.Now().Add(pollInterval))
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		default:
			return fmt.Errorf("read ring buffer: %w", err)
		}
		if time.Since(lastTick) >= time.Second {
			t.tick()
			lastTick = time.Now()
		}
	}
	t.detach()
	t.drain(&rec)
	t.abandonAll()
	t.expireHeld(time.Time{}, true)
	return nil
}

// drain handles what the kernel wrote before the probes were detached.
func (t *Tracer) drain(rec *ringbuf.Record) {
	t.reader.SetDeadline(time.Now())
	for {
		if err := t.reader.ReadInto(rec); err != nil {
			return
		}
		t.handle(rec.RawSample)
	}
}

func (t *Tracer) detach() {
	if t.coll != nil && len(t.links) > 0 {
		_ = t.setRunning(false) // best effort: detaching follows anyway
	}
	for _, l := range t.links {
		l.Close()
	}
	t.links = nil
	t.goProbes.close()
	t.sslProbes.close()
}

// Close detaches every probe and frees the kernel objects. It is safe to
// call more than once and after Run.
func (t *Tracer) Close() error {
	t.closeMu.Lock()
	defer t.closeMu.Unlock()
	if t.closed {
		return nil
	}
	t.closed = true
	t.detach()
	if t.reader != nil {
		t.reader.Close()
	}
	if t.coll != nil {
		if k, err := t.readCounters(); err == nil {
			t.final = &k
		}
		if bits, ok := t.targets.(*targetBits); ok {
			bits.close()
		}
		t.coll.Close()
		t.coll = nil
	}
	if t.goColl != nil {
		t.goColl.Close()
		t.goColl = nil
	}
	if t.sslColl != nil {
		t.sslColl.Close()
		t.sslColl = nil
	}
	t.inject.close()
	return nil
}

// rescanInterval bounds how late a process that starts listening on a
// selected port (or whose exec event was lost) becomes a target.
const rescanInterval = 2 * time.Second

// tick does the periodic work of the event loop.
func (t *Tracer) tick() {
	_ = t.clock.sync()
	t.reportKernelCounters()
	if time.Since(t.lastScan) >= rescanInterval {
		t.rescan()
		t.recheckLibraries()
		t.lastScan = time.Now()
	}
	t.countProcesses()
	t.expireHeld(time.Now(), false)
	t.conns.pruneClosed(time.Now())
}

// recheckLibraries looks again, now and then, at the libraries traced
// processes map: one may load a libssl of its own (a container's, or a
// vendored one) long after it started.
func (t *Tracer) recheckLibraries() {
	for pid := range t.procs {
		if t.selected == nil || t.selected[pid] {
			t.sslProbes.add(t.opts.ProcRoot, pid)
		}
	}
}

// countProcesses publishes how many processes are traced, for Stats.
func (t *Tracer) countProcesses() {
	n := len(t.procs)
	if t.selected != nil {
		n = len(t.selected)
	}
	t.stats.processes.Store(int64(n))
}
