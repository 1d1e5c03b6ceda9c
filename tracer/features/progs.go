package features

import (
	"errors"
	"fmt"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"golang.org/x/sys/unix"
)

// returnInsns is the smallest valid program: return rc.
func returnInsns(rc int32) asm.Instructions {
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, rc),
		asm.Return(),
	}
}

// counterInsns adds one to the first slot of the array m each time the
// program runs, so a check can tell that an attached program really fired.
func counterInsns(m *ebpf.Map) asm.Instructions {
	return asm.Instructions{
		asm.StoreImm(asm.RFP, -4, 0, asm.Word),
		asm.LoadMapPtr(asm.R1, m.FD()),
		asm.Mov.Reg(asm.R2, asm.RFP),
		asm.Add.Imm(asm.R2, -4),
		asm.FnMapLookupElem.Call(),
		asm.JEq.Imm(asm.R0, 0, "exit"),
		asm.Mov.Imm(asm.R1, 1),
		asm.StoreXAdd(asm.R0, asm.R1, asm.DWord),
		asm.Mov.Imm(asm.R0, 0).WithSymbol("exit"),
		asm.Return(),
	}
}

// counter is a one-slot array that counts the runs of a program.
type counter struct {
	m *ebpf.Map
}

func newCounter() (*counter, error) {
	m, err := ebpf.NewMap(&ebpf.MapSpec{
		Name:       "sonde_probe",
		Type:       ebpf.Array,
		KeySize:    4,
		ValueSize:  8,
		MaxEntries: 1,
	})
	if err != nil {
		return nil, fmt.Errorf("create counter map: %w", err)
	}
	return &counter{m: m}, nil
}

// program loads a program of type pt counting its runs in c.
func (c *counter) program(pt ebpf.ProgramType) (*ebpf.Program, error) {
	return loadProgram(&ebpf.ProgramSpec{
		Name:         "sonde_probe",
		Type:         pt,
		Instructions: counterInsns(c.m),
		License:      "GPL",
	})
}

func (c *counter) value() (uint64, error) {
	var n uint64
	if err := c.m.Lookup(uint32(0), &n); err != nil {
		return 0, fmt.Errorf("read counter: %w", err)
	}
	return n, nil
}

func (c *counter) Close() error {
	return c.m.Close()
}

func loadProgram(spec *ebpf.ProgramSpec) (*ebpf.Program, error) {
	if spec.Name == "" {
		spec.Name = "sonde_probe"
	}
	if spec.License == "" {
		spec.License = "GPL"
	}
	prog, err := ebpf.NewProgram(spec)
	if err != nil {
		return nil, &loadError{typ: spec.Type, err: err}
	}
	return prog, nil
}

// loadError keeps the kernel's error for errors.Is while printing only the
// verifier line that explains it.
type loadError struct {
	typ ebpf.ProgramType
	err error
}

func (e *loadError) Error() string {
	return fmt.Sprintf("load %s program: %s", e.typ, verifierReason(e.err))
}

func (e *loadError) Unwrap() error { return e.err }

// memlockHint is what cilium/ebpf appends to every EPERM. Kernels since 5.11
// account BPF memory to cgroups instead, so on them it misleads.
const memlockHint = " (MEMLOCK may be too low, consider rlimit.RemoveMemlock)"

// verifierReason shortens a load error to what explains it: the last line
// of the verifier log when there is one, else the kernel's errno.
func verifierReason(err error) string {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) && len(verr.Log) > 0 {
		last := ""
		for _, l := range verr.Log {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "processed ") {
				last = l
			}
		}
		if last != "" {
			return fmt.Sprintf("%v (verifier: %s)", verr.Cause, last)
		}
	}
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}
