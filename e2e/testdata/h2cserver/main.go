// h2cserver serves HTTP/2 in clear, with prior knowledge, through
// golang.org/x/net/http2/h2c. It prints "listening ADDR" once it accepts
// connections.
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/h2c"
)

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s %s\n", r.Proto, r.URL.Path)
	})
	fmt.Println("listening", ln.Addr())
	srv := &http.Server{Handler: h2c.NewHandler(mux, &http2.Server{})}
	if err := srv.Serve(ln); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
