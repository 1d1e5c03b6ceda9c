package testutil

import (
	"fmt"
	"os"
	"strings"
	"testing"
)

// fakeTB records what a helper did instead of ending the test.
type fakeTB struct {
	skipped, failed string
}

func (f *fakeTB) Helper() {}

func (f *fakeTB) Skipf(format string, args ...any) { f.skipped = fmt.Sprintf(format, args...) }

func (f *fakeTB) Fatalf(format string, args ...any) { f.failed = fmt.Sprintf(format, args...) }

func TestUnmet(t *testing.T) {
	for _, tc := range []struct {
		ci       string
		wantFail bool
	}{
		{"true", true},
		{"", false},
		{"false", false},
		{"1", false}, // only "true" counts, as CI systems set it
	} {
		t.Run("CI="+tc.ci, func(t *testing.T) {
			t.Setenv("CI", tc.ci)
			var tb fakeTB
			Unmet(&tb, "needs %s", "a widget")

			got, other := tb.skipped, tb.failed
			if tc.wantFail {
				got, other = tb.failed, tb.skipped
			}
			if !strings.Contains(got, "needs a widget") {
				t.Errorf("reason = %q, want it to name the requirement", got)
			}
			if other != "" {
				t.Errorf("both skipped and failed: %q, %q", tb.skipped, tb.failed)
			}
		})
	}
}

func TestRequireTool(t *testing.T) {
	t.Setenv("CI", "true")

	var tb fakeTB
	if path := RequireTool(&tb, "sh"); path == "" || tb.failed != "" {
		t.Errorf("RequireTool(sh) = %q, failure %q", path, tb.failed)
	}

	tb = fakeTB{}
	const name = "sonde-no-such-tool"
	if path := RequireTool(&tb, name); path != "" {
		t.Errorf("RequireTool(%s) = %q, want empty", name, path)
	}
	if !strings.Contains(tb.failed, name) {
		t.Errorf("failure %q does not name the tool", tb.failed)
	}
}

func TestRequireRoot(t *testing.T) {
	t.Setenv("CI", "")
	var tb fakeTB
	RequireRoot(&tb)
	if root := os.Geteuid() == 0; root != (tb.skipped == "") {
		t.Errorf("euid %d, skipped %q", os.Geteuid(), tb.skipped)
	}
}

// The kernel helpers must pass on sonde's platform when run as root; RequireRoot
// itself decides whether this test may run.
func TestRequireKernel(t *testing.T) {
	RequireRoot(t)
	for name, require := range map[string]func(TB){
		"BPF":         RequireBPF,
		"Tracepoints": RequireTracepoints,
		"Uprobes":     RequireUprobes,
	} {
		var tb fakeTB
		require(&tb)
		if tb.skipped != "" || tb.failed != "" {
			t.Errorf("Require%s: skipped %q, failed %q", name, tb.skipped, tb.failed)
		}
	}
}

// A process without capabilities cannot load BPF programs, so RequireBPF
// must report the requirement as unmet there.
func TestRequireBPFUnprivileged(t *testing.T) {
	if IsChild(t.Name()) {
		t.Setenv("CI", "")
		var tb fakeTB
		RequireBPF(&tb)
		fmt.Printf("skipped: %s\n", tb.skipped)
		return
	}
	out, err := Rerun(t, t.Name(), Nobody...)
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "skipped: requirement not met: cannot load a BPF program: ") {
		t.Errorf("child did not skip for lack of BPF:\n%s", out)
	}
}
