package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sondehq/sonde/internal/testutil"
)

// buildStaticSSLClient links testdata/sslclient against Debian's libssl.a
// and libcrypto.a: OpenSSL inside the executable, no libssl mapped.
func buildStaticSSLClient(t *testing.T) string {
	t.Helper()
	gcc := testutil.RequireTool(t, "gcc")
	if _, err := os.Stat("/usr/lib/x86_64-linux-gnu/libssl.a"); err != nil {
		testutil.Unmet(t, "needs libssl.a (Debian's libssl-dev): %v", err)
	}
	bin := filepath.Join(t.TempDir(), "sslclient")
	src, err := filepath.Abs("testdata/sslclient/sslclient.c")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(gcc, "-O2", "-Wall", "-Werror", "-o", bin, src,
		"-Wl,-Bstatic", "-lssl", "-lcrypto", "-Wl,-Bdynamic", "-lpthread", "-ldl")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build sslclient: %v\n%s", err, out)
	}
	if ldd, _ := exec.Command("ldd", bin).CombinedOutput(); strings.Contains(string(ldd), "libssl") {
		t.Fatalf("sslclient links a shared libssl:\n%s", ldd)
	}
	return bin
}

// A program with OpenSSL linked in statically is probed in its own
// executable. Its reads come 64 bytes at a time, most of them from
// OpenSSL's buffer without a syscall.
//
// The executable is probed when sonde first sees it run, which races the
// first exchanges of that first run: those are counted (tls_unpaired,
// ciphertext), not guessed. Probes stay on the file, so every later run
// is read whole, from its handshake on; that is what is asserted.
func TestTLSStaticOpenSSL(t *testing.T) {
	client := buildStaticSSLClient(t)
	cert, key := tlsCert(t)
	const n = 10

	s := startSonde(t, nil, "--exe", "sslclient", "--exe", "nginx")
	port := freePort(t)
	startNginx(t, "127.0.0.1:"+port, fmt.Sprintf(`  server {
    listen 127.0.0.1:%s ssl;
    ssl_certificate %s;
    ssl_certificate_key %s;
    location / { return 200 "linked in\n"; }
  }`, port, cert, key))
	if out := run(t, client, "127.0.0.1", port, "/first", "1"); out != "ok 1\n" {
		t.Fatalf("first run: %q", out)
	}
	waitFor(t, 10*time.Second, "the probes on sslclient", func() bool {
		for _, rec := range s.logRecords() {
			if rec["msg"] == "OpenSSL probes attached" && rec["file"] == client {
				return true
			}
		}
		return false
	})
	second := exec.Command(client, "127.0.0.1", port, "/second", strconv.Itoa(n))
	out, err := second.CombinedOutput()
	if err != nil || string(out) != fmt.Sprintf("ok %d\n", n) {
		t.Fatalf("second run: %v %q", err, out)
	}
	r := s.stop(t)

	clients := filter(r.spans, byPID(second.Process.Pid))
	servers := filter(r.spans, func(s span) bool { return exeName(s) == "nginx" && s.attr("url.path") == "/second" })
	if len(clients) != n || len(servers) != n {
		t.Fatalf("second run: want %d client and %d nginx spans, got %d and %d\n%s", n, n, len(clients), len(servers), tlsSummary(r))
	}
	for _, sp := range clients {
		wantAttrs(t, sp, map[string]string{
			"url.scheme": "https", "url.full": "https://127.0.0.1:" + port + "/second",
			"http.response.status_code": "200", "user_agent.original": "sslclient",
		})
		if sp.Kind != "client" {
			t.Errorf("not a client span: %s", sp)
		}
	}
	// One keep-alive connection: a buffered read attributed elsewhere
	// would have broken the pairing of the requests after it.
	if c := len(distinct(servers, "network.peer.port")); c != 1 {
		t.Errorf("want the second run's requests on one connection, nginx saw %d", c)
	}
	wantNoParseErrors(t, r)
	if r.stat("lost") != 0 {
		t.Errorf("%v events lost", r.stat("lost"))
	}
}
