package tracer

import (
	"github.com/sondehq/sonde/tracer/discover"
)

// selection applies the user's discover.Selector to live processes under
// procRoot.
type selection struct {
	procRoot string
	rules    *discover.Selector
}

// newSelection builds the selection of Options. exe globs are include
// rules on the executable.
func newSelection(procRoot string, pids []int, exe []string, include, exclude []discover.Rule) (*selection, error) {
	rules := make([]discover.Rule, 0, len(exe)+len(include))
	for _, g := range exe {
		rules = append(rules, discover.Rule{Exe: g})
	}
	rules = append(rules, include...)
	sel, err := discover.NewSelector(pids, rules, exclude)
	if err != nil {
		return nil, err
	}
	return &selection{procRoot: procRoot, rules: sel}, nil
}

// enabled reports whether anything narrows the selection, so the kernel
// must consult its targets map.
func (s *selection) enabled() bool { return !s.rules.All() }

// watchExec reports whether the kernel must select a process that execs
// provisionally, until userspace decides on what it became.
func (s *selection) watchExec() bool { return s.rules.WatchExec() }

// mutable reports whether a rejected process may become a target without
// an exec.
func (s *selection) mutable() bool { return s.rules.Mutable() }

func (s *selection) decide(p *discover.Process) (bool, string) { return s.rules.Decide(p) }

// inspect reads what deciding on pid needs, and the extra facts the caller
// asks for in the same pass. A process that is gone reads as empty facts,
// which no rule but an empty one matches.
func (s *selection) inspect(pid uint32, extra discover.Fields) *discover.Process {
	p, err := discover.Read(s.procRoot, int(pid), s.rules.Needs()|discover.FieldExe|extra)
	if err != nil {
		return &discover.Process{PID: int(pid)}
	}
	return p
}

// decideExec decides on a process that just executed path with argv args.
// The path as given to execve is tried first, then what /proc resolves it
// to: /usr/bin/python3 is seen in /proc as /usr/bin/python3.11, and a rule
// may name either. When the process is already gone, the event's own path
// and argv still decide exe and cmdline rules.
func (s *selection) decideExec(pid uint32, path string, args []string) (p *discover.Process, ok bool, reason string) {
	p = s.inspect(pid, 0)
	resolved := p.Exe
	if len(p.Cmdline) == 0 {
		p.Cmdline = args
	}
	if path != "" {
		p.Exe = path
		if ok, reason = s.decide(p); ok || resolved == "" || resolved == path {
			return p, ok, reason
		}
	}
	p.Exe = resolved
	ok, reason = s.decide(p)
	return p, ok, reason
}

func (s *selection) describe() string { return s.rules.String() }
