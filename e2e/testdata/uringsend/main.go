// uringsend sends one HTTP/1.1 request and reads the response through
// io_uring (IORING_OP_SEND and IORING_OP_RECV on a TCP socket), with no
// read or write syscall on the socket: a client whose bytes sonde's
// socket hooks see move but cannot read, and must count.
//
//	uringsend HOST:PORT
package main

import (
	"fmt"
	"net"
	"os"
	"strings"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

const (
	opSend = 26 // IORING_OP_SEND
	opRecv = 27 // IORING_OP_RECV

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000

	enterGetEvents = 1
)

// params is struct io_uring_params.
type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFD uint32
	resv                                                                   [3]uint32
	sqOff                                                                  [10]uint32 // head, tail, ring_mask, ring_entries, flags, dropped, array, resv1, user_addr (u64)
	cqOff                                                                  [10]uint32 // head, tail, ring_mask, ring_entries, overflow, cqes, flags, resv1, user_addr (u64)
}

// sqe is struct io_uring_sqe, the fields used here.
type sqe struct {
	opcode   uint8
	flags    uint8
	ioprio   uint16
	fd       int32
	off      uint64
	addr     uint64
	len      uint32
	opFlags  uint32
	userData uint64
	_        [24]byte
}

type ring struct {
	fd       int
	sq, cq   []byte
	sqes     []byte
	p        params
	sqesSize int
}

func setup() (*ring, error) {
	r := &ring{}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&r.p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r.fd = int(fd)
	var err error
	if r.sq, err = unix.Mmap(r.fd, offSQRing, int(r.p.sqOff[6]+r.p.sqEntries*4), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("mmap sq ring: %w", err)
	}
	if r.cq, err = unix.Mmap(r.fd, offCQRing, int(r.p.cqOff[5]+r.p.cqEntries*16), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("mmap cq ring: %w", err)
	}
	if r.sqes, err = unix.Mmap(r.fd, offSQEs, int(r.p.sqEntries)*64, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE); err != nil {
		return nil, fmt.Errorf("mmap sqes: %w", err)
	}
	return r, nil
}

func u32(b []byte, off uint32) *uint32 { return (*uint32)(unsafe.Pointer(&b[off])) }

// do submits one operation on fd over buf and waits for its result.
func (r *ring) do(op uint8, fd int, buf []byte) (int, error) {
	tail := atomic.LoadUint32(u32(r.sq, r.p.sqOff[1]))
	idx := tail & atomic.LoadUint32(u32(r.sq, r.p.sqOff[2]))
	e := (*sqe)(unsafe.Pointer(&r.sqes[idx*64]))
	*e = sqe{opcode: op, fd: int32(fd), addr: uint64(uintptr(unsafe.Pointer(&buf[0]))), len: uint32(len(buf)), userData: 1}
	*u32(r.sq, r.p.sqOff[6]+idx*4) = idx
	atomic.StoreUint32(u32(r.sq, r.p.sqOff[1]), tail+1)
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), 1, 1, enterGetEvents, 0, 0); errno != 0 {
		return 0, fmt.Errorf("io_uring_enter: %w", errno)
	}
	head := atomic.LoadUint32(u32(r.cq, r.p.cqOff[0]))
	if head == atomic.LoadUint32(u32(r.cq, r.p.cqOff[1])) {
		return 0, fmt.Errorf("no completion")
	}
	cqe := r.cq[r.p.cqOff[5]+(head&atomic.LoadUint32(u32(r.cq, r.p.cqOff[2])))*16:]
	res := int32(*u32(cqe, 8))
	atomic.StoreUint32(u32(r.cq, r.p.cqOff[0]), head+1)
	if res < 0 {
		return 0, fmt.Errorf("operation %d: %w", op, unix.Errno(-res))
	}
	return int(res), nil
}

func main() {
	if err := run(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "uringsend:", err)
		os.Exit(1)
	}
}

func run(addr string) error {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		return err
	}
	f, err := c.(*net.TCPConn).File() // a blocking duplicate of the socket
	if err != nil {
		return err
	}
	c.Close()
	r, err := setup()
	if err != nil {
		return err
	}
	req := []byte("GET /uring HTTP/1.1\r\nHost: " + addr + "\r\nConnection: close\r\n\r\n")
	if n, err := r.do(opSend, int(f.Fd()), req); err != nil || n != len(req) {
		return fmt.Errorf("send: %d of %d bytes: %v", n, len(req), err)
	}
	buf := make([]byte, 4096)
	n, err := r.do(opRecv, int(f.Fd()), buf)
	if err != nil {
		return fmt.Errorf("recv: %w", err)
	}
	status, _, _ := strings.Cut(string(buf[:n]), "\r\n")
	fmt.Println(status)
	return nil
}
