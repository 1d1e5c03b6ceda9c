package e2e

import (
	"encoding/json"
	"os/exec"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
)

// psRow is one element of `sonde ps --json`.
type psRow struct {
	PID        int      `json:"pid"`
	Service    string   `json:"service"`
	Exe        string   `json:"exe"`
	Language   string   `json:"language"`
	GoVersion  string   `json:"go_version"`
	TLS        string   `json:"tls"`
	TLSPath    string   `json:"tls_path"`
	TLSVersion string   `json:"tls_version"`
	Traced     bool     `json:"traced"`
	Reason     string   `json:"reason"`
	Capture    string   `json:"capture"`
	Notes      []string `json:"notes"`
}

// sonde ps names each process's runtime and TLS library, and gives the
// same verdict, with its reason, that sonde trace would act on.
func TestPsReportsRuntimeAndSelection(t *testing.T) {
	// Root: the facts ps reads (exe, maps, environ, fds) of processes of
	// any user need it, as sonde trace does.
	testutil.RequireRoot(t)
	python := testutil.RequireTool(t, "python3")
	srv := startGoServer(t, "OTEL_SERVICE_NAME=ps-e2e")
	py := startProc(t, nil, python, "-u", "-c", "import ssl,time; print('ready', flush=True); time.sleep(60)")
	deadline := time.Now().Add(15 * time.Second)
	for !strings.Contains(py.stdout.String(), "ready") {
		if time.Now().After(deadline) || !py.alive() {
			t.Fatalf("python did not import ssl: %s", py.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}

	rule := "port=" + srv.port()
	out, err := exec.Command(bins.sonde, "ps", "--json", "--select", rule).Output()
	if err != nil {
		t.Fatalf("sonde ps: %v\n%s", err, out)
	}
	var rows []psRow
	if err := json.Unmarshal(out, &rows); err != nil {
		t.Fatalf("not a JSON array: %v\n%s", err, out)
	}
	find := func(pid int) psRow {
		t.Helper()
		for _, r := range rows {
			if r.PID == pid {
				return r
			}
		}
		t.Fatalf("pid %d not listed:\n%s", pid, out)
		return psRow{}
	}

	g := find(srv.pid())
	t.Logf("go server: %+v", g)
	if g.Language != "go" || g.GoVersion != runtime.Version() || g.Service != "ps-e2e" {
		t.Errorf("go server: language %q go %q service %q; want go %s ps-e2e", g.Language, g.GoVersion, g.Service, runtime.Version())
	}
	if !g.Traced || g.Reason != "selected by rule "+rule {
		t.Errorf("go server: traced %v, %q; want selected by rule %s", g.Traced, g.Reason, rule)
	}
	// The Go probes cover its server side, HTTP/2, its client (the /call
	// handler) and goroutines.
	if g.TLS != "crypto/tls" || g.Capture != "sockets; go probes: server, h2, client, h2client, goroutines" {
		t.Errorf("go server: tls %q capture %q", g.TLS, g.Capture)
	}

	p := find(py.pid())
	t.Logf("python: %+v", p)
	if p.Language != "python" {
		t.Errorf("python: language %q (exe %s)", p.Language, p.Exe)
	}
	if p.TLS != "libssl" || p.TLSVersion == "" || !strings.Contains(p.TLSPath, "libssl.so") {
		t.Errorf("python: tls %q version %q path %q; want libssl with a version", p.TLS, p.TLSVersion, p.TLSPath)
	}
	if p.Traced || !strings.Contains(p.Reason, "does not listen on port "+srv.port()) || p.Capture != "none" {
		t.Errorf("python: traced %v, %q, capture %q; want untraced, naming port %s", p.Traced, p.Reason, p.Capture, srv.port())
	}
}
