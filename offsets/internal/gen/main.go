// Command gen writes offsets/table.json: for every toolchain in
// spec.Toolchains it builds spec.Program with that toolchain and records
// the offsets of spec.Fields read from the binary's DWARF. With -grpc it
// writes offsets/grpc.json instead: for every grpc-go release in
// spec.GRPCVersions it builds e2e/testdata/grpcpair against it and records
// spec.GRPCFields.
//
//	go run ./offsets/internal/gen [-o offsets/table.json]
//	go run ./offsets/internal/gen -grpc [-o offsets/grpc.json]
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
	"sync"

	spec "github.com/sondehq/sonde/internal/gospec"
	"github.com/sondehq/sonde/offsets"
)

func main() {
	out := flag.String("o", "", "file to write (default offsets/table.json, or offsets/grpc.json with -grpc)")
	grpc := flag.Bool("grpc", false, "write the grpc-go table")
	flag.Parse()
	var err error
	switch {
	case *grpc && *out == "":
		err = runGRPC(filepath.Join("offsets", "grpc.json"))
	case *grpc:
		err = runGRPC(*out)
	case *out == "":
		err = run(filepath.Join("offsets", "table.json"))
	default:
		err = run(*out)
	}
	if err != nil {
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

func runGRPC(out string) error {
	dir, err := os.MkdirTemp("", "offsets-gen-grpc-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	// Builds run four at a time: each spends most of its time resolving
	// and compiling modules.
	type result struct {
		structs spec.Structs
		err     error
	}
	results := make([]result, len(spec.GRPCVersions))
	sem := make(chan struct{}, 4)
	var wg sync.WaitGroup
	for i, v := range spec.GRPCVersions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			fmt.Fprintln(os.Stderr, "gen: building against grpc", v)
			results[i].structs, results[i].err = extractGRPC(dir, v)
		}()
	}
	wg.Wait()
	table := map[string]spec.Structs{}
	for i, v := range spec.GRPCVersions {
		if results[i].err != nil {
			return results[i].err
		}
		table[v] = results[i].structs
	}
	data, err := spec.Encode(table)
	if err != nil {
		return err
	}
	return os.WriteFile(out, data, 0o644)
}

func extractGRPC(dir, v string) (spec.Structs, error) {
	bin, err := spec.BuildGRPC(dir, filepath.Join("e2e", "testdata", "grpcpair"), v, "grpcpair-"+v)
	if err != nil {
		return nil, err
	}
	defer os.Remove(bin)
	b, err := offsets.Open(bin)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	if got, _ := b.Module(spec.GRPCModule); got != v {
		return nil, fmt.Errorf("built against grpc %s, binary says %q", v, got)
	}
	return spec.ExtractGRPC(v, b.FieldOffset, offsets.ErrNotFound)
}
