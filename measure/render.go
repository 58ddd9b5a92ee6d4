package measure

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
)

// A Format is a report format.
type Format string

// The report formats.
const (
	Text     Format = "text"
	Markdown Format = "md"
	JSON     Format = "json"
	SVG      Format = "svg"
)

// Formats lists the report formats Render writes.
var Formats = []Format{Text, Markdown, JSON, SVG}

// ParseFormat parses a format name: text, md (or markdown), json or svg.
func ParseFormat(s string) (Format, error) {
	switch strings.ToLower(s) {
	case "text", "txt", "":
		return Text, nil
	case "md", "markdown":
		return Markdown, nil
	case "json":
		return JSON, nil
	case "svg":
		return SVG, nil
	}
	return "", fmt.Errorf("unknown format %q (want text, md, json or svg)", s)
}

// Render writes the report in the format: text for terminals, md for pull
// request comments, json (see Report) for machines and Compare, svg for a
// waterfall chart.
func Render(w io.Writer, r *Report, f Format) error {
	switch f {
	case Text:
		return renderText(w, r)
	case Markdown:
		return renderMarkdown(w, r)
	case JSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(r)
	case SVG:
		return renderSVG(w, r)
	}
	return fmt.Errorf("unknown format %q", f)
}

func share(part, total float64) string {
	if total <= 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f%%", 100*part/total)
}

func fsec(s float64) string { return fmt.Sprintf("%.1f", s) }

// describe says in one line what a phase consisted of.
func describe(c *ColdStart, phase string) string {
	d := &c.Details
	var parts []string
	switch phase {
	case Provision:
		if !d.Provision.Known {
			return "unknown"
		}
		if su := d.ScaleUp; su != nil {
			who := "new node " + c.Node
			if su.Trigger != "" {
				who += " (" + su.Trigger
				if su.Target != "" {
					who += ": " + su.Target
				}
				who += ")"
			}
			parts = append(parts, who)
		}
		for _, st := range d.Provision.Steps {
			parts = append(parts, fmt.Sprintf("%s %s s", st.Name, fsec(st.Seconds)))
		}
		return strings.Join(parts, "; ")
	case Pull:
		if !d.Pull.Known {
			return "unknown"
		}
		for _, ip := range d.Images {
			s := ip.Image
			if ip.Cached {
				s += " cached"
			} else {
				s += " " + fsec(ip.Seconds) + " s"
				var info []string
				if ip.Bytes > 0 {
					info = append(info, fmt.Sprintf("%.1f GB", float64(ip.Bytes)/1e9))
				}
				if ip.PullSeconds > 0 && ip.Seconds-ip.PullSeconds >= 1 {
					info = append(info, fmt.Sprintf("%s s of it waiting behind other pulls", fsec(ip.Seconds-ip.PullSeconds)))
				}
				if len(info) > 0 {
					s += " (" + strings.Join(info, ", ") + ")"
				}
			}
			parts = append(parts, s)
		}
		return strings.Join(parts, "; ")
	case Load, Warmup:
		pd := d.Load
		if phase == Warmup {
			pd = d.Warmup
		}
		if !pd.Known {
			return "unknown"
		}
		for _, st := range pd.Steps {
			s := st.Name
			if st.Seconds > 0 || st.GiB == 0 {
				s += " " + fsec(st.Seconds) + " s"
			}
			if st.GiB > 0 {
				s += fmt.Sprintf(" (%.1f GiB)", st.GiB)
			}
			parts = append(parts, s)
		}
		if len(parts) == 0 {
			return pd.From + " → " + pd.To
		}
		return strings.Join(parts, "; ")
	case Unattributed:
		for _, s := range c.Timeline {
			if s.Phase == Unattributed {
				parts = append(parts, fmt.Sprintf("%s s %s", fsec(s.End-s.Start), s.Note))
			}
		}
		return strings.Join(parts, "; ")
	}
	return ""
}

func renderText(w io.Writer, r *Report) error {
	for i := range r.ColdStarts {
		c := &r.ColdStarts[i]
		if i > 0 {
			fmt.Fprintln(w)
		}
		end := "Ready"
		if c.Ready.IsZero() {
			end = "last seen (never Ready)"
		}
		fmt.Fprintf(w, "%s on %s: %s s from creation to %s\n", c.Pod, orDash(c.Node), fsec(c.TotalSeconds), end)
		fmt.Fprintf(w, "  %-13s %8s %6s  %s\n", "phase", "seconds", "share", "what it was")
		for _, ph := range rowNames {
			v := phaseOrUnattributed(c, ph)
			fmt.Fprintf(w, "  %-13s %8s %6s  %s\n", ph, fsec(v), share(v, c.TotalSeconds), describe(c, ph))
		}
		fmt.Fprintf(w, "  dominant: %s (%s): %s\n", c.Dominant, share(phaseOrUnattributed(c, c.Dominant), c.TotalSeconds), c.Lever)
		for _, n := range c.Details.Notes {
			fmt.Fprintf(w, "  note: %s\n", n)
		}
		for _, m := range c.Missing {
			fmt.Fprintf(w, "  missing: %s\n", m)
		}
		for _, m := range c.Invalid {
			fmt.Fprintf(w, "  invalid data: %s\n", m)
		}
	}
	if s := r.Summary; s != nil {
		fmt.Fprintf(w, "\n%d cold starts\n", s.Pods)
		fmt.Fprintf(w, "  %-13s %8s %8s %8s\n", "", "p50", "p90", "max")
		row := func(name string, st Stat) {
			fmt.Fprintf(w, "  %-13s %8s %8s %8s\n", name, fsec(st.P50), fsec(st.P90), fsec(st.Max))
		}
		row("total", s.Total)
		for _, ph := range PhaseNames {
			row(ph, s.Phases[ph])
		}
		row(Unattributed, s.Unattributed)
		fmt.Fprintf(w, "  dominant (p50): %s: %s\n", s.Dominant, s.Lever)
	}
	if len(r.Missing) > 0 {
		fmt.Fprintf(w, "\nbundle lacks: %s\n", strings.Join(r.Missing, ", "))
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func phaseOrUnattributed(c *ColdStart, ph string) float64 {
	if ph == Unattributed {
		return c.UnattributedSeconds
	}
	return c.Phases.Get(ph)
}

func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "<", "&lt;", ">", "&gt;").Replace(s)
}

func renderMarkdown(w io.Writer, r *Report) error {
	var b strings.Builder
	if s := r.Summary; s != nil {
		fmt.Fprintf(&b, "## Cold starts: %d pods\n\n", s.Pods)
		b.WriteString("| Pod | Node | Total (s) | Provision | Pull | Load | Warmup | Unattributed |\n")
		b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|\n")
		for i := range r.ColdStarts {
			c := &r.ColdStarts[i]
			fmt.Fprintf(&b, "| %s | %s | %s |", mdEscape(c.Pod), mdEscape(orDash(c.Node)), fsec(c.TotalSeconds))
			for _, ph := range PhaseNames {
				fmt.Fprintf(&b, " %s |", fsec(c.Phases.Get(ph)))
			}
			fmt.Fprintf(&b, " %s |\n", fsec(c.UnattributedSeconds))
		}
		for _, q := range []string{"p50", "p90"} {
			pick := func(st Stat) float64 {
				if q == "p50" {
					return st.P50
				}
				return st.P90
			}
			fmt.Fprintf(&b, "| **%s** | | **%s** |", q, fsec(pick(s.Total)))
			for _, ph := range PhaseNames {
				fmt.Fprintf(&b, " %s |", fsec(pick(s.Phases[ph])))
			}
			fmt.Fprintf(&b, " %s |\n", fsec(pick(s.Unattributed)))
		}
		dom := s.Unattributed.P50
		if s.Dominant != Unattributed {
			dom = s.Phases[s.Dominant].P50
		}
		fmt.Fprintf(&b, "\n**Dominant phase (p50): %s, %s of the p50 total.** Lever: %s.\n\n", s.Dominant, share(dom, s.Total.P50), s.Lever)
	}
	for i := range r.ColdStarts {
		c := &r.ColdStarts[i]
		level := "##"
		if r.Summary != nil {
			level = "###"
		}
		end := "Ready"
		if c.Ready.IsZero() {
			end = "last seen (never Ready)"
		}
		fmt.Fprintf(&b, "%s Cold start of %s on %s: %s s to %s\n\n", level, mdEscape(c.Pod), mdEscape(orDash(c.Node)), fsec(c.TotalSeconds), end)
		b.WriteString("| Phase | Seconds | Share | What it was |\n|---|---:|---:|---|\n")
		for _, ph := range rowNames {
			v := phaseOrUnattributed(c, ph)
			name := ph
			if ph == c.Dominant {
				name = "**" + ph + "**"
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", name, fsec(v), share(v, c.TotalSeconds), mdEscape(describe(c, ph)))
		}
		fmt.Fprintf(&b, "| total | %s | 100%% | pod created → %s |\n\n", fsec(c.TotalSeconds), end)
		fmt.Fprintf(&b, "**Dominant phase: %s, %s of the total.** Lever: %s.\n\n", c.Dominant, share(phaseOrUnattributed(c, c.Dominant), c.TotalSeconds), c.Lever)
		for _, list := range []struct {
			title string
			items []string
		}{{"Missing data", c.Missing}, {"Invalid data (ignored)", c.Invalid}} {
			if len(list.items) > 0 {
				b.WriteString(list.title + ":\n")
				for _, m := range list.items {
					fmt.Fprintf(&b, "- %s\n", mdEscape(m))
				}
				b.WriteString("\n")
			}
		}
		b.WriteString("<details><summary>Sources</summary>\n\n")
		for _, ph := range PhaseNames {
			pd := phaseDetail(c, ph)
			if !pd.Known {
				fmt.Fprintf(&b, "- %s: not attributed\n", ph)
				continue
			}
			fmt.Fprintf(&b, "- %s: %s → %s\n", ph, mdEscape(pd.From), mdEscape(pd.To))
			for _, st := range pd.Steps {
				fmt.Fprintf(&b, "  - %s %s s at +%s s: `%s`\n", st.Name, fsec(st.Seconds), fsec(st.At), strings.ReplaceAll(st.Source, "`", "'"))
			}
		}
		for _, ip := range c.Details.Images {
			fmt.Fprintf(&b, "- image %s (container %s): %s\n", mdEscape(ip.Image), mdEscape(ip.Container), mdEscape(ip.Source))
		}
		for _, n := range c.Details.Notes {
			fmt.Fprintf(&b, "- note: %s\n", mdEscape(n))
		}
		b.WriteString("\n</details>\n\n")
	}
	if len(r.Missing) > 0 {
		fmt.Fprintf(&b, "The bundle lacks %s.\n", strings.Join(r.Missing, ", "))
	}
	_, err := io.WriteString(w, strings.TrimRight(b.String(), "\n")+"\n")
	return err
}

func phaseDetail(c *ColdStart, ph string) PhaseDetail {
	switch ph {
	case Provision:
		return c.Details.Provision
	case Pull:
		return c.Details.Pull
	case Load:
		return c.Details.Load
	}
	return c.Details.Warmup
}
