package tracer

import (
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"

	"github.com/sondehq/sonde/tracer/discover"
)

// selection decides which processes are traced: those given by pid, and
// those the rules select, never the excluded ones nor sonde itself.
type selection struct {
	procRoot string
	rules    *discover.Selector
	pids     map[uint32]bool
	// all is set when no pid and no include rule narrow the choice: every
	// process is traced but the excluded.
	all  bool
	self uint32
}

// newSelection builds the selection of Options. exe globs are include
// rules on the executable.
func newSelection(procRoot string, pids []int, exe []string, include, exclude []discover.Rule) (*selection, error) {
	rules := make([]discover.Rule, 0, len(exe)+len(include))
	for _, g := range exe {
		rules = append(rules, discover.Rule{Exe: g})
	}
	rules = append(rules, include...)
	sel, err := discover.NewSelector(rules, exclude)
	if err != nil {
		return nil, err
	}
	s := &selection{procRoot: procRoot, rules: sel, pids: make(map[uint32]bool), self: uint32(os.Getpid())}
	for _, p := range pids {
		s.pids[uint32(p)] = true
	}
	s.all = len(pids) == 0 && len(sel.Include) == 0
	return s, nil
}

// enabled reports whether anything narrows the selection, so the kernel
// must consult its targets map.
func (s *selection) enabled() bool { return !s.all || len(s.rules.Exclude) > 0 }

// watchExec reports whether a process that execs may become a target, so
// the kernel must select it provisionally until userspace decides.
func (s *selection) watchExec() bool {
	return s.enabled() && (s.all || len(s.rules.Include) > 0)
}

// needs is what must be read from /proc to decide.
func (s *selection) needs() discover.Fields { return s.rules.Needs() | discover.FieldExe }

// mutable reports whether a process rejected once may be selected later
// without an exec: it may open a listening port, or rewrite its argv.
func (s *selection) mutable() bool {
	return s.rules.Needs()&(discover.FieldPorts|discover.FieldCmdline) != 0
}

// decide reports whether p is traced and why.
func (s *selection) decide(p *discover.Process) (bool, string) {
	if uint32(p.PID) == s.self && p.PID != 0 {
		return false, "sonde itself"
	}
	if s.pids[uint32(p.PID)] {
		for _, r := range s.rules.Exclude {
			if ok, _ := r.Match(p); ok {
				return false, "excluded by rule " + r.String()
			}
		}
		return true, "selected by --pid"
	}
	if !s.all && len(s.rules.Include) == 0 {
		return false, "not in the --pid list"
	}
	return s.rules.Decide(p)
}

// inspect reads what deciding on pid needs. A process that is gone reads
// as empty facts, which no rule but an empty one matches.
func (s *selection) inspect(pid uint32) *discover.Process {
	p, err := discover.Read(s.procRoot, int(pid), s.needs())
	if err != nil {
		return &discover.Process{PID: int(pid)}
	}
	return p
}

// matches reports whether the running process pid is selected.
func (s *selection) matches(pid uint32) (exe string, ok bool) {
	p := s.inspect(pid)
	ok, _ = s.decide(p)
	return p.Exe, ok
}

// decideExec decides on a process that just executed path with argv args.
// The path as given to execve is tried first, then what /proc resolves it
// to: /usr/bin/python3 is seen in /proc as /usr/bin/python3.11, and a rule
// may name either. When the process is already gone, the event's own path
// and argv still decide exe and cmdline rules.
func (s *selection) decideExec(pid uint32, path string, args []string) (p *discover.Process, ok bool, reason string) {
	p = s.inspect(pid)
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

// scan returns the running processes that are selected.
func (s *selection) scan() []uint32 {
	pids, err := discover.Scan(s.procRoot)
	if err != nil {
		return nil
	}
	var out []uint32
	for _, pid := range pids {
		if _, ok := s.matches(uint32(pid)); ok {
			out = append(out, uint32(pid))
		}
	}
	return out
}

// describe says what is traced, for the log.
func (s *selection) describe() string {
	var parts []string
	if len(s.pids) > 0 {
		parts = append(parts, "pids "+joinPIDs(s.pids))
	}
	for _, r := range s.rules.Include {
		parts = append(parts, "rule "+r.String())
	}
	if s.all {
		parts = append(parts, "all processes")
	}
	for _, r := range s.rules.Exclude {
		parts = append(parts, "excluding "+r.String())
	}
	return strings.Join(parts, ", ")
}

func joinPIDs(pids map[uint32]bool) string {
	sorted := slices.Sorted(maps.Keys(pids))
	parts := make([]string, len(sorted))
	for i, p := range sorted {
		parts[i] = strconv.FormatUint(uint64(p), 10)
	}
	return strings.Join(parts, ",")
}
