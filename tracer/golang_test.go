package tracer

import (
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sondehq/sonde/offsets"
)

// goFixtures builds e2e/testdata/gochain with the local toolchain in the
// three shapes users ship: default, stripped, PIE.
var goFixtures = sync.OnceValues(func() (map[string]string, error) {
	dir, err := os.MkdirTemp("", "sonde-gofixtures-")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for mode, flags := range map[string][]string{
		"default":  nil,
		"stripped": {"-ldflags=-s -w"},
		"pie":      {"-buildmode=pie"},
	} {
		bin := filepath.Join(dir, "gochain-"+mode)
		args := append(append([]string{"build", "-o", bin}, flags...), "../e2e/testdata/gochain")
		cmd := exec.Command("go", args...)
		if b, err := cmd.CombinedOutput(); err != nil {
			return nil, &buildError{mode, string(b), err}
		}
		out[mode] = bin
	}
	return out, nil
})

type buildError struct {
	mode, out string
	err       error
}

func (e *buildError) Error() string { return "build " + e.mode + ": " + e.err.Error() + "\n" + e.out }

// Every Go probe sonde attaches sits on an instruction the kernel emulates:
// a single-stepped probe costs ~17 us per hit on these machines, an
// emulated one ~0.6 us. The sites are computed by the code attach uses.
func TestGoProbeSitesEmulated(t *testing.T) {
	bins, err := goFixtures()
	if err != nil {
		t.Fatal(err)
	}
	for mode, path := range bins {
		t.Run(mode, func(t *testing.T) {
			bin, err := offsets.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer bin.Close()
			f, err := os.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range goProbeSet {
				sites, err := probeSites(bin, p)
				if err != nil {
					t.Errorf("%s: %v", p.fn, err)
					continue
				}
				for _, off := range sites {
					code := make([]byte, 16)
					if _, err := f.ReadAt(code, int64(off)); err != nil {
						t.Fatalf("%s: read at %#x: %v", p.fn, off, err)
					}
					inst, err := x86asm.Decode(code, 64)
					if err != nil {
						t.Fatalf("%s: decode at %#x: %v", p.fn, off, err)
					}
					if !offsets.Emulated(inst) {
						t.Errorf("%s (%s): probe at %#x on %v, which the kernel single-steps", p.fn, p.prog, off, inst)
					}
					if p.callTo != "" && inst.Op != x86asm.CALL {
						t.Errorf("%s: probe for calls to %s at %#x is on %v", p.fn, p.callTo, off, inst)
					}
				}
			}
		})
	}
}

// Every field the probes read resolves, from DWARF or, in a stripped
// binary, from sonde's table, and the two agree.
func TestGoOffsetsResolve(t *testing.T) {
	bins, err := goFixtures()
	if err != nil {
		t.Fatal(err)
	}
	var want gohttpGoOffsets
	for _, mode := range []string{"default", "stripped", "pie"} {
		bin, err := offsets.Open(bins[mode])
		if err != nil {
			t.Fatal(err)
		}
		o, missing, err := goOffsetsOf(bin)
		bin.Close()
		if err != nil || len(missing) != 0 {
			t.Fatalf("%s: offsets %v, missing %v", mode, err, missing)
		}
		if mode == "default" {
			want = o
			continue
		}
		if o != want {
			t.Errorf("%s: offsets %+v, DWARF of the default build says %+v", mode, o, want)
		}
	}
}
