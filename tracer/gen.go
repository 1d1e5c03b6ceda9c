package tracer

// The BPF objects are generated from bpf/ and committed, so building sonde
// needs no clang. `make generate` runs this with Debian's clang.
//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags ${BPF_CFLAGS} -target amd64 -type event -type open_key -type open_note socket ../bpf/socket.c -- -I../bpf/headers
//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags ${BPF_CFLAGS} -target amd64 -type go_span -type go_offsets gohttp ../bpf/gohttp.c -- -I../bpf/headers
//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags ${BPF_CFLAGS} -target amd64 openssl ../bpf/openssl.c -- -I../bpf/headers
//go:generate go tool bpf2go -cc ${BPF_CLANG} -cflags ${BPF_CFLAGS} -target amd64 inject ../bpf/inject.c -- -I../bpf/headers
