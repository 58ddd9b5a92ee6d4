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

// TestMeasureOutputExtension: an -o extension no report format writes is
// refused before the bundle is read (or a cluster dialled), naming the
// extension and the ones that work; --format overrides the extension.
func TestMeasureOutputExtension(t *testing.T) {
	dir := t.TempDir()
	yaml := filepath.Join(dir, "x.yaml")
	for _, args := range [][]string{
		{"--from", filepath.Join(dir, "no-such-bundle"), "-o", yaml},
		{"watch", "-l", "app=vllm", "--kubeconfig", filepath.Join(dir, "no-such-kubeconfig"), "-o", yaml},
		{"run", "--deployment", "d", "-n", "llm", "--kubeconfig", filepath.Join(dir, "no-such-kubeconfig"), "-o", yaml},
		{"compare", "a.json", "b.json", "-o", yaml},
	} {
		_, err := runMeasure(t, args...)
		var ue usageError
		if err == nil || !errors.As(err, &ue) || !strings.Contains(err.Error(), "cannot write a .yaml file") ||
			!strings.Contains(err.Error(), ".txt, .text, .md, .markdown, .json, .svg") {
			t.Errorf("%q: %v, want a usage error naming .yaml and the extensions that work", args, err)
		}
	}
	if _, err := os.Stat(yaml); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("x.yaml: %v, want none written", err)
	}
	for _, name := range []string{"x.yaml", "report", "report.TXT"} {
		if _, err := runMeasure(t, "--from", filepath.Join(measureFixtures, "cached-image"), "--format", "text", "-o", filepath.Join(dir, name)); err != nil {
			t.Errorf("--format text -o %s: %v", name, err)
		}
	}
	if _, err := runMeasure(t, "--from", filepath.Join(measureFixtures, "cached-image"), "-o", filepath.Join(dir, "plain")); err != nil {
		t.Errorf("-o with no extension (text): %v", err)
	}
}

// TestMeasureWarnsInvalidData: a timestamp no cold start can have (here a
// Ready condition before the pod's creation) is named on stderr with the
// pod, the file and the field, and is in the report.
func TestMeasureWarnsInvalidData(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(measureFixtures, "slow-pull")
	for _, name := range []string{"pods.json", "events.json", "nodes.json", "logs/llm_llama70b-vllm-0_vllm.log"} {
		data, err := os.ReadFile(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "pods.json" {
			data = bytes.Replace(data, []byte(`"lastTransitionTime": "2025-03-14T13:10:10Z", "status": "True", "type": "Ready"`),
				[]byte(`"lastTransitionTime": "2025-03-14T12:59:00Z", "status": "True", "type": "Ready"`), 1)
		}
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	r := runInProcess(t, "", "measure", "--from", dir)
	want := "warning: llm/llama70b-vllm-0: invalid data: pods.json: status.conditions[Ready].lastTransitionTime: 2025-03-14T12:59:00Z is before the pod's creation"
	if r.code != 0 || !strings.Contains(r.stderr, want) || !strings.Contains(r.stdout, "  invalid data: pods.json: status.conditions[Ready]") ||
		strings.Contains(r.stdout, " 0.0 s from creation") {
		t.Errorf("exit %d\nstderr %s\nstdout %s\nwant on stderr %q", r.code, r.stderr, r.stdout, want)
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

// copyMeasureFixture copies testdata/measure/NAME into a temporary
// directory, for tests that change it.
func copyMeasureFixture(t *testing.T, name string) string {
	t.Helper()
	dst := filepath.Join(t.TempDir(), name)
	if err := os.CopyFS(dst, os.DirFS(filepath.Join(measureFixtures, name))); err != nil {
		t.Fatal(err)
	}
	return dst
}

// TestMeasureCompareRefusesInputs: a file that cannot be compared (no cold
// starts, not a measure report though it has "version": 1, a cold start
// without the fields every report has, a missing file) fails with exit 2,
// naming the file and the problem, and prints no verdict; as BASE or NEW.
func TestMeasureCompareRefusesInputs(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "cached-image.json")
	if _, err := runMeasure(t, "--from", filepath.Join(measureFixtures, "cached-image"), "-o", good); err != nil {
		t.Fatal(err)
	}
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct{ file, want string }{
		{write("empty.json", `{"version":1,"cold_starts":[]}`), "empty.json: the report has no cold starts"},
		{filepath.Join("..", "..", "testdata", "plan", "bench.json"), `bench.json: not a cold-start report (modelcar measure --format json): no "cold_starts" list`},
		{write("null.json", `{"version":1,"cold_starts":null}`), `null.json: not a cold-start report (modelcar measure --format json): no "cold_starts" list`},
		{write("partial.json", `{"version":1,"cold_starts":[{"pod":"llm/a","phases":{"pull":3}}]}`), `partial.json: not a cold-start report (modelcar measure --format json): cold_starts[0] lacks "created", "total_seconds", "unattributed_seconds", "phases.provision"`},
		{write("array.json", `[1, 2]`), "array.json: decoding report"},
		{write("noversion.json", `{"cold_starts":[]}`), `noversion.json: not a cold-start report (modelcar measure --format json): no "version"`},
		{filepath.Join(dir, "nope.json"), "nope.json: no such file"},
	} {
		for _, args := range [][]string{{good, tc.file}, {tc.file, good}} {
			r := run(t, nil, append([]string{"measure", "compare"}, args...)...)
			if r.code != 2 || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
				t.Errorf("compare %q: exit %d, stdout %q, stderr %q; want exit 2 and %q", args, r.code, r.stdout, r.stderr, tc.want)
			}
		}
	}
}

// TestMeasureCompareNeverReady: a pod of NEW that never became Ready fails
// the gate (exit 1, like a regression) even though its numbers, which end
// at the last thing seen, do not regress; the diff says so. In BASE it is
// a note.
func TestMeasureCompareNeverReady(t *testing.T) {
	bundle := copyMeasureFixture(t, "slow-pull")
	pods := filepath.Join(bundle, "pods.json")
	data, err := os.ReadFile(pods)
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	for _, c := range doc["items"].([]any)[0].(map[string]any)["status"].(map[string]any)["conditions"].([]any) {
		if c := c.(map[string]any); c["type"] == "Ready" || c["type"] == "ContainersReady" {
			c["status"] = "False"
		}
	}
	data, _ = json.Marshal(doc)
	if err := os.WriteFile(pods, data, 0o644); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	base, notReady := filepath.Join(dir, "slow-pull.json"), filepath.Join(dir, "not-ready.json")
	if _, err := runMeasure(t, "--from", filepath.Join(measureFixtures, "slow-pull"), "-o", base); err != nil {
		t.Fatal(err)
	}
	if out, err := runMeasure(t, "--from", bundle); err != nil || !strings.Contains(out, "never Ready") {
		t.Fatalf("the report of the changed bundle: %v\n%s", err, out)
	}
	if _, err := runMeasure(t, "--from", bundle, "-o", notReady); err != nil {
		t.Fatal(err)
	}

	r := run(t, nil, "measure", "compare", base, notReady)
	if r.code != 1 || !strings.Contains(r.stderr, "not-ready.json: never Ready: llm/llama70b-vllm-0") {
		t.Errorf("never Ready in NEW: exit %d, stderr %q; want exit 1 naming the file and the pod", r.code, r.stderr)
	}
	if !strings.Contains(r.stdout, "failed: never Ready in the new report: llm/llama70b-vllm-0") || strings.Contains(r.stdout, "no regression") {
		t.Errorf("never Ready in NEW, the diff:\n%s", r.stdout)
	}
	out, err := runMeasure(t, "compare", base, notReady, "--format", "md")
	if err == nil || !strings.Contains(out, "**Failed: never Ready in the new report: llm/llama70b-vllm-0.**") || strings.Contains(out, "No regression") {
		t.Errorf("never Ready in NEW, md: %v\n%s", err, out)
	}
	out, err = runMeasure(t, "compare", base, notReady, "--format", "json")
	var diff measure.Diff
	if jerr := json.Unmarshal([]byte(out), &diff); jerr != nil || err == nil || !diff.Regressed || len(diff.NotReady) != 1 {
		t.Errorf("never Ready in NEW, json: %v, %v\n%s", err, jerr, out)
	}
	// In the base it is noted; the new report's pod was Ready.
	r = run(t, nil, "measure", "compare", notReady, base)
	if r.code == 2 || !strings.Contains(r.stdout, "note: in the base, llm/llama70b-vllm-0 never became Ready") || strings.Contains(r.stdout, "failed:") {
		t.Errorf("never Ready in BASE: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
}
