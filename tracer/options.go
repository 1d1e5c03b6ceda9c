package tracer

import (
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/sondehq/sonde/tracer/discover"
	"github.com/sondehq/sonde/tracer/export"
)

// Sink receives finished spans. It must not block: the event loop calls it.
type Sink interface {
	Export(*export.Span)
}

// Options configures a Tracer. The zero value traces every process and needs
// only a Sink.
type Options struct {
	// PIDs selects processes by id.
	PIDs []int
	// Exe selects processes whose executable path matches one of these
	// globs (path.Match syntax). A pattern without a slash matches the
	// executable's base name. New processes are matched as they exec.
	Exe []string
	// Select and Exclude are selector rules (see discover.Rule): a process
	// is traced when it matches a Select rule, an Exe glob or PIDs, and no
	// Exclude rule. Excluding wins over PIDs.
	Select  []discover.Rule
	Exclude []discover.Rule
	// With no PIDs, Exe or Select, every process but sonde itself (and the
	// excluded) is traced.

	// CaptureBytes bounds the payload copied per syscall. Default 4096.
	CaptureBytes int
	// RingBufferBytes sizes the kernel-to-user ring buffer. A power of two
	// multiple of the page size. Default 8 MiB.
	RingBufferBytes int
	// MaxConns bounds the connections tracked at once. Default 65536.
	MaxConns int

	Sink   Sink
	Logger *slog.Logger

	// NoGoProbes leaves Go programs to socket capture alone: no uprobes.
	NoGoProbes bool
	// NoSSLProbes leaves TLS unread: no uprobes on OpenSSL libraries.
	NoSSLProbes bool

	// ProcRoot is where procfs is mounted. Default /proc.
	ProcRoot string

	// LinkHold is how long a server span whose client end sonde also
	// traces waits for that client span (same-host linking), and LinkMax
	// how many spans wait at once; beyond either, the span is exported
	// alone. Defaults 1s and 65536. A negative LinkHold turns linking off.
	LinkHold time.Duration
	LinkMax  int

	// Inject writes a W3C traceparent into plaintext HTTP/1 requests that
	// selected processes send to other hosts, so that the receiving side
	// joins the trace (bpf/inject.c). Requests that carry one already are
	// left alone; traffic that stays on the host is never changed.
	Inject bool

	// DataHooks says where socket bytes are read: DataHooksAuto (the zero
	// value) picks the socket layer's tracepoints where the kernel has
	// them, else the syscall exit tracepoints.
	DataHooks DataHooks
}

// DataHooks names the tracepoints the data path hooks (bpf/socket.c).
type DataHooks int

const (
	// DataHooksAuto uses DataHooksSocket where its tracepoints attach, else
	// DataHooksSyscalls. With the socket hooks, it also attaches the
	// sendmmsg and recvmmsg exits once a selected process is seen moving
	// TCP bytes with one of them.
	DataHooksAuto DataHooks = iota
	// DataHooksSocket reads bytes at sock:sock_send_length and
	// sock:sock_recv_length (kernel 6.3 on): they fire for socket calls
	// only, and cost a traced call about a third of a syscall tracepoint.
	// No syscall tracepoint is attached: sendmmsg and recvmmsg bytes are
	// counted as unread (Stats.UnreadCalls).
	DataHooksSocket
	// DataHooksSyscalls reads bytes at the sys_exit tracepoints of read,
	// write and the other calls that move bytes: every kernel has them.
	DataHooksSyscalls
)

var dataHooksNames = [...]string{"auto", "socket", "syscalls"}

func (h DataHooks) String() string {
	if h < 0 || int(h) >= len(dataHooksNames) {
		return fmt.Sprintf("DataHooks(%d)", int(h))
	}
	return dataHooksNames[h]
}

// ParseDataHooks reads "auto", "socket" or "syscalls".
func ParseDataHooks(s string) (DataHooks, error) {
	for i, name := range dataHooksNames {
		if s == name {
			return DataHooks(i), nil
		}
	}
	return 0, fmt.Errorf("data hooks %q: want auto, socket or syscalls", s)
}

// Limits of the kernel side, mirrored from bpf/headers/events.h.
const (
	MaxCaptureBytes        = 16384
	defaultCaptureBytes    = 4096
	defaultRingBufferBytes = 8 << 20
	defaultMaxConns        = 65536
	defaultLinkHold        = time.Second
	defaultLinkMax         = 65536
)

func (o *Options) withDefaults() (Options, error) {
	var r Options
	if o != nil {
		r = *o
	}
	if r.CaptureBytes == 0 {
		r.CaptureBytes = defaultCaptureBytes
	}
	if r.CaptureBytes < 64 || r.CaptureBytes > MaxCaptureBytes {
		return r, fmt.Errorf("capture bytes %d: must be between 64 and %d", r.CaptureBytes, MaxCaptureBytes)
	}
	if r.RingBufferBytes == 0 {
		r.RingBufferBytes = defaultRingBufferBytes
	}
	if r.RingBufferBytes < 4096 || r.RingBufferBytes&(r.RingBufferBytes-1) != 0 {
		return r, fmt.Errorf("ring buffer bytes %d: must be a power of two of at least 4096", r.RingBufferBytes)
	}
	if r.MaxConns == 0 {
		r.MaxConns = defaultMaxConns
	}
	if r.MaxConns < 1 {
		return r, fmt.Errorf("max conns %d: must be positive", r.MaxConns)
	}
	if r.Sink == nil {
		return r, fmt.Errorf("no sink for spans")
	}
	if r.LinkHold == 0 {
		r.LinkHold = defaultLinkHold
	}
	if r.LinkHold > time.Minute {
		return r, fmt.Errorf("link hold %v: must be at most a minute", r.LinkHold)
	}
	if r.LinkMax == 0 {
		r.LinkMax = defaultLinkMax
	}
	if r.LinkMax < 0 {
		return r, fmt.Errorf("link max %d: must be positive", r.LinkMax)
	}
	if r.DataHooks < DataHooksAuto || r.DataHooks > DataHooksSyscalls {
		return r, fmt.Errorf("data hooks %d: unknown", int(r.DataHooks))
	}
	if r.Logger == nil {
		r.Logger = slog.New(slog.DiscardHandler)
	}
	if r.ProcRoot == "" {
		r.ProcRoot = "/proc"
	}
	for _, pid := range r.PIDs {
		if pid <= 0 {
			return r, fmt.Errorf("pid %d: must be positive", pid)
		}
	}
	return r, nil
}

// selfPID is sonde's own process, never traced.
func (o *Options) selfPID() uint32 { return uint32(os.Getpid()) }
