package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/sondehq/sonde/tracer/servicemap"
)

func mapCmd(args []string) int {
	fs := flag.NewFlagSet("sonde map", flag.ContinueOnError)
	from := fs.String("from", "http://"+defaultMetricsAddr, "a recording (sonde trace --record FILE), or the metrics address of a running sonde (http://HOST:PORT)")
	format := fs.String("format", "table", "table, json, dot or mermaid")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: sonde map [flags]\n\nPrint who calls whom: an edge per client and server, with the calls'\ncount, errors and p50/p99 latency.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	write, ok := mapFormats[*format]
	if !ok || fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "sonde map: --format must be table, json, dot or mermaid\n")
		return 2
	}
	m, err := loadMap(*from)
	if err != nil {
		fmt.Fprintln(os.Stderr, "sonde map:", err)
		return 1
	}
	if err := write(os.Stdout, m); err != nil {
		fmt.Fprintln(os.Stderr, "sonde map:", err)
		return 1
	}
	return 0
}

var mapFormats = map[string]func(io.Writer, servicemap.Map) error{
	"table":   servicemap.WriteTable,
	"json":    servicemap.WriteJSON,
	"dot":     servicemap.WriteDOT,
	"mermaid": servicemap.WriteMermaid,
}

// loadMap reads the map of a running sonde (an http:// address) or builds
// it from a recording.
func loadMap(from string) (servicemap.Map, error) {
	if strings.HasPrefix(from, "http://") || strings.HasPrefix(from, "https://") {
		c := &http.Client{Timeout: 10 * time.Second}
		resp, err := c.Get(strings.TrimSuffix(from, "/") + "/map")
		if err != nil {
			return servicemap.Map{}, fmt.Errorf("is sonde trace running with --metrics-addr? %w", err)
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return servicemap.Map{}, fmt.Errorf("%s/map: %s", from, resp.Status)
		}
		return servicemap.ReadJSON(resp.Body)
	}
	f, err := os.Open(from)
	if err != nil {
		return servicemap.Map{}, err
	}
	defer f.Close()
	b := servicemap.NewBuilder(nil)
	now := time.Now()
	if err := servicemap.ReadSpans(f, func(s servicemap.Span) { b.Add(s, now) }); err != nil {
		return servicemap.Map{}, fmt.Errorf("%s: %w", from, err)
	}
	b.Flush(now, true)
	return b.Map(), nil
}
