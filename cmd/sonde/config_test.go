package main

import (
	"errors"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/tracer/discover"
)

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "sonde.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func noEnv(string) (string, bool) { return "", false }

func envOf(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := vars[k]; return v, ok }
}

// parse runs parseTrace with the config file holding text, then args.
func parse(t *testing.T, text string, lookup func(string) (string, bool), args ...string) (*traceConfig, []envVar, error) {
	t.Helper()
	path := writeConfig(t, text)
	return parseTrace(append([]string{"--config", path}, args...), io.Discard, lookup)
}

const everyField = `
pid: [101, 202]
exe:
  - /usr/bin/python3*
  - nginx
select:
  - exe: /srv/*/app
    port: 8080
  - cmdline: "*gunicorn*"
    cgroup: /system.slice/*
    container: "*"
    otel_service_name: true
exclude:
  - exe: "*/healthcheck"
output: json
capture_bytes: 1024
ring_buffer: 32M
max_conns: 1000
log_format: json
log_level: debug
flush_timeout: 1m30s
link_hold: 250ms
link_max: 500
metrics_addr: 127.0.0.1:19464
cpu_profile: /tmp/sonde.prof
tls: false
go: false
data_hooks: syscalls
otlp:
  endpoint: https://collector.example:4318
  protocol: http/protobuf
  headers:
    x-api-key: s3cr,t value
    X-Tenant: acme
  insecure: false
  timeout: 2500ms
`

func TestConfigEveryField(t *testing.T) {
	cfg, env, err := parse(t, everyField, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := traceConfig{
		pids: pidList{101, 202},
		exes: stringList{"/usr/bin/python3*", "nginx"},
		selects: ruleList{
			{Exe: "/srv/*/app", Port: 8080},
			{Cmdline: "*gunicorn*", Cgroup: "/system.slice/*", Container: "*", OTelServiceName: true},
		},
		excludes:     ruleList{{Exe: "*/healthcheck"}},
		output:       "json",
		captureBytes: 1024,
		ringBuffer:   32 << 20,
		maxConns:     1000,
		logFormat:    "json",
		logLevel:     "debug",
		flushTimeout: 90 * time.Second,
		metricsAddr:  listenAddr{addr: "127.0.0.1:19464", explicit: true},
		cpuProfile:   "/tmp/sonde.prof",
		tls:          false,
		goProbes:     false,
		linkHold:     250 * time.Millisecond,
		linkMax:      500,
		dataHooks:    "syscalls",
	}
	if !reflect.DeepEqual(*cfg, want) {
		t.Errorf("got  %+v\nwant %+v", *cfg, want)
	}
	wantEnv := []envVar{
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "https://collector.example:4318"},
		{"OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"},
		{"OTEL_EXPORTER_OTLP_HEADERS", "X-Tenant=acme,x-api-key=s3cr%2Ct%20value"},
		{"OTEL_EXPORTER_OTLP_INSECURE", "false"},
		{"OTEL_EXPORTER_OTLP_TIMEOUT", "2500"},
	}
	if !reflect.DeepEqual(env, wantEnv) {
		t.Errorf("otlp environment:\ngot  %v\nwant %v", env, wantEnv)
	}
}

// The SDK splits OTEL_EXPORTER_OTLP_HEADERS on commas and path-unescapes
// each value: what the file says must come out unchanged.
func TestConfigHeadersSurviveTheSDKsDecoding(t *testing.T) {
	headers := map[string]string{"a": "x,y=z", "b": " 100% ", "c": "é/ü"}
	o := otlpConfig{Headers: headers}
	env := o.environ(noEnv)
	if len(env) != 1 || env[0].name != envOTLPHeaders {
		t.Fatalf("got %v", env)
	}
	got := map[string]string{}
	for _, pair := range strings.Split(env[0].value, ",") {
		k, v, ok := strings.Cut(pair, "=")
		if !ok {
			t.Fatalf("pair %q has no =", pair)
		}
		dec, err := url.PathUnescape(v)
		if err != nil {
			t.Fatal(err)
		}
		got[k] = dec
	}
	// The SDK trims spaces around values, as it would for the variable.
	headers["b"] = strings.TrimSpace(headers["b"])
	got["b"] = strings.TrimSpace(got["b"])
	if !reflect.DeepEqual(got, headers) {
		t.Errorf("got %q, want %q", got, headers)
	}
}

func TestConfigEmptyFileKeepsDefaults(t *testing.T) {
	for _, text := range []string{"", "# nothing\n", "---\n"} {
		cfg, env, err := parse(t, text, noEnv)
		if err != nil {
			t.Fatalf("%q: %v", text, err)
		}
		def, _, err := parseTrace(nil, io.Discard, noEnv)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cfg, def) || env != nil {
			t.Errorf("%q: got %+v %v, want the defaults %+v", text, cfg, env, def)
		}
	}
}

func TestConfigRingBufferAcceptsANumberOrASize(t *testing.T) {
	for text, want := range map[string]byteSize{
		"ring_buffer: 4194304": 4 << 20,
		"ring_buffer: 4M":      4 << 20,
		"ring_buffer: 1G":      1 << 30,
		`ring_buffer: "64K"`:   64 << 10,
	} {
		cfg, _, err := parse(t, text, noEnv)
		if err != nil || cfg.ringBuffer != want {
			t.Errorf("%s: got %d, %v; want %d", text, cfg.ringBuffer, err, want)
		}
	}
}

func TestConfigPrecedence(t *testing.T) {
	const file = `
pid: [1, 2]
exe: [from-file]
select: [{port: 8080}]
exclude: [{exe: file-excluded}]
output: json
capture_bytes: 1024
ring_buffer: 16M
max_conns: 10
log_format: json
log_level: debug
flush_timeout: 3s
metrics_addr: 127.0.0.1:1
cpu_profile: /tmp/file.prof
tls: false
go: false
data_hooks: syscalls
otlp:
  endpoint: http://file:4317
  protocol: grpc
  headers: {k: file}
  insecure: true
  timeout: 1s
`
	t.Run("file over defaults", func(t *testing.T) {
		cfg, _, err := parse(t, file, noEnv)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.logLevel != "debug" || cfg.maxConns != 10 || cfg.output != "json" || !cfg.metricsAddr.explicit || cfg.tls || cfg.goProbes || cfg.dataHooks != "syscalls" {
			t.Errorf("file values not applied: %+v", cfg)
		}
	})

	t.Run("flags over file, even at their default value", func(t *testing.T) {
		// Every value below equals the flag's default but for the lists.
		cfg, _, err := parse(t, file, noEnv,
			"--pid", "3", "--exe", "from-flag", "--select", "port=9090", "--exclude", "exe=flag-excluded",
			"--output", "text", "--capture-bytes", "4096", "--ring-buffer", "8M", "--max-conns", "65536",
			"--log-format", "text", "--log-level", "info", "--flush-timeout", "10s",
			"--metrics-addr", defaultMetricsAddr, "--cpu-profile", "", "--tls=true", "--go=true", "--data-hooks", "auto")
		if err != nil {
			t.Fatal(err)
		}
		want := traceConfig{
			pids:         pidList{3},
			exes:         stringList{"from-flag"},
			selects:      ruleList{{Port: 9090}},
			excludes:     ruleList{{Exe: "flag-excluded"}},
			output:       "text",
			captureBytes: 4096,
			ringBuffer:   8 << 20,
			maxConns:     65536,
			logFormat:    "text",
			logLevel:     "info",
			flushTimeout: 10 * time.Second,
			metricsAddr:  listenAddr{addr: defaultMetricsAddr, explicit: true},
			tls:          true,
			goProbes:     true,
			linkHold:     time.Second,
			linkMax:      65536,
			dataHooks:    "auto",
		}
		if !reflect.DeepEqual(*cfg, want) {
			t.Errorf("got  %+v\nwant %+v", *cfg, want)
		}
	})

	t.Run("environment over file", func(t *testing.T) {
		_, env, err := parse(t, file, envOf(map[string]string{
			"OTEL_EXPORTER_OTLP_ENDPOINT": "http://env:4317",
			"OTEL_EXPORTER_OTLP_HEADERS":  "k=env",
			// Set but empty counts as unset, as for the SDK and sonde's
			// choice of output.
			"OTEL_EXPORTER_OTLP_INSECURE": "",
		}))
		if err != nil {
			t.Fatal(err)
		}
		want := []envVar{
			{"OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"},
			{"OTEL_EXPORTER_OTLP_INSECURE", "true"},
			{"OTEL_EXPORTER_OTLP_TIMEOUT", "1000"},
		}
		if !reflect.DeepEqual(env, want) {
			t.Errorf("got %v, want %v", env, want)
		}
	})

	t.Run("defaults without file or flags", func(t *testing.T) {
		cfg, env, err := parseTrace(nil, io.Discard, noEnv)
		if err != nil {
			t.Fatal(err)
		}
		if cfg.logLevel != "info" || cfg.maxConns != 65536 || cfg.ringBuffer != 8<<20 ||
			cfg.metricsAddr != (listenAddr{addr: defaultMetricsAddr}) || env != nil {
			t.Errorf("defaults: %+v %v", cfg, env)
		}
	})

	t.Run("lists from flags replace the file's", func(t *testing.T) {
		cfg, _, err := parse(t, "pid: [1]\nexe: [a]\n", noEnv, "--pid", "7")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cfg.pids, pidList{7}) || !reflect.DeepEqual(cfg.exes, stringList{"a"}) {
			t.Errorf("pids %v exes %v", cfg.pids, cfg.exes)
		}
	})
}

func TestConfigUnknownKeysNameKeyAndLine(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		{"output: json\nlog_levle: debug\n",
			`line 2: unknown key "log_levle"; accepted keys are pid, exe, select, exclude, output, capture_bytes, ring_buffer, max_conns, log_format, log_level, flush_timeout, link_hold, link_max, ui, metrics_addr, cpu_profile, tls, go, inject, data_hooks, otlp`},
		{"otlp:\n  endpoint: http://c:4317\n  endpiont: x\n",
			`line 3: unknown key "otlp.endpiont"; accepted keys are endpoint, protocol, headers, insecure, timeout`},
		{"select:\n  - exe: a\n  - exe: b\n    prot: 80\n",
			`line 4: unknown key "select[1].prot"; accepted keys are exe, cmdline, port, cgroup, container, otel_service_name`},
		{"exclude: [{exe: a, pid: 4}]\n",
			`line 1: unknown key "exclude[0].pid"; accepted keys are exe, cmdline, port, cgroup, container, otel_service_name`},
	} {
		_, _, err := parse(t, tc.text, noEnv)
		checkConfigError(t, err, tc.text, tc.want)
	}
}

func TestConfigBadValuesNameTheField(t *testing.T) {
	for _, tc := range []struct{ text, want string }{
		// Values of the wrong type, reported by line.
		{"pid: 12\n", `line 1: pid: want a list of process ids, got "12"`},
		{"pid: [1, x]\n", `line 1: pid[1]: want an integer, got "x"`},
		{"pid: [x, 1]\n", `line 1: pid[0]: want an integer, got "x"`},
		{"pid:\n  - 1\n  - 2.0\n", `line 3: pid[1]: want an integer, got "2.0"`},
		{"exe: /bin/a\n", `line 1: exe: want a list of strings, got "/bin/a"`},
		{"select: exe=a\n", `line 1: select: want a list of rules (mappings), got "exe=a"`},
		{"select: [{port: http}]\n", `line 1: select[0].port: want an integer from 1 to 65535, got "http"`},
		{"select: [{port: 70000}]\n", `line 1: select[0].port: want an integer from 1 to 65535, got "70000"`},
		{"exclude: [{otel_service_name: maybe}]\n", `line 1: exclude[0].otel_service_name: want true or false, got "maybe"`},
		{"\ncapture_bytes: lots\n", `line 2: capture_bytes: want an integer, got "lots"`},
		{"ring_buffer: 8X\n", `line 1: ring_buffer: want a size such as 8M, 64K or 4096, got "8X"`},
		{"max_conns: 1.5\n", `line 1: max_conns: want an integer, got "1.5"`},
		{"capture_bytes: '1024'\n", `line 1: capture_bytes: want an integer, got "1024"`},
		{"flush_timeout: 10\n", `line 1: flush_timeout: want a duration such as 10s or 500ms, got "10"`},
		{"otlp: http://c:4317\n", `line 1: otlp: want a mapping with keys endpoint, protocol, headers, insecure, timeout, got "http://c:4317"`},
		{"otlp:\n  insecure: sometimes\n", `line 2: otlp.insecure: want true or false, got "sometimes"`},
		{"otlp:\n  timeout: soon\n", `line 2: otlp.timeout: want a duration such as 10s or 500ms, got "soon"`},
		{"otlp:\n  headers: [a]\n", `line 2: otlp.headers: want a mapping of names to strings`},
		{"log_level: [debug]\n", `line 1: log_level: want a string`},
		{"output: json\noutput: text\n", `line 2: mapping key "output" already defined at line 1`},
		// Values of the right type that are not accepted.
		{"pid: [0]\n", `pid 0: accepted values are process ids, 1 or more`},
		{"exe: ['']\n", `exe[0]: empty glob`},
		{"select: [{exe: '[a'}]\n", `select[0]: exe "[a": bad glob: syntax error in pattern`},
		{"exclude: [{container: abc}]\n", `exclude[0]: container "abc": accepted values are * or 12 to 64 hex digits of a container id`},
		{"select: [{}]\n", `select[0]: empty rule: set at least one of exe, cmdline, port, cgroup, container, otel_service_name`},
		{"output: xml\n", `output "xml": accepted values are otlp, text, json`},
		{"capture_bytes: 32\n", `capture_bytes 32: accepted values are 64 to 16384`},
		{"ring_buffer: 3M\n", `ring_buffer 3145728: accepted values are powers of two of 4096 or more, e.g. 8M`},
		{"max_conns: 0\n", `max_conns 0: accepted values are 1 or more`},
		{"log_format: yaml\n", `log_format "yaml": accepted values are text, json`},
		{"log_level: verbose\n", `log_level "verbose": accepted values are debug, info, warn, error`},
		{"flush_timeout: -1s\n", `flush_timeout "-1s": accepted values are durations of 0 or more, e.g. 10s`},
		{"metrics_addr: localhost\n", `metrics_addr "localhost": accepted values are host:port, e.g. 127.0.0.1:9464, or empty to disable metrics`},
		{"otlp:\n  endpoint: collector:4317\n", `otlp.endpoint "collector:4317": want a URL such as http://collector:4317`},
		{"otlp:\n  protocol: http/json\n", `otlp.protocol "http/json": accepted values are grpc, http/protobuf`},
		{"otlp:\n  headers: {'bad key': v}\n", `otlp.headers: "bad key" is not a valid header name`},
		{"otlp:\n  timeout: 0s\n", `otlp.timeout "0s": want a duration of 1ms or more, e.g. 10s`},
		// Not a config at all.
		{"output: json\n---\noutput: text\n", `more than one YAML document; sonde reads one`},
		{"output: [json\n", `yaml: line 1: did not find expected ',' or ']'`},
		{"- output: json\n", `line 1: want a mapping of settings`},
	} {
		_, _, err := parse(t, tc.text, noEnv)
		checkConfigError(t, err, tc.text, tc.want)
	}
}

// checkConfigError wants err to be a *configError reading
// "config PATH: " + want.
func checkConfigError(t *testing.T, err error, text, want string) {
	t.Helper()
	var ce *configError
	if !errors.As(err, &ce) {
		t.Errorf("%q: got %v (%T), want a config error", text, err, err)
		return
	}
	if got := strings.TrimPrefix(err.Error(), "config "+ce.File+": "); got != want || filepath.Base(ce.File) != "sonde.yaml" {
		t.Errorf("%q:\ngot  %s\nwant config .../sonde.yaml: %s", text, err, want)
	}
}

func TestConfigMissingFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "absent.yaml")
	_, _, err := parseTrace([]string{"--config", path}, io.Discard, noEnv)
	var ce *configError
	if !errors.As(err, &ce) || !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "config "+path+": ") {
		t.Errorf("got %v", err)
	}
}

func TestConfigErrorsExitWithStatus2(t *testing.T) {
	for _, text := range []string{"log_level: verbose\n", "bogus: 1\n"} {
		if code := traceCmd([]string{"--config", writeConfig(t, text)}); code != 2 {
			t.Errorf("%q: exit %d, want 2", text, code)
		}
	}
	if code := traceCmd([]string{"--config", filepath.Join(t.TempDir(), "absent.yaml")}); code != 2 {
		t.Errorf("missing file: exit %d, want 2", code)
	}
}

// A bad flag is reported as the flag, before the file is read.
func TestConfigBadFlagWithFile(t *testing.T) {
	_, _, err := parse(t, "log_level: debug\n", noEnv, "--log-level", "verbose")
	if err == nil || err.Error() != `--log-level "verbose": accepted values are debug, info, warn, error` {
		t.Errorf("got %v", err)
	}
}

// Rule is decoded by yaml into discover.Rule, whose tags must keep the
// names ParseRule reads, or a rule would mean different things in the file
// and on the command line.
func TestConfigRuleKeysMatchTheFlagForm(t *testing.T) {
	cfg, _, err := parse(t, "select:\n  - {exe: /a*, cmdline: 'x y', port: 81, cgroup: /c/*, container: '*', otel_service_name: true}\n", noEnv)
	if err != nil {
		t.Fatal(err)
	}
	flagForm, err := discover.ParseRule("exe=/a*,cmdline=x y,port=81,cgroup=/c/*,container=*,otel_service_name=true")
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.selects) != 1 || cfg.selects[0] != flagForm {
		t.Errorf("file %v, flag %v", cfg.selects, flagForm)
	}
}

// --ui binds to loopback unless a host is named.
func TestUIAddr(t *testing.T) {
	for in, want := range map[string]string{
		"":               "",
		"9465":           "127.0.0.1:9465",
		":9465":          "127.0.0.1:9465",
		"127.0.0.1:0":    "127.0.0.1:0",
		"0.0.0.0:9465":   "0.0.0.0:9465",
		"[::1]:9465":     "[::1]:9465",
		"localhost:9465": "localhost:9465",
	} {
		if got, err := uiAddr(in); err != nil || got != want {
			t.Errorf("uiAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"nope", "1.2.3.4", ":99999", "host:port"} {
		if _, err := uiAddr(bad); err == nil {
			t.Errorf("uiAddr(%q) accepted", bad)
		}
	}
}
