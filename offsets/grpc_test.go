package offsets

import (
	"errors"
	"slices"
	"testing"

	spec "github.com/sondehq/sonde/internal/gospec"
)

// grpc.json covers exactly the releases the generator lists, each with
// every field the probes read from the minor version that has it.
func TestGRPCTable(t *testing.T) {
	tbl := GRPCTable()
	if got := tbl.Versions(); !slices.Equal(got, spec.GRPCVersions) {
		t.Fatalf("grpc.json has %v, spec lists %v: run go run ./offsets/internal/gen -grpc", got, spec.GRPCVersions)
	}
	for _, v := range spec.GRPCVersions {
		minor := spec.GRPCMinor(v)
		for _, f := range spec.GRPCFields {
			_, matched, err := tbl.LookupField(v, f.Struct, f.Name)
			switch {
			case !f.Has(minor) && !errors.Is(err, ErrNoField):
				t.Errorf("%s: %s.%s outside v1.%d to v1.%d: %v, want ErrNoField", v, f.Struct, f.Name, f.Since, f.Until, err)
			case f.Has(minor) && (err != nil || matched != v):
				t.Errorf("%s: %s.%s: matched %q, %v", v, f.Struct, f.Name, matched, err)
			}
		}
	}
	for _, e2e := range spec.GRPCE2E {
		if !slices.Contains(spec.GRPCVersions, e2e) {
			t.Errorf("e2e version %s is not in the table", e2e)
		}
	}
}

// The lookup rule on module versions: patches between two known releases
// of a minor resolve when they agree, a minor is never crossed, and
// pre-releases and pseudo-versions are not releases.
func TestGRPCLookupRule(t *testing.T) {
	tbl, err := ParseGRPCTable([]byte(`{
		"v1.60.0": {"s": {"a": 1}},
		"v1.60.1": {"s": {"a": 1}},
		"v1.61.0": {"s": {"a": 2}},
		"v1.61.4": {"s": {"a": 3}}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		version string
		off     uint64
		matched string
		ok      bool
	}{
		{"v1.60.0", 1, "v1.60.0", true},
		{"v1.60.1", 1, "v1.60.1", true},
		{"v1.60.9", 1, "v1.60.1", true}, // newer than every known patch
		{"v1.61.2", 0, "", false},       // neighbours disagree
		{"v1.61.4", 3, "v1.61.4", true},
		{"v1.59.0", 0, "", false}, // below the table
		{"v1.62.0", 0, "", false}, // a minor the table does not know
		{"v1.60.1-dev", 0, "", false},
		{"v1.60.1-0.20240101000000-abcdef123456", 0, "", false},
		{"v2.0.0", 0, "", false},
		{"go1.60.0", 0, "", false},
		{"(devel)", 0, "", false},
	} {
		off, matched, err := tbl.LookupField(c.version, "s", "a")
		if c.ok != (err == nil) || off != c.off || (c.ok && matched != c.matched) {
			t.Errorf("%s: %d from %q, %v", c.version, off, matched, err)
			continue
		}
		var ue *UnsupportedError
		if !c.ok && (!errors.As(err, &ue) || ue.What != "grpc-go" || ue.Min != "v1.60" || ue.Max != "v1.61") {
			t.Errorf("%s: %v, want an UnsupportedError naming v1.60 to v1.61", c.version, err)
		}
	}
	if _, err := ParseGRPCTable([]byte(`{"v1.60.0-dev": {"s": {"a": 1}}}`)); err == nil {
		t.Error("a pre-release as a table entry parses")
	}
}
