package servicemap

import (
	"fmt"
	"html"
	"io"
	"sort"
	"strings"
)

// SVG layout: callers on the left, the services they call to their right,
// one column per depth of the call graph.
const (
	svgNodeW, svgNodeH = 170, 44
	svgColGap          = 110
	svgRowGap          = 36
	svgMargin          = 20
)

// NodeFill and ExternalFill are the fills of a traced service's box and of
// an address sonde does not trace, so that a picture of the map can be
// checked for its nodes.
const (
	NodeFill     = "#2f6fde"
	ExternalFill = "#9aa4b2"
)

// WriteSVG draws the map as an SVG picture: a box per node, an arrow per
// edge labelled with its requests, errors and p99.
func WriteSVG(w io.Writer, m Map) error {
	col := columns(m)
	byCol := map[int][]Node{}
	maxCol := 0
	for _, n := range m.Nodes {
		c := col[n.Name]
		byCol[c] = append(byCol[c], n)
		maxCol = max(maxCol, c)
	}
	maxRows := 1
	for c := range byCol {
		sort.Slice(byCol[c], func(i, j int) bool { return byCol[c][i].Name < byCol[c][j].Name })
		maxRows = max(maxRows, len(byCol[c]))
	}
	type pos struct{ x, y int }
	at := map[string]pos{}
	for c, nodes := range byCol {
		for r, n := range nodes {
			at[n.Name] = pos{svgMargin + c*(svgNodeW+svgColGap), svgMargin + r*(svgNodeH+svgRowGap)}
		}
	}
	width := 2*svgMargin + (maxCol+1)*svgNodeW + maxCol*svgColGap
	height := 2*svgMargin + maxRows*svgNodeH + (maxRows-1)*svgRowGap
	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" id="service-map" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="12">`, width, height, width, height)
	b.WriteString(`<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>`)
	for _, e := range m.Edges {
		from, to := at[e.Client], at[e.Server]
		x1, y1 := from.x+svgNodeW, from.y+svgNodeH/2
		x2, y2 := to.x, to.y+svgNodeH/2
		if e.Client == e.Server || to.x <= from.x {
			// A call to itself or back: a loop below the box.
			x1, y1 = from.x+svgNodeW/2-20, from.y+svgNodeH
			x2, y2 = to.x+svgNodeW/2+20, to.y+svgNodeH
		}
		color := "#555"
		if e.Errors > 0 {
			color = "#d33"
		}
		fmt.Fprintf(&b, `<g class="edge" data-client="%s" data-server="%s">`, attr(e.Client), attr(e.Server))
		if y1 == y2 && x2 > x1 {
			fmt.Fprintf(&b, `<line x1="%d" y1="%d" x2="%d" y2="%d" stroke="%s" stroke-width="1.5" marker-end="url(#arrow)"/>`, x1, y1, x2, y2, color)
		} else {
			cx, cy := (x1+x2)/2, max(y1, y2)+30
			if x2 > x1 {
				cy = (y1 + y2) / 2
			}
			fmt.Fprintf(&b, `<path d="M%d,%d Q%d,%d %d,%d" fill="none" stroke="%s" stroke-width="1.5" marker-end="url(#arrow)"/>`, x1, y1, cx, cy, x2, y2, color)
		}
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="%s">%s</text></g>`, (x1+x2)/2, (y1+y2)/2-6, color,
			html.EscapeString(fmt.Sprintf("%d req · %d err · p99 %s", e.Requests, e.Errors, round(e.P99))))
	}
	for _, n := range m.Nodes {
		p := at[n.Name]
		fill, dash := NodeFill, ""
		if n.External {
			fill, dash = ExternalFill, ` stroke-dasharray="4 3"`
		}
		fmt.Fprintf(&b, `<g class="node" data-name="%s"><rect x="%d" y="%d" width="%d" height="%d" rx="6" fill="%s" stroke="#1b2b44"%s/>`,
			attr(n.Name), p.x, p.y, svgNodeW, svgNodeH, fill, dash)
		fmt.Fprintf(&b, `<text x="%d" y="%d" text-anchor="middle" fill="#fff" font-weight="bold">%s</text></g>`,
			p.x+svgNodeW/2, p.y+svgNodeH/2+4, html.EscapeString(shorten(n.Name, 24)))
	}
	b.WriteString(`</svg>`)
	_, err := io.WriteString(w, b.String())
	return err
}

// columns places each node one column right of its rightmost caller, by
// longest path from the nodes nobody calls; cycles are cut where they
// close.
func columns(m Map) map[string]int {
	callers := map[string][]string{}
	for _, e := range m.Edges {
		if e.Client != e.Server {
			callers[e.Server] = append(callers[e.Server], e.Client)
		}
	}
	col := map[string]int{}
	visiting := map[string]bool{}
	var depth func(string) int
	depth = func(n string) int {
		if c, ok := col[n]; ok {
			return c
		}
		if visiting[n] {
			return 0
		}
		visiting[n] = true
		d := 0
		for _, c := range callers[n] {
			d = max(d, depth(c)+1)
		}
		visiting[n] = false
		col[n] = d
		return d
	}
	for _, n := range m.Nodes {
		depth(n.Name)
	}
	return col
}

func attr(s string) string { return html.EscapeString(s) }

func shorten(s string, n int) string {
	if len([]rune(s)) <= n {
		return s
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}
