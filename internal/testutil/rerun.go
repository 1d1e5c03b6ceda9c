package testutil

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// childEnv names, in the environment of a test binary started by [Rerun],
// the test it was started for.
const childEnv = "SONDE_TESTUTIL_CHILD"

// Nobody is a [Rerun] wrapper that drops to user and group nobody with no
// capabilities at all.
var Nobody = []string{"setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all"}

// IsChild reports whether this test binary was started by [Rerun] to run
// the named test. That test checks it first and, outside the child, sets
// the scene and calls Rerun.
func IsChild(test string) bool {
	return os.Getenv(childEnv) == test
}

// Rerun runs the named test of this test binary again, in a new process
// started through the wrapper command (such as [Nobody]), which gets the
// binary and its arguments appended. It returns the combined output and
// the exit error. It needs root and the wrapper's program, and ends the
// test through [Unmet] without them. The binary is copied to a directory
// any user may enter, so the wrapper may switch to an unprivileged user.
func Rerun(tb testing.TB, test string, wrapper ...string) ([]byte, error) {
	tb.Helper()
	RequireRoot(tb)
	if len(wrapper) == 0 {
		tb.Fatalf("Rerun needs a wrapper command")
	}
	prog := RequireTool(tb, wrapper[0])

	dir, err := os.MkdirTemp("", "sonde-rerun-")
	if err != nil {
		tb.Fatalf("create directory for the test binary: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatalf("open directory for the test binary: %v", err)
	}
	bin := filepath.Join(dir, "test")
	if err := copyExecutable("/proc/self/exe", bin); err != nil {
		tb.Fatalf("copy the test binary: %v", err)
	}

	args := append(wrapper[1:len(wrapper):len(wrapper)], bin, "-test.run=^"+test+"$", "-test.count=1", "-test.v")
	cmd := exec.Command(prog, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), childEnv+"="+test)
	return cmd.CombinedOutput()
}

func copyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
