package ui

import (
	"bytes"
	_ "embed"
	"fmt"
	"html"
	"io"
	"net/http"
	"strings"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/sondehq/sonde/tracer/servicemap"
)

//go:embed page.html
var page string

// Handler serves the page at /, and its parts for the page's refresh: the
// map at /map.svg and the traces at /traces.html.
func Handler(m *servicemap.Live, r *Recent) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, _ *http.Request) {
		var svg, traces bytes.Buffer
		_ = servicemap.WriteSVG(&svg, m.Map())
		writeTraces(&traces, r.Traces())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		out := strings.Replace(page, "<!--MAP-->", svg.String(), 1)
		out = strings.Replace(out, "<!--TRACES-->", traces.String(), 1)
		io.WriteString(w, out)
	})
	mux.HandleFunc("GET /map.svg", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "image/svg+xml")
		_ = servicemap.WriteSVG(w, m.Map())
	})
	mux.HandleFunc("GET /traces.html", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		writeTraces(w, r.Traces())
	})
	return mux
}

// maxListed bounds the traces the page lists.
const maxListed = 50

// writeTraces writes the trace list: a line per trace (root, services,
// duration), which opens to a waterfall of its spans, indented by depth.
func writeTraces(w io.Writer, ts []Trace) {
	if len(ts) == 0 {
		io.WriteString(w, `<p class="empty">No traces yet.</p>`)
		return
	}
	for i, t := range ts {
		if i == maxListed {
			break
		}
		start, end := t.Start(), t.End()
		total := end.Sub(start)
		if total <= 0 {
			total = time.Microsecond
		}
		root := t.Root()
		services := map[string]bool{}
		failed := false
		for _, sp := range t.Spans {
			services[sp.Service] = true
			failed = failed || sp.Error
		}
		class := "trace"
		if failed {
			class += " failed"
		}
		fmt.Fprintf(w, `<details class="%s" data-trace="%s"><summary><b>%s</b> %s · %d spans · %d services · %s</summary><div class="waterfall">`,
			class, t.ID, html.EscapeString(root.Service), html.EscapeString(root.Name), len(t.Spans), len(services), total.Round(time.Microsecond))
		depth := depths(t.Spans)
		for _, sp := range t.Spans {
			left := float64(sp.Start.Sub(start)) / float64(total) * 100
			width := max(float64(sp.End.Sub(sp.Start))/float64(total)*100, 0.3)
			bar := "bar"
			if sp.Error {
				bar += " error"
			}
			fmt.Fprintf(w, `<div class="row"><span class="label" style="padding-left:%dem">%s · %s %s</span><span class="lane"><span class="%s" style="left:%.2f%%;width:%.2f%%"></span></span><span class="dur">%s</span></div>`,
				depth[sp.SpanID], html.EscapeString(sp.Service), kindName(sp.Kind), html.EscapeString(sp.Name),
				bar, left, min(width, 100-left), sp.End.Sub(sp.Start).Round(time.Microsecond))
		}
		io.WriteString(w, `</div></details>`)
	}
}

// depths gives each span its depth under the trace's roots.
func depths(spans []Span) map[trace.SpanID]int {
	parent := map[trace.SpanID]trace.SpanID{}
	in := map[trace.SpanID]bool{}
	for _, sp := range spans {
		parent[sp.SpanID] = sp.ParentID
		in[sp.SpanID] = true
	}
	out := map[trace.SpanID]int{}
	for _, sp := range spans {
		d, id := 0, sp.SpanID
		for in[parent[id]] && d < len(spans) {
			id = parent[id]
			d++
		}
		out[sp.SpanID] = d
	}
	return out
}

func kindName(k trace.SpanKind) string {
	switch k {
	case trace.SpanKindServer:
		return "server"
	case trace.SpanKindClient:
		return "client"
	}
	return "span"
}
