// vecpeer speaks HTTP/1.1 over TCP with vectored calls alone: every
// request and response is sent in two pieces by one call, and received
// into two buffers, the first too small for a whole message. sonde must put
// the pieces together in order. CALLS picks the calls:
//
//	vec   writev and readv, two iovecs
//	msg   sendmsg and recvmsg, two iovecs
//	mmsg  sendmmsg and recvmmsg, two messages of one iovec each
//
// Usage:
//
//	vecpeer CALLS serve              prints "listening ADDR", serves until killed
//	vecpeer CALLS get ADDR PATH...   one keep-alive connection, a GET per
//	                                 path; prints "STATUS BODYLEN" per path
package main

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The two calls of a CALLS family.
var (
	sendTwo func(fd int, a, b []byte) error
	recvTwo func(fd int) ([]byte, error)
)

func main() {
	if len(os.Args) < 3 {
		fail(fmt.Errorf("usage: vecpeer vec|msg|mmsg serve | get ADDR PATH..."))
	}
	switch os.Args[1] {
	case "vec":
		sendTwo, recvTwo = writevTwo, readvTwo
	case "msg":
		sendTwo, recvTwo = sendmsgTwo, recvmsgTwo
	case "mmsg":
		sendTwo, recvTwo = sendmmsgTwo, recvmmsgTwo
	default:
		fail(fmt.Errorf("unknown calls %q", os.Args[1]))
	}
	var err error
	switch os.Args[2] {
	case "serve":
		err = serve()
	case "get":
		if len(os.Args) < 5 {
			err = fmt.Errorf("usage: vecpeer CALLS get ADDR PATH...")
		} else {
			err = get(os.Args[3], os.Args[4:])
		}
	default:
		err = fmt.Errorf("unknown command %q", os.Args[2])
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "vecpeer:", err)
	os.Exit(1)
}

// sendmmsgTwo sends a and b as the two messages of one sendmmsg call, and
// again what a partial send left.
func sendmmsgTwo(fd int, a, b []byte) error {
	for len(a)+len(b) > 0 {
		bufs := [][]byte{a, b}
		var iovs [2]unix.Iovec
		var msgs [2]mmsghdr
		n := 0
		for _, p := range bufs {
			if len(p) == 0 {
				continue
			}
			iovs[n].Base = &p[0]
			iovs[n].SetLen(len(p))
			msgs[n].hdr.Iov = &iovs[n]
			msgs[n].hdr.SetIovlen(1)
			n++
		}
		sent, _, errno := unix.Syscall6(unix.SYS_SENDMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), uintptr(n), 0, 0, 0)
		if errno != 0 {
			return fmt.Errorf("sendmmsg: %w", errno)
		}
		for i := 0; i < int(sent); i++ {
			done := int(msgs[i].len)
			if len(a) > 0 {
				a = a[done:]
			} else {
				b = b[done:]
			}
		}
	}
	return nil
}

// recvmmsgTwo receives into a 16-byte and a 4 KiB buffer with one
// recvmmsg call that waits for the first message only, and returns the
// bytes in order; none at the peer's close.
func recvmmsgTwo(fd int) ([]byte, error) {
	var small [16]byte
	var large [4096]byte
	var iovs [2]unix.Iovec
	var msgs [2]mmsghdr
	for i, p := range [][]byte{small[:], large[:]} {
		iovs[i].Base = &p[0]
		iovs[i].SetLen(len(p))
		msgs[i].hdr.Iov = &iovs[i]
		msgs[i].hdr.SetIovlen(1)
	}
	got, _, errno := unix.Syscall6(unix.SYS_RECVMMSG, uintptr(fd), uintptr(unsafe.Pointer(&msgs[0])), 2, unix.MSG_WAITFORONE, 0, 0)
	if errno != 0 {
		return nil, fmt.Errorf("recvmmsg: %w", errno)
	}
	var out []byte
	if got > 0 {
		out = append(out, small[:msgs[0].len]...)
	}
	if got > 1 {
		out = append(out, large[:msgs[1].len]...)
	}
	return out, nil
}

// writevTwo writes a and b with writev calls of two iovecs until all is
// sent.
func writevTwo(fd int, a, b []byte) error {
	for len(a)+len(b) > 0 {
		n, err := unix.Writev(fd, [][]byte{a, b})
		if err != nil {
			return fmt.Errorf("writev: %w", err)
		}
		a, b = advance(a, b, n)
	}
	return nil
}

// readvTwo reads into a 16-byte and a 4 KiB buffer with one readv call.
func readvTwo(fd int) ([]byte, error) {
	return readTwo("readv", func(bufs [][]byte) (int, error) { return unix.Readv(fd, bufs) })
}

// sendmsgTwo sends a and b with sendmsg calls of two iovecs until all is
// sent.
func sendmsgTwo(fd int, a, b []byte) error {
	for len(a)+len(b) > 0 {
		n, err := unix.SendmsgBuffers(fd, [][]byte{a, b}, nil, nil, 0)
		if err != nil {
			return fmt.Errorf("sendmsg: %w", err)
		}
		a, b = advance(a, b, n)
	}
	return nil
}

// recvmsgTwo receives into a 16-byte and a 4 KiB buffer with one recvmsg
// call.
func recvmsgTwo(fd int) ([]byte, error) {
	return readTwo("recvmsg", func(bufs [][]byte) (int, error) {
		n, _, _, _, err := unix.RecvmsgBuffers(fd, bufs, nil, 0)
		return n, err
	})
}

// readTwo reads with call into a 16-byte and a 4 KiB buffer and returns
// the bytes in order.
func readTwo(name string, call func([][]byte) (int, error)) ([]byte, error) {
	var small [16]byte
	var large [4096]byte
	n, err := call([][]byte{small[:], large[:]})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if n <= len(small) {
		return append([]byte(nil), small[:n]...), nil
	}
	return append(small[:], large[:n-len(small)]...), nil
}

// advance drops the first n bytes of a then b.
func advance(a, b []byte, n int) ([]byte, []byte) {
	if n <= len(a) {
		return a[n:], b
	}
	return nil, b[n-len(a):]
}

// mmsghdr is struct mmsghdr: a msghdr and the bytes its message moved.
type mmsghdr struct {
	hdr unix.Msghdr
	len uint32
	_   [4]byte
}

// The sockets are made with plain syscalls, not package net: its
// descriptors are non-blocking, and a File dup would move the connection
// to another descriptor than the one connect or accept returned.
func serve() error {
	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		return err
	}
	if err := unix.Listen(ln, 64); err != nil {
		return err
	}
	sa, err := unix.Getsockname(ln)
	if err != nil {
		return err
	}
	fmt.Printf("listening 127.0.0.1:%d\n", sa.(*unix.SockaddrInet4).Port)
	for {
		fd, _, err := unix.Accept(ln)
		if err != nil {
			return err
		}
		go func() {
			defer unix.Close(fd)
			if err := serveConn(fd); err != nil {
				fmt.Fprintln(os.Stderr, "vecpeer: serve:", err)
			}
		}()
	}
}

// serveConn answers each request on c: 200 with a short body, or the
// status a path /status/CODE names, with an empty body.
func serveConn(fd int) error {
	var pending []byte
	for {
		in, err := recvTwo(fd)
		if err != nil {
			return err
		}
		if len(in) == 0 {
			return nil
		}
		pending = append(pending, in...)
		for {
			end := bytes.Index(pending, []byte("\r\n\r\n"))
			if end < 0 {
				break
			}
			line, _, _ := strings.Cut(string(pending[:end]), "\r\n")
			pending = pending[end+4:]
			fields := strings.Fields(line)
			if len(fields) != 3 {
				return fmt.Errorf("bad request line %q", line)
			}
			status, body := 200, "hello over mmsg\n"
			if code, ok := strings.CutPrefix(fields[1], "/status/"); ok {
				if status, err = strconv.Atoi(code); err != nil {
					return fmt.Errorf("bad status in %q", fields[1])
				}
				body = ""
			}
			head := fmt.Sprintf("HTTP/1.1 %d %s\r\nContent-Length: %d\r\nContent-Type: text/plain\r\n\r\n", status, statusText(status), len(body))
			if err := sendTwo(fd, []byte(head), []byte(body)); err != nil {
				return err
			}
		}
	}
}

func statusText(code int) string {
	switch code {
	case 200:
		return "OK"
	case 404:
		return "Not Found"
	case 503:
		return "Service Unavailable"
	}
	return "Status"
}

func get(addr string, paths []string) error {
	ap, err := netip.ParseAddrPort(addr)
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("address %q: want IPv4 host:port", addr)
	}
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: ap.Addr().As4(), Port: int(ap.Port())}); err != nil {
		return err
	}
	var pending []byte
	for _, path := range paths {
		line := "GET " + path + " HTTP/1.1\r\n"
		headers := "Host: " + addr + "\r\nUser-Agent: vecpeer\r\n\r\n"
		if err := sendTwo(fd, []byte(line), []byte(headers)); err != nil {
			return err
		}
		var status, length int
		for {
			end := bytes.Index(pending, []byte("\r\n\r\n"))
			if end >= 0 {
				head := string(pending[:end])
				if _, err := fmt.Sscanf(head, "HTTP/1.1 %d", &status); err != nil {
					return fmt.Errorf("bad response %q", head)
				}
				length = -1
				for _, h := range strings.Split(head, "\r\n")[1:] {
					if v, ok := strings.CutPrefix(strings.ToLower(h), "content-length: "); ok {
						length, _ = strconv.Atoi(v)
					}
				}
				if length < 0 {
					return fmt.Errorf("response without Content-Length: %q", head)
				}
				if len(pending) >= end+4+length {
					pending = pending[end+4+length:]
					break
				}
			}
			in, err := recvTwo(fd)
			if err != nil {
				return err
			}
			if len(in) == 0 {
				return fmt.Errorf("connection closed mid-response")
			}
			pending = append(pending, in...)
		}
		fmt.Printf("%d %d\n", status, length)
	}
	return nil
}
