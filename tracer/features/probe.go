package features

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"golang.org/x/sys/unix"
)

// Status is the outcome of one check.
type Status string

const (
	// OK means the feature works as sonde uses it.
	OK Status = "ok"
	// Missing means the kernel or the process lacks the feature.
	Missing Status = "missing"
	// Degraded means the feature works only in part.
	Degraded Status = "degraded"
	// Unknown means the check could not tell, typically for lack of
	// privileges or of a feature the check itself depends on.
	Unknown Status = "unknown"
)

// Names of the checks, as they appear in [Check.Name].
const (
	Capabilities   = "capabilities"
	BTF            = "btf"
	Tracefs        = "tracefs"
	BPFFS          = "bpffs"
	Debugfs        = "debugfs"
	Cgroup2        = "cgroup2"
	Tracepoints    = "tracepoints"
	RawTracepoints = "raw_tracepoints"
	// SocketTracepoints are sock:sock_send_length and sock:sock_recv_length.
	SocketTracepoints = "socket_tracepoints"
	Kprobes           = "kprobes"
	Fentry            = "fentry"
	Uprobes           = "uprobes"
	Uretprobes        = "uretprobes"
	RingBuf           = "ringbuf"
	ProbeWriteUser    = "probe_write_user"
	SockOps           = "sockops"
	SkMsg             = "sk_msg"
	MsgPushData       = "msg_push_data"
)

// Check is the result of probing one feature.
type Check struct {
	Name   string
	Status Status
	// Detail says what was observed, including the kernel's error when the
	// feature is missing.
	Detail string
	// Impact is what sonde loses when the feature is not OK.
	Impact string
}

// Report is the result of [Probe].
type Report struct {
	// Kernel is the release and machine of the running kernel.
	Kernel string
	Checks []Check
}

// Missing reports whether the named check ran and found the feature missing.
// Unknown results are not missing: nothing is known about them.
func (r Report) Missing(name string) bool {
	c, ok := r.Find(name)
	return ok && c.Status == Missing
}

// Find returns the named check.
func (r Report) Find(name string) (Check, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return Check{}, false
}

// WriteTo writes the report as a table, with the impact of every check that
// is not OK on a line of its own.
func (r Report) WriteTo(w io.Writer) (int64, error) {
	cw := &countingWriter{w: w}
	tw := tabwriter.NewWriter(cw, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "kernel %s\n\n", r.Kernel)
	fmt.Fprintln(tw, "CHECK\tSTATUS\tDETAIL")
	for _, c := range r.Checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Name, c.Status, c.Detail)
		if c.Status != OK && c.Impact != "" {
			fmt.Fprintf(tw, "\t\timpact: %s\n", c.Impact)
		}
	}
	err := tw.Flush()
	return cw.n, err
}

type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// ProbeOptions tunes [Probe]. A nil *ProbeOptions runs every check.
type ProbeOptions struct {
	// Checks names the checks to run; empty runs all of them. The report
	// keeps the order of [Probe], not the order given here.
	Checks []string
	// NoMount stops Probe from mounting tracefs when none is mounted.
	// Tracepoint and kprobe attachment cannot be tested without tracefs and
	// are then reported as unknown. By default, when a check needs tracefs,
	// Probe mounts it at /sys/kernel/tracing just as `sonde trace` would, and
	// leaves it mounted: unmounting could pull it from under another tracer
	// that found it mounted meanwhile.
	NoMount bool
}

// check describes one probe. run returns the status and detail; Probe adds
// the name and impact.
type check struct {
	name   string
	impact string
	run    func(*prober) (Status, string)
}

// checks is the order of the report: privileges and infrastructure first,
// then the program types and hooks that depend on them.
var checks = []check{
	{Capabilities, "without CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN) sonde cannot load or attach anything", (*prober).capabilities},
	{BTF, "no CO-RE: sonde's programs cannot be relocated for this kernel, so nothing can be traced", (*prober).btf},
	{Tracefs, "sonde trace mounts tracefs at " + tracefsPath + " itself, which needs CAP_SYS_ADMIN", (*prober).tracefs},
	{BPFFS, "needed only to pin objects; sonde mounts it at " + bpffsPath + " when it pins", (*prober).bpffs},
	{Debugfs, "none: sonde uses tracefs directly", (*prober).debugfs},
	{Cgroup2, "sockops and sk_msg programs have no cgroup to attach to", (*prober).cgroup2},
	{Tracepoints, "socket reads and writes cannot be captured from syscall tracepoints: no plaintext HTTP or gRPC", (*prober).tracepoints},
	{RawTracepoints, "no raw sys_enter/sys_exit hooks: syscall capture needs per-syscall tracepoints", (*prober).rawTracepoints},
	{SocketTracepoints, "socket bytes are read at the sys_exit tracepoints instead (--data-hooks=syscalls): about three times the cost per traced call, and every read and write on the host pays the syscall tracepoint's dispatch", (*prober).socketTracepoints},
	{Kprobes, "no kernel function probes: socket I/O must come from syscall tracepoints", (*prober).kprobes},
	{Fentry, "no fentry/fexit: sonde uses tracepoints instead", (*prober).fentry},
	{Uprobes, "no user-space probes: no TLS (OpenSSL, Go crypto/tls) or Go runtime instrumentation", (*prober).uprobes},
	{Uretprobes, "no return probes: return values of C functions (such as SSL_read's length) are lost", (*prober).uretprobes},
	{RingBuf, "events must go through per-CPU perf buffers: more copies and no global order", (*prober).ringbuf},
	{ProbeWriteUser, "trace context cannot be written into a traced process's memory", (*prober).probeWriteUser},
	{SockOps, "no per-connection socket hooks for context propagation", (*prober).sockops},
	{SkMsg, "traceparent cannot be injected into outgoing plaintext HTTP/1 requests", (*prober).skMsg},
	{MsgPushData, "sk_msg cannot grow a message, so no traceparent header can be inserted", (*prober).msgPushData},
}

// Probe runs the checks and returns their results. It never fails: a check
// that cannot run is reported as [Unknown], and a panic in one check is
// recovered so the others still run. Checks run one after another, and the
// remaining ones are reported as unknown once ctx is done.
func Probe(ctx context.Context, opts *ProbeOptions) Report {
	if opts == nil {
		opts = &ProbeOptions{}
	}

	r := Report{Kernel: kernelRelease()}
	p := newProber(opts)
	for _, c := range checks {
		if len(opts.Checks) > 0 && !slices.Contains(opts.Checks, c.name) {
			continue
		}
		res := Check{Name: c.name, Impact: c.impact}
		if err := ctx.Err(); err != nil {
			res.Status, res.Detail = Unknown, "not run: "+err.Error()
		} else {
			res.Status, res.Detail = runCheck(p, c.run)
		}
		r.Checks = append(r.Checks, res)
	}
	return r
}

func runCheck(p *prober, run func(*prober) (Status, string)) (status Status, detail string) {
	defer func() {
		if v := recover(); v != nil {
			status, detail = Unknown, fmt.Sprintf("check panicked: %v", v)
		}
	}()
	return run(p)
}

func kernelRelease() string {
	var u unix.Utsname
	if err := unix.Uname(&u); err != nil {
		return "unknown"
	}
	return unix.ByteSliceToString(u.Release[:]) + " " + unix.ByteSliceToString(u.Machine[:])
}

// joinNonEmpty joins the non-empty parts with "; ".
func joinNonEmpty(parts ...string) string {
	return strings.Join(slices.DeleteFunc(parts, func(s string) bool { return s == "" }), "; ")
}
