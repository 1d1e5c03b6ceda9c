package servicemap

import (
	"bufio"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/tracer/export"
)

// FromExport reads what the map needs of one of sonde's spans.
func FromExport(s *export.Span) Span {
	out := Span{SpanID: s.SpanID, Start: s.Start, End: s.End, Error: s.Status == codes.Error}
	if s.Parent.IsValid() {
		out.ParentID = s.Parent.SpanID()
	}
	switch s.Kind {
	case trace.SpanKindServer:
		out.Kind = KindServer
	case trace.SpanKindClient:
		out.Kind = KindClient
	}
	if s.Resource != nil {
		if v, ok := s.Resource.Set().Value(semconv.ServiceNameKey); ok {
			out.Service = v.AsString()
		}
	}
	var host, peer string
	var port int64
	for _, kv := range s.Attributes {
		switch kv.Key {
		case semconv.ServerAddressKey:
			host = kv.Value.AsString()
		case semconv.ServerPortKey:
			port = kv.Value.AsInt64()
		case semconv.ClientAddressKey:
			if peer == "" {
				peer = kv.Value.AsString()
			}
		case semconv.NetworkPeerAddressKey:
			peer = kv.Value.AsString()
		}
	}
	out.Peer = peerOf(out.Kind, host, port, peer)
	return out
}

func peerOf(k Kind, host string, port int64, peer string) string {
	if k == KindClient {
		if host == "" {
			return ""
		}
		if port == 0 {
			return host
		}
		return net.JoinHostPort(host, strconv.FormatInt(port, 10))
	}
	return peer
}

// maxLine bounds one line of a recording.
const maxLine = 1 << 20

// jsonSpan is the part of sonde's JSON span format (--output json) the map
// reads.
type jsonSpan struct {
	SpanID   string    `json:"span_id"`
	ParentID string    `json:"parent_span_id"`
	Kind     string    `json:"kind"`
	Start    time.Time `json:"start"`
	End      time.Time `json:"end"`
	Status   struct {
		Code string `json:"code"`
	} `json:"status"`
	Attributes map[string]any `json:"attributes"`
	Resource   map[string]any `json:"resource"`
}

// ReadSpans reads spans in sonde's JSON lines format, as `sonde trace
// --output json` and `--record` write them, and hands each to fn. A line
// that is no span is an error naming its number.
func ReadSpans(r io.Reader, fn func(Span)) error {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), maxLine)
	for n := 1; sc.Scan(); n++ {
		line := sc.Bytes()
		if len(line) == 0 {
			continue
		}
		var js jsonSpan
		if err := json.Unmarshal(line, &js); err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		s, err := js.span()
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
		fn(s)
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("read spans: %w", err)
	}
	return nil
}

func (js *jsonSpan) span() (Span, error) {
	s := Span{Start: js.Start, End: js.End, Error: js.Status.Code == "Error"}
	if err := spanID(&s.SpanID, js.SpanID); err != nil {
		return s, fmt.Errorf("span_id: %w", err)
	}
	if js.ParentID != "" {
		if err := spanID(&s.ParentID, js.ParentID); err != nil {
			return s, fmt.Errorf("parent_span_id: %w", err)
		}
	}
	switch js.Kind {
	case "server":
		s.Kind = KindServer
	case "client":
		s.Kind = KindClient
	}
	s.Service, _ = js.Resource["service.name"].(string)
	host, _ := js.Attributes["server.address"].(string)
	port, _ := js.Attributes["server.port"].(float64)
	peer, _ := js.Attributes["network.peer.address"].(string)
	if peer == "" {
		peer, _ = js.Attributes["client.address"].(string)
	}
	s.Peer = peerOf(s.Kind, host, int64(port), peer)
	return s, nil
}

func spanID(dst *[8]byte, s string) error {
	if len(s) != 16 {
		return fmt.Errorf("%q is not 16 hex digits", s)
	}
	_, err := hex.Decode(dst[:], []byte(s))
	return err
}
