package measure

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
)

// MinRegressionSeconds is the smallest increase Compare counts as a
// regression, whatever the percentage: a warmup going from 2 s to 2.5 s is
// +25% but noise, and must not fail CI.
const MinRegressionSeconds = 1.0

// A Diff compares two reports phase by phase. Each value is the median
// (p50) over a report's cold starts: for a report of one, that cold start.
type Diff struct {
	// MaxRegression is the allowed increase as a fraction (0.1 = 10%).
	MaxRegression float64 `json:"max_regression"`
	// MinSeconds is MinRegressionSeconds: smaller increases never regress.
	MinSeconds float64   `json:"min_seconds"`
	BasePods   int       `json:"base_pods"`
	NewPods    int       `json:"new_pods"`
	Rows       []DiffRow `json:"rows"`
	// Regressed is the verdict: a gated row regressed, or a pod of the new
	// report never became Ready.
	Regressed bool `json:"regressed"`
	// NotReady lists the new report's pods that never became Ready: their
	// "total" ends at the last thing seen, so they fail the comparison
	// whatever their numbers.
	NotReady []string `json:"not_ready,omitempty"`
	// Notes warn about comparisons of unequal data (a phase one report
	// could not attribute).
	Notes []string `json:"notes,omitempty"`
}

// A DiffRow compares one quantity: "total", a phase, or "unattributed".
type DiffRow struct {
	Name  string  `json:"name"`
	Base  float64 `json:"base"`
	New   float64 `json:"new"`
	Delta float64 `json:"delta"`
	// Change is Delta/Base; absent when Base is 0.
	Change *float64 `json:"change,omitempty"`
	// Gated rows can fail the comparison: the total and the four phases,
	// not unattributed time.
	Gated     bool `json:"gated"`
	Regressed bool `json:"regressed"`
}

// Compare compares new against base. A gated row regresses when it grew by
// at least MinRegressionSeconds and by more than maxRegression of its base
// value (any growth of at least MinRegressionSeconds when the base is 0).
// regressed reports whether any row did, or a cold start of new never
// became Ready (listed in NotReady). Reports with no cold starts compare as
// zeros with a note: callers gating on the result should refuse them first.
func Compare(base, new *Report, maxRegression float64) (diff *Diff, regressed bool) {
	d := &Diff{MaxRegression: maxRegression, MinSeconds: MinRegressionSeconds, BasePods: len(base.ColdStarts), NewPods: len(new.ColdStarts)}
	median := func(r *Report, f func(c *ColdStart) float64) float64 {
		var v []float64
		for i := range r.ColdStarts {
			v = append(v, f(&r.ColdStarts[i]))
		}
		slices.Sort(v)
		return percentile(v, .5)
	}
	add := func(name string, gated bool, f func(c *ColdStart) float64) {
		row := DiffRow{Name: name, Base: median(base, f), New: median(new, f), Gated: gated}
		row.Delta = round3(row.New - row.Base)
		if row.Base > 0 {
			ch := round3(row.Delta / row.Base)
			row.Change = &ch
		}
		row.Regressed = gated && row.Delta >= MinRegressionSeconds && (row.Base <= 0 || row.Delta > row.Base*maxRegression+1e-9)
		d.Regressed = d.Regressed || row.Regressed
		d.Rows = append(d.Rows, row)
	}
	add("total", true, func(c *ColdStart) float64 { return c.TotalSeconds })
	for _, ph := range PhaseNames {
		add(ph, true, func(c *ColdStart) float64 { return c.Phases.Get(ph) })
	}
	add(Unattributed, false, func(c *ColdStart) float64 { return c.UnattributedSeconds })
	for _, ph := range PhaseNames {
		known := func(r *Report) int {
			n := 0
			for i := range r.ColdStarts {
				if phaseDetail(&r.ColdStarts[i], ph).Known {
					n++
				}
			}
			return n
		}
		if kb, kn := known(base), known(new); kb*d.NewPods != kn*d.BasePods {
			d.Notes = append(d.Notes, fmt.Sprintf("%s is attributed in %d of %d base and %d of %d new cold starts: compare it with care", ph, kb, d.BasePods, kn, d.NewPods))
		}
	}
	if d.BasePods == 0 || d.NewPods == 0 {
		d.Notes = append(d.Notes, "a report has no cold starts")
	}
	for i := range new.ColdStarts {
		if new.ColdStarts[i].Ready.IsZero() {
			d.NotReady = append(d.NotReady, new.ColdStarts[i].Pod)
			d.Regressed = true
		}
	}
	var baseNotReady []string
	for i := range base.ColdStarts {
		if base.ColdStarts[i].Ready.IsZero() {
			baseNotReady = append(baseNotReady, base.ColdStarts[i].Pod)
		}
	}
	if len(baseNotReady) > 0 {
		d.Notes = append(d.Notes, fmt.Sprintf("in the base, %s never became Ready: its values end at the last thing seen", strings.Join(baseNotReady, ", ")))
	}
	return d, d.Regressed
}

// RenderDiff writes the comparison as text, md or json.
func RenderDiff(w io.Writer, d *Diff, f Format) error {
	change := func(r DiffRow) string {
		s := fmt.Sprintf("%+.1f s", r.Delta)
		if r.Change != nil {
			s += fmt.Sprintf(" (%+.1f%%)", 100**r.Change)
		} else if r.Delta != 0 {
			s += " (new)"
		}
		return s
	}
	verdict := func(r DiffRow, md bool) string {
		switch {
		case r.Regressed && md:
			return "❌ regressed"
		case r.Regressed:
			return "REGRESSED"
		case !r.Gated:
			return "not gated"
		case md:
			return "✅"
		}
		return "ok"
	}
	var names []string
	for _, r := range d.Rows {
		if r.Regressed {
			names = append(names, r.Name)
		}
	}
	rule := fmt.Sprintf("a phase or the total regresses when it grows by more than %s and by at least %s s; values are the p50 over each report's cold starts (base %d, new %d)",
		trimFloat(100*d.MaxRegression)+"%", trimFloat(d.MinSeconds), d.BasePods, d.NewPods)
	switch f {
	case JSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(d)
	case Markdown:
		var b strings.Builder
		b.WriteString("## Cold start comparison\n\n| | Base (s) | New (s) | Change | |\n|---|---:|---:|---:|---|\n")
		for _, r := range d.Rows {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s |\n", r.Name, fsec(r.Base), fsec(r.New), change(r), verdict(r, true))
		}
		if len(d.NotReady) > 0 {
			fmt.Fprintf(&b, "\n**Failed: never Ready in the new report: %s.**\n", mdEscape(strings.Join(d.NotReady, ", ")))
		}
		if len(names) > 0 {
			fmt.Fprintf(&b, "\n**Regressed: %s.**", strings.Join(names, ", "))
		} else if d.Regressed {
			b.WriteString("\n**No phase regressed.**")
		} else {
			b.WriteString("\n**No regression.**")
		}
		fmt.Fprintf(&b, " Rule: %s.\n", rule)
		for _, n := range d.Notes {
			fmt.Fprintf(&b, "\n> Note: %s.\n", mdEscape(n))
		}
		_, err := io.WriteString(w, b.String())
		return err
	case Text:
		fmt.Fprintf(w, "%-13s %9s %9s  %s\n", "", "base (s)", "new (s)", "change")
		for _, r := range d.Rows {
			fmt.Fprintf(w, "%-13s %9s %9s  %-22s %s\n", r.Name, fsec(r.Base), fsec(r.New), change(r), verdict(r, false))
		}
		if len(d.NotReady) > 0 {
			fmt.Fprintf(w, "failed: never Ready in the new report: %s\n", strings.Join(d.NotReady, ", "))
		}
		if len(names) > 0 {
			fmt.Fprintf(w, "regressed: %s\n", strings.Join(names, ", "))
		} else if !d.Regressed {
			fmt.Fprintln(w, "no regression")
		}
		fmt.Fprintf(w, "rule: %s\n", rule)
		for _, n := range d.Notes {
			fmt.Fprintf(w, "note: %s\n", n)
		}
		return nil
	}
	return fmt.Errorf("format %q: a comparison renders as text, md or json", f)
}
