package tracer

import (
	"context"
	"net"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/protocols/http1"
	"github.com/sondehq/sonde/tracer/export"
)

// knownMethods are the methods semconv lets through as they are; any other
// becomes _OTHER so that a hostile client cannot blow up cardinality.
var knownMethods = map[string]bool{
	"GET": true, "HEAD": true, "POST": true, "PUT": true, "DELETE": true,
	"CONNECT": true, "OPTIONS": true, "TRACE": true, "PATCH": true, "QUERY": true,
}

// redactedQueryKeys are query parameters whose values are credentials.
// The first four are the ones the HTTP semantic conventions name.
var redactedQueryKeys = map[string]bool{
	"awsaccesskeyid": true, "signature": true, "sig": true, "x-goog-signature": true,
	"access_token": true, "token": true, "api_key": true, "apikey": true,
	"password": true, "passwd": true, "secret": true, "client_secret": true,
}

const redacted = "REDACTED"

var traceContext = propagation.TraceContext{}

// headerCarrier exposes the two W3C headers the parser kept.
type headerCarrier struct{ traceparent, tracestate string }

func (h headerCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		return h.traceparent
	case "tracestate":
		return h.tracestate
	}
	return ""
}
func (headerCarrier) Set(string, string) {}
func (headerCarrier) Keys() []string     { return []string{"traceparent", "tracestate"} }

// remoteParent returns the span context of an incoming W3C traceparent, or an
// invalid one when there is none or it does not parse.
func remoteParent(traceparent, tracestate string) trace.SpanContext {
	if traceparent == "" {
		return trace.SpanContext{}
	}
	ctx := traceContext.Extract(context.Background(), headerCarrier{traceparent, tracestate})
	return trace.SpanContextFromContext(ctx)
}

// httpSpan turns one HTTP/1 exchange into a span. Stamps in the exchange are
// kernel CLOCK_MONOTONIC nanoseconds.
func (t *Tracer) httpSpan(c *conn, p *process, x *http1.Exchange) *export.Span {
	req, resp := &x.Request, &x.Response
	s := &export.Span{
		Start:    t.clock.wall(req.Start),
		Resource: p.resource,
	}
	end := resp.End
	if x.Incomplete || end < req.Start {
		end = req.End
	}
	s.End = t.clock.wall(end)

	parent := remoteParent(req.TraceParent, req.TraceState)
	if parent.IsValid() {
		s.TraceID = parent.TraceID()
		s.Parent = parent
	} else {
		s.TraceID = t.ids.traceID()
	}
	s.SpanID = t.ids.spanID()

	method := req.Method
	attrs := make([]attribute.KeyValue, 0, 16)
	if knownMethods[method] {
		attrs = append(attrs, semconv.HTTPRequestMethodKey.String(method))
		s.Name = method
	} else {
		attrs = append(attrs, semconv.HTTPRequestMethodOther, semconv.HTTPRequestMethodOriginal(method))
		s.Name = "HTTP"
	}
	path, query := splitTarget(req.Target)
	scheme := "http"
	if c.tls {
		scheme = "https"
	}
	// network.protocol.name and network.transport are left out: semconv
	// asks for them only when they are not "http" and "tcp". Every
	// attribute costs export CPU per span.
	attrs = append(attrs,
		semconv.URLScheme(scheme),
		semconv.NetworkPeerAddress(c.remoteAddr),
		semconv.NetworkPeerPort(int(c.remote.Port())),
	)
	if req.Proto != "" { // empty when the capture cut the start line
		attrs = append(attrs, semconv.NetworkProtocolVersion(req.Proto))
	}
	if req.UserAgent != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(req.UserAgent))
	}
	host, port := hostPort(req.Host)
	switch c.role {
	case roleServer:
		s.Kind = trace.SpanKindServer
		if host == "" {
			host = c.localAddr
		}
		if port == 0 {
			port = int(c.local.Port())
		}
		attrs = append(attrs,
			semconv.URLPath(path),
			semconv.ServerAddress(host),
			semconv.ServerPort(port),
			semconv.ClientAddress(c.remoteAddr),
		)
		if query != "" {
			attrs = append(attrs, semconv.URLQuery(redactQuery(query)))
		}
	default:
		s.Kind = trace.SpanKindClient
		if host == "" {
			host = c.remoteAddr
		}
		if port == 0 {
			port = int(c.remote.Port())
		}
		attrs = append(attrs,
			semconv.URLFull(fullURL(req.Target, scheme, host, port, path, query)),
			semconv.ServerAddress(host),
			semconv.ServerPort(port),
		)
	}
	if req.HeadTruncated || resp.HeadTruncated {
		attrs = append(attrs, attribute.Bool("sonde.capture.truncated", true))
	}

	switch {
	case x.Incomplete:
		attrs = append(attrs, semconv.ErrorTypeKey.String("incomplete_response"))
		s.Status = codes.Error
		s.StatusDescription = "connection ended before a complete response"
	default:
		code := resp.StatusCode
		attrs = append(attrs, semconv.HTTPResponseStatusCode(code))
		// Server spans fail on 5xx only: a 4xx is the client's error.
		if code >= 500 || (code >= 400 && s.Kind == trace.SpanKindClient) {
			s.Status = codes.Error
			attrs = append(attrs, semconv.ErrorTypeKey.String(strconv.Itoa(code)))
		}
	}
	// Where the exchange sits in the TCP streams, which both ends number
	// alike: what a backend needs to pair the two ends across hosts
	// (docs/cross-host.md).
	if req.Pos != 0 {
		attrs = append(attrs, attribute.Int64(attrRequestSeq, int64(uint32(req.Pos))))
	}
	if resp.Pos != 0 && !x.Incomplete {
		attrs = append(attrs, attribute.Int64(attrResponseSeq, int64(uint32(resp.Pos))))
	}
	s.Attributes = attrs
	return s
}

// The TCP sequence numbers of an exchange's first request byte and first
// response byte, as seen on the end that exported the span.
const (
	attrRequestSeq  = "sonde.tcp.request_seq"
	attrResponseSeq = "sonde.tcp.response_seq"
)

// splitTarget separates the path and the query of a request-target in
// origin form, absolute form or asterisk form. A fragment, which clients do
// not send but a hostile one may, is dropped.
func splitTarget(target string) (path, query string) {
	target, _, _ = strings.Cut(target, "#")
	if _, rest, ok := cutScheme(target); ok {
		// The authority ends at the first "/" or "?".
		if i := strings.IndexAny(rest, "/?"); i >= 0 {
			target = rest[i:]
		} else {
			target = ""
		}
		if !strings.HasPrefix(target, "/") {
			target = "/" + target
		}
	}
	path, query, _ = strings.Cut(target, "?")
	return path, query
}

// cutScheme splits an absolute-form target ("http://host/p") into its
// scheme and the rest. An origin-form target starts with "/", so a URL in
// its query ("/login?next=http://x/") is not mistaken for one.
func cutScheme(target string) (scheme, rest string, ok bool) {
	if strings.HasPrefix(target, "/") {
		return "", "", false
	}
	scheme, rest, ok = strings.Cut(target, "://")
	if !ok || !isScheme(scheme) {
		return "", "", false
	}
	return scheme, rest, true
}

// isScheme reports whether s is an RFC 3986 scheme.
func isScheme(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}

// hostPort splits a Host header value. An absent or invalid port is 0, so
// that the caller falls back to the socket's port.
func hostPort(h string) (string, int) {
	if h == "" {
		return "", 0
	}
	host, p, err := net.SplitHostPort(h)
	if err != nil {
		return strings.Trim(h, "[]"), 0
	}
	port, err := strconv.ParseUint(p, 10, 16)
	if err != nil {
		return host, 0
	}
	return host, int(port)
}

// fullURL rebuilds the URL a client requested. The path is kept as it was
// sent (already percent-encoded), userinfo is never included and
// credential-like query values are redacted.
// defaultPort is the port a URL of each scheme leaves out.
var defaultPort = map[string]int{"http": 80, "https": 443}

func fullURL(target, scheme, host string, port int, path, query string) string {
	authority := ""
	if sch, rest, ok := cutScheme(target); ok {
		scheme = strings.ToLower(sch)
		authority = rest
		if i := strings.IndexAny(rest, "/?#"); i >= 0 {
			authority = rest[:i]
		}
		if i := strings.LastIndexByte(authority, '@'); i >= 0 {
			authority = authority[i+1:]
		}
	}
	if authority == "" {
		authority = host
		if strings.Contains(host, ":") {
			authority = "[" + host + "]"
		}
		if port != 0 && port != defaultPort[scheme] {
			authority = net.JoinHostPort(host, strconv.Itoa(port))
		}
	}
	u := scheme + "://" + authority + path
	if query != "" {
		u += "?" + redactQuery(query)
	}
	return u
}

// redactQuery replaces the values of credential-like parameters, keeping the
// query's shape otherwise byte for byte.
func redactQuery(q string) string {
	parts := strings.Split(q, "&")
	changed := false
	for i, kv := range parts {
		k, _, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		key := k
		if dec, err := url.QueryUnescape(k); err == nil {
			key = dec
		}
		if redactedQueryKeys[strings.ToLower(key)] {
			parts[i] = k + "=" + redacted
			changed = true
		}
	}
	if !changed {
		return q
	}
	return strings.Join(parts, "&")
}
