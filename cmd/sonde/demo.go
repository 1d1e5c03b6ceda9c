package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// The demo runs sample services as child processes of the sonde binary
// itself (a hidden subcommand), so it needs nothing but sonde; python3's
// http.server joins when python3 is installed.
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
		if err := os.WriteFile(dir+"/index.html", []byte("<h1>catalog</h1>\n"), 0o644); err != nil {
			return err
		}
		if err := d.spawn("catalog", []string{py, "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir, port}); err != nil {
			return err
		}
		d.backends = append(d.backends, "http://"+catalog+"/index.html")
	}
	d.frontend, err = freeAddr()
	if err != nil {
		return err
	}
	if err := d.spawn("frontend", []string{self, demoServiceCmdName, "frontend", d.frontend}, "DEMO_BACKENDS="+strings.Join(d.backends, ",")); err != nil {
		return err
	}
	for _, b := range append([]string{"http://" + d.frontend + "/healthz"}, d.backends...) {
		if err := waitHTTP(b, 10*time.Second); err != nil {
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

func waitHTTP(url string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
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
