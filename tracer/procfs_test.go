package tracer

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// fakeProc is a directory laid out like procfs, for the parts sonde reads:
// /proc/PID/exe, /proc/PID/environ and /proc/PID/net/tcp{,6}.
type fakeProc struct {
	t    *testing.T
	root string
}

func newFakeProc(t *testing.T) *fakeProc {
	t.Helper()
	return &fakeProc{t: t, root: t.TempDir()}
}

func (f *fakeProc) dir(pid uint32) string {
	f.t.Helper()
	d := filepath.Join(f.root, strconv.FormatUint(uint64(pid), 10))
	if err := os.MkdirAll(d, 0o755); err != nil {
		f.t.Fatal(err)
	}
	return d
}

// exe makes /proc/PID/exe a symbolic link to target, which need not exist,
// as the kernel shows it (with " (deleted)" for a removed file).
func (f *fakeProc) exe(pid uint32, target string) {
	f.t.Helper()
	if err := os.Symlink(target, filepath.Join(f.dir(pid), "exe")); err != nil {
		f.t.Fatal(err)
	}
}

// environ writes /proc/PID/environ: NUL-terminated entries.
func (f *fakeProc) environ(pid uint32, entries ...string) {
	f.t.Helper()
	var b strings.Builder
	for _, e := range entries {
		b.WriteString(e)
		b.WriteByte(0)
	}
	f.write(pid, "environ", b.String())
}

func (f *fakeProc) write(pid uint32, name, content string) {
	f.t.Helper()
	p := filepath.Join(f.dir(pid), name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		f.t.Fatal(err)
	}
}
