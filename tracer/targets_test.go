package tracer

import (
	"sync"
	"testing"

	"github.com/cilium/ebpf"

	"github.com/sondehq/sonde/internal/testutil"
)

// The bits userspace sets through its mapping are the kernel map's words,
// concurrent changes to one word all land, and a pid beyond the bitmap is
// an error, not a write past it.
func TestTargetBits(t *testing.T) {
	testutil.RequireBPF(t)
	spec, err := loadSocket()
	if err != nil {
		t.Fatal(err)
	}
	m, err := ebpf.NewMap(spec.Maps["targets"])
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	bits, err := mapTargets(m)
	if err != nil {
		t.Fatal(err)
	}
	defer bits.close()

	word := func(i uint32) uint64 {
		var v uint64
		if err := m.Lookup(i, &v); err != nil {
			t.Fatal(err)
		}
		return v
	}
	for _, pid := range []uint32{0, 1, 63, 64, 4242, 4194303} {
		if err := bits.Add(pid); err != nil {
			t.Fatalf("Add(%d): %v", pid, err)
		}
		if got, want := word(pid/64), uint64(1)<<(pid%64); got&want == 0 {
			t.Errorf("Add(%d): word %d = %#x, bit %#x not set", pid, pid/64, got, want)
		}
		if !bits.Has(pid) {
			t.Errorf("Has(%d) = false after Add", pid)
		}
		if err := bits.Remove(pid); err != nil {
			t.Fatalf("Remove(%d): %v", pid, err)
		}
		if bits.Has(pid) || word(pid/64) != 0 {
			t.Errorf("Remove(%d): word %d = %#x", pid, pid/64, word(pid/64))
		}
	}

	// 64 goroutines flip the 64 bits of one word at once: a
	// read-modify-write without atomics would lose some.
	var wg sync.WaitGroup
	for bit := range uint32(64) {
		wg.Go(func() {
			for range 1000 {
				bits.Add(128 + bit)
				bits.Remove(128 + bit)
			}
			bits.Add(128 + bit)
		})
	}
	wg.Wait()
	if got := word(2); got != ^uint64(0) {
		t.Errorf("word 2 = %#x after concurrent changes, want every bit set", got)
	}

	if err := bits.Add(1 << 22); err == nil {
		t.Error("Add(PID_MAX_LIMIT) succeeded: the bitmap covers pids below it")
	}
	if bits.Has(1 << 22) {
		t.Error("Has(PID_MAX_LIMIT) = true")
	}
}
