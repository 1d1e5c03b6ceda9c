package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
	"github.com/sondehq/sonde/tracer/features"
)

// setprivCaps spells a capability set for setpriv: "+bpf,+perfmon".
func setprivCaps(s features.CapSet) string {
	var parts []string
	for _, n := range s.Names() {
		parts = append(parts, "+"+strings.ToLower(strings.TrimPrefix(n, "CAP_")))
	}
	return strings.Join(parts, ",")
}

// dropTo returns the setpriv prefix that keeps uid 0 but bounds every
// capability to caps, as a container with `capabilities: drop: [ALL], add:
// [...]` does: root's permitted and effective sets become the bounding set
// at exec.
func dropTo(setpriv string, caps features.CapSet) []string {
	return []string{setpriv, "--bounding-set=-all," + setprivCaps(caps), "--inh-caps=-all"}
}

// startGoServerAs starts testdata/goserver as user nobody, from a copy in a
// directory nobody may read, so that reading its /proc files takes the
// capabilities a node agent needs for other users' processes.
func startGoServerAs(t *testing.T, setpriv string, env ...string) (*goServer, string) {
	t.Helper()
	dir, err := os.MkdirTemp("", "sonde-nobody-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	exe := filepath.Join(dir, "goserver")
	b, err := os.ReadFile(bins.goserver)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	// setpriv execs goserver: the pid is the server's.
	p := startProc(t, env, setpriv, append(append([]string{}, testutil.Nobody[1:]...), exe)...)
	waitFor(t, 10*time.Second, "goserver to listen", func() bool { return strings.Contains(p.stdout.String(), "\n") })
	line, _, _ := strings.Cut(p.stdout.String(), "\n")
	addr, ok := strings.CutPrefix(line, "listening ")
	if !ok {
		t.Fatalf("goserver said %q", line)
	}
	return &goServer{proc: p, addr: addr}, exe
}

// As root with exactly features.TraceCaps and nothing else (tracefs
// mounted, as with a hostPath mount), sonde traces a server of another user
// with every attribute: the service name from the server's environment
// (CAP_DAC_READ_SEARCH) and its executable path (CAP_SYS_PTRACE).
func TestLeastPrivilege(t *testing.T) {
	testutil.RequireRoot(t)
	setpriv := testutil.RequireTool(t, "setpriv")
	curl := testutil.RequireTool(t, "curl")
	requireTracing(t) // mounts tracefs when missing
	srv, exe := startGoServerAs(t, setpriv, "OTEL_SERVICE_NAME=least-priv", "OTEL_RESOURCE_ATTRIBUTES=team=sre")
	s := startSondeUnder(t, dropTo(setpriv, features.TraceCaps()), nil, "--pid", fmt.Sprint(srv.pid()))
	if got := capEffOf(t, s.pid()); got != features.TraceCaps() {
		t.Fatalf("sonde runs with %v, want exactly %v", got.Names(), features.TraceCaps().Names())
	}
	run(t, curl, "-sS", "-o", "/dev/null", "-A", "least/1.0", "http://"+srv.addr+"/hello?x=1")
	run(t, curl, "-sS", "-o", "/dev/null", "http://"+srv.addr+"/status/503")
	r := s.stop(t)
	wantNoParseErrors(t, r)
	// Without CAP_SYS_ADMIN the kernel refuses uprobes: sonde says so once,
	// tries none, and the Go server is read from its sockets.
	if n := s.countLogs("no CAP_SYS_ADMIN: the kernel refuses uprobes"); n != 1 {
		t.Errorf("sonde said %d times that uprobes are refused, want once", n)
	}
	if r.stat("attach_failures") != 0 || r.stat("go_spans") != 0 || r.stat("ssl_libraries") != 0 {
		t.Errorf("uprobes tried without CAP_SYS_ADMIN: %v", r.stats)
	}
	if len(r.spans) != 2 {
		t.Fatalf("want 2 spans, got %d:\n%v", len(r.spans), r.spans)
	}
	ok := findSpan(t, r.spans, "url.path", "/hello")
	wantAttrs(t, ok, map[string]string{
		"http.request.method":       "GET",
		"http.response.status_code": "200",
		"url.query":                 "x=1",
		"server.port":               srv.port(),
		"client.address":            "127.0.0.1",
		"user_agent.original":       "least/1.0",
	})
	if ok.Kind != "server" {
		t.Errorf("kind %s, want server", ok.Kind)
	}
	bad := findSpan(t, r.spans, "url.path", "/status/503")
	if bad.Status.Code != "Error" {
		t.Errorf("a 503 fails the server span: %s", bad)
	}
	for _, sp := range r.spans {
		for k, want := range map[string]string{
			"service.name":            "least-priv", // CAP_DAC_READ_SEARCH: environ of another user
			"team":                    "sre",
			"process.executable.path": exe, // CAP_SYS_PTRACE: /proc/PID/exe
			"process.pid":             fmt.Sprint(srv.pid()),
		} {
			if got := sp.res(k); got != want {
				t.Errorf("resource %s = %q, want %q: %s", k, got, want, sp)
			}
		}
	}
}

// capEffOf reads the effective capabilities of a process.
func capEffOf(t *testing.T, pid int) features.CapSet {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "CapEff:"); ok {
			var n uint64
			fmt.Sscanf(strings.TrimSpace(v), "%x", &n)
			return features.CapSet(n)
		}
	}
	t.Fatalf("no CapEff for %d", pid)
	return 0
}

// Without any one capability of the set, sonde exits at once with status 1
// and a message naming it, instead of tracing with half the facts.
func TestLeastPrivilegeEachCapabilityNeeded(t *testing.T) {
	testutil.RequireRoot(t)
	setpriv := testutil.RequireTool(t, "setpriv")
	requireTracing(t)
	srv := startGoServer(t)
	for _, c := range features.TraceCaps().Caps() {
		t.Run(c.String(), func(t *testing.T) {
			caps := features.TraceCaps() &^ (1 << c)
			out, err := runBounded(t, 20*time.Second, append(dropTo(setpriv, caps),
				bins.sonde, "trace", "--pid", fmt.Sprint(srv.pid()), "--output", "json")...)
			wantRefused(t, out, err, c)
		})
	}
}

// When tracefs is not mounted, the set is not enough: CAP_SYS_ADMIN is named
// as missing; with it added, sonde mounts tracefs and traces. Both run in a
// private mount namespace without tracefs, so the machine keeps its mounts.
func TestLeastPrivilegeMountsTracefs(t *testing.T) {
	testutil.RequireRoot(t)
	setpriv := testutil.RequireTool(t, "setpriv")
	unshare := testutil.RequireTool(t, "unshare")
	curl := testutil.RequireTool(t, "curl")
	requireTracing(t)
	// In a new mount namespace, unmount every tracefs and debugfs, deepest
	// first, then exec the rest of the command line.
	noTracefs := []string{unshare, "--mount", "--propagation", "private", "sh", "-c",
		`for m in $(awk '$3=="tracefs"||$3=="debugfs"{print $2}' /proc/self/mounts | sort -r); do umount "$m" || exit 3; done; exec "$@"`, "sh"}

	t.Run("without CAP_SYS_ADMIN", func(t *testing.T) {
		srv := startGoServer(t)
		out, err := runBounded(t, 20*time.Second, append(append(noTracefs, dropTo(setpriv, features.TraceCaps())...),
			bins.sonde, "trace", "--pid", fmt.Sprint(srv.pid()), "--output", "json")...)
		wantRefused(t, out, err, features.CapSysAdmin)
		if !strings.Contains(out, "mount tracefs") {
			t.Errorf("the message does not say CAP_SYS_ADMIN is for mounting tracefs:\n%s", out)
		}
	})
	t.Run("with CAP_SYS_ADMIN", func(t *testing.T) {
		srv := startGoServer(t, "OTEL_SERVICE_NAME=mounted")
		prefix := append(noTracefs, dropTo(setpriv, features.TraceCaps()|features.MountCaps())...)
		s := startSondeUnder(t, prefix, nil, "--pid", fmt.Sprint(srv.pid()))
		if s.countLogs("mounted tracefs") != 1 {
			t.Errorf("sonde did not say it mounted tracefs:\n%s", s.stderr.String())
		}
		run(t, curl, "-sS", "-o", "/dev/null", "http://"+srv.addr+"/hello")
		r := s.stop(t)
		if len(r.spans) != 1 || r.spans[0].attr("url.path") != "/hello" || r.spans[0].res("service.name") != "mounted" {
			t.Errorf("want one /hello span of service mounted, got %v", r.spans)
		}
	})
}

// runBounded runs a command that must end by itself within timeout.
func runBounded(t *testing.T, timeout time.Duration, argv ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	var out lockedBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(timeout):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%s still running after %v (hangs?):\n%s", strings.Join(argv, " "), timeout, out.String())
		return "", nil
	}
}

// wantRefused checks that sonde exited with status 1 naming c as missing.
func wantRefused(t *testing.T, out string, err error, c features.Capability) {
	t.Helper()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 1 {
		t.Fatalf("want exit status 1 without %s, got %v:\n%s", c, err, out)
	}
	_, missing, ok := strings.Cut(out, "missing: ")
	if !ok || !strings.Contains(missing, c.String()) {
		t.Errorf("the message does not name %s as missing:\n%s", c, out)
	}
	for _, other := range (features.TraceCaps() | features.MountCaps()).Caps() {
		if other != c && strings.Contains(missing, other.String()+" (") {
			t.Errorf("the message names %s as missing, which was granted:\n%s", other, out)
		}
	}
}

// As root with exactly features.AgentCaps, the node agent's set (the
// DaemonSet's and the systemd unit's), the uprobes attach too: HTTPS from
// curl to nginx is read in clear, and a Go server of another user is
// traced through its Go probes.
func TestAgentPrivilege(t *testing.T) {
	testutil.RequireRoot(t)
	setpriv := testutil.RequireTool(t, "setpriv")
	curl := testutil.RequireTool(t, "curl")
	requireTracing(t)
	cert, key := tlsCert(t)
	srv, _ := startGoServerAs(t, setpriv)
	s := startSondeUnder(t, dropTo(setpriv, features.AgentCaps()), nil, "--pid", fmt.Sprint(srv.pid()), "--exe", "nginx", "--exe", "curl")
	if got := capEffOf(t, s.pid()); got != features.AgentCaps() {
		t.Fatalf("sonde runs with %v, want exactly %v", got.Names(), features.AgentCaps().Names())
	}
	port := freePort(t)
	startNginx(t, "127.0.0.1:"+port, fmt.Sprintf(`  server {
    listen 127.0.0.1:%s ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    location / { return 200 "agent\n"; }
  }`, port, cert, key))
	run(t, curl, "-sk", "--http1.1", "https://127.0.0.1:"+port+"/agent")
	run(t, curl, "-sS", "-o", "/dev/null", "http://"+srv.addr+"/hello")
	r := s.stop(t)
	wantNoParseErrors(t, r)
	if r.stat("attach_failures") != 0 || r.stat("ssl_libraries") == 0 {
		t.Errorf("uprobes did not attach with %v: %v", features.AgentCaps().Names(), r.stats)
	}
	https := filter(r.spans, func(s span) bool { return s.attr("url.scheme") == "https" })
	if len(https) != 2 {
		t.Errorf("want the curl and nginx spans of the HTTPS request, got %d\n%s", len(https), tlsSummary(r))
	}
	for _, sp := range https {
		if sp.attr("url.path") != "/agent" && sp.attr("url.full") != "https://127.0.0.1:"+port+"/agent" {
			t.Errorf("unexpected https span: %s", sp)
		}
	}
	goSpans := filter(r.spans, byPID(srv.pid()))
	if len(goSpans) != 1 || goSpans[0].Name != "GET /hello" || r.stat("go_spans") != 1 {
		t.Errorf("want the Go server's span from its Go probes (named by its route), got %v (go_spans %v)", goSpans, r.stats["go_spans"])
	}
}
