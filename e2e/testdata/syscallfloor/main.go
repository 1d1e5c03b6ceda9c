// syscallfloor times two syscalls in a tight loop: getppid, which no sonde
// program hooks, and a one-byte read of /dev/zero, which sys_exit_read's
// program sees and turns away (not a socket, and the process is not
// selected). While sonde runs, every process on the host pays what these
// cost above their cost without it. Raw syscalls keep Go's scheduler
// hooks out of the loop; the figure is the least of many batches, as
// interference only ever adds time.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"syscall"
	"time"
	"unsafe"
)

func main() {
	batches := flag.Int("batches", 40, "batches of each syscall")
	n := flag.Int("n", 20000, "syscalls per batch")
	flag.Parse()
	runtime.LockOSThread()
	f, err := os.Open("/dev/zero")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fd := f.Fd()
	var buf [1]byte
	minGet, minRead := time.Duration(1<<62), time.Duration(1<<62)
	for range *batches {
		t0 := time.Now()
		for range *n {
			syscall.RawSyscall(syscall.SYS_GETPPID, 0, 0, 0)
		}
		t1 := time.Now()
		for range *n {
			syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&buf[0])), 1)
		}
		t2 := time.Now()
		minGet = min(minGet, t1.Sub(t0))
		minRead = min(minRead, t2.Sub(t1))
	}
	// The harness parses this line.
	fmt.Printf("getppid %.1f read %.1f\n", float64(minGet)/float64(*n), float64(minRead)/float64(*n))
}
