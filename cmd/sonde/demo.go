package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// The demo runs sample services as child processes of the sonde binary
// itself (a hidden subcommand), so it needs nothing but sonde; python3's
// http.server joins when python3 is installed, serving HTTPS through its
// ssl module (OpenSSL), with a certificate the demo makes.
const demoServiceCmdName = "demo-service"

func demoCmd(args []string) int {
	fs := flag.NewFlagSet("sonde demo", flag.ContinueOnError)
	var cfg traceConfig
	cfg.register(fs)
	duration := fs.Duration("duration", 15*time.Second, "how long the sample traffic runs (0: until interrupted)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: sonde demo [flags]\n\nStart sample services (Go and python3), send them traffic and trace them.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if err := cfg.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "sonde demo:", err)
		return 2
	}
	log := cfg.logger(os.Stderr)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if *duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *duration)
		defer cancel()
	}

	d := &demo{}
	defer d.stop()
	if err := d.startServices(); err != nil {
		log.Error("sonde demo: cannot start the sample services", "error", err)
		return 1
	}
	// The Go services, the load generator included, run this very binary:
	// select it by path (sonde itself is always left out) so the load
	// generator, started once tracing runs, is traced from its first byte.
	self, err := os.Executable()
	if err != nil {
		log.Error("sonde demo", "error", err)
		return 1
	}
	cfg.exes = append(cfg.exes, self)
	cfg.pids = d.pids()
	log.Info("sample services started", "services", strings.Join(d.names, ", "), "frontend", "http://"+d.frontend)
	err = runTrace(ctx, &cfg, log, os.Stdout, func() {
		if err := d.startLoad(); err != nil {
			log.Error("sonde demo: cannot start the load generator", "error", err)
		}
	})
	if err != nil {
		log.Error("sonde demo failed", "error", err)
		return 1
	}
	return 0
}

type demo struct {
	procs    []*exec.Cmd
	names    []string
	frontend string
	backends []string
	dirs     []string     // removed at the end
	client   *http.Client // trusts the demo's certificate
}

// catalogServer is python3's http.server behind its ssl module: an HTTPS
// service whose TLS sonde reads through OpenSSL. argv: DIR PORT CERT KEY.
const catalogServer = `import functools, http.server, ssl, sys
d, port, cert, key = sys.argv[1:5]
handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=d)
handler.log_message = lambda *a: None
srv = http.server.ThreadingHTTPServer(("127.0.0.1", int(port)), handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
`

// writeDemoCert makes a self-signed certificate for 127.0.0.1 in dir.
func writeDemoCert(dir string) (certFile, keyFile string, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sonde demo"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", err
	}
	return certFile, keyFile, nil
}

// demoClient is an HTTP client that trusts the certificate in caFile.
func demoClient(caFile string) (*http.Client, error) {
	pemBytes, err := os.ReadFile(caFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		return nil, fmt.Errorf("no certificate in %s", caFile)
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: pool}
	return &http.Client{Timeout: 5 * time.Second, Transport: tr}, nil
}

func (d *demo) pids() pidList {
	var p pidList
	for _, c := range d.procs {
		p = append(p, c.Process.Pid)
	}
	return p
}

func (d *demo) spawn(name string, argv []string, env ...string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), append(env, "OTEL_SERVICE_NAME="+name)...)
	cmd.Stdout, cmd.Stderr = io.Discard, io.Discard
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", name, err)
	}
	d.procs = append(d.procs, cmd)
	d.names = append(d.names, name)
	return nil
}

func (d *demo) startServices() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	inventory, err := freeAddr()
	if err != nil {
		return err
	}
	if err := d.spawn("inventory", []string{self, demoServiceCmdName, "inventory", inventory}); err != nil {
		return err
	}
	d.backends = append(d.backends, "http://"+inventory+"/stock")
	var env []string
	if py, err := exec.LookPath("python3"); err == nil {
		catalog, err := freeAddr()
		if err != nil {
			return err
		}
		_, port, _ := net.SplitHostPort(catalog)
		dir, err := os.MkdirTemp("", "sonde-demo-")
		if err != nil {
			return err
		}
		d.dirs = append(d.dirs, dir)
		if err := os.WriteFile(filepath.Join(dir, "index.html"), []byte("<h1>catalog</h1>\n"), 0o644); err != nil {
			return err
		}
		cert, key, err := writeDemoCert(dir)
		if err != nil {
			return err
		}
		if err := d.spawn("catalog", []string{py, "-c", catalogServer, dir, port, cert, key}); err != nil {
			return err
		}
		d.backends = append(d.backends, "https://"+catalog+"/index.html")
		env = append(env, "DEMO_CA="+cert)
		if d.client, err = demoClient(cert); err != nil {
			return err
		}
	}
	d.frontend, err = freeAddr()
	if err != nil {
		return err
	}
	env = append(env, "DEMO_BACKENDS="+strings.Join(d.backends, ","))
	if err := d.spawn("frontend", []string{self, demoServiceCmdName, "frontend", d.frontend}, env...); err != nil {
		return err
	}
	if d.client == nil {
		d.client = http.DefaultClient
	}
	for _, b := range append([]string{"http://" + d.frontend + "/healthz"}, d.backends...) {
		if err := waitHTTP(d.client, b, 10*time.Second); err != nil {
			return err
		}
	}
	return nil
}

func (d *demo) startLoad() error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	return d.spawn("loadgen", []string{self, demoServiceCmdName, "loadgen", d.frontend})
}

func (d *demo) stop() {
	defer func() {
		for _, dir := range d.dirs {
			os.RemoveAll(dir)
		}
	}()
	for _, c := range d.procs {
		_ = c.Process.Signal(syscall.SIGTERM)
	}
	for _, c := range d.procs {
		done := make(chan struct{})
		go func() { _ = c.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			_ = c.Process.Kill()
		}
	}
}

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

func waitHTTP(client *http.Client, url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := client.Get(url)
		if err == nil {
			resp.Body.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not come up: %w", url, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
