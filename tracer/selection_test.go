package tracer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sondehq/sonde/tracer/discover"
)

// fakeTargets records what the tracer asks of the kernel's targets map.
type fakeTargets struct{ m map[uint32]uint8 }

func (f *fakeTargets) Add(pid uint32) error {
	f.m[pid] = 1
	return nil
}

func (f *fakeTargets) Remove(pid uint32) error {
	delete(f.m, pid)
	return nil
}

// selectingTracer is a hand-built tracer with a selection, as New makes it.
func selectingTracer(t *testing.T, fp *fakeProc, pids []int, include, exclude []string) (*Tracer, *fakeTargets) {
	t.Helper()
	tr, _ := handTracer(t, fp, 16)
	parse := func(ss []string) []discover.Rule {
		var rs []discover.Rule
		for _, s := range ss {
			r, err := discover.ParseRule(s)
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, r)
		}
		return rs
	}
	var err error
	tr.selection, err = newSelection(fp.root, pids, nil, parse(include), parse(exclude))
	if err != nil {
		t.Fatal(err)
	}
	tg := &fakeTargets{m: map[uint32]uint8{}}
	tr.targets = tg
	tr.selected = map[uint32]bool{}
	tr.explicit = map[uint32]bool{}
	tr.opts.PIDs = pids
	return tr, tg
}

// execEvent is EVENT_EXEC as the kernel sends it: path, NUL, argv.
func execEvent(t *testing.T, pid uint32, path string, argv ...string) []byte {
	t.Helper()
	e := &socketEvent{Kind: eventExec, Tgid: pid}
	setComm(e, filepath.Base(path))
	payload := path + "\x00" + strings.Join(argv, "\x00") + "\x00"
	e.Captured = uint32(len(payload))
	return encodeEvent(t, e, []byte(payload))
}

// listen makes pid hold a socket listening on port, as /proc shows it.
func (f *fakeProc) listen(pid uint32, port uint16, inode int) {
	f.t.Helper()
	fd := filepath.Join(f.dir(pid), "fd")
	if err := os.MkdirAll(fd, 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Symlink(fmt.Sprintf("socket:[%d]", inode), filepath.Join(fd, "3")); err != nil {
		f.t.Fatal(err)
	}
	f.write(pid, "net/tcp", "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"+
		fmt.Sprintf("   0: 0100007F:%04X 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 %d 1 0000000000000000 100 0 0 10 0\n", port, inode))
}

// A command-line rule decides a process that exited before userspace
// looked at it, from the argv the exec event carries.
func TestExecDecidedOnEventArgv(t *testing.T) {
	fp := newFakeProc(t)
	tr, tg := selectingTracer(t, fp, nil, []string{"cmdline=*manage.py runserver*"}, nil)
	tg.m[40], tg.m[41] = 1, 1 // provisional, as the kernel does at exec

	tr.handle(execEvent(t, 40, "/usr/bin/python3", "python3", "manage.py", "runserver"))
	tr.handle(execEvent(t, 41, "/usr/bin/python3", "python3", "-m", "http.server"))
	if !tr.selected[40] || tg.m[40] != 1 {
		t.Errorf("pid 40 (manage.py runserver) not selected: user %v, kernel %v", tr.selected[40], tg.m[40])
	}
	if tr.selected[41] || tg.m[41] != 0 {
		t.Errorf("pid 41 (http.server) still selected: user %v, kernel %v", tr.selected[41], tg.m[41])
	}
	if st := tr.Stats(); st.Attached != 1 {
		t.Errorf("Attached = %d, want 1", st.Attached)
	}
}

// /proc wins over the event when the process is still there: it holds the
// whole command line, not just its first KiB.
func TestExecPrefersProcCmdline(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(50, "/usr/bin/java")
	fp.write(50, "cmdline", "java\x00-jar\x00"+strings.Repeat("x", 2000)+"\x00app.jar\x00")
	tr, tg := selectingTracer(t, fp, nil, []string{"cmdline=*app.jar"}, nil)
	tg.m[50] = 1
	tr.handle(execEvent(t, 50, "/usr/bin/java", "java", "-jar", strings.Repeat("x", 1010)))
	if !tr.selected[50] {
		t.Errorf("pid 50 not selected on its full command line")
	}
}

// Exclude rules win over include rules and over --pid, at exec and at the
// initial scan alike.
func TestExcludeWins(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(60, "/usr/sbin/nginx")
	fp.exe(61, "/usr/bin/python3.11")
	fp.exe(62, "/usr/bin/curl")
	tr, tg := selectingTracer(t, fp, []int{61}, nil, []string{"exe=python*"})
	if err := tr.selectInitial(); err != nil {
		t.Fatal(err)
	}
	if tr.selected[61] || tg.m[61] != 0 {
		t.Errorf("pid 61 given by --pid but excluded is selected")
	}
	if tr.selected[60] || tr.selected[62] {
		t.Errorf("with --pid only, other processes selected: %v", tr.selected)
	}

	// Everything but the excluded.
	tr, tg = selectingTracer(t, fp, nil, nil, []string{"exe=python*"})
	if !tr.selection.enabled() || !tr.selection.watchExec() {
		t.Fatalf("an exclude rule must make the kernel consult targets and watch execs")
	}
	if err := tr.selectInitial(); err != nil {
		t.Fatal(err)
	}
	if !tr.selected[60] || !tr.selected[62] || tr.selected[61] {
		t.Errorf("selected = %v, want 60 and 62", tr.selected)
	}
	tg.m[70] = 1
	tr.handle(execEvent(t, 70, "/usr/bin/python3.11", "python3"))
	if tr.selected[70] || tg.m[70] != 0 {
		t.Errorf("exec of an excluded program kept")
	}
}

// A process selected by its listening port is found by the rescan once it
// listens, not before; one rejected on its executable is not read again.
func TestRescanFindsListeningProcess(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(80, "/srv/api")
	tr, tg := selectingTracer(t, fp, nil, []string{"port=8080"}, nil)
	tr.rescan()
	if tr.selected[80] {
		t.Fatalf("selected before it listens")
	}
	fp.listen(80, 8080, 777)
	tr.rescan()
	if !tr.selected[80] || tg.m[80] != 1 {
		t.Fatalf("not selected once listening: user %v, kernel %v", tr.selected[80], tg.m[80])
	}
	st := tr.Stats()
	if st.Attached != 1 || st.AttachDelayMax <= 0 || st.AttachDelaySum < st.AttachDelayMax {
		t.Errorf("attach stats = %d, sum %v, max %v", st.Attached, st.AttachDelaySum, st.AttachDelayMax)
	}

	// Another listener's port in the same namespace does not count.
	fp.exe(81, "/srv/other")
	if err := os.MkdirAll(filepath.Join(fp.dir(81), "net"), 0o755); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(fp.dir(80), "net", "tcp"))
	if err != nil {
		t.Fatal(err)
	}
	fp.write(81, "net/tcp", string(data))
	tr.rescan()
	if tr.selected[81] {
		t.Errorf("a process that does not hold the listening socket was selected")
	}

	// Exe rules cannot change without an exec: rejected once, skipped.
	tr, _ = selectingTracer(t, fp, nil, []string{"exe=/srv/api"}, nil)
	tr.rescan()
	if !tr.rejected[81] {
		t.Errorf("pid 81 not remembered as rejected")
	}
	tr.handle(execEvent(t, 81, "/srv/api"))
	if tr.rejected[81] {
		t.Errorf("exec did not clear the rejection")
	}
}

// Container and pod identity come from the cgroup path.
func TestReadProcessContainer(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(90, "/app/server")
	id := strings.Repeat("ab12", 16)
	fp.write(90, "cgroup", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_0000_4a5b_8c9d_0123456789ab.slice/cri-containerd-"+id+".scope\n")
	p := readProcess(fp.root, 90, "server", "h")
	checkResource(t, p.resource, map[string]any{
		"container.id": id,
		"k8s.pod.uid":  "1b2c3d4e-0000-4a5b-8c9d-0123456789ab",
	})
}

// Children a --pid process forked before sonde started are selected with
// it (the kernel only sees forks from now on), unless excluded.
func TestSelectInitialTakesExistingChildren(t *testing.T) {
	fp := newFakeProc(t)
	stat := func(pid, ppid uint32, comm string) {
		fp.write(pid, "stat", fmt.Sprintf("%d (%s) S %d %d %d 0 -1 4194560 0 0", pid, comm, ppid, pid, pid))
	}
	fp.exe(100, "/usr/sbin/nginx")
	stat(100, 1, "nginx")
	fp.exe(101, "/usr/sbin/nginx")
	stat(101, 100, "nginx")
	fp.exe(102, "/usr/sbin/nginx")
	stat(102, 101, "nginx") // a grandchild
	fp.exe(103, "/usr/local/bin/probe")
	stat(103, 100, "probe") // excluded
	fp.exe(104, "/usr/sbin/nginx")
	stat(104, 1, "nginx") // another master, not given

	tr, tg := selectingTracer(t, fp, []int{100}, nil, []string{"exe=probe"})
	if err := tr.selectInitial(); err != nil {
		t.Fatal(err)
	}
	for pid, want := range map[uint32]bool{100: true, 101: true, 102: true, 103: false, 104: false} {
		if tr.selected[pid] != want || (tg.m[pid] == 1) != want {
			t.Errorf("pid %d: selected %v, in kernel %v; want %v", pid, tr.selected[pid], tg.m[pid] == 1, want)
		}
	}
}
