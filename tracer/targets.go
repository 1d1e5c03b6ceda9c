package tracer

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// targetMap is the kernel's set of selected processes.
type targetMap interface {
	Add(pid uint32) error
	Remove(pid uint32) error
}

// targetBits is the kernel's targets map, a bitmap of tgids
// (bpf/headers/maps.h), mapped into this process. The BPF programs set and
// clear bits of the same words at fork, exec and exit, so every change here
// is an atomic or/and on the shared word: a lookup-modify-update through
// the map syscalls would lose their changes made in between.
type targetBits struct {
	mem []byte
}

func mapTargets(m *ebpf.Map) (*targetBits, error) {
	if m.ValueSize() != 8 || m.Flags()&unix.BPF_F_MMAPABLE == 0 {
		return nil, fmt.Errorf("targets map: want an mmapable array of 64-bit words")
	}
	size := int(m.MaxEntries()) * 8
	mem, err := unix.Mmap(m.FD(), 0, size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("map targets bitmap: %w", err)
	}
	return &targetBits{mem: mem}, nil
}

// word is the word that holds pid's bit. The mapping is page-aligned, so
// every word is 8-byte aligned as the atomics need.
func (b *targetBits) word(pid uint32) (*uint64, uint64, error) {
	i := int(pid / 64)
	if (i+1)*8 > len(b.mem) {
		return nil, 0, fmt.Errorf("pid %d beyond the targets bitmap", pid)
	}
	return (*uint64)(unsafe.Pointer(&b.mem[i*8])), 1 << (pid % 64), nil
}

func (b *targetBits) Add(pid uint32) error {
	w, bit, err := b.word(pid)
	if err != nil {
		return err
	}
	atomic.OrUint64(w, bit)
	return nil
}

func (b *targetBits) Remove(pid uint32) error {
	w, bit, err := b.word(pid)
	if err != nil {
		return err
	}
	atomic.AndUint64(w, ^bit)
	return nil
}

// Has reports whether pid's bit is set.
func (b *targetBits) Has(pid uint32) bool {
	w, bit, err := b.word(pid)
	return err == nil && atomic.LoadUint64(w)&bit != 0
}

func (b *targetBits) close() error {
	if b == nil || b.mem == nil {
		return nil
	}
	err := unix.Munmap(b.mem)
	b.mem = nil
	return err
}
