package offsets

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"testing"

	spec "github.com/sondehq/sonde/internal/gospec"
)

var update = flag.Bool("update", false, "TestTableUpToDate: rebuild table.json with every toolchain, as go run ./offsets/internal/gen does")

func TestLookupFieldRule(t *testing.T) {
	tbl, err := ParseTable([]byte(`{
		"go1.21.0":  {"s": {"a": 1, "b": 10}},
		"go1.22.0":  {"s": {"a": 2, "b": 20}},
		"go1.22.12": {"s": {"a": 2, "b": 21, "new": 5}},
		"go1.23.0":  {"s": {"a": 3, "b": 30, "new": 6}},
		"go1.23.9":  {"s": {"a": 3, "b": 30, "new": 6}}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	unsupported := func(err error) bool {
		var ue *UnsupportedError
		return errors.As(err, &ue) && ue.Min == "go1.21" && ue.Max == "go1.23"
	}
	for _, c := range []struct {
		version, field string
		off            uint64
		matched        string
		err            func(error) bool
	}{
		{"go1.22.0", "a", 2, "go1.22.0", nil},             // exact
		{"go1.22.12", "b", 21, "go1.22.12", nil},          // exact, differs from .0
		{"go1.22.7", "a", 2, "go1.22.0", nil},             // between agreeing neighbours: lower one
		{"go1.23.5", "b", 30, "go1.23.0", nil},            // same
		{"go1.22.13", "b", 21, "go1.22.12", nil},          // newer than every known patch: newest
		{"go1.21.99", "a", 1, "go1.21.0", nil},            // only .0 known
		{"go1.23.100", "new", 6, "go1.23.9", nil},         // far newer patch
		{"go1.22.7", "b", 0, "", unsupportedWithReason},   // neighbours disagree: no guess
		{"go1.22.7", "new", 0, "", unsupportedWithReason}, // absent below, present above
		{"go1.21.5", "new", 0, "go1.21.0", isNoField},     // field absent in that minor
		{"go1.21.0", "new", 0, "go1.21.0", isNoField},
		{"go1.20.14", "a", 0, "", unsupported}, // minor below the table: never cross
		{"go1.24.0", "a", 0, "", unsupported},  // minor above the table
		{"go1.22rc1", "a", 0, "", unsupported}, // prerelease before the first known release
		{"go1.22beta2", "a", 0, "", unsupported},
		{"devel go1.23-abc", "a", 0, "", unsupported},
		{"", "a", 0, "", unsupported},
		{"go1.22.x", "a", 0, "", unsupported},
		{"go1.22.0", "nope", 0, "", isNotFound}, // never recorded
	} {
		off, matched, err := tbl.LookupField(c.version, "s", c.field)
		if c.err == nil && err != nil || c.err != nil && !c.err(err) {
			t.Errorf("LookupField(%s, s.%s): error %v", c.version, c.field, err)
			continue
		}
		if off != c.off || matched != c.matched {
			t.Errorf("LookupField(%s, s.%s) = %d from %q, want %d from %q", c.version, c.field, off, matched, c.off, c.matched)
		}
	}
	if _, _, err := tbl.LookupField("go1.22.0", "t", "a"); !errors.Is(err, ErrNotFound) {
		t.Errorf("unknown struct: %v, want ErrNotFound", err)
	}
	if got, want := tbl.Versions(), []string{"go1.21.0", "go1.22.0", "go1.22.12", "go1.23.0", "go1.23.9"}; !slices.Equal(got, want) {
		t.Errorf("Versions = %v, want %v", got, want)
	}
	for _, bad := range []string{``, `[]`, `{}`, `{"go1.22": {}}`, `{"go1.22rc1": {}}`, `{"1.22.0": {}}`} {
		if _, err := ParseTable([]byte(bad)); err == nil {
			t.Errorf("ParseTable(%s) succeeded", bad)
		}
	}
}

func unsupportedWithReason(err error) bool {
	var ue *UnsupportedError
	return errors.As(err, &ue) && ue.Reason != ""
}
func isNoField(err error) bool  { return errors.Is(err, ErrNoField) && !errors.Is(err, ErrNotFound) }
func isNotFound(err error) bool { return errors.Is(err, ErrNotFound) }

// TestEmbeddedTable checks the committed table against the spec: every
// supported toolchain, every field, Pattern only from go1.23 on, and the
// package-level lookup wired to it.
func TestEmbeddedTable(t *testing.T) {
	tbl := DefaultTable()
	if got, want := tbl.Versions(), spec.Toolchains(); !slices.Equal(got, want) {
		t.Fatalf("table.json has %v, spec lists %v: run go run ./offsets/internal/gen", got, want)
	}
	for _, v := range tbl.Versions() {
		for _, f := range spec.Fields {
			_, matched, err := LookupField(v, f.Struct, f.Name)
			if spec.Minor(v) < f.Since {
				if !errors.Is(err, ErrNoField) {
					t.Errorf("%s %s.%s: %v, want ErrNoField", v, f.Struct, f.Name, err)
				}
				continue
			}
			if err != nil || matched != v {
				t.Errorf("%s %s.%s: matched %q, %v", v, f.Struct, f.Name, matched, err)
			}
		}
	}
	var ue *UnsupportedError
	if _, _, err := LookupField("go1.27.0", "runtime.g", "goid"); !errors.As(err, &ue) || ue.Min != "go1.21" || ue.Max != "go1.26" {
		t.Errorf("go1.27.0: %v, want *UnsupportedError for go1.21 to go1.26", err)
	}
}

// TestTableMatchesDWARF is the check that the generator is right: every
// table entry of a matrix toolchain equals what FieldOffset reads from
// that toolchain's default and PIE fixtures, and Binary.Field gives the
// same answer from DWARF and, for the stripped fixture, from the table.
func TestTableMatchesDWARF(t *testing.T) {
	for _, tc := range toolchains {
		t.Run(tc, func(t *testing.T) {
			t.Parallel()
			var bins []*Binary
			for _, mode := range []string{"default", "pie", "stripped"} {
				b, err := Open(getFixture(t, tc, mode).path)
				if err != nil {
					t.Fatal(err)
				}
				defer b.Close()
				bins = append(bins, b)
			}
			for _, f := range spec.Fields {
				want, _, werr := LookupField(tc, f.Struct, f.Name)
				for i, b := range bins {
					off, matched, err := b.Field(f.Struct, f.Name)
					fromTable := i == 2
					if fromTable != (matched != "") {
						t.Errorf("mode %d: %s.%s matched %q", i, f.Struct, f.Name, matched)
					}
					if !fromTable {
						// Straight from DWARF too, as the generator reads it.
						if dw, derr := b.FieldOffset(f.Struct, f.Name); (derr == nil) != (werr == nil) || dw != want {
							t.Errorf("%s.%s: DWARF %d (%v), table %d (%v)", f.Struct, f.Name, dw, derr, want, werr)
						}
					}
					switch {
					case werr != nil && errors.Is(werr, ErrNoField):
						if !errors.Is(err, ErrNoField) {
							t.Errorf("Field(%s.%s): %v, want ErrNoField", f.Struct, f.Name, err)
						}
					case werr != nil:
						t.Fatalf("table: %v", werr)
					case err != nil || off != want:
						t.Errorf("Field(%s.%s) = %d, %v; table says %d", f.Struct, f.Name, off, err, want)
					}
				}
			}
		})
	}
}

// TestTableUpToDate checks that table.json is what the generator writes.
// The plain run, which CI does, regenerates the entries of the matrix
// toolchains from the matrix's default fixtures (the generator's exact
// build), so it builds nothing extra; the .0 toolchains are only built by
// the generator or by -update, which rewrites table.json from all of them.
func TestTableUpToDate(t *testing.T) {
	if *update {
		table := map[string]spec.Structs{}
		for _, tc := range spec.Toolchains() {
			path, err := spec.Build(filepath.Join(t.TempDir(), tc), tc, "prog")
			var unavail *spec.UnavailableError
			if errors.As(err, &unavail) {
				t.Fatalf("-update needs every toolchain: %v", err)
			} else if err != nil {
				t.Fatal(err)
			}
			table[tc] = extractTable(t, path, tc)
		}
		data, err := spec.Encode(table)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile("table.json", data, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	committed := DefaultTable().entries
	table := map[string]spec.Structs{}
	for _, tc := range spec.Toolchains() {
		table[tc] = committed[tc]
	}
	for _, tc := range toolchains {
		table[tc] = extractTable(t, getFixture(t, tc, "default").path, tc)
	}
	want, err := spec.Encode(table)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(tableJSON, want) {
		t.Errorf("table.json is stale or not in generator format: run go run ./offsets/internal/gen (or go test ./offsets -run TestTableUpToDate -update)")
	}
}

func extractTable(t *testing.T, path, tc string) spec.Structs {
	t.Helper()
	b, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	s, err := spec.Extract(tc, b.FieldOffset, ErrNotFound)
	if err != nil {
		t.Fatal(err)
	}
	return s
}
