// goclient is a plain net/http client used as a traced peer by the e2e tests.
package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"time"
)

func main() {
	url := flag.String("url", "", "URL to GET")
	n := flag.Int("n", 1, "requests to send (0: until killed)")
	interval := flag.Duration("interval", 0, "pause between requests")
	flag.Parse()
	client := &http.Client{Timeout: 10 * time.Second}
	for i := 0; *n == 0 || i < *n; i++ {
		resp, err := client.Get(*url)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode)
		time.Sleep(*interval)
	}
}
