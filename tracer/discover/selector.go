package discover

import (
	"fmt"
	"path/filepath"
	"strings"
)

// Selector decides which processes are traced: those that match an Include
// rule (every process when there is none) and no Exclude rule.
type Selector struct {
	Include []Rule
	Exclude []Rule
}

// NewSelector validates the rules. An exe pattern that names a symlink,
// such as /usr/bin/python3, also matches the file it resolves to, because
// /proc/PID/exe shows the resolved path.
func NewSelector(include, exclude []Rule) (*Selector, error) {
	s := &Selector{}
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

// All reports whether the selector takes every process.
func (s *Selector) All() bool { return len(s.Include) == 0 && len(s.Exclude) == 0 }

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

// OnlyExe reports whether every rule looks at the executable alone, so a
// decision can be made from the path the kernel executed even when the
// process is already gone.
func (s *Selector) OnlyExe() bool {
	return s.Needs()&^FieldExe == 0
}

// Decide reports whether p is traced, and why in words a user can act on.
func (s *Selector) Decide(p *Process) (traced bool, reason string) {
	for _, r := range s.Exclude {
		if ok, _ := r.Match(p); ok {
			return false, fmt.Sprintf("excluded by rule %s", r)
		}
	}
	if len(s.Include) == 0 {
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
	return false, "no rule selects it (" + strings.Join(misses, "; ") + ")"
}
