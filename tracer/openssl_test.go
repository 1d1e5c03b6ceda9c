package tracer

import (
	"log/slog"
	"os"
	"path/filepath"
	"sync/atomic"
	"testing"

	"golang.org/x/arch/x86/x86asm"

	"github.com/sondehq/sonde/internal/testutil"
	"github.com/sondehq/sonde/offsets"
)

// Every OpenSSL probe sonde attaches sits on an instruction the kernel
// emulates, read back from the file at the offset the probe was given: the
// host's libssl is probed from the start, whatever is selected.
func TestSSLProbeSitesEmulated(t *testing.T) {
	testutil.RequireBPF(t)
	testutil.RequireUprobes(t)
	host, err := filepath.Glob("/usr/lib/x86_64-linux-gnu/libssl.so.*")
	if err != nil || len(host) == 0 {
		testutil.Unmet(t, "no libssl in /usr/lib/x86_64-linux-gnu (Debian's libssl3)")
	}
	tr, err := New(&Options{Sink: &collectSink{}, Exe: []string{"/nonexistent/sonde-test"}})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Close()
	libs := tr.sslProbes.libraries()
	if len(libs) == 0 {
		t.Fatalf("no OpenSSL library probed; the host has %v", host)
	}
	ops := map[offsets.SSLOp]int{}
	for _, lib := range libs {
		f, err := os.Open(lib.Path)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range lib.Sites {
			code := make([]byte, 16)
			if _, err := f.ReadAt(code, int64(s.Offset)); err != nil {
				t.Fatalf("%s: read at %#x: %v", lib.Path, s.Offset, err)
			}
			inst, err := x86asm.Decode(code, 64)
			if err != nil {
				t.Fatalf("%s: decode at %#x: %v", lib.Path, s.Offset, err)
			}
			if !offsets.Emulated(inst) || !s.Emulated {
				t.Errorf("%s: %s probe on %s at %#x is on %v, which the kernel single-steps", lib.Path, s.Op, s.Func, s.Offset, inst)
			}
			ops[s.Op]++
		}
		f.Close()
	}
	if ops[offsets.SSLRead] == 0 || ops[offsets.SSLWrite] == 0 || ops[offsets.SSLHandshake] == 0 {
		t.Errorf("probed operations %v: want read, write and handshake", ops)
	}
	if st := tr.Stats(); st.SSLLibraries != len(libs) || st.AttachFailures != 0 {
		t.Errorf("stats say %d libraries and %d attach failures; want %d and 0", st.SSLLibraries, st.AttachFailures, len(libs))
	}
}

// Probes stay on a file until sonde exits: past sslFilesMax files, a new
// one is left unread, counted, and never attached.
func TestSSLFilesBounded(t *testing.T) {
	var failures atomic.Uint64
	p := &sslProbes{log: slog.New(slog.DiscardHandler), failures: &failures,
		byFile: map[fileID]*sslLib{}, skipped: map[fileID]bool{}}
	for i := range sslFilesMax {
		p.byFile[fileID{ino: uint64(i + 1)}] = &sslLib{}
	}
	f, err := os.Open("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	id := fileID{ino: 1 << 40}
	p.addFile(f, id, "libssl.so.3", 1) // attach would need p.coll: it must not be reached
	if !p.skipped[id] || failures.Load() != 1 || len(p.byFile) != sslFilesMax {
		t.Errorf("skipped %v, failures %d, %d files; want skipped, 1 and %d", p.skipped[id], failures.Load(), len(p.byFile), sslFilesMax)
	}
}
