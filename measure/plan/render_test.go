package plan

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/modelcar/modelcar/measure"
)

var update = flag.Bool("update", false, "rewrite testdata/plan/golden/* from the current output")

// otherImage is of a repository none of the recorded reports has.
const otherImage = "registry.example.com/models/qwen@sha256:abababababababababababababababababababababababababababababababab"

var gpuToleration = []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}}

// TestPlanRenderGolden: each format, on reports of each kind, byte for byte.
// Regenerate with `go test ./measure/plan -run TestPlanRenderGolden -update`
// and read the diff.
func TestPlanRenderGolden(t *testing.T) {
	stargz, src := loadFacts(t, "facts-stargz.yaml")
	old, oldSrc := loadFacts(t, "facts-old-overlayfs.json")
	for _, tc := range []struct {
		golden, report string
		format         measure.Format
		opts           Options
	}{
		{"provision-scaleup.txt", "provision-scaleup.json", measure.Text, Options{}},
		{"pull-gzip-stargz-bench.md", "pull-gzip.json", measure.Markdown, Options{Facts: stargz, Sources: src, Bench: loadBench(t), BenchFrom: "bench.json"}},
		{"pull-gzip-stargz-bench.txt", "pull-gzip.json", measure.Text, Options{Facts: stargz, Sources: src, Bench: loadBench(t), BenchFrom: "bench.json"}},
		{"multi-pod.json", "multi-pod.json", measure.JSON, Options{}},
		{"missing-logs.txt", "missing-logs.json", measure.Text, Options{}},
		{"slow-pull-old.md", "slow-pull.json", measure.Markdown, Options{Facts: old, Sources: oldSrc}},
		// --image of a repository the report does not have (a new image): a
		// warning, the report's model image standing in for it; the warm
		// commands carry the namespace, node selector and tolerations.
		{"pull-gzip-other-image.md", "pull-gzip.json", measure.Markdown, Options{Image: otherImage, Namespace: "llm",
			NodeSelector: map[string]string{"nvidia.com/gpu.present": "true"}, Tolerations: gpuToleration}},
		{"pull-gzip-other-image.txt", "pull-gzip.json", measure.Text, Options{Image: otherImage, Namespace: "llm",
			NodeSelector: map[string]string{"nvidia.com/gpu.present": "true"}, Tolerations: gpuToleration}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			p := compute(t, tc.report, tc.opts)
			var buf bytes.Buffer
			if err := Render(&buf, p, tc.format); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(fixtures, "golden", tc.golden)
			if *update {
				if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if got := buf.String(); got != string(want) {
				w, g := strings.Split(string(want), "\n"), strings.Split(got, "\n")
				i := 0
				for i < min(len(w), len(g)) && w[i] == g[i] {
					i++
				}
				t.Errorf("%s differs from line %d on (run with -update and read the diff); got:\n%s", path, i+1, strings.Join(g[i:min(len(g), i+3)], "\n"))
			}
		})
	}
}

// TestPlanRenderJSONRoundTrip: the JSON is the Plan, whole.
func TestPlanRenderJSONRoundTrip(t *testing.T) {
	stargz, src := loadFacts(t, "facts-stargz.yaml")
	p := compute(t, "pull-gzip.json", Options{Facts: stargz, Sources: src, Bench: loadBench(t)})
	var buf bytes.Buffer
	if err := Render(&buf, p, measure.JSON); err != nil {
		t.Fatal(err)
	}
	var back Plan
	if err := json.Unmarshal(buf.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.Version != Version || len(back.Levers) != len(p.Levers) || back.Lever(LeverLazyPull).FirstReadSavingSeconds != 210.94 ||
		*back.Facts.ImageVolumes != true || back.FactSources["imageVolumes"] != "kubernetesVersion 1.35.1 ≥ 1.35: on by default" {
		t.Errorf("round trip: %+v", back)
	}
	if err := Render(&buf, p, measure.SVG); err == nil {
		t.Error("svg rendered")
	}
}
