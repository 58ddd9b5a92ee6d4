package plan

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"github.com/modelcar/modelcar/measure"
)

// Render writes the plan as text (a terminal), md (a pull request comment)
// or json (Plan, for machines).
func Render(w io.Writer, p *Plan, f measure.Format) error {
	switch f {
	case measure.JSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.SetEscapeHTML(false)
		return enc.Encode(p)
	case measure.Markdown:
		_, err := io.WriteString(w, markdown(p))
		return err
	case measure.Text:
		_, err := io.WriteString(w, text(p))
		return err
	}
	return fmt.Errorf("format %q: a plan renders as text, md or json", f)
}

// headline says what the plan is based on.
func headline(p *Plan) string {
	b := p.Basis
	what := "the single cold start"
	if b.Statistic == "p50" {
		what = fmt.Sprintf("p50 of %d cold starts", b.ColdStarts)
	}
	return fmt.Sprintf("%s, %s s from creation to Ready (provision %s s, pull %s s, load %s s, warmup %s s, unattributed %s s)",
		what, fsec(b.TotalSeconds), fsec(b.Phases.Provision), fsec(b.Phases.Pull), fsec(b.Phases.Load), fsec(b.Phases.Warmup), fsec(b.UnattributedSeconds))
}

// factsLine lists the facts grouped by source, then the unknown ones.
func factsLine(p *Plan) string {
	known := p.Facts.Known()
	if len(known) == 0 {
		return "none given (--cluster-facts FILE, --fact KEY=VALUE or --discover)"
	}
	data, _ := json.Marshal(p.Facts)
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	var sources []string
	bySource := map[string][]string{}
	var unknown []string
	for _, k := range FactKeys {
		v, ok := m[k]
		if !ok {
			unknown = append(unknown, k)
			continue
		}
		src := p.FactSources[k]
		if _, seen := bySource[src]; !seen {
			sources = append(sources, src)
		}
		bySource[src] = append(bySource[src], fmt.Sprintf("%s %v", k, v))
	}
	var parts []string
	for _, src := range sources {
		s := strings.Join(bySource[src], ", ")
		if src != "" {
			s += " (" + src + ")"
		}
		parts = append(parts, s)
	}
	if len(unknown) > 0 {
		parts = append(parts, "unknown: "+strings.Join(unknown, ", "))
	}
	return strings.Join(parts, "; ")
}

// amount says a lever's saving the way its status reads.
func amount(l *Lever) string {
	switch {
	case l.Status == Advice:
		return "no time saved"
	case l.Estimate == Unknown:
		return "saving unknown"
	case l.Status == Needs:
		return "would save up to " + fsec(l.SavingSeconds) + " s"
	case l.Status == NoGain:
		return "no gain"
	}
	return "up to " + fsec(l.SavingSeconds) + " s"
}

var sectionTitle = map[Status]string{
	Apply:  "levers, by saving",
	Advice: "advice",
	Needs:  "needs (a prerequisite is missing)",
	NoGain: "no gain",
}

func text(p *Plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "cold-start plan for %s: %s\n", p.From, headline(p))
	fmt.Fprintf(&b, "facts: %s\n", factsLine(p))
	fmt.Fprintf(&b, "bench: %s\n", p.Bench)
	for _, w := range p.Warnings {
		fmt.Fprintf(&b, "warning: %s\n", w)
	}
	n := 0
	for _, st := range statusOrder {
		first := true
		for i := range p.Levers {
			l := &p.Levers[i]
			if l.Status != st {
				continue
			}
			if first {
				fmt.Fprintf(&b, "\n%s:\n", sectionTitle[st])
				first = false
			}
			mark := " -"
			if st == Apply {
				n++
				mark = fmt.Sprintf("%2d.", n)
			}
			fmt.Fprintf(&b, "%s %s (%s): %s, %s confidence, %s\n", mark, l.Name, l.Phase, amount(l), l.Confidence, l.Estimate)
			fmt.Fprintf(&b, "    %s\n", l.Title)
			fmt.Fprintf(&b, "    %s\n", l.Arithmetic)
			if st == NoGain {
				continue
			}
			for _, x := range l.Needs {
				fmt.Fprintf(&b, "    needs: %s\n", x)
			}
			for _, x := range l.Conditions {
				fmt.Fprintf(&b, "    when: %s\n", x)
			}
			for _, x := range l.Apply {
				fmt.Fprintf(&b, "    apply: %s\n", x)
			}
		}
	}
	fmt.Fprintf(&b, "\npack flags: %s (%s)\n", strings.Join(p.Pack.Flags, " "), p.Pack.Why)
	for _, x := range p.Notes {
		fmt.Fprintf(&b, "note: %s\n", x)
	}
	return b.String()
}

func markdown(p *Plan) string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Cold-start plan\n\nFrom `%s`: %s.\n\n", p.From, mdEscape(headline(p)))
	for _, w := range p.Warnings {
		fmt.Fprintf(&b, "> **Warning:** %s.\n\n", mdEscape(w))
	}
	b.WriteString("| # | Lever | Phase | Saves | Confidence | Estimate | Status |\n|---:|---|---|---:|---|---|---|\n")
	n := 0
	for i := range p.Levers {
		l := &p.Levers[i]
		rank := ""
		if l.Status == Apply {
			n++
			rank = fmt.Sprint(n)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", rank, l.Name, l.Phase, amount(l), l.Confidence, l.Estimate, l.Status)
	}
	for i := range p.Levers {
		l := &p.Levers[i]
		if l.Status == NoGain {
			continue
		}
		fmt.Fprintf(&b, "\n### %s: %s\n\n%s\n", l.Name, mdEscape(l.Title), mdEscape(l.Arithmetic))
		if len(l.Needs)+len(l.Conditions)+len(l.Apply) > 0 {
			b.WriteString("\n")
		}
		for _, x := range l.Needs {
			fmt.Fprintf(&b, "- **Needs:** %s\n", mdEscape(x))
		}
		for _, x := range l.Conditions {
			fmt.Fprintf(&b, "- When: %s\n", mdEscape(x))
		}
		for _, x := range l.Apply {
			fmt.Fprintf(&b, "- Apply: `%s`\n", x)
		}
	}
	b.WriteString("\n<details><summary>No gain</summary>\n\n")
	for i := range p.Levers {
		if l := &p.Levers[i]; l.Status == NoGain {
			fmt.Fprintf(&b, "- **%s**: %s\n", l.Name, mdEscape(l.Arithmetic))
		}
	}
	fmt.Fprintf(&b, "\n</details>\n\n**Pack flags:** `%s` (%s).\n\n**Facts:** %s.\n\n**Bench:** %s.\n", strings.Join(p.Pack.Flags, " "), mdEscape(p.Pack.Why), mdEscape(factsLine(p)), mdEscape(p.Bench))
	for _, x := range p.Notes {
		fmt.Fprintf(&b, "\n> Note: %s.\n", mdEscape(x))
	}
	return b.String()
}

// mdEscape keeps table cells intact, as measure's Markdown does.
func mdEscape(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "<", "&lt;", ">", "&gt;").Replace(s)
}
