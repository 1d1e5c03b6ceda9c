package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/sondehq/sonde/offsets"
	"github.com/sondehq/sonde/tracer"
	"github.com/sondehq/sonde/tracer/discover"
)

// psRow is one process of `sonde ps`. The JSON names are a stable
// interface: scripts read them.
type psRow struct {
	PID          int      `json:"pid"`
	Service      string   `json:"service"`
	Exe          string   `json:"exe"`
	Language     string   `json:"language"`
	GoVersion    string   `json:"go_version"`
	GoModule     string   `json:"go_module"`
	TLS          string   `json:"tls"`
	TLSPath      string   `json:"tls_path"`
	TLSVersion   string   `json:"tls_version"`
	Traced       bool     `json:"traced"`
	Reason       string   `json:"reason"`
	Capture      string   `json:"capture"`
	KernelThread bool     `json:"kernel_thread"`
	Notes        []string `json:"notes"`
}

// psOptions is what `sonde ps` was asked, in a form tests can build.
type psOptions struct {
	procRoot string
	self     int
	pids     []int
	exes     []string
	selects  []discover.Rule
	excludes []discover.Rule
	all      bool
}

func psCmd(args []string) int {
	fs := flag.NewFlagSet("sonde ps", flag.ContinueOnError)
	var (
		pids     pidList
		exes     stringList
		selects  ruleList
		excludes ruleList
	)
	fs.Var(&pids, "pid", "as for sonde trace: this process id is traced unless excluded (repeatable, or comma-separated)")
	fs.Var(&exes, "exe", "as for sonde trace: processes whose executable matches this glob are traced (repeatable)")
	fs.Var(&selects, "select", "as for sonde trace: processes matching this rule are traced (repeatable); keys exe, cmdline, port, cgroup, container, otel_service_name")
	fs.Var(&excludes, "exclude", "as for sonde trace: processes matching this rule are never traced (repeatable)")
	asJSON := fs.Bool("json", false, "print one JSON array")
	all := fs.Bool("all", false, "list kernel threads too")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: sonde ps [flags]\n\nList processes with their language, TLS library, and whether `sonde trace`\nwith the same selection flags would trace them, and why. Loads no BPF.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sonde ps: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	rows, err := listProcesses(psOptions{
		procRoot: "/proc",
		self:     os.Getpid(),
		pids:     pids,
		exes:     exes,
		selects:  selects,
		excludes: excludes,
		all:      *all,
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "sonde ps:", err)
		return 1
	}
	if *asJSON {
		err = writePsJSON(os.Stdout, rows)
	} else {
		err = writePsTable(os.Stdout, rows)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "sonde ps:", err)
		return 1
	}
	return 0
}

// newPsSelector decides as `sonde trace` does: --exe globs are include
// rules.
func newPsSelector(o psOptions) (*discover.Selector, error) {
	include := slices.Clone(o.selects)
	for _, g := range o.exes {
		include = append(include, discover.Rule{Exe: g})
	}
	sel, err := discover.NewSelector(o.pids, include, o.excludes)
	if err != nil {
		return nil, fmt.Errorf("selection: %w", err)
	}
	return sel, nil
}

// listProcesses builds a row per process under o.procRoot, and per --pid
// that names no process, sorted by pid.
func listProcesses(o psOptions) ([]psRow, error) {
	sel, err := newPsSelector(o)
	if err != nil {
		return nil, err
	}
	pids, err := discover.Scan(o.procRoot)
	if err != nil {
		return nil, err
	}
	for _, p := range o.pids {
		if !slices.Contains(pids, p) {
			pids = append(pids, p)
		}
	}
	slices.Sort(pids)
	in := &discover.Inspector{ProcRoot: o.procRoot}
	var rows []psRow
	for _, pid := range pids {
		row := describe(o, sel, in, pid)
		if row.KernelThread && !o.all {
			continue
		}
		rows = append(rows, row)
	}
	return rows, nil
}

// describe gathers one process's row. Every fact that cannot be read is
// left empty and says why in Notes: ps is most needed on the machines where
// something is off.
func describe(o psOptions, sel *discover.Selector, in *discover.Inspector, pid int) psRow {
	row := psRow{PID: pid, Capture: "none"}
	dir := filepath.Join(o.procRoot, strconv.Itoa(pid))
	comm, kthread, statErr := readStat(dir)
	if errors.Is(statErr, os.ErrNotExist) {
		row.Reason = "exited"
		return row
	}
	if statErr != nil {
		row.Notes = append(row.Notes, statErr.Error())
	}
	if kthread {
		row.KernelThread, row.Service, row.Reason = true, comm, "kernel thread"
		return row
	}
	p, err := discover.Read(o.procRoot, pid, discover.FieldAll)
	if err != nil {
		row.Reason = "exited"
		return row
	}
	row.Exe = p.Exe
	row.Service = serviceName(p, comm)
	row.Notes = append(row.Notes, missingFacts(dir, p)...)

	if rt, err := in.Runtime(pid); err == nil {
		row.Language, row.GoVersion, row.GoModule = rt.Language, rt.GoVersion, rt.GoModule
		row.TLS, row.TLSPath, row.TLSVersion = rt.TLS, rt.TLSPath, rt.TLSVersion
		for _, e := range rt.Errs {
			var re *discover.ReadError
			if errors.As(e, &re) && re.File == "exe" && p.Exe == "" {
				continue // already noted by missingFacts
			}
			if errors.As(e, &re) && errors.Is(e, os.ErrPermission) {
				e = fmt.Errorf("%s: %w", re.File, unwrapPath(re.Err))
			}
			row.Notes = append(row.Notes, e.Error()+"; language or TLS may be unknown")
		}
	}

	// A process that exits while it is read leaves a row of "no such
	// file" notes: say what happened instead.
	if _, err := os.Stat(filepath.Join(dir, "stat")); err != nil {
		return psRow{PID: pid, Service: row.Service, Capture: "none", Reason: "exited"}
	}
	if pid == o.self {
		row.Reason = "sonde itself"
		return row
	}
	row.Traced, row.Reason = sel.Decide(p)
	if row.Traced {
		row.Capture = captureOf(row, goCoverage(o.procRoot, pid, row), sslCoverage(o.procRoot, pid, row))
	}
	return row
}

// goCoverage asks what the Go probes would cover in a Go process's
// executable; nil for a process that is not Go.
func goCoverage(procRoot string, pid int, r psRow) *goPlan {
	if r.Language != discover.LangGo {
		return nil
	}
	groups, err := tracer.GoCoverage(filepath.Join(procRoot, strconv.Itoa(pid), "exe"))
	return &goPlan{groups: groups, err: err}
}

type goPlan struct {
	groups []string
	err    error
}

// sslCoverage asks where the OpenSSL probes would go in the libssl a
// process maps, or in its executable when OpenSSL is linked in; nil for a
// process without either.
func sslCoverage(procRoot string, pid int, r psRow) *sslPlan {
	dir := filepath.Join(procRoot, strconv.Itoa(pid))
	var file string
	switch r.TLS {
	case discover.TLSLibssl:
		file = filepath.Join(dir, "root", r.TLSPath)
	case discover.TLSStatic:
		file = filepath.Join(dir, "exe")
	default:
		return nil
	}
	sites, err := offsets.SSLSites(file)
	return &sslPlan{sites: sites, err: err}
}

type sslPlan struct {
	sites []offsets.SSLSite
	err   error
}

// String names what the probes read, and warns of any that the kernel
// must single-step.
func (p *sslPlan) String() string {
	if p.err != nil {
		return "tls: not read (" + p.err.Error() + ")"
	}
	var ops, single []string
	for _, s := range p.sites {
		if s.Op != offsets.SSLHandshake && !slices.Contains(ops, s.Op.String()) {
			ops = append(ops, s.Op.String())
		}
		if !s.Emulated {
			single = append(single, s.Func)
		}
	}
	out := "tls: openssl probes (" + strings.Join(ops, ", ") + ")"
	if len(single) > 0 {
		out += ", single-stepped: " + strings.Join(single, ", ")
	}
	return out
}

// captureOf says what tracing gives the process today, so that a TLS
// service is not taken to be fully covered.
func captureOf(r psRow, g *goPlan, ssl *sslPlan) string {
	c := "sockets"
	if g != nil {
		if g.err != nil {
			return c + "; go probes: none (" + g.err.Error() + ")"
		}
		// crypto/tls is covered: the probes see requests above it.
		return c + "; go probes: " + strings.Join(g.groups, ", ")
	}
	if ssl != nil {
		c += "; " + ssl.String()
	}
	return c
}

func serviceName(p *discover.Process, comm string) string {
	if s := p.Env["OTEL_SERVICE_NAME"]; s != "" {
		return s
	}
	if p.Exe != "" {
		return path.Base(p.Exe)
	}
	if len(p.Cmdline) > 0 && p.Cmdline[0] != "" {
		return path.Base(p.Cmdline[0])
	}
	return comm
}

// missingFacts names the facts Read left empty because their /proc file
// could not be read, and what that costs. discover.Read leaves them empty
// without a word, so the cause is asked again here, only for those.
func missingFacts(dir string, p *discover.Process) []string {
	var notes []string
	note := func(what, cost string, err error) {
		if err != nil {
			notes = append(notes, fmt.Sprintf("%s: %v; %s", what, unwrapPath(err), cost))
		}
	}
	if p.Exe == "" {
		_, err := os.Readlink(filepath.Join(dir, "exe"))
		note("exe", "exe rules cannot match", err)
	}
	if p.Env == nil {
		_, err := os.ReadFile(filepath.Join(dir, "environ"))
		note("environ", "OTEL_SERVICE_NAME unknown", err)
	}
	if p.Cgroup == "" {
		f, err := os.Open(filepath.Join(dir, "cgroup"))
		if err == nil {
			f.Close()
		}
		note("cgroup", "cgroup and container rules cannot match", err)
	}
	if len(p.ListenPorts) == 0 {
		f, err := os.Open(filepath.Join(dir, "fd"))
		if err == nil {
			_, err = f.Readdirnames(1)
			if err == io.EOF {
				err = nil
			}
			f.Close()
		}
		note("fd", "listening ports unknown, port rules cannot match", err)
	}
	return notes
}

// unwrapPath drops the path from an *os.PathError: the note already names
// the file.
func unwrapPath(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// readStat returns the command name and whether the process is a kernel
// thread, from /proc/PID/stat.
func readStat(dir string) (comm string, kthread bool, err error) {
	f, err := os.Open(filepath.Join(dir, "stat"))
	if err != nil {
		return "", false, fmt.Errorf("stat: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 512))
	if err != nil {
		return "", false, fmt.Errorf("stat: %w", err)
	}
	st, err := discover.ParseStat(b)
	return st.Comm, st.KernelThread, err
}

func writePsJSON(w io.Writer, rows []psRow) error {
	if rows == nil {
		rows = []psRow{}
	}
	for i := range rows {
		if rows[i].Notes == nil {
			rows[i].Notes = []string{}
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rows)
}

func writePsTable(w io.Writer, rows []psRow) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "PID\tSERVICE\tEXE\tLANG\tGO\tTLS\tTRACED\tCAPTURE\tWHY")
	dash := func(s string) string {
		if s == "" {
			return "-"
		}
		return s
	}
	for _, r := range rows {
		tls := r.TLS
		if r.TLSPath != "" {
			tls = path.Base(r.TLSPath)
		}
		traced := "no"
		if r.Traced {
			traced = "yes"
		}
		why := r.Reason
		if len(r.Notes) > 0 {
			why += " [" + strings.Join(r.Notes, "; ") + "]"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.PID, dash(r.Service), dash(r.Exe),
			dash(r.Language), dash(r.GoVersion), dash(tls), traced, r.Capture, why)
	}
	return tw.Flush()
}
