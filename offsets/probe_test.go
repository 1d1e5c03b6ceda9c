package offsets

import (
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"golang.org/x/arch/x86/x86asm"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestEmulated(t *testing.T) {
	for _, c := range []struct {
		code string
		want bool
	}{
		{"55", true},                // push rbp
		{"53", true},                // push rbx
		{"4155", true},              // push r13: REX 0x41 is the one the kernel accepts
		{"4855", false},             // push rbp with REX.W: kernel single-steps it
		{"6a01", false},             // push imm8
		{"ff30", false},             // push [rax]
		{"90", true},                // nop
		{"f390", false},             // pause
		{"6690", false},             // 66-prefixed nop: kernel refuses the probe
		{"0f1f00", false},           // nopl: not emulated outside the nop5 optimization
		{"eb10", true},              // jmp rel8
		{"e910000000", true},        // jmp rel32
		{"66e91000", false},         // jmp rel16: refused by the kernel
		{"e810000000", true},        // call rel32
		{"ffd0", false},             // call rax
		{"7610", true},              // jbe rel8
		{"0f8610000000", true},      // jbe rel32
		{"2e7410", false},           // branch hint prefix: CS override, refused
		{"e310", false},             // jrcxz
		{"c3", false},               // ret
		{"493b6610", false},         // cmp rsp, [r14+0x10]
		{"4c8da424f8feffff", false}, // lea r12, [rsp-0x108]
		{"4883ec20", false},         // sub rsp, 0x20
	} {
		in, err := x86asm.Decode(unhex(t, c.code), 64)
		if err != nil {
			t.Fatalf("%s: %v", c.code, err)
		}
		if got := Emulated(in); got != c.want {
			t.Errorf("Emulated(%s = %v) = %v, want %v", c.code, in, got, c.want)
		}
	}
}

func TestProbeSite(t *testing.T) {
	for _, c := range []struct {
		name string
		code string
		off  int    // -1: want a NoSiteError
		inst string // x86asm.Op of the site
	}{
		{"small frame", "493b6610 0f868a000000 55 4889e5 4883ec20", 10, "PUSH"},
		{"small frame, short jbe", "493b6610 7610 55 4889e5", 6, "PUSH"},
		{"medium frame", "4c8da424f8feffff 4d3b6610 0f86aa000000 55 4889e5", 18, "PUSH"},
		{"large frame", "4989e4 4981ec00200000 0f82ff000000 4d3b6610 0f86f0000000 55", 26, "PUSH"},
		// Frameless function with a stack check: the first instruction
		// after JBE writes an argument register, so the JBE is the site.
		{"no frame after check", "493b6610 7610 488b00 c3", 4, "JBE"},
		// NOSPLIT function with a frame: PUSH RBP is first.
		{"nosplit with frame", "55 4889e5 4883ec10", 0, "PUSH"},
		// Flags-only and scratch writes before the site are harmless.
		{"leaf, cmp then jcc", "4885c0 7405 31c0 c3", 3, "JE"},
		{"leaf, scratch write", "4d89e5 e810000000", 3, "CALL"},
		{"leaf, clobbers first", "488b00 c3", -1, ""},
		{"leaf, memory store first", "48890424 55", -1, ""},
		{"leaf, ret first", "c3", -1, ""},
		{"undecodable", "0f0b", -1, ""}, // ud2 decodes; not emulated, may write state
		{"empty", "", -1, ""},
		{"nothing emulated in reach", "4885c0 4885db 4885c9 4885ff 55", -1, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			off, in, err := probeSite(unhex(t, c.code))
			if c.off < 0 {
				var ns *NoSiteError
				if !errors.As(err, &ns) || ns.Reason == "" {
					t.Fatalf("probeSite = %d %v %v, want *NoSiteError", off, in, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if off != c.off || in.Op.String() != c.inst || !Emulated(in) {
				t.Errorf("probeSite = %d %v, want %d %s", off, in, c.off, c.inst)
			}
		})
	}
}

func TestReturnSites(t *testing.T) {
	// ret; mov rax, rbx; ret 8; int3 padding
	rets, err := returnSites(unhex(t, "c3 4889d8 c20800 cccc"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rets) != 2 || rets[0] != 0 || rets[1] != 4 {
		t.Errorf("returnSites = %v, want [0 4]", rets)
	}
	if _, err := returnSites(unhex(t, "c3 0f")); err == nil {
		t.Error("truncated instruction: want an error, not a guess")
	}
}
