package discover

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

func TestInspectELFGo(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	info, err := InspectELF(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	if !info.ELF || info.GoVersion != runtime.Version() || info.GoModule != "github.com/sondehq/sonde" {
		t.Errorf("got %+v; want go %s of github.com/sondehq/sonde", info, runtime.Version())
	}
	// This test binary does not link crypto/tls.
	if info.GoTLS || info.StaticSSL {
		t.Errorf("TLS found in a binary without it: %+v", info)
	}
}

func TestInspectELFGoCryptoTLS(t *testing.T) {
	goTool := filepath.Join(runtime.GOROOT(), "bin", "go")
	dir := t.TempDir()
	src := "package main\nimport \"crypto/tls\"\nfunc main() { c, _ := tls.Dial(\"tcp\", \"127.0.0.1:1\", nil); if c != nil { c.Write(nil) } }\n"
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "tlsprog")
	// -s -w strips the symbol table: the check must not depend on it.
	cmd := exec.Command(goTool, "build", "-ldflags=-s -w", "-o", bin, "main.go")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GO111MODULE=off", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	info := inspectFile(t, bin)
	if info.GoVersion != runtime.Version() || !info.GoTLS {
		t.Errorf("got %+v; want a Go binary linking crypto/tls", info)
	}
}

func inspectFile(t *testing.T, name string) ExeInfo {
	t.Helper()
	b, err := os.ReadFile(name)
	if err != nil {
		t.Fatal(err)
	}
	info, err := InspectELF(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatalf("InspectELF(%s): %v", name, err)
	}
	return info
}

func TestInspectELFStaticSSL(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler: static OpenSSL detection is also covered by the fuzz seeds")
	}
	dir := t.TempDir()
	src := `int SSL_read(void *s, void *b, int n) { return n; }
int SSL_write(void *s, const void *b, int n) { return n; }
int main(void) { return SSL_read(0, 0, 0) + SSL_write(0, 0, 0); }
`
	importer := `int SSL_read(void *s, void *b, int n); int SSL_write(void *s, const void *b, int n);
int main(void) { return SSL_read(0, 0, 0) + SSL_write(0, 0, 0); }
`
	for name, c := range map[string]string{"static.c": src, "importer.c": importer} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	build := func(out string, args ...string) string {
		bin := filepath.Join(dir, out)
		if b, err := exec.Command(cc, append(args, "-o", bin)...).CombinedOutput(); err != nil {
			t.Fatalf("cc: %v\n%s", err, b)
		}
		return bin
	}
	static := build("static", filepath.Join(dir, "static.c"))
	stripped := build("stripped", "-s", "-rdynamic", filepath.Join(dir, "static.c"))
	importer2 := build("importer", filepath.Join(dir, "importer.c"), "-Wl,--unresolved-symbols=ignore-all")
	for bin, want := range map[string]bool{static: true, stripped: true, importer2: false} {
		info := inspectFile(t, bin)
		if !info.ELF || info.GoVersion != "" || info.StaticSSL != want {
			t.Errorf("%s: %+v; want StaticSSL %v", filepath.Base(bin), info, want)
		}
	}
}

// A corrupt, truncated or lying executable gives an error or nothing, never
// a panic, and is never read beyond the budget.
func TestInspectELFCorrupt(t *testing.T) {
	exe, _ := os.Executable()
	whole, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []int{0, 3, 4, 16, 64, 200, 4096, len(whole) / 2} {
		info, err := InspectELF(bytes.NewReader(whole[:n]), int64(n))
		if info.GoVersion != "" && err == nil && n < len(whole)/2 {
			t.Errorf("%d bytes: %+v from a truncated file", n, info)
		}
	}
	if info, err := InspectELF(strings.NewReader("#!/bin/sh\necho hi\n"), 18); err != nil || info.ELF {
		t.Errorf("a script: %+v, %v; want not ELF and no error", info, err)
	}
	// A file that claims to be endless: the read budget ends the scan.
	if info, _ := InspectELF(endless{whole}, 1<<62); !info.ELF {
		t.Errorf("endless file: %+v", info)
	}
}

// endless serves a real ELF then zeros forever.
type endless struct{ head []byte }

func (e endless) ReadAt(p []byte, off int64) (int, error) {
	clear(p)
	if off < int64(len(e.head)) {
		copy(p, e.head[off:])
	}
	return len(p), nil
}

func TestBudgetReader(t *testing.T) {
	b := &budgetReader{r: bytes.NewReader(make([]byte, 100)), left: 10}
	if n, err := b.ReadAt(make([]byte, 8), 0); n != 8 || err != nil {
		t.Fatalf("%d, %v", n, err)
	}
	if _, err := b.ReadAt(make([]byte, 8), 8); !errors.Is(err, ErrReadLimit) || !b.exceeded() {
		t.Fatalf("over budget: %v", err)
	}
	if _, err := b.ReadAt(make([]byte, 1), 0); !errors.Is(err, ErrReadLimit) {
		t.Fatalf("budget came back: %v", err)
	}
}

func TestFindAllAcrossChunks(t *testing.T) {
	const chunk = 256 << 10
	buf := make([]byte, 3*chunk)
	needle := []byte("SSL_write\x00")
	at := []int64{0, chunk - 4, 2*chunk - 1, int64(len(buf) - len(needle))}
	for _, a := range at {
		copy(buf[a:], needle)
	}
	got, err := findAll(bytes.NewReader(buf), int64(len(buf)), needle, 10)
	if err != nil || !slices.Equal(got, at) {
		t.Errorf("findAll = %v, %v; want %v", got, err, at)
	}
	if got, _ := findAll(bytes.NewReader(buf), int64(len(buf)), needle, 2); len(got) != 2 {
		t.Errorf("max not honoured: %v", got)
	}
}

func TestParseMaps(t *testing.T) {
	maps := "" +
		"55d0c0a00000-55d0c0a01000 r--p 00000000 08:01 131090  /usr/bin/python3.11\n" +
		"55d0c0a01000-55d0c0a02000 r-xp 00001000 08:01 131090  /usr/bin/python3.11\n" +
		"7f00-7f01 rw-p 00000000 00:00 0 \n" +
		"7f01-7f02 r--p 00000000 08:01 2000                     /usr/lib/x86_64-linux-gnu/libssl.so.3\n" +
		"7f02-7f03 r--p 00000000 08:01 2001                     /opt/my app/lib name.so (deleted)\n" +
		"7f03-7f04 rw-p 00000000 00:00 0                          [heap]\n" +
		"7f04-7f05 r--p 00000000 08:01 2002 /" + strings.Repeat("x", maxMapsLine) + "\n" +
		"7f05-7f06 r--p 00000000 08:01 2003 /usr/lib/libz.so.1"
	got, err := ParseMaps(strings.NewReader(maps))
	want := []string{"/usr/bin/python3.11", "/usr/lib/x86_64-linux-gnu/libssl.so.3", "/opt/my app/lib name.so", "/usr/lib/libz.so.1"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("ParseMaps = %q, %v; want %q", got, err, want)
	}

	var many strings.Builder
	for range maxMapsLines + 5 {
		many.WriteString("7f00-7f01 r--p 00000000 08:01 1 /lib/a.so\n")
	}
	got, err = ParseMaps(strings.NewReader(many.String()))
	if !errors.Is(err, ErrReadLimit) || !slices.Equal(got, []string{"/lib/a.so"}) {
		t.Errorf("over-long maps: %q, %v; want the files so far and ErrReadLimit", got, err)
	}
}

func TestClassify(t *testing.T) {
	native := ExeInfo{ELF: true}
	for _, tc := range []struct {
		exe    string
		info   ExeInfo
		maps   []string
		lang   string
		tls    string
		tlsVer string
	}{
		{"/usr/local/bin/api", ExeInfo{ELF: true, GoVersion: "go1.26.0", GoTLS: true}, nil, LangGo, TLSGo, ""},
		{"/usr/bin/python3.11", native, []string{"/usr/lib/x86_64-linux-gnu/libssl.so.3"}, LangPython, TLSLibssl, "3"},
		{"/usr/local/bin/uwsgi", native, []string{"/usr/lib/libpython3.11.so.1.0", "/usr/lib/libssl.so.1.1"}, LangPython, TLSLibssl, "1.1"},
		{"/usr/lib/jvm/bin/java", native, nil, LangJava, "", ""},
		{"/opt/app/launcher", native, []string{"/usr/lib/jvm/lib/server/libjvm.so"}, LangJava, "", ""},
		{"/usr/share/dotnet/dotnet", native, nil, LangDotNet, "", ""},
		{"/opt/app/MyService", native, []string{"/usr/share/dotnet/shared/Microsoft.NETCore.App/8.0.0/libcoreclr.so"}, LangDotNet, "", ""},
		{"/usr/bin/node", native, []string{"/usr/lib/libssl.so"}, LangNode, TLSLibssl, ""},
		{"/usr/bin/ruby3.1", native, nil, LangRuby, "", ""},
		{"/usr/sbin/php-fpm8.2", native, nil, LangPHP, "", ""},
		{"/usr/sbin/apache2", native, []string{"/usr/lib/apache2/modules/libphp8.2.so"}, LangPHP, "", ""},
		{"/usr/bin/gdb", native, []string{"/usr/lib/libpython3.11.so.1.0"}, LangPython, "", ""},
		{"/usr/sbin/nginx", ExeInfo{ELF: true, StaticSSL: true}, nil, LangNative, TLSStatic, ""},
		{"/usr/bin/curl", native, []string{"/usr/lib/libssl3.so"}, LangNative, "", ""}, // NSS, not OpenSSL
		{"/usr/bin/python3-config", ExeInfo{}, nil, "", "", ""},                        // a script
		{"", ExeInfo{}, nil, "", "", ""},
	} {
		var rt Runtime
		rt.classify(tc.exe, tc.info, tc.maps)
		if rt.Language != tc.lang || rt.TLS != tc.tls || rt.TLSVersion != tc.tlsVer {
			t.Errorf("%s %+v %v: %s %s %q; want %s %s %q", tc.exe, tc.info, tc.maps, rt.Language, rt.TLS, rt.TLSVersion, tc.lang, tc.tls, tc.tlsVer)
		}
		if rt.TLS == TLSLibssl && rt.TLSPath == "" {
			t.Errorf("%s: no libssl path", tc.exe)
		}
	}
}

func TestInspectorRuntime(t *testing.T) {
	root := t.TempDir()
	bin := t.TempDir()
	exe, _ := os.Executable()
	pyExe := filepath.Join(bin, "python3.11")
	if err := os.Symlink("/bin/sh", pyExe); err != nil {
		t.Fatal(err)
	}
	fakeProc(t, root, 5, map[string]string{
		"exe":  "->" + pyExe,
		"maps": "7f01-7f02 r--p 00000000 08:01 2000 /usr/lib/x86_64-linux-gnu/libssl.so.3\n",
	})
	fakeProc(t, root, 6, map[string]string{"exe": "->" + exe, "maps": ""})
	fakeProc(t, root, 7, map[string]string{"stat": "7 (kworker/0:1) I"})

	in := &Inspector{ProcRoot: root}
	rt, err := in.Runtime(5)
	if err != nil || rt.Language != LangPython || rt.TLS != TLSLibssl || rt.TLSVersion != "3" || len(rt.Errs) != 0 {
		t.Errorf("python: %+v, %v", rt, err)
	}
	rt, err = in.Runtime(6)
	if err != nil || rt.Language != LangGo || rt.GoVersion != runtime.Version() {
		t.Errorf("go: %+v, %v", rt, err)
	}
	// The executable is read once for every process that runs it.
	if len(in.exes) != 2 {
		t.Errorf("%d executables cached, want 2", len(in.exes))
	}
	rt, err = in.Runtime(7)
	if err != nil || rt.Language != "" || len(rt.Errs) != 2 {
		t.Fatalf("no exe, no maps: %+v, %v", rt, err)
	}
	var re *ReadError
	if !errors.As(rt.Errs[0], &re) || re.File != "exe" || !errors.Is(rt.Errs[0], os.ErrNotExist) {
		t.Errorf("first error %v; want a ReadError for exe", rt.Errs[0])
	}
	if _, err := in.Runtime(99); !errors.Is(err, ErrGone) {
		t.Errorf("gone process: %v", err)
	}
}
