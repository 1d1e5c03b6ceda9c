package tracer

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"unsafe"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/tracer/export"
	"github.com/sondehq/sonde/tracer/features"
)

// injectInfo mirrors struct inject_info (bpf/headers/inject.h).
type injectInfo struct {
	TraceID [16]byte
	SpanID  [8]byte
	Request uint32
	Seq     uint32
	FromGo  uint8
	_       [7]byte
}

const injectInfoSize = int(unsafe.Sizeof(injectInfo{}))

// injectBacklog bounds the injections remembered per connection whose
// requests have not been parsed yet, and injectConns the connections with
// any: beyond them the oldest are dropped and counted, as their spans could
// not be told anyway.
const (
	injectBacklog = 64
	injectConns   = 65536
)

// injector holds the injection object and what userspace keeps of the
// injections: per socket, the IDs written into each request, until that
// request's client span takes them.
type injector struct {
	coll     *ebpf.Collection
	cgroup   link.Link
	sockhash *ebpf.Map
	msgProg  *ebpf.Program
	local    *ebpf.Map
	pending  map[uint64][]injectInfo // by struct sock address
}

// loadInject loads the injection object, sharing the socket object's maps
// and, when the Go probes are loaded, their map of Go client IDs.
func (t *Tracer) loadInject(vars map[string]any) error {
	spec, err := loadInject()
	if err != nil {
		return fmt.Errorf("read inject bpf object: %w", err)
	}
	coll, err := t.loadSharingFrom("inject", spec, vars, sharedMaps, t.goMapReplacements("inject_ctxs"))
	if err != nil {
		return err
	}
	t.inject = &injector{coll: coll, sockhash: coll.Maps["inject_socks"], msgProg: coll.Programs["inject_msg"],
		local: coll.Maps["local_addrs"], pending: make(map[uint64][]injectInfo)}
	return nil
}

func (t *Tracer) goMapReplacements(names ...string) map[string]*ebpf.Map {
	out := map[string]*ebpf.Map{}
	if t.goColl == nil {
		return out
	}
	for _, n := range names {
		if m := t.goColl.Maps[n]; m != nil {
			out[n] = m
		}
	}
	return out
}

// attachInject puts sk_msg on the sockhash and sockops on the root of the
// cgroup v2 hierarchy. Both go when sonde's file descriptors close, however
// sonde ends: the cgroup link is a bpf link, and the sk_msg attachment
// belongs to the sockhash, which the kernel frees with its last reference,
// restoring every socket in it.
func (t *Tracer) attachInject() error {
	in := t.inject
	if in == nil {
		return nil
	}
	if err := t.refreshLocalAddrs(); err != nil {
		return fmt.Errorf("inject: %w", err)
	}
	if err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target: in.sockhash.FD(), Program: in.msgProg, Attach: ebpf.AttachSkMsgVerdict,
	}); err != nil {
		return fmt.Errorf("inject: attach sk_msg: %w", err)
	}
	root, err := features.Cgroup2Path()
	if err != nil {
		return fmt.Errorf("inject: sockops needs cgroup v2: %w", err)
	}
	in.cgroup, err = link.AttachCgroup(link.CgroupOptions{Path: root, Attach: ebpf.AttachCGroupSockOps, Program: in.coll.Programs["inject_sockops"]})
	if err != nil {
		return fmt.Errorf("inject: attach sockops to %s: %w", root, err)
	}
	return nil
}

func (in *injector) close() {
	if in == nil {
		return
	}
	if in.cgroup != nil {
		in.cgroup.Close()
		in.cgroup = nil
	}
	if in.coll != nil {
		_ = link.RawDetachProgram(link.RawDetachProgramOptions{
			Target: in.sockhash.FD(), Program: in.msgProg, Attach: ebpf.AttachSkMsgVerdict,
		})
		in.coll.Close()
		in.coll = nil
	}
}

// refreshLocalAddrs tells the kernel the host's own addresses: connections
// to them stay on the host and are never injected into. Addresses that
// went away stay in the map; a stale entry only spares a connection.
func (t *Tracer) refreshLocalAddrs() error {
	if t.inject == nil {
		return nil
	}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return fmt.Errorf("list local addresses: %w", err)
	}
	one := uint8(1)
	for _, a := range addrs {
		pfx, err := netip.ParsePrefix(a.String())
		if err != nil {
			continue
		}
		key := pfx.Addr().As16() // IPv4 as IPv4-mapped, as the kernel side writes it
		if err := t.inject.local.Put(key, one); err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
			return fmt.Errorf("record local address %s: %w", pfx.Addr(), err)
		}
	}
	return nil
}

// onInject records what the kernel wrote into a request, for its client
// span.
func (t *Tracer) onInject(e *socketEvent, data []byte) {
	if t.inject == nil || len(data) < injectInfoSize {
		t.stats.badRecords.Add(1)
		return
	}
	var info injectInfo
	// The kernel's IDs are numbers; their big-endian bytes are the IDs
	// (u64ID), as for the Go probes' own.
	u64ID(info.TraceID[:8], binary.LittleEndian.Uint64(data[0:8]))
	u64ID(info.TraceID[8:], binary.LittleEndian.Uint64(data[8:16]))
	u64ID(info.SpanID[:], binary.LittleEndian.Uint64(data[16:24]))
	info.Request = binary.LittleEndian.Uint32(data[24:28])
	info.Seq = binary.LittleEndian.Uint32(data[28:32])
	info.FromGo = data[32]
	p := t.inject.pending
	q, ok := p[e.Sock]
	if !ok && len(p) >= injectConns {
		t.stats.injectUnmatched.Add(uint64(t.dropOldestInjections()))
	}
	if len(q) >= injectBacklog {
		t.stats.injectUnmatched.Add(1)
		q = q[1:]
	}
	p[e.Sock] = append(q, info)
}

// dropOldestInjections frees room for a new connection's injections; maps
// have no order, so any one goes: it is a connection whose spans are long
// overdue, or the table is under a flood.
func (t *Tracer) dropOldestInjections() int {
	for k, q := range t.inject.pending {
		delete(t.inject.pending, k)
		return len(q)
	}
	return 0
}

// takeInjected gives a client span the IDs written into its request, the
// ordinal-th on its connection, so that the receiving side's span, which
// reads them, is its child. The span leaves any parent in another trace:
// the request has already gone out naming this trace.
func (t *Tracer) takeInjected(c *conn, s *export.Span, ordinal uint64) bool {
	if t.inject == nil || s.Kind != trace.SpanKindClient {
		return false
	}
	q := t.inject.pending[c.sock]
	for i, info := range q {
		if uint64(info.Request) != ordinal {
			continue
		}
		q = append(q[:i], q[i+1:]...)
		if len(q) == 0 {
			delete(t.inject.pending, c.sock)
		} else {
			t.inject.pending[c.sock] = q
		}
		if s.Parent.IsValid() && s.Parent.TraceID() != info.TraceID {
			s.Parent = trace.SpanContext{}
		}
		s.TraceID = info.TraceID
		s.SpanID = info.SpanID
		s.Attributes = append(setSeqAttr(s.Attributes, info.Seq), attribute.Bool(attrInjected, true))
		t.stats.injectAdopted.Add(1)
		return true
	}
	return false
}

// forgetInjections drops what is left for a closed connection: requests
// whose exchanges never completed.
func (t *Tracer) forgetInjections(c *conn) {
	if t.inject == nil {
		return
	}
	if q, ok := t.inject.pending[c.sock]; ok {
		t.stats.injectUnmatched.Add(uint64(len(q)))
		delete(t.inject.pending, c.sock)
	}
}

// attrInjected marks a client span whose request sonde wrote the
// traceparent into.
const attrInjected = "sonde.traceparent.injected"

func injected(s *export.Span) bool {
	for _, a := range s.Attributes {
		if a.Key == attrInjected {
			return true
		}
	}
	return false
}

// adoptInjected gives a Go client span its socket view's injected IDs: they
// are the probe's own unless the request went out before the probe named
// them, or userspace moved the call into another trace since.
func (t *Tracer) adoptInjected(g, sock *export.Span) {
	if g.Kind != trace.SpanKindClient || !injected(sock) || (g.TraceID == sock.TraceID && g.SpanID == sock.SpanID) {
		return
	}
	if g.TraceID != sock.TraceID {
		t.stats.injectDetached.Add(1)
		g.Parent = trace.SpanContext{}
	}
	g.TraceID, g.SpanID = sock.TraceID, sock.SpanID
}

// callsNamedTrace reports whether a client call held for server injected
// server's trace into its request.
func (t *Tracer) callsNamedTrace(server *export.Span) bool {
	if t.inject == nil {
		return false
	}
	for _, c := range t.gostate.children[server.SpanID] {
		if injected(c.span) && c.span.TraceID == server.TraceID {
			return true
		}
	}
	return false
}

// setSeqAttr replaces a client span's request sequence number with the one
// the request had on the wire: the capture at the syscall counts the
// syscall's bytes, which the injected header is not part of.
func setSeqAttr(attrs []attribute.KeyValue, seq uint32) []attribute.KeyValue {
	for i, a := range attrs {
		if a.Key == attrRequestSeq {
			attrs[i] = attribute.Int64(attrRequestSeq, int64(seq))
			return attrs
		}
	}
	return attrs
}

func (in *injector) collection() *ebpf.Collection {
	if in == nil {
		return nil
	}
	return in.coll
}
