package tracer

import (
	"errors"
	"maps"
	"time"
)

// Stats are the tracer's counters since it started.
type Stats struct {
	// Kernel side.
	Events     uint64 // events written to the ring buffer
	Lost       uint64 // events dropped because the ring buffer was full
	IOVCapped  uint64 // captures cut short at the iovec limit
	MmsgCapped uint64 // sendmmsg/recvmmsg messages beyond the per-call limit
	// TargetsFull counts processes the kernel could not select (at exec or
	// fork) because their tgid lies beyond its targets bitmap, which covers
	// the kernel's PID_MAX_LIMIT: never, unless the kernel's limit grows.
	TargetsFull uint64
	// TLSUnpaired counts plaintext an OpenSSL probe read for an SSL object
	// whose socket was never seen: it could not be reported.
	TLSUnpaired uint64
	// UnreadCalls counts TCP sends and receives of selected processes
	// made by calls whose buffer the socket-layer hooks cannot find: by
	// io_uring, by a 32-bit process, a splice out of a socket, or a
	// sendmmsg or recvmmsg before their exits are attached (or at all with
	// DataHooksSocket). Their bytes are not parsed.
	UnreadCalls uint64
	// User side.
	Records      uint64            // ring-buffer records read
	BadRecords   uint64            // records that did not decode
	Truncated    uint64            // payloads larger than the capture limit
	ParseErrors  map[string]uint64 // by reason
	Spans        uint64            // spans handed to the sink
	Conns        int               // connections tracked now
	ConnsEvicted uint64            // connections dropped to respect MaxConns
	// ConnsJoined counts connections first seen in the middle: opened
	// before sonde attached or before their process was selected, or
	// whose open sonde did not see.
	ConnsJoined   uint64
	PendingAtExit uint64 // requests still awaiting a response when dropped
	Resyncs       uint64 // connections restarted after lost events
	LostExchanges uint64 // exchanges given up because their events were lost
	UnknownEvents uint64

	// Processes is the number of processes traced now. When every process
	// is traced it counts those sonde has seen traffic from.
	Processes int
	// AttachFailures counts probes that could not be attached; what they
	// would have seen is missing.
	AttachFailures uint64
	// RingBufferSize and RingBufferPending give the ring buffer's fill: the
	// bytes written by the kernel and not yet read.
	RingBufferSize, RingBufferPending int
	// Attached counts processes selected after sonde started (at exec or
	// by a rescan); AttachDelaySum and AttachDelayMax measure, for them,
	// the time from the exec (or the rescan that found them) to the moment
	// userspace confirmed the selection.
	Attached       uint64
	AttachDelaySum time.Duration
	AttachDelayMax time.Duration

	// Ciphertext counts events of TLS connections that carried ciphertext,
	// left out of parsing: the plaintext comes from the OpenSSL probes, or
	// from the Go probes for crypto/tls.
	Ciphertext uint64
	// HTTP2Conns counts connections parsed as HTTP/2; HTTP2HeadersUnknown
	// counts their streams whose header blocks could not be decoded (sonde
	// joined the connection in the middle, or a capture gap broke HPACK),
	// exported without the attributes the headers carry.
	HTTP2Conns, HTTP2HeadersUnknown uint64
	// SSLLibraries counts the files whose OpenSSL functions are probed.
	SSLLibraries int

	// Go probes: spans they saw, how many of those merged with the socket
	// view of the same exchange, and socket views exported alone because
	// no Go view came for them.
	GoSpans, GoMerged, GoSocketOnly uint64
	// GoGRPCSpans counts the Go spans that are grpc-go calls.
	GoGRPCSpans uint64

	// Same-host linking: spans of exchanges whose both ends sonde sees,
	// server spans made children of their client span, and server spans
	// whose client span did not come in time.
	LinkCandidates, Linked, LinkUnmatched uint64
	// ProxyLinked counts client spans of processes without probes made
	// children of the server span they forwarded.
	ProxyLinked uint64

	// Traceparent injection (Options.Inject). Kernel side: headers
	// written, requests that carried one already, connections injection
	// stopped on (not HTTP/1, or framing it would not guess), and sockets
	// or headers it could not handle, which left the bytes as they were.
	Injected, InjectPresent, InjectOff, InjectFailed uint64
	// User side: client spans that took the injected IDs, injections whose
	// request never became a span, and client spans that left an
	// in-process parent of another trace to keep the one on the wire.
	InjectAdopted, InjectUnmatched, InjectDetached uint64
}

// Stats returns a snapshot of the counters. It is safe to call while Run
// runs.
func (t *Tracer) Stats() Stats {
	s := Stats{
		Records:       t.stats.records.Load(),
		BadRecords:    t.stats.badRecords.Load(),
		Truncated:     t.stats.truncated.Load(),
		Spans:         t.stats.spans.Load(),
		PendingAtExit: t.stats.pendingAtExit.Load(),
		UnknownEvents: t.stats.unknownEvents.Load(),
		Resyncs:       t.stats.resyncs.Load(),
		ConnsJoined:   t.stats.connsJoined.Load(),
		LostExchanges: t.stats.lostExchanges.Load(),
		Conns:         int(t.conns.count.Load()),
		ConnsEvicted:  t.conns.evicted.Load(),

		Processes:           int(t.stats.processes.Load()),
		AttachFailures:      t.stats.attachFailures.Load(),
		Attached:            t.stats.attached.Load(),
		AttachDelaySum:      time.Duration(t.stats.attachDelaySum.Load()),
		AttachDelayMax:      time.Duration(t.stats.attachDelayMax.Load()),
		GoSpans:             t.stats.goSpans.Load(),
		GoGRPCSpans:         t.stats.goGRPCSpans.Load(),
		LinkCandidates:      t.stats.linkCandidates.Load(),
		Linked:              t.stats.linked.Load(),
		LinkUnmatched:       t.stats.linkUnmatched.Load(),
		ProxyLinked:         t.stats.proxyLinked.Load(),
		InjectAdopted:       t.stats.injectAdopted.Load(),
		InjectUnmatched:     t.stats.injectUnmatched.Load(),
		InjectDetached:      t.stats.injectDetached.Load(),
		GoMerged:            t.stats.goMerged.Load(),
		GoSocketOnly:        t.stats.goSocketOnly.Load(),
		Ciphertext:          t.stats.ciphertext.Load(),
		HTTP2Conns:          t.stats.http2Conns.Load(),
		HTTP2HeadersUnknown: t.stats.http2HeadersUnknown.Load(),
		SSLLibraries:        len(t.sslProbes.libraries()),
	}
	t.stats.mu.Lock()
	s.ParseErrors = maps.Clone(t.stats.parseErrors)
	t.stats.mu.Unlock()
	s.RingBufferSize = t.opts.RingBufferBytes
	t.closeMu.Lock()
	if t.reader != nil && !t.closed {
		s.RingBufferPending = t.reader.AvailableBytes()
	}
	t.closeMu.Unlock()
	if k, err := t.kernelCounters(); err == nil {
		s.Events, s.Lost = k[counterEvents], k[counterLost]
		s.IOVCapped, s.MmsgCapped = k[counterIOVCapped], k[counterMmsgCapped]
		s.TargetsFull = k[counterTargetsFull]
		s.TLSUnpaired = k[counterTLSUnpaired]
		s.UnreadCalls = k[counterUnreadCall]
		s.Injected, s.InjectPresent = k[counterInjected], k[counterInjectPresent]
		s.InjectOff, s.InjectFailed = k[counterInjectOff], k[counterInjectFailed]
	}
	return s
}

func (t *Tracer) kernelCounters() ([counterMax]uint64, error) {
	t.closeMu.Lock()
	defer t.closeMu.Unlock()
	return t.readCounters()
}

// readCounters sums the per-CPU counters; closeMu must be held.
func (t *Tracer) readCounters() ([counterMax]uint64, error) {
	var out [counterMax]uint64
	if t.coll == nil {
		if t.final != nil {
			return *t.final, nil
		}
		return out, errors.New("tracer closed")
	}
	m := t.coll.Maps["counters"]
	var perCPU []uint64
	for i := range out {
		if err := m.Lookup(uint32(i), &perCPU); err != nil {
			return out, err
		}
		for _, v := range perCPU {
			out[i] += v
		}
	}
	return out, nil
}

// reportKernelCounters warns when the kernel lost events since last time:
// a full ring buffer means spans are missing, and the user must know.
func (t *Tracer) reportKernelCounters() {
	k, err := t.kernelCounters()
	if err != nil {
		return
	}
	if lost := k[counterLost]; lost > t.lastLost {
		t.log.Warn("ring buffer full: events lost; raise --ring-buffer or lower --capture-bytes",
			"lost", lost-t.lastLost, "lost_total", lost)
		t.lastLost = lost
	}
	if full := k[counterTargetsFull]; full > t.lastTargetsFull {
		t.log.Warn("new processes not selected: tgid beyond the targets bitmap",
			"missed", full-t.lastTargetsFull, "missed_total", full)
		t.lastTargetsFull = full
	}
	if n := k[counterUnreadCall]; n > t.lastUnreadCalls {
		t.log.Warn("socket bytes moved by calls sonde cannot read (io_uring, 32-bit processes, sendmmsg/recvmmsg before their exits are attached, or with --data-hooks=socket): not parsed",
			"calls", n-t.lastUnreadCalls, "calls_total", n)
		t.lastUnreadCalls = n
	}
	if n := k[counterTLSUnpaired]; n > t.lastTLSUnpaired {
		t.log.Warn("TLS plaintext of a connection sonde never saw a socket for: not reported",
			"missed", n-t.lastTLSUnpaired, "missed_total", n)
		t.lastTLSUnpaired = n
	}
}
