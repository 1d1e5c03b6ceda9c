package tracer

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/sondehq/sonde/offsets"
)

// goProbes places sonde's Go uprobes on the executables of selected Go
// processes: once per file, whatever the number of processes running it,
// and removes them when the last of those processes is gone. A binary it
// cannot resolve is left to socket capture, and says why once.
//
// The work runs on a goroutine of its own, off the event loop: reading a
// large binary under load takes up to a second, and each uprobe removal
// waits for RCU grace periods (about 100 ms). Until a process's probes are
// in place, its exchanges come from socket capture alone.
type goProbes struct {
	coll     *ebpf.Collection
	log      *slog.Logger
	failures *atomic.Uint64 // the tracer's attach failure count
	work     chan goWork
	done     chan struct{}

	mu     sync.Mutex // guards byPID, which the event loop reads
	byPID  map[uint32]*goBinary
	queued map[uint32]bool // adds not yet done; only the event loop uses it

	// Owned by the worker.
	byFile  map[fileID]*goBinary
	skipped map[fileID]string // why a file gets no Go probes
	free    []uint32          // released indexes of go_binaries
	next    uint32
}

type goWork struct {
	add      bool
	procRoot string
	pid      uint32
	barrier  chan struct{} // closed when the work before it is done
}

// goWorkQueue bounds what waits for the worker: beyond it a process is
// left to socket capture, and counted as an attach failure.
const goWorkQueue = 4096

// fileID names an executable file whatever path it is reached by.
type fileID struct{ dev, ino uint64 }

type goBinary struct {
	id      fileID
	exe     string
	version string
	index   uint32 // in go_binaries, and the probes' attach cookie
	links   []link.Link
	pids    map[uint32]bool
	client  bool // client probes are attached
	h2      bool // HTTP/2 server end probe is attached
	grpc    bool // some grpc-go probes are attached
}

// goProbe is one uprobe program and where it goes.
type goProbe struct {
	prog string
	fn   string // the function whose probe site it takes
	// alt is the function's name in other versions of its package, when
	// it was renamed: the first of fn and alt the binary has is probed.
	alt string
	// callTo, when set, places the probe on fn's calls to this function
	// instead of at fn's entry.
	callTo string
	// required: without it a binary serving HTTP with net/http gets no Go
	// probes at all.
	required bool
	group    string
}

const (
	grpcServer = "google.golang.org/grpc.(*Server).handleStream"
	grpcClient = "google.golang.org/grpc.newClientStream"
)

var goProbeSet = []goProbe{
	{prog: "go_http_server_start", fn: "net/http.serverHandler.ServeHTTP", required: true, group: "server"},
	// The HTTP/1 end remembers each connection's fd by its conn's address;
	// this forgets it when a new connection is served at that address.
	// Placed before the end, so that no end remembers an fd unforgotten.
	{prog: "go_http_conn_serve", fn: "net/http.(*conn).serve", required: true, group: "server"},
	{prog: "go_server_end_h1", fn: "net/http.(*response).finishRequest", required: true, group: "server"},
	{prog: "go_server_end_h2", fn: "net/http.(*http2responseWriter).handlerDone", group: "h2"},
	{prog: "go_client_start", fn: "net/http.(*Transport).roundTrip", group: "client"},
	{prog: "go_client_conn", fn: "net/http.(*persistConn).roundTrip", group: "client"},
	// On ReadResponse's call of readTransfer, not at readTransfer's entry:
	// a server's readRequest calls it too, for every request it serves.
	{prog: "go_client_end_h1", fn: "net/http.ReadResponse", callTo: "net/http.readTransfer", group: "client"},
	{prog: "go_client_stream", fn: "net/http.(*http2clientStream).writeRequest", group: "h2client"},
	{prog: "go_client_end_h2", fn: "net/http.(*http2clientConnReadLoop).handleResponse", group: "h2client"},
	{prog: "go_goroutine_created", fn: "runtime.newproc.func1", callTo: "runtime.runqput", group: "goroutines"},
	// grpc-go: the server's start is the same program as net/http's.
	{prog: "go_grpc_server_start", fn: grpcServer, group: "grpcserver"},
	// As go_http_conn_serve, for the transports of grpc-go's server end.
	{prog: "go_grpc_server_conn", fn: "google.golang.org/grpc/internal/transport.(*http2Server).HandleStreams", group: "grpcserver"},
	{prog: "go_grpc_server_end", fn: "google.golang.org/grpc/internal/transport.(*http2Server).writeStatus",
		alt: "google.golang.org/grpc/internal/transport.(*http2Server).WriteStatus", group: "grpcserver"},
	{prog: "go_grpc_client_start", fn: grpcClient, group: "grpcclient"},
	{prog: "go_grpc_client_attempt", fn: "google.golang.org/grpc.(*clientStream).newAttemptLocked", group: "grpcclient"},
	{prog: "go_grpc_client_end", fn: "google.golang.org/grpc.(*clientStream).finish", group: "grpcclient"},
}

func newGoProbes(coll *ebpf.Collection, log *slog.Logger, failures *atomic.Uint64) *goProbes {
	g := &goProbes{
		coll:     coll,
		log:      log,
		failures: failures,
		work:     make(chan goWork, goWorkQueue),
		done:     make(chan struct{}),
		byFile:   make(map[fileID]*goBinary),
		byPID:    make(map[uint32]*goBinary),
		queued:   make(map[uint32]bool),
		skipped:  make(map[fileID]string),
	}
	go g.run()
	return g
}

func (g *goProbes) run() {
	defer close(g.done)
	for w := range g.work {
		if w.barrier != nil {
			close(w.barrier)
			continue
		}
		if w.add {
			g.addNow(w.procRoot, w.pid)
		} else {
			g.removeNow(w.pid)
		}
	}
}

// covers reports whether pid runs under sonde's Go probes.
func (g *goProbes) covers(pid uint32) bool {
	if g == nil {
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.byPID[pid] != nil
}

// add asks for the executable of pid to be probed, if it is a Go program
// using net/http.
func (g *goProbes) add(procRoot string, pid uint32) {
	if g == nil || g.work == nil || g.queued[pid] {
		return
	}
	select {
	case g.work <- goWork{add: true, procRoot: procRoot, pid: pid}:
		g.queued[pid] = true
	default:
		g.failures.Add(1)
		g.log.Warn("Go probe queue full; process left to socket capture", "pid", pid)
	}
}

// wait returns once the work asked for so far is done.
func (g *goProbes) wait() {
	if g == nil || g.work == nil {
		return
	}
	b := make(chan struct{})
	g.work <- goWork{barrier: b}
	<-b
}

// remove asks for pid to be forgotten.
func (g *goProbes) remove(pid uint32) {
	if g == nil || g.work == nil || !g.queued[pid] {
		return
	}
	delete(g.queued, pid)
	g.work <- goWork{pid: pid} // blocks only while the queue is full
}

// close removes every probe and stops the worker.
func (g *goProbes) close() {
	if g == nil || g.work == nil {
		return
	}
	close(g.work)
	<-g.done
	g.work = nil
	var links []link.Link
	for _, b := range g.byFile {
		links = append(links, b.links...)
	}
	closeLinks(links)
	g.byFile = map[fileID]*goBinary{}
	g.mu.Lock()
	g.byPID = map[uint32]*goBinary{}
	g.mu.Unlock()
}

// closeLinks closes links concurrently: a uprobe link waits for RCU grace
// periods in the kernel, which concurrent removals share. One by one, 18
// binaries took 17 s to let go of.
func closeLinks(links []link.Link) {
	var wg sync.WaitGroup
	for _, l := range links {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l.Close()
		}()
	}
	wg.Wait()
}

func (g *goProbes) addNow(procRoot string, pid uint32) {
	exe := filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10), "exe")
	var st syscall.Stat_t
	if err := syscall.Stat(exe, &st); err != nil {
		return // gone, or not ours to read
	}
	id := fileID{dev: st.Dev, ino: st.Ino}
	if b := g.byFile[id]; b != nil {
		b.pids[pid] = true
		g.mu.Lock()
		g.byPID[pid] = b
		g.mu.Unlock()
		return
	}
	if _, ok := g.skipped[id]; ok {
		return
	}
	b, err := g.attach(id, exe, pid)
	if err != nil {
		g.skipped[id] = err.Error()
		var notGo *notGoError
		if !errors.As(err, &notGo) {
			g.log.Warn("Go program left to socket capture", "pid", pid, "exe", readlink(exe), "reason", err)
		}
		return
	}
	g.byFile[id] = b
	g.mu.Lock()
	g.byPID[pid] = b
	g.mu.Unlock()
	g.log.Info("Go probes attached", "pid", pid, "exe", b.exe, "go", b.version,
		"probes", len(b.links), "client", b.client, "http2", b.h2, "grpc", b.grpc)
}

// removeNow forgets pid, and unprobes its executable when no other
// selected process runs it. The binary's index is reused only once its
// probes are gone: a probe still firing would read another binary's
// offsets.
func (g *goProbes) removeNow(pid uint32) {
	g.mu.Lock()
	b := g.byPID[pid]
	delete(g.byPID, pid)
	g.mu.Unlock()
	if b == nil {
		return
	}
	delete(b.pids, pid)
	if len(b.pids) > 0 {
		return
	}
	closeLinks(b.links)
	delete(g.byFile, b.id)
	g.free = append(g.free, b.index)
}

type notGoError struct{ err error }

func (e *notGoError) Error() string { return "not a Go program: " + e.err.Error() }
func (e *notGoError) Unwrap() error { return e.err }

func readlink(p string) string {
	s, _ := os.Readlink(p)
	return s
}

// goPlan is what sonde's Go probes would do in one binary: the field
// offsets they read, where each probe program goes, and which probe groups
// cannot be placed, and why.
type goPlan struct {
	version string
	grpc    string // the grpc-go version, if linked
	offsets gohttpGoOffsets
	sites   map[string][]uint64 // by probed function (goProbe.fn)
	missing map[string]string   // by group
}

// planGo resolves every probe and field in the executable at path, without
// attaching anything. A binary that is not a Go program using net/http is
// a *notGoError; one whose required probes or fields do not resolve is
// another error saying why.
func planGo(path string) (*goPlan, error) {
	bin, err := offsets.Open(path)
	if err != nil {
		if errors.Is(err, offsets.ErrNotGo) {
			return nil, &notGoError{err}
		}
		return nil, fmt.Errorf("inspect: %w", err)
	}
	defer bin.Close()
	has := func(fn string) bool { _, err := bin.Func(fn); return err == nil }
	httpServer := has("net/http.serverHandler.ServeHTTP")
	grpcVersion, _ := bin.GRPCVersion()
	usesGRPC := grpcVersion != "" && (has(grpcServer) || has(grpcClient))
	if !httpServer && !usesGRPC && !has("net/http.(*Transport).roundTrip") {
		return nil, &notGoError{errors.New("does not use net/http or grpc-go")}
	}
	p := &goPlan{version: bin.GoVersion(), sites: map[string][]uint64{}}
	if usesGRPC {
		p.grpc = grpcVersion
	}
	p.offsets, p.missing, err = goOffsetsOf(bin, httpServer, usesGRPC)
	if err != nil {
		return nil, err
	}
	for _, probe := range goProbeSet {
		if p.missing[probe.group] != "" {
			continue
		}
		sites, err := probeSites(bin, probe)
		if err != nil {
			if probe.required && httpServer {
				return nil, fmt.Errorf("probe %s: %w", probe.fn, err)
			}
			p.missing[probe.group] = err.Error()
			continue
		}
		p.sites[probe.fn] = sites
	}
	// A group is placed whole or not at all: a start probe without its
	// end would leave state that nothing removes but eviction.
	for _, probe := range goProbeSet {
		if p.missing[probe.group] != "" {
			delete(p.sites, probe.fn)
		}
	}
	if len(p.sites) == 0 {
		return nil, fmt.Errorf("no probe group resolves: %v", p.missing)
	}
	return p, nil
}

// groups lists the probe groups the plan places whole, in goProbeSet order.
func (p *goPlan) groups() []string {
	var out []string
	for _, probe := range goProbeSet {
		if p.missing[probe.group] == "" && !slices.Contains(out, probe.group) {
			out = append(out, probe.group)
		}
	}
	return out
}

func (g *goProbes) attach(id fileID, exe string, pid uint32) (*goBinary, error) {
	plan, err := planGo(exe)
	if err != nil {
		return nil, err
	}
	b := &goBinary{id: id, exe: readlink(exe), version: plan.version, pids: map[uint32]bool{pid: true}}
	if n := len(g.free); n > 0 {
		b.index, g.free = g.free[n-1], g.free[:n-1]
	} else {
		if g.next >= goBinariesMax {
			return nil, fmt.Errorf("more than %d Go executables probed at once", goBinariesMax)
		}
		b.index = g.next
		g.next++
	}
	if err := g.coll.Maps["go_binaries"].Put(b.index, plan.offsets); err != nil {
		g.free = append(g.free, b.index)
		return nil, fmt.Errorf("store offsets: %w", err)
	}
	ex, err := link.OpenExecutable(exe)
	if err != nil {
		g.free = append(g.free, b.index)
		return nil, fmt.Errorf("open executable: %w", err)
	}
	missing := plan.missing
	for _, p := range goProbeSet {
		if missing[p.group] != "" {
			continue
		}
		for _, off := range plan.sites[p.fn] {
			l, err := ex.Uprobe("", g.coll.Programs[p.prog], &link.UprobeOptions{Address: off, Cookie: uint64(b.index)})
			if err == nil {
				b.links = append(b.links, l)
				continue
			}
			if p.required {
				closeLinks(b.links)
				g.free = append(g.free, b.index)
				return nil, fmt.Errorf("probe %s: %w", p.fn, err)
			}
			g.failures.Add(1)
			g.log.Warn("Go probe not attached; what it sees is left to socket capture",
				"pid", pid, "exe", b.exe, "function", p.fn, "error", err)
			missing[p.group] = err.Error()
			break
		}
	}
	b.client = missing["client"] == ""
	b.h2 = missing["h2"] == ""
	b.grpc = missing["grpcserver"] == "" || missing["grpcclient"] == ""
	return b, nil
}

// probeSites returns where p's program goes in bin: the function's first
// instruction the kernel emulates, or its calls to p.callTo.
func probeSites(bin *offsets.Binary, p goProbe) ([]uint64, error) {
	fn, err := bin.Func(p.fn)
	if err != nil && p.alt != "" {
		fn, err = bin.Func(p.alt)
	}
	if err != nil {
		return nil, err
	}
	if p.callTo == "" {
		off, _, err := bin.ProbeSite(fn)
		if err != nil {
			return nil, err
		}
		return []uint64{off}, nil
	}
	callee, err := bin.Func(p.callTo)
	if err != nil {
		return nil, err
	}
	sites, err := bin.CallSites(fn, callee)
	if err != nil {
		return nil, err
	}
	if len(sites) == 0 {
		return nil, fmt.Errorf("no call to %s in %s", p.callTo, p.fn)
	}
	return sites, nil
}

// goBinariesMax mirrors GO_BINARIES_MAX in bpf/headers/gomaps.h.
const goBinariesMax = 256

// goAbsent mirrors GO_ABSENT: a field the binary's Go version lacks.
const goAbsent = 0xffff

// goCopyMax mirrors GO_COPY_MAX: the longest struct head the probes copy.
const goCopyMax = 512

// headSpan is how many bytes of a struct's head hold the fields at offs (a
// string, the widest, takes 16), absent fields left out.
func headSpan(offs []uint16) (uint16, error) {
	span := 0
	for _, off := range offs {
		if off != goAbsent {
			span = max(span, int(off)+16)
		}
	}
	if span > goCopyMax {
		return 0, fmt.Errorf("fields span %d bytes, over the %d the probes copy", span, goCopyMax)
	}
	return uint16(span), nil
}

// goField names a struct field the probes read, and which probe group
// needs it: without it that group is not attached.
type goField struct {
	dst           *uint16
	strct, member string
	group         string
	optional      bool // absent in some Go versions: GO_ABSENT then
}

// goOffsetsOf reads every field offset the probes use. missing maps a
// probe group to why it cannot be attached. The "core" fields every probe
// needs are an error when missing, and so are the net/http server's when
// the binary serves HTTP with net/http (httpServer).
func goOffsetsOf(bin *offsets.Binary, httpServer, usesGRPC bool) (o gohttpGoOffsets, missing map[string]string, err error) {
	var tcpConn uint16
	fields := []goField{
		{&o.G_goid, "runtime.g", "goid", "core", false},
		{&o.G_parentGoid, "runtime.g", "parentGoid", "goroutines", false},
		{&o.RequestMethod, "net/http.Request", "Method", "server", false},
		{&o.RequestUrl, "net/http.Request", "URL", "server", false},
		{&o.RequestHost, "net/http.Request", "Host", "server", false},
		{&o.RequestRemoteAddr, "net/http.Request", "RemoteAddr", "server", false},
		{&o.RequestPattern, "net/http.Request", "Pattern", "server", true},
		{&o.RequestProtoMajor, "net/http.Request", "ProtoMajor", "server", false},
		{&o.RequestTls, "net/http.Request", "TLS", "server", false},
		{&o.UrlPath, "net/url.URL", "Path", "server", false},
		{&o.UrlHost, "net/url.URL", "Host", "server", false},
		{&o.UrlScheme, "net/url.URL", "Scheme", "server", false},
		{&o.UrlRawQuery, "net/url.URL", "RawQuery", "server", false},
		{&o.ResponseConn, "net/http.response", "conn", "server", false},
		{&o.ResponseReq, "net/http.response", "req", "server", false},
		{&o.ResponseStatus, "net/http.response", "status", "server", false},
		{&o.ConnRwc, "net/http.conn", "rwc", "server", false},
		{&o.TlsConnConn, "crypto/tls.Conn", "conn", "server", true},
		{&tcpConn, "net.TCPConn", "conn", "core", false},
		{&o.NetconnFd, "net.conn", "fd", "core", false},
		{&o.NetfdPfd, "net.netFD", "pfd", "core", false},
		{&o.PollfdSysfd, "internal/poll.FD", "Sysfd", "core", false},
		{&o.H2rwRws, "net/http.http2responseWriter", "rws", "h2", false},
		{&o.H2rwsReq, "net/http.http2responseWriterState", "req", "h2", false},
		{&o.H2rwsStatus, "net/http.http2responseWriterState", "status", "h2", false},
		{&o.H2rwsConn, "net/http.http2responseWriterState", "conn", "h2", false},
		{&o.H2scConn, "net/http.http2serverConn", "conn", "h2", false},
		{&o.TreqRequest, "net/http.transportRequest", "Request", "client", false},
		{&o.RespStatusCode, "net/http.Response", "StatusCode", "client", false},
		{&o.RespRequest, "net/http.Response", "Request", "client", false},
		{&o.MhfFields, "net/http.http2MetaHeadersFrame", "Fields", "h2client", false},
		{&o.PconnConn, "net/http.persistConn", "conn", "client", false},
	}
	missing = map[string]string{}
	for _, f := range fields {
		off, _, err := bin.Field(f.strct, f.member)
		switch {
		case err == nil && off < goAbsent:
			*f.dst = uint16(off)
		case f.optional && errors.Is(err, offsets.ErrNoField):
			*f.dst = goAbsent
		case err == nil:
			err = fmt.Errorf("offset %d too large", off)
			fallthrough
		default:
			if (f.group == "core" || f.group == "server" && httpServer) && !f.optional {
				return o, nil, fmt.Errorf("field %s.%s: %w", f.strct, f.member, err)
			}
			if f.optional {
				*f.dst = goAbsent
				continue
			}
			if missing[f.group] == "" {
				missing[f.group] = fmt.Sprintf("field %s.%s: %v", f.strct, f.member, err)
			}
		}
	}
	// The probes copy the head of each of these structs in one read
	// (bpf/gohttp.c): every field they take from it must lie inside.
	heads := []struct {
		dst    *uint16
		strct  string
		groups []string
		fields []uint16
	}{
		// Servers and clients both read the request and its URL.
		{&o.RequestSpan, "net/http.Request", []string{"server", "client"}, []uint16{o.RequestMethod, o.RequestUrl, o.RequestHost,
			o.RequestRemoteAddr, o.RequestPattern, o.RequestProtoMajor, o.RequestTls}},
		{&o.UrlSpan, "net/url.URL", []string{"server", "client"}, []uint16{o.UrlPath, o.UrlHost, o.UrlScheme, o.UrlRawQuery}},
		{&o.ResponseSpan, "net/http.response", []string{"server"}, []uint16{o.ResponseConn, o.ResponseReq, o.ResponseStatus}},
	}
	for _, h := range heads {
		span, err := headSpan(h.fields)
		if err == nil {
			*h.dst = span
			continue
		}
		if httpServer {
			return o, nil, fmt.Errorf("%s: %w", h.strct, err)
		}
		for _, g := range h.groups {
			if missing[g] == "" {
				missing[g] = fmt.Sprintf("%s: %v", h.strct, err)
			}
		}
	}
	// A *net.TCPConn points at its embedded net.conn.
	o.NetconnFd += tcpConn
	if missing["server"] != "" && missing["h2"] == "" {
		missing["h2"] = missing["server"]
	}
	if missing["client"] != "" {
		missing["h2client"] = missing["client"]
	}
	if !usesGRPC {
		missing["grpcserver"] = "does not use grpc-go"
		missing["grpcclient"] = missing["grpcserver"]
		return o, missing, nil
	}
	grpcOffsetsOf(bin, &o, missing)
	return o, missing, nil
}

// grpcOffsetsOf reads the grpc-go fields, from DWARF or offsets/grpc.json.
func grpcOffsetsOf(bin *offsets.Binary, o *gohttpGoOffsets, missing map[string]string) {
	const transport = "google.golang.org/grpc/internal/transport."
	var method, id, embedded, clientEmbedded, attemptS, attemptTS uint16
	fields := []goField{
		{&method, transport + "Stream", "method", "grpcserver", false},
		{&id, transport + "Stream", "id", "grpcserver", false},
		// From v1.69 the server's and the client's streams embed Stream.
		{&embedded, transport + "ServerStream", "Stream", "grpcserver", true},
		{&clientEmbedded, transport + "ClientStream", "Stream", "grpcclient", true},
		{&o.GrpcCsAttempt, "google.golang.org/grpc.clientStream", "attempt", "grpcclient", false},
		// csAttempt.s was renamed transportStream in v1.71.
		{&attemptS, "google.golang.org/grpc.csAttempt", "s", "grpcclient", true},
		{&attemptTS, "google.golang.org/grpc.csAttempt", "transportStream", "grpcclient", true},
		{&o.GrpcServerConn, transport + "http2Server", "conn", "grpcserver", false},
		{&o.GrpcCcAuthority, "google.golang.org/grpc.ClientConn", "authority", "grpcclient", false},
		{&o.GrpcErrorStatus, "google.golang.org/grpc/internal/status.Error", "s", "grpcclient", false},
		{&o.GrpcStatusProto, "google.golang.org/grpc/internal/status.Status", "s", "grpc", false},
		{&o.GrpcProtoCode, "google.golang.org/genproto/googleapis/rpc/status.Status", "Code", "grpc", false},
	}
	for _, f := range fields {
		off, _, err := bin.GRPCField(f.strct, f.member)
		switch {
		case err == nil && off < goAbsent:
			*f.dst = uint16(off)
		case f.optional && (errors.Is(err, offsets.ErrNoField) || errors.Is(err, offsets.ErrNotFound)):
			*f.dst = 0
		default:
			if err == nil {
				err = fmt.Errorf("offset %d too large", off)
			}
			groups := []string{f.group}
			if f.group == "grpc" {
				groups = []string{"grpcserver", "grpcclient"}
			}
			for _, g := range groups {
				if missing[g] == "" {
					missing[g] = fmt.Sprintf("field %s.%s: %v", f.strct, f.member, err)
				}
			}
		}
	}
	o.GrpcStreamMethod = embedded + method
	o.GrpcServerStreamId = embedded + id
	o.GrpcClientStreamId = clientEmbedded + id
	o.GrpcAttemptStream = attemptS + attemptTS // one of them is absent, 0
	if attemptS == 0 && attemptTS == 0 && missing["grpcclient"] == "" {
		missing["grpcclient"] = "field google.golang.org/grpc.csAttempt.s (or transportStream) not found"
	}
}

// GoCoverage says what sonde's Go probes would cover in the executable at
// path, without attaching anything: the probe groups (server, h2, client,
// h2client, goroutines, grpcserver, grpcclient) whose probes and fields
// all resolve. It returns an
// error saying why when the binary is left to socket capture.
func GoCoverage(path string) ([]string, error) {
	plan, err := planGo(path)
	if err != nil {
		return nil, err
	}
	return plan.groups(), nil
}
