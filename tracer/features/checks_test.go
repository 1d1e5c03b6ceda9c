package features

import (
	"bytes"
	"os"
	"reflect"
	"testing"
)

// go test strips the symbol table from test binaries, so the uprobe checks
// attach by file offset here: the offset must hold the very code the
// function runs.
func TestFileOffset(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	pc := reflect.ValueOf(uprobeTarget).Pointer()
	off, err := fileOffset(exe, pc)
	if err != nil {
		t.Fatal(err)
	}

	mem, err := os.Open("/proc/self/mem")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	inMemory := make([]byte, 16)
	if _, err := mem.ReadAt(inMemory, int64(pc)); err != nil {
		t.Fatal(err)
	}

	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	inFile := make([]byte, len(inMemory))
	if _, err := f.ReadAt(inFile, int64(off)); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(inMemory, inFile) {
		t.Errorf("code at %#x is % x, file offset %#x holds % x", pc, inMemory, off, inFile)
	}

	if _, err := fileOffset(exe, 0); err == nil {
		t.Error("fileOffset of address 0 succeeded")
	}
}

func TestLockdownMode(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(dir+"/lockdown", []byte("none [integrity] confidentiality\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := lockdownMode([]mount{{Point: dir, FSType: "securityfs"}}); got != "lockdown=integrity" {
		t.Errorf("lockdownMode = %q", got)
	}
	if got := lockdownMode(nil); got != "lockdown mode unknown: securityfs not mounted" {
		t.Errorf("lockdownMode without securityfs = %q", got)
	}
}

func TestRunCheckRecovers(t *testing.T) {
	st, detail := runCheck(&prober{}, func(*prober) (Status, string) { panic("boom") })
	if st != Unknown || detail != "check panicked: boom" {
		t.Errorf("runCheck of a panicking check = %s, %q", st, detail)
	}
}
