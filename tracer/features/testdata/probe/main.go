// Command probe prints the uprobe checks of features.Probe. It exists for
// the test that needs an executable with a symbol table: go test strips its
// own.
package main

import (
	"context"
	"fmt"

	"github.com/sondehq/sonde/tracer/features"
)

func main() {
	r := features.Probe(context.Background(), &features.ProbeOptions{
		Checks: []string{features.Uprobes, features.Uretprobes},
	})
	for _, c := range r.Checks {
		fmt.Printf("%s\t%s\t%s\n", c.Name, c.Status, c.Detail)
	}
}
