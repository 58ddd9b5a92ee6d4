package measure

import (
	"encoding/xml"
	"fmt"
	"io"
	"math"
	"strings"
)

// PhaseColors are the SVG waterfall's colours, one per phase.
var PhaseColors = map[string]string{
	Provision:    "#4e79a7",
	Pull:         "#f28e2b",
	Load:         "#59a14f",
	Warmup:       "#e15759",
	Unattributed: "#c9c3bf",
}

var rowNames = []string{Provision, Pull, Load, Warmup, Unattributed}

func esc(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// niceStep returns a 1, 2 or 5 × 10^k step giving at most about 8 ticks.
func niceStep(max float64) float64 {
	raw := max / 8
	if raw <= 0 {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(raw)))
	for _, m := range []float64{1, 2, 5, 10} {
		if m*p >= raw {
			return m * p
		}
	}
	return 10 * p
}

// renderSVG draws a waterfall: one row per cold start, its timeline
// segments as bars (class "bar", data-phase the phase), an axis in seconds
// after pod creation, and a legend (class "swatch").
func renderSVG(w io.Writer, r *Report) error {
	const (
		labelW, chartW, pad = 250.0, 640.0, 16.0
		top, rowH, barH     = 44.0, 26.0, 18.0
	)
	maxT := 1.0
	for _, c := range r.ColdStarts {
		maxT = math.Max(maxT, c.TotalSeconds)
	}
	step := niceStep(maxT)
	axisMax := math.Ceil(maxT/step) * step
	x := func(s float64) float64 { return labelW + chartW*s/axisMax }
	rows := float64(len(r.ColdStarts))
	axisY := top + rows*rowH + 4
	legendY := axisY + 34
	width, height := labelW+chartW+pad*2, legendY+28

	var b strings.Builder
	fmt.Fprintf(&b, `<?xml version="1.0" encoding="UTF-8"?>
<svg xmlns="http://www.w3.org/2000/svg" width="%.0f" height="%.0f" viewBox="0 0 %.0f %.0f" font-family="sans-serif" font-size="12">
<title>Cold starts: provision, pull, load, warmup</title>
<rect x="0" y="0" width="%.0f" height="%.0f" fill="#ffffff"/>
<text x="%.0f" y="24" font-size="15" font-weight="bold">Cold starts (seconds after pod creation)</text>
`, width, height, width, height, width, height, pad)
	// Grid and axis.
	for t := 0.0; t <= axisMax+step/2; t += step {
		fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#e0e0e0"/>
<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">%s</text>
`, x(t), top-4, x(t), axisY, x(t), axisY+16, trimFloat(t))
	}
	fmt.Fprintf(&b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="#555"/>
<text x="%.1f" y="%.1f" text-anchor="middle" fill="#555">seconds</text>
`, x(0), axisY, x(axisMax), axisY, x(axisMax/2), axisY+30)
	// Rows.
	for i, c := range r.ColdStarts {
		y := top + float64(i)*rowH
		label := c.Pod
		if len(label) > 36 {
			label = "…" + label[len(label)-35:]
		}
		fmt.Fprintf(&b, `<text x="%.0f" y="%.1f">%s</text>
`, pad, y+barH-4, esc(label))
		for _, s := range c.Timeline {
			if s.End <= s.Start {
				continue
			}
			tip := fmt.Sprintf("%s %s: %.1f s (%.1f → %.1f)", c.Pod, s.Phase, s.End-s.Start, s.Start, s.End)
			if s.Note != "" {
				tip += ", " + s.Note
			}
			fmt.Fprintf(&b, `<rect class="bar" data-phase="%s" x="%.2f" y="%.1f" width="%.2f" height="%.0f" fill="%s"><title>%s</title></rect>
`, s.Phase, x(s.Start), y, math.Max(x(s.End)-x(s.Start), 0.5), barH, PhaseColors[s.Phase], esc(tip))
		}
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" fill="#333">%.1f s</text>
`, x(c.TotalSeconds)+4, y+barH-4, c.TotalSeconds)
	}
	// Legend.
	lx := pad
	for _, ph := range rowNames {
		fmt.Fprintf(&b, `<rect class="swatch" data-phase="%s" x="%.0f" y="%.0f" width="14" height="14" fill="%s"/>
<text x="%.0f" y="%.0f">%s</text>
`, ph, lx, legendY, PhaseColors[ph], lx+20, legendY+12, ph)
		lx += 20 + float64(len(ph))*7.5 + 24
	}
	b.WriteString("</svg>\n")
	_, err := io.WriteString(w, b.String())
	return err
}

func trimFloat(f float64) string {
	s := fmt.Sprintf("%.2f", f)
	s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
	return s
}
