package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/sondehq/sonde/tracer/discover"
)

func rule(t *testing.T, s string) discover.Rule {
	t.Helper()
	r, err := discover.ParseRule(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestPsSelectionMatchesTrace(t *testing.T) {
	curl := &discover.Process{PID: 10, Exe: "/usr/bin/curl"}
	py := &discover.Process{PID: 11, Exe: "/usr/bin/python3.11", ListenPorts: []uint16{8000}}
	for _, tc := range []struct {
		name   string
		o      psOptions
		p      *discover.Process
		traced bool
		reason string
	}{
		{"nothing given", psOptions{}, curl, true, "every process is traced"},
		{"by pid", psOptions{pids: []int{10}}, curl, true, "selected by --pid 10"},
		{"pid only", psOptions{pids: []int{10}}, py, false, "not among --pid 10"},
		{"exclude beats pid", psOptions{pids: []int{10}, excludes: []discover.Rule{rule(t, "exe=curl")}}, curl, false, "excluded by rule exe=curl"},
		{"exe glob", psOptions{exes: []string{"python3*"}}, py, true, "selected by rule exe=python3*"},
		{"pid and rule", psOptions{pids: []int{10}, selects: []discover.Rule{rule(t, "port=9000")}}, py, false,
			"not among --pid 10; no rule selects it (port=9000: does not listen on port 9000)"},
		{"exclude alone", psOptions{excludes: []discover.Rule{rule(t, "port=8000")}}, py, false, "excluded by rule port=8000"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := newPsSelector(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			traced, reason := sel.Decide(tc.p)
			if traced != tc.traced || reason != tc.reason {
				t.Errorf("decide = %v, %q; want %v, %q", traced, reason, tc.traced, tc.reason)
			}
		})
	}
	if _, err := newPsSelector(psOptions{exes: []string{"["}}); err == nil || !strings.Contains(err.Error(), `exe "["`) {
		t.Errorf("bad --exe glob: %v", err)
	}
}

func writeProc(t *testing.T, root string, pid int, files map[string]string) {
	t.Helper()
	for name, content := range files {
		p := filepath.Join(root, strconv.Itoa(pid), name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		var err error
		if target, ok := strings.CutPrefix(content, "->"); ok {
			err = os.Symlink(target, p)
		} else {
			err = os.WriteFile(p, []byte(content), 0o644)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestListProcesses(t *testing.T) {
	root := t.TempDir()
	self, _ := os.Executable()
	bin := t.TempDir()
	py := filepath.Join(bin, "python3.11")
	if err := os.Symlink("/bin/sh", py); err != nil {
		t.Fatal(err)
	}
	writeProc(t, root, 2, map[string]string{"stat": "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0"})
	writeProc(t, root, 100, map[string]string{
		"stat":    "100 (python3.11) S 1 100 100 0 -1 4194560 0 0",
		"exe":     "->" + py,
		"cmdline": "python3\x00app.py\x00",
		"environ": "OTEL_SERVICE_NAME=shop\x00",
		"cgroup":  "0::/system.slice/shop.service\n",
		"maps":    "7f01-7f02 r--p 00000000 08:01 2000 /usr/lib/x86_64-linux-gnu/libssl.so.3\n",
		"fd/3":    "->socket:[500]",
		"net/tcp": "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n" +
			"   0: 00000000:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 500 1\n",
		// The mapped libssl is read through the process's root: the host's.
		"root": "->/",
	})
	// A process whose files are all unreadable: only its stat is there.
	writeProc(t, root, 200, map[string]string{"stat": "200 (secret) S 1 200 200 0 -1 4194560 0 0"})
	writeProc(t, root, 300, map[string]string{
		"stat": "300 (sonde) S 1 300 300 0 -1 4194560 0 0",
		"exe":  "->" + self,
		"maps": "",
	})

	o := psOptions{procRoot: root, self: 300, pids: []int{999}, selects: []discover.Rule{rule(t, "port=8000")}}
	rows, err := listProcesses(o)
	if err != nil {
		t.Fatal(err)
	}
	byPID := map[int]psRow{}
	var pids []int
	for _, r := range rows {
		byPID[r.PID] = r
		pids = append(pids, r.PID)
	}
	if !slices.Equal(pids, []int{100, 200, 300, 999}) {
		t.Fatalf("pids %v; want kernel thread hidden, --pid 999 listed", pids)
	}
	p := byPID[100]
	if p.Service != "shop" || p.Language != "python" || p.TLS != "libssl" || p.TLSVersion != "3" || !p.Traced ||
		p.Reason != "not among --pid 999; selected by rule port=8000" && p.Reason != "selected by rule port=8000" ||
		p.Capture != "sockets; tls: openssl probes (read, write)" || len(p.Notes) != 0 {
		t.Errorf("python row: %+v", p)
	}
	s := byPID[200]
	if s.Traced || s.Service != "secret" || s.Exe != "" || len(s.Notes) < 3 {
		t.Errorf("unreadable row: %+v", s)
	}
	for _, want := range []string{"exe: no such file or directory; exe rules cannot match", "environ:", "cgroup:", "fd:"} {
		if !slices.ContainsFunc(s.Notes, func(n string) bool { return strings.HasPrefix(n, want) }) {
			t.Errorf("notes %q do not say %q", s.Notes, want)
		}
	}
	if r := byPID[300]; r.Traced || r.Reason != "sonde itself" || r.Language != "go" || r.GoVersion == "" {
		t.Errorf("self row: %+v", r)
	}
	if r := byPID[999]; r.Traced || r.Reason != "exited" {
		t.Errorf("missing --pid row: %+v", r)
	}

	o.all = true
	rows, _ = listProcesses(o)
	if rows[0].PID != 2 || !rows[0].KernelThread || rows[0].Reason != "kernel thread" || rows[0].Service != "kthreadd" || rows[0].Traced {
		t.Errorf("--all: first row %+v", rows[0])
	}
}

func TestPsJSONFieldNames(t *testing.T) {
	var buf bytes.Buffer
	if err := writePsJSON(&buf, nil); err != nil || strings.TrimSpace(buf.String()) != "[]" {
		t.Errorf("no rows: %q, %v", buf.String(), err)
	}
	buf.Reset()
	if err := writePsJSON(&buf, []psRow{{PID: 1}}); err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &rows); err != nil {
		t.Fatal(err)
	}
	var keys []string
	for k := range rows[0] {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	want := []string{"capture", "exe", "go_module", "go_version", "kernel_thread", "language", "notes", "pid", "reason", "service", "tls", "tls_path", "tls_version", "traced"}
	if !slices.Equal(keys, want) {
		t.Errorf("keys %v; want %v", keys, want)
	}
	if n, ok := rows[0]["notes"].([]any); !ok || len(n) != 0 {
		t.Errorf("notes is %v; want an empty array", rows[0]["notes"])
	}
}

func TestPsTable(t *testing.T) {
	var buf bytes.Buffer
	rows := []psRow{
		{PID: 7, Service: "api", Exe: "/srv/api", Language: "go", GoVersion: "go1.26.0", TLS: "crypto/tls", Traced: true, Reason: "selected by --pid 7", Capture: "sockets"},
		{PID: 8, Service: "py", Language: "python", TLS: "libssl", TLSPath: "/usr/lib/libssl.so.3", Reason: "excluded by rule exe=py", Capture: "none", Notes: []string{"maps: permission denied"}},
	}
	if err := writePsTable(&buf, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "PID") {
		t.Fatalf("table:\n%s", buf.String())
	}
	if f := strings.Fields(lines[1]); f[0] != "7" || f[4] != "go1.26.0" || f[6] != "yes" {
		t.Errorf("row 1: %q", lines[1])
	}
	if !strings.Contains(lines[2], "libssl.so.3") || !strings.Contains(lines[2], " no ") || !strings.HasSuffix(lines[2], "[maps: permission denied]") {
		t.Errorf("row 2: %q", lines[2])
	}
}
