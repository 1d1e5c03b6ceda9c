// Command gochain is a Go service that calls a backend while it serves: in
// the handler's goroutine and in goroutines the handler starts, without
// passing the request's context, over HTTP/1.1 or HTTP/2 with TLS. sonde
// must make each call a child of the request that made it.
//
// GET /chain/ID calls the backend's /leaf/ID-a from the handler's
// goroutine, /leaf/ID-b from a goroutine the handler starts, and
// /leaf/ID-c from a goroutine that one starts.
//
// It builds with every Go toolchain from go1.21 on, so it uses no ServeMux
// pattern: plain paths, which Go 1.23+ still reports in Request.Pattern
// when the 1.22 mux is on (GODEBUG=httpmuxgo121=0).
//
// With -tls it writes the front server's certificate, in PEM, to the file
// $GOCHAIN_CERT. It then prints "front ADDR" and "back ADDR", and serves
// until killed, or, with -runfor, until that much time has passed and the
// churn is done; then it prints what it did and exits 0.
// With -wait, the churn and the -runfor clock start at SIGUSR1: a tracer
// can attach to the idle program first.
//
// With -churn N, while it serves, N goroutines whose stacks grow and shrink
// run, 512 at a time: each recurses deep with a local array on every
// frame, then returns, twice, and the garbage collector, forced every few
// milliseconds, shrinks the stacks again. Chain handlers then also make their calls
// from deep in a recursion, on a stack that grew while the request was
// served. This is what a moved goroutine stack does under sonde's uprobes.
package main

import (
	"crypto/x509"
	"encoding/pem"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

var deepCalls atomic.Int64

func main() {
	useTLS := flag.Bool("tls", false, "serve and call over TLS, with HTTP/2 negotiated by ALPN")
	churn := flag.Int("churn", 0, "run this many goroutines whose stacks grow and shrink")
	depth := flag.Int("depth", 2000, "recursion depth of a churning goroutine")
	runFor := flag.Duration("runfor", 0, "exit 0 after this long (0: serve until killed)")
	wait := flag.Bool("wait", false, "start the churn and the -runfor clock at SIGUSR1, not at once")
	flag.Parse()

	var failed atomic.Int64
	back := http.NewServeMux()
	back.HandleFunc("/leaf/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "leaf", strings.TrimPrefix(r.URL.Path, "/leaf/"))
	})
	backSrv := httptest.NewUnstartedServer(back)
	backSrv.EnableHTTP2 = *useTLS

	client := &http.Client{}
	front := http.NewServeMux()
	var backURL string
	front.HandleFunc("/chain/", func(w http.ResponseWriter, r *http.Request) {
		id := strings.TrimPrefix(r.URL.Path, "/chain/")
		var ok atomic.Bool
		ok.Store(true)
		do := func(leaf string) {
			url := backURL + "/leaf/" + id + leaf
			if *churn > 0 {
				// Call from deep in a recursion: the stack grows (and is
				// copied) while the request is being served.
				grow(*depth/4, func() {
					if !call(client, url) {
						ok.Store(false)
					}
				})
			} else if !call(client, url) {
				ok.Store(false)
			}
		}
		// In the handler's goroutine, with no context passed.
		do("-a")
		// In goroutines the handler starts, one of them nested.
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			do("-b")
			wg.Add(1)
			go func() {
				defer wg.Done()
				do("-c")
			}()
		}()
		wg.Wait()
		if !ok.Load() {
			failed.Add(1)
			http.Error(w, "a backend call failed", http.StatusBadGateway)
			return
		}
		fmt.Fprintln(w, "chain", id)
	})
	frontSrv := httptest.NewUnstartedServer(front)
	frontSrv.EnableHTTP2 = *useTLS
	if *useTLS {
		backSrv.StartTLS()
		frontSrv.StartTLS()
		// Trust the backend's certificate only, with HTTP/2 forced on.
		pool := x509.NewCertPool()
		pool.AddCert(backSrv.Certificate())
		tr := backSrv.Client().Transport.(*http.Transport).Clone()
		tr.TLSClientConfig.RootCAs = pool
		tr.ForceAttemptHTTP2 = true
		client = &http.Client{Transport: tr}
		// The test's client trusts this certificate. It is written
		// before the addresses are printed, so it is there once they are.
		cert := frontSrv.Certificate()
		if err := os.WriteFile(os.Getenv("GOCHAIN_CERT"), pemOf(cert.Raw), 0o644); err != nil {
			log.Fatalf("write certificate: %v", err)
		}
	} else {
		backSrv.Start()
		frontSrv.Start()
	}
	backURL = backSrv.URL
	fmt.Println("front", addrOf(frontSrv.URL))
	fmt.Println("back", addrOf(backSrv.URL))

	if *wait {
		usr1 := make(chan os.Signal, 1)
		signal.Notify(usr1, syscall.SIGUSR1)
		<-usr1
		signal.Stop(usr1)
	}
	began := time.Now()
	var stop atomic.Bool
	var churned atomic.Int64
	var churnTook time.Duration
	churnDone := make(chan struct{})
	if *churn > 0 {
		go shrinkLoop(&stop)
		go func() {
			defer close(churnDone)
			churnLoop(*churn, *depth, &churned)
			churnTook = time.Since(began)
		}()
	} else {
		close(churnDone)
	}
	if *runFor <= 0 {
		select {}
	}
	time.Sleep(*runFor)
	stop.Store(true)
	<-churnDone
	fmt.Println("churned", churned.Load(), "deep calls", deepCalls.Load(), "failed chains", failed.Load(),
		"churn took", churnTook.Round(time.Millisecond), "ran", time.Since(began).Round(time.Millisecond))
	os.Exit(0)
}

// churnLoop runs n goroutines, at most 512 at a time: each grows its
// stack with a deep recursion, returns, yields, and does it again.
func churnLoop(n, depth int, churned *atomic.Int64) {
	sem := make(chan struct{}, 512) // bounds the memory the stacks take
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		sem <- struct{}{}
		wg.Add(1)
		go func(seed int) {
			defer wg.Done()
			defer func() { <-sem }()
			for round := 0; round < 2; round++ {
				grow(depth-seed%64, nil)
				runtime.Gosched()
			}
			churned.Add(1)
		}(i)
	}
	wg.Wait()
}

// shrinkLoop forces a GC every few milliseconds until stop is set: the GC
// shrinks the stacks that grew and shrank back, moving them again.
func shrinkLoop(stop *atomic.Bool) {
	for !stop.Load() {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
	}
}

// grow recurses depth frames, each with a local array the compiler cannot
// drop, then runs fn (if any) at the bottom and returns.
//
//go:noinline
func grow(depth int, fn func()) byte {
	var pad [64]byte
	pad[depth%len(pad)] = byte(depth)
	if depth <= 0 {
		if fn != nil {
			deepCalls.Add(1)
			fn()
		}
		return pad[0]
	}
	return grow(depth-1, fn) + pad[(depth*7)%len(pad)]
}

func call(c *http.Client, url string) bool {
	resp, err := c.Get(url)
	if err != nil {
		log.Printf("call %s: %v", url, err)
		return false
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		log.Printf("call %s: %s", url, resp.Status)
		return false
	}
	return true
}

func addrOf(u string) string {
	_, rest, _ := strings.Cut(u, "://")
	return rest
}

func pemOf(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}
