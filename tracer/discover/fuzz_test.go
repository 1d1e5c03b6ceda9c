package discover

import (
	"bytes"
	"path"
	"strconv"
	"strings"
	"testing"
)

// Seeds live in testdata/fuzz/<FuzzName>/ too; the f.Add calls keep a plain
// `go test` meaningful without them.

// A rule that parses prints as a string that parses to the same rule.
func FuzzParseRule(f *testing.F) {
	f.Add("exe=/usr/bin/python3*,port=8080")
	f.Add("any")
	f.Add("otel_service_name=false,cmdline=a=b")
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRule(s)
		if err != nil {
			return
		}
		again, err := ParseRule(r.String())
		if err != nil || again != r {
			t.Fatalf("ParseRule(%q) = %+v; its String %q parses to %+v, %v", s, r, r.String(), again, err)
		}
		r.Match(&Process{Exe: s, Cmdline: []string{s}, Cgroup: s})
	})
}

// globMatch is path.Match where no '/' is involved.
func FuzzGlobMatch(f *testing.F) {
	f.Add("*a?[b-d]\\*", "xab*")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		got := globMatch(pattern, name)
		if strings.Contains(pattern+name, "/") {
			return
		}
		if want, err := path.Match(pattern, name); err == nil && got != want {
			t.Fatalf("globMatch(%q, %q) = %v, path.Match %v", pattern, name, got, want)
		}
	})
}

func FuzzCgroup(f *testing.F) {
	f.Add([]byte("0::/kubepods.slice/kubepods-pod5b1c2d3e_4f50_6172_8394_a5b6c7d8e9f0.slice/cri-containerd-3f4e5d6c7b8a99887766554433221100ffeeddccbbaa00112233445566778899.scope\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		cg := ParseCgroup(b)
		id, pod := ContainerOf(cg)
		if id != "" && (!isHex64(id) || !strings.Contains(cg, id)) {
			t.Fatalf("container id %q from %q", id, cg)
		}
		if pod != "" && (!isUID(pod) || !strings.Contains(strings.ReplaceAll(cg, "_", "-"), pod)) {
			t.Fatalf("pod uid %q from %q", pod, cg)
		}
	})
}

func FuzzParseCmdline(f *testing.F) {
	f.Add([]byte("python3\x00-m\x00http.server\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		args := ParseCmdline(b)
		if joined := strings.Join(args, "\x00"); joined != string(bytes.TrimRight(b, "\x00")) {
			t.Fatalf("ParseCmdline(%q) = %q does not rejoin", b, args)
		}
	})
}

func FuzzParseEnviron(f *testing.F) {
	f.Add([]byte("OTEL_SERVICE_NAME=shop\x00PATH=/bin\x00"))
	f.Fuzz(func(t *testing.T, b []byte) {
		env := ParseEnviron(b, "OTEL_SERVICE_NAME", "OTEL_RESOURCE_ATTRIBUTES")
		for k, v := range env {
			if !bytes.Contains(b, []byte(k+"="+v)) || strings.Contains(v, "\x00") {
				t.Fatalf("%s=%q not in %q", k, v, b)
			}
		}
	})
}

func FuzzListeningSockets(f *testing.F) {
	f.Add([]byte(tcpHeader + "   0: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 123 1\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		for port, inode := range ListeningSockets(bytes.NewReader(b)) {
			if !bytes.Contains(b, []byte("0A")) || !bytes.Contains(b, []byte(strconv.FormatUint(inode, 10))) {
				t.Fatalf("port %d inode %d not in a LISTEN line of %q", port, inode, b)
			}
		}
	})
}

func FuzzParseMaps(f *testing.F) {
	f.Add([]byte("7f01-7f02 r--p 00000000 08:01 2000 /usr/lib/libssl.so.3\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		files, _ := ParseMaps(bytes.NewReader(b))
		for _, p := range files {
			if !strings.HasPrefix(p, "/") || strings.Contains(p, "\n") || !bytes.Contains(b, []byte(p)) {
				t.Fatalf("file %q from %q", p, b)
			}
		}
		var rt Runtime
		rt.classify(string(b), ExeInfo{}, files)
	})
}

// Any bytes as an executable: an answer or an error, never a panic.
func FuzzInspectELF(f *testing.F) {
	f.Add([]byte("\x7fELF"))
	f.Add([]byte("#!/bin/sh\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		info, err := InspectELF(bytes.NewReader(b), int64(len(b)))
		if err == nil && info.ELF != bytes.HasPrefix(b, []byte("\x7fELF")) {
			t.Fatalf("ELF %v for %q", info.ELF, b[:min(len(b), 16)])
		}
	})
}
