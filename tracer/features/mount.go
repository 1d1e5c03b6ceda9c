package features

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

const (
	tracefsPath        = "/sys/kernel/tracing"
	debugfsTracingPath = "/sys/kernel/debug/tracing"
	bpffsPath          = "/sys/fs/bpf"
	mountsFile         = "/proc/self/mounts"
)

// mount is one line of /proc/self/mounts.
type mount struct {
	Source, Point, FSType, Options string
}

func readMounts() ([]mount, error) {
	b, err := os.ReadFile(mountsFile)
	if err != nil {
		return nil, fmt.Errorf("read mounts: %w", err)
	}
	return parseMounts(b), nil
}

// parseMounts parses the fstab-like format of /proc/self/mounts, where
// blanks inside fields are escaped as octal.
func parseMounts(b []byte) []mount {
	var ms []mount
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 4 {
			continue
		}
		ms = append(ms, mount{
			Source:  unescapeMount(f[0]),
			Point:   unescapeMount(f[1]),
			FSType:  f[2],
			Options: f[3],
		})
	}
	return ms
}

func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+4 <= len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountsOf returns the mount points of the given file system type.
func mountsOf(ms []mount, fstype string) []string {
	var points []string
	for _, m := range ms {
		if m.FSType == fstype {
			points = append(points, m.Point)
		}
	}
	return points
}

// findTracefs returns where tracefs can be reached: a tracefs mount, or the
// tracing directory of a debugfs mount, which older setups use.
func findTracefs(ms []mount) (string, bool) {
	points := mountsOf(ms, "tracefs")
	for _, p := range points {
		if p == tracefsPath {
			return p, true
		}
	}
	if len(points) > 0 {
		return points[0], true
	}
	for _, p := range mountsOf(ms, "debugfs") {
		tracing := filepath.Join(p, "tracing")
		if fi, err := os.Stat(tracing); err == nil && fi.IsDir() {
			return tracing, true
		}
	}
	return "", false
}

// EnsureTracefs makes sure tracefs is mounted, mounting it at
// /sys/kernel/tracing when no tracefs is mounted anywhere and debugfs offers
// no tracing directory either. It returns whether it mounted tracefs and
// where tracefs is. Calling it again is harmless.
func EnsureTracefs() (mounted bool, path string, err error) {
	ms, err := readMounts()
	if err != nil {
		return false, "", err
	}
	if p, ok := findTracefs(ms); ok {
		return false, p, nil
	}
	if err := mountFS("tracefs", tracefsPath, ""); err != nil {
		return false, "", err
	}
	return true, tracefsPath, nil
}

// EnsureBPFFS makes sure a BPF file system is mounted at path, creating the
// directory when needed; an empty path means /sys/fs/bpf. A path inside a
// mounted BPF file system counts as mounted. It returns whether it mounted
// the file system.
func EnsureBPFFS(path string) (mounted bool, err error) {
	if path == "" {
		path = bpffsPath
	}
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return false, nil
	}
	if err := os.MkdirAll(path, 0o700); err != nil {
		return false, fmt.Errorf("create bpffs mount point %s: %w", path, err)
	}
	// Pinned objects need not be visible to every user.
	if err := mountFS("bpf", path, "mode=0700"); err != nil {
		return false, err
	}
	return true, nil
}

func mountFS(fstype, path, data string) error {
	err := unix.Mount(fstype, path, fstype, 0, data)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, unix.EPERM):
		return fmt.Errorf("mount %s at %s: %w (needs CAP_SYS_ADMIN)", fstype, path, err)
	case errors.Is(err, unix.ENODEV):
		return fmt.Errorf("mount %s at %s: %w (kernel without %s)", fstype, path, err, fstype)
	default:
		return fmt.Errorf("mount %s at %s: %w", fstype, path, err)
	}
}

// Cgroup2Path returns where the cgroup v2 hierarchy is mounted. A program
// attached to its root sees every process's sockets.
func Cgroup2Path() (string, error) {
	ms, err := readMounts()
	if err != nil {
		return "", err
	}
	points := mountsOf(ms, "cgroup2")
	if len(points) == 0 {
		return "", errors.New("no cgroup2 mount")
	}
	return points[0], nil
}
