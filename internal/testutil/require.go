// Package testutil holds the requirement helpers of sonde's tests: the one
// place that decides whether a test may run on this machine.
//
// A test whose requirement is missing is skipped on a developer's machine,
// but fails in CI (CI=true): CI runs on the platform sonde is built for, so
// a missing requirement there is a broken machine or a broken setup, and a
// skip would hide it.
package testutil

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"

	"github.com/sondehq/sonde/tracer/features"
)

// TB is the part of testing.TB the helpers use; *testing.T and *testing.B
// satisfy it.
type TB interface {
	Helper()
	Skipf(format string, args ...any)
	Fatalf(format string, args ...any)
}

// Unmet ends a test whose requirement is missing: it fails the test when the
// environment variable CI is "true" and skips it otherwise, with the same
// reason either way.
func Unmet(tb TB, format string, args ...any) {
	tb.Helper()
	reason := fmt.Sprintf(format, args...)
	if os.Getenv("CI") == "true" {
		tb.Fatalf("requirement not met in CI: %s", reason)
		return
	}
	tb.Skipf("requirement not met: %s", reason)
}

// RequireRoot requires the effective user ID 0.
func RequireRoot(tb TB) {
	tb.Helper()
	if euid := os.Geteuid(); euid != 0 {
		Unmet(tb, "needs root, running as uid %d", euid)
	}
}

// haveBPF is the outcome of loading a trivial tracing program, which needs
// CAP_BPF and CAP_PERFMON. It is worked out once per test binary.
var haveBPF = sync.OnceValue(func() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.TracePoint,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		return err
	}
	return prog.Close()
})

// RequireBPF requires that a trivial tracing program loads.
func RequireBPF(tb TB) {
	tb.Helper()
	err := haveBPF()
	if errors.Is(err, unix.EPERM) {
		// cilium/ebpf blames RLIMIT_MEMLOCK for EPERM, which 6.x kernels do
		// not use: name the real cause.
		Unmet(tb, "cannot load a BPF program: %v (needs CAP_BPF and CAP_PERFMON, or root)", unix.EPERM)
	} else if err != nil {
		Unmet(tb, "cannot load a BPF program: %v", err)
	}
}

// haveFeature runs the named check of features.Probe once per test binary.
// Probe mounts tracefs when it is missing, just as sonde does.
var haveFeature = func() func(name string) error {
	var mu sync.Mutex
	results := map[string]error{}
	return func(name string) error {
		mu.Lock()
		defer mu.Unlock()
		if err, ok := results[name]; ok {
			return err
		}
		var err error
		r := features.Probe(context.Background(), &features.ProbeOptions{Checks: []string{name}})
		if c, ok := r.Find(name); !ok {
			err = fmt.Errorf("no %s check", name)
		} else if c.Status != features.OK {
			err = fmt.Errorf("%s %s: %s", name, c.Status, c.Detail)
		}
		results[name] = err
		return err
	}
}()

// RequireTracepoints requires that a program attaches to the syscall
// tracepoint sys_enter_write and fires. It mounts tracefs when missing.
func RequireTracepoints(tb TB) {
	tb.Helper()
	if err := haveFeature(features.Tracepoints); err != nil {
		Unmet(tb, "%v", err)
	}
}

// RequireUprobes requires that a uprobe attaches to the test binary and
// fires.
func RequireUprobes(tb TB) {
	tb.Helper()
	if err := haveFeature(features.Uprobes); err != nil {
		Unmet(tb, "%v", err)
	}
}

// RequireTool requires an executable in PATH and returns its path.
func RequireTool(tb TB, name string) string {
	tb.Helper()
	path, err := exec.LookPath(name)
	if err != nil {
		Unmet(tb, "needs %s in PATH: %v", name, err)
		return ""
	}
	return path
}
