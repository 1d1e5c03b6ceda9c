package e2e

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A config file alone sets up sonde: it selects a Go server by a rule on
// its port and asks for JSON spans and JSON logs, with no flag but
// --config.
func TestConfigFileSelectsAndSetsOutput(t *testing.T) {
	requireTracing(t)
	srv := startGoServer(t, "OTEL_SERVICE_NAME=configured")
	other := startGoServer(t)
	metricsPort := freePort(t)
	path := filepath.Join(t.TempDir(), "sonde.yaml")
	config := fmt.Sprintf(`# sonde trace --config
select:
  - exe: %s
    port: %s
output: json
log_format: json
log_level: info
flush_timeout: 5s
metrics_addr: 127.0.0.1:%s
`, filepath.Base(bins.goserver), srv.port(), metricsPort)
	if err := os.WriteFile(path, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}

	// startSonde would add --output and --log-format flags, which win over
	// the file: start sonde by hand so that only the file speaks.
	s := launchSonde(t, exec.Command(bins.sonde, "trace", "--config", path), nil)
	s.waitReady(t, 60*time.Second)

	run(t, bins.goclient, "-url", "http://"+srv.addr+"/hello", "-n", "3")
	run(t, bins.goclient, "-url", "http://"+other.addr+"/hello", "-n", "2")
	// The file's metrics address is in use, with the default ring buffer.
	if v := scrapeMetrics(t, "http://127.0.0.1:"+metricsPort+"/metrics").value(t, "sonde_ring_buffer_size_bytes"); v != 8<<20 {
		t.Errorf("sonde_ring_buffer_size_bytes = %v, want the default 8M", v)
	}
	r := s.stop(t) // fails unless stdout is JSON spans and stderr JSON logs

	servers := filter(r.spans, func(sp span) bool { return sp.Kind == "server" })
	if len(servers) != 3 {
		t.Fatalf("want the 3 server spans of the selected server, got %d:\n%v", len(servers), r.spans)
	}
	for _, sp := range servers {
		if sp.res("service.name") != "configured" || sp.res("process.pid") != fmt.Sprint(srv.pid()) {
			t.Errorf("span of another process: %s", sp)
		}
	}
	if n := len(filter(r.spans, byPID(other.pid()))); n != 0 {
		t.Errorf("the server on another port was traced: %d spans", n)
	}
}

// A bad config file stops sonde with exit status 2 and a message that
// names the file, the line and the key, before anything is attached.
func TestConfigFileErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ text, want string }{
		{"output: json\nlog_levle: debug\n", `sonde.yaml: line 2: unknown key "log_levle"`},
		{"log_level: verbose\n", `sonde.yaml: log_level "verbose": accepted values are debug, info, warn, error`},
		{"select:\n  - port: http\n", `sonde.yaml: line 2: select[0].port: want an integer from 1 to 65535, got "http"`},
	} {
		path := filepath.Join(dir, "sonde.yaml")
		if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bins.sonde, "trace", "--config", path).CombinedOutput()
		var exit *exec.ExitError
		if !errors.As(err, &exit) || exit.ExitCode() != 2 {
			t.Errorf("%q: want exit status 2, got %v:\n%s", tc.text, err, out)
		}
		if !strings.Contains(string(out), "config "+path) || !strings.Contains(string(out), tc.want) {
			t.Errorf("%q: want %q in:\n%s", tc.text, tc.want, out)
		}
	}
}
