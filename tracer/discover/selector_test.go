package discover

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func mustRule(t *testing.T, s string) Rule {
	t.Helper()
	r, err := ParseRule(s)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestDecideReasons(t *testing.T) {
	py := &Process{PID: 10, Exe: "/usr/bin/python3.11", ListenPorts: []uint16{8000}}
	curl := &Process{PID: 11, Exe: "/usr/bin/curl"}
	for _, tc := range []struct {
		name             string
		include, exclude []string
		p                *Process
		traced           bool
		reason           string
	}{
		{"no rules", nil, nil, curl, true, "every process is traced"},
		{"selected", []string{"port=8000"}, nil, py, true, "selected by rule port=8000"},
		{"second rule selects", []string{"exe=curl", "exe=python3*"}, nil, py, true, "selected by rule exe=python3*"},
		{"every miss is named", []string{"port=8000", "exe=nginx"}, nil, curl, false,
			`no rule selects it (port=8000: does not listen on port 8000; exe=nginx: exe "/usr/bin/curl" does not match "nginx")`},
		{"exclude wins", []string{"port=8000"}, []string{"exe=python3*"}, py, false, "excluded by rule exe=python3*"},
		{"exclude alone", nil, []string{"exe=curl"}, curl, false, "excluded by rule exe=curl"},
		{"exclude that misses", nil, []string{"exe=curl"}, py, true, "every process is traced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var inc, exc []Rule
			for _, s := range tc.include {
				inc = append(inc, mustRule(t, s))
			}
			for _, s := range tc.exclude {
				exc = append(exc, mustRule(t, s))
			}
			s, err := NewSelector(nil, inc, exc)
			if err != nil {
				t.Fatal(err)
			}
			traced, reason := s.Decide(tc.p)
			if traced != tc.traced || reason != tc.reason {
				t.Errorf("Decide = %v, %q; want %v, %q", traced, reason, tc.traced, tc.reason)
			}
		})
	}
}

func TestNewSelectorResolvesExeSymlinks(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "python3.11")
	if err := os.WriteFile(real, nil, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "python3")
	if err := os.Symlink("python3.11", link); err != nil {
		t.Fatal(err)
	}
	s, err := NewSelector(nil, []Rule{{Exe: link}}, []Rule{{Exe: link + "*"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Include) != 2 || s.Include[1].Exe != real {
		t.Fatalf("include = %+v; want the rule and its resolved twin", s.Include)
	}
	if len(s.Exclude) != 1 {
		t.Errorf("a glob was resolved: %+v", s.Exclude)
	}
	if ok, why := (&Selector{Include: s.Include}).Decide(&Process{Exe: real}); !ok {
		t.Errorf("the resolved executable is not selected: %s", why)
	}
}

func TestNewSelectorRejectsBadRules(t *testing.T) {
	_, err := NewSelector(nil, nil, []Rule{{Container: "xyz"}})
	if err == nil || !strings.Contains(err.Error(), "accepted values are *") {
		t.Errorf("got %v", err)
	}
	_, err = NewSelector(nil, []Rule{{Exe: "["}}, nil)
	if err == nil || !strings.Contains(err.Error(), `exe "["`) {
		t.Errorf("got %v", err)
	}
}

func TestSelectorNeedsAndModes(t *testing.T) {
	s := &Selector{Include: []Rule{{Exe: "a"}}, Exclude: []Rule{{Exe: "b"}}}
	if s.Mutable() || s.Needs() != FieldExe || s.All() || !s.WatchExec() {
		t.Errorf("exe-only selector: Mutable %v Needs %b All %v WatchExec %v", s.Mutable(), s.Needs(), s.All(), s.WatchExec())
	}
	s.Exclude = append(s.Exclude, Rule{Port: 80})
	if !s.Mutable() || s.Needs() != FieldExe|FieldPorts {
		t.Errorf("port rule: Mutable %v Needs %b", s.Mutable(), s.Needs())
	}
	if !(&Selector{}).All() || (&Selector{}).WatchExec() {
		t.Error("empty selector does not take all, or watches execs")
	}
	// Pids alone: nothing to judge an exec'd program by.
	if s := (&Selector{PIDs: []int{1}}); s.All() || s.WatchExec() {
		t.Errorf("pids only: All %v WatchExec %v", s.All(), s.WatchExec())
	}
	// All but the excluded: every exec must be judged.
	if s := (&Selector{Exclude: []Rule{{Exe: "x"}}}); s.All() || !s.WatchExec() {
		t.Errorf("exclude only: All %v WatchExec %v", s.All(), s.WatchExec())
	}
}

// Pids select unless excluded; the reasons name what decided.
func TestSelectorPIDs(t *testing.T) {
	s, err := NewSelector([]int{10, 11}, nil, []Rule{{Exe: "/bin/bad"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		p      Process
		traced bool
		reason string
	}{
		{Process{PID: 10, Exe: "/bin/good"}, true, "selected by --pid 10"},
		{Process{PID: 11, Exe: "/bin/bad"}, false, "excluded by rule exe=/bin/bad"},
		{Process{PID: 12, Exe: "/bin/good"}, false, "not among --pid 10,11"},
		{Process{PID: os.Getpid(), Exe: "/bin/good"}, false, "sonde itself"},
	} {
		traced, reason := s.Decide(&tc.p)
		if traced != tc.traced || reason != tc.reason {
			t.Errorf("Decide(%+v) = %v, %q; want %v, %q", tc.p, traced, reason, tc.traced, tc.reason)
		}
	}
	if _, err := NewSelector([]int{0}, nil, nil); err == nil {
		t.Error("pid 0 accepted")
	}
	if got := s.String(); got != "pids 10,11, excluding exe=/bin/bad" {
		t.Errorf("String() = %q", got)
	}
}
