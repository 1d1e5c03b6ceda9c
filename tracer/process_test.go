package tracer

import (
	"reflect"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/resource"
)

// maxEnviron is how much of /proc/PID/environ discover reads.
const maxEnviron = 256 << 10

func resourceValue(t *testing.T, r *resource.Resource, key string) (any, bool) {
	t.Helper()
	if r == nil {
		t.Fatalf("nil resource")
	}
	v, ok := r.Set().Value(attribute.Key(key))
	if !ok {
		return nil, false
	}
	return v.AsInterface(), true
}

func checkResource(t *testing.T, r *resource.Resource, want map[string]any) {
	t.Helper()
	for k, w := range want {
		got, ok := resourceValue(t, r, k)
		switch {
		case w == nil && ok:
			t.Errorf("resource %s = %#v, want absent", k, got)
		case w != nil && !ok:
			t.Errorf("resource %s missing, want %#v", k, w)
		case w != nil && !reflect.DeepEqual(got, w):
			t.Errorf("resource %s = %#v, want %#v", k, got, w)
		}
	}
}

func TestReadProcessServiceName(t *testing.T) {
	const pid = 321
	for _, tc := range []struct {
		name    string
		exe     string // "" = no exe link
		environ []string
		comm    string
		want    string
	}{
		{
			name:    "OTEL_SERVICE_NAME",
			exe:     "/usr/bin/app",
			environ: []string{"PATH=/bin", "OTEL_SERVICE_NAME=checkout", "OTEL_RESOURCE_ATTRIBUTES=service.name=ignored"},
			want:    "checkout",
		},
		{
			name:    "OTEL_RESOURCE_ATTRIBUTES",
			exe:     "/usr/bin/app",
			environ: []string{"OTEL_RESOURCE_ATTRIBUTES=deployment.environment=prod, service.name = cart ,team=x"},
			want:    "cart",
		},
		{
			name:    "percent-encoded service.name",
			exe:     "/usr/bin/app",
			environ: []string{"OTEL_RESOURCE_ATTRIBUTES=service.name=my%20svc%2Cv2"},
			want:    "my svc,v2",
		},
		{
			name:    "empty OTEL_SERVICE_NAME",
			exe:     "/usr/bin/app",
			environ: []string{"OTEL_SERVICE_NAME=", "OTEL_RESOURCE_ATTRIBUTES=service.name=from-attrs"},
			want:    "from-attrs",
		},
		{
			name:    "exe base name",
			exe:     "/opt/shop/bin/shopd",
			environ: []string{"HOME=/root", "OTEL_SERVICE_NAMEX=nope", "XOTEL_SERVICE_NAME=nope"},
			comm:    "shopd-worker",
			want:    "shopd",
		},
		{
			name: "deleted executable",
			exe:  "/opt/shop/bin/shopd (deleted)",
			want: "shopd",
		},
		{
			name: "comm without exe",
			comm: "python3",
			want: "python3",
		},
		{
			name: "pid when nothing is known",
			want: "pid-321",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fp := newFakeProc(t)
			fp.dir(pid)
			if tc.exe != "" {
				fp.exe(pid, tc.exe)
			}
			if tc.environ != nil {
				fp.environ(pid, tc.environ...)
			}
			p := readProcess(fp.root, pid, tc.comm, "node-1")
			if p.pid != pid {
				t.Errorf("pid = %d", p.pid)
			}
			if p.service != tc.want {
				t.Errorf("service = %q, want %q", p.service, tc.want)
			}
			checkResource(t, p.resource, map[string]any{
				"service.name": tc.want,
				"process.pid":  int64(pid),
				"host.name":    "node-1",
			})
		})
	}
}

func TestReadProcessExecutable(t *testing.T) {
	fp := newFakeProc(t)
	fp.exe(10, "/usr/local/bin/api (deleted)")
	p := readProcess(fp.root, 10, "api", "h")
	if p.exe != "/usr/local/bin/api" {
		t.Errorf("exe = %q, want the path without (deleted)", p.exe)
	}
	checkResource(t, p.resource, map[string]any{
		"process.executable.name": "api",
		"process.executable.path": "/usr/local/bin/api",
	})

	// Without a readable exe, the name is comm's and there is no path.
	p = readProcess(fp.root, 11, "worker", "h")
	if p.exe != "" {
		t.Errorf("exe = %q for a process without exe", p.exe)
	}
	checkResource(t, p.resource, map[string]any{
		"process.executable.name": "worker",
		"process.executable.path": nil,
	})
}

// The process's own resource attributes are kept, but never replace what
// sonde measured itself.
func TestReadProcessOwnAttributes(t *testing.T) {
	const pid = 77
	fp := newFakeProc(t)
	fp.exe(pid, "/srv/bin/billing")
	fp.environ(pid,
		"OTEL_RESOURCE_ATTRIBUTES=process.pid=1,host.name=spoofed,deployment.environment=staging,"+
			"k8s.pod.name=billing-7d9f,note=a%3Db%2Cc,process.executable.name=evil,process.executable.path=/evil",
	)
	p := readProcess(fp.root, pid, "billing", "real-host")
	checkResource(t, p.resource, map[string]any{
		"process.pid":             int64(pid),
		"host.name":               "real-host",
		"process.executable.name": "billing",
		"process.executable.path": "/srv/bin/billing",
		"deployment.environment":  "staging",
		"k8s.pod.name":            "billing-7d9f",
		"note":                    "a=b,c",
		"service.name":            "billing",
	})
	if p.resource.SchemaURL() == "" {
		t.Errorf("resource has no schema URL")
	}
}

func TestReadProcessEnvironBounded(t *testing.T) {
	const pid = 55
	fp := newFakeProc(t)
	fp.exe(pid, "/usr/bin/bounded")

	// A variable beyond maxEnviron is not seen.
	filler := "JUNK=" + strings.Repeat("x", maxEnviron)
	fp.environ(pid, filler, "OTEL_SERVICE_NAME=too-far")
	p := readProcess(fp.root, pid, "", "h")
	if p.service != "bounded" {
		t.Errorf("service = %q: a variable past maxEnviron was read", p.service)
	}

	// One within the bound is, however big the rest.
	fp2 := newFakeProc(t)
	fp2.exe(pid, "/usr/bin/bounded")
	fp2.environ(pid, "OTEL_SERVICE_NAME=near", filler, filler)
	if p := readProcess(fp2.root, pid, "", "h"); p.service != "near" {
		t.Errorf("service = %q, want near", p.service)
	}
}

// A variable cut by the maxEnviron bound is incomplete: its value must not
// be taken as the service name.
func TestReadProcessEnvironCutEntry(t *testing.T) {
	const pid = 56
	fp := newFakeProc(t)
	fp.exe(pid, "/usr/bin/bounded")
	const entry = "OTEL_SERVICE_NAME=checkout-service"
	// Place the entry so that the bound falls in the middle of its value.
	cut := len("OTEL_SERVICE_NAME=chec")
	filler := "JUNK=" + strings.Repeat("y", maxEnviron-cut-len("JUNK=")-1)
	fp.environ(pid, filler, entry)
	p := readProcess(fp.root, pid, "", "h")
	if p.service == "chec" {
		t.Errorf("service = %q: the value cut by maxEnviron was used", p.service)
	}
	if p.service != "bounded" {
		t.Errorf("service = %q, want bounded", p.service)
	}
}

func TestParseResourceAttributes(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []attribute.KeyValue
	}{
		{"", nil},
		{"a=1", []attribute.KeyValue{attribute.String("a", "1")}},
		{" a = 1 , b=2", []attribute.KeyValue{attribute.String("a", "1"), attribute.String("b", "2")}},
		{"k=a%2Cb%3Dc%20d", []attribute.KeyValue{attribute.String("k", "a,b=c d")}},
		// A value that does not percent-decode discards the whole variable,
		// as the OpenTelemetry specification asks.
		{"k=100%", nil},
		{"ok=1, j = %zz ", nil},
		// values are trimmed
		{" k = 100%25 , j = x ", []attribute.KeyValue{attribute.String("k", "100%"), attribute.String("j", "x")}},
		{"k=x=y", []attribute.KeyValue{attribute.String("k", "x=y")}},
		{"k=", []attribute.KeyValue{attribute.String("k", "")}},
		// no key, no "=": skipped
		{"=v,noequals, =w,,ok=1", []attribute.KeyValue{attribute.String("ok", "1")}},
	} {
		got := parseResourceAttributes(tc.in)
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseResourceAttributes(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}
