package gospec

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// GRPCModule is the module whose structs sonde's gRPC probes read.
const GRPCModule = "google.golang.org/grpc"

// GRPCVersions is every grpc-go release in offsets/grpc.json: for each
// minor version from v1.56 to the newest the module proxy served in
// December 2026, the .0 release and the newest patch. With both, every
// patch in between resolves when the two agree (the rule of LookupField).
var GRPCVersions = []string{
	"v1.56.0", "v1.56.3", "v1.57.0", "v1.57.2", "v1.58.0", "v1.58.3", "v1.59.0",
	"v1.60.0", "v1.60.1", "v1.61.0", "v1.61.1", "v1.62.0", "v1.62.1", "v1.63.0", "v1.63.2",
	"v1.64.0", "v1.64.1", "v1.65.0", "v1.65.1", "v1.66.0", "v1.66.3", "v1.67.0", "v1.67.3",
	"v1.68.0", "v1.68.1", "v1.69.0", "v1.69.4", "v1.70.0", "v1.71.0", "v1.71.1",
	"v1.72.0", "v1.72.2", "v1.73.0", "v1.74.2", "v1.74.3", "v1.75.0", "v1.75.1",
	"v1.76.0", "v1.77.0", "v1.78.0", "v1.79.0", "v1.79.3", "v1.80.0", "v1.81.0", "v1.81.1",
	"v1.82.0", "v1.82.1", "v1.83.0", "v1.83.2", "v1.84.0", "v1.85.0",
}

// GRPCE2E are the grpc-go versions the e2e tests build their gRPC pair
// with: the oldest supported, one from the middle (before transport's
// ServerStream split), and the newest.
var GRPCE2E = []string{"v1.56.3", "v1.66.3", "v1.85.0"}

// GRPCField is one struct field of grpc-go the probes read. Since is the
// first grpc minor version that has it, Until the last (0: still there).
type GRPCField struct {
	Struct, Name string
	Since, Until int
}

// GRPCFields lists the struct fields of grpc-go (and the status message
// it links) that sonde's gRPC probes read.
var GRPCFields = []GRPCField{
	{"google.golang.org/grpc/internal/transport.Stream", "method", 0, 0},
	{"google.golang.org/grpc/internal/transport.Stream", "id", 0, 0},
	// From v1.69 the server's and the client's streams are a ServerStream
	// and a ClientStream embedding Stream.
	{"google.golang.org/grpc/internal/transport.ServerStream", "Stream", 69, 0},
	{"google.golang.org/grpc/internal/transport.ClientStream", "Stream", 69, 0},
	{"google.golang.org/grpc/internal/transport.http2Server", "conn", 0, 0},
	{"google.golang.org/grpc.ClientConn", "authority", 0, 0},
	{"google.golang.org/grpc.clientStream", "attempt", 0, 0},
	// csAttempt's stream was renamed in v1.71.
	{"google.golang.org/grpc.csAttempt", "s", 0, 70},
	{"google.golang.org/grpc.csAttempt", "transportStream", 71, 0},
	{"google.golang.org/grpc/internal/status.Error", "s", 0, 0},
	{"google.golang.org/grpc/internal/status.Status", "s", 0, 0},
	{"google.golang.org/genproto/googleapis/rpc/status.Status", "Code", 0, 0},
}

// Has reports whether grpc-go minor version minor has the field.
func (f GRPCField) Has(minor int) bool {
	return minor >= f.Since && (f.Until == 0 || minor <= f.Until)
}

// GRPCMinor returns N for a grpc-go version v1.N.P, or -1.
func GRPCMinor(version string) int {
	rest, ok := strings.CutPrefix(version, "v1.")
	if !ok {
		return -1
	}
	minor, _, _ := strings.Cut(rest, ".")
	n, err := strconv.Atoi(minor)
	if err != nil {
		return -1
	}
	return n
}

// BuildGRPC builds the Go program in src (a directory of .go files with
// no go.mod, such as e2e/testdata/grpcpair) against grpc-go at version,
// into dir/name, with the installed toolchain. The module is resolved
// through the module proxy, which is why the generator and the e2e tests
// call this, not the unit tests.
func BuildGRPC(dir, src, version, name string, flags ...string) (string, error) {
	mod := filepath.Join(dir, "mod-"+version)
	if err := os.MkdirAll(mod, 0o755); err != nil {
		return "", err
	}
	files, err := filepath.Glob(filepath.Join(src, "*.go"))
	if err != nil || len(files) == 0 {
		return "", fmt.Errorf("no Go files in %s", src)
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", err
		}
		if err := os.WriteFile(filepath.Join(mod, filepath.Base(f)), b, 0o644); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(mod, "go.mod"), []byte("module grpcfixture\n\ngo 1.22\n"), 0o644); err != nil {
		return "", err
	}
	steps := [][]string{
		{"get", GRPCModule + "@" + version},
		{"mod", "tidy"},
		append(append([]string{"build", "-trimpath", "-o", filepath.Join(dir, name)}, flags...), "."),
	}
	for _, args := range steps {
		cmd := exec.Command("go", args...)
		cmd.Dir = mod
		cmd.Env = append(os.Environ(), "GOFLAGS=-mod=mod -buildvcs=false", "GOWORK=off", "CGO_ENABLED=0", "GOTOOLCHAIN=local")
		if out, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("grpc %s: go %s: %w: %s", version, strings.Join(args, " "), err, out)
		}
	}
	return filepath.Join(dir, name), nil
}

// ExtractGRPC is Extract for GRPCFields, in a binary built against grpc-go
// at version.
func ExtractGRPC(version string, fieldOffset func(structName, field string) (uint64, error), notFound error) (Structs, error) {
	minor := GRPCMinor(version)
	if minor < 0 {
		return nil, fmt.Errorf("bad grpc version %q", version)
	}
	out := Structs{}
	for _, f := range GRPCFields {
		off, err := fieldOffset(f.Struct, f.Name)
		switch {
		case !f.Has(minor) && errors.Is(err, notFound):
			continue
		case !f.Has(minor) && err == nil:
			return nil, fmt.Errorf("%s has %s.%s, listed for v1.%d to v1.%d only", version, f.Struct, f.Name, f.Since, f.Until)
		case err != nil:
			return nil, fmt.Errorf("%s: %w", version, err)
		}
		if out[f.Struct] == nil {
			out[f.Struct] = map[string]uint64{}
		}
		out[f.Struct][f.Name] = off
	}
	return out, nil
}
