package features

import (
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// kernelSymbol is probed by the kprobe and fentry checks: a function every
// kernel has and keeps out of line.
const kernelSymbol = "vfs_read"

// prober holds what the checks share: the state found before Probe changed
// anything, and the tracefs it mounted or found.
type prober struct {
	caps    CapSet
	capsErr error

	mounts    []mount // as found, before Probe mounted anything
	mountsErr error

	noMount        bool
	tracefsPath    string // usable tracefs, "" when there is none yet
	tracefsMounted bool   // Probe mounted it
	tracefsErr     error
}

func newProber(opts *ProbeOptions) *prober {
	p := &prober{noMount: opts.NoMount}
	p.caps, p.capsErr = EffectiveCaps()
	p.mounts, p.mountsErr = readMounts()
	p.tracefsPath, _ = findTracefs(p.mounts)
	return p
}

// ensureTracefs mounts tracefs the first time a check needs it, so that a
// Probe limited to other checks changes nothing.
func (p *prober) ensureTracefs() {
	if p.tracefsPath != "" || p.tracefsErr != nil {
		return
	}
	if p.noMount {
		p.tracefsErr = errors.New("tracefs is not mounted and NoMount is set")
		return
	}
	p.tracefsMounted, p.tracefsPath, p.tracefsErr = EnsureTracefs()
}

// privileged reports whether the process may load and attach tracing
// programs, so that EPERM means the kernel refuses, not a lack of rights.
func (p *prober) privileged() bool {
	return p.capsErr == nil && len(canBPF(p.caps)) == 0
}

// failed turns an error of a required step into a status: missing, unless
// a lack of privileges explains it.
func (p *prober) failed(err error) (Status, string) {
	msg := strings.ReplaceAll(err.Error(), memlockHint, "")
	var perr *os.PathError
	switch {
	case errors.As(err, &perr) && errors.Is(err, os.ErrPermission):
		return Unknown, "no permission to tell: " + msg
	case (errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES)) && !p.privileged():
		return Unknown, "needs CAP_BPF and CAP_PERFMON to tell: " + msg
	}
	return Missing, msg
}

func (p *prober) capabilities() (Status, string) {
	if p.capsErr != nil {
		return Unknown, p.capsErr.Error()
	}
	known := knownCaps()
	absent := known &^ p.caps
	var held string
	switch {
	case absent == 0:
		held = "all capabilities"
	case p.caps == 0:
		held = "no capabilities"
	case bits.OnesCount64(uint64(absent)) <= bits.OnesCount64(uint64(known))/2:
		held = "all capabilities but " + joinCaps(absent.Caps())
	default:
		held = joinCaps(p.caps.Caps())
	}

	var lacks []string
	for _, n := range capNeeds {
		standIn := (n.cap == CapBPF || n.cap == CapPerfmon) && p.caps.Has(CapSysAdmin)
		if !p.caps.Has(n.cap) && !standIn {
			lacks = append(lacks, fmt.Sprintf("%s (%s)", n.cap, n.reason))
		}
	}
	if missing := canBPF(p.caps); len(missing) > 0 {
		return Missing, "effective: " + held + "; sonde lacks " + strings.Join(lacks, ", ")
	}
	if len(lacks) > 0 {
		return Degraded, "effective: " + held + "; sonde lacks " + strings.Join(lacks, ", ")
	}
	return OK, "effective: " + held + "; sonde has all it uses"
}

func joinCaps(caps []Capability) string {
	names := make([]string, len(caps))
	for i, c := range caps {
		names[i] = c.String()
	}
	return strings.Join(names, ", ")
}

func (p *prober) btf() (Status, string) {
	const path = "/sys/kernel/btf/vmlinux"
	fi, err := os.Stat(path)
	if err != nil {
		return Missing, err.Error()
	}
	spec, err := btf.LoadKernelSpec()
	if err != nil {
		return Missing, fmt.Sprintf("load %s: %v", path, err)
	}
	// sonde's programs read task and socket fields through CO-RE.
	for _, name := range []string{"task_struct", "socket"} {
		var s *btf.Struct
		if err := spec.TypeByName(name, &s); err != nil {
			return Degraded, fmt.Sprintf("%s (%d KiB) loads but has no struct %s: %v", path, fi.Size()>>10, name, err)
		}
	}
	return OK, fmt.Sprintf("%s (%d KiB) loads, has task_struct and socket", path, fi.Size()>>10)
}

func (p *prober) tracefs() (Status, string) {
	if p.mountsErr != nil {
		return Unknown, p.mountsErr.Error()
	}
	if path, ok := findTracefs(p.mounts); ok {
		return OK, "mounted at " + path
	}
	p.ensureTracefs()
	switch {
	case p.tracefsMounted:
		return Missing, "was not mounted; Probe mounted it at " + p.tracefsPath + ", as sonde trace would"
	case p.tracefsErr != nil:
		return Missing, "not mounted: " + p.tracefsErr.Error()
	}
	return Missing, "was not mounted; now found at " + p.tracefsPath
}

func (p *prober) bpffs() (Status, string) {
	return p.mountState("bpf")
}

func (p *prober) debugfs() (Status, string) {
	return p.mountState("debugfs")
}

func (p *prober) mountState(fstype string) (Status, string) {
	if p.mountsErr != nil {
		return Unknown, p.mountsErr.Error()
	}
	if points := mountsOf(p.mounts, fstype); len(points) > 0 {
		return OK, "mounted at " + strings.Join(points, ", ")
	}
	return Missing, "not mounted"
}

func (p *prober) cgroup2() (Status, string) {
	if p.mountsErr != nil {
		return Unknown, p.mountsErr.Error()
	}
	points := mountsOf(p.mounts, "cgroup2")
	if len(points) == 0 {
		return Missing, "no cgroup2 mount"
	}
	detail := "mounted at " + strings.Join(points, ", ")
	if v1 := mountsOf(p.mounts, "cgroup"); len(v1) > 0 {
		detail += fmt.Sprintf(" (hybrid: %d cgroup v1 hierarchies too)", len(v1))
	}
	return OK, detail
}

// needTracefs is the guard of the checks that attach through tracefs:
// cilium/ebpf remembers a failed tracefs lookup for the life of the
// process, so attaching without tracefs would break later attaches too.
func (p *prober) needTracefs() (string, bool) {
	p.ensureTracefs()
	if p.tracefsPath != "" {
		return "", true
	}
	if p.tracefsErr != nil {
		return "needs tracefs: " + p.tracefsErr.Error(), false
	}
	return "needs tracefs, which is not mounted", false
}

// fired runs trigger and reports whether the counted program ran.
func fired(c *counter, trigger func() error) (bool, error) {
	before, err := c.value()
	if err != nil {
		return false, err
	}
	if err := trigger(); err != nil {
		return false, err
	}
	after, err := c.value()
	if err != nil {
		return false, err
	}
	return after > before, nil
}

// writeDevNull triggers write(2) and so sys_enter_write.
func writeDevNull() error {
	f, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = f.Write([]byte("sonde"))
	return err
}

func (p *prober) tracepoints() (Status, string) {
	if why, ok := p.needTracefs(); !ok {
		return Unknown, why
	}
	c, err := newCounter()
	if err != nil {
		return p.failed(err)
	}
	defer c.Close()
	prog, err := c.program(ebpf.TracePoint)
	if err != nil {
		return p.failed(err)
	}
	defer prog.Close()
	l, err := link.Tracepoint("syscalls", "sys_enter_write", prog, nil)
	if err != nil {
		return p.failed(fmt.Errorf("attach to syscalls/sys_enter_write: %w", err))
	}
	defer l.Close()
	ok, err := fired(c, writeDevNull)
	if err != nil {
		return Unknown, fmt.Sprintf("attached to syscalls/sys_enter_write, but the test write failed: %v", err)
	}
	if !ok {
		return Degraded, "attached to syscalls/sys_enter_write, but the program did not run on write(2)"
	}
	return OK, "syscalls/sys_enter_write attached and fired (tracefs at " + p.tracefsPath + ")"
}

func (p *prober) rawTracepoints() (Status, string) {
	return p.rawTracepointsFire([]string{"sys_enter", "sys_exit"}, writeDevNull, "write(2)", "")
}

// socketTracepoints attaches to the socket layer's send and receive
// tracepoints (kernel 6.3 on), where sonde reads socket bytes, and sees
// them fire on a socket pair.
func (p *prober) socketTracepoints() (Status, string) {
	return p.rawTracepointsFire([]string{"sock_send_length", "sock_recv_length"}, sendOverSocketPair,
		"a socket's send and receive", "added in 6.3")
}

// rawTracepointsFire attaches a counting program to each raw tracepoint in
// turn and sees it run when trigger does what action says. A tracepoint the
// kernel lacks is Missing when absent explains why (when it came), else a
// failure like any other.
func (p *prober) rawTracepointsFire(names []string, trigger func() error, action, absent string) (Status, string) {
	c, err := newCounter()
	if err != nil {
		return p.failed(err)
	}
	defer c.Close()
	prog, err := c.program(ebpf.RawTracepoint)
	if err != nil {
		return p.failed(err)
	}
	defer prog.Close()
	for _, name := range names {
		l, err := link.AttachRawTracepoint(link.RawTracepointOptions{Name: name, Program: prog})
		if absent != "" && errors.Is(err, os.ErrNotExist) {
			return Missing, "the kernel has no " + name + " tracepoint (" + absent + ")"
		}
		if err != nil {
			return p.failed(fmt.Errorf("attach to %s: %w", name, err))
		}
		ok, err := fired(c, trigger)
		l.Close()
		if err != nil {
			return Unknown, fmt.Sprintf("attached to %s, but %s failed: %v", name, action, err)
		}
		if !ok {
			return Degraded, "attached to " + name + ", but the program did not run on " + action
		}
	}
	return OK, strings.Join(names, " and ") + " attached and fired"
}

// sendOverSocketPair sends a byte over a new socket pair and receives it.
func sendOverSocketPair() error {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socketpair: %w", err)
	}
	defer unix.Close(fds[0])
	defer unix.Close(fds[1])
	if _, err := unix.Write(fds[0], []byte{'s'}); err != nil {
		return fmt.Errorf("send: %w", err)
	}
	var b [1]byte
	if _, err := unix.Read(fds[1], b[:]); err != nil {
		return fmt.Errorf("receive: %w", err)
	}
	return nil
}

func (p *prober) kprobes() (Status, string) {
	prog, err := loadProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, Instructions: returnInsns(0)})
	if err != nil {
		return p.failed(err)
	}
	defer prog.Close()
	// Without the kprobe PMU, cilium/ebpf falls back to tracefs.
	_, err = os.Stat("/sys/bus/event_source/devices/kprobe")
	havePMU := err == nil
	if !havePMU {
		if why, ok := p.needTracefs(); !ok {
			return Unknown, "kprobe programs load, attach untested: no kprobe PMU and " + why
		}
	}
	l, err := link.Kprobe(kernelSymbol, prog, nil)
	if err != nil {
		st, detail := p.failed(err)
		var perr *os.PathError
		if !havePMU && errors.As(err, &perr) {
			// cilium/ebpf's chain of fallbacks hides the one fact that matters.
			detail = "no kprobe PMU, and " + perr.Error()
		}
		return st, fmt.Sprintf("kprobe programs load, but attaching to %s fails: %s", kernelSymbol, detail)
	}
	l.Close()
	l, err = link.Kretprobe(kernelSymbol, prog, nil)
	if err != nil {
		return Degraded, fmt.Sprintf("kprobes attach, kretprobes do not: %v", err)
	}
	l.Close()
	return OK, "kprobe and kretprobe on " + kernelSymbol + " load and attach"
}

func (p *prober) fentry() (Status, string) {
	var loaded []string
	for _, k := range []struct {
		at   ebpf.AttachType
		kind string
	}{{ebpf.AttachTraceFEntry, "fentry"}, {ebpf.AttachTraceFExit, "fexit"}} {
		at, kind := k.at, k.kind
		prog, err := loadProgram(&ebpf.ProgramSpec{
			Type:         ebpf.Tracing,
			AttachType:   at,
			AttachTo:     kernelSymbol,
			Instructions: returnInsns(0),
		})
		if err != nil {
			st, detail := p.failed(err)
			if len(loaded) > 0 {
				st = Degraded
			}
			return st, joinNonEmpty(strings.Join(loaded, ", "), kind+" on "+kernelSymbol+": "+detail)
		}
		l, err := link.AttachTracing(link.TracingOptions{Program: prog})
		prog.Close()
		if err != nil {
			return Degraded, fmt.Sprintf("%s on %s loads but does not attach: %v", kind, kernelSymbol, err)
		}
		l.Close()
		loaded = append(loaded, kind+" attaches")
	}
	return OK, "fentry and fexit on " + kernelSymbol + " load and attach"
}

// uprobeTarget is where the uprobe checks attach: a function of this very
// executable that only the uprobe check calls.
//
//go:noinline
func uprobeTarget(n int) int {
	return n*31 + 7
}

// uprobeSink keeps the calls to uprobeTarget from being optimised away.
var uprobeSink atomic.Int64

// attachUprobe attaches prog to uprobeTarget in this executable: by symbol,
// or by file offset when the executable is stripped of its symbol table.
// It also returns where it attached, for the report.
func attachUprobe(prog *ebpf.Program, ret bool) (link.Link, string, error) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		return nil, "", fmt.Errorf("resolve own executable: %w", err)
	}
	ex, err := link.OpenExecutable(exe)
	if err != nil {
		return nil, "", err
	}
	attach := ex.Uprobe
	if ret {
		attach = ex.Uretprobe
	}
	pc := reflect.ValueOf(uprobeTarget).Pointer()
	sym := runtime.FuncForPC(pc).Name()
	l, err := attach(sym, prog, nil)
	if !errors.Is(err, link.ErrNoSymbol) {
		return l, sym, err
	}
	off, err := fileOffset(exe, pc)
	if err != nil {
		return nil, "", err
	}
	where := fmt.Sprintf("%s+%#x", filepath.Base(exe), off)
	l, err = attach("", prog, &link.UprobeOptions{Address: off})
	return l, where, err
}

// fileOffset maps a code address of this process to an offset in exe,
// through the executable mapping that holds it.
func fileOffset(exe string, pc uintptr) (uint64, error) {
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		return 0, fmt.Errorf("read own mappings: %w", err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		var start, end, off, inode uint64
		var perms, dev, path string
		if n, _ := fmt.Sscanf(line, "%x-%x %s %x %s %d %s", &start, &end, &perms, &off, &dev, &inode, &path); n < 7 {
			continue
		}
		if path == exe && strings.Contains(perms, "x") && uint64(pc) >= start && uint64(pc) < end {
			return uint64(pc) - start + off, nil
		}
	}
	return 0, fmt.Errorf("no executable mapping of %s holds %#x", exe, pc)
}

func (p *prober) uprobes() (Status, string) {
	if why, ok := p.needUprobeBackend(); !ok {
		return Unknown, why
	}
	c, err := newCounter()
	if err != nil {
		return p.failed(err)
	}
	defer c.Close()
	prog, err := c.program(ebpf.Kprobe)
	if err != nil {
		return p.failed(err)
	}
	defer prog.Close()
	l, where, err := attachUprobe(prog, false)
	if err != nil {
		return p.failed(fmt.Errorf("attach uprobe: %w", err))
	}
	defer l.Close()
	ok, err := fired(c, func() error {
		uprobeSink.Add(int64(uprobeTarget(1)))
		return nil
	})
	if err != nil {
		return Unknown, err.Error()
	}
	if !ok {
		return Degraded, "attached to " + where + ", but the program did not run when it was called"
	}
	return OK, "attached to " + where + " and fired"
}

func (p *prober) uretprobes() (Status, string) {
	if why, ok := p.needUprobeBackend(); !ok {
		return Unknown, why
	}
	prog, err := loadProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, Instructions: returnInsns(0)})
	if err != nil {
		return p.failed(err)
	}
	defer prog.Close()
	l, where, err := attachUprobe(prog, true)
	if err != nil {
		return p.failed(fmt.Errorf("attach uretprobe: %w", err))
	}
	l.Close()
	// Not fired on purpose: a uretprobe swaps the return address of the
	// Go function it runs in, and a Go stack walk meeting that address
	// crashes the process.
	return OK, "attached to " + where + " (not fired: return probes break Go stack walks)"
}

// needUprobeBackend guards like needTracefs: without the uprobe PMU,
// cilium/ebpf attaches uprobes through tracefs.
func (p *prober) needUprobeBackend() (string, bool) {
	if _, err := os.Stat("/sys/bus/event_source/devices/uprobe"); err == nil {
		return "", true
	}
	if why, ok := p.needTracefs(); !ok {
		return "no uprobe PMU and " + why, false
	}
	return "", true
}

func (p *prober) ringbuf() (Status, string) {
	err := features.HaveMapType(ebpf.RingBuf)
	switch {
	case err == nil:
		return OK, "BPF_MAP_TYPE_RINGBUF maps can be created"
	case errors.Is(err, ebpf.ErrNotSupported):
		return Missing, err.Error()
	}
	return p.failed(err)
}

func (p *prober) probeWriteUser() (Status, string) {
	lockdown := lockdownMode(p.mounts)
	// Writing zero bytes from the stack to address 0 is enough for the
	// verifier to decide whether the helper exists.
	prog, err := loadProgram(&ebpf.ProgramSpec{
		Type: ebpf.Kprobe,
		Instructions: asm.Instructions{
			asm.Mov.Imm(asm.R1, 0),
			asm.StoreMem(asm.RFP, -8, asm.R1, asm.DWord),
			asm.Mov.Reg(asm.R2, asm.RFP),
			asm.Add.Imm(asm.R2, -8),
			asm.Mov.Imm(asm.R3, 8),
			asm.FnProbeWriteUser.Call(),
			asm.Mov.Imm(asm.R0, 0),
			asm.Return(),
		},
	})
	if err != nil {
		st, detail := p.failed(err)
		if st == Missing {
			detail = "a program calling bpf_probe_write_user is rejected: " + detail
		}
		return st, joinNonEmpty(detail, lockdown)
	}
	prog.Close()
	return OK, joinNonEmpty("a program calling bpf_probe_write_user loads", lockdown)
}

// lockdownMode describes the kernel lockdown mode. It reads securityfs only
// where it is already mounted: mounting it is not sonde's business.
func lockdownMode(ms []mount) string {
	points := mountsOf(ms, "securityfs")
	if len(points) == 0 {
		return "lockdown mode unknown: securityfs not mounted"
	}
	b, err := os.ReadFile(filepath.Join(points[0], "lockdown"))
	if err != nil {
		return "lockdown mode unknown: " + err.Error()
	}
	s := string(b)
	if i, j := strings.IndexByte(s, '['), strings.IndexByte(s, ']'); i >= 0 && j > i {
		return "lockdown=" + s[i+1:j]
	}
	return "lockdown: " + strings.TrimSpace(s)
}

func (p *prober) sockops() (Status, string) {
	if err := features.HaveProgramType(ebpf.SockOps); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return Missing, err.Error()
		}
		return p.failed(err)
	}
	prog, err := loadProgram(&ebpf.ProgramSpec{Type: ebpf.SockOps, Instructions: returnInsns(1)})
	if err != nil {
		return p.failed(err)
	}
	defer prog.Close()

	points := mountsOf(p.mounts, "cgroup2")
	if len(points) == 0 {
		return Degraded, "sockops programs load; attach untested: no cgroup2 mount"
	}
	// An empty cgroup of its own keeps the probe away from real sockets.
	dir, err := os.MkdirTemp(points[0], "sonde-probe-")
	if err != nil {
		return Degraded, fmt.Sprintf("sockops programs load; attach untested: %v", err)
	}
	defer os.Remove(dir)
	l, err := link.AttachCgroup(link.CgroupOptions{Path: dir, Attach: ebpf.AttachCGroupSockOps, Program: prog})
	if err != nil {
		return Degraded, fmt.Sprintf("sockops programs load, but do not attach to a cgroup: %v", err)
	}
	l.Close()
	return OK, "loads and attaches to a cgroup under " + points[0]
}

func (p *prober) skMsg() (Status, string) {
	if err := features.HaveProgramType(ebpf.SkMsg); err != nil {
		if errors.Is(err, ebpf.ErrNotSupported) {
			return Missing, err.Error()
		}
		return p.failed(err)
	}
	// SK_PASS: let every message through unchanged.
	prog, err := loadProgram(&ebpf.ProgramSpec{Type: ebpf.SkMsg, Instructions: returnInsns(1)})
	if err != nil {
		return p.failed(err)
	}
	defer prog.Close()
	m, err := ebpf.NewMap(&ebpf.MapSpec{Type: ebpf.SockHash, KeySize: 4, ValueSize: 4, MaxEntries: 1})
	if err != nil {
		return Degraded, fmt.Sprintf("sk_msg programs load, but no sockhash map: %v", err)
	}
	defer m.Close()
	opts := link.RawAttachProgramOptions{Target: m.FD(), Program: prog, Attach: ebpf.AttachSkMsgVerdict}
	if err := link.RawAttachProgram(opts); err != nil {
		return Degraded, fmt.Sprintf("sk_msg programs load, but do not attach to a sockhash: %v", err)
	}
	if err := link.RawDetachProgram(link.RawDetachProgramOptions{Target: m.FD(), Program: prog, Attach: ebpf.AttachSkMsgVerdict}); err != nil {
		return Unknown, fmt.Sprintf("attached to a sockhash, but detach failed: %v", err)
	}
	return OK, "loads and attaches to a sockhash map"
}

func (p *prober) msgPushData() (Status, string) {
	err := features.HaveProgramHelper(ebpf.SkMsg, asm.FnMsgPushData)
	switch {
	case err == nil:
		return OK, "sk_msg programs may call bpf_msg_push_data"
	case errors.Is(err, ebpf.ErrNotSupported):
		return Missing, err.Error()
	}
	return p.failed(err)
}
