package discover

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const (
	tcpHeader = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
	tcp6Head  = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
)

// fakeProc writes a /proc/PID directory under root from a map of file
// names to contents; a value starting with "->" makes a symlink.
func fakeProc(t *testing.T, root string, pid int, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(root, strconv.Itoa(pid))
	for name, content := range files {
		p := filepath.Join(dir, name)
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
	return dir
}

func TestRead(t *testing.T) {
	root := t.TempDir()
	id := strings.Repeat("0123456789abcdef", 4)
	fakeProc(t, root, 42, map[string]string{
		"exe":     "->/usr/bin/python3.11 (deleted)",
		"cmdline": "python3\x00-m\x00http.server\x00\x00",
		"cgroup":  "0::/system.slice/docker-" + id + ".scope\n",
		"environ": "PATH=/bin\x00OTEL_SERVICE_NAME=shop\x00OTEL_RESOURCE_ATTRIBUTES=a=b,c=d\x00OTHER=x\x00",
		"fd/0":    "->/dev/null",
		"fd/3":    "->socket:[123]",
		"fd/4":    "->socket:[999]",
		"fd/5":    "->socket:[124]",
		"fd/6":    "->socket:[notanumber]",
		"net/tcp": tcpHeader +
			"   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123 1 0000000000000000 100 0 0 10 0\n" +
			"   1: 00000000:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 555 1 0000000000000000 100 0 0 10 0\n" +
			"   2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000  1000        0 999 1 0000000000000000 100 0 0 10 0\n",
		"net/tcp6": tcp6Head +
			"   0: 00000000000000000000000000000000:01BB 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 124 1 0000000000000000 100 0 0 10 0\n" +
			"   1: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 123 1 0000000000000000 100 0 0 10 0\n",
	})
	p, err := Read(root, 42, FieldAll)
	if err != nil {
		t.Fatal(err)
	}
	if p.PID != 42 || p.Exe != "/usr/bin/python3.11" {
		t.Errorf("pid %d exe %q", p.PID, p.Exe)
	}
	if !slices.Equal(p.Cmdline, []string{"python3", "-m", "http.server"}) {
		t.Errorf("cmdline %q", p.Cmdline)
	}
	if p.Cgroup != "/system.slice/docker-"+id+".scope" || p.ContainerID != id || p.PodUID != "" {
		t.Errorf("cgroup %q container %q pod %q", p.Cgroup, p.ContainerID, p.PodUID)
	}
	if len(p.Env) != 2 || p.Env["OTEL_SERVICE_NAME"] != "shop" || p.Env["OTEL_RESOURCE_ATTRIBUTES"] != "a=b,c=d" {
		t.Errorf("env %v", p.Env)
	}
	// 8080 once although two tables list inode 123; 443 from tcp6; not
	// 9090, another process's socket, nor the established 999.
	slices.Sort(p.ListenPorts)
	if !slices.Equal(p.ListenPorts, []uint16{443, 8080}) {
		t.Errorf("listen ports %v", p.ListenPorts)
	}

	only, err := Read(root, 42, FieldExe)
	if err != nil || only.Exe == "" || only.Cmdline != nil || only.Env != nil || only.ListenPorts != nil || only.Cgroup != "" {
		t.Errorf("FieldExe read more than the exe: %+v, %v", only, err)
	}
}

func TestReadDegrades(t *testing.T) {
	root := t.TempDir()
	fakeProc(t, root, 7, map[string]string{"stat": "7 (x) S"})
	p, err := Read(root, 7, FieldAll)
	if err != nil {
		t.Fatalf("a process with unreadable facts is an error: %v", err)
	}
	if p.Exe != "" || p.Cmdline != nil || p.Env != nil || p.Cgroup != "" || p.ListenPorts != nil {
		t.Errorf("facts from nowhere: %+v", p)
	}
	if _, err := Read(root, 8, FieldAll); !errors.Is(err, ErrGone) || !strings.Contains(err.Error(), "pid 8") {
		t.Errorf("missing process: %v", err)
	}
}

func TestReadBoundsHostileFiles(t *testing.T) {
	root := t.TempDir()
	huge := strings.Repeat("A", maxEnviron) + "\x00OTEL_SERVICE_NAME=late\x00"
	fakeProc(t, root, 9, map[string]string{
		"cmdline": strings.Repeat("x", maxCmdline*4),
		"environ": huge,
	})
	p, err := Read(root, 9, FieldCmdline|FieldEnv)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Cmdline) != 1 || len(p.Cmdline[0]) != maxCmdline {
		t.Errorf("cmdline not cut at %d: %d args", maxCmdline, len(p.Cmdline))
	}
	if _, ok := p.Env["OTEL_SERVICE_NAME"]; ok {
		t.Errorf("read past the environ bound: %v", p.Env)
	}
}

func TestParseEnvironDropsTruncatedEntry(t *testing.T) {
	b := []byte("OTEL_SERVICE_NAME=shop\x00" + strings.Repeat("x", maxEnviron))
	b = b[:maxEnviron]
	copy(b[len(b)-len("OTEL_RESOURCE_ATTRIBUTES=cut"):], "OTEL_RESOURCE_ATTRIBUTES=cut")
	env := ParseEnviron(b, "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES")
	if env["OTEL_SERVICE_NAME"] != "shop" {
		t.Errorf("lost a whole entry: %v", env)
	}
	if _, ok := env["OTEL_RESOURCE_ATTRIBUTES"]; ok {
		t.Errorf("kept the entry cut by the bound: %v", env)
	}
	if env := ParseEnviron([]byte("A=1\x00A=2\x00B\x00=x\x00"), "A", ""); env["A"] != "2" || len(env) != 2 {
		t.Errorf("later value wins, key-only entries skipped: %v", env)
	}
}

func TestParseCmdline(t *testing.T) {
	for in, want := range map[string][]string{
		"":                    nil,
		"\x00\x00":            nil,
		"nginx: worker":       {"nginx: worker"}, // setproctitle leaves no NUL
		"a\x00\x00b\x00":      {"a", "", "b"},
		"/bin/sh\x00-c\x00ls": {"/bin/sh", "-c", "ls"},
	} {
		if got := ParseCmdline([]byte(in)); !slices.Equal(got, want) {
			t.Errorf("ParseCmdline(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestParseCgroup(t *testing.T) {
	for in, want := range map[string]string{
		"0::/system.slice/nginx.service\n": "/system.slice/nginx.service",
		"":                                 "",
		// hybrid: processes sit at the unified root, and the v1
		// hierarchies say where they belong; systemd's first
		"12:cpu,cpuacct:/docker/abc\n1:name=systemd:/docker/def\n0::/\n": "/docker/def",
		"9:name=systemd:/\n4:memory:/process_api/54c9\n1:cpu:/\n0::/\n":  "/process_api/54c9",
		"9:name=systemd:/\n1:cpu:/\n0::/\n":                              "/",
		// hybrid with a unified path set: it wins
		"1:name=systemd:/a\n0::/b\n": "/b",
		// v1 only: the first hierarchy's path
		"12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n": "/docker/abc",
		"garbage\n": "",
	} {
		if got := ParseCgroup([]byte(in)); got != want {
			t.Errorf("ParseCgroup(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestContainerOf(t *testing.T) {
	id := "3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899"
	uid := "5b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"
	under := strings.ReplaceAll(uid, "-", "_")
	for _, tc := range []struct {
		name, cgroup, id, pod string
	}{
		{"containerd systemd burstable", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + under + ".slice/cri-containerd-" + id + ".scope", id, uid},
		{"containerd systemd besteffort", "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + under + ".slice/cri-containerd-" + id + ".scope", id, uid},
		{"containerd systemd guaranteed", "/kubepods.slice/kubepods-pod" + under + ".slice/cri-containerd-" + id + ".scope", id, uid},
		{"containerd cgroupfs burstable", "/kubepods/burstable/pod" + uid + "/" + id, id, uid},
		{"containerd cgroupfs besteffort", "/kubepods/besteffort/pod" + uid + "/" + id, id, uid},
		{"cgroupfs guaranteed", "/kubepods/pod" + uid + "/" + id, id, uid},
		{"cri-o", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + under + ".slice/crio-" + id + ".scope", id, uid},
		{"pod sandbox cgroup", "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + under + ".slice", "", uid},
		{"docker systemd", "/system.slice/docker-" + id + ".scope", id, ""},
		{"docker cgroupfs", "/docker/" + id, id, ""},
		{"podman", "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-" + id + ".scope", id, ""},
		{"containerd namespaced", "/default/" + id, id, ""},
		{"nested process in a container", "/system.slice/docker-" + id + ".scope/init.scope", id, ""},
		{"systemd service", "/system.slice/nginx.service", "", ""},
		{"user session", "/user.slice/user-1000.slice/session-3.scope", "", ""},
		{"root", "/", "", ""},
		{"upper-case hex is not an id", "/docker/" + strings.ToUpper(id), "", ""},
		{"63 digits", "/docker/" + id[1:], "", ""},
	} {
		gotID, gotPod := ContainerOf(tc.cgroup)
		if gotID != tc.id || gotPod != tc.pod {
			t.Errorf("%s: ContainerOf(%q) = %q, %q; want %q, %q", tc.name, tc.cgroup, gotID, gotPod, tc.id, tc.pod)
		}
	}
}

func TestListeningSockets(t *testing.T) {
	table := tcpHeader +
		"   0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 11 1\n" +
		"   1: 0100007F:0051 00000000:0000 01 00000000:00000000 00:00000000 00000000     0        0 12 1\n" +
		"   2: 0100007F:ZZZZ 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 13 1\n" +
		"   3: 0100007F 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 14 1\n" +
		"   4: 0100007F:FFFF 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 15 1\n" +
		"   5: short line\n"
	got := map[uint16]uint64{}
	for port, inode := range ListeningSockets(strings.NewReader(table)) {
		got[port] = inode
	}
	if len(got) != 2 || got[80] != 11 || got[65535] != 15 {
		t.Errorf("got %v; want 80 -> 11 and 65535 -> 15", got)
	}
	// Stopping early is honoured.
	n := 0
	for range ListeningSockets(strings.NewReader(table)) {
		n++
		break
	}
	if n != 1 {
		t.Errorf("yielded %d after break", n)
	}
}

func TestScan(t *testing.T) {
	root := t.TempDir()
	for _, d := range []string{"1", "42", "self", "net", "0", "-3"} {
		if err := os.Mkdir(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pids, err := Scan(root)
	slices.Sort(pids)
	if err != nil || !slices.Equal(pids, []int{1, 42}) {
		t.Errorf("Scan = %v, %v", pids, err)
	}
	if _, err := Scan(filepath.Join(root, "nope")); err == nil || !strings.HasPrefix(err.Error(), "list processes: ") {
		t.Errorf("Scan of a missing root: %v", err)
	}
}

func TestParseStat(t *testing.T) {
	for in, want := range map[string]Stat{
		"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0":          {"kthreadd", 0, true},
		"4242 (python3) S 1 4242 4242 0 -1 4194560 1 0":  {"python3", 1, false},
		"77 (a (b) c) R 1 77 77 0 -1 4194304 0 0":        {"a (b) c", 1, false},
		"78 (evil) S 0 0 0 0 -1 2097152) S 1 1 1 1 1 0 ": {"evil) S 0 0 0 0 -1 2097152", 1, false},
	} {
		got, err := ParseStat([]byte(in))
		if err != nil || got != want {
			t.Errorf("ParseStat(%q) = %+v, %v; want %+v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "12 no parens", "5 (x) S 1 2", "5 (x) S 1 2 3 4 5 flags", "5 (x) S -1 2 3 4 5 0"} {
		if _, err := ParseStat([]byte(bad)); err == nil || !strings.HasPrefix(err.Error(), "stat: ") {
			t.Errorf("ParseStat(%q): %v", bad, err)
		}
	}
}
