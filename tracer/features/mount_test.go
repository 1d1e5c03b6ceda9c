package features

import (
	"os"
	"path/filepath"
	"testing"
)

func TestParseMounts(t *testing.T) {
	const text = `sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0
tracefs /mnt/my\040tracing tracefs rw,relatime 0 0
tracefs /sys/kernel/tracing tracefs rw,relatime 0 0
short line
`
	ms := parseMounts([]byte(text))
	if len(ms) != 4 {
		t.Fatalf("got %d mounts, want 4: %+v", len(ms), ms)
	}
	if got := ms[2].Point; got != "/mnt/my tracing" {
		t.Errorf("escaped mount point = %q", got)
	}
	if got := mountsOf(ms, "cgroup2"); len(got) != 1 || got[0] != "/sys/fs/cgroup/unified" {
		t.Errorf("cgroup2 mounts = %q", got)
	}
	// The canonical mount wins over an earlier one elsewhere.
	if p, ok := findTracefs(ms); !ok || p != "/sys/kernel/tracing" {
		t.Errorf("findTracefs = %q, %v", p, ok)
	}
	if p, ok := findTracefs(ms[2:3]); !ok || p != "/mnt/my tracing" {
		t.Errorf("findTracefs of one mount = %q, %v", p, ok)
	}
	if p, ok := findTracefs(ms[:2]); ok {
		t.Errorf("findTracefs without tracefs = %q", p)
	}
}

// On older systems tracefs is reached through debugfs.
func TestFindTracefsInDebugfs(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "tracing"), 0o700); err != nil {
		t.Fatal(err)
	}
	ms := []mount{{Source: "debugfs", Point: dir, FSType: "debugfs"}}
	if p, ok := findTracefs(ms); !ok || p != filepath.Join(dir, "tracing") {
		t.Errorf("findTracefs = %q, %v", p, ok)
	}
	ms[0].Point = t.TempDir()
	if p, ok := findTracefs(ms); ok {
		t.Errorf("debugfs without tracing dir: findTracefs = %q", p)
	}
}
