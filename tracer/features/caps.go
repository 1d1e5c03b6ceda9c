package features

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Capability is a Linux capability number, as in linux/capability.h.
type Capability uint

// The capabilities sonde uses.
const (
	CapDACReadSearch Capability = unix.CAP_DAC_READ_SEARCH
	CapNetAdmin      Capability = unix.CAP_NET_ADMIN
	CapSysPtrace     Capability = unix.CAP_SYS_PTRACE
	CapSysAdmin      Capability = unix.CAP_SYS_ADMIN
	CapPerfmon       Capability = unix.CAP_PERFMON
	CapBPF           Capability = unix.CAP_BPF
)

var capNames = [...]string{
	"CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER",
	"CAP_FSETID", "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
	"CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST",
	"CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER",
	"CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE",
	"CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
	"CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD",
	"CAP_LEASE", "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP",
	"CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM",
	"CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF",
	"CAP_CHECKPOINT_RESTORE",
}

func (c Capability) String() string {
	if int(c) < len(capNames) {
		return capNames[c]
	}
	return "CAP_" + strconv.FormatUint(uint64(c), 10)
}

// CapSet is a set of capabilities, one bit per capability number.
type CapSet uint64

// Has reports whether c is in the set.
func (s CapSet) Has(c Capability) bool {
	return c < 64 && s&(1<<c) != 0
}

// Caps lists the capabilities in the set in numeric order.
func (s CapSet) Caps() []Capability {
	caps := make([]Capability, 0, bits.OnesCount64(uint64(s)))
	for v := uint64(s); v != 0; v &= v - 1 {
		caps = append(caps, Capability(bits.TrailingZeros64(v)))
	}
	return caps
}

// knownCaps is every capability the kernel knows of, by
// /proc/sys/kernel/cap_last_cap, or every capability this package can name.
func knownCaps() CapSet {
	last := len(capNames) - 1
	if b, err := os.ReadFile("/proc/sys/kernel/cap_last_cap"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n >= 0 && n < 64 {
			last = n
		}
	}
	return CapSet(uint64(1)<<(last+1) - 1)
}

// EffectiveCaps returns the effective capabilities of the current process.
func EffectiveCaps() (CapSet, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, fmt.Errorf("read capabilities: %w", err)
	}
	return parseCapEff(b)
}

// parseCapEff decodes the CapEff line of a /proc/PID/status file.
func parseCapEff(status []byte) (CapSet, error) {
	sc := bufio.NewScanner(bytes.NewReader(status))
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "CapEff:")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
		if err != nil {
			return 0, fmt.Errorf("parse CapEff %q: %w", strings.TrimSpace(v), err)
		}
		return CapSet(n), nil
	}
	return 0, errors.New("no CapEff line in status")
}

// canBPF reports whether caps allow loading and attaching tracing programs:
// since Linux 5.8 CAP_SYS_ADMIN stands in for both CAP_BPF and CAP_PERFMON.
func canBPF(caps CapSet) (missing []Capability) {
	if caps.Has(CapSysAdmin) {
		return nil
	}
	for _, c := range []Capability{CapBPF, CapPerfmon} {
		if !caps.Has(c) {
			missing = append(missing, c)
		}
	}
	return missing
}

// TraceCaps is the exact capability set `sonde trace` needs, as root or
// not, when tracefs is already mounted (a DaemonSet with a hostPath mount of
// /sys/kernel/tracing, a systemd unit on a host that mounts it). It is the
// single source of truth for deploy/: the DaemonSet's securityContext and
// the systemd unit's capability sets must equal it, which e2e tests check.
//
// Each one was verified on the reference platform by removing it:
//   - CAP_BPF: creating the maps fails with EPERM.
//   - CAP_PERFMON: loading any tracepoint program fails with EPERM (and
//     bpf_probe_read_kernel, which every program uses, needs it too).
//   - CAP_SYS_PTRACE: /proc/PID/exe, /proc/PID/fd/N and /proc/PID/cwd of a
//     process of another user, or with capabilities sonde lacks, give
//     EACCES: --exe matches nothing, port selection finds no socket, and
//     spans lose process.executable.path.
//   - CAP_DAC_READ_SEARCH: /proc/PID/environ (mode 0400) and /proc/PID/fd
//     (mode 0500) of a process of another user give EACCES even to uid 0:
//     OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES of the traced process
//     are lost, and service.name falls back to the executable name. It also
//     reads tracefs when sonde does not run as its owner.
func TraceCaps() CapSet { return capSet(traceCaps...) }

// traceCaps is TraceCaps in the order messages name them.
var traceCaps = []Capability{CapBPF, CapPerfmon, CapSysPtrace, CapDACReadSearch}

// MountCaps is what `sonde trace` needs on top of [TraceCaps] when tracefs
// is not mounted and sonde must mount it itself.
func MountCaps() CapSet { return capSet(CapSysAdmin) }

// UprobeCaps is what `sonde trace` needs on top of [TraceCaps] to attach
// uprobes: the Go probes (net/http in Go programs) and the OpenSSL probes
// (TLS in clear). Measured on kernel 6.18: with CAP_BPF and CAP_PERFMON but
// not CAP_SYS_ADMIN, perf_event_open of the uprobe PMU returns EACCES, for
// entry and return probes alike. Without it sonde still traces every
// socket; Go programs are then read from their sockets alone and HTTPS
// stays ciphertext.
func UprobeCaps() CapSet { return capSet(CapSysAdmin) }

// AgentCaps is the set a node agent is granted so that sonde traces with
// everything it has: [TraceCaps] and [UprobeCaps]. The DaemonSet and the
// systemd unit grant exactly this, which e2e tests check.
func AgentCaps() CapSet { return TraceCaps() | UprobeCaps() }

// CanUprobe reports whether the current process may attach uprobes.
func CanUprobe() bool {
	caps, err := EffectiveCaps()
	return err == nil && caps&UprobeCaps() == UprobeCaps()
}

func capSet(caps ...Capability) CapSet {
	var s CapSet
	for _, c := range caps {
		s |= 1 << c
	}
	return s
}

// Names returns the names of the capabilities in the set in numeric order,
// as CAP_BPF.
func (s CapSet) Names() []string {
	caps := s.Caps()
	names := make([]string, len(caps))
	for i, c := range caps {
		names[i] = c.String()
	}
	return names
}

// ParseCapability reads a capability name: CAP_BPF, cap_bpf or BPF (the
// Kubernetes spelling).
func ParseCapability(name string) (Capability, error) {
	n := strings.ToUpper(strings.TrimSpace(name))
	if !strings.HasPrefix(n, "CAP_") {
		n = "CAP_" + n
	}
	for i, c := range capNames {
		if c == n {
			return Capability(i), nil
		}
	}
	return 0, fmt.Errorf("unknown capability %q", name)
}

// PrivilegeError is returned by [CheckPrivileges] when the process lacks
// capabilities that `sonde trace` cannot work without.
type PrivilegeError struct {
	// Missing lists the capabilities to grant.
	Missing []Capability
	// MountTracefs is set when tracefs is not mounted, so sonde needs
	// CAP_SYS_ADMIN to mount it.
	MountTracefs bool
	// ReadTracefs is set when the mounted tracefs is not readable, so sonde
	// needs CAP_DAC_READ_SEARCH to read tracepoint IDs from it.
	ReadTracefs bool
}

func (e *PrivilegeError) Error() string {
	var b strings.Builder
	names := make([]string, len(traceCaps))
	for i, c := range traceCaps {
		names[i] = c.String()
	}
	b.WriteString("sonde trace needs " + joinAnd(names) + " (or root)")
	if e.MountTracefs {
		b.WriteString(", and CAP_SYS_ADMIN to mount tracefs at " + tracefsPath)
	}
	if e.ReadTracefs {
		b.WriteString("; tracefs is not readable without CAP_DAC_READ_SEARCH")
	}
	parts := make([]string, len(e.Missing))
	for i, c := range e.Missing {
		parts[i] = c.String()
		if r := traceNeed(c); r != "" {
			parts[i] += " (" + r + ")"
		}
	}
	fmt.Fprintf(&b, "; missing: %s; run as root or grant them", strings.Join(parts, ", "))
	return b.String()
}

func joinAnd(names []string) string {
	if len(names) < 2 {
		return strings.Join(names, "")
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// traceNeed is what `sonde trace` loses without c.
func traceNeed(c Capability) string {
	switch c {
	case CapBPF:
		return "create maps and load programs"
	case CapPerfmon:
		return "load and attach tracepoint programs"
	case CapSysPtrace:
		return "read /proc/PID/exe and /proc/PID/fd of other processes"
	case CapDACReadSearch:
		return "read /proc/PID/environ and /proc/PID/fd of other users' processes"
	case CapSysAdmin:
		return "mount tracefs"
	}
	return ""
}

// CheckPrivileges is a fast pre-flight for `sonde trace`: it returns a
// *PrivilegeError naming what is missing when the effective capabilities of
// the process are not a superset of [TraceCaps] (CAP_SYS_ADMIN stands in
// for CAP_BPF and CAP_PERFMON), or cannot mount or read tracefs as needed.
func CheckPrivileges() error {
	caps, err := EffectiveCaps()
	if err != nil {
		return err
	}
	ms, err := readMounts()
	if err != nil {
		return err
	}
	path, mounted := findTracefs(ms)
	readable := true
	if mounted {
		// tracefs is root-only by default: a non-root user with CAP_BPF and
		// CAP_PERFMON still cannot read tracepoint IDs from it.
		f, err := os.Open(filepath.Join(path, "events", "syscalls", "sys_enter_write", "id"))
		if err == nil {
			f.Close()
		}
		readable = !errors.Is(err, os.ErrPermission)
	}
	return checkPrivileges(caps, mounted, readable)
}

func checkPrivileges(caps CapSet, tracefsMounted, tracefsReadable bool) error {
	e := &PrivilegeError{Missing: canBPF(caps)}
	for _, c := range []Capability{CapSysPtrace, CapDACReadSearch} {
		if !caps.Has(c) {
			e.Missing = append(e.Missing, c)
		}
	}
	if !tracefsMounted && !caps.Has(CapSysAdmin) {
		e.MountTracefs = true
		e.Missing = append(e.Missing, CapSysAdmin)
	}
	if tracefsMounted && !tracefsReadable && !caps.Has(CapDACReadSearch) {
		e.ReadTracefs = true
	}
	if len(e.Missing) == 0 {
		return nil
	}
	return e
}

// capNeeds is what each capability buys sonde, in the order the
// capabilities check reports them.
var capNeeds = []struct {
	cap    Capability
	reason string
}{
	{CapBPF, "load programs and create maps"},
	{CapPerfmon, "attach tracing programs and read kernel memory"},
	{CapSysAdmin, "attach uprobes (Go programs, TLS through OpenSSL) and mount tracefs; stands in for CAP_BPF and CAP_PERFMON"},
	{CapSysPtrace, "read /proc/PID/exe and /proc/PID/fd of other processes"},
	{CapDACReadSearch, "read /proc/PID/environ and /proc/PID/fd of other users' processes, and tracefs when not its owner"},
	{CapNetAdmin, "sockops and TC programs, planned"},
}
