package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcar/modelcar/measure"
)

const measureFixtures = "../../testdata/measure"

// runMeasure runs the measure command in-process (it is not registered on
// the root command yet).
func runMeasure(t *testing.T, args ...string) (stdout string, err error) {
	t.Helper()
	cmd := newMeasureCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	err = cmd.Execute()
	return out.String(), err
}

func TestMeasureFromBundle(t *testing.T) {
	out, err := runMeasure(t, "--from", filepath.Join(measureFixtures, "multi-pod"), "--format", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rep measure.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("stdout is not a JSON report: %v\n%s", err, out)
	}
	if rep.Version != 1 || len(rep.ColdStarts) != 3 || rep.Summary == nil || rep.Summary.Dominant != "pull" {
		t.Errorf("report = %+v", rep)
	}

	out, err = runMeasure(t, "--from", filepath.Join(measureFixtures, "multi-pod"), "--pod", "llm/phi-vllm-6b8f9d7c5-aaaaa")
	if err != nil || !strings.Contains(out, "llm/phi-vllm-6b8f9d7c5-aaaaa on gpu-node-1: 47.0 s") || strings.Contains(out, "bbbbb") {
		t.Errorf("--pod: %v\n%s", err, out)
	}

	out, err = runMeasure(t, "--from", filepath.Join(measureFixtures, "slow-pull"), "--format", "md")
	if err != nil || !strings.Contains(out, "| Phase | Seconds | Share | What it was |") || !strings.Contains(out, "modelcar warm prepull") {
		t.Errorf("md: %v\n%s", err, out)
	}
}

// TestMeasureOutputFile: -o writes the file whole, its extension picks the
// format, and stdout stays empty.
func TestMeasureOutputFile(t *testing.T) {
	dir := t.TempDir()
	svg := filepath.Join(dir, "cold.svg")
	out, err := runMeasure(t, "--from", filepath.Join(measureFixtures, "scaleup-karpenter"), "-o", svg)
	if err != nil || out != "" {
		t.Fatalf("%v, stdout %q", err, out)
	}
	data, err := os.ReadFile(svg)
	if err != nil || !bytes.HasPrefix(data, []byte("<?xml")) || !bytes.Contains(data, []byte(`data-phase="provision"`)) {
		t.Errorf("svg file: %v\n%.200s", err, data)
	}
	js := filepath.Join(dir, "cold.json")
	if _, err := runMeasure(t, "--from", filepath.Join(measureFixtures, "scaleup-karpenter"), "-o", js, "--format", "json"); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("temporary files left behind: %v", ents)
	}
}

func TestMeasureUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"--from", measureFixtures + "/cached-image", "extra"},
		{"--from", measureFixtures + "/cached-image", "--format", "html"},
		{"compare", "only-one.json"},
		{"compare", "a.json", "b.json", "--max-regression", "15"},
		{"compare", "a.json", "b.json", "--max-regression", "lots"},
		{"compare", "a.json", "b.json", "--format", "svg"},
	} {
		_, err := runMeasure(t, args...)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: err = %v, want a usage error", args, err)
		}
	}
	_, err := runMeasure(t, "--from", filepath.Join(measureFixtures, "nope"))
	var ue usageError
	if err == nil || errors.As(err, &ue) {
		t.Errorf("missing bundle: err = %v, want a plain error", err)
	}
}

func TestMeasureCompare(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"cached-image", "slow-pull"} {
		if _, err := runMeasure(t, "--from", filepath.Join(measureFixtures, name), "-o", filepath.Join(dir, name+".json")); err != nil {
			t.Fatal(err)
		}
	}
	base, slow := filepath.Join(dir, "cached-image.json"), filepath.Join(dir, "slow-pull.json")

	out, err := runMeasure(t, "compare", base, base, "--format", "md")
	if err != nil || !strings.Contains(out, "**No regression.**") {
		t.Errorf("same report: %v\n%s", err, out)
	}
	out, err = runMeasure(t, "compare", base, slow, "--max-regression", "25%", "--format", "md")
	if err == nil || !strings.Contains(err.Error(), "cold start regressed past 25%: total +558.0 s, pull +450.6 s") {
		t.Errorf("regression: err = %v", err)
	}
	var ue usageError
	if errors.As(err, &ue) {
		t.Error("a regression is a usage error (exit 2), want exit 1")
	}
	if !strings.Contains(out, "| pull | 0.0 | 450.6 | +450.6 s (new) | ❌ regressed |") {
		t.Errorf("the diff is not on stdout:\n%s", out)
	}
	// Faster is fine, and so is a fraction for the threshold.
	if out, err := runMeasure(t, "compare", slow, base, "--max-regression", "0.05"); err != nil || !strings.Contains(out, "no regression") {
		t.Errorf("faster: %v\n%s", err, out)
	}
	if _, err := runMeasure(t, "compare", base, filepath.Join(dir, "nope.json")); err == nil {
		t.Error("a missing report did not fail")
	}
}

func TestParseFraction(t *testing.T) {
	for in, want := range map[string]float64{"10%": 0.1, "2.5%": 0.025, "0%": 0, "0.1": 0.1, "1": 1, " 15 % ": 0.15} {
		if got, err := parseFraction(in); err != nil || got != want {
			t.Errorf("parseFraction(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"15", "-1%", "ten", ""} {
		if _, err := parseFraction(in); err == nil {
			t.Errorf("parseFraction(%q) did not fail", in)
		}
	}
}
