package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"
)

// demoServiceCmd runs one sample service of `sonde demo`. Its traffic is
// plain net/http: nothing in it knows about tracing.
func demoServiceCmd(args []string) int {
	if len(args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: sonde demo-service inventory|frontend|loadgen ADDR")
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	role, addr := args[0], args[1]
	var err error
	switch role {
	case "inventory":
		err = serve(ctx, addr, inventoryHandler())
	case "frontend":
		err = serve(ctx, addr, frontendHandler(strings.Split(os.Getenv("DEMO_BACKENDS"), ",")))
	case "loadgen":
		err = loadgen(ctx, "http://"+addr)
	default:
		err = fmt.Errorf("unknown demo service %q", role)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "demo-service:", err)
		return 1
	}
	return 0
}

func serve(ctx context.Context, addr string, h http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 5 * time.Second}
	go func() { <-ctx.Done(); srv.Close() }()
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func inventoryHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stock", func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Duration(1+rand.IntN(4)) * time.Millisecond)
		if rand.IntN(10) == 0 {
			http.Error(w, "inventory database unavailable", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintln(w, `{"sku":"sonde-1","available":42}`)
	})
	return mux
}

func frontendHandler(backends []string) http.Handler {
	client := &http.Client{Timeout: 5 * time.Second}
	if ca := os.Getenv("DEMO_CA"); ca != "" {
		// The catalog serves HTTPS with the demo's own certificate.
		c, err := demoClient(ca)
		if err != nil {
			fmt.Fprintln(os.Stderr, "demo-service:", err)
		} else {
			client = c
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /checkout", func(w http.ResponseWriter, r *http.Request) {
		status := http.StatusOK
		for _, b := range backends {
			resp, err := client.Get(b)
			if err != nil {
				status = http.StatusBadGateway
				continue
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode >= 500 {
				status = http.StatusBadGateway
			}
		}
		w.WriteHeader(status)
		fmt.Fprintln(w, "checkout", http.StatusText(status))
	})
	return mux
}

func loadgen(ctx context.Context, base string) error {
	client := &http.Client{Timeout: 5 * time.Second}
	paths := []string{"/checkout", "/checkout", "/checkout", "/cart?session=abc&token=s3cr3t"}
	tick := time.NewTicker(400 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+paths[i%len(paths)], nil)
		req.Header.Set("User-Agent", "sonde-demo-loadgen/1.0")
		req.Header.Set("Authorization", "Bearer never-exported")
		if resp, err := client.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}
