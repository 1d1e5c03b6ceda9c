package tracer

import (
	"bytes"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// maxEnviron bounds what is read of /proc/PID/environ: the variables sonde
// looks for are usually near the top, and a hostile process must not make us
// read megabytes.
const maxEnviron = 256 << 10

// process is what sonde knows of a traced process.
type process struct {
	pid      uint32
	exe      string // full path of the executable, if readable
	resource *resource.Resource
	service  string
}

// readProcess builds the identity of pid from /proc. comm is the kernel's
// short name, used when the executable cannot be read (the process may be
// gone already, or be in another mount namespace).
func readProcess(procRoot string, pid uint32, comm, hostName string) *process {
	p := &process{pid: pid}
	dir := filepath.Join(procRoot, strconv.FormatUint(uint64(pid), 10))
	if exe, err := os.Readlink(filepath.Join(dir, "exe")); err == nil {
		p.exe = strings.TrimSuffix(exe, " (deleted)")
	}
	exeName := comm
	if p.exe != "" {
		exeName = filepath.Base(p.exe)
	}
	env := readEnviron(filepath.Join(dir, "environ"))
	p.service = env["OTEL_SERVICE_NAME"]
	extra := parseResourceAttributes(env["OTEL_RESOURCE_ATTRIBUTES"])
	if p.service == "" {
		for _, kv := range extra {
			if kv.Key == semconv.ServiceNameKey {
				p.service = kv.Value.AsString()
			}
		}
	}
	if p.service == "" {
		p.service = exeName
	}
	if p.service == "" {
		p.service = fmt.Sprintf("pid-%d", pid)
	}
	attrs := append(extra,
		semconv.ServiceName(p.service),
		semconv.ProcessPID(int(pid)),
		semconv.HostName(hostName),
	)
	if exeName != "" {
		attrs = append(attrs, semconv.ProcessExecutableName(exeName))
	}
	if p.exe != "" {
		attrs = append(attrs, semconv.ProcessExecutablePath(p.exe))
	}
	// Later attributes win in resource.NewWithAttributes, so the process's
	// own OTEL_RESOURCE_ATTRIBUTES never override what sonde measured.
	p.resource = resource.NewWithAttributes(semconv.SchemaURL, attrs...)
	return p
}

func readEnviron(path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	buf := make([]byte, maxEnviron)
	n, _ := io.ReadFull(f, buf)
	buf = buf[:n]
	if n == maxEnviron && buf[n-1] != 0 {
		// Cut inside an entry: its value would be a truncated lie.
		if i := bytes.LastIndexByte(buf, 0); i >= 0 {
			buf = buf[:i]
		} else {
			buf = nil
		}
	}
	env := make(map[string]string)
	for _, kv := range bytes.Split(buf, []byte{0}) {
		k, v, ok := bytes.Cut(kv, []byte{'='})
		if !ok {
			continue
		}
		switch string(k) {
		case "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES":
			env[string(k)] = string(v)
		}
	}
	return env
}

// parseResourceAttributes reads the OTEL_RESOURCE_ATTRIBUTES format:
// comma-separated key=value pairs with percent-encoded values. As the
// OpenTelemetry specification asks, a value that does not decode discards
// the whole variable.
func parseResourceAttributes(s string) []attribute.KeyValue {
	var out []attribute.KeyValue
	for _, pair := range strings.Split(s, ",") {
		k, v, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			continue
		}
		dec, err := url.PathUnescape(strings.TrimSpace(v))
		if err != nil {
			return nil
		}
		out = append(out, attribute.String(k, dec))
	}
	return out
}
