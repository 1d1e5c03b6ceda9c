package e2e

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
)

// Processes that start after sonde are picked by every kind of selector:
// command line (a short-lived curl, traced from its first byte), environment
// (OTEL_SERVICE_NAME), cgroup, and a listening port (found by the rescan, as
// a port is only known once the process listens). Exclude rules win. Each
// selection is logged with its delay, and the delays stay within bounds.
func TestSelectorsPickNewProcesses(t *testing.T) {
	curl := testutil.RequireTool(t, "curl")
	cgroup2 := cgroup2Mount(t)
	group := filepath.Join(cgroup2, fmt.Sprintf("sonde-e2e-%d", os.Getpid()))
	if err := os.Mkdir(group, 0o755); err != nil {
		t.Fatalf("create cgroup: %v", err)
	}
	t.Cleanup(func() { os.Remove(group) })
	untraced := startGoServer(t) // a peer for the curl clients
	portPort := freePort(t)

	s := startSonde(t, nil,
		"--select", "cmdline=*sonde-e2e-client*",
		"--select", "otel_service_name=true,exe=*goserver",
		"--select", "cgroup=/"+filepath.Base(group),
		"--select", "port="+portPort,
		"--exclude", "cmdline=*sonde-e2e-excluded*",
	)

	byEnv := startGoServer(t, "OTEL_SERVICE_NAME=picked-by-env")
	byCgroup := startProc(t, nil, "/bin/sh", "-c", fmt.Sprintf("echo $$ > %s/cgroup.procs && exec %s", group, bins.goserver))
	byPort := startProc(t, nil, bins.goserver, "-addr", "127.0.0.1:"+portPort)
	waitPort(t, "127.0.0.1:"+portPort)
	cgroupAddr := waitListening(t, byCgroup)

	// The port rule can only match once the server listens: wait for the
	// rescan to select it before sending it traffic.
	delays := waitSelected(t, s, byEnv.pid(), byCgroup.pid(), byPort.pid())

	get := func(addr, agent string) {
		run(t, curl, "-sS", "-o", "/dev/null", "-A", agent, "http://"+addr+"/hello")
	}
	get(untraced.addr, "sonde-e2e-client")
	get(untraced.addr, "sonde-e2e-client sonde-e2e-excluded")
	get(byEnv.addr, "plain")
	get(cgroupAddr, "plain")
	get("127.0.0.1:"+portPort, "plain")
	r := s.stop(t)

	if n := len(filter(r.spans, byPID(untraced.pid()))); n != 0 {
		t.Errorf("the unselected server has %d spans", n)
	}
	clients := filter(r.spans, func(s span) bool { return s.Kind == "client" })
	if len(clients) != 1 || clients[0].attr("user_agent.original") != "sonde-e2e-client" {
		t.Errorf("want one client span, of the curl selected by its command line (the excluded one not traced); got:\n%v", clients)
	}
	for name, pid := range map[string]int{"env": byEnv.pid(), "cgroup": byCgroup.pid(), "port": byPort.pid()} {
		got := filter(r.spans, byPID(pid))
		if len(got) != 1 || got[0].Kind != "server" {
			t.Errorf("server selected by %s rule: want 1 server span, got %v", name, got)
		}
	}
	if sp := filter(r.spans, byPID(byEnv.pid())); len(sp) == 1 && sp[0].res("service.name") != "picked-by-env" {
		t.Errorf("service.name = %q, want the process's OTEL_SERVICE_NAME", sp[0].res("service.name"))
	}

	// Processes that exec while sonde runs are confirmed as soon as the
	// event loop sees the exec; one found by port waits for a rescan.
	for _, pid := range []int{byEnv.pid(), byCgroup.pid()} {
		if d := delays[pid]; d > time.Second {
			t.Errorf("pid %d selected at exec %v after it, want under 1s", pid, d)
		}
	}
	if d := delays[byPort.pid()]; d > 3*time.Second {
		t.Errorf("pid %d selected by port %v after the rescan began, want under 3s", byPort.pid(), d)
	}
	t.Logf("selection delays: env %v, cgroup %v, port (rescan) %v", delays[byEnv.pid()], delays[byCgroup.pid()], delays[byPort.pid()])
}

// cgroup2Mount finds where the unified cgroup hierarchy is mounted.
func cgroup2Mount(t *testing.T) string {
	t.Helper()
	f, err := os.Open("/proc/self/mounts")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 3 && fields[2] == "cgroup2" {
			return fields[1]
		}
	}
	testutil.Unmet(t, "no cgroup2 hierarchy is mounted: cgroup selectors cannot be tested")
	return ""
}

// waitListening returns the address a goserver started by startProc prints.
func waitListening(t testing.TB, p *proc) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if line, _, ok := strings.Cut(p.stdout.String(), "\n"); ok {
			if addr, ok := strings.CutPrefix(line, "listening "); ok {
				return addr
			}
			t.Fatalf("goserver said %q", line)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("goserver did not start: %s", p.stderr.String())
	return ""
}

// waitSelected waits until sonde logs that it traces each pid, and returns
// the delay it logged for each.
func waitSelected(t *testing.T, s *sondeRun, pids ...int) map[int]time.Duration {
	t.Helper()
	delays := map[int]time.Duration{}
	deadline := time.Now().Add(10 * time.Second)
	for len(delays) < len(pids) && time.Now().Before(deadline) {
		for _, line := range strings.Split(s.stderr.String(), "\n") {
			if !strings.Contains(line, `"msg":"tracing process"`) {
				continue
			}
			for _, pid := range pids {
				if !strings.Contains(line, fmt.Sprintf(`"pid":%d,`, pid)) {
					continue
				}
				var rec struct {
					Delay *float64 `json:"delay"` // ns, as slog's JSON handler writes a Duration
				}
				if err := json.Unmarshal([]byte(line), &rec); err != nil || rec.Delay == nil {
					t.Fatalf("selection logged without a delay: %s", line)
				}
				d := time.Duration(*rec.Delay)
				delays[pid] = d
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, pid := range pids {
		if _, ok := delays[pid]; !ok {
			t.Fatalf("sonde did not select pid %d within 10s:\n%s", pid, tail(s.stderr.String(), 30))
		}
	}
	return delays
}
