package offsets

import (
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestFuzzStallInputs runs the inputs that stalled FuzzInspect. Each is a
// few dozen bytes whose headers claim megabytes (a program header table of
// 14384 entries of 12336 bytes; a 3 MiB section name table), which
// debug/elf allocated before finding the file shorter: 1.4 ms and 10 MB
// per call, so minimizing one took the fuzzer's whole minimize budget.
// They must now be rejected quickly and without allocating what they claim.
func TestFuzzStallInputs(t *testing.T) {
	for _, name := range []string{"stall-phdrs-claim-177MB", "stall-shstrtab-claims-3MB"} {
		t.Run(name, func(t *testing.T) {
			data := readCorpusEntry(t, filepath.Join("testdata", "fuzz", "FuzzInspect", name))
			done := make(chan struct{})
			var allocated uint64
			go func() {
				defer close(done)
				var before, after runtime.MemStats
				runtime.ReadMemStats(&before)
				for range 100 {
					fuzzInspectBody(t, data)
				}
				runtime.ReadMemStats(&after)
				allocated = (after.TotalAlloc - before.TotalAlloc) / 100
			}()
			select {
			case <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("100 runs took over 5s")
			}
			// The input is at most a few KB; a bounded parse allocates
			// about that much, not the megabytes the headers claim.
			if allocated > 64<<10 {
				t.Errorf("allocated %d bytes per run", allocated)
			}
		})
	}
}

// readCorpusEntry decodes a one-value []byte entry of the Go fuzz corpus
// format.
func readCorpusEntry(t *testing.T, path string) []byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	header, value, _ := strings.Cut(string(raw), "\n")
	value = strings.TrimSpace(value)
	if header != "go test fuzz v1" || !strings.HasPrefix(value, "[]byte(") {
		t.Fatalf("%s is not a []byte corpus entry", path)
	}
	s, err := strconv.Unquote(strings.TrimSuffix(strings.TrimPrefix(value, "[]byte("), ")"))
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return []byte(s)
}
