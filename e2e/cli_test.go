package e2e

import (
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"testing"

	"github.com/sondehq/sonde/internal/testutil"
)

// An unprivileged run fails at once with a message naming what is missing.
func TestUnprivilegedRunSaysWhatIsMissing(t *testing.T) {
	testutil.RequireRoot(t) // to drop privileges, one needs them
	setpriv := testutil.RequireTool(t, "setpriv")
	srv := startGoServer(t)
	out, err := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all",
		bins.sonde, "trace", "--pid", fmt.Sprint(srv.pid())).CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("want exit status 1, got %v:\n%s", err, out)
	}
	for _, want := range []string{"CAP_BPF", "CAP_PERFMON", "root"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("message does not name %s:\n%s", want, out)
		}
	}
}

// After sonde exits on SIGINT no program of its stays attached or loaded.
func TestNothingLeftAttachedAfterExit(t *testing.T) {
	bpftool := testutil.RequireTool(t, "bpftool")
	srv := startGoServer(t)
	s := startSonde(t, nil, "--pid", fmt.Sprint(srv.pid()))
	during := sondePrograms(t, bpftool)
	var ready struct{ Probes int }
	var line string
	for _, l := range strings.Split(s.stderr.String(), "\n") {
		if strings.Contains(l, `"msg":"tracing"`) {
			line = l
			break
		}
	}
	if err := json.Unmarshal([]byte(line), &ready); err != nil || ready.Probes == 0 {
		t.Fatalf("cannot read the probe count from %q: %v", line, err)
	}
	if len(during) < ready.Probes {
		t.Fatalf("sonde says %d probes are attached, bpftool shows %d programs: %v", ready.Probes, len(during), during)
	}
	// With the socket-layer hooks, the default on this kernel, sonde
	// attaches no syscall tracepoint: one would put every syscall of every
	// process on the kernel's tracing slow path.
	var attached []string
	for _, l := range strings.Split(run(t, bpftool, "perf", "list"), "\n") {
		if strings.HasPrefix(l, fmt.Sprintf("pid %d ", s.pid())) {
			attached = append(attached, l)
		}
	}
	hooks := strings.Join(attached, "\n")
	if !strings.Contains(hooks, "sock_recv_length") || strings.Contains(hooks, "sys_exit") || strings.Contains(hooks, "sys_enter") {
		t.Errorf("sonde's tracepoints are not the socket layer's alone:\n%s", hooks)
	}
	s.stop(t)
	// By id: another sonde running on the machine must not confuse this.
	after := sondePrograms(t, bpftool)
	for id, name := range during {
		if _, ok := after[id]; ok {
			t.Errorf("program %d (%s) still loaded after exit", id, name)
		}
	}
	if out := run(t, bpftool, "perf", "list"); strings.Contains(out, fmt.Sprintf("pid %d ", s.pid())) {
		t.Errorf("perf events still attached after exit:\n%s", out)
	}
}

// sondePrograms lists loaded programs, by id, with the names sonde gives
// its own.
func sondePrograms(t *testing.T, bpftool string) map[int]string {
	t.Helper()
	var progs []struct {
		ID   int    `json:"id"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal([]byte(run(t, bpftool, "-j", "prog", "show")), &progs); err != nil {
		t.Fatal(err)
	}
	out := map[int]string{}
	for _, p := range progs {
		if strings.HasPrefix(p.Name, "exit_") || strings.HasPrefix(p.Name, "sock_") || strings.HasPrefix(p.Name, "process_") || strings.HasPrefix(p.Name, "inject_") {
			out[p.ID] = p.Name
		}
	}
	return out
}

// sonde doctor reports the facts of this platform (PLATFORM.md).
func TestDoctorReportsPlatform(t *testing.T) {
	requireTracing(t)
	out, err := exec.Command(bins.sonde, "doctor", "--json").Output()
	if err != nil {
		t.Fatalf("sonde doctor: %v", err)
	}
	var report struct {
		Checks []struct{ Name, Status, Impact string }
	}
	if err := json.Unmarshal(out, &report); err != nil {
		t.Fatalf("doctor --json: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, c := range report.Checks {
		got[c.Name] = c.Status
		if c.Status == "missing" && c.Impact == "" {
			t.Errorf("%s is missing but doctor does not say what that costs", c.Name)
		}
	}
	for name, want := range map[string]string{
		"kprobes": "missing", "fentry": "missing", "probe_write_user": "missing",
		"tracepoints": "ok", "socket_tracepoints": "ok", "uprobes": "ok", "btf": "ok", "ringbuf": "ok",
		"sockops": "ok", "sk_msg": "ok", "cgroup2": "ok", "capabilities": "ok",
	} {
		if got[name] != want {
			t.Errorf("doctor says %s is %q, want %q", name, got[name], want)
		}
	}
}

// `sonde demo`, the README's first command, shows real traces of real
// processes in the terminal, with no collector.
func TestDemoShowsTraces(t *testing.T) {
	requireTracing(t)
	testutil.RequireTool(t, "python3")
	var stderr strings.Builder
	cmd := exec.Command(bins.sonde, "demo", "--duration", "4s")
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("sonde demo: %v\n%s\n%s", err, out, stderr.String())
	}
	if !strings.Contains(stderr.String(), "parse_errors_total=0 ") {
		t.Errorf("the demo's clean traffic gave parse errors:\n%s", tail(stderr.String(), 5))
	}
	text := string(out)
	for _, want := range []string{
		"SERVER GET  200", "[inventory pid ", "[catalog pid ", "[frontend pid ",
		"CLIENT GET  200", "[loadgen pid ", "/checkout", "/stock", "/index.html",
		// The catalog serves HTTPS: the frontend's call, and the catalog's
		// span read through OpenSSL.
		"https://127.0.0.1:",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("demo output lacks %q:\n%s", want, tail(text, 30))
		}
	}
	if strings.Contains(text, "s3cr3t") || strings.Contains(text, "never-exported") {
		t.Errorf("demo output shows a secret:\n%s", text)
	}
}
