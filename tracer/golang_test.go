package tracer

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sondehq/sonde/offsets"
)

// goFixtures builds e2e/testdata/gochain (net/http) and grpcpair (grpc-go
// at this module's version, and net/http) with the local toolchain in the
// three shapes users ship: default, stripped, PIE. Keys are
// "program-shape".
var goFixtures = sync.OnceValues(func() (map[string]string, error) {
	dir, err := os.MkdirTemp("", "sonde-gofixtures-")
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, prog := range []string{"gochain", "grpcpair"} {
		for mode, flags := range map[string][]string{
			"default":  nil,
			"stripped": {"-ldflags=-s -w"},
			"pie":      {"-buildmode=pie"},
		} {
			bin := filepath.Join(dir, prog+"-"+mode)
			args := append(append([]string{"build", "-o", bin}, flags...), "../e2e/testdata/"+prog)
			cmd := exec.Command("go", args...)
			if b, err := cmd.CombinedOutput(); err != nil {
				return nil, &buildError{prog + "-" + mode, string(b), err}
			}
			out[prog+"-"+mode] = bin
		}
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
				if strings.HasPrefix(mode, "gochain") && strings.HasPrefix(p.group, "grpc") {
					continue // gochain does not link grpc-go
				}
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
	for _, prog := range []string{"gochain", "grpcpair"} {
		var want gohttpGoOffsets
		for _, mode := range []string{"default", "stripped", "pie"} {
			bin, err := offsets.Open(bins[prog+"-"+mode])
			if err != nil {
				t.Fatal(err)
			}
			grpc := prog == "grpcpair"
			o, missing, err := goOffsetsOf(bin, true, grpc)
			bin.Close()
			if !grpc && missing["grpcserver"] != "" && missing["grpcclient"] != "" {
				delete(missing, "grpcserver")
				delete(missing, "grpcclient")
			}
			if err != nil || len(missing) != 0 {
				t.Fatalf("%s-%s: offsets %v, missing %v", prog, mode, err, missing)
			}
			if grpc && (o.GrpcServerConn == 0 && o.GrpcStreamMethod == 0 || o.GrpcProtoCode == 0) {
				t.Errorf("%s-%s: grpc offsets not read: %+v", prog, mode, o)
			}
			// The copied heads cover every field read from them.
			for _, h := range []struct {
				span   uint16
				fields []uint16
			}{
				{o.RequestSpan, []uint16{o.RequestMethod, o.RequestUrl, o.RequestHost, o.RequestRemoteAddr, o.RequestPattern, o.RequestProtoMajor, o.RequestTls}},
				{o.UrlSpan, []uint16{o.UrlPath, o.UrlHost, o.UrlScheme, o.UrlRawQuery}},
				{o.ResponseSpan, []uint16{o.ResponseConn, o.ResponseReq, o.ResponseStatus}},
			} {
				for _, f := range h.fields {
					if f != goAbsent && (int(f)+16 > int(h.span) || h.span > goCopyMax) {
						t.Errorf("%s-%s: field at %d outside the %d-byte head copied", prog, mode, f, h.span)
					}
				}
			}
			if mode == "default" {
				want = o
				continue
			}
			if o != want {
				t.Errorf("%s-%s: offsets %+v, DWARF of the default build says %+v", prog, mode, o, want)
			}
		}
	}
}

// A grpc-go binary gets every probe group, and one without grpc-go says
// why it has none of grpc's.
func TestGoCoverageGRPC(t *testing.T) {
	bins, err := goFixtures()
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []string{"default", "stripped", "pie"} {
		groups, err := GoCoverage(bins["grpcpair-"+mode])
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range []string{"server", "client", "goroutines", "grpcserver", "grpcclient"} {
			if !slices.Contains(groups, g) {
				t.Errorf("grpcpair-%s: groups %v lack %s", mode, groups, g)
			}
		}
		plan, err := planGo(bins["gochain-"+mode])
		if err != nil {
			t.Fatal(err)
		}
		if plan.missing["grpcserver"] != "does not use grpc-go" || plan.grpc != "" {
			t.Errorf("gochain-%s: grpc %q, missing %q", mode, plan.grpc, plan.missing["grpcserver"])
		}
	}
}

// A head span covers its furthest field, leaves absent ones out, and is
// refused past what the probes copy.
func TestHeadSpan(t *testing.T) {
	if got, err := headSpan([]uint16{0, 40, goAbsent, 208}); err != nil || got != 224 {
		t.Fatalf("span %d, %v; want 224", got, err)
	}
	if got, err := headSpan([]uint16{goAbsent}); err != nil || got != 0 {
		t.Fatalf("span of nothing %d, %v; want 0", got, err)
	}
	if _, err := headSpan([]uint16{goCopyMax - 16}); err != nil {
		t.Fatalf("a field ending at the limit refused: %v", err)
	}
	if _, err := headSpan([]uint16{goCopyMax - 15}); err == nil {
		t.Fatal("a field past the limit accepted")
	}
	h, err := os.ReadFile("../bpf/headers/events.h")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("#define GO_COPY_MAX %d\n", goCopyMax); !strings.Contains(string(h), want) {
		t.Fatalf("events.h lacks %q: goCopyMax must mirror GO_COPY_MAX", want)
	}
}
