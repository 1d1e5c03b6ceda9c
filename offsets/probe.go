package offsets

import (
	"errors"
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// How far into a function ProbeSite looks. Go prologues are at most five
// instructions (MOV, SUB, JB, CMP, JBE for frames over 4 KiB) before
// PUSH RBP, and anything we accept past them must not clobber arguments,
// which real code does within a handful of instructions anyway.
const (
	maxPrologueBytes = 64
	maxPrologueInsts = 8
	// maxLeafScan bounds the search for an emulated instruction in
	// functions without a stack check.
	maxLeafScan = 4
)

// NoSiteError explains why a function has no probe site that is both
// emulated by the kernel and equivalent to the function entry.
type NoSiteError struct {
	Func   string
	Reason string
}

func (e *NoSiteError) Error() string {
	return "no emulated probe site in " + e.Func + ": " + e.Reason
}

// Emulated reports whether Linux (6.18, x86-64) emulates inst when a uprobe
// hits it, instead of single-stepping a copy out of line. Emulation costs
// about 0.6 µs per hit on the reference VM, single-stepping about 17 µs.
//
// The list follows branch_setup_xol_ops and push_setup_xol_ops in
// arch/x86/kernel/uprobes.c: JMP rel8/rel32, CALL rel32, Jcc rel8/rel32,
// the one-byte NOP (0x90), and PUSH of a 64-bit register (0x50-0x57,
// optionally with the exact REX prefix 0x41 for R8-R15). Lengths are
// checked exactly, which rules out every prefix: the kernel refuses to
// register a probe on a branch with a 0x66 prefix at all, and rejects
// segment and LOCK prefixes on any instruction. Multi-byte NOPs (0F 1F)
// are deliberately not counted: 6.18 only treats the 5-byte form
// specially, to optimize USDT probes, which is not what we probe.
func Emulated(inst x86asm.Inst) bool {
	op0 := byte(inst.Opcode >> 24)
	op1 := byte(inst.Opcode >> 16)
	switch {
	case inst.Op == x86asm.PUSH && op0 >= 0x50 && op0 <= 0x57:
		if inst.Len == 1 {
			return true
		}
		return inst.Len == 2 && onlyREX(inst, 0x41)
	case inst.Op == x86asm.NOP:
		return inst.Len == 1 && op0 == 0x90
	case inst.Op == x86asm.JMP:
		return (inst.Len == 2 && op0 == 0xeb) || (inst.Len == 5 && op0 == 0xe9)
	case inst.Op == x86asm.CALL:
		return inst.Len == 5 && op0 == 0xe8
	case isJcc(inst.Op):
		return (inst.Len == 2 && op0 >= 0x70 && op0 <= 0x7f) ||
			(inst.Len == 6 && op0 == 0x0f && op1 >= 0x80 && op1 <= 0x8f)
	}
	return false
}

// onlyREX reports whether the only prefix byte of inst is the REX value rex.
func onlyREX(inst x86asm.Inst, rex byte) bool {
	// x86asm flags a REX prefix as implicit, so compare the raw byte and
	// ignore the flag bits.
	seen := false
	for _, p := range inst.Prefix {
		if p == 0 {
			break
		}
		if byte(p) != rex || seen {
			return false
		}
		seen = true
	}
	return seen
}

func isJcc(op x86asm.Op) bool {
	switch op {
	case x86asm.JA, x86asm.JAE, x86asm.JB, x86asm.JBE, x86asm.JE, x86asm.JNE,
		x86asm.JG, x86asm.JGE, x86asm.JL, x86asm.JLE, x86asm.JNO, x86asm.JNP,
		x86asm.JNS, x86asm.JO, x86asm.JP, x86asm.JS:
		return true
	}
	return false
}

// ProbeSite returns the file offset of the cheapest place to put an entry
// uprobe on fn, and that instruction in Intel syntax.
//
// For a function that starts with Go's stack-bound check, the site is the
// first emulated instruction after the check's JBE: normally PUSH RBP,
// which runs exactly once per call and sees the argument registers and
// RSP exactly as the entry does (the probe fires before the instruction
// executes). The JBE itself would fire twice when the stack grows, since
// morestack restarts the function. For a function without the check
// (NOSPLIT or small leaf functions) it is the first emulated instruction
// among the first few, provided nothing before it branches or writes a
// register that may hold an argument. Otherwise it returns a *NoSiteError;
// the caller can then fall back to fn.Offset and pay for single-stepping.
func (b *Binary) ProbeSite(fn Function) (offset uint64, inst string, err error) {
	code, err := b.code(fn, maxPrologueBytes)
	if err != nil {
		return 0, "", err
	}
	off, in, err := probeSite(code)
	if err != nil {
		var ns *NoSiteError
		if errors.As(err, &ns) {
			ns.Func = fn.Name
		}
		return 0, "", err
	}
	return fn.Offset + uint64(off), x86asm.IntelSyntax(in, fn.Addr+uint64(off), nil), nil
}

// probeSite is ProbeSite on raw machine code starting at the entry point.
func probeSite(code []byte) (int, x86asm.Inst, error) {
	var insts []x86asm.Inst
	var offs []int
	for pc := 0; pc < len(code) && len(insts) < maxPrologueInsts; {
		in, err := decode(code[pc:])
		if err != nil {
			break // a truncated tail; judge with what decoded
		}
		insts = append(insts, in)
		offs = append(offs, pc)
		pc += in.Len
	}
	if len(insts) == 0 {
		return 0, x86asm.Inst{}, &NoSiteError{Reason: "first instruction does not decode"}
	}

	start := 0
	if jbe := stackCheckEnd(insts); jbe >= 0 {
		start = jbe + 1
		limit := start + maxLeafScan
		if i, reason := scan(insts, start, limit); i >= 0 {
			return offs[i], insts[i], nil
		} else if reason == "" {
			reason = "prologue ends before an emulated instruction"
		}
		// The JBE is emulated, and the best we have left: it may fire a
		// second time for one call, after morestack grows the stack.
		if Emulated(insts[jbe]) {
			return offs[jbe], insts[jbe], nil
		}
		return 0, x86asm.Inst{}, &NoSiteError{Reason: "stack check branch is not emulated"}
	}
	i, reason := scan(insts, start, start+maxLeafScan)
	if i >= 0 {
		return offs[i], insts[i], nil
	}
	if reason == "" {
		reason = fmt.Sprintf("no emulated instruction among the first %d", maxLeafScan)
	}
	return 0, x86asm.Inst{}, &NoSiteError{Reason: reason}
}

// scan returns the index of the first emulated instruction in
// insts[start:limit] such that every instruction before it (from start)
// leaves arguments, RSP and control flow alone, or -1 and why not.
func scan(insts []x86asm.Inst, start, limit int) (int, string) {
	for i := start; i < limit && i < len(insts); i++ {
		in := insts[i]
		if Emulated(in) {
			return i, ""
		}
		if r := clobbers(in); r != "" {
			return -1, fmt.Sprintf("%s %s before any emulated instruction", x86asm.IntelSyntax(in, 0, nil), r)
		}
	}
	return -1, ""
}

// clobbers says how in could make a later probe see different arguments
// than the entry, or "" when it cannot. It is a whitelist: flags-only
// instructions, and plain ALU/MOV writes into R12 or R13, which Go's
// ABIInternal never uses for arguments, the closure context (RDX), g (R14)
// or the frame pointer.
func clobbers(in x86asm.Inst) string {
	switch in.Op {
	case x86asm.CMP, x86asm.TEST, x86asm.NOP:
		return ""
	case x86asm.MOV, x86asm.MOVZX, x86asm.MOVSX, x86asm.MOVSXD, x86asm.LEA,
		x86asm.ADD, x86asm.SUB, x86asm.AND, x86asm.OR, x86asm.XOR:
		r, ok := in.Args[0].(x86asm.Reg)
		if !ok {
			return "writes memory"
		}
		if scratch(r) {
			return ""
		}
		return "writes " + r.String()
	}
	if isJcc(in.Op) || in.Op == x86asm.JMP || in.Op == x86asm.CALL || in.Op == x86asm.RET {
		return "changes control flow"
	}
	return "may write state"
}

func scratch(r x86asm.Reg) bool {
	switch r {
	case x86asm.R12, x86asm.R12L, x86asm.R12W, x86asm.R12B,
		x86asm.R13, x86asm.R13L, x86asm.R13W, x86asm.R13B:
		return true
	}
	return false
}

// stackCheckEnd finds Go's stack-bound check at the start of a function
// and returns the index of its JBE, or -1. The three shapes the compiler
// emits (cmd/internal/obj/x86 stacksplit) are, by frame size:
//
//	small:  CMP RSP, [R14+0x10]; JBE morestack
//	medium: LEA R12, [RSP-n]; CMP R12, [R14+0x10]; JBE morestack
//	large:  MOV R12, RSP; SUB R12, n; JB morestack; CMP R12, [R14+0x10]; JBE morestack
func stackCheckEnd(insts []x86asm.Inst) int {
	for i, in := range insts {
		if i > 3 {
			return -1
		}
		if in.Op == x86asm.CMP && isStackGuard(in) {
			if i+1 < len(insts) && insts[i+1].Op == x86asm.JBE {
				return i + 1
			}
			return -1
		}
		switch {
		case in.Op == x86asm.LEA && in.Args[0] == x86asm.R12:
		case in.Op == x86asm.MOV && in.Args[0] == x86asm.R12 && in.Args[1] == x86asm.RSP:
		case in.Op == x86asm.SUB && in.Args[0] == x86asm.R12:
		case in.Op == x86asm.JB:
		default:
			return -1
		}
	}
	return -1
}

// isStackGuard matches CMP {RSP|R12}, [R14+0x10]: the comparison against
// g.stackguard0, with g in R14 as in every ABIInternal function.
func isStackGuard(in x86asm.Inst) bool {
	if in.Args[0] != x86asm.RSP && in.Args[0] != x86asm.R12 {
		return false
	}
	m, ok := in.Args[1].(x86asm.Mem)
	return ok && m.Base == x86asm.R14 && m.Index == 0 && m.Disp == 0x10 && m.Segment == 0
}

// ReturnSites lists the file offsets of the RET instructions in fn. A RET
// is always single-stepped, so this is for the few cases where no entry
// probe of a later function can observe the result. Tail calls (JMP to
// another function) are not returns and are not listed.
func (b *Binary) ReturnSites(fn Function) ([]uint64, error) {
	if fn.Size > maxFuncSize {
		return nil, fmt.Errorf("function %s is %d bytes, over the %d byte limit", fn.Name, fn.Size, maxFuncSize)
	}
	code, err := b.code(fn, fn.Size)
	if err != nil {
		return nil, err
	}
	rets, err := returnSites(code)
	if err != nil {
		return nil, fmt.Errorf("function %s: %w", fn.Name, err)
	}
	for i := range rets {
		rets[i] += fn.Offset
	}
	return rets, nil
}

func returnSites(code []byte) ([]uint64, error) {
	var rets []uint64
	for pc := 0; pc < len(code); {
		in, err := decode(code[pc:])
		if err != nil {
			// Go pads between functions with INT3, which decodes, so an
			// undecodable byte means we are out of step with the
			// instruction stream; a guess would put a probe mid-instruction
			// and corrupt the traced program.
			return nil, fmt.Errorf("decode at +%#x: %w", pc, err)
		}
		if in.Op == x86asm.RET {
			rets = append(rets, uint64(pc))
		}
		pc += in.Len
	}
	return rets, nil
}

// decode is x86asm.Decode, which for some truncated input returns no error
// and an instruction without an opcode (a dangling 0x0F prefix, say).
func decode(code []byte) (x86asm.Inst, error) {
	in, err := x86asm.Decode(code, 64)
	if err == nil && (in.Op == 0 || in.Len <= 0 || in.Len > len(code)) {
		err = x86asm.ErrUnrecognized
	}
	return in, err
}
