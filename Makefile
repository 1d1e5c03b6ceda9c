# sonde: zero-instrumentation HTTP tracing with eBPF.
#
#   make demo    install what is missing, build, trace sample services
#   make test    install what is missing, check generated code, run all tests
#   make bench   A/B overhead figures (traced vs untraced)

GO         ?= go
BPF_CLANG  ?= clang
BPF_CFLAGS ?= -O2 -g -Wall -Werror
VERSION    ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN        := bin/sonde
SUDO       := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
FUZZTIME   ?= 20s

# Debian packages the tests use: clang, llvm (llvm-strip) and libbpf-dev
# regenerate the BPF objects, bpftool inspects what is attached, setpriv
# (util-linux) drops privileges, ip (iproute2) makes the network namespaces
# the injection tests send to, systemd-analyze (systemd) checks the unit
# file, gcc and libssl-dev build the OpenSSL fixtures (static and shared),
# and wrk, python3, curl, nginx, openssl and nghttp2-client (h2load) are
# real peers; chromium renders the live page headless.
TEST_PACKAGES := clang llvm libbpf-dev bpftool wrk python3 curl util-linux iproute2 ca-certificates systemd \
	gcc libc6-dev libssl-dev nginx openssl nghttp2-client chromium
DEMO_PACKAGES := python3 curl

.PHONY: offsets static image all build demo test unit e2e check-generate generate vmlinux bench fuzz vet deps-test deps-demo clean

all: build

build:
	$(GO) build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(BIN) ./cmd/sonde

# The node-agent image: a static sonde FROM scratch (deploy/Dockerfile), so
# no base image is pulled.
IMAGE          ?= sonde:$(VERSION)
CONTAINER_TOOL ?= docker

static:
	mkdir -p bin/image
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/image/sonde ./cmd/sonde
	cp /etc/ssl/certs/ca-certificates.crt bin/image/ca-certificates.crt

image: static
	$(CONTAINER_TOOL) build -f deploy/Dockerfile -t $(IMAGE) bin/image

demo: deps-demo build
	$(SUDO) ./$(BIN) demo

test: deps-test check-generate vet unit e2e

vet:
	$(GO) vet ./...

# Every package but the end-to-end tests, which need root and run below.
unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /e2e)

e2e:
	$(SUDO) env "PATH=$$PATH" CI="$$CI" $(GO) test -count=1 -p 1 -timeout 60m -v ./e2e/...

# Regenerate the BPF objects and fail when the committed ones differ: the
# objects are committed so that `go build` needs no clang.
check-generate: generate
	@git diff --exit-code --stat -- tracer/ bpf/ || { echo "committed BPF objects are stale: run 'make generate' and commit"; exit 1; }

generate:
	cd tracer && BPF_CLANG="$(BPF_CLANG)" BPF_CFLAGS="$(BPF_CFLAGS)" $(GO) generate ./...

# The struct offsets of Go binaries without DWARF, embedded in sonde: builds
# a program with each supported Go toolchain and reads its DWARF, then the
# gRPC test pair against each supported grpc-go release.
offsets:
	$(GO) run ./offsets/internal/gen
	$(GO) run ./offsets/internal/gen -grpc

# vmlinux.h is pinned; refresh it only on purpose, from a kernel with BTF.
vmlinux:
	bpftool btf dump file /sys/kernel/btf/vmlinux format c > bpf/headers/vmlinux.h

bench: deps-test
	$(SUDO) env "PATH=$$PATH" $(GO) test -run '^$$' -bench . -benchtime 1x -count=1 -timeout 30m -v ./e2e/
	$(GO) test -run '^$$' -bench . -benchmem $$($(GO) list ./protocols/... ./tracer/...)

fuzz:
	@for pkg in $$($(GO) list ./protocols/... ./tracer/... ./offsets/...); do \
	  for f in $$($(GO) test -list '^Fuzz' $$pkg | grep '^Fuzz'); do \
	    echo "== $$pkg $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

deps-test:
	@./.ci/install-packages $(TEST_PACKAGES)

deps-demo:
	@./.ci/install-packages $(DEMO_PACKAGES)

clean:
	rm -rf bin
