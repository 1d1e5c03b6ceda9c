package tracer

import (
	"fmt"
	"net/url"
	"path/filepath"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"

	"github.com/sondehq/sonde/tracer/discover"
)

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
	want := discover.FieldExe | discover.FieldEnv | discover.FieldCgroup
	if comm == "" {
		want |= discover.FieldStat
	}
	facts, err := discover.Read(procRoot, int(pid), want)
	if err != nil {
		facts = &discover.Process{PID: int(pid)}
	}
	if comm == "" {
		comm = facts.Comm
	}
	p.exe = facts.Exe
	exeName := comm
	if p.exe != "" {
		exeName = filepath.Base(p.exe)
	}
	p.service = facts.Env["OTEL_SERVICE_NAME"]
	extra := parseResourceAttributes(facts.Env["OTEL_RESOURCE_ATTRIBUTES"])
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
	if facts.ContainerID != "" {
		attrs = append(attrs, semconv.ContainerID(facts.ContainerID))
	}
	if facts.PodUID != "" {
		attrs = append(attrs, semconv.K8SPodUID(facts.PodUID))
	}
	// Later attributes win in resource.NewWithAttributes, so the process's
	// own OTEL_RESOURCE_ATTRIBUTES never override what sonde measured.
	p.resource = resource.NewWithAttributes(semconv.SchemaURL, attrs...)
	return p
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
