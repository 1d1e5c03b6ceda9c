package discover

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// Selector decides which processes are traced: those named by pid or
// matched by an Include rule, and never one matched by an Exclude rule.
// With neither pids nor Include rules, every process is traced but the
// excluded ones. The calling process (sonde) is never traced.
type Selector struct {
	PIDs    []int
	Include []Rule
	Exclude []Rule

	pids map[int]bool
	self int
}

// NewSelector validates the rules. An exe pattern that names a symlink,
// such as /usr/bin/python3, also matches the file it resolves to, because
// /proc/PID/exe shows the resolved path.
func NewSelector(pids []int, include, exclude []Rule) (*Selector, error) {
	s := &Selector{PIDs: slices.Clone(pids), pids: make(map[int]bool), self: os.Getpid()}
	for _, p := range pids {
		if p <= 0 {
			return nil, fmt.Errorf("pid %d: must be positive", p)
		}
		s.pids[p] = true
	}
	for _, set := range []struct {
		in  []Rule
		out *[]Rule
	}{{include, &s.Include}, {exclude, &s.Exclude}} {
		for _, r := range set.in {
			if err := r.Validate(); err != nil {
				return nil, err
			}
			*set.out = append(*set.out, r)
			if r.Exe != "" && !strings.ContainsAny(r.Exe, "*?[") {
				if res, err := filepath.EvalSymlinks(r.Exe); err == nil && res != r.Exe {
					alt := r
					alt.Exe = res
					*set.out = append(*set.out, alt)
				}
			}
		}
	}
	return s, nil
}

// All reports whether every process is traced (but sonde): no pid, no
// rule narrows the choice.
func (s *Selector) All() bool {
	return len(s.PIDs) == 0 && len(s.Include) == 0 && len(s.Exclude) == 0
}

// WatchExec reports whether a process that execs may be selected by what
// it becomes: there are rules to judge it by.
func (s *Selector) WatchExec() bool {
	return !s.All() && (len(s.Include) > 0 || len(s.PIDs) == 0)
}

// Needs says which facts Decide reads.
func (s *Selector) Needs() Fields {
	var f Fields
	for _, r := range s.Include {
		f |= r.Needs()
	}
	for _, r := range s.Exclude {
		f |= r.Needs()
	}
	return f
}

// Mutable reports whether a process rejected once may be selected later
// without an exec: it may open the listening port a rule names, or rewrite
// its argv.
func (s *Selector) Mutable() bool {
	return s.Needs()&(FieldPorts|FieldCmdline) != 0
}

// Excluded reports whether an Exclude rule matches p, and which.
func (s *Selector) Excluded(p *Process) (Rule, bool) {
	for _, r := range s.Exclude {
		if ok, _ := r.Match(p); ok {
			return r, true
		}
	}
	return Rule{}, false
}

// Decide reports whether p is traced, and why in words a user can act on.
func (s *Selector) Decide(p *Process) (traced bool, reason string) {
	if s.self != 0 && p.PID == s.self {
		return false, "sonde itself"
	}
	if r, ok := s.Excluded(p); ok {
		return false, fmt.Sprintf("excluded by rule %s", r)
	}
	if s.pids[p.PID] {
		return true, fmt.Sprintf("selected by --pid %d", p.PID)
	}
	if len(s.Include) == 0 {
		if len(s.PIDs) > 0 {
			return false, "not among --pid " + joinInts(s.PIDs)
		}
		return true, "every process is traced"
	}
	var misses []string
	for _, r := range s.Include {
		ok, miss := r.Match(p)
		if ok {
			return true, fmt.Sprintf("selected by rule %s", r)
		}
		misses = append(misses, fmt.Sprintf("%s: %s", r, miss))
	}
	reason = "no rule selects it (" + strings.Join(misses, "; ") + ")"
	if len(s.PIDs) > 0 {
		reason = "not among --pid " + joinInts(s.PIDs) + "; " + reason
	}
	return false, reason
}

// String says what is selected, for logs.
func (s *Selector) String() string {
	var parts []string
	if len(s.PIDs) > 0 {
		parts = append(parts, "pids "+joinInts(s.PIDs))
	}
	for _, r := range s.Include {
		parts = append(parts, "rule "+r.String())
	}
	if len(s.PIDs) == 0 && len(s.Include) == 0 {
		parts = append(parts, "all processes")
	}
	for _, r := range s.Exclude {
		parts = append(parts, "excluding "+r.String())
	}
	return strings.Join(parts, ", ")
}

func joinInts(v []int) string {
	sorted := slices.Sorted(slices.Values(v))
	parts := make([]string, len(sorted))
	for i, n := range sorted {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ",")
}
