package tracer

import (
	"errors"
	"fmt"
	"net/netip"
	"unsafe"
)

// Values of the C enums in bpf/headers/events.h.
const (
	eventData     = 1
	eventAccept   = 2
	eventConnect  = 3
	eventClose    = 4
	eventExec     = 5
	eventExit     = 6
	eventFork     = 7
	eventGoServer = 8
	eventGoClient = 9
	eventInject   = 10 // EVENT_INJECT: a traceparent written into a request

	dirEgress  = 1
	dirIngress = 2

	sysSendmmsg = 9
	sysRecvmmsg = 10
	sysSendfile = 11

	openedPassive = 1 // OPENED_PASSIVE
	openedActive  = 2 // OPENED_ACTIVE

	flagAfterLoss = 1 // EVENT_F_AFTER_LOSS
	flagTLS       = 2 // EVENT_F_TLS: plaintext from an OpenSSL probe
)

// Indexes of the kernel's per-CPU counters (enum counter).
const (
	counterEvents = iota
	counterLost
	counterIOVCapped
	counterMmsgCapped
	counterTargetsFull
	counterTLSUnpaired
	counterInjected
	counterInjectPresent
	counterInjectOff
	counterInjectFailed
	counterUnreadCall
	counterMax
)

const eventHeaderSize = int(unsafe.Sizeof(socketEvent{}))

var errShortRecord = errors.New("ring buffer record shorter than its header")

// viewEvent interprets a ring-buffer record in place: the header is laid out
// by the C side with no padding holes, so no copy or decode step is needed.
// The returned payload aliases raw and is valid until raw is reused.
func viewEvent(raw []byte) (*socketEvent, []byte, error) {
	if len(raw) < eventHeaderSize {
		return nil, nil, fmt.Errorf("%w: %d < %d bytes", errShortRecord, len(raw), eventHeaderSize)
	}
	e := (*socketEvent)(unsafe.Pointer(&raw[0]))
	data := raw[eventHeaderSize:]
	if int(e.Captured) > len(data) {
		return nil, nil, fmt.Errorf("%w: payload claims %d bytes, record has %d", errShortRecord, e.Captured, len(data))
	}
	return e, data[:e.Captured], nil
}

func (e *socketEvent) local() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(e.Saddr).Unmap(), e.Sport)
}

func (e *socketEvent) remote() netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom16(e.Daddr).Unmap(), e.Dport)
}

func (e *socketEvent) command() string {
	n := 0
	for n < len(e.Comm) && e.Comm[n] != 0 {
		n++
	}
	b := make([]byte, n)
	for i := range n {
		b[i] = byte(e.Comm[i])
	}
	return string(b)
}
