// rategen sends GET requests at a fixed rate over keep-alive connections
// (open loop), so that a traced and an untraced server can be compared at
// the same load: a server's CPU per request depends on how busy it is.
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

func main() {
	addr := flag.String("addr", "", "host:port of the server")
	path := flag.String("path", "/hello", "path to GET")
	rate := flag.Int("rate", 10000, "requests per second, all connections together")
	conns := flag.Int("conns", 10, "keep-alive connections")
	duration := flag.Duration("duration", 5*time.Second, "how long to send")
	flag.Parse()
	req := []byte("GET " + *path + " HTTP/1.1\r\nHost: " + *addr + "\r\nUser-Agent: rategen\r\n\r\n")
	interval := time.Duration(int64(time.Second) * int64(*conns) / int64(*rate))
	var ok, failed, late atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for i := range *conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, err := net.Dial("tcp", *addr)
			if err != nil {
				failed.Add(1)
				return
			}
			defer c.Close()
			br := bufio.NewReader(c)
			// Stagger the connections over one interval.
			next := start.Add(interval * time.Duration(i) / time.Duration(*conns))
			for next.Sub(start) < *duration {
				if d := time.Until(next); d > 0 {
					time.Sleep(d)
				} else if d < -interval {
					late.Add(1)
				}
				next = next.Add(interval)
				if _, err := c.Write(req); err != nil {
					failed.Add(1)
					return
				}
				resp, err := http.ReadResponse(br, nil)
				if err != nil {
					failed.Add(1)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	// The harness parses this line.
	fmt.Printf("ok %d failed %d late %d seconds %.3f\n", ok.Load(), failed.Load(), late.Load(), elapsed.Seconds())
	if failed.Load() > 0 {
		os.Exit(1)
	}
}
