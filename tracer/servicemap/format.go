package servicemap

import (
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTable writes the edges as an aligned table, one per line.
func WriteTable(w io.Writer, m Map) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CLIENT\tSERVER\tREQUESTS\tERRORS\tP50\tP99")
	for _, e := range m.Edges {
		client, server := e.Client, e.Server
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%s\t%s\n", client, server, e.Requests, e.Errors, round(e.P50), round(e.P99))
	}
	return tw.Flush()
}

func round(d time.Duration) time.Duration {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond)
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond)
	}
	return d.Round(time.Microsecond)
}

type jsonMap struct {
	Nodes []jsonNode `json:"nodes"`
	Edges []jsonEdge `json:"edges"`
}

type jsonNode struct {
	Name     string `json:"name"`
	External bool   `json:"external"`
}

type jsonEdge struct {
	Client   string  `json:"client"`
	Server   string  `json:"server"`
	External bool    `json:"external"`
	Requests uint64  `json:"requests"`
	Errors   uint64  `json:"errors"`
	P50Ms    float64 `json:"p50_ms"`
	P99Ms    float64 `json:"p99_ms"`
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// WriteJSON writes the map as one JSON object, latencies in milliseconds.
func WriteJSON(w io.Writer, m Map) error {
	out := jsonMap{Nodes: []jsonNode{}, Edges: []jsonEdge{}}
	for _, n := range m.Nodes {
		out.Nodes = append(out.Nodes, jsonNode(n))
	}
	for _, e := range m.Edges {
		out.Edges = append(out.Edges, jsonEdge{
			Client: e.Client, Server: e.Server, External: e.External,
			Requests: e.Requests, Errors: e.Errors, P50Ms: ms(e.P50), P99Ms: ms(e.P99),
		})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// ReadJSON reads what WriteJSON wrote, as a running sonde serves it.
func ReadJSON(r io.Reader) (Map, error) {
	var in jsonMap
	if err := json.NewDecoder(r).Decode(&in); err != nil {
		return Map{}, fmt.Errorf("read service map: %w", err)
	}
	var m Map
	for _, n := range in.Nodes {
		m.Nodes = append(m.Nodes, Node(n))
	}
	for _, e := range in.Edges {
		m.Edges = append(m.Edges, Edge{
			Client: e.Client, Server: e.Server, External: e.External, Requests: e.Requests, Errors: e.Errors,
			P50: time.Duration(e.P50Ms * float64(time.Millisecond)), P99: time.Duration(e.P99Ms * float64(time.Millisecond)),
		})
	}
	return m, nil
}

func edgeLabel(e Edge) string {
	return fmt.Sprintf("%d req, %d err, p50 %s, p99 %s", e.Requests, e.Errors, round(e.P50), round(e.P99))
}

// WriteDOT writes the map for Graphviz: services are boxes, addresses
// sonde does not trace are dashed ellipses.
func WriteDOT(w io.Writer, m Map) error {
	var b strings.Builder
	b.WriteString("digraph sonde {\n  rankdir=LR;\n  node [shape=box, fontname=\"sans-serif\"];\n")
	for _, n := range m.Nodes {
		attrs := ""
		if n.External {
			attrs = " [shape=ellipse, style=dashed]"
		}
		fmt.Fprintf(&b, "  %s%s;\n", strconv.Quote(n.Name), attrs)
	}
	for _, e := range m.Edges {
		color := ""
		if e.Errors > 0 {
			color = ", color=red"
		}
		fmt.Fprintf(&b, "  %s -> %s [label=%s%s];\n", strconv.Quote(e.Client), strconv.Quote(e.Server), strconv.Quote(edgeLabel(e)), color)
	}
	b.WriteString("}\n")
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteMermaid writes the map as a Mermaid flowchart.
func WriteMermaid(w io.Writer, m Map) error {
	var b strings.Builder
	b.WriteString("flowchart LR\n")
	ids := map[string]string{}
	for i, n := range m.Nodes {
		id := "n" + strconv.Itoa(i)
		ids[n.Name] = id
		label := mermaidText(n.Name)
		if n.External {
			fmt.Fprintf(&b, "  %s([\"%s\"])\n", id, label)
		} else {
			fmt.Fprintf(&b, "  %s[\"%s\"]\n", id, label)
		}
	}
	for _, e := range m.Edges {
		fmt.Fprintf(&b, "  %s -->|\"%s\"| %s\n", ids[e.Client], mermaidText(edgeLabel(e)), ids[e.Server])
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// mermaidText escapes what would end a quoted Mermaid label.
func mermaidText(s string) string {
	return strings.NewReplacer(`"`, "#quot;", "\n", " ").Replace(s)
}
