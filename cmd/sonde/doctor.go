package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/sondehq/sonde/tracer/features"
)

func doctorCmd(args []string) int {
	fs := flag.NewFlagSet("sonde doctor", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: sonde doctor [flags]\n\nProbe every kernel feature sonde uses, by loading and attaching tiny programs,\nand say what the absence of each one costs.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	report := features.Probe(context.Background(), nil)
	if *asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(report); err != nil {
			fmt.Fprintln(os.Stderr, "sonde doctor:", err)
			return 1
		}
		return 0
	}
	if _, err := report.WriteTo(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "sonde doctor:", err)
		return 1
	}
	if err := features.CheckPrivileges(); err != nil {
		fmt.Fprintln(os.Stdout, "\nsonde trace cannot run here:", err)
		return 1
	}
	return 0
}
