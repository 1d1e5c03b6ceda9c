package features_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/sondehq/sonde/internal/testutil"
	"github.com/sondehq/sonde/tracer/features"
)

func report(t *testing.T, r features.Report) {
	t.Helper()
	var b strings.Builder
	if _, err := r.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", b.String())
}

func wantCheck(t *testing.T, r features.Report, name string, status features.Status, detail string) {
	t.Helper()
	c, ok := r.Find(name)
	if !ok {
		t.Errorf("no %s check", name)
		return
	}
	if c.Status != status || !strings.Contains(c.Detail, detail) {
		t.Errorf("%s = %s %q, want %s with %q", name, c.Status, c.Detail, status, detail)
	}
}

// The facts of PLATFORM.md: every development machine and CI runner is this
// kind of VM, so Probe must find exactly them.
func TestProbePlatform(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBPF(t)

	r := features.Probe(context.Background(), nil)
	report(t, r)

	wantCheck(t, r, features.Capabilities, features.OK, "all capabilities but CAP_SYS_RESOURCE")
	wantCheck(t, r, features.BTF, features.OK, "/sys/kernel/btf/vmlinux")
	// tracefs was mounted already, or Probe mounted it for the tracepoints.
	if c, _ := r.Find(features.Tracefs); c.Status != features.OK && !strings.Contains(c.Detail, "Probe mounted it at /sys/kernel/tracing") {
		t.Errorf("tracefs = %s %q", c.Status, c.Detail)
	}
	wantCheck(t, r, features.Cgroup2, features.OK, "/sys/fs/cgroup/unified")
	wantCheck(t, r, features.Tracepoints, features.OK, "sys_enter_write attached and fired")
	wantCheck(t, r, features.RawTracepoints, features.OK, "sys_enter and sys_exit attached and fired")
	wantCheck(t, r, features.SocketTracepoints, features.OK, "sock_send_length and sock_recv_length attached and fired")
	wantCheck(t, r, features.Kprobes, features.Missing, "kprobe programs load, but attaching to vfs_read fails")
	wantCheck(t, r, features.Fentry, features.Missing, "operation not permitted")
	wantCheck(t, r, features.Uprobes, features.OK, "and fired")
	wantCheck(t, r, features.Uretprobes, features.OK, "attached")
	wantCheck(t, r, features.RingBuf, features.OK, "")
	wantCheck(t, r, features.ProbeWriteUser, features.Missing, "bpf_probe_write_user is rejected")
	wantCheck(t, r, features.SockOps, features.OK, "attaches to a cgroup")
	wantCheck(t, r, features.SkMsg, features.OK, "attaches to a sockhash")
	wantCheck(t, r, features.MsgPushData, features.OK, "")

	if !r.Missing(features.Kprobes) || r.Missing(features.Tracepoints) || r.Missing("no-such-check") {
		t.Errorf("Missing: kprobes %v, tracepoints %v, no-such-check %v",
			r.Missing(features.Kprobes), r.Missing(features.Tracepoints), r.Missing("no-such-check"))
	}
	seen := map[string]bool{}
	for _, c := range r.Checks {
		if seen[c.Name] {
			t.Errorf("check %s reported twice", c.Name)
		}
		seen[c.Name] = true
		if c.Impact == "" || c.Detail == "" {
			t.Errorf("check %s lacks detail or impact: %+v", c.Name, c)
		}
	}
	if len(seen) != 18 {
		t.Errorf("got %d checks, want 18", len(seen))
	}
}

// Probe leaves nothing behind: no file descriptor (programs, maps, links and
// perf events are all descriptors) and no cgroup of its own.
func TestProbeCleansUp(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireBPF(t)

	// The first run fills cilium/ebpf's caches of kernel facts.
	features.Probe(context.Background(), nil)
	before := openFDs(t)
	r := features.Probe(context.Background(), nil)
	after := openFDs(t)
	if before != after {
		t.Errorf("%d descriptors open before Probe, %d after", before, after)
	}

	c, _ := r.Find(features.Cgroup2)
	cg := strings.Fields(strings.TrimPrefix(c.Detail, "mounted at "))[0]
	left, err := filepath.Glob(filepath.Join(cg, "sonde-probe-*"))
	if err != nil || len(left) > 0 {
		t.Errorf("cgroups left behind: %v %v", left, err)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func TestProbeOptions(t *testing.T) {
	r := features.Probe(context.Background(), &features.ProbeOptions{
		Checks:  []string{features.Cgroup2, features.BTF},
		NoMount: true,
	})
	if len(r.Checks) != 2 || r.Checks[0].Name != features.BTF || r.Checks[1].Name != features.Cgroup2 {
		t.Errorf("checks = %+v, want btf then cgroup2", r.Checks)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	r = features.Probe(ctx, &features.ProbeOptions{NoMount: true})
	for _, c := range r.Checks {
		if c.Status != features.Unknown || c.Detail != "not run: context canceled" {
			t.Errorf("after cancel: %+v", c)
		}
	}
	if len(r.Checks) != 18 {
		t.Errorf("got %d checks after cancel, want 18", len(r.Checks))
	}
}

func TestEnsureTracefs(t *testing.T) {
	testutil.RequireRoot(t)

	_, first, err := features.EnsureTracefs()
	if err != nil {
		t.Fatal(err)
	}
	mounts := countMounts(t, "tracefs")
	mounted, again, err := features.EnsureTracefs()
	if err != nil {
		t.Fatal(err)
	}
	if mounted || again != first {
		t.Errorf("second call: mounted %v at %q, first found %q", mounted, again, first)
	}
	if n := countMounts(t, "tracefs"); n != mounts {
		t.Errorf("tracefs mounts went from %d to %d", mounts, n)
	}
	if _, err := os.Stat(filepath.Join(again, "events", "syscalls", "sys_enter_write", "id")); err != nil {
		t.Errorf("tracefs at %s has no syscall tracepoints: %v", again, err)
	}
}

func countMounts(t *testing.T, fstype string) int {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == fstype {
			n++
		}
	}
	return n
}

func TestEnsureBPFFS(t *testing.T) {
	testutil.RequireRoot(t)

	// A private mount point keeps the test away from /sys/fs/bpf.
	dir := filepath.Join(t.TempDir(), "bpffs")
	mounted, err := features.EnsureBPFFS(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	if !mounted {
		t.Fatalf("EnsureBPFFS(%s) did not mount", dir)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil || st.Type != unix.BPF_FS_MAGIC {
		t.Fatalf("%s is not a bpffs: type %#x, %v", dir, st.Type, err)
	}
	if mounted, err := features.EnsureBPFFS(dir); mounted || err != nil {
		t.Errorf("second call: mounted %v, %v", mounted, err)
	}
}

// childResult is what a test's child process saw.
type childResult struct {
	CheckPrivileges string
	Typed           bool
	EnsureBPFFS     string
	Report          features.Report
	TracefsMounts   []int // tracefs mounts at each step of the child
}

// As user nobody without capabilities: CheckPrivileges names every missing
// capability, mounting fails with the privilege it needs, and Probe blames
// no kernel feature for what is a lack of privileges.
func TestUnprivileged(t *testing.T) {
	if testutil.IsChild(t.Name()) {
		var res childResult
		err := features.CheckPrivileges()
		var perr *features.PrivilegeError
		res.Typed = errors.As(err, &perr)
		res.CheckPrivileges = fmt.Sprint(err)
		dir := filepath.Join(os.TempDir(), fmt.Sprintf("sonde-bpffs-%d", os.Getpid()))
		_, err = features.EnsureBPFFS(dir)
		os.Remove(dir)
		res.EnsureBPFFS = strings.ReplaceAll(fmt.Sprint(err), dir, "DIR")
		res.Report = features.Probe(context.Background(), nil)
		b, _ := json.Marshal(res)
		fmt.Printf("RESULT %s\n", b)
		return
	}

	testutil.RequireRoot(t)
	// With tracefs mounted, the child lacks the right to read it rather
	// than to mount it.
	if _, _, err := features.EnsureTracefs(); err != nil {
		t.Fatal(err)
	}
	res := runChild(t, testutil.Nobody...)
	report(t, res.Report)

	const want = "sonde trace needs CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root); " +
		"tracefs is not readable without CAP_DAC_READ_SEARCH; " +
		"missing: CAP_BPF (create maps and load programs), CAP_PERFMON (load and attach tracepoint programs), " +
		"CAP_SYS_PTRACE (read /proc/PID/exe and /proc/PID/fd of other processes), " +
		"CAP_DAC_READ_SEARCH (read /proc/PID/environ and /proc/PID/fd of other users' processes); run as root or grant them"
	if res.CheckPrivileges != want || !res.Typed {
		t.Errorf("CheckPrivileges = %q (typed %v), want %q", res.CheckPrivileges, res.Typed, want)
	}
	if want := "mount bpf at DIR: operation not permitted (needs CAP_SYS_ADMIN)"; res.EnsureBPFFS != want {
		t.Errorf("EnsureBPFFS = %q, want %q", res.EnsureBPFFS, want)
	}

	wantCheck(t, res.Report, features.Capabilities, features.Missing, "effective: no capabilities")
	wantCheck(t, res.Report, features.BTF, features.OK, "")
	for _, name := range []string{features.Tracepoints, features.RawTracepoints, features.SocketTracepoints, features.Kprobes,
		features.Fentry, features.Uprobes, features.Uretprobes, features.RingBuf,
		features.ProbeWriteUser, features.SockOps, features.SkMsg, features.MsgPushData} {
		wantCheck(t, res.Report, name, features.Unknown, "")
	}
}

// Root without CAP_BPF and CAP_SYS_ADMIN: only CAP_BPF is reported missing,
// since CAP_PERFMON is still held.
func TestCheckPrivilegesWithoutBPF(t *testing.T) {
	if testutil.IsChild(t.Name()) {
		res := childResult{CheckPrivileges: fmt.Sprint(features.CheckPrivileges())}
		b, _ := json.Marshal(res)
		fmt.Printf("RESULT %s\n", b)
		return
	}

	testutil.RequireRoot(t)
	if err := features.CheckPrivileges(); err != nil {
		t.Fatalf("as root: %v", err)
	}
	if _, _, err := features.EnsureTracefs(); err != nil {
		t.Fatal(err)
	}
	res := runChild(t, "setpriv", "--inh-caps=-all", "--bounding-set=-bpf,-sys_admin")
	const want = "sonde trace needs CAP_BPF, CAP_PERFMON, CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root); " +
		"missing: CAP_BPF (create maps and load programs); run as root or grant them"
	if res.CheckPrivileges != want {
		t.Errorf("CheckPrivileges = %q, want %q", res.CheckPrivileges, want)
	}
}

func runChild(t *testing.T, wrapper ...string) childResult {
	t.Helper()
	out, err := testutil.Rerun(t, t.Name(), wrapper...)
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	i := bytes.Index(out, []byte("RESULT "))
	if i < 0 {
		t.Fatalf("child printed no result:\n%s", out)
	}
	line, _, _ := bytes.Cut(out[i+len("RESULT "):], []byte("\n"))
	var res childResult
	if err := json.Unmarshal(line, &res); err != nil {
		t.Fatalf("child result %s: %v", line, err)
	}
	return res
}

// In an executable with a symbol table, as sonde's own, the uprobe checks
// attach by symbol. go test strips its binaries, so this builds one.
func TestUprobeBySymbol(t *testing.T) {
	testutil.RequireRoot(t)
	testutil.RequireUprobes(t)
	gobin := testutil.RequireTool(t, "go")

	bin := filepath.Join(t.TempDir(), "probe")
	build := exec.Command(gobin, "build", "-o", bin, "./testdata/probe")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	out, err := exec.Command(bin).CombinedOutput()
	if err != nil {
		t.Fatalf("run: %v\n%s", err, out)
	}
	const sym = "github.com/sondehq/sonde/tracer/features.uprobeTarget"
	for _, want := range []string{
		"uprobes\tok\tattached to " + sym + " and fired",
		"uretprobes\tok\tattached to " + sym,
	} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// A fresh machine has no tracefs: in a mount namespace of its own without
// one, Probe limited to other checks mounts nothing, and a full Probe
// mounts tracefs and attaches tracepoints.
func TestProbeWithoutTracefs(t *testing.T) {
	if testutil.IsChild(t.Name()) {
		res := childResult{TracefsMounts: []int{countMounts(t, "tracefs")}}
		features.Probe(context.Background(), &features.ProbeOptions{Checks: []string{features.BTF, features.Uprobes}})
		res.TracefsMounts = append(res.TracefsMounts, countMounts(t, "tracefs"))
		res.Report = features.Probe(context.Background(), nil)
		res.TracefsMounts = append(res.TracefsMounts, countMounts(t, "tracefs"))
		b, _ := json.Marshal(res)
		fmt.Printf("RESULT %s\n", b)
		return
	}

	testutil.RequireBPF(t)
	// The namespace and its mounts vanish with the child.
	const unmountTracefs = `for m in $(awk '$3 == "tracefs" { print $2 }' /proc/self/mounts); do umount -l "$m" || exit; done; exec "$@"`
	res := runChild(t, "unshare", "--mount", "--propagation", "private", "sh", "-c", unmountTracefs, "sh")
	report(t, res.Report)

	if want := []int{0, 0, 1}; !slices.Equal(res.TracefsMounts, want) {
		t.Errorf("tracefs mounts at start, after a limited Probe, after a full Probe = %v, want %v", res.TracefsMounts, want)
	}
	wantCheck(t, res.Report, features.Tracefs, features.Missing, "was not mounted; Probe mounted it at /sys/kernel/tracing")
	wantCheck(t, res.Report, features.Tracepoints, features.OK, "attached and fired")
	wantCheck(t, res.Report, features.Kprobes, features.Missing, "kprobe programs load")
}
