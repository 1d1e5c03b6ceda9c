package e2e

import (
	"bufio"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/sondehq/sonde/internal/testutil"
	"github.com/sondehq/sonde/tracer/features"
)

// The deployment files live next to the code; they grant exactly
// features.AgentCaps, the set TestAgentPrivilege runs sonde with.
const (
	daemonSetFile = "../deploy/kubernetes/daemonset.yaml"
	unitFile      = "../deploy/systemd/sonde.service"
	dockerfile    = "../deploy/Dockerfile"
)

// k8sObject is the part of a Kubernetes object the checks read.
type k8sObject struct {
	Kind     string
	Metadata struct {
		Name      string
		Namespace string
	}
	Spec struct {
		Template struct {
			Spec podSpec
		}
	}
}

type podSpec struct {
	HostPID                      bool   `yaml:"hostPID"`
	HostNetwork                  bool   `yaml:"hostNetwork"`
	ServiceAccountName           string `yaml:"serviceAccountName"`
	AutomountServiceAccountToken *bool  `yaml:"automountServiceAccountToken"`
	Tolerations                  []struct {
		Key, Operator, Effect string
	}
	TerminationGracePeriodSeconds int `yaml:"terminationGracePeriodSeconds"`
	Containers                    []struct {
		Name  string
		Image string
		Args  []string
		Env   []struct {
			Name      string
			Value     string
			ValueFrom *struct {
				FieldRef *struct {
					FieldPath string `yaml:"fieldPath"`
				} `yaml:"fieldRef"`
			} `yaml:"valueFrom"`
		}
		EnvFrom []struct {
			ConfigMapRef *struct{ Name string } `yaml:"configMapRef"`
		} `yaml:"envFrom"`
		Ports []struct {
			Name          string
			ContainerPort int `yaml:"containerPort"`
		}
		LivenessProbe *struct {
			HTTPGet *struct {
				Path string
				Port any
			} `yaml:"httpGet"`
		} `yaml:"livenessProbe"`
		Resources struct {
			Requests map[string]string
			Limits   map[string]string
		}
		SecurityContext struct {
			Privileged               *bool `yaml:"privileged"`
			AllowPrivilegeEscalation *bool `yaml:"allowPrivilegeEscalation"`
			ReadOnlyRootFilesystem   bool  `yaml:"readOnlyRootFilesystem"`
			RunAsUser                *int  `yaml:"runAsUser"`
			Capabilities             struct {
				Drop []string
				Add  []string
			}
		} `yaml:"securityContext"`
		VolumeMounts []struct {
			Name      string
			MountPath string `yaml:"mountPath"`
			ReadOnly  bool   `yaml:"readOnly"`
		} `yaml:"volumeMounts"`
	}
	Volumes []struct {
		Name     string
		HostPath *struct{ Path, Type string } `yaml:"hostPath"`
	}
}

func readObjects(t *testing.T, path string) []k8sObject {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var objs []k8sObject
	for {
		var o k8sObject
		err := dec.Decode(&o)
		if errors.Is(err, io.EOF) {
			return objs
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		objs = append(objs, o)
	}
}

// capSetOf turns capability names, in any of the spellings Kubernetes and
// systemd use, into a set.
func capSetOf(t *testing.T, names []string) features.CapSet {
	t.Helper()
	var s features.CapSet
	for _, n := range names {
		c, err := features.ParseCapability(n)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if s.Has(c) {
			t.Errorf("%s listed twice", c)
		}
		s |= 1 << c
	}
	return s
}

func TestDaemonSetManifest(t *testing.T) {
	objs := readObjects(t, daemonSetFile)
	kinds := map[string]k8sObject{}
	for _, o := range objs {
		kinds[o.Kind] = o
	}
	for _, k := range []string{"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet"} {
		if _, ok := kinds[k]; !ok {
			t.Errorf("no %s in %s", k, daemonSetFile)
		}
	}
	ds := kinds["DaemonSet"]
	ns := kinds["Namespace"].Metadata.Name
	if ds.Metadata.Namespace != ns || kinds["ServiceAccount"].Metadata.Namespace != ns || kinds["ConfigMap"].Metadata.Namespace != ns {
		t.Errorf("objects are not all in namespace %q", ns)
	}
	pod := ds.Spec.Template.Spec
	if !pod.HostPID {
		t.Errorf("hostPID must be true: sonde reads every process's /proc")
	}
	if pod.HostNetwork {
		t.Errorf("hostNetwork must stay false")
	}
	if pod.ServiceAccountName != kinds["ServiceAccount"].Metadata.Name {
		t.Errorf("serviceAccountName %q", pod.ServiceAccountName)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Errorf("sonde needs no API token: set automountServiceAccountToken: false")
	}
	tolerateAll := false
	for _, tol := range pod.Tolerations {
		tolerateAll = tolerateAll || (tol.Operator == "Exists" && tol.Key == "" && tol.Effect == "")
	}
	if !tolerateAll {
		t.Errorf("the DaemonSet must tolerate every taint: %+v", pod.Tolerations)
	}
	if pod.TerminationGracePeriodSeconds <= 10 {
		t.Errorf("terminationGracePeriodSeconds %d leaves no time for the 10s flush", pod.TerminationGracePeriodSeconds)
	}
	if len(pod.Containers) != 1 {
		t.Fatalf("want one container, got %d", len(pod.Containers))
	}
	c := pod.Containers[0]
	sc := c.SecurityContext

	// The capability set: drop ALL, add exactly features.AgentCaps.
	if !slices.Equal(sc.Capabilities.Drop, []string{"ALL"}) {
		t.Errorf("capabilities.drop = %v, want [ALL]", sc.Capabilities.Drop)
	}
	for _, a := range sc.Capabilities.Add {
		if strings.HasPrefix(a, "CAP_") {
			t.Errorf("Kubernetes spells capabilities without CAP_: %s", a)
		}
	}
	if got := capSetOf(t, sc.Capabilities.Add); got != features.AgentCaps() {
		t.Errorf("capabilities.add = %v, want %v", got.Names(), features.AgentCaps().Names())
	}
	if sc.Privileged == nil || *sc.Privileged {
		t.Errorf("the container must say privileged: false")
	}
	if sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Errorf("allowPrivilegeEscalation must be false")
	}
	if !sc.ReadOnlyRootFilesystem {
		t.Errorf("readOnlyRootFilesystem must be true: sonde writes no file")
	}
	if sc.RunAsUser == nil || *sc.RunAsUser != 0 {
		t.Errorf("runAsUser must be 0, as TestLeastPrivilege runs sonde")
	}

	// tracefs from the host, read-only: a node agent mounts nothing.
	hostPaths := map[string]string{}
	for _, v := range pod.Volumes {
		if v.HostPath != nil {
			hostPaths[v.Name] = v.HostPath.Path
		}
	}
	tracefs := false
	for _, m := range c.VolumeMounts {
		if m.MountPath == "/sys/kernel/tracing" && hostPaths[m.Name] == "/sys/kernel/tracing" && m.ReadOnly {
			tracefs = true
		}
	}
	if !tracefs {
		t.Errorf("no read-only hostPath mount of /sys/kernel/tracing")
	}

	// Configuration, metrics and resources.
	env := map[string]string{}
	var nodeVars []string
	for _, e := range c.Env {
		env[e.Name] = e.Value
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			nodeVars = append(nodeVars, e.Name)
		}
	}
	nodeName := false
	for _, v := range nodeVars {
		nodeName = nodeName || strings.Contains(env["OTEL_RESOURCE_ATTRIBUTES"], "k8s.node.name=$("+v+")")
	}
	if !nodeName {
		t.Errorf("OTEL_RESOURCE_ATTRIBUTES does not set k8s.node.name from the downward API: %v", env)
	}
	endpoint := env["OTEL_EXPORTER_OTLP_ENDPOINT"] != ""
	for _, ef := range c.EnvFrom {
		endpoint = endpoint || (ef.ConfigMapRef != nil && ef.ConfigMapRef.Name == kinds["ConfigMap"].Metadata.Name)
	}
	if !endpoint {
		t.Errorf("no OTEL_EXPORTER_OTLP_ENDPOINT, directly or from the ConfigMap")
	}
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/metrics" {
		t.Errorf("no liveness probe on /metrics")
	}
	metricsFlag := false
	for _, a := range c.Args {
		// The kubelet probes the pod IP: a metrics endpoint on 127.0.0.1
		// would fail the probe and restart sonde forever.
		metricsFlag = metricsFlag || a == "--metrics-addr=0.0.0.0:9464" || a == "--metrics-addr=:9464"
	}
	if !metricsFlag {
		t.Errorf("the liveness probe needs --metrics-addr on the pod IP, port 9464: args %v", c.Args)
	}
	if c.Args[0] != "trace" {
		t.Errorf("args %v do not run sonde trace", c.Args)
	}
	for _, k := range []string{"cpu", "memory"} {
		if c.Resources.Requests[k] == "" {
			t.Errorf("no %s request", k)
		}
	}
	if c.Resources.Limits["memory"] == "" {
		t.Errorf("no memory limit")
	}
}

// unitValues returns every value of key in the [section] of a unit file,
// split at blanks, as systemd does for list settings.
func unitValues(t *testing.T, path, section, key string) []string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	cur := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, ";") {
			continue
		}
		if strings.HasPrefix(line, "[") {
			cur = strings.Trim(line, "[]")
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || cur != section || strings.TrimSpace(k) != key {
			continue
		}
		v = strings.TrimSpace(v)
		if v == "" { // an empty assignment resets the list
			out = nil
			continue
		}
		out = append(out, strings.Fields(v)...)
	}
	return out
}

func TestSystemdUnit(t *testing.T) {
	for _, key := range []string{"AmbientCapabilities", "CapabilityBoundingSet"} {
		vals := unitValues(t, unitFile, "Service", key)
		for _, v := range vals {
			if strings.HasPrefix(v, "~") {
				t.Errorf("%s must list what is granted, not what is taken: %s", key, v)
			}
		}
		if got := capSetOf(t, vals); got != features.AgentCaps() {
			t.Errorf("%s = %v, want %v", key, got.Names(), features.AgentCaps().Names())
		}
	}
	for key, want := range map[string]string{
		"NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes",
		"PrivateTmp": "yes", "Restart": "on-failure", "ProtectKernelTunables": "yes",
		"ProtectControlGroups": "yes", "ProtectKernelModules": "yes",
	} {
		if got := unitValues(t, unitFile, "Service", key); !slices.Equal(got, []string{want}) {
			t.Errorf("%s = %v, want %s", key, got, want)
		}
	}
	env := unitValues(t, unitFile, "Service", "EnvironmentFile")
	if len(env) != 1 || !strings.Contains(env[0], "/etc/sonde/") {
		t.Errorf("EnvironmentFile = %v, want one under /etc/sonde", env)
	}
	// Settings that would hide processes from sonde or cut it off the
	// collector.
	for _, key := range []string{"ProtectProc", "ProcSubset", "PrivateNetwork", "PrivatePIDs"} {
		if v := unitValues(t, unitFile, "Service", key); len(v) > 0 && v[0] != "default" && v[0] != "all" && v[0] != "no" {
			t.Errorf("%s=%v blinds sonde", key, v)
		}
	}
	if !slices.Contains(unitValues(t, unitFile, "Unit", "Requires"), "sys-kernel-tracing.mount") {
		t.Errorf("the unit must require sys-kernel-tracing.mount: a node agent mounts nothing")
	}
}

// systemd-analyze verify accepts the unit: every key known, every value
// parsed. It warns without failing, so any output is a failure.
func TestSystemdUnitVerifies(t *testing.T) {
	analyze := testutil.RequireTool(t, "systemd-analyze")
	b, err := os.ReadFile(unitFile)
	if err != nil {
		t.Fatal(err)
	}
	// verify checks that ExecStart exists: point it at the sonde just built.
	unit := strings.ReplaceAll(string(b), "/usr/local/bin/sonde", bins.sonde)
	path := filepath.Join(t.TempDir(), "sonde.service")
	os.WriteFile(path, []byte(unit), 0o644)
	out, err := exec.Command(analyze, "verify", "--man=no", path).CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("systemd-analyze verify: %v\n%s", err, out)
	}
}

// The image is FROM scratch with a static sonde: build the binary as
// docs/deploy.md says and check that it needs no loader and no library.
func TestDockerfileStatic(t *testing.T) {
	b, err := os.ReadFile(dockerfile)
	if err != nil {
		t.Fatal(err)
	}
	var from []string
	var copies [][]string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || strings.HasPrefix(f[0], "#") {
			continue
		}
		switch strings.ToUpper(f[0]) {
		case "FROM":
			from = append(from, f[1])
		case "COPY":
			copies = append(copies, f[1:])
		}
	}
	if !slices.Equal(from, []string{"scratch"}) {
		t.Errorf("FROM %v: base image registries are not reachable, build FROM scratch", from)
	}
	sources := map[string]bool{}
	for _, c := range copies {
		for _, src := range c[:len(c)-1] {
			sources[src] = true
		}
	}
	if !sources["sonde"] || !sources["ca-certificates.crt"] {
		t.Errorf("the image must get sonde and the CA bundle from the build context: COPY %v", copies)
	}

	bin := filepath.Join(t.TempDir(), "sonde")
	// As `make image` does, minus -trimpath and -ldflags, which change
	// nothing to linking but would rebuild every package.
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/sonde")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("static build: %v\n%s", err, out)
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("sonde built with CGO_ENABLED=0 still has an ELF interpreter")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("sonde built with CGO_ENABLED=0 needs %v", libs)
	}
	if out, err := exec.Command(bin, "version").CombinedOutput(); err != nil {
		t.Errorf("static sonde does not run: %v\n%s", err, out)
	}
}
