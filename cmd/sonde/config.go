package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/sondehq/sonde/tracer/discover"
)

// fileConfig is the YAML form of the flags of `sonde trace`. Pointers and
// nil slices tell a key the file leaves out from one it sets to the zero
// value, so that only what the file says overrides the defaults.
type fileConfig struct {
	PID          []strictInt     `yaml:"pid"`
	Exe          []string        `yaml:"exe"`
	Select       []discover.Rule `yaml:"select"`
	Exclude      []discover.Rule `yaml:"exclude"`
	Output       *string         `yaml:"output"`
	CaptureBytes *strictInt      `yaml:"capture_bytes"`
	RingBuffer   *byteSize       `yaml:"ring_buffer"`
	MaxConns     *strictInt      `yaml:"max_conns"`
	LogFormat    *string         `yaml:"log_format"`
	LogLevel     *string         `yaml:"log_level"`
	FlushTimeout *duration       `yaml:"flush_timeout"`
	LinkHold     *duration       `yaml:"link_hold"`
	LinkMax      *strictInt      `yaml:"link_max"`
	UI           *string         `yaml:"ui"`
	MetricsAddr  *string         `yaml:"metrics_addr"`
	CPUProfile   *string         `yaml:"cpu_profile"`
	TLS          *bool           `yaml:"tls"`
	Go           *bool           `yaml:"go"`
	Inject       *bool           `yaml:"inject"`
	DataHooks    *string         `yaml:"data_hooks"`
	OTLP         otlpConfig      `yaml:"otlp"`
}

// otlpConfig holds the settings the OpenTelemetry SDK otherwise reads from
// OTEL_EXPORTER_OTLP_*. They reach it through those very variables (see
// environ), so that a setting means exactly what its variable means.
type otlpConfig struct {
	Endpoint string            `yaml:"endpoint"`
	Protocol string            `yaml:"protocol"`
	Headers  map[string]string `yaml:"headers"`
	Insecure *bool             `yaml:"insecure"`
	Timeout  *duration         `yaml:"timeout"`
}

// configError is a config file that cannot be used. Line is 0 when the
// problem is a value rather than a place in the text.
type configError struct {
	File string
	Line int
	Err  error
}

func (e *configError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("config %s: line %d: %v", e.File, e.Line, e.Err)
	}
	return fmt.Sprintf("config %s: %v", e.File, e.Err)
}

func (e *configError) Unwrap() error { return e.Err }

// loadConfig reads and checks a config file. Unknown keys are errors: a
// misspelt key silently ignored would leave an agent tracing the wrong
// processes.
func loadConfig(path string) (*fileConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, &configError{File: path, Err: err}
	}
	fc, err := parseConfig(data)
	if err != nil {
		var ce *configError
		if errors.As(err, &ce) {
			ce.File = path
			return nil, ce
		}
		return nil, &configError{File: path, Err: err}
	}
	return fc, nil
}

func parseConfig(data []byte) (*fileConfig, error) {
	var fc fileConfig
	// The node tree names the key behind each of yaml's "line N" errors.
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, err
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	err := dec.Decode(&fc)
	switch {
	case errors.Is(err, io.EOF):
		return &fc, nil // an empty file sets nothing
	case err != nil:
		var te *yaml.TypeError
		if errors.As(err, &te) {
			return nil, explainTypeError(te, indexNodes(&root))
		}
		return nil, err
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("more than one YAML document; sonde reads one")
	}
	if err := fc.validate(); err != nil {
		return nil, &configError{Err: err}
	}
	return &fc, nil
}

// validate checks every value with the same rules as the flags, naming the
// key instead of the flag.
func (fc *fileConfig) validate() error {
	for _, pid := range fc.PID {
		if pid <= 0 {
			return fmt.Errorf("pid %d: accepted values are process ids, 1 or more", pid)
		}
	}
	for i, e := range fc.Exe {
		if e == "" {
			return fmt.Errorf("exe[%d]: empty glob", i)
		}
	}
	for _, rules := range []struct {
		key   string
		rules []discover.Rule
	}{{"select", fc.Select}, {"exclude", fc.Exclude}} {
		for i, r := range rules.rules {
			if r == (discover.Rule{}) {
				return fmt.Errorf("%s[%d]: empty rule: set at least one of exe, cmdline, port, cgroup, container, otel_service_name", rules.key, i)
			}
			if err := r.Validate(); err != nil {
				return fmt.Errorf("%s[%d]: %w", rules.key, i, err)
			}
		}
	}
	checks := []struct {
		key string
		set bool
		err func() error
	}{
		{"output", fc.Output != nil, func() error { return checkOutput(deref(fc.Output)) }},
		{"capture_bytes", fc.CaptureBytes != nil, func() error { return checkCaptureBytes(int(deref(fc.CaptureBytes))) }},
		{"ring_buffer", fc.RingBuffer != nil, func() error { return checkRingBuffer(deref(fc.RingBuffer)) }},
		{"max_conns", fc.MaxConns != nil, func() error { return checkMaxConns(int(deref(fc.MaxConns))) }},
		{"log_format", fc.LogFormat != nil, func() error { return checkLogFormat(deref(fc.LogFormat)) }},
		{"log_level", fc.LogLevel != nil, func() error { return checkLogLevel(deref(fc.LogLevel)) }},
		{"flush_timeout", fc.FlushTimeout != nil, func() error { return checkFlushTimeout(time.Duration(deref(fc.FlushTimeout))) }},
		{"link_hold", fc.LinkHold != nil, func() error { return checkLinkHold(time.Duration(deref(fc.LinkHold))) }},
		{"link_max", fc.LinkMax != nil, func() error { return checkMaxConns(int(deref(fc.LinkMax))) }},
		{"ui", fc.UI != nil, func() error { return checkUI(deref(fc.UI)) }},
		{"metrics_addr", fc.MetricsAddr != nil, func() error { return checkMetricsAddr(deref(fc.MetricsAddr)) }},
		{"data_hooks", fc.DataHooks != nil, func() error { return checkDataHooks(deref(fc.DataHooks)) }},
	}
	for _, c := range checks {
		if !c.set {
			continue
		}
		if err := c.err(); err != nil {
			return fmt.Errorf("%s %w", c.key, err)
		}
	}
	return fc.OTLP.validate()
}

func deref[T any](p *T) T {
	var v T
	if p != nil {
		v = *p
	}
	return v
}

func (o *otlpConfig) validate() error {
	if o.Endpoint != "" {
		u, err := url.Parse(o.Endpoint)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("otlp.endpoint %q: want a URL such as http://collector:4317", o.Endpoint)
		}
	}
	switch o.Protocol {
	case "", "grpc", "http/protobuf":
	default:
		return fmt.Errorf("otlp.protocol %q: accepted values are grpc, http/protobuf", o.Protocol)
	}
	for k := range o.Headers {
		if !isToken(k) {
			return fmt.Errorf("otlp.headers: %q is not a valid header name", k)
		}
	}
	if o.Timeout != nil && *o.Timeout < duration(time.Millisecond) {
		return fmt.Errorf("otlp.timeout %q: want a duration of 1ms or more, e.g. 10s", time.Duration(*o.Timeout))
	}
	return nil
}

// isToken reports whether s is an HTTP field name (RFC 9110 token); the SDK
// silently drops a header whose name is not.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// Names of the variables the file's otlp section stands in for.
const (
	envOTLPEndpoint = "OTEL_EXPORTER_OTLP_ENDPOINT"
	envOTLPProtocol = "OTEL_EXPORTER_OTLP_PROTOCOL"
	envOTLPHeaders  = "OTEL_EXPORTER_OTLP_HEADERS"
	envOTLPInsecure = "OTEL_EXPORTER_OTLP_INSECURE"
	envOTLPTimeout  = "OTEL_EXPORTER_OTLP_TIMEOUT"
)

type envVar struct{ name, value string }

// environ returns the OTEL_EXPORTER_OTLP_* variables that carry the otlp
// section, leaving out each one the environment sets already, since the
// environment wins over the file. The signal-specific variables
// (OTEL_EXPORTER_OTLP_TRACES_*) keep winning over the general ones in the
// SDK, so they too win over the file.
func (o *otlpConfig) environ(lookup func(string) (string, bool)) []envVar {
	var vars []envVar
	add := func(name, value string) {
		if v, ok := lookup(name); ok && v != "" {
			return
		}
		vars = append(vars, envVar{name, value})
	}
	if o.Endpoint != "" {
		add(envOTLPEndpoint, o.Endpoint)
	}
	if o.Protocol != "" {
		add(envOTLPProtocol, o.Protocol)
	}
	if len(o.Headers) > 0 {
		keys := make([]string, 0, len(o.Headers))
		for k := range o.Headers {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		pairs := make([]string, len(keys))
		for i, k := range keys {
			// The SDK splits on commas and path-unescapes each value.
			pairs[i] = k + "=" + url.PathEscape(o.Headers[k])
		}
		add(envOTLPHeaders, strings.Join(pairs, ","))
	}
	if o.Insecure != nil {
		add(envOTLPInsecure, strconv.FormatBool(*o.Insecure))
	}
	if o.Timeout != nil {
		add(envOTLPTimeout, strconv.FormatInt(time.Duration(*o.Timeout).Milliseconds(), 10))
	}
	return vars
}

// apply copies into c what the file sets, except where the flag was given:
// a flag on the command line wins even when it repeats the default. A list
// given by flag replaces the file's list rather than adding to it.
func (fc *fileConfig) apply(c *traceConfig, flagSet map[string]bool) {
	if fc.PID != nil && !flagSet["pid"] {
		c.pids = make(pidList, len(fc.PID))
		for i, p := range fc.PID {
			c.pids[i] = int(p)
		}
	}
	if fc.Exe != nil && !flagSet["exe"] {
		c.exes = slices.Clone(fc.Exe)
	}
	if fc.Select != nil && !flagSet["select"] {
		c.selects = slices.Clone(fc.Select)
	}
	if fc.Exclude != nil && !flagSet["exclude"] {
		c.excludes = slices.Clone(fc.Exclude)
	}
	setIf(&c.output, fc.Output, !flagSet["output"])
	if fc.CaptureBytes != nil && !flagSet["capture-bytes"] {
		c.captureBytes = int(*fc.CaptureBytes)
	}
	setIf(&c.ringBuffer, fc.RingBuffer, !flagSet["ring-buffer"])
	if fc.MaxConns != nil && !flagSet["max-conns"] {
		c.maxConns = int(*fc.MaxConns)
	}
	setIf(&c.logFormat, fc.LogFormat, !flagSet["log-format"])
	setIf(&c.logLevel, fc.LogLevel, !flagSet["log-level"])
	if fc.LinkHold != nil && !flagSet["link-hold"] {
		c.linkHold = time.Duration(*fc.LinkHold)
	}
	if fc.LinkMax != nil && !flagSet["link-max"] {
		c.linkMax = int(*fc.LinkMax)
	}
	if fc.UI != nil && !flagSet["ui"] {
		c.ui = *fc.UI
	}
	if fc.FlushTimeout != nil && !flagSet["flush-timeout"] {
		c.flushTimeout = time.Duration(*fc.FlushTimeout)
	}
	if fc.MetricsAddr != nil && !flagSet["metrics-addr"] {
		c.metricsAddr = listenAddr{addr: *fc.MetricsAddr, explicit: true}
	}
	setIf(&c.cpuProfile, fc.CPUProfile, !flagSet["cpu-profile"])
	setIf(&c.tls, fc.TLS, !flagSet["tls"])
	setIf(&c.goProbes, fc.Go, !flagSet["go"])
	setIf(&c.inject, fc.Inject, !flagSet["inject"])
	setIf(&c.dataHooks, fc.DataHooks, !flagSet["data-hooks"])
}

func setIf[T any](dst *T, src *T, ok bool) {
	if src != nil && ok {
		*dst = *src
	}
}

// flagsSet names the flags given on the command line.
func flagsSet(fs *flag.FlagSet) map[string]bool {
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	return set
}

// strictInt is an int that yaml must not fill from a float: yaml.v3 would
// quietly truncate capture_bytes: 1.5 to 1.
type strictInt int

func (i *strictInt) UnmarshalYAML(n *yaml.Node) error {
	var v int
	if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" || n.Decode(&v) != nil {
		return nodeError(n, "want an integer")
	}
	*i = strictInt(v)
	return nil
}

// duration is a time.Duration written as in Go: 10s, 1m30s, 500ms.
type duration time.Duration

func (d *duration) UnmarshalYAML(n *yaml.Node) error {
	v, err := time.ParseDuration(n.Value)
	if n.Kind != yaml.ScalarNode || err != nil {
		return nodeError(n, "want a duration such as 10s or 500ms")
	}
	*d = duration(v)
	return nil
}

// UnmarshalYAML reads a size as the --ring-buffer flag does: 8388608 or 8M.
func (b *byteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || b.Set(n.Value) != nil {
		return nodeError(n, "want a size such as 8M, 64K or 4096")
	}
	return nil
}

// nodeError reports a bad value in the form of yaml's own errors, so that
// explainTypeError adds the key to it like to theirs; the column tells
// apart the values of a flow sequence such as [1, x].
func nodeError(n *yaml.Node, want string) error {
	return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d column %d: %s, got %q", n.Line, n.Column, want, n.Value)}}
}

// nodeAt is a key or value of the file, by line.
type nodeAt struct {
	line  int
	col   int
	path  string // e.g. otlp.headers, select[1].port; "" for the whole file
	key   string // set for a key
	kind  yaml.Kind
	value string // set for a scalar value
}

func indexNodes(root *yaml.Node) []nodeAt {
	var out []nodeAt
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k, v := n.Content[i], n.Content[i+1]
				p := k.Value
				if path != "" {
					p = path + "." + k.Value
				}
				out = append(out, nodeAt{line: k.Line, path: p, key: k.Value})
				out = append(out, nodeAt{line: v.Line, col: v.Column, path: p, kind: v.Kind, value: v.Value})
				walk(v, p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				p := fmt.Sprintf("%s[%d]", path, i)
				out = append(out, nodeAt{line: c.Line, col: c.Column, path: p, kind: c.Kind, value: c.Value})
				walk(c, p)
			}
		}
	}
	if root.Kind == yaml.DocumentNode && len(root.Content) == 1 {
		doc := root.Content[0]
		out = append(out, nodeAt{line: doc.Line, col: doc.Column, kind: doc.Kind, value: doc.Value})
		walk(doc, "")
	}
	return out
}

var (
	reNotFound = regexp.MustCompile(`^line (\d+): field (.+) not found in type (\S+)$`)
	reCannot   = regexp.MustCompile("^line (\\d+): cannot unmarshal (!!\\w+)(?: `(.*)`)? into (\\S+)$")
	reLine     = regexp.MustCompile(`^line (\d+)(?: column (\d+))?: (.*)$`)
)

// Accepted keys of each mapping, for the message about an unknown key.
var mappingKeys = map[string][]string{
	reflect.TypeFor[fileConfig]().String():    yamlKeys(reflect.TypeFor[fileConfig]()),
	reflect.TypeFor[otlpConfig]().String():    yamlKeys(reflect.TypeFor[otlpConfig]()),
	reflect.TypeFor[discover.Rule]().String(): yamlKeys(reflect.TypeFor[discover.Rule]()),
}

func yamlKeys(t reflect.Type) []string {
	var keys []string
	for i := range t.NumField() {
		if name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			keys = append(keys, name)
		}
	}
	return keys
}

// What a Go type accepts, in the words of the file.
var wants = map[string]string{
	"int":               "an integer",
	"uint16":            "an integer from 1 to 65535",
	"bool":              "true or false",
	"string":            "a string",
	"[]main.strictInt":  "a list of process ids",
	"[]string":          "a list of strings",
	"[]discover.Rule":   "a list of rules (mappings)",
	"discover.Rule":     "a mapping with keys " + strings.Join(yamlKeys(reflect.TypeFor[discover.Rule]()), ", "),
	"main.otlpConfig":   "a mapping with keys " + strings.Join(yamlKeys(reflect.TypeFor[otlpConfig]()), ", "),
	"main.fileConfig":   "a mapping of settings",
	"map[string]string": "a mapping of names to strings",
}

// explainTypeError rewrites yaml's decoding errors, which name Go types, in
// terms of the file's keys. Only the first is reported: later ones often
// follow from it.
func explainTypeError(te *yaml.TypeError, nodes []nodeAt) error {
	if len(te.Errors) == 0 {
		return te
	}
	msg := te.Errors[0]
	if m := reNotFound.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		key := m[2]
		for _, n := range nodes {
			if n.line == line && n.key == key {
				key = n.path
				break
			}
		}
		err := fmt.Errorf("unknown key %q", key)
		if keys, ok := mappingKeys[m[3]]; ok {
			err = fmt.Errorf("unknown key %q; accepted keys are %s", key, strings.Join(keys, ", "))
		}
		return &configError{Line: line, Err: err}
	}
	if m := reCannot.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		kind := yaml.ScalarNode
		switch m[2] {
		case "!!seq":
			kind = yaml.SequenceNode
		case "!!map":
			kind = yaml.MappingNode
		}
		n := valueAt(nodes, line, kind, m[3])
		want, ok := wants[m[4]]
		if !ok {
			want = "a value of type " + m[4]
		}
		err := "want " + want
		if kind == yaml.ScalarNode {
			err += fmt.Sprintf(", got %q", n.value)
		}
		return &configError{Line: line, Err: errors.New(withPath(n.path, err))}
	}
	if m := reLine.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		col, _ := strconv.Atoi(m[2])
		var path string
		for _, n := range nodes {
			if col > 0 && n.key == "" && n.line == line && n.col == col {
				path = n.path
				break
			}
		}
		return &configError{Line: line, Err: errors.New(withPath(path, m[3]))}
	}
	return te
}

func withPath(path, msg string) string {
	if path == "" {
		return msg
	}
	return path + ": " + msg
}

// valueAt finds the value of the given kind at line whose text starts with
// prefix (yaml cuts long values short), else the last such value on the
// line, which is the innermost one.
func valueAt(nodes []nodeAt, line int, kind yaml.Kind, prefix string) nodeAt {
	prefix = strings.TrimSuffix(prefix, "...")
	var last nodeAt
	for _, n := range nodes {
		if n.line != line || n.key != "" || n.kind != kind {
			continue
		}
		if prefix != "" && strings.HasPrefix(n.value, prefix) {
			return n
		}
		last = n
	}
	return last
}
