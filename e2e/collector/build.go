package collector

import (
	"bytes"
	"context"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	builderModule  = "go.opentelemetry.io/collector/cmd/builder"
	builderVersion = "v0.162.0"
	binaryName     = "otelcol"
)

//go:embed manifest.yaml
var manifest []byte

// Build returns the path of a collector binary built from manifest.yaml,
// building it on the first call on this machine and reusing the cached binary
// afterwards. A build failure fails tb with the builder's output. When the Go
// module proxy cannot be reached, tb is skipped, except under CI=true, where
// a missing collector must be a failure rather than a silently skipped suite.
func Build(tb testing.TB) string {
	tb.Helper()
	root, err := cacheRoot()
	if err != nil {
		tb.Fatalf("collector: %v", err)
	}
	dir := filepath.Join(root, "otelcol-"+cacheKey())
	bin := filepath.Join(dir, binaryName)
	// The binary is renamed into place only once complete, so its presence is
	// proof of a finished build and needs no lock.
	if isExecutable(bin) {
		return bin
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("collector: %v", err)
	}
	unlock := lock(tb, filepath.Join(dir, ".lock"))
	defer unlock()
	if isExecutable(bin) {
		// Another test binary built it while this one waited for the lock.
		return bin
	}

	builder := installBuilder(tb, root)
	start := time.Now()
	out, err := runBuilder(tb, builder, dir, bin)
	if err != nil {
		failBuild(tb, fmt.Sprintf("building the collector with %s@%s", builderModule, builderVersion), err, out)
	}
	tb.Logf("collector: built %s in %s (builder %s)", bin, time.Since(start).Round(time.Millisecond), builderVersion)
	return bin
}

// cacheRoot falls back to the temp dir so that a CI user without a home
// still gets a cache shared by the test binaries of one run.
func cacheRoot() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		base = os.TempDir()
	}
	root := filepath.Join(base, "sonde-e2e")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return "", fmt.Errorf("creating cache dir: %w", err)
	}
	return root, nil
}

// cacheKey covers everything that changes the binary: the manifest pins every
// module version, the builder version fixes the generated code and the
// default core version, and the target platform is part of a shared home.
func cacheKey() string {
	h := sha256.New()
	h.Write(manifest)
	fmt.Fprintf(h, "\x00%s@%s\x00%s/%s", builderModule, builderVersion, runtime.GOOS, runtime.GOARCH)
	return hex.EncodeToString(h.Sum(nil))[:16]
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0
}

// lock serialises builds across test binaries, which `go test ./...` runs in
// parallel; without it each would spend minutes building the same collector.
func lock(tb testing.TB, path string) (unlock func()) {
	tb.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		tb.Fatalf("collector: %v", err)
	}
	fd := int(f.Fd())
	if err := syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		tb.Logf("collector: waiting for another process to finish building (%s)", path)
		start := time.Now()
		for {
			err = syscall.Flock(fd, syscall.LOCK_EX)
			if !errors.Is(err, syscall.EINTR) {
				break
			}
		}
		if err != nil {
			f.Close()
			tb.Fatalf("collector: locking %s: %v", path, err)
		}
		tb.Logf("collector: waited %s for the lock", time.Since(start).Round(time.Millisecond))
	}
	return func() {
		syscall.Flock(fd, syscall.LOCK_UN)
		f.Close()
	}
}

// installBuilder keeps the builder binary next to the collectors so that a
// manifest change rebuilds the collector without reinstalling the builder.
func installBuilder(tb testing.TB, root string) string {
	tb.Helper()
	dir := filepath.Join(root, "builder-"+builderVersion)
	bin := filepath.Join(dir, "builder")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		tb.Fatalf("collector: %v", err)
	}
	unlock := lock(tb, filepath.Join(dir, ".lock"))
	defer unlock()
	if isExecutable(bin) {
		return bin
	}
	goBin := goCommand(tb)
	start := time.Now()
	ctx, cancel := buildContext(tb)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBin, "install", builderModule+"@"+builderVersion)
	cmd.Dir = dir
	cmd.Env = append(goEnv(goBin), "GOBIN="+dir)
	killGroupOnCancel(cmd)
	out, err := cmd.CombinedOutput()
	if err != nil {
		failBuild(tb, "installing "+builderModule+"@"+builderVersion, err, out)
	}
	tb.Logf("collector: installed builder %s in %s", builderVersion, time.Since(start).Round(time.Millisecond))
	return bin
}

// runBuilder builds in a scratch directory inside dir and renames the binary
// to bin, so an interrupted build never leaves a half-written binary behind.
func runBuilder(tb testing.TB, builder, dir, bin string) ([]byte, error) {
	tb.Helper()
	// Holding the lock means any scratch directory left here belongs to a
	// build that died, and its sources would only waste disk.
	stale, _ := filepath.Glob(filepath.Join(dir, "build-*"))
	for _, s := range stale {
		os.RemoveAll(s)
	}
	work, err := os.MkdirTemp(dir, "build-")
	if err != nil {
		return nil, err
	}
	cfg := filepath.Join(work, "manifest.yaml")
	if err := os.WriteFile(cfg, manifest, 0o644); err != nil {
		return nil, err
	}

	goBin := goCommand(tb)
	ctx, cancel := buildContext(tb)
	defer cancel()
	cmd := exec.CommandContext(ctx, builder, "--config="+cfg)
	cmd.Dir = work
	// The builder creates a default output directory in TMPDIR even when the
	// manifest names another; pointing TMPDIR at work removes it with work.
	cmd.Env = append(goEnv(goBin), "TMPDIR="+work)
	killGroupOnCancel(cmd)
	out, err := cmd.CombinedOutput()
	os.WriteFile(filepath.Join(dir, "build.log"), out, 0o644)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (stopped before the test deadline)", err)
		}
		return out, err
	}
	// The generated go.mod is the only record of the versions `go mod tidy`
	// resolved for the whole dependency graph; keep it beside the binary.
	if mod, err := os.ReadFile(filepath.Join(work, "dist", "go.mod")); err == nil {
		os.WriteFile(filepath.Join(dir, "dist.go.mod"), mod, 0o644)
	}
	os.WriteFile(filepath.Join(dir, "manifest.yaml"), manifest, 0o644)
	if err := os.Rename(filepath.Join(work, "dist", binaryName), bin); err != nil {
		return out, err
	}
	os.RemoveAll(work)
	return out, nil
}

// buildContext stops the build shortly before the test's own deadline, so
// the failure carries the builder's output instead of a bare timeout panic.
func buildContext(tb testing.TB) (context.Context, context.CancelFunc) {
	if d, ok := tb.(interface{ Deadline() (time.Time, bool) }); ok {
		if deadline, ok := d.Deadline(); ok {
			return context.WithDeadline(context.Background(), deadline.Add(-15*time.Second))
		}
	}
	return context.WithCancel(context.Background())
}

// killGroupOnCancel makes cancellation reach the go commands the builder
// spawns; killing only the builder would leave compilers running.
func killGroupOnCancel(cmd *exec.Cmd) {
	cmd.SysProcAttr = sysProcAttr(true)
	cmd.Cancel = func() error {
		return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	cmd.WaitDelay = 5 * time.Second
}

// goCommand finds the toolchain running the tests; `go test` does not always
// put it on PATH, but it does export GOROOT.
func goCommand(tb testing.TB) string {
	tb.Helper()
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	if root := os.Getenv("GOROOT"); root != "" {
		p := filepath.Join(root, "bin", "go")
		if isExecutable(p) {
			return p
		}
	}
	tb.Fatalf("collector: no go command on PATH or in GOROOT; it is needed to build the collector")
	return ""
}

// goEnv puts goBin first on PATH because the builder looks the go command
// up there, and turns workspaces off because a go.work of the caller must not
// leak into the generated module.
func goEnv(goBin string) []string {
	env := make([]string, 0, len(os.Environ())+2)
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PATH=") && !strings.HasPrefix(kv, "GOWORK=") {
			env = append(env, kv)
		}
	}
	return append(env,
		"PATH="+filepath.Dir(goBin)+string(os.PathListSeparator)+os.Getenv("PATH"),
		"GOWORK=off",
	)
}

// failBuild skips only for an unreachable module proxy outside CI: a
// developer offline should still be able to run the rest of the suite.
func failBuild(tb testing.TB, what string, err error, out []byte) {
	tb.Helper()
	if os.Getenv("CI") != "true" && proxyUnreachable(out) {
		tb.Skipf("collector: %s: the Go module proxy is unreachable (%v); set CI=true to make this a failure\n%s", what, err, tail(out, 30))
	}
	tb.Fatalf("collector: %s: %v\n%s", what, err, out)
}

func proxyUnreachable(out []byte) bool {
	for _, s := range []string{
		"dial tcp", "no such host", "i/o timeout", "connection refused",
		"network is unreachable", "TLS handshake timeout", "proxyconnect",
		"GOPROXY=off",
	} {
		if bytes.Contains(out, []byte(s)) {
			return true
		}
	}
	return false
}
