package tracer

import (
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strconv"
	"strings"
)

// selector decides which executables are traced from --exe globs.
type selector struct {
	procRoot string
	patterns []string
}

func newSelector(procRoot string, globs []string) (*selector, error) {
	s := &selector{procRoot: procRoot}
	for _, g := range globs {
		if _, err := path.Match(g, ""); err != nil {
			return nil, fmt.Errorf("exe pattern %q: %w", g, err)
		}
		s.patterns = append(s.patterns, g)
		// /proc/PID/exe shows the resolved file: /usr/bin/python3 is seen
		// as /usr/bin/python3.11. Match the resolved pattern as well.
		if !strings.ContainsAny(g, "*?[") {
			if r, err := filepath.EvalSymlinks(g); err == nil && r != g {
				s.patterns = append(s.patterns, r)
			}
		}
	}
	return s, nil
}

func (s *selector) enabled() bool { return len(s.patterns) > 0 }

// matches reports whether the executable of pid is selected.
func (s *selector) matches(pid uint32) (exe string, ok bool) {
	exe, err := os.Readlink(filepath.Join(s.procRoot, strconv.FormatUint(uint64(pid), 10), "exe"))
	if err != nil {
		return "", false
	}
	return s.matchPath(strings.TrimSuffix(exe, " (deleted)"))
}

// matchPath reports whether an executable path is selected.
func (s *selector) matchPath(exe string) (string, bool) {
	if exe == "" {
		return "", false
	}
	for _, p := range s.patterns {
		target := exe
		if !strings.Contains(p, "/") {
			target = path.Base(exe)
		}
		if ok, _ := path.Match(p, target); ok {
			return exe, true
		}
	}
	return exe, false
}

// scan returns the running processes that match.
func (s *selector) scan() []uint32 {
	entries, err := os.ReadDir(s.procRoot)
	if err != nil {
		return nil
	}
	var out []uint32
	for _, e := range entries {
		pid, err := strconv.ParseUint(e.Name(), 10, 32)
		if err != nil {
			continue
		}
		if _, ok := s.matches(uint32(pid)); ok {
			out = append(out, uint32(pid))
		}
	}
	return out
}
