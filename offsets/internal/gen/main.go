// Command gen writes offsets/table.json: for every toolchain in
// spec.Toolchains it builds spec.Program with that toolchain and records
// the offsets of spec.Fields read from the binary's DWARF.
//
//	go run ./offsets/internal/gen [-o offsets/table.json]
//
// It downloads the toolchains it lacks through the module proxy, so it is
// run on purpose rather than by the tests, which check the committed table
// against the toolchains they already build.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	spec "github.com/sondehq/sonde/internal/gospec"
	"github.com/sondehq/sonde/offsets"
)

func main() {
	out := flag.String("o", filepath.Join("offsets", "table.json"), "file to write")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gen:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	dir, err := os.MkdirTemp("", "offsets-gen-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	table := map[string]spec.Structs{}
	for _, tc := range spec.Toolchains() {
		fmt.Fprintln(os.Stderr, "gen: building with", tc)
		structs, err := extract(filepath.Join(dir, tc), tc)
		if err != nil {
			return err
		}
		table[tc] = structs
	}
	data, err := spec.Encode(table)
	if err != nil {
		return err
	}
	return os.WriteFile(out, data, 0o644)
}

func extract(dir, tc string) (spec.Structs, error) {
	bin, err := spec.Build(dir, tc, "prog")
	if err != nil {
		return nil, err
	}
	b, err := offsets.Open(bin)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if got := b.GoVersion(); got != tc {
		return nil, fmt.Errorf("built with %s, binary says %s", tc, got)
	}
	return spec.Extract(tc, b.FieldOffset, offsets.ErrNotFound)
}
