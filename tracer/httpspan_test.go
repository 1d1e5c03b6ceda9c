package tracer

import (
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/sdk/resource"
	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/protocols/http1"
	"github.com/sondehq/sonde/tracer/export"
)

func TestSplitTarget(t *testing.T) {
	for _, tc := range []struct {
		target, path, query string
	}{
		// origin form
		{"/", "/", ""},
		{"/users/42", "/users/42", ""},
		{"/search?q=go&page=2", "/search", "q=go&page=2"},
		{"/a%20b?x=%2F", "/a%20b", "x=%2F"},
		// empty query: the "?" is there, nothing after it
		{"/empty?", "/empty", ""},
		// a second "?" belongs to the query
		{"/q?a=1?b=2", "/q", "a=1?b=2"},
		// fragments are never part of url.path or url.query
		{"/p?a=1#frag", "/p", "a=1"},
		{"/p?#frag", "/p", ""},
		{"/p#frag", "/p", ""},
		{"/p#frag?notquery=1", "/p", ""},
		// absolute form (to a proxy)
		{"http://example.com/p?x=1", "/p", "x=1"},
		{"http://example.com", "/", ""},
		{"https://example.com:8443/a/b", "/a/b", ""},
		{"http://[::1]:8080/v6?z=9", "/v6", "z=9"},
		{"http://example.com?x=1", "/", "x=1"},
		{"http://example.com?next=/elsewhere", "/", "next=/elsewhere"},
		// origin form whose query carries a URL: still origin form
		{"/login?next=http://example.com/home", "/login", "next=http://example.com/home"},
		{"/cb?redirect_uri=https://a.example/x&state=1", "/cb", "redirect_uri=https://a.example/x&state=1"},
		// asterisk form (OPTIONS *)
		{"*", "*", ""},
	} {
		path, query := splitTarget(tc.target)
		if path != tc.path || query != tc.query {
			t.Errorf("splitTarget(%q) = %q, %q; want %q, %q", tc.target, path, query, tc.path, tc.query)
		}
	}
}

func TestHostPort(t *testing.T) {
	for _, tc := range []struct {
		in   string
		host string
		port int
	}{
		{"", "", 0},
		{"example.com", "example.com", 0},
		{"example.com:8080", "example.com", 8080},
		{"10.0.0.1:80", "10.0.0.1", 80},
		{"[::1]:8443", "::1", 8443},
		{"[2001:db8::1]", "2001:db8::1", 0},
		// bad ports are absent ports
		{"example.com:http", "example.com", 0},
		{"example.com:", "example.com", 0},
		{"example.com:99999", "example.com", 0},
		{"example.com:-1", "example.com", 0},
		{"example.com:0", "example.com", 0},
	} {
		host, port := hostPort(tc.in)
		if host != tc.host || port != tc.port {
			t.Errorf("hostPort(%q) = %q, %d; want %q, %d", tc.in, host, port, tc.host, tc.port)
		}
	}
}

func TestFullURL(t *testing.T) {
	for _, tc := range []struct {
		name   string
		target string
		host   string
		port   int
		want   string
	}{
		{"default port omitted", "/a/b", "example.com", 80, "http://example.com/a/b"},
		{"no port", "/a", "example.com", 0, "http://example.com/a"},
		{"other port kept", "/a", "example.com", 8080, "http://example.com:8080/a"},
		{"ipv4", "/", "10.1.2.3", 9000, "http://10.1.2.3:9000/"},
		{"ipv6 with port", "/x", "2001:db8::1", 8080, "http://[2001:db8::1]:8080/x"},
		{"ipv6 default port", "/x", "::1", 80, "http://[::1]/x"},
		{"ipv6 no port", "/x", "::1", 0, "http://[::1]/x"},
		{"query kept", "/s?q=go&n=1", "h", 80, "http://h/s?q=go&n=1"},
		{"query redacted", "/s?q=go&token=s3cr3t&sig=abc", "h", 80, "http://h/s?q=go&token=REDACTED&sig=REDACTED"},
		{"fragment dropped", "/s?q=1#top", "h", 80, "http://h/s?q=1"},
		{"absolute form keeps scheme and host", "https://api.example.com:8443/v1?x=1", "ignored", 80, "https://api.example.com:8443/v1?x=1"},
		{"absolute form, host only", "http://api.example.com", "ignored", 80, "http://api.example.com/"},
		{"absolute form, query redacted", "http://api.example.com/v1?AWSAccessKeyId=AKIA&Signature=zzz", "ignored", 80,
			"http://api.example.com/v1?AWSAccessKeyId=REDACTED&Signature=REDACTED"},
		// The parser removes userinfo, but fullURL must not restore or keep any.
		{"userinfo never present", "http://user:pass@api.example.com/p", "ignored", 80, "http://api.example.com/p"},
		// Path bytes are exported as sent: no double percent-encoding.
		{"percent-encoded path kept", "/files/a%2Fb%20c", "h", 80, "http://h/files/a%2Fb%20c"},
		// A URL inside the query does not make the target absolute.
		{"url in query", "/login?next=http://evil.example/x", "h", 80, "http://h/login?next=http://evil.example/x"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path, query := splitTarget(tc.target)
			got := fullURL(tc.target, "http", tc.host, tc.port, path, query)
			if got != tc.want {
				t.Errorf("fullURL(%q, %q, %d) = %q, want %q", tc.target, tc.host, tc.port, got, tc.want)
			}
			if strings.Contains(got, "pass@") || strings.Contains(got, "user:") {
				t.Errorf("fullURL(%q) = %q carries userinfo", tc.target, got)
			}
		})
	}
}

func TestRedactQuery(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"", ""},
		{"q=go", "q=go"},
		// the four keys the HTTP semantic conventions name
		{"AWSAccessKeyId=AKIA123&Signature=abc%2Bdef&Expires=1", "AWSAccessKeyId=REDACTED&Signature=REDACTED&Expires=1"},
		{"sig=s1&sv=2020", "sig=REDACTED&sv=2020"},
		{"X-Goog-Signature=deadbeef&X-Goog-Date=now", "X-Goog-Signature=REDACTED&X-Goog-Date=now"},
		// case-insensitive
		{"TOKEN=a&Api_Key=b&APIKEY=c", "TOKEN=REDACTED&Api_Key=REDACTED&APIKEY=REDACTED"},
		{"x-goog-signature=z", "x-goog-signature=REDACTED"},
		// percent-encoded keys are decoded for the match, kept as sent
		{"tok%65n=abc&x=1", "tok%65n=REDACTED&x=1"},
		{"%41WSAccessKeyId=abc", "%41WSAccessKeyId=REDACTED"},
		{"client%5Fsecret=abc", "client%5Fsecret=REDACTED"},
		// every value of a repeated key
		{"token=a&token=b", "token=REDACTED&token=REDACTED"},
		// a value containing "=" is replaced whole
		{"token=a=b==&n=1", "token=REDACTED&n=1"},
		// shape kept byte for byte: empty parts, keys without values,
		// bad escapes, "+" and odd characters
		{"a=1&&b&token=x&=y&c=%zz&d=+%20+", "a=1&&b&token=REDACTED&=y&c=%zz&d=+%20+"},
		{"token", "token"},
		{"&", "&"},
		{"%zz=1&password=hunter2", "%zz=1&password=REDACTED"},
		{"key=token&value=secret", "key=token&value=secret"},
		{"access_token=t&passwd=p&secret=s&client_secret=c", "access_token=REDACTED&passwd=REDACTED&secret=REDACTED&client_secret=REDACTED"},
	} {
		got := redactQuery(tc.in)
		if got != tc.want {
			t.Errorf("redactQuery(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if again := redactQuery(got); again != got {
			t.Errorf("redactQuery not idempotent on %q: %q then %q", tc.in, got, again)
		}
	}
}

// Every key of redactedQueryKeys is redacted, whatever its case.
func TestRedactQueryAllKeys(t *testing.T) {
	for _, k := range []string{
		"AWSAccessKeyId", "Signature", "sig", "X-Goog-Signature",
		"access_token", "token", "api_key", "apikey", "password", "passwd", "secret", "client_secret",
	} {
		if !redactedQueryKeys[strings.ToLower(k)] {
			t.Errorf("%s is not in redactedQueryKeys", k)
		}
	}
	for k := range redactedQueryKeys {
		for _, key := range []string{k, strings.ToUpper(k)} {
			in := "before=1&" + key + "=value-of-" + k + "&after=2"
			want := "before=1&" + key + "=REDACTED&after=2"
			if got := redactQuery(in); got != want {
				t.Errorf("redactQuery(%q) = %q, want %q", in, got, want)
			}
		}
	}
}

func TestRemoteParent(t *testing.T) {
	const (
		traceHex = "4bf92f3577b34da6a3ce929d0e0e4736"
		spanHex  = "00f067aa0ba902b7"
	)
	wantTrace, _ := trace.TraceIDFromHex(traceHex)
	wantSpan, _ := trace.SpanIDFromHex(spanHex)

	for _, tc := range []struct {
		name, tp, ts string
		sampled      bool
	}{
		{"sampled", "00-" + traceHex + "-" + spanHex + "-01", "", true},
		{"not sampled", "00-" + traceHex + "-" + spanHex + "-00", "", false},
		{"with tracestate", "00-" + traceHex + "-" + spanHex + "-01", "vendor=abc,other=x", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := remoteParent(tc.tp, tc.ts)
			if !sc.IsValid() || !sc.IsRemote() {
				t.Fatalf("remoteParent(%q) = %+v, want a valid remote span context", tc.tp, sc)
			}
			if sc.TraceID() != wantTrace || sc.SpanID() != wantSpan {
				t.Errorf("ids = %s/%s, want %s/%s", sc.TraceID(), sc.SpanID(), wantTrace, wantSpan)
			}
			if sc.IsSampled() != tc.sampled {
				t.Errorf("sampled = %v, want %v", sc.IsSampled(), tc.sampled)
			}
			if got := sc.TraceState().String(); got != tc.ts {
				t.Errorf("tracestate = %q, want %q", got, tc.ts)
			}
		})
	}

	for _, tp := range []string{
		"",
		"garbage",
		"ff-" + traceHex + "-" + spanHex + "-01", // version ff is forbidden
		"0-" + traceHex + "-" + spanHex + "-01",  // version too short
		"00-00000000000000000000000000000000-" + spanHex + "-01",  // all-zero trace id
		"00-" + traceHex + "-0000000000000000-01",                 // all-zero span id
		"00-4bf92f3577b34da6a3ce929d0e0e473g-" + spanHex + "-01",  // bad hex
		"00-" + traceHex + "-00f067aa0ba902bz-01",                 // bad hex
		"00-" + traceHex[:30] + "-" + spanHex + "-01",             // short trace id
		"00-" + traceHex + "-" + spanHex,                          // no flags
		"00-" + traceHex + "-" + spanHex + "-01-extra",            // version 00 has exactly four fields
		"00_" + traceHex + "_" + spanHex + "_01",                  // wrong separators
		"00-" + strings.ToUpper(traceHex) + "-" + spanHex + "-01", // upper-case hex is invalid
		"00-" + traceHex + "-" + spanHex + "-zz",                  // bad flags
		" 00-" + traceHex + "-" + spanHex + "-01",                 // leading junk
	} {
		if sc := remoteParent(tp, ""); sc.IsValid() {
			t.Errorf("remoteParent(%q) = %s/%s, want invalid", tp, sc.TraceID(), sc.SpanID())
		}
	}
}

// testTracer is a Tracer with just what httpSpan uses: no BPF involved.
func testTracer() *Tracer {
	return &Tracer{clock: clock{offset: 1_700_000_000_000_000_000}, ids: newIDSource()}
}

// testConn makes a tracked connection the way the event loop does.
func testConn(t *testing.T, r role, local, remote string) *conn {
	t.Helper()
	c := &conn{
		key:    connKey{tgid: 4242, fd: 7},
		sock:   0xffff0000,
		role:   r,
		local:  netip.MustParseAddrPort(local),
		remote: netip.MustParseAddrPort(remote),
	}
	if ev := newConnTable(8, nil).add(c); ev != nil {
		t.Fatalf("add evicted %v from an empty table", ev.key)
	}
	return c
}

func testProcess() *process {
	return &process{pid: 4242, service: "shop", resource: resource.NewSchemaless(attribute.String("service.name", "shop"))}
}

func spanAttrs(t *testing.T, s *export.Span) map[string]attribute.Value {
	t.Helper()
	m := make(map[string]attribute.Value, len(s.Attributes))
	for _, kv := range s.Attributes {
		if _, dup := m[string(kv.Key)]; dup {
			t.Errorf("attribute %s set twice", kv.Key)
		}
		if !kv.Valid() {
			t.Errorf("invalid attribute %v", kv)
		}
		m[string(kv.Key)] = kv.Value
	}
	return m
}

// checkAttrs requires every attribute of want with its exact value and
// allows those of optional (semconv opt-in ones) only with the given value.
// Any other attribute is an error: nothing else may reach an exporter.
func checkAttrs(t *testing.T, s *export.Span, want, optional map[string]any) {
	t.Helper()
	got := spanAttrs(t, s)
	for k, w := range want {
		v, ok := got[k]
		if !ok {
			t.Errorf("attribute %s missing", k)
			continue
		}
		if g := v.AsInterface(); !reflect.DeepEqual(g, w) {
			t.Errorf("attribute %s = %#v (%s), want %#v", k, g, v.Type(), w)
		}
	}
	for k, v := range got {
		if _, ok := want[k]; ok {
			continue
		}
		w, ok := optional[k]
		if !ok {
			t.Errorf("unexpected attribute %s = %s", k, v.Emit())
		} else if g := v.AsInterface(); !reflect.DeepEqual(g, w) {
			t.Errorf("optional attribute %s = %#v (%s), want %#v", k, g, v.Type(), w)
		}
	}
}

func TestHTTPSpanServer(t *testing.T) {
	tr := testTracer()
	c := testConn(t, roleServer, "10.0.0.5:8080", "10.0.0.9:51234")
	p := testProcess()
	x := &http1.Exchange{
		Request: http1.RequestMeta{
			Method: "GET", Target: "/api/items?id=7&token=s3cr3t", Proto: "1.1",
			Host: "shop.example.com:8443", UserAgent: "curl/8.5.0",
			Start: 1_000, End: 2_000,
		},
		Response: http1.ResponseMeta{Proto: "1.1", StatusCode: 200, Start: 5_000, End: 9_000},
	}
	s := tr.httpSpan(c, p, x)

	if s.Name != "GET" {
		t.Errorf("name = %q, want GET", s.Name)
	}
	if s.Kind != trace.SpanKindServer {
		t.Errorf("kind = %v, want server", s.Kind)
	}
	if s.Status != codes.Unset || s.StatusDescription != "" {
		t.Errorf("status = %v %q, want unset", s.Status, s.StatusDescription)
	}
	if s.Resource != p.resource {
		t.Errorf("resource is not the process's")
	}
	wantStart := time.Unix(0, 1_000+tr.clock.offset)
	wantEnd := time.Unix(0, 9_000+tr.clock.offset)
	if !s.Start.Equal(wantStart) || !s.End.Equal(wantEnd) {
		t.Errorf("times = %v..%v, want %v..%v", s.Start, s.End, wantStart, wantEnd)
	}
	if !s.TraceID.IsValid() || !s.SpanID.IsValid() {
		t.Errorf("ids %s/%s not valid", s.TraceID, s.SpanID)
	}
	if s.Parent.IsValid() {
		t.Errorf("parent %v without a traceparent", s.Parent)
	}
	checkAttrs(t, s, map[string]any{
		"http.request.method":       "GET",
		"url.scheme":                "http",
		"url.path":                  "/api/items",
		"url.query":                 "id=7&token=REDACTED",
		"network.protocol.version":  "1.1",
		"network.peer.address":      "10.0.0.9",
		"network.peer.port":         int64(51234),
		"server.address":            "shop.example.com",
		"server.port":               int64(8443),
		"client.address":            "10.0.0.9",
		"user_agent.original":       "curl/8.5.0",
		"http.response.status_code": int64(200),
	}, map[string]any{
		"network.protocol.name": "http",
		"network.transport":     "tcp",
		"client.port":           int64(51234),
	})
}

func TestHTTPSpanClient(t *testing.T) {
	tr := testTracer()
	c := testConn(t, roleClient, "192.168.1.2:40000", "93.184.216.34:80")
	x := &http1.Exchange{
		Request: http1.RequestMeta{
			Method: "POST", Target: "/v1/orders?api_key=k3y&n=2", Proto: "1.1",
			Host: "api.example.com", Start: 100, End: 200,
		},
		Response: http1.ResponseMeta{Proto: "1.1", StatusCode: 201, Start: 300, End: 400},
	}
	s := tr.httpSpan(c, testProcess(), x)
	if s.Name != "POST" || s.Kind != trace.SpanKindClient || s.Status != codes.Unset {
		t.Errorf("name %q kind %v status %v, want POST client unset", s.Name, s.Kind, s.Status)
	}
	checkAttrs(t, s, map[string]any{
		"http.request.method":       "POST",
		"url.scheme":                "http",
		"url.full":                  "http://api.example.com/v1/orders?api_key=REDACTED&n=2",
		"network.protocol.version":  "1.1",
		"network.peer.address":      "93.184.216.34",
		"network.peer.port":         int64(80),
		"server.address":            "api.example.com",
		"server.port":               int64(80),
		"http.response.status_code": int64(201),
	}, map[string]any{
		"network.protocol.name": "http",
		"network.transport":     "tcp",
	})
}

// Without a Host header the addresses come from the socket, and IPv4-mapped
// addresses are shown as IPv4.
func TestHTTPSpanAddressesFromSocket(t *testing.T) {
	tr := testTracer()
	req := http1.RequestMeta{Method: "GET", Target: "/", Proto: "1.0", Start: 1, End: 2}
	resp := http1.ResponseMeta{Proto: "1.0", StatusCode: 204, Start: 3, End: 4}

	t.Run("server", func(t *testing.T) {
		// A dual-stack listener sees IPv4 peers as IPv4-mapped addresses.
		e := &socketEvent{Sport: 8080, Dport: 50000}
		e.Saddr = netip.MustParseAddr("::ffff:127.0.0.1").As16()
		e.Daddr = netip.MustParseAddr("::ffff:127.0.0.2").As16()
		c := testConn(t, roleServer, e.local().String(), e.remote().String())
		s := tr.httpSpan(c, testProcess(), &http1.Exchange{Request: req, Response: resp})
		a := spanAttrs(t, s)
		if got := a["server.address"].AsString(); got != "127.0.0.1" {
			t.Errorf("server.address = %q, want 127.0.0.1", got)
		}
		if got := a["server.port"].AsInt64(); got != 8080 {
			t.Errorf("server.port = %d, want 8080", got)
		}
		if got := a["client.address"].AsString(); got != "127.0.0.2" {
			t.Errorf("client.address = %q", got)
		}
		if got := a["network.protocol.version"].AsString(); got != "1.0" {
			t.Errorf("network.protocol.version = %q", got)
		}
		if _, ok := a["user_agent.original"]; ok {
			t.Errorf("user_agent.original set without a User-Agent")
		}
		if _, ok := a["url.query"]; ok {
			t.Errorf("url.query set without a query")
		}
	})
	t.Run("client v6", func(t *testing.T) {
		c := testConn(t, roleClient, "[2001:db8::2]:41000", "[2001:db8::1]:8080")
		s := tr.httpSpan(c, testProcess(), &http1.Exchange{Request: req, Response: resp})
		a := spanAttrs(t, s)
		if got := a["url.full"].AsString(); got != "http://[2001:db8::1]:8080/" {
			t.Errorf("url.full = %q", got)
		}
		if got := a["server.address"].AsString(); got != "2001:db8::1" {
			t.Errorf("server.address = %q", got)
		}
		if got := a["server.port"].AsInt64(); got != 8080 {
			t.Errorf("server.port = %d", got)
		}
		if got := a["network.peer.address"].AsString(); got != "2001:db8::1" {
			t.Errorf("network.peer.address = %q", got)
		}
	})
	t.Run("client host v6 literal", func(t *testing.T) {
		c := testConn(t, roleClient, "[::1]:41000", "[::1]:80")
		r := req
		r.Host = "[::1]"
		s := tr.httpSpan(c, testProcess(), &http1.Exchange{Request: r, Response: resp})
		a := spanAttrs(t, s)
		if got := a["url.full"].AsString(); got != "http://[::1]/" {
			t.Errorf("url.full = %q", got)
		}
		if got := a["server.address"].AsString(); got != "::1" {
			t.Errorf("server.address = %q", got)
		}
	})
	t.Run("client absolute form", func(t *testing.T) {
		c := testConn(t, roleClient, "10.0.0.1:41000", "10.0.0.2:3128")
		r := req
		r.Target = "http://backend.internal:9000/x?y=1"
		r.Host = "backend.internal:9000"
		s := tr.httpSpan(c, testProcess(), &http1.Exchange{Request: r, Response: resp})
		a := spanAttrs(t, s)
		if got := a["url.full"].AsString(); got != "http://backend.internal:9000/x?y=1" {
			t.Errorf("url.full = %q", got)
		}
		if got := a["server.address"].AsString(); got != "backend.internal" {
			t.Errorf("server.address = %q", got)
		}
		if got := a["network.peer.port"].AsInt64(); got != 3128 {
			t.Errorf("network.peer.port = %d", got)
		}
	})
}

func TestHTTPSpanMethods(t *testing.T) {
	tr := testTracer()
	c := testConn(t, roleServer, "127.0.0.1:80", "127.0.0.1:9999")
	for _, m := range []string{"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"} {
		x := &http1.Exchange{
			Request:  http1.RequestMeta{Method: m, Target: "/", Proto: "1.1"},
			Response: http1.ResponseMeta{StatusCode: 200},
		}
		s := tr.httpSpan(c, testProcess(), x)
		a := spanAttrs(t, s)
		if s.Name != m || a["http.request.method"].AsString() != m {
			t.Errorf("%s: name %q, method %q", m, s.Name, a["http.request.method"].AsString())
		}
		if _, ok := a["http.request.method_original"]; ok {
			t.Errorf("%s: http.request.method_original set for a known method", m)
		}
	}
	for _, m := range []string{"PROPFIND", "get", "BREW", "X"} {
		x := &http1.Exchange{
			Request:  http1.RequestMeta{Method: m, Target: "/", Proto: "1.1"},
			Response: http1.ResponseMeta{StatusCode: 200},
		}
		s := tr.httpSpan(c, testProcess(), x)
		a := spanAttrs(t, s)
		if s.Name != "HTTP" {
			t.Errorf("%s: name %q, want HTTP", m, s.Name)
		}
		if got := a["http.request.method"].AsString(); got != "_OTHER" {
			t.Errorf("%s: http.request.method = %q, want _OTHER", m, got)
		}
		if got := a["http.request.method_original"].AsString(); got != m {
			t.Errorf("%s: http.request.method_original = %q", m, got)
		}
	}
}

func TestHTTPSpanStatus(t *testing.T) {
	tr := testTracer()
	for _, tc := range []struct {
		role      role
		code      int
		wantError bool
	}{
		{roleServer, 200, false},
		{roleServer, 302, false},
		{roleServer, 400, false},
		{roleServer, 404, false},
		{roleServer, 499, false},
		{roleServer, 500, true},
		{roleServer, 503, true},
		{roleClient, 200, false},
		{roleClient, 304, false},
		{roleClient, 400, true},
		{roleClient, 404, true},
		{roleClient, 500, true},
		{roleClient, 599, true},
	} {
		c := testConn(t, tc.role, "127.0.0.1:80", "127.0.0.1:9999")
		x := &http1.Exchange{
			Request:  http1.RequestMeta{Method: "GET", Target: "/", Proto: "1.1", Start: 10, End: 11},
			Response: http1.ResponseMeta{StatusCode: tc.code, Start: 12, End: 13},
		}
		s := tr.httpSpan(c, testProcess(), x)
		a := spanAttrs(t, s)
		if got := a["http.response.status_code"].AsInt64(); got != int64(tc.code) {
			t.Errorf("%v %d: status code attribute %d", tc.role, tc.code, got)
		}
		errType, hasErrType := a["error.type"]
		if tc.wantError {
			if s.Status != codes.Error {
				t.Errorf("%v %d: status %v, want Error", tc.role, tc.code, s.Status)
			}
			if !hasErrType || errType.AsString() != strconv.Itoa(tc.code) {
				t.Errorf("%v %d: error.type = %v, want %d", tc.role, tc.code, errType.Emit(), tc.code)
			}
		} else {
			if s.Status != codes.Unset {
				t.Errorf("%v %d: status %v, want Unset", tc.role, tc.code, s.Status)
			}
			if hasErrType {
				t.Errorf("%v %d: error.type = %s on success", tc.role, tc.code, errType.Emit())
			}
		}
	}
}

func TestHTTPSpanIncomplete(t *testing.T) {
	tr := testTracer()
	for _, r := range []role{roleServer, roleClient} {
		c := testConn(t, r, "127.0.0.1:80", "127.0.0.1:9999")
		x := &http1.Exchange{
			Request: http1.RequestMeta{Method: "PUT", Target: "/u", Proto: "1.1", Start: 50, End: 70},
			// Whatever was parsed of a response is ignored.
			Response:   http1.ResponseMeta{StatusCode: 0, Start: 0, End: 0},
			Incomplete: true,
		}
		s := tr.httpSpan(c, testProcess(), x)
		a := spanAttrs(t, s)
		if s.Status != codes.Error || s.StatusDescription == "" {
			t.Errorf("%v: status %v %q, want Error with a description", r, s.Status, s.StatusDescription)
		}
		if got := a["error.type"].AsString(); got != "incomplete_response" {
			t.Errorf("%v: error.type = %q", r, got)
		}
		if _, ok := a["http.response.status_code"]; ok {
			t.Errorf("%v: status code reported for an incomplete exchange", r)
		}
		if want := time.Unix(0, 70+tr.clock.offset); !s.End.Equal(want) {
			t.Errorf("%v: end %v, want the request's end %v", r, s.End, want)
		}
		if want := time.Unix(0, 50+tr.clock.offset); !s.Start.Equal(want) {
			t.Errorf("%v: start %v, want %v", r, s.Start, want)
		}
	}
}

// A response stamped before its request (stamps from different CPUs can
// disagree slightly) never makes a span end before it starts.
func TestHTTPSpanEndBeforeStart(t *testing.T) {
	tr := testTracer()
	c := testConn(t, roleServer, "127.0.0.1:80", "127.0.0.1:9999")
	x := &http1.Exchange{
		Request:  http1.RequestMeta{Method: "GET", Target: "/", Proto: "1.1", Start: 1000, End: 1500},
		Response: http1.ResponseMeta{StatusCode: 200, Start: 900, End: 950},
	}
	s := tr.httpSpan(c, testProcess(), x)
	if s.End.Before(s.Start) {
		t.Errorf("end %v before start %v", s.End, s.Start)
	}
	if want := time.Unix(0, 1500+tr.clock.offset); !s.End.Equal(want) {
		t.Errorf("end %v, want the request's end %v", s.End, want)
	}
}

func TestHTTPSpanTruncated(t *testing.T) {
	tr := testTracer()
	c := testConn(t, roleServer, "127.0.0.1:80", "127.0.0.1:9999")
	for _, x := range []http1.Exchange{
		{Request: http1.RequestMeta{Method: "GET", Target: "/", Proto: "1.1", HeadTruncated: true}, Response: http1.ResponseMeta{StatusCode: 200}},
		{Request: http1.RequestMeta{Method: "GET", Target: "/", Proto: "1.1"}, Response: http1.ResponseMeta{StatusCode: 200, HeadTruncated: true}},
	} {
		a := spanAttrs(t, tr.httpSpan(c, testProcess(), &x))
		if v, ok := a["sonde.capture.truncated"]; !ok || !v.AsBool() {
			t.Errorf("sonde.capture.truncated = %v, want true", v.Emit())
		}
	}
	x := http1.Exchange{Request: http1.RequestMeta{Method: "GET", Target: "/", Proto: "1.1"}, Response: http1.ResponseMeta{StatusCode: 200}}
	if _, ok := spanAttrs(t, tr.httpSpan(c, testProcess(), &x))["sonde.capture.truncated"]; ok {
		t.Errorf("sonde.capture.truncated set on a complete capture")
	}
}

func TestHTTPSpanTraceContext(t *testing.T) {
	tr := testTracer()
	c := testConn(t, roleServer, "127.0.0.1:80", "127.0.0.1:9999")
	const tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	x := &http1.Exchange{
		Request:  http1.RequestMeta{Method: "GET", Target: "/", Proto: "1.1", TraceParent: tp, TraceState: "k=v"},
		Response: http1.ResponseMeta{StatusCode: 200},
	}
	s := tr.httpSpan(c, testProcess(), x)
	if got := s.TraceID.String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
		t.Errorf("trace id %s, want the incoming one", got)
	}
	if got := s.Parent.SpanID().String(); got != "00f067aa0ba902b7" {
		t.Errorf("parent span id %s", got)
	}
	if !s.Parent.IsRemote() || !s.Parent.IsSampled() || s.Parent.TraceID() != s.TraceID {
		t.Errorf("parent %+v: want remote, sampled, same trace", s.Parent)
	}
	if s.Parent.TraceState().Get("k") != "v" {
		t.Errorf("tracestate lost: %q", s.Parent.TraceState())
	}
	if !s.SpanID.IsValid() || s.SpanID == s.Parent.SpanID() {
		t.Errorf("span id %s: want a fresh one", s.SpanID)
	}

	// A bad traceparent starts a new trace.
	x.Request.TraceParent = "00-00000000000000000000000000000000-00f067aa0ba902b7-01"
	s2 := tr.httpSpan(c, testProcess(), x)
	if s2.Parent.IsValid() || !s2.TraceID.IsValid() || s2.TraceID == s.TraceID {
		t.Errorf("invalid traceparent: parent %v, trace %s", s2.Parent, s2.TraceID)
	}

	// Without traceparent every span is the root of a new trace.
	x.Request.TraceParent, x.Request.TraceState = "", ""
	seen := map[trace.TraceID]bool{}
	spans := map[trace.SpanID]bool{}
	for range 100 {
		s := tr.httpSpan(c, testProcess(), x)
		if seen[s.TraceID] || spans[s.SpanID] {
			t.Fatalf("ids repeated: %s/%s", s.TraceID, s.SpanID)
		}
		seen[s.TraceID], spans[s.SpanID] = true, true
	}
}

// Secrets sent in a request never reach a span: credentials headers are not
// kept by the parser, and query values of credential parameters are
// redacted, on server and client spans alike.
func TestHTTPSpanNoSecrets(t *testing.T) {
	const secret = "s3cr3tV4lue"
	for _, target := range []string{
		"/login?user=bob&token=" + secret,
		"/x?AWSAccessKeyId=" + secret + "&Signature=" + secret,
		"/cb?next=http://other.example/a&token=" + secret,
		"/cb?token=" + secret + "&next=http://other.example/a",
		"http://user:" + secret + "@proxy.example/p?password=" + secret,
		// Fragments are never sent by conforming clients, but the parser
		// accepts them, and OAuth puts tokens there.
		"/callback#access_token=" + secret,
	} {
		raw := "GET " + target + " HTTP/1.1\r\n" +
			"Host: app.example\r\n" +
			"Authorization: Bearer " + secret + "\r\n" +
			"Cookie: session=" + secret + "\r\n" +
			"Proxy-Authorization: Basic " + secret + "\r\n" +
			"X-Api-Key: " + secret + "\r\n" +
			"User-Agent: test\r\n\r\n"
		hc := http1.NewConn(nil)
		xs, err := hc.Feed(http1.Request, http1.Chunk{Data: []byte(raw), Size: len(raw), Start: 1, End: 2}, nil)
		if err != nil || len(xs) != 0 {
			t.Fatalf("%s: request: %v, %d exchanges", target, err, len(xs))
		}
		resp := "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
		xs, err = hc.Feed(http1.Response, http1.Chunk{Data: []byte(resp), Size: len(resp), Start: 3, End: 4}, nil)
		if err != nil || len(xs) != 1 {
			t.Fatalf("%s: response: %v, %d exchanges", target, err, len(xs))
		}
		if strings.Contains(xs[0].Request.Host+xs[0].Request.UserAgent+xs[0].Request.TraceParent+xs[0].Request.TraceState, secret) {
			t.Errorf("%s: the parser kept a credential header: %+v", target, xs[0].Request)
		}
		for _, r := range []role{roleServer, roleClient} {
			tr := testTracer()
			s := tr.httpSpan(testConn(t, r, "127.0.0.1:80", "127.0.0.1:9999"), testProcess(), &xs[0])
			for _, kv := range s.Attributes {
				if strings.Contains(kv.Value.Emit(), secret) {
					t.Errorf("%s, %v span: %s = %q leaks the secret", target, r, kv.Key, kv.Value.Emit())
				}
			}
			if strings.Contains(s.Name+s.StatusDescription, secret) {
				t.Errorf("%s, %v span: name or status leaks the secret", target, r)
			}
		}
	}
}
