package offsets

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	spec "github.com/sondehq/sonde/internal/gospec"
	"github.com/sondehq/sonde/internal/testutil"
)

// toolchains is the test matrix: the newest patch of every supported
// minor version. spec.Latest is shared with the table generator.
var toolchains = spec.Latest

var buildModes = []struct {
	name  string
	flags []string
}{
	{"default", nil},
	{"stripped", []string{"-ldflags=-s -w"}},
	{"pie", []string{"-buildmode=pie"}},
}

// fixtureDir holds every binary built by this test run; TestMain removes it.
var fixtureDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "offsets-fixtures-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtureDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

type fixture struct {
	toolchain, mode, path string
	// unavailable is set when the toolchain could not be downloaded,
	// which is a skip locally and a failure in CI.
	unavailable error
	err         error
}

var (
	fixturesOnce sync.Once
	fixtures     map[string]*fixture // by toolchain + "/" + mode
	matrixTime   time.Duration
)

// buildFixtures builds the whole matrix once per test binary run. Each
// toolchain builds its three modes in sequence (they share the build
// cache); toolchains build in parallel.
func buildFixtures() {
	start := time.Now()
	fixtures = make(map[string]*fixture)
	var mu sync.Mutex
	var wg sync.WaitGroup
	sem := make(chan struct{}, 3)
	for _, tc := range toolchains {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			res := buildToolchain(tc)
			mu.Lock()
			for _, f := range res {
				fixtures[f.toolchain+"/"+f.mode] = f
			}
			mu.Unlock()
		}()
	}
	wg.Wait()
	matrixTime = time.Since(start)
}

// buildToolchain builds spec.Program, the generator's program, so that
// the default build is the very binary the offsets table was read from.
func buildToolchain(tc string) []*fixture {
	var out []*fixture
	for _, m := range buildModes {
		f := &fixture{toolchain: tc, mode: m.name}
		path, err := spec.Build(filepath.Join(fixtureDir, tc), tc, m.name, m.flags...)
		var unavail *spec.UnavailableError
		switch {
		case errors.As(err, &unavail):
			f.unavailable = err
		case err != nil:
			f.err = err
		}
		f.path = path
		out = append(out, f)
	}
	return out
}

// getFixture returns a built fixture, failing the test when the build
// failed, and skipping it locally (failing in CI) when the toolchain could
// not be downloaded.
func getFixture(t *testing.T, tc, mode string) *fixture {
	t.Helper()
	fixturesOnce.Do(buildFixtures)
	f := fixtures[tc+"/"+mode]
	switch {
	case f == nil:
		t.Fatalf("no fixture %s/%s", tc, mode)
	case f.unavailable != nil:
		testutil.Unmet(t, "%v", f.unavailable)
	case f.err != nil:
		t.Fatal(f.err)
	}
	return f
}

// probed are the functions sonde attaches to in net/http.
var probed = []string{
	"net/http.serverHandler.ServeHTTP",
	"net/http.(*Transport).roundTrip",
	"net/http.(*response).finishRequest",
}

type matrixRow struct {
	toolchain, mode string
	source          Source
	site            string
	dwarf           string
}

var (
	matrixMu   sync.Mutex
	matrixRows []matrixRow
)

func TestMatrix(t *testing.T) {
	for _, tc := range toolchains {
		t.Run(tc, func(t *testing.T) {
			t.Parallel()
			for _, m := range buildModes {
				t.Run(m.name, func(t *testing.T) { checkFixture(t, tc, m.name) })
			}
			checkStrippedSameAddrs(t, tc)
		})
	}
	t.Cleanup(func() {
		sort.Slice(matrixRows, func(i, j int) bool {
			if matrixRows[i].toolchain != matrixRows[j].toolchain {
				return matrixRows[i].toolchain < matrixRows[j].toolchain
			}
			return matrixRows[i].mode < matrixRows[j].mode
		})
		var sb strings.Builder
		fmt.Fprintf(&sb, "matrix built in %v\n", matrixTime.Round(time.Millisecond))
		fmt.Fprintf(&sb, "%-10s %-9s %-8s %-30s %s\n", "toolchain", "mode", "lookup", "probe sites (3 funcs)", "runtime.g.goid")
		for _, r := range matrixRows {
			fmt.Fprintf(&sb, "%-10s %-9s %-8s %-30s %s\n", r.toolchain, r.mode, r.source, r.site, r.dwarf)
		}
		t.Log("\n" + sb.String())
	})
}

func checkFixture(t *testing.T, tc, mode string) {
	f := getFixture(t, tc, mode)
	b, err := Open(f.path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()

	if got := b.GoVersion(); got != tc {
		t.Errorf("GoVersion = %q, want %q", got, tc)
	}
	if got := b.BuildInfo().Main.Path; got != "fixture" {
		t.Errorf("main module = %q, want fixture", got)
	}
	if v, ok := b.Module("fixture"); !ok || v != "(devel)" {
		t.Errorf("Module(fixture) = %q, %v; want (devel), true", v, ok)
	}

	wantSrc := FromSymtab
	if mode == "stripped" {
		wantSrc = FromPclntab
	}
	raw, err := os.ReadFile(f.path)
	if err != nil {
		t.Fatal(err)
	}
	var sites []string
	for _, name := range probed {
		fn, err := b.Func(name)
		if err != nil {
			t.Fatalf("Func(%s): %v", name, err)
		}
		if fn.Source != wantSrc {
			t.Errorf("%s found via %s, want %s", name, fn.Source, wantSrc)
		}
		// The tables must agree: a disagreement would mean one of the
		// two lookups computes addresses wrongly.
		pc, err := b.funcPclntab(name)
		if err != nil {
			t.Fatalf("pclntab lookup of %s: %v", name, err)
		}
		if pc.Addr != fn.Addr || pc.Offset != fn.Offset || pc.Size < fn.Size {
			t.Errorf("%s: pclntab %+v disagrees with %+v", name, pc, fn)
		}
		// Go functions start with the stack check, whose first bytes
		// are CMP RSP or LEA/MOV R12: a wrong file offset lands elsewhere.
		if p := raw[fn.Offset:]; !(p[0] == 0x49 && p[1] == 0x3b) && !(p[0] == 0x4c && (p[1] == 0x8d || p[1] == 0x8b)) {
			t.Errorf("%s at offset %#x starts with % x, not a Go stack check", name, fn.Offset, p[:4])
		}

		off, inst, err := b.ProbeSite(fn)
		if err != nil {
			t.Fatalf("ProbeSite(%s): %v", name, err)
		}
		// These three have frames, so the site must be PUSH RBP right
		// after the JBE: byte 0x55 in the file at the returned offset.
		if inst != "push rbp" || raw[off] != 0x55 || off <= fn.Offset || off >= fn.Offset+32 {
			t.Errorf("ProbeSite(%s) = %#x %q (byte %#x), want push rbp (0x55) just after the stack check", name, off, inst, raw[off])
		}
		sites = append(sites, fmt.Sprintf("+%d", off-fn.Offset))

		rets, err := b.ReturnSites(fn)
		if err != nil {
			t.Fatalf("ReturnSites(%s): %v", name, err)
		}
		if len(rets) == 0 {
			t.Errorf("ReturnSites(%s) found no RET", name)
		}
		for _, r := range rets {
			if r < fn.Offset || r >= fn.Offset+fn.Size || raw[r] != 0xc3 {
				t.Errorf("ReturnSites(%s): %#x is not a RET inside the function", name, r)
			}
		}
	}
	if _, err := b.Func("net/http.noSuchFunction"); !errors.Is(err, ErrNotFound) {
		t.Errorf("Func(missing) error = %v, want ErrNotFound", err)
	}

	row := matrixRow{toolchain: tc, mode: mode, source: wantSrc, site: "push rbp @ " + strings.Join(sites, ",")}
	if mode == "stripped" {
		if _, err := b.FieldOffset("net/http.Request", "Method"); !errors.Is(err, ErrNoDWARF) {
			t.Errorf("FieldOffset on stripped binary: %v, want ErrNoDWARF", err)
		}
		row.dwarf = "ErrNoDWARF"
	} else {
		// Method and Path sit at the same place in every release since
		// Go 1.0; goid moves, so only its presence is checked here and
		// its value against the other build of the same toolchain.
		for _, c := range []struct {
			s, f string
			want uint64
		}{{"net/http.Request", "Method", 0}, {"net/url.URL", "Path", 56}} {
			got, err := b.FieldOffset(c.s, c.f)
			if err != nil || got != c.want {
				t.Errorf("FieldOffset(%s, %s) = %d, %v; want %d", c.s, c.f, got, err, c.want)
			}
		}
		goid, err := b.FieldOffset("runtime.g", "goid")
		if err != nil || goid == 0 {
			t.Errorf("FieldOffset(runtime.g, goid) = %d, %v", goid, err)
		}
		if _, err := b.FieldOffset("net/http.Request", "NoSuchField"); !errors.Is(err, ErrNotFound) {
			t.Errorf("FieldOffset(missing field) error = %v, want ErrNotFound", err)
		}
		// Every struct above was in the unit Go's linker puts types in:
		// the other units were never decoded.
		fast := false
		b.restOnce.Do(func() { fast = true })
		if !fast {
			t.Errorf("FieldOffset read past the %q unit for structs that are in it", typeUnit)
		}
		checkTypesElsewhere(t, f.path)
		row.dwarf = fmt.Sprintf("goid@%d", goid)
	}
	matrixMu.Lock()
	matrixRows = append(matrixRows, row)
	matrixMu.Unlock()
}

// checkStrippedSameAddrs checks that stripping changes neither code layout
// nor the offsets we compute: sonde looks up a stripped production binary
// with the same logic it was tested with on an unstripped one.
func checkStrippedSameAddrs(t *testing.T, tc string) {
	t.Run("stripped-vs-default", func(t *testing.T) {
		def, strip := getFixture(t, tc, "default"), getFixture(t, tc, "stripped")
		bd, err := Open(def.path)
		if err != nil {
			t.Fatal(err)
		}
		defer bd.Close()
		bs, err := Open(strip.path)
		if err != nil {
			t.Fatal(err)
		}
		defer bs.Close()
		for _, name := range probed {
			fd, err1 := bd.Func(name)
			fs, err2 := bs.Func(name)
			if err1 != nil || err2 != nil {
				t.Fatal(err1, err2)
			}
			if fd.Addr != fs.Addr || fd.Offset != fs.Offset {
				t.Errorf("%s: default %#x/%#x, stripped %#x/%#x", name, fd.Addr, fd.Offset, fs.Addr, fs.Offset)
			}
		}
		gd, _ := bd.FieldOffset("runtime.g", "goid")
		bp, err := Open(getFixture(t, tc, "pie").path)
		if err != nil {
			t.Fatal(err)
		}
		defer bp.Close()
		if gp, err := bp.FieldOffset("runtime.g", "goid"); err != nil || gp != gd {
			t.Errorf("runtime.g.goid: default %d, pie %d (%v)", gd, gp, err)
		}
	})
}

// TestModuleVersions builds, with the installed toolchain, a program that
// links grpc and golang.org/x/net, resolving modules exactly as this
// repository does (its go.mod and go.sum are copied), and checks that the
// versions read back are the ones go.mod requires.
func TestModuleVersions(t *testing.T) {
	dir := t.TempDir()
	gomod, err := os.ReadFile(filepath.Join("..", "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	gosum, err := os.ReadFile(filepath.Join("..", "go.sum"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	var lines []string
	for _, l := range strings.Split(string(gomod), "\n") {
		if strings.HasPrefix(l, "module ") {
			l = "module depsfixture"
		}
		lines = append(lines, l)
		if f := strings.Fields(l); len(f) >= 2 && (f[0] == "golang.org/x/net" || f[0] == "google.golang.org/grpc") {
			want[f[0]] = f[1]
		}
	}
	if len(want) != 2 {
		t.Fatalf("go.mod does not require both grpc and x/net: %v", want)
	}
	src := `package main

import (
	"net/http"

	"golang.org/x/net/http2"
	"google.golang.org/grpc"
)

func main() {
	_ = http2.ConfigureServer(&http.Server{}, nil)
	_ = grpc.NewServer()
}
`
	for name, data := range map[string][]byte{"go.mod": []byte(strings.Join(lines, "\n")), "go.sum": gosum, "main.go": []byte(src)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	bin := filepath.Join(dir, "deps")
	if out, err := spec.GoCmd(dir, "local", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	b, err := Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for path, v := range want {
		if got, ok := b.Module(path); !ok || got != v {
			t.Errorf("Module(%s) = %q, %v; want %q", path, got, ok, v)
		}
	}
	if _, ok := b.Module("github.com/no/such"); ok {
		t.Error("Module reports a dependency that is not linked")
	}
}

// checkTypesElsewhere: a binary whose types are not in the unit searched
// first (here: told to search "main", which has none) still resolves them,
// from the pass over the other units.
func checkTypesElsewhere(t *testing.T, path string) {
	t.Helper()
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	b.structs = make(map[string]map[string]uint64)
	if err := b.loadStructs(func(unit string) bool { return unit == "main" }); err != nil {
		t.Fatal(err)
	}
	if _, ok := b.structs["net/http.Request"]; ok {
		t.Fatal("the main unit holds net/http.Request: pick a unit without types")
	}
	b2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b2.Close()
	b2.typeUnit = "main"
	if got, err := b2.FieldOffset("net/url.URL", "Path"); err != nil || got != 56 {
		t.Errorf("FieldOffset(net/url.URL, Path), types searched in main first = %d, %v; want 56", got, err)
	}
}
