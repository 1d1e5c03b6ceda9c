package tracer

import (
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/protocols/http1"
	"github.com/sondehq/sonde/protocols/http2"
	"github.com/sondehq/sonde/tracer/export"
)

// startHTTP2 gives a connection an HTTP/2 parser when its first bytes in a
// direction are HTTP/2's: the client preface or the server's SETTINGS, or,
// on a connection sonde joined in the middle, frame headers. It reports
// whether it did.
func (t *Tracer) startHTTP2(c *conn, dir http2.Direction, data []byte) bool {
	switch {
	case http2.LooksLikeHTTP2(data):
		c.h2 = http2.NewConn(nil)
	case c.midStream && http2.LooksLikeFrames(dir, data):
		c.h2 = http2.NewConn(nil)
		c.h2.JoinMidStream()
	default:
		return false
	}
	t.stats.http2Conns.Add(1)
	return true
}

// upgradeHTTP2 follows a connection that switched protocols (101) to what
// its next bytes are: HTTP/2 after "Upgrade: h2c", whose stream 1 is the
// upgraded request and gives its span, or anything else (a WebSocket),
// for which the 101 exchange is the span.
func (t *Tracer) upgradeHTTP2(c *conn, data []byte) {
	if !http2.LooksLikeHTTP2(data) {
		t.flushUpgrade(c)
		return
	}
	req := &c.upgrade.Request
	c.upgrade = nil
	c.h2 = http2.NewConn(nil)
	c.h2.StartUpgraded(http2.RequestMeta{
		Method: req.Method, Scheme: "http", Authority: req.Host, Path: req.Target,
		UserAgent: req.UserAgent, TraceParent: req.TraceParent, TraceState: req.TraceState,
		Start: req.Start, End: req.End, BodySize: req.BodySize,
	})
	t.stats.http2Conns.Add(1)
}

// flushUpgrade exports a held 101 exchange as the span it is.
func (t *Tracer) flushUpgrade(c *conn) {
	if c.upgrade == nil {
		return
	}
	x := c.upgrade
	c.upgrade = nil
	t.deliver(c, t.httpSpan(c, c.proc, x), t.goProbes.covers(c.key.tgid), x.Request.Method, x.Request.Target, 0)
}

// feedHTTP2 hands a chunk of an HTTP/2 connection to its parser and turns
// the streams that ended into spans.
func (t *Tracer) feedHTTP2(c *conn, dir http2.Direction, e *socketEvent, data []byte) {
	xs, err := c.h2.Feed(dir, http2.Chunk{Data: data, Size: int(e.Size), Start: e.Ts, End: e.Ts}, t.h2buf[:0])
	if err != nil {
		t.parseError(c, err)
	}
	t.emitHTTP2(c, xs)
}

func (t *Tracer) emitHTTP2(c *conn, xs []http2.Exchange) {
	if len(xs) == 0 {
		return
	}
	c.inError = false
	c.exchanges += uint64(len(xs))
	covered := t.goProbes.covers(c.key.tgid)
	for i := range xs {
		x := &xs[i]
		if x.Request.HeadersUnknown || x.Response.HeadersUnknown {
			t.stats.http2HeadersUnknown.Add(1)
		}
		t.deliver(c, t.http2Span(c, c.proc, x), covered, x.Request.Method, x.Request.Path, linkStream|uint64(x.StreamID))
	}
	t.h2buf = xs[:0]
}

// http2Span turns one HTTP/2 stream into a span: an RPC span for gRPC
// (content-type application/grpc), an HTTP span otherwise. A side whose
// header block could not be decoded (sonde joined the connection in the
// middle, or a capture gap broke HPACK) leaves its attributes out rather
// than guess them, and says so in sonde.http2.headers_unknown.
func (t *Tracer) http2Span(c *conn, p *process, x *http2.Exchange) *export.Span {
	req, resp := &x.Request, &x.Response
	s := &export.Span{Start: t.clock.wall(req.Start), Resource: p.resource}
	end := resp.End
	if x.Incomplete || end < req.Start {
		end = max(req.End, req.Start)
	}
	s.End = t.clock.wall(end)
	if parent := remoteParent(req.TraceParent, req.TraceState); parent.IsValid() {
		s.TraceID, s.Parent = parent.TraceID(), parent
	} else {
		s.TraceID = t.ids.traceID()
	}
	s.SpanID = t.ids.spanID()
	s.Kind = trace.SpanKindClient
	if c.role == roleServer {
		s.Kind = trace.SpanKindServer
	}

	attrs := make([]attribute.KeyValue, 0, 16)
	attrs = append(attrs,
		semconv.NetworkPeerAddress(c.remoteAddr),
		semconv.NetworkPeerPort(int(c.remote.Port())),
		semconv.NetworkProtocolVersion("2"),
	)
	host, port := hostPort(req.Authority)
	if host == "" {
		if s.Kind == trace.SpanKindServer {
			host, port = c.localAddr, int(c.local.Port())
		} else {
			host, port = c.remoteAddr, int(c.remote.Port())
		}
	}
	if port == 0 {
		port = int(c.local.Port())
		if s.Kind == trace.SpanKindClient {
			port = int(c.remote.Port())
		}
	}
	attrs = append(attrs, semconv.ServerAddress(host), semconv.ServerPort(port))
	if s.Kind == trace.SpanKindServer {
		attrs = append(attrs, semconv.ClientAddress(c.remoteAddr))
	}
	if req.UserAgent != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(req.UserAgent))
	}
	if req.HeadersUnknown || resp.HeadersUnknown {
		attrs = append(attrs, attribute.Bool(headersUnknownKey, true))
	}
	if x.IsGRPC() {
		attrs = t.grpcAttrs(s, x, attrs)
	} else {
		attrs = t.http2Attrs(c, s, x, attrs)
	}
	s.Attributes = attrs
	return s
}

func (t *Tracer) http2Attrs(c *conn, s *export.Span, x *http2.Exchange, attrs []attribute.KeyValue) []attribute.KeyValue {
	req, resp := &x.Request, &x.Response
	scheme := req.Scheme
	if scheme == "" {
		scheme = "http"
		if c.tls {
			scheme = "https"
		}
	}
	switch {
	case req.HeadersUnknown:
		s.Name = "HTTP"
	case knownMethods[req.Method]:
		s.Name = req.Method
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(req.Method))
	default:
		s.Name = "HTTP"
		attrs = append(attrs, semconv.HTTPRequestMethodOther, semconv.HTTPRequestMethodOriginal(req.Method))
	}
	attrs = append(attrs, semconv.URLScheme(scheme))
	if !req.HeadersUnknown {
		path, query := splitTarget(req.Path)
		if s.Kind == trace.SpanKindServer {
			attrs = append(attrs, semconv.URLPath(path))
			if query != "" {
				attrs = append(attrs, semconv.URLQuery(redactQuery(query)))
			}
		} else {
			host, port := hostPort(req.Authority)
			if host == "" {
				host, port = c.remoteAddr, int(c.remote.Port())
			}
			attrs = append(attrs, semconv.URLFull(fullURL(req.Path, scheme, host, port, path, query)))
		}
	}
	switch {
	case x.Incomplete:
		attrs = append(attrs, semconv.ErrorTypeKey.String("incomplete_response"))
		s.Status = codes.Error
		s.StatusDescription = "stream ended before a complete response"
		if x.ResetCode != 0 {
			s.StatusDescription = "stream reset with error code " + strconv.FormatUint(uint64(x.ResetCode), 10)
		}
	case resp.StatusCode > 0:
		code := resp.StatusCode
		attrs = append(attrs, semconv.HTTPResponseStatusCode(code))
		if code >= 500 || (code >= 400 && s.Kind == trace.SpanKindClient) {
			s.Status = codes.Error
			attrs = append(attrs, semconv.ErrorTypeKey.String(strconv.Itoa(code)))
		}
	}
	return attrs
}

// grpcAttrs names a gRPC call package.Service/Method and gives it the RPC
// semantic conventions: rpc.system.name, rpc.method and, from the
// trailers, rpc.response.status_code. Any code but OK fails the span.
func (t *Tracer) grpcAttrs(s *export.Span, x *http2.Exchange, attrs []attribute.KeyValue) []attribute.KeyValue {
	method := strings.TrimPrefix(x.Request.Path, "/")
	if i := strings.IndexByte(method, '?'); i >= 0 {
		method = method[:i]
	}
	s.Name = method
	if method == "" {
		s.Name = "grpc"
	}
	attrs = append(attrs, semconv.RPCSystemNameGRPC)
	if method != "" {
		attrs = append(attrs, semconv.RPCMethod(method))
	}
	code := x.Response.GRPCStatus
	switch {
	case x.Incomplete:
		s.Status = codes.Error
		s.StatusDescription = "stream ended before the call's status"
		attrs = append(attrs, semconv.ErrorTypeKey.String("incomplete_response"))
	case code >= 0:
		name := grpcCodeName(code)
		attrs = append(attrs, semconv.RPCResponseStatusCode(name))
		if code != 0 {
			s.Status = codes.Error
			s.StatusDescription = x.Response.GRPCMessage
			attrs = append(attrs, semconv.ErrorTypeKey.String(name))
		}
	case x.Response.StatusCode >= 400:
		// No grpc-status: the HTTP status says what went wrong.
		s.Status = codes.Error
		attrs = append(attrs, semconv.HTTPResponseStatusCode(x.Response.StatusCode),
			semconv.ErrorTypeKey.String(strconv.Itoa(x.Response.StatusCode)))
	}
	return attrs
}

// headersUnknownKey marks a span whose HTTP/2 headers could not be decoded.
const headersUnknownKey = "sonde.http2.headers_unknown"

// grpcCodes are the gRPC status code names, by number.
var grpcCodes = [...]string{
	"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
	"NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED",
	"FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE", "UNIMPLEMENTED",
	"INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
}

func grpcCodeName(code int) string {
	if code >= 0 && code < len(grpcCodes) {
		return grpcCodes[code]
	}
	return strconv.Itoa(code)
}

// http2Reason names an HTTP/2 parse error for the parse error counts,
// apart from the HTTP/1 reasons.
func http2Reason(r http2.Reason) string { return "http2_" + r.String() }

// ParseErrorReasons lists every reason Stats.ParseErrors counts by: the two
// the tracer adds (see parseError), the HTTP/1 parser's and the HTTP/2
// parser's, each numbered from 1 without gaps.
func ParseErrorReasons() []string {
	reasons := []string{"not_http", "other"}
	for r := http1.Reason(1); r.String() != "unknown"; r++ {
		reasons = append(reasons, r.String())
	}
	for r := http2.Reason(1); r.String() != "unknown"; r++ {
		reasons = append(reasons, http2Reason(r))
	}
	return reasons
}
