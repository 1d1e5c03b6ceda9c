package tracer

import (
	"debug/elf"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/sondehq/sonde/offsets"
	"github.com/sondehq/sonde/tracer/discover"
)

// sslProbes places the OpenSSL uprobes (bpf/openssl.c) on every libssl a
// selected process maps, and on executables with OpenSSL linked in: once
// per file, whatever the number of processes using it. A uprobe on a file
// fires in every process that maps it, and the programs keep to selected
// processes, so a library stays probed until sonde exits: a process that
// loads it later (python imports ssl on first use) is covered from its
// first call, and the host's own libssl is probed from the start for that
// reason.
//
// As with the Go probes, the work runs on a goroutine of its own: reading
// a library and attaching its probes takes milliseconds the event loop
// must not wait for.
type sslProbes struct {
	coll     *ebpf.Collection
	log      *slog.Logger
	failures *atomic.Uint64
	// enable is called once, before the first library's probes attach:
	// the socket programs start looking for SSL calls in progress.
	enable func() error
	work   chan sslWork
	done   chan struct{}

	// Owned by the event loop: when each process's maps were last read.
	checked map[uint32]time.Time

	// Owned by the worker.
	byFile  map[fileID]*sslLib
	skipped map[fileID]bool
	enabled bool

	mu    sync.Mutex // guards libs, which Stats and tests read
	libs  []SSLLibrary
	links []link.Link
}

// SSLLibrary is a file whose OpenSSL functions sonde probes.
type SSLLibrary struct {
	Path  string
	Sites []offsets.SSLSite
}

type sslLib struct {
	path  string
	sites []offsets.SSLSite
}

type sslWork struct {
	procRoot string
	pid      uint32
	// exe is the process's executable, opened when the event loop first
	// saw the process: a short-lived program is often gone by the time the
	// worker looks at it.
	exe     *os.File
	exePath string        // its path, for logs
	file    string        // a library to probe, when pid is 0
	barrier chan struct{} // closed when the work before it is done
}

// sslRecheck is how often the maps of a traced process are read again for
// a libssl it loaded since.
const sslRecheck = 10 * time.Second

// sslFilesMax bounds the files probed at once. Probes stay on a file until
// sonde exits, and a host that runs many container images has one libssl
// per image: beyond this, a new file is left unread, counted and logged.
const sslFilesMax = 256

// hostLibDirs are where a distribution keeps the libssl that programs load
// by default.
var hostLibDirs = []string{
	"/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu",
	"/usr/lib64", "/lib64", "/usr/lib", "/lib", "/usr/local/lib64", "/usr/local/lib",
}

func newSSLProbes(coll *ebpf.Collection, log *slog.Logger, failures *atomic.Uint64, enable func() error) *sslProbes {
	p := &sslProbes{
		coll:     coll,
		log:      log,
		failures: failures,
		enable:   enable,
		work:     make(chan sslWork, goWorkQueue),
		done:     make(chan struct{}),
		checked:  make(map[uint32]time.Time),
		byFile:   make(map[fileID]*sslLib),
		skipped:  make(map[fileID]bool),
	}
	go p.run()
	return p
}

func (p *sslProbes) run() {
	defer close(p.done)
	for w := range p.work {
		switch {
		case w.barrier != nil:
			close(w.barrier)
		case w.pid != 0:
			p.addProcess(w.procRoot, w.pid, w.exe, w.exePath)
		default:
			p.addPath(w.file, w.file, 0)
		}
	}
}

// addHost asks for the host's own libssl files to be probed.
func (p *sslProbes) addHost(root string) {
	if p == nil {
		return
	}
	for _, dir := range hostLibDirs {
		matches, _ := filepath.Glob(filepath.Join(root, dir, "libssl.so*"))
		for _, m := range matches {
			p.queue(sslWork{file: m})
		}
	}
}

// add asks for the libraries pid maps, and its executable, to be probed.
// It reads the process's maps at most once per sslRecheck.
func (p *sslProbes) add(procRoot string, pid uint32) {
	if p == nil {
		return
	}
	if at, ok := p.checked[pid]; ok && time.Since(at) < sslRecheck {
		return
	}
	p.checked[pid] = time.Now()
	name := filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10), "exe")
	exe, _ := os.Open(name)
	p.queue(sslWork{procRoot: procRoot, pid: pid, exe: exe, exePath: readlink(name)})
}

// forget drops what is known of pid, which exited or exec'd.
func (p *sslProbes) forget(pid uint32) {
	if p != nil {
		delete(p.checked, pid)
	}
}

func (p *sslProbes) queue(w sslWork) {
	select {
	case p.work <- w:
	default:
		if w.exe != nil {
			w.exe.Close()
		}
		p.failures.Add(1)
		p.log.Warn("OpenSSL probe queue full; TLS of the process left unread", "pid", w.pid, "file", w.file)
	}
}

// wait returns once the work asked for so far is done.
func (p *sslProbes) wait() {
	if p == nil {
		return
	}
	b := make(chan struct{})
	p.work <- sslWork{barrier: b}
	<-b
}

// close removes every probe and stops the worker.
func (p *sslProbes) close() {
	if p == nil || p.work == nil {
		return
	}
	close(p.work)
	<-p.done
	p.work = nil
	p.mu.Lock()
	links := p.links
	p.links = nil
	p.mu.Unlock()
	closeLinks(links)
}

// libraries lists the files probed so far.
func (p *sslProbes) libraries() []SSLLibrary {
	if p == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]SSLLibrary(nil), p.libs...)
}

func (p *sslProbes) addProcess(procRoot string, pid uint32, exe *os.File, exePath string) {
	if exe != nil {
		p.addExecutable(exe, exePath, pid)
		exe.Close()
	}
	dir := filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10))
	f, err := os.Open(filepath.Join(dir, "maps"))
	if err != nil {
		return // gone
	}
	mapped, err := discover.ParseMaps(f)
	f.Close()
	if err != nil && len(mapped) == 0 {
		return
	}
	for _, m := range mapped {
		if isLibssl(path.Base(m)) {
			// Through the process's root: a container's libssl is not the
			// host's.
			p.addPath(filepath.Join(dir, "root", m), m, pid)
		}
	}
}

// isLibssl matches the file names of OpenSSL's and its forks' libssl.
func isLibssl(name string) bool {
	v, ok := strings.CutPrefix(name, "libssl.so")
	return ok && (v == "" || v[0] == '.')
}

// addExecutable probes an executable that has OpenSSL or BoringSSL linked
// in. Go executables are skipped without reading their symbols: their TLS
// is crypto/tls, which the Go probes cover.
func (p *sslProbes) addExecutable(exe *os.File, display string, pid uint32) {
	id, ok := fileIDOf(exe)
	if !ok || p.byFile[id] != nil || p.skipped[id] {
		return
	}
	if !nativeELF(exe) {
		p.skipped[id] = true
		return
	}
	p.addFile(exe, id, display, pid)
}

// nativeELF reports whether f is an ELF file that is not a Go program.
// Only the headers are read; a crafted file that makes debug/elf panic is
// not native code sonde probes.
func nativeELF(f *os.File) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	e, err := elf.NewFile(f)
	return err == nil && e.Section(".go.buildinfo") == nil
}

// addPath probes the file at name (shown as display).
func (p *sslProbes) addPath(name, display string, pid uint32) {
	f, err := os.Open(name)
	if err != nil {
		return // gone with its process, or not there at all
	}
	defer f.Close()
	id, ok := fileIDOf(f)
	if !ok || p.byFile[id] != nil || p.skipped[id] {
		return
	}
	p.addFile(f, id, display, pid)
}

func fileIDOf(f *os.File) (fileID, bool) {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		return fileID{}, false
	}
	return fileID{dev: st.Dev, ino: st.Ino}, true
}

// addFile probes the open file f unless it has no OpenSSL API. It reads and
// probes the file through /proc/self/fd: the file probed is the one that
// was identified, whatever became of its path or its process meanwhile.
func (p *sslProbes) addFile(f *os.File, id fileID, display string, pid uint32) {
	if len(p.byFile) >= sslFilesMax {
		p.skipped[id] = true
		p.failures.Add(1)
		p.log.Warn("OpenSSL library not probed: too many probed already; TLS through it is not read",
			"pid", pid, "file", display, "max", sslFilesMax)
		return
	}
	lib, err := p.attach(fmt.Sprintf("/proc/self/fd/%d", f.Fd()), display)
	if err != nil {
		p.skipped[id] = true
		if !errors.Is(err, offsets.ErrNoSSL) {
			p.failures.Add(1)
			p.log.Warn("OpenSSL library not probed; TLS through it is not read", "pid", pid, "file", display, "error", err)
		}
		return
	}
	p.byFile[id] = lib
	var single []string
	for _, s := range lib.sites {
		if !s.Emulated {
			single = append(single, s.Func)
		}
	}
	if len(single) > 0 {
		p.log.Warn("OpenSSL probes on single-stepped instructions: each call costs the traced process about 17 us more",
			"file", display, "functions", strings.Join(single, ","))
	}
	p.log.Info("OpenSSL probes attached", "pid", pid, "file", display, "sites", len(lib.sites))
}

// sslCookie is a probe's attach cookie: enum ssl_op and enum ssl_count of
// bpf/headers/events.h, whose values offsets.SSLOp and offsets.SSLCount
// share.
func sslCookie(s offsets.SSLSite) uint64 {
	return uint64(s.Op) | uint64(s.Count)<<8
}

func (p *sslProbes) attach(name, display string) (*sslLib, error) {
	sites, err := offsets.SSLSites(name)
	if err != nil {
		return nil, err
	}
	ex, err := link.OpenExecutable(name)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if !p.enabled {
		if err := p.enable(); err != nil {
			return nil, err
		}
		p.enabled = true
	}
	var links []link.Link
	for _, s := range sites {
		opts := &link.UprobeOptions{Address: s.Offset, Cookie: sslCookie(s)}
		// The return probe first: an entry seen without it would wait in
		// ssl_calls for a return that is never reported.
		ret, err := ex.Uretprobe("", p.coll.Programs["ssl_return"], opts)
		if err != nil {
			closeLinks(links)
			return nil, fmt.Errorf("return probe on %s: %w", s.Func, err)
		}
		links = append(links, ret)
		enter, err := ex.Uprobe("", p.coll.Programs["ssl_enter"], opts)
		if err != nil {
			closeLinks(links)
			return nil, fmt.Errorf("probe on %s: %w", s.Func, err)
		}
		links = append(links, enter)
	}
	p.mu.Lock()
	p.links = append(p.links, links...)
	p.libs = append(p.libs, SSLLibrary{Path: display, Sites: sites})
	p.mu.Unlock()
	return &sslLib{path: display, sites: sites}, nil
}
