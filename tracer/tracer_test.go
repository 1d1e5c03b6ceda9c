package tracer

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/btf"

	"github.com/sondehq/sonde/internal/testutil"
	"github.com/sondehq/sonde/tracer/discover"
	"github.com/sondehq/sonde/tracer/export"
)

// collectSink keeps the spans it is given.
type collectSink struct {
	mu    sync.Mutex
	spans []*export.Span
}

func (s *collectSink) Export(sp *export.Span) {
	s.mu.Lock()
	s.spans = append(s.spans, sp)
	s.mu.Unlock()
}

// sondeProgram reports whether a kernel program name is one of sonde's.
func sondeProgram(name string) bool {
	for _, p := range []string{"exit_", "sock_", "process_"} {
		if strings.HasPrefix(name, p) {
			return true
		}
	}
	return false
}

// loadedPrograms lists the BPF programs loaded on the machine by ID.
func loadedPrograms(t *testing.T) map[ebpf.ProgramID]string {
	t.Helper()
	out := map[ebpf.ProgramID]string{}
	var id ebpf.ProgramID
	for {
		next, err := ebpf.ProgramGetNextID(id)
		if errors.Is(err, os.ErrNotExist) {
			return out
		}
		if err != nil {
			t.Fatalf("next program id after %d: %v", id, err)
		}
		id = next
		p, err := ebpf.NewProgramFromID(id)
		if err != nil {
			continue // unloaded meanwhile
		}
		info, err := p.Info()
		p.Close()
		if err != nil {
			t.Fatalf("info of program %d: %v", id, err)
		}
		out[id] = info.Name
	}
}

// programIDMark loads and unloads a trivial program and returns its ID.
// Program IDs only grow, so two marks bound what was loaded in between.
func programIDMark(t *testing.T) ebpf.ProgramID {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.TracePoint,
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()},
		License:      "GPL",
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	id, ok := info.ID()
	if !ok {
		t.Fatal("kernel does not report program ids")
	}
	return id
}

func sondeProgramCount(t *testing.T) int {
	t.Helper()
	spec, err := loadSocket()
	if err != nil {
		t.Fatal(err)
	}
	return len(spec.Programs)
}

// startSleeper starts a child process that lives for the test.
func startSleeper(t *testing.T) int {
	t.Helper()
	cmd := exec.Command("sleep", "30")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
	})
	return cmd.Process.Pid
}

// noSuchPID is above PID_MAX_LIMIT (4194304): no process ever has it.
const noSuchPID = 1<<22 + 1

type badOptions struct {
	name string
	opts *Options
	want string // in the error message
}

func invalidOptions(sink Sink) []badOptions {
	return []badOptions{
		{"nil options", nil, "sink"},
		{"no sink", &Options{}, "sink"},
		{"capture bytes too small", &Options{Sink: sink, CaptureBytes: 63}, "capture bytes 63"},
		{"capture bytes negative", &Options{Sink: sink, CaptureBytes: -1}, "capture bytes -1"},
		{"capture bytes too large", &Options{Sink: sink, CaptureBytes: MaxCaptureBytes + 1}, fmt.Sprintf("capture bytes %d", MaxCaptureBytes+1)},
		{"ring buffer not a power of two", &Options{Sink: sink, RingBufferBytes: 3 << 20}, "ring buffer bytes"},
		{"ring buffer too small", &Options{Sink: sink, RingBufferBytes: 2048}, "ring buffer bytes 2048"},
		{"ring buffer negative", &Options{Sink: sink, RingBufferBytes: -4096}, "ring buffer bytes"},
		{"max conns negative", &Options{Sink: sink, MaxConns: -5}, "max conns -5"},
		{"pid 0", &Options{Sink: sink, PIDs: []int{0}}, "pid 0"},
		{"negative pid", &Options{Sink: sink, PIDs: []int{os.Getpid(), -7}}, "pid -7"},
		{"bad exe pattern", &Options{Sink: sink, Exe: []string{"python[3"}}, "python[3"},
	}
}

// Invalid options are rejected by New before it needs any privilege.
func TestNewInvalidOptions(t *testing.T) {
	for _, tc := range invalidOptions(&collectSink{}) {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := New(tc.opts)
			if err == nil {
				tr.Close()
				t.Fatalf("New accepted %+v", tc.opts)
			}
			if tr != nil {
				t.Errorf("New returned a tracer with error %v", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
		})
	}
}

func TestOptionsDefaults(t *testing.T) {
	sink := &collectSink{}
	o, err := (&Options{Sink: sink}).withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	if o.CaptureBytes != defaultCaptureBytes || o.RingBufferBytes != defaultRingBufferBytes ||
		o.MaxConns != defaultMaxConns || o.ProcRoot != "/proc" || o.Logger == nil || o.Sink != sink {
		t.Errorf("defaults: %+v", o)
	}
	// Limits themselves are valid.
	for _, opts := range []Options{
		{Sink: sink, CaptureBytes: 64, RingBufferBytes: 4096, MaxConns: 1},
		{Sink: sink, CaptureBytes: MaxCaptureBytes, RingBufferBytes: 1 << 30},
	} {
		if _, err := opts.withDefaults(); err != nil {
			t.Errorf("withDefaults(%+v): %v", opts, err)
		}
	}
}

// Rejected options, a pid that does not exist included, load nothing into
// the kernel.
func TestNewInvalidOptionsLoadsNothing(t *testing.T) {
	testutil.RequireBPF(t)
	testutil.RequireTracepoints(t)
	n := sondeProgramCount(t)
	cases := append(invalidOptions(&collectSink{}),
		badOptions{"no such pid", &Options{Sink: &collectSink{}, PIDs: []int{noSuchPID}}, fmt.Sprintf("pid %d", noSuchPID)},
		badOptions{"no such pid after a live one", &Options{Sink: &collectSink{}, PIDs: []int{os.Getpid(), noSuchPID}}, fmt.Sprintf("pid %d", noSuchPID)},
	)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := programIDMark(t)
			tr, err := New(tc.opts)
			after := programIDMark(t)
			if err == nil {
				tr.Close()
				t.Fatalf("New accepted %+v", tc.opts)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not mention %q", err, tc.want)
			}
			// Other programs may be loaded meanwhile by others, but not as
			// many as sonde has.
			if loaded := int(after - before - 1); loaded >= n {
				t.Errorf("New loaded %d programs before rejecting the options (%v)", loaded, err)
			}
		})
	}
}

func TestNewAttachAndClose(t *testing.T) {
	testutil.RequireBPF(t)
	testutil.RequireTracepoints(t)
	pid := startSleeper(t)

	preexisting := loadedPrograms(t)
	sink := &collectSink{}
	tr, err := New(&Options{PIDs: []int{pid}, Sink: sink})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })

	// Every program of the object is loaded, under a name like sonde's.
	spec, err := loadSocket()
	if err != nil {
		t.Fatal(err)
	}
	ours := map[ebpf.ProgramID]string{}
	var lo, hi ebpf.ProgramID
	for name := range spec.Programs {
		p := tr.coll.Programs[name]
		if p == nil {
			t.Errorf("program %s not loaded", name)
			continue
		}
		info, err := p.Info()
		if err != nil {
			t.Fatal(err)
		}
		id, ok := info.ID()
		if !ok {
			t.Fatal("kernel does not report program ids")
		}
		if !sondeProgram(info.Name) {
			t.Errorf("program %s is loaded as %q, not named like sonde's", name, info.Name)
		}
		ours[id] = info.Name
		if lo == 0 || id < lo {
			lo = id
		}
		hi = max(hi, id)
	}
	loaded := loadedPrograms(t)
	for id, name := range ours {
		if loaded[id] != name {
			t.Errorf("program %d (%s) not listed by the kernel", id, name)
		}
	}
	for event := range essential {
		found := false
		for _, ps := range spec.Programs {
			if _, e, _ := tracepointOf(ps.SectionName); e == event {
				found = true
			}
		}
		if !found {
			t.Errorf("no program for essential tracepoint %s", event)
		}
	}
	// Auto takes the socket layer's tracepoints where the kernel has them
	// (6.3 on; these machines run 6.18).
	wantHooks := DataHooksSyscalls
	if kernel, err := btf.LoadKernelSpec(); err != nil {
		t.Fatal(err)
	} else if _, err := kernel.AnyTypeByName("btf_trace_sock_recv_length"); err == nil {
		wantHooks = DataHooksSocket
	}
	if tr.dataHooks != wantHooks {
		t.Errorf("data hooks %s attached by default, want %s", tr.dataHooks, wantHooks)
	}
	if len(tr.links) < len(essential) {
		t.Errorf("%d probes attached, fewer than the %d essential ones", len(tr.links), len(essential))
	}

	// The pid is selected, in the kernel and in user space.
	if bits, ok := tr.targets.(*targetBits); !ok || !bits.Has(uint32(pid)) {
		t.Errorf("pid %d not selected in the kernel's targets bitmap", pid)
	}
	if !tr.selected[uint32(pid)] || !tr.explicit[uint32(pid)] {
		t.Errorf("pid %d not selected in user space", pid)
	}
	if got := tr.targetDescription(); got != fmt.Sprintf("pids %d", pid) {
		t.Errorf("targetDescription() = %q", got)
	}

	// Stats work while attached: the kernel counters are readable.
	if _, err := tr.kernelCounters(); err != nil {
		t.Errorf("kernel counters: %v", err)
	}
	st := tr.Stats()
	if st.Records != 0 || st.Spans != 0 || st.Conns != 0 || st.ParseErrors == nil {
		t.Errorf("stats before Run: %+v", st)
	}

	// Run returns when its context ends.
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- tr.Run(ctx) }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
	if len(tr.links) != 0 {
		t.Errorf("%d probes still attached after Run", len(tr.links))
	}

	if err := tr.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := tr.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	// Stats still work, from the counters saved at Close.
	if _, err := tr.kernelCounters(); err != nil {
		t.Errorf("kernel counters after Close: %v", err)
	}
	_ = tr.Stats()

	// Nothing of ours is left in the kernel.
	for id, name := range ours {
		if p, err := ebpf.NewProgramFromID(id); err == nil {
			p.Close()
			t.Errorf("program %d (%s) still loaded after Close", id, name)
		}
	}
	for id, name := range loadedPrograms(t) {
		if _, ok := preexisting[id]; ok || !sondeProgram(name) {
			continue
		}
		if id >= lo && id <= hi {
			t.Errorf("program %d (%s) loaded with ours still there after Close", id, name)
		}
	}
}

// Each selection mode sets the kernel's switches differently, and the
// verifier prunes the code a switch turns off: every mode must load, or a
// path such as the exec handler would go unverified until a user hits it.
// Injection loads an object of its own, whose sk_msg program once passed
// the verifier's instruction limit on a newer kernel unnoticed but by the
// end-to-end tests.
func TestNewLoadsInEverySelectionMode(t *testing.T) {
	testutil.RequireBPF(t)
	testutil.RequireTracepoints(t)
	pid := startSleeper(t)
	for _, tc := range []struct {
		name string
		opts Options
	}{
		{"all", Options{}},
		{"pids", Options{PIDs: []int{pid}}},
		{"exe", Options{Exe: []string{"/nonexistent/sonde-test"}}},
		{"rules", Options{Select: []discover.Rule{{Cmdline: "*sonde-test*"}}}},
		{"all but excluded", Options{Exclude: []discover.Rule{{Exe: "/nonexistent/*"}}}},
		{"pids with injection", Options{PIDs: []int{pid}, Inject: true}},
		{"pids, data at the syscalls", Options{PIDs: []int{pid}, DataHooks: DataHooksSyscalls}},
		{"pids, data at the socket layer", Options{PIDs: []int{pid}, DataHooks: DataHooksSocket}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.opts
			o.Sink = &collectSink{}
			tr, err := New(&o)
			if err != nil {
				t.Fatal(err)
			}
			defer tr.Close()
			var watch, all uint8
			if err := tr.spec.Variables["cfg_watch_exec"].Get(&watch); err != nil {
				t.Fatal(err)
			}
			if err := tr.spec.Variables["cfg_trace_all"].Get(&all); err != nil {
				t.Fatal(err)
			}
			if (all == 1) != !tr.selection.enabled() || (watch == 1) != tr.selection.watchExec() {
				t.Errorf("cfg_trace_all %d, cfg_watch_exec %d for selection %s", all, watch, tr.targetDescription())
			}
			if want := o.DataHooks; want != DataHooksAuto && tr.dataHooks != want {
				t.Errorf("data hooks %s attached, want %s", tr.dataHooks, want)
			}
			if o.Inject && (tr.inject == nil || tr.inject.msgProg == nil) {
				t.Errorf("injection asked for, but its programs are not loaded")
			}
		})
	}
}

// A connection's note in the opened map, by socket and ports, says how it
// was opened, for the connection whose first bytes came after the note; a
// note taken after them is a later connection's, on a socket freed and
// reused with the same ports, and is left for it.
func TestOpenedRole(t *testing.T) {
	testutil.RequireBPF(t)
	testutil.RequireTracepoints(t)
	tr, err := New(&Options{PIDs: []int{startSleeper(t)}, Sink: &collectSink{}, DataHooks: DataHooksSocket})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	m := tr.coll.Maps["opened"]
	key := func(sock uint64) socketOpenKey { return socketOpenKey{Sock: sock, Sport: 40000, Dport: 8080} }
	const passive, active, reused = 0xffff0001, 0xffff0002, 0xffff0003
	for sock, note := range map[uint64]socketOpenNote{
		passive: {Ts: 100, How: openedPassive},
		active:  {Ts: 100, How: openedActive},
		reused:  {Ts: 300, How: openedActive},
	} {
		if err := m.Put(key(sock), note); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		key  socketOpenKey
		ts   uint64
		want role
		ok   bool
	}{
		{key(passive), 200, roleServer, true},
		{key(passive), 200, 0, false}, // taken
		{key(active), 200, roleClient, true},
		{key(reused), 200, 0, false}, // a later connection's
		{key(reused), 300, roleClient, true},
		{socketOpenKey{Sock: active, Sport: 40001, Dport: 8080}, 200, 0, false}, // other ports
		{key(0xffff0004), 200, 0, false},
	} {
		if got, ok := tr.openedRole(tc.key, tc.ts); got != tc.want || ok != tc.ok {
			t.Errorf("openedRole(%+v, %d) = %v, %v; want %v, %v", tc.key, tc.ts, got, ok, tc.want, tc.ok)
		}
	}
	tr.dataHooks = DataHooksSyscalls
	if err := m.Put(key(passive), socketOpenNote{Ts: 1, How: openedPassive}); err != nil {
		t.Fatal(err)
	}
	if _, ok := tr.openedRole(key(passive), 200); ok {
		t.Error("the syscall hooks' connections take their role from accept and connect, not from the opened map")
	}
}
