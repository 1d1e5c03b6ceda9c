package discover

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Fields says which facts Read collects: reading all of them for every
// process on a busy host would cost more than most selectors need.
type Fields uint

const (
	FieldExe Fields = 1 << iota
	FieldCmdline
	FieldCgroup
	FieldEnv
	FieldPorts
	FieldStat // Comm, PPID and KernelThread

	FieldAll = FieldExe | FieldCmdline | FieldCgroup | FieldEnv | FieldPorts | FieldStat
)

// MaxNetLines bounds the lines ListeningSockets reads of a table: a host
// with more sockets than this is not one whose listeners can be told apart
// cheaply anyway.
const MaxNetLines = 1 << 16

// Bounds on what is read from /proc: a hostile process controls its
// command line and environment, and must not make sonde read megabytes.
const (
	maxCmdline = 16 << 10
	maxEnviron = 256 << 10
	maxCgroup  = 8 << 10
	maxFDs     = 1 << 16
	// pid (comm) state ppid pgrp session tty_nr tpgid flags: comm is at
	// most 64 bytes, the numbers before flags a few dozen.
	maxStat = 512
)

// Process is what /proc says of one process. A fact that could not be read
// is left zero.
type Process struct {
	PID     int
	Exe     string   // resolved path of the executable
	Cmdline []string // argv
	// Cgroup is the cgroup v2 path, e.g. /system.slice/nginx.service.
	Cgroup string
	// ContainerID and PodUID are taken from the cgroup path when it has
	// the shape container runtimes and the kubelet give it.
	ContainerID string
	PodUID      string
	// Env holds the OTEL_* variables sonde reads: OTEL_SERVICE_NAME and
	// OTEL_RESOURCE_ATTRIBUTES.
	Env map[string]string
	// ListenPorts are the TCP ports the process listens on, IPv4 or IPv6.
	ListenPorts []uint16
	// From /proc/PID/stat: the kernel's short name, the parent, and
	// whether this is a kernel thread (which has no program to trace).
	Comm         string
	PPID         int
	KernelThread bool
}

// ErrGone is returned when the process no longer exists.
var ErrGone = errors.New("process is gone")

// Read collects the facts in want about pid from procRoot (normally /proc).
// Facts that cannot be read (permissions, a process in the middle of exit)
// are left empty; only a process that is gone is an error.
func Read(procRoot string, pid int, want Fields) (*Process, error) {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("pid %d: %w", pid, ErrGone)
	}
	p := &Process{PID: pid}
	if want&FieldStat != 0 {
		if b, err := readBounded(filepath.Join(dir, "stat"), maxStat); err == nil {
			if st, err := ParseStat(b); err == nil {
				p.Comm, p.PPID, p.KernelThread = st.Comm, st.PPID, st.KernelThread
			}
		}
	}
	if want&FieldExe != 0 {
		if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
			p.Exe = strings.TrimSuffix(exe, " (deleted)")
		}
	}
	if want&FieldCmdline != 0 {
		if b, err := readBounded(filepath.Join(dir, "cmdline"), maxCmdline); err == nil {
			p.Cmdline = ParseCmdline(b)
		}
	}
	if want&FieldCgroup != 0 {
		if b, err := readBounded(filepath.Join(dir, "cgroup"), maxCgroup); err == nil {
			p.Cgroup = ParseCgroup(b)
			p.ContainerID, p.PodUID = ContainerOf(p.Cgroup)
		}
	}
	if want&FieldEnv != 0 {
		if b, err := readBounded(filepath.Join(dir, "environ"), maxEnviron); err == nil {
			p.Env = ParseEnviron(b, "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES")
		}
	}
	if want&FieldPorts != 0 {
		p.ListenPorts = listenPorts(dir)
	}
	return p, nil
}

// readBounded reads at most limit bytes; a longer file is cut, and says so
// by returning exactly limit bytes.
func readBounded(name string, limit int) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)))
	if err != nil {
		return nil, err
	}
	return b, nil
}

// ParseCmdline splits /proc/PID/cmdline at its NUL bytes.
func ParseCmdline(b []byte) []string {
	b = bytes.TrimRight(b, "\x00")
	if len(b) == 0 {
		return nil
	}
	parts := bytes.Split(b, []byte{0})
	out := make([]string, len(parts))
	for i, a := range parts {
		out[i] = string(a)
	}
	return out
}

// ParseEnviron returns the values of keys found in a /proc/PID/environ
// buffer. An entry cut by the read bound is ignored: its value would be a
// truncated lie.
func ParseEnviron(b []byte, keys ...string) map[string]string {
	env := make(map[string]string)
	if len(b) >= maxEnviron && b[len(b)-1] != 0 {
		if i := bytes.LastIndexByte(b, 0); i >= 0 {
			b = b[:i]
		} else {
			b = nil
		}
	}
	for _, kv := range bytes.Split(b, []byte{0}) {
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if !ok {
			continue
		}
		for _, want := range keys {
			if string(k) == want {
				env[want] = string(v)
			}
		}
	}
	return env
}

// ParseCgroup returns the cgroup path of a process from /proc/PID/cgroup:
// the cgroup v2 path (the "0::PATH" line). A host in hybrid mode keeps
// processes at the v2 root and files them in the v1 hierarchies, so when
// the v2 path is the root, the path of the systemd hierarchy (else of the
// first v1 hierarchy not at its root) is returned instead: it is the one
// that carries the service or container.
func ParseCgroup(b []byte) string {
	var v2, systemd, v1 string
	haveV2 := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 512), maxCgroup)
	for sc.Scan() {
		// ID:controllers:path
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2, haveV2 = parts[2], true
		case parts[1] == "name=systemd":
			systemd = parts[2]
		case v1 == "" && parts[2] != "/":
			v1 = parts[2]
		}
	}
	switch {
	case haveV2 && v2 != "/":
		return v2
	case systemd != "" && systemd != "/":
		return systemd
	case v1 != "":
		return v1
	case haveV2:
		return v2
	}
	return systemd
}

// ContainerOf extracts a container id (64 hex digits) and a Kubernetes pod
// UID from a cgroup path, as the common runtimes write them:
//
//	/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<UID>.slice/cri-containerd-<ID>.scope
//	/kubepods/burstable/pod<UID>/<ID>
//	/system.slice/docker-<ID>.scope
//	/docker/<ID>
//
// The systemd form writes the pod UID with underscores for dashes.
func ContainerOf(cgroup string) (containerID, podUID string) {
	for _, seg := range strings.Split(cgroup, "/") {
		name := strings.TrimSuffix(strings.TrimSuffix(seg, ".scope"), ".slice")
		if i := strings.LastIndex(name, "pod"); i >= 0 {
			if uid := strings.ReplaceAll(name[i+3:], "_", "-"); isUID(uid) {
				podUID = uid
				continue
			}
		}
		id := name
		if i := strings.LastIndexAny(name, "-:"); i >= 0 {
			id = name[i+1:]
		}
		if isHex64(id) {
			containerID = id
		}
	}
	return containerID, podUID
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// isUID matches the 8-4-4-4-12 form of a Kubernetes UID.
func isUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
	}
	return true
}

const tcpListen = "0A" // TCP_LISTEN in the st column of /proc/net/tcp

// listenPorts returns the ports of the listening TCP sockets the process
// holds: the socket inodes of its fds, looked up in its network namespace's
// tables. A port merely open in the namespace (another process's) does not
// count.
func listenPorts(dir string) []uint16 {
	inodes := socketInodes(filepath.Join(dir, "fd"))
	if len(inodes) == 0 {
		return nil
	}
	seen := map[uint16]bool{}
	var ports []uint16
	for _, name := range []string{"tcp", "tcp6"} {
		f, err := os.Open(filepath.Join(dir, "net", name))
		if err != nil {
			continue
		}
		for port, inode := range ListeningSockets(f) {
			if inodes[inode] && !seen[port] {
				seen[port] = true
				ports = append(ports, port)
			}
		}
		f.Close()
	}
	return ports
}

// socketInodes lists the inodes of the sockets among a process's fds.
func socketInodes(fdDir string) map[uint64]bool {
	d, err := os.Open(fdDir)
	if err != nil {
		return nil
	}
	defer d.Close()
	names, err := d.Readdirnames(maxFDs)
	if err != nil && len(names) == 0 {
		return nil
	}
	out := make(map[uint64]bool)
	for _, n := range names {
		l, err := os.Readlink(filepath.Join(fdDir, n))
		if err != nil {
			continue
		}
		if s, ok := strings.CutPrefix(l, "socket:["); ok {
			if ino, err := strconv.ParseUint(strings.TrimSuffix(s, "]"), 10, 64); err == nil {
				out[ino] = true
			}
		}
	}
	return out
}

// ListeningSockets yields port and inode of each LISTEN line of a
// /proc/net/tcp{,6} table. A line too short to hold the inode column, or
// whose inode does not parse, yields inode 0, which no socket has: its port
// is listening all the same.
func ListeningSockets(r io.Reader) func(yield func(port uint16, inode uint64) bool) {
	return func(yield func(uint16, uint64) bool) {
		sc := bufio.NewScanner(r)
		for n := 0; sc.Scan() && n < MaxNetLines; n++ {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			f := strings.Fields(sc.Text())
			if len(f) < 4 || f[3] != tcpListen {
				continue
			}
			_, hexPort, ok := strings.Cut(f[1], ":")
			if !ok {
				continue
			}
			port, err := strconv.ParseUint(hexPort, 16, 16)
			if err != nil {
				continue
			}
			var inode uint64
			if len(f) >= 10 {
				inode, _ = strconv.ParseUint(f[9], 10, 64)
			}
			if !yield(uint16(port), inode) {
				return
			}
		}
	}
}

// Scan lists the pids under procRoot.
func Scan(procRoot string) ([]int, error) {
	d, err := os.Open(procRoot)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	var pids []int
	for _, n := range names {
		if pid, err := strconv.Atoi(n); err == nil && pid > 0 {
			pids = append(pids, pid)
		}
	}
	return pids, nil
}

// Stat is what sonde reads of /proc/PID/stat.
type Stat struct {
	Comm         string
	PPID         int
	KernelThread bool
}

const pfKthread = 0x00200000 // PF_KTHREAD in include/linux/sched.h

// ParseStat reads the start of /proc/PID/stat. The command name is taken
// between the first '(' and the last ')': it may hold both.
func ParseStat(b []byte) (Stat, error) {
	var st Stat
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return st, fmt.Errorf("stat: no command name in %q", b)
	}
	st.Comm = string(b[open+1 : end])
	// state ppid pgrp session tty_nr tpgid flags
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 7 {
		return st, fmt.Errorf("stat: %d fields after the command name, want at least 7", len(f))
	}
	ppid, err := strconv.Atoi(f[1])
	if err != nil || ppid < 0 {
		return st, fmt.Errorf("stat: ppid %q is not a pid", f[1])
	}
	st.PPID = ppid
	flags, err := strconv.ParseUint(f[6], 10, 64)
	if err != nil {
		return st, fmt.Errorf("stat: flags %q: %w", f[6], err)
	}
	st.KernelThread = flags&pfKthread != 0
	return st, nil
}
