package tracer

import (
	"errors"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sondehq/sonde/tracer/discover"
)

func TestSelectorMatches(t *testing.T) {
	fp := newFakeProc(t)
	exes := map[uint32]string{
		1: "/usr/bin/python3.11",
		2: "/usr/local/bin/node",
		3: "/opt/app/bin/server (deleted)",
		4: "/usr/sbin/nginx",
		5: "/home/u/python",
	}
	for pid, exe := range exes {
		fp.exe(pid, exe)
	}
	fp.dir(6) // a kernel thread: no exe

	for _, tc := range []struct {
		name     string
		patterns []string
		want     []uint32
	}{
		{"base name", []string{"node"}, []uint32{2}},
		{"base name glob", []string{"python*"}, []uint32{1, 5}},
		{"base name class", []string{"[ns]*"}, []uint32{2, 3, 4}},
		{"question mark", []string{"pytho?"}, []uint32{5}},
		{"full path", []string{"/usr/sbin/nginx"}, []uint32{4}},
		{"path glob", []string{"/usr/*/*"}, []uint32{1, 4}},
		{"path glob, deeper", []string{"/usr/*/*/*"}, []uint32{2}},
		{"glob does not cross slashes", []string{"/usr/*"}, nil},
		{"deleted executable", []string{"/opt/app/bin/server"}, []uint32{3}},
		{"deleted executable by base name", []string{"server"}, []uint32{3}},
		{"several patterns", []string{"nginx", "/home/*/python"}, []uint32{4, 5}},
		{"base name is not a suffix", []string{"ode"}, nil},
		{"path must be whole", []string{"/usr/bin"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := newSelector(fp.root, tc.patterns)
			if err != nil {
				t.Fatal(err)
			}
			if !s.enabled() {
				t.Errorf("selector with patterns not enabled")
			}
			for pid := uint32(1); pid <= 7; pid++ {
				exe, ok := matches(s, pid)
				if want := slices.Contains(tc.want, pid); ok != want {
					t.Errorf("matches(%d) (%s) = %v, want %v", pid, exes[pid], ok, want)
				}
				if want := strings.TrimSuffix(exes[pid], " (deleted)"); exe != want {
					t.Errorf("matches(%d) exe = %q, want %q", pid, exe, want)
				}
			}
			got := scan(s)
			slices.Sort(got)
			if !slices.Equal(got, tc.want) {
				t.Errorf("scan() = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestSelectorSymlinkPattern(t *testing.T) {
	bin := t.TempDir()
	real := filepath.Join(bin, "python3.12")
	if err := os.WriteFile(real, []byte("#!/bin/true\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(bin, "python3")
	if err := os.Symlink("python3.12", link); err != nil {
		t.Fatal(err)
	}
	fp := newFakeProc(t)
	fp.exe(1, real) // the kernel shows the resolved file
	fp.exe(2, link) // unlikely, but the pattern as given matches too
	fp.exe(3, filepath.Join(bin, "python3.12-other"))

	s, err := newSelector(fp.root, []string{link})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(exePatterns(s), link) || !slices.Contains(exePatterns(s), real) {
		t.Errorf("patterns = %q, want %q and its target %q", exePatterns(s), link, real)
	}
	got := scan(s)
	slices.Sort(got)
	if want := []uint32{1, 2}; !slices.Equal(got, want) {
		t.Errorf("scan() = %v, want %v", got, want)
	}

	// A glob is not resolved: it is matched as written.
	s, err = newSelector(fp.root, []string{filepath.Join(bin, "python3*")})
	if err != nil {
		t.Fatal(err)
	}
	if len(exePatterns(s)) != 1 {
		t.Errorf("glob resolved: %q", exePatterns(s))
	}

	// A path that is not a link adds nothing.
	s, err = newSelector(fp.root, []string{real})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(exePatterns(s), []string{real}) {
		t.Errorf("patterns = %q, want just %q", exePatterns(s), real)
	}
}

func TestSelectorInvalidPattern(t *testing.T) {
	for _, g := range []string{"[", "python[", "/usr/bin/[a-", "a\\", "[]a]x["} {
		s, err := newSelector(t.TempDir(), []string{"ok", g})
		if err == nil {
			t.Errorf("newSelector(%q) = %v, want an error", g, exePatterns(s))
			continue
		}
		if !errors.Is(err, path.ErrBadPattern) || !strings.Contains(err.Error(), g) {
			t.Errorf("newSelector(%q) error %q: want ErrBadPattern naming the pattern", g, err)
		}
	}
}

func TestSelectorEmpty(t *testing.T) {
	s, err := newSelector(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s.enabled() {
		t.Errorf("selector without patterns enabled")
	}
	// Nothing narrows the choice: every process is traced.
	if _, ok := matches(s, 1); !ok {
		t.Errorf("selector without patterns does not match")
	}
}

func TestSelectorScanSkipsNonPIDs(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(12, "/bin/app")
	for _, name := range []string{"self", "thread-self", "-1", "4294967296", "12x"} {
		d := filepath.Join(fp.root, name)
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("/bin/app", filepath.Join(d, "exe")); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(fp.root, "uptime"), []byte("1 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := newSelector(fp.root, []string{"app"})
	if err != nil {
		t.Fatal(err)
	}
	if got := scan(s); !slices.Equal(got, []uint32{12}) {
		t.Errorf("scan() = %v, want [12]", got)
	}

	// A missing proc root yields nothing rather than failing.
	s.procRoot = filepath.Join(fp.root, "missing")
	if got := scan(s); len(got) != 0 {
		t.Errorf("scan() of a missing root = %v", got)
	}
}

// newSelector is a selection made of exe globs only, as --exe gives.
func newSelector(procRoot string, exe []string) (*selection, error) {
	return newSelection(procRoot, nil, exe, nil, nil)
}

func exePatterns(s *selection) []string {
	var out []string
	for _, r := range s.rules.Include {
		out = append(out, r.Exe)
	}
	return out
}

// matches reports whether the running process pid is selected, as the
// initial scan and the rescans decide.
func matches(s *selection, pid uint32) (exe string, ok bool) {
	p := s.inspect(pid, 0)
	ok, _ = s.decide(p)
	return p.Exe, ok
}

// scan returns the running processes that are selected.
func scan(s *selection) []uint32 {
	pids, err := discover.Scan(s.procRoot)
	if err != nil {
		return nil
	}
	var out []uint32
	for _, pid := range pids {
		if _, ok := matches(s, uint32(pid)); ok {
			out = append(out, uint32(pid))
		}
	}
	return out
}
