package plan

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/modelcar/modelcar/deploy"
	"github.com/modelcar/modelcar/warm"
)

// documents decodes a YAML stream into its objects.
func documents(t *testing.T, data []byte) []map[string]any {
	t.Helper()
	dec := yaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []map[string]any
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if err.Error() == "EOF" {
				return out
			}
			t.Fatalf("%v\n%s", err, data)
		}
		if m != nil {
			out = append(out, m)
		}
	}
}

func get(obj any, path ...string) any {
	for _, p := range path {
		m, ok := obj.(map[string]any)
		if !ok {
			return nil
		}
		obj = m[p]
	}
	return obj
}

func TestPlanFiles(t *testing.T) {
	stargz, src := loadFacts(t, "facts-stargz.yaml")
	p := compute(t, "provision-scaleup.json", Options{Facts: stargz, Sources: src, Image: testImage})
	files, err := Files(p, EmitOptions{Image: testImage, Namespace: "llm", NodeSelector: map[string]string{"pool": "gpu"}})
	if err != nil {
		t.Fatal(err)
	}
	if got := sortedKeys(files); !slices.Equal(got, []string{PackFlagsFile, PoolFile, PrepullFile, ValuesFile}) {
		t.Fatalf("files = %q", got)
	}

	pre := documents(t, files[PrepullFile])
	if len(pre) != 1 || pre[0]["kind"] != "DaemonSet" || get(pre[0], "metadata", "namespace") != "llm" {
		t.Fatalf("prepull.yaml: %v", pre)
	}
	vols := get(pre[0], "spec", "template", "spec", "volumes").([]any)
	if ref := get(vols[0], "image", "reference"); ref != testImage {
		t.Errorf("pre-pulled image %v, want %s", ref, testImage)
	}
	if !bytes.Contains(files[PrepullFile], []byte("# not pre-pulled, not pinned by digest: vllm/vllm-openai:v0.8.5")) ||
		!bytes.HasPrefix(files[PrepullFile], []byte("# modelcar plan: prepull (pull), up to 72.5 s, medium confidence\n")) {
		t.Errorf("prepull.yaml header:\n%s", files[PrepullFile])
	}

	pool := documents(t, files[PoolFile])
	if len(pool) != 2 || pool[1]["kind"] != "Deployment" {
		t.Fatalf("pool.yaml: %v", pool)
	}
	c := get(pool[1], "spec", "template", "spec", "containers").([]any)[0]
	if gpus := get(c, "resources", "requests", "nvidia.com/gpu"); gpus != "8" { // gpusPerNode from the facts
		t.Errorf("placeholder GPUs %v, want 8", gpus)
	}
	if sel := get(pool[1], "spec", "template", "spec", "nodeSelector", "pool"); sel != "gpu" {
		t.Errorf("pool node selector %v", sel)
	}

	var vals map[string]any
	if err := sigsyaml.Unmarshal(files[ValuesFile], &vals); err != nil {
		t.Fatal(err)
	}
	if get(vals, "model", "image") != testImage || get(vals, "model", "delivery") != "imageVolume" ||
		get(vals, "vllm", "loadFormat") != "runai_streamer" || get(vals, "vllm", "readinessProbe", "periodSeconds") != 1.0 ||
		get(vals, "warmProbe", "enabled") != true {
		t.Errorf("values.yaml:\n%s", files[ValuesFile])
	}
	// The chart takes them: its schema and templates, over a user's values.
	user := map[string]any{"model": map[string]any{"servedModelName": "qwen"},
		"modelcar": map[string]any{"image": "registry.example.com/modelcar@sha256:" + strings.Repeat("fe", 32)}}
	merged, err := deploy.MergeValues(nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []map[string]any{user, vals} {
		mergeInto(merged, m)
	}
	if _, _, err := deploy.Render(context.Background(), deploy.RenderOptions{ReleaseName: "qwen", Namespace: "llm", Values: merged}); err != nil {
		t.Errorf("the chart refuses values.yaml: %v", err)
	}
	deploy.SetValue(merged, "vllm.loadFormats", "typo") // the check can fail
	if _, _, err := deploy.Render(context.Background(), deploy.RenderOptions{ReleaseName: "qwen", Namespace: "llm", Values: merged}); err == nil {
		t.Error("the chart took an unknown key: the check above proves nothing")
	}

	if want := "# modelcar pack flags from modelcar plan: the default: no pack lever applies\n"; !strings.HasPrefix(string(files[PackFlagsFile]), want) ||
		!strings.HasSuffix(string(files[PackFlagsFile]), "\n--format tar\n") {
		t.Errorf("pack-flags.txt:\n%s", files[PackFlagsFile])
	}
}

func mergeInto(dst, src map[string]any) {
	for k, v := range src {
		if sm, ok := v.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				mergeInto(dm, sm)
				continue
			}
		}
		dst[k] = v
	}
}

// TestPlanFilesModes: without image volumes the pre-pull is an init container
// and the chart uses the modelcar sidecar; a pinned report image gets its
// own DaemonSet; no pool file when warm-pool does not apply.
func TestPlanFilesModes(t *testing.T) {
	rep := loadReport(t, "multi-pod.json")
	pinned := "vllm/vllm-openai:v0.9.2@sha256:" + strings.Repeat("12", 32)
	for i := range rep.ColdStarts {
		for j := range rep.ColdStarts[i].Details.Images {
			rep.ColdStarts[i].Details.Images[j].Image = pinned
		}
	}
	p, err := Compute(rep, Options{Facts: Facts{ImageVolumes: new(false)}})
	if err != nil {
		t.Fatal(err)
	}
	files, err := Files(p, EmitOptions{Image: testImage, Namespace: "llm"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := files[PoolFile]; ok {
		t.Error("pool.yaml without a warm-pool lever")
	}
	docs := documents(t, files[PrepullFile])
	var images []string
	for _, d := range docs {
		inits := get(d, "spec", "template", "spec", "initContainers").([]any)
		images = append(images, get(inits[0], "image").(string))
	}
	if !slices.Equal(images, []string{testImage, pinned}) {
		t.Errorf("pre-pulled %q", images)
	}
	var vals map[string]any
	sigsyaml.Unmarshal(files[ValuesFile], &vals)
	if get(vals, "model", "delivery") != "modelcar" {
		t.Errorf("values.yaml:\n%s", files[ValuesFile])
	}
	if !bytes.Contains(files[PackFlagsFile], []byte("no image volumes: add --base IMAGE_WITH_A_SHELL")) || !bytes.HasSuffix(files[PackFlagsFile], []byte("\n--format tar\n")) {
		t.Errorf("pack-flags.txt:\n%s", files[PackFlagsFile])
	}
}

func TestPlanFilesRefusesTag(t *testing.T) {
	p := compute(t, "provision-scaleup.json", Options{})
	for _, img := range []string{"registry.example.com/models/qwen:v1", ""} {
		if _, err := Files(p, EmitOptions{Image: img}); err == nil {
			t.Errorf("%q: no error", img)
		}
	}
	if _, err := Files(p, EmitOptions{Image: "registry.example.com/models/qwen:v1"}); !errors.Is(err, warm.ErrNoDigest) {
		t.Errorf("a tag: %v, want ErrNoDigest", err)
	}
}

// TestPlanEmitAtomic: the directory appears whole, is replaced whole, and a failure
// leaves neither it nor a partial copy.
func TestPlanEmitAtomic(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "plan")
	scaleup := compute(t, "provision-scaleup.json", Options{})
	names, err := Emit(dir, scaleup, EmitOptions{Image: testImage})
	if err != nil || !slices.Equal(names, []string{PackFlagsFile, PoolFile, PrepullFile, ValuesFile}) {
		t.Fatalf("Emit = %q, %v", names, err)
	}
	// Again, for a plan without a pool: the old pool.yaml goes.
	warmup := compute(t, "warmup-compile.json", Options{})
	if names, err = Emit(dir, warmup, EmitOptions{Image: testImage}); err != nil || !slices.Equal(names, []string{PackFlagsFile, ValuesFile}) {
		t.Fatalf("re-Emit = %q, %v", names, err)
	}
	if ents := dirNames(t, dir); !slices.Equal(ents, []string{PackFlagsFile, ValuesFile}) {
		t.Errorf("after re-emit: %q", ents)
	}
	if ents := dirNames(t, parent); !slices.Equal(ents, []string{"plan"}) {
		t.Errorf("left in the parent: %q", ents)
	}

	// A directory with other files is not replaced.
	other := filepath.Join(parent, "other")
	os.Mkdir(other, 0o755)
	os.WriteFile(filepath.Join(other, "notes.txt"), []byte("mine"), 0o644)
	if _, err := Emit(other, warmup, EmitOptions{Image: testImage}); err == nil || !strings.Contains(err.Error(), "holds notes.txt") {
		t.Errorf("foreign directory: %v", err)
	}
	if ents := dirNames(t, other); !slices.Equal(ents, []string{"notes.txt"}) {
		t.Errorf("foreign directory changed: %q", ents)
	}

	// A write that fails half-way leaves nothing.
	calls := 0
	writeFile = func(name string, data []byte, perm os.FileMode) error {
		if calls++; calls == 2 {
			return errors.New("disk full")
		}
		return os.WriteFile(name, data, perm)
	}
	t.Cleanup(func() { writeFile = os.WriteFile })
	fresh := filepath.Join(parent, "fresh")
	if _, err := Emit(fresh, scaleup, EmitOptions{Image: testImage}); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Errorf("failed write: %v", err)
	}
	if ents := dirNames(t, parent); !slices.Equal(ents, []string{"other", "plan"}) {
		t.Errorf("after a failed emit the parent holds %q", ents)
	}
	// ... and an existing emit stays as it was.
	calls = 0
	if _, err := Emit(dir, scaleup, EmitOptions{Image: testImage}); err == nil {
		t.Error("failed write over an emit did not fail")
	}
	if ents := dirNames(t, dir); !slices.Equal(ents, []string{PackFlagsFile, ValuesFile}) {
		t.Errorf("the earlier emit changed: %q", ents)
	}
	// Nothing is written for an unpinned image.
	writeFile = os.WriteFile
	if _, err := Emit(fresh, scaleup, EmitOptions{Image: "registry.example.com/m:v1"}); !errors.Is(err, warm.ErrNoDigest) {
		t.Errorf("tag: %v", err)
	}
	if _, err := os.Stat(fresh); !os.IsNotExist(err) {
		t.Errorf("%s exists after a refused emit", fresh)
	}
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}
