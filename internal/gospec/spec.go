// Package gospec is the single source of truth shared by the offsets tests,
// the table generator and the Go e2e tests: which toolchains sonde
// supports, how to build with them, which struct fields it reads, and the
// program whose DWARF provides their offsets.
// It must not import package offsets, whose internal tests import it.
package gospec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// Latest is the newest patch release of every supported Go minor version
// that the module proxy served in November 2026. The offsets test matrix
// builds with these; the table also covers each minor's .0 release.
var Latest = []string{"go1.21.13", "go1.22.12", "go1.23.12", "go1.24.13", "go1.25.14", "go1.26.11"}

// Boundaries are patch releases where a layout sonde reads is known to
// change, with the release just before each: go1.26.11 moved
// net/http.response.status, and go1.26.10 is the last release with the old
// layout. With both in the table, every patch release between two table
// entries that agree resolves (see LookupField).
var Boundaries = []string{"go1.26.10"}

// Toolchains is every toolchain in the offsets table: for each minor
// version, the .0 release, the Boundaries, and the newest patch in Latest.
func Toolchains() []string {
	var out []string
	for _, v := range Latest {
		minor, _, _ := strings.Cut(strings.TrimPrefix(v, "go1."), ".")
		if dot0 := "go1." + minor + ".0"; dot0 != v {
			out = append(out, dot0)
		}
		for _, b := range Boundaries {
			if Minor(b) == Minor(v) {
				out = append(out, b)
			}
		}
		out = append(out, v)
	}
	return out
}

// Minor returns N for a toolchain name go1.N.P, or -1.
func Minor(toolchain string) int {
	rest, ok := strings.CutPrefix(toolchain, "go1.")
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

// Field is one struct field sonde reads.
type Field struct {
	Struct, Name string
	// Since is the first minor version that has the field; 0 means every
	// supported one.
	Since int
}

// Fields lists the struct fields the table records.
var Fields = []Field{
	{"net/http.Request", "Method", 0},
	{"net/http.Request", "URL", 0},
	{"net/http.Request", "Host", 0},
	{"net/http.Request", "Header", 0},
	{"net/http.Request", "RemoteAddr", 0},
	{"net/http.Request", "ctx", 0},
	{"net/http.Request", "Pattern", 23}, // added in go1.23, a release after the ServeMux patterns
	{"net/url.URL", "Scheme", 0},
	{"net/url.URL", "Host", 0},
	{"net/url.URL", "Path", 0},
	{"net/url.URL", "RawQuery", 0},
	{"net/http.response", "conn", 0},
	{"net/http.response", "req", 0},
	{"net/http.response", "status", 0},
	{"net/http.response", "wroteHeader", 0},
	{"net/http.conn", "rwc", 0},
	{"net/http.conn", "remoteAddr", 0},
	{"net/http.Response", "StatusCode", 0},
	{"net/http.Response", "Request", 0},
	{"net/http.http2responseWriter", "rws", 0},
	{"net/http.http2responseWriterState", "req", 0},
	{"net/http.http2responseWriterState", "status", 0},
	{"net/http.persistConn", "conn", 0},
	{"runtime.g", "goid", 0},
	{"net.netFD", "pfd", 0},
	{"internal/poll.FD", "Sysfd", 0},
	{"net.conn", "fd", 0},
	{"crypto/tls.Conn", "conn", 0},
	// What sonde's Go probes read besides (tracer/golang.go).
	{"net/http.Request", "ProtoMajor", 0},
	{"net/http.Request", "TLS", 0},
	{"runtime.g", "parentGoid", 0},
	{"net.TCPConn", "conn", 0},
	{"net/http.http2responseWriterState", "conn", 0},
	{"net/http.http2serverConn", "conn", 0},
	{"net/http.transportRequest", "Request", 0},
	{"net/http.http2MetaHeadersFrame", "Fields", 0},
}

// Program links everything sonde probes and every struct in Fields: an
// HTTP/1.1 server and client, and an HTTPS server and client negotiating
// HTTP/2 through net/http's bundled implementation.
const Program = `package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"time"
)

func main() {
	handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto+" "+r.Method+" "+r.URL.Path+" "+r.Host+" "+r.RemoteAddr)
	})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	go http.Serve(ln, handler)
	get(http.DefaultClient, "http://"+ln.Addr().String()+"/hello")

	cert := selfSigned()
	tln, err := net.Listen("tcp", "127.0.0.1:0")
	check(err)
	srv := &http.Server{Handler: handler, TLSConfig: &tls.Config{Certificates: []tls.Certificate{cert}}}
	go srv.ServeTLS(tln, "", "")
	client := &http.Client{Transport: &http.Transport{
		ForceAttemptHTTP2: true,
		TLSClientConfig:   &tls.Config{InsecureSkipVerify: true},
	}}
	get(client, "https://"+tln.Addr().String()+"/h2")
}

func get(c *http.Client, url string) {
	resp, err := c.Get(url)
	check(err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, resp.Request.URL.Path, string(b))
}

func selfSigned() tls.Certificate {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	check(err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	check(err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func check(err error) {
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
`

// WriteProgram writes Program and its go.mod into dir.
func WriteProgram(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(Program), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module fixture\n\ngo 1.21\n"), 0o644)
}

// GoCmd runs the installed go command in dir with a pinned toolchain. CGO
// is off so that PIE uses the internal linker and no C compiler is needed;
// the environment is scrubbed of settings that would change the build.
func GoCmd(dir, toolchain string, args ...string) *exec.Cmd {
	cmd := exec.Command("go", args...)
	cmd.Dir = dir
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOROOT", "GOTOOLCHAIN", "GOFLAGS", "CGO_ENABLED", "GOWORK", "GOOS", "GOARCH", "GOEXPERIMENT":
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, "GOTOOLCHAIN="+toolchain, "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0", "GOWORK=off")
	return cmd
}

// UnavailableError says a toolchain could not be run, typically because
// it could not be downloaded: a skip locally, a failure in CI.
type UnavailableError struct {
	Toolchain string
	Output    []byte
	Err       error
}

func (e *UnavailableError) Error() string {
	return fmt.Sprintf("toolchain %s unavailable: %v: %s", e.Toolchain, e.Err, bytes.TrimSpace(e.Output))
}

func (e *UnavailableError) Unwrap() error { return e.Err }

// Build builds Program with toolchain into dir/name, passing extra build
// flags. Asking for the version first tells "could not download the
// toolchain" (*UnavailableError) from "the toolchain failed to build".
func Build(dir, toolchain, name string, flags ...string) (string, error) {
	if err := WriteProgram(dir); err != nil {
		return "", fmt.Errorf("write program: %w", err)
	}
	if out, err := GoCmd(dir, toolchain, "version").CombinedOutput(); err != nil {
		return "", &UnavailableError{Toolchain: toolchain, Output: out, Err: err}
	}
	bin := filepath.Join(dir, name)
	args := append([]string{"build", "-trimpath", "-o", bin}, flags...)
	args = append(args, ".")
	if out, err := GoCmd(dir, toolchain, args...).CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s build %s: %w: %s", toolchain, name, err, out)
	}
	return bin, nil
}

// Structs maps struct name to field name to byte offset for one toolchain.
type Structs map[string]map[string]uint64

// Extract reads every field in Fields through fieldOffset (offsets'
// FieldOffset on a binary built from Program). notFound is the error
// fieldOffset wraps for a missing field. A field before its Since version
// must be missing and is left out; any other missing field is an error,
// because it means the program did not link the struct, not that the
// struct lacks it.
func Extract(version string, fieldOffset func(structName, field string) (uint64, error), notFound error) (Structs, error) {
	minor := Minor(version)
	if minor < 0 {
		return nil, fmt.Errorf("bad toolchain name %q", version)
	}
	return extract(version, minor, Fields, fieldOffset, notFound)
}

func extract(version string, minor int, fields []Field, fieldOffset func(structName, field string) (uint64, error), notFound error) (Structs, error) {
	out := Structs{}
	for _, f := range fields {
		off, err := fieldOffset(f.Struct, f.Name)
		switch {
		case minor < f.Since && errors.Is(err, notFound):
			continue
		case minor < f.Since && err == nil:
			return nil, fmt.Errorf("%s has %s.%s, listed as new in minor version %d", version, f.Struct, f.Name, f.Since)
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

// Encode renders the table, toolchain to Structs, in its committed form:
// indented JSON with sorted keys and a final newline, so that the same
// input always gives the same bytes.
func Encode(table map[string]Structs) ([]byte, error) {
	b, err := json.MarshalIndent(table, "", "\t")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}
