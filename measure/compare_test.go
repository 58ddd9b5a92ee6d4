package measure

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func report(cs ...ColdStart) *Report {
	for i := range cs {
		cs[i].Ready = t0.Add(time.Duration(cs[i].TotalSeconds * float64(time.Second)))
		cs[i].Details.Provision.Known, cs[i].Details.Pull.Known = true, true
		cs[i].Details.Load.Known, cs[i].Details.Warmup.Known = true, true
	}
	return &Report{Version: Version, ColdStarts: cs}
}

func cold(provision, pull, load, warmup float64) ColdStart {
	return ColdStart{Phases: Phases{provision, pull, load, warmup}, TotalSeconds: provision + pull + load + warmup}
}

func rows(d *Diff) map[string]DiffRow {
	m := map[string]DiffRow{}
	for _, r := range d.Rows {
		m[r.Name] = r
	}
	return m
}

func TestCompare(t *testing.T) {
	base := analyzeFixture(t, "cached-image")
	if d, regressed := Compare(base, base, 0.1); regressed || d.Regressed || len(d.Notes) != 0 {
		t.Errorf("a report regressed against itself: %+v", d)
	}
	slow := analyzeFixture(t, "slow-pull")
	d, regressed := Compare(base, slow, 0.1)
	if !regressed {
		t.Fatal("cached → slow pull did not regress")
	}
	got := rows(d)
	for name, want := range map[string]bool{"total": true, "provision": false, "pull": true, "load": true, "warmup": true, "unattributed": false} {
		if got[name].Regressed != want {
			t.Errorf("%s regressed = %v, want %v (%+v)", name, got[name].Regressed, want, got[name])
		}
	}
	if got["pull"].Change != nil || got["pull"].Delta != 450.591 {
		t.Errorf("pull from 0: %+v", got["pull"])
	}
	if got["unattributed"].Gated {
		t.Error("unattributed is gated")
	}
}

// TestCompareNoise: changes under a second never regress, whatever the
// percentage; larger ones regress past the threshold only.
func TestCompareNoise(t *testing.T) {
	for _, tc := range []struct {
		base, new ColdStart
		limit     float64
		want      bool
	}{
		{cold(0.1, 2, 10, 20), cold(0.1, 2.9, 10, 20), 0.1, false},   // pull +45% but +0.9 s
		{cold(0.1, 0, 10, 20), cold(0.1, 0.8, 10, 20), 0.1, false},   // from nothing, under 1 s
		{cold(0.1, 0, 10, 20), cold(0.1, 1.5, 10, 20), 0.1, true},    // from nothing, 1.5 s
		{cold(5, 40, 10, 20), cold(5, 44.5, 10, 20), 0.1, true},      // pull +11.25%
		{cold(5, 40, 10, 20), cold(5, 44.5, 10, 20), 0.2, false},     // under 20%
		{cold(5, 40, 10, 20), cold(5, 44, 10, 20), 0.1, false},       // exactly 10% is allowed
		{cold(5, 40, 10, 20), cold(0.5, 40, 10, 20), 0.1, false},     // faster
		{cold(50, 50, 10, 20), cold(10, 50, 10, 31.5), 0.1, true},    // total faster, warmup +57%
		{cold(1, 1, 100, 900), cold(1, 1, 100, 990.5), 0.1, true},    // total +9%, warmup +10.05%
		{cold(1, 1, 100, 900), cold(1, 1, 100, 980), 0.1, false},     // total +8%, warmup +8.9%
		{cold(1, 1, 100, 900), cold(1, 1, 100, 980), 0.05, true},     // past 5%
		{cold(0, 0, 0, 0), cold(0, 0, 0, 0.5), 0, false},             // zero tolerance still ignores noise
		{cold(10, 10, 10, 10), cold(10, 10, 10, 11), 0, true},        // zero tolerance
		{cold(10, 10, 10, 10), cold(10, 10, 10, 10.999), 0.0, false}, // just under a second
	} {
		d, regressed := Compare(report(tc.base), report(tc.new), tc.limit)
		if regressed != tc.want {
			t.Errorf("%v → %v at %g: regressed = %v, want %v: %+v", tc.base.Phases, tc.new.Phases, tc.limit, regressed, tc.want, d.Rows)
		}
	}
}

// TestCompareMedians: several cold starts compare by their p50.
func TestCompareMedians(t *testing.T) {
	base := report(cold(1, 10, 10, 10), cold(1, 30, 10, 10), cold(1, 20, 10, 10))
	next := report(cold(1, 100, 10, 10), cold(1, 21, 10, 10), cold(1, 20, 10, 10))
	d, regressed := Compare(base, next, 0.1)
	if regressed || rows(d)["pull"].Base != 20 || rows(d)["pull"].New != 21 {
		t.Errorf("medians: %+v", rows(d)["pull"])
	}
}

func TestCompareNotesMissingData(t *testing.T) {
	d, _ := Compare(analyzeFixture(t, "cached-image"), analyzeFixture(t, "missing-logs"), 0.1)
	notes := strings.Join(d.Notes, "\n")
	if !strings.Contains(notes, "load is attributed in 1 of 1 base and 0 of 1 new") || !strings.Contains(notes, "warmup") {
		t.Errorf("notes = %q", d.Notes)
	}
}

func TestRenderDiff(t *testing.T) {
	d, _ := Compare(analyzeFixture(t, "cached-image"), analyzeFixture(t, "slow-pull"), 0.1)
	var md, txt, js bytes.Buffer
	for _, f := range []struct {
		w *bytes.Buffer
		f Format
	}{{&md, Markdown}, {&txt, Text}, {&js, JSON}} {
		if err := RenderDiff(f.w, d, f.f); err != nil {
			t.Fatal(err)
		}
	}
	if n := checkMarkdownTables(t, "diff", md.String()); n != 1 {
		t.Errorf("%d tables in the diff", n)
	}
	for _, want := range []string{
		"| pull | 0.0 | 450.6 | +450.6 s (new) | ❌ regressed |",
		"| provision | 0.8 | 0.5 | -0.3 s (-39.3%) | ✅ |",
		"**Regressed: total, pull, load, warmup.**",
		"by more than 10% and by at least 1 s",
	} {
		if !strings.Contains(md.String(), want) {
			t.Errorf("markdown diff lacks %q:\n%s", want, md.String())
		}
	}
	if !strings.Contains(txt.String(), "REGRESSED") || !strings.Contains(txt.String(), "regressed: total, pull, load, warmup") {
		t.Errorf("text diff:\n%s", txt.String())
	}
	if !strings.Contains(js.String(), `"regressed": true`) {
		t.Errorf("json diff:\n%s", js.String())
	}
	if err := RenderDiff(&md, d, SVG); err == nil {
		t.Error("an SVG diff did not fail")
	}
}

// TestCompareNeverReady: a cold start of the new report that never became
// Ready fails the comparison whatever its numbers, and the diff says so in
// every format; in the base report it is a note.
func TestCompareNeverReady(t *testing.T) {
	ready := analyzeFixture(t, "slow-pull")
	stuck := analyzeFixture(t, "slow-pull")
	stuck.ColdStarts[0].Ready = time.Time{}
	d, regressed := Compare(ready, stuck, 0.1)
	if !regressed || !d.Regressed || len(d.NotReady) != 1 || d.NotReady[0] != "llm/llama70b-vllm-0" {
		t.Errorf("never Ready in new: regressed %v, %+v", regressed, d)
	}
	for _, r := range d.Rows {
		if r.Regressed {
			t.Errorf("row %s regressed with equal numbers", r.Name)
		}
	}
	var txt, md, js bytes.Buffer
	RenderDiff(&txt, d, Text)
	RenderDiff(&md, d, Markdown)
	RenderDiff(&js, d, JSON)
	if !strings.Contains(txt.String(), "failed: never Ready in the new report: llm/llama70b-vllm-0\n") || strings.Contains(txt.String(), "no regression") {
		t.Errorf("text:\n%s", txt.String())
	}
	if !strings.Contains(md.String(), "**Failed: never Ready in the new report: llm/llama70b-vllm-0.**") || !strings.Contains(md.String(), "**No phase regressed.**") {
		t.Errorf("md:\n%s", md.String())
	}
	if !strings.Contains(js.String(), `"not_ready": [`) || !strings.Contains(js.String(), `"regressed": true`) {
		t.Errorf("json:\n%s", js.String())
	}

	d, regressed = Compare(stuck, ready, 0.1)
	if regressed || len(d.NotReady) != 0 || !strings.Contains(strings.Join(d.Notes, "\n"), "in the base, llm/llama70b-vllm-0 never became Ready") {
		t.Errorf("never Ready in base: regressed %v, %+v", regressed, d)
	}
}

// TestReadReportShape: ReadReport reads what Render writes (and the reports
// recorded for plan), and refuses JSON that is not a report even when it
// has "version": 1, naming what is wrong.
func TestReadReportShape(t *testing.T) {
	var buf bytes.Buffer
	if err := Render(&buf, analyzeFixture(t, "multi-pod"), JSON); err != nil {
		t.Fatal(err)
	}
	if r, err := ReadReport(&buf); err != nil || len(r.ColdStarts) != 3 {
		t.Fatalf("a rendered report: %v", err)
	}
	for _, name := range []string{"slow-pull.json", "pull-gzip.json", "warmup-compile.json"} {
		f, err := os.Open(filepath.Join("..", "testdata", "plan", name))
		if err != nil {
			t.Fatal(err)
		}
		_, err = ReadReport(f)
		f.Close()
		if err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
	if r, err := ReadReport(strings.NewReader(`{"version":1,"cold_starts":[]}`)); err != nil || len(r.ColdStarts) != 0 {
		t.Errorf("a report with no cold starts is well formed: %v", err)
	}
	bench, err := os.ReadFile(filepath.Join("..", "testdata", "plan", "bench.json"))
	if err != nil {
		t.Fatal(err)
	}
	var full map[string]any
	json.Unmarshal([]byte(`{"pod":"a","created":"2025-03-14T12:00:00Z","total_seconds":1,"unattributed_seconds":0,"phases":{"provision":1,"pull":0,"load":0,"warmup":0}}`), &full)
	for in, want := range map[string]string{
		string(bench):                               `not a cold-start report (modelcar measure --format json): no "cold_starts" list (its fields: "link_mbit", "model_bytes", "results", "version")`,
		`{"version":1}`:                             `no "cold_starts" list`,
		`{"version":1,"cold_starts":null}`:          `no "cold_starts" list`,
		`{"version":1,"cold_starts":{}}`:            `"cold_starts" is not a list of cold starts`,
		`{"version":1,"cold_starts":[1]}`:           `"cold_starts" is not a list of cold starts`,
		`{"cold_starts":[]}`:                        `not a cold-start report (modelcar measure --format json): no "version"`,
		`[]`:                                        "decoding report",
		`null`:                                      "it is not a JSON object",
		`{"version":2,"cold_starts":[]}`:            "report version 2: this modelcar reads version 1",
		`{"version":1,"cold_starts":[{}]}`:          `cold_starts[0] lacks "pod", "created", "total_seconds", "phases", "unattributed_seconds"`,
		withColdStart(full, "phases", nil):          `cold_starts[0] lacks "phases" as an object`,
		withColdStart(full, "pod", nil):             `cold_starts[0] lacks "pod"`,
		withColdStart(full, "total_seconds", -8500): `cold_starts[0].total_seconds is negative (-8500 s)`,
		withColdStart(full, "phases", map[string]any{"pull": 1}): `cold_starts[0] lacks "phases.provision", "phases.load", "phases.warmup"`,
	} {
		if _, err := ReadReport(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.60s: err = %v, want %q", in, err, want)
		}
	}
	if _, err := ReadReport(strings.NewReader(withColdStart(full, "x", 1))); err != nil {
		t.Errorf("a complete cold start (and an unknown field): %v", err)
	}
}

// withColdStart returns a one-cold-start report of c with key set to v,
// or removed when v is nil and key is not "phases" ("phases": null).
func withColdStart(c map[string]any, key string, v any) string {
	m := map[string]any{}
	for k, x := range c {
		m[k] = x
	}
	if v == nil && key != "phases" {
		delete(m, key)
	} else {
		m[key] = v
	}
	b, _ := json.Marshal(map[string]any{"version": 1, "cold_starts": []any{m}})
	return string(b)
}
