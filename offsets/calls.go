package offsets

import (
	"fmt"

	"golang.org/x/arch/x86/x86asm"
)

// CallSites returns the file offsets of the direct calls (CALL rel32) in fn
// to callee. A CALL is an instruction the kernel emulates, so a probe there
// is as cheap as one on a function's entry, and it fires only on that call
// path: runtime.runqput is entered at every goroutine wakeup, but its call
// in newproc's closure only when a goroutine is created.
func (b *Binary) CallSites(fn, callee Function) ([]uint64, error) {
	if fn.Size > maxFuncSize {
		return nil, fmt.Errorf("function %s is %d bytes, over the %d byte limit", fn.Name, fn.Size, maxFuncSize)
	}
	code, err := b.code(fn, fn.Size)
	if err != nil {
		return nil, err
	}
	sites, err := callSites(code, fn.Addr, callee.Addr)
	if err != nil {
		return nil, fmt.Errorf("function %s: %w", fn.Name, err)
	}
	for i := range sites {
		sites[i] += fn.Offset
	}
	return sites, nil
}

// callSites decodes code, loaded at addr, and returns the offsets in it of
// the rel32 calls to target.
func callSites(code []byte, addr, target uint64) ([]uint64, error) {
	var out []uint64
	for pc := 0; pc < len(code); {
		in, err := decode(code[pc:])
		if err != nil {
			// Out of step with the instruction stream: a guess could put a
			// probe in the middle of an instruction.
			return nil, fmt.Errorf("decode at +%#x: %w", pc, err)
		}
		if in.Op == x86asm.CALL && in.Len == 5 && code[pc] == 0xe8 {
			if rel, ok := in.Args[0].(x86asm.Rel); ok {
				if addr+uint64(pc)+uint64(in.Len)+uint64(int64(rel)) == target {
					out = append(out, uint64(pc))
				}
			}
		}
		pc += in.Len
	}
	return out, nil
}
