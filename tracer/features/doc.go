// Package features probes the kernel features and privileges sonde depends
// on, for `sonde doctor` and for the tracer's startup checks.
//
// Every check exercises the feature itself: it loads, and where it makes
// sense attaches and fires, a tiny program built with
// github.com/cilium/ebpf/asm, then removes everything it created. Reading
// kernel config files is not enough, because a feature can be compiled in and
// still be unusable (kprobe programs load on kernels without kprobes, for
// example, and lockdown removes helpers at run time).
//
// cilium/ebpf looks for tracefs once per process and remembers a failure.
// A process that attaches tracepoints or kprobes must therefore make sure
// tracefs is mounted (EnsureTracefs) before its first attach; Probe does so
// itself unless told not to.
package features
