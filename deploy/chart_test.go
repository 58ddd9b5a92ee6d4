package deploy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/dynamic"

	"github.com/modelcar/modelcar/internal/testcluster"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

var update = flag.Bool("update", false, "rewrite testdata/deploy/*.golden.yaml from helm template")

const (
	testdataDir = "../testdata/deploy"
	releaseName = "llm"
	fullname    = "llm-vllm-modelcar"
	// goldenNamespace is the namespace the golden files are rendered in.
	goldenNamespace = "modelcar-test"

	modelImage    = "registry.modelcar.test/models/tiny-llama@sha256:4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c"
	modelcarImage = "registry.modelcar.test/modelcar@sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
	modelDir      = "sha256-4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c"
)

// goldenCases each render testdata/deploy/base.values.yaml (the required
// values) plus NAME.values.yaml into NAME.golden.yaml: every delivery mode,
// KEDA off and on.
var goldenCases = []struct {
	name     string
	delivery string
	keda     bool
	warm     bool
}{
	{"image-volume", "imageVolume", false, true},
	{"image-volume-keda", "imageVolume", true, true},
	{"modelcar", "modelcar", false, true},
	{"init-copy", "initCopy", false, true},
	{"init-copy-hostpath", "initCopy", false, false},
}

func kubeVersion() string { return strings.TrimPrefix(testcluster.KubernetesVersion, "v") }

// helmCLI runs the pinned helm binary with private HELM_*_HOME directories
// and a kubeconfig of the test's choosing (none unless a cluster is used).
type helmCLI struct {
	bin string
	env []string
}

func newHelm(t *testing.T, kubeconfig string) *helmCLI {
	t.Helper()
	bin := testcluster.HelmBinary(t)
	home := t.TempDir()
	if kubeconfig == "" {
		kubeconfig = filepath.Join(home, "no-kubeconfig") // never a developer's cluster
	}
	var env []string
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "HELM_") || k == "KUBECONFIG" {
			continue
		}
		env = append(env, kv)
	}
	env = append(env,
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+kubeconfig,
	)
	return &helmCLI{bin: bin, env: env}
}

func (h *helmCLI) run(args ...string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = h.env
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// valuesFiles returns the -f flags of a golden case.
func valuesFiles(name string) []string {
	return []string{"-f", filepath.Join(testdataDir, "base.values.yaml"), "-f", filepath.Join(testdataDir, name+".values.yaml")}
}

// template renders the chart in namespace with args (values flags); it
// fails the test when helm does.
func (h *helmCLI) template(t *testing.T, namespace string, args ...string) string {
	t.Helper()
	full := append([]string{"template", releaseName, ChartDir, "--namespace", namespace, "--kube-version", kubeVersion()}, args...)
	out, errOut, err := h.run(full...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(full, " "), err, errOut)
	}
	return out
}

// documents splits rendered manifests into objects.
func documents(t *testing.T, manifests string) []map[string]any {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(manifests), 4096)
	var docs []map[string]any
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			return docs
		} else if err != nil {
			t.Fatalf("rendered manifests do not parse: %v", err)
		}
		if len(obj) > 0 {
			docs = append(docs, obj)
		}
	}
}

func byKind(docs []map[string]any, kind string) []map[string]any {
	var out []map[string]any
	for _, d := range docs {
		if d["kind"] == kind {
			out = append(out, d)
		}
	}
	return out
}

// get walks obj by keys (string for a map, int for a list).
func get(obj any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := obj.(map[string]any)
			obj = m[k]
		case int:
			l, _ := obj.([]any)
			if k >= len(l) {
				return nil
			}
			obj = l[k]
		}
	}
	return obj
}

func named(list any, name string) map[string]any {
	l, _ := list.([]any)
	for _, x := range l {
		if m, _ := x.(map[string]any); m != nil && m["name"] == name {
			return m
		}
	}
	return nil
}

func strs(v any) []string {
	l, _ := v.([]any)
	out := make([]string, 0, len(l))
	for _, x := range l {
		out = append(out, fmt.Sprint(x))
	}
	return out
}

// flagValue returns the argument after flag in args ("" when absent).
func flagValue(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// TestChartLint: helm lint --strict is clean with the test values of every
// case (only the "icon is recommended" INFO line may appear).
func TestChartLint(t *testing.T) {
	h := newHelm(t, "")
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", ChartDir, "--namespace", goldenNamespace, "--kube-version", kubeVersion()}, valuesFiles(c.name)...)
			out, errOut, err := h.run(args...)
			if err != nil {
				t.Fatalf("helm lint --strict: %v\n%s%s", err, out, errOut)
			}
			if !strings.Contains(out, "1 chart(s) linted, 0 chart(s) failed") {
				t.Fatalf("helm lint did not pass:\n%s", out)
			}
			for _, line := range strings.Split(out, "\n") {
				if strings.HasPrefix(line, "[") && !strings.HasPrefix(line, "[INFO] Chart.yaml: icon is recommended") {
					t.Errorf("helm lint finding: %s", line)
				}
			}
		})
	}
	t.Run("without-required-values", func(t *testing.T) {
		out, errOut, err := h.run("lint", "--strict", ChartDir)
		if err == nil {
			t.Fatalf("helm lint passed without model.image and model.servedModelName:\n%s", out)
		}
		for _, want := range []string{"/model/image", "/model/servedModelName"} {
			if !strings.Contains(out+errOut, want) {
				t.Errorf("lint output does not name %s:\n%s%s", want, out, errOut)
			}
		}
	})
}

// TestChartGolden compares `helm template` of each case with its golden
// file (-update rewrites them) and checks rendering is deterministic.
func TestChartGolden(t *testing.T) {
	h := newHelm(t, "")
	want := map[string]bool{}
	for _, c := range goldenCases {
		want[c.name+".golden.yaml"] = true
		t.Run(c.name, func(t *testing.T) {
			out := h.template(t, goldenNamespace, valuesFiles(c.name)...)
			if again := h.template(t, goldenNamespace, valuesFiles(c.name)...); again != out {
				t.Fatalf("two renderings of the same values differ")
			}
			path := filepath.Join(testdataDir, c.name+".golden.yaml")
			if *update {
				if err := os.WriteFile(path, []byte(out), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			golden, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (run `go test ./deploy -run TestChartGolden -update` to create it)", err)
			}
			if string(golden) != out {
				t.Errorf("helm template differs from %s (run `go test ./deploy -run TestChartGolden -update` and review the diff):\n%s",
					path, firstDifference(string(golden), out))
			}
		})
	}
	files, _ := filepath.Glob(filepath.Join(testdataDir, "*.golden.yaml"))
	for _, f := range files {
		if !want[filepath.Base(f)] {
			t.Errorf("%s belongs to no case in goldenCases: remove it", f)
		}
	}
}

func firstDifference(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < max(len(w), len(g)); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			return fmt.Sprintf("line %d:\n  golden:   %q\n  rendered: %q", i+1, wl, gl)
		}
	}
	return "(no line differs)"
}

// TestChartRendered checks what each case must render, independently of the
// golden files (so an -update cannot bless a broken chart unnoticed).
func TestChartRendered(t *testing.T) {
	h := newHelm(t, "")
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			docs := documents(t, h.template(t, goldenNamespace, valuesFiles(c.name)...))
			deps := byKind(docs, "Deployment")
			if len(deps) != 1 {
				t.Fatalf("%d Deployments, want 1", len(deps))
			}
			dep := deps[0]
			pod := get(dep, "spec", "template", "spec")
			vllm := named(get(pod, "containers"), "vllm")
			if vllm == nil {
				t.Fatal("no vllm container")
			}
			if img, _ := vllm["image"].(string); !regexp.MustCompile(`^vllm/vllm-openai:v[0-9.]+@sha256:[a-f0-9]{64}$`).MatchString(img) {
				t.Errorf("vllm image %q is not pinned by digest", img)
			}
			args := strs(vllm["args"])
			if got := flagValue(args, "--served-model-name"); got == "" {
				t.Errorf("no --served-model-name in %q", args)
			}
			if got := flagValue(args, "--port"); got != "8000" {
				t.Errorf("--port %q, want 8000", got)
			}
			for _, f := range []string{"--tensor-parallel-size", "--load-format"} {
				if flagValue(args, f) == "" {
					t.Errorf("no %s in %q", f, args)
				}
			}
			env := get(vllm, "env")
			for _, name := range []string{"HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"} {
				if e := named(env, name); e == nil || e["value"] != "1" {
					t.Errorf("env %s is not 1: %v", name, e)
				}
			}
			if get(vllm, "resources", "limits", "nvidia.com/gpu") == nil {
				t.Error("no nvidia.com/gpu limit")
			}
			if get(vllm, "startupProbe", "httpGet", "path") != "/health" {
				t.Errorf("startupProbe is not on /health: %v", vllm["startupProbe"])
			}
			if get(pod, "enableServiceLinks") != false {
				t.Error("enableServiceLinks is not false (VLLM_PORT would be set for a Service named vllm)")
			}

			// Model delivery.
			modelPath := flagValue(args, "--model")
			vol := named(get(pod, "volumes"), "model")
			switch c.delivery {
			case "imageVolume":
				if modelPath != "/mnt/modelcar/models" {
					t.Errorf("--model %q, want /mnt/modelcar/models", modelPath)
				}
				if get(vol, "image", "reference") != modelImage || get(vol, "image", "pullPolicy") != "IfNotPresent" {
					t.Errorf("model volume is not the image volume of %s with IfNotPresent: %v", modelImage, vol)
				}
			case "modelcar":
				if modelPath != "/mnt/modelcar/models" {
					t.Errorf("--model %q, want /mnt/modelcar/models", modelPath)
				}
				if get(pod, "shareProcessNamespace") != true {
					t.Error("shareProcessNamespace is not true")
				}
				side := named(get(pod, "initContainers"), "modelcar")
				if side == nil || side["image"] != modelImage || side["restartPolicy"] != "Always" {
					t.Fatalf("no native sidecar running %s: %v", modelImage, side)
				}
				cmd := strings.Join(strs(side["command"]), " ")
				if !strings.Contains(cmd, "ln -sfn /proc/$$$$/root/models /mnt/modelcar/models") || !strings.Contains(cmd, "sleep infinity") {
					t.Errorf("sidecar command %q does not link /proc/$$/root/models", cmd)
				}
				if vol["emptyDir"] == nil {
					t.Errorf("model volume is not an emptyDir: %v", vol)
				}
			case "initCopy":
				if want := "/mnt/modelcar/" + modelDir; modelPath != want {
					t.Errorf("--model %q, want %s", modelPath, want)
				}
				pull := named(get(pod, "initContainers"), "pull-model")
				if pull == nil {
					t.Fatal("no pull-model init container")
				}
				pargs := strs(pull["args"])
				if len(pargs) < 3 || pargs[0] != "pull" || pargs[1] != modelImage || pargs[2] != "/cache/"+modelDir {
					t.Errorf("pull-model args %q, want pull %s /cache/%s", pargs, modelImage, modelDir)
				}
				if pull["image"] != modelcarImage {
					t.Errorf("pull-model runs %v, not modelcar.image", pull["image"])
				}
			}

			// Warm-up gate.
			warm := named(get(pod, "containers"), "warm")
			ready := get(vllm, "readinessProbe", "httpGet")
			if c.warm {
				if warm == nil {
					t.Fatal("no warm container")
				}
				wargs := strs(warm["args"])
				if !slices.Equal(wargs[:2], []string{"warm", "probe"}) || flagValue(wargs, "--listen") != ":8081" ||
					flagValue(wargs, "--url") != "http://127.0.0.1:8000" || flagValue(wargs, "--model") != flagValue(args, "--served-model-name") ||
					flagValue(wargs, "--workload") == "" {
					t.Errorf("warm args %q", wargs)
				}
				if get(warm, "securityContext", "readOnlyRootFilesystem") != true || get(warm, "securityContext", "runAsNonRoot") != true ||
					get(warm, "securityContext", "allowPrivilegeEscalation") != false {
					t.Errorf("warm securityContext %v", warm["securityContext"])
				}
				if get(ready, "path") != "/ready" || fmt.Sprint(get(ready, "port")) != "8081" {
					t.Errorf("readinessProbe %v, want /ready on 8081", ready)
				}
			} else {
				if warm != nil {
					t.Error("warm container with warmProbe.enabled=false")
				}
				if get(ready, "path") != "/health" {
					t.Errorf("readinessProbe %v, want vLLM's /health", ready)
				}
			}

			// KEDA owns the replica count when on.
			scaled := byKind(docs, "ScaledObject")
			_, hasReplicas := get(dep, "spec").(map[string]any)["replicas"]
			if c.keda {
				if hasReplicas {
					t.Error("the Deployment sets replicas although KEDA scales it")
				}
				if len(scaled) != 1 {
					t.Fatalf("%d ScaledObjects, want 1", len(scaled))
				}
				so := scaled[0]
				if get(so, "spec", "scaleTargetRef", "name") != get(dep, "metadata", "name") {
					t.Errorf("ScaledObject targets %v", get(so, "spec", "scaleTargetRef"))
				}
				trig := get(so, "spec", "triggers", 0)
				q, _ := get(trig, "metadata", "query").(string)
				if get(trig, "type") != "prometheus" || !strings.Contains(q, "vllm:num_requests_waiting") {
					t.Errorf("first trigger %v is not Prometheus on vllm:num_requests_waiting", trig)
				}
				if fmt.Sprint(get(so, "spec", "minReplicaCount")) != "0" {
					t.Errorf("minReplicaCount %v, want 0", get(so, "spec", "minReplicaCount"))
				}
			} else {
				if !hasReplicas {
					t.Error("the Deployment has no replicas without KEDA")
				}
				if len(scaled) != 0 {
					t.Error("a ScaledObject without keda.enabled")
				}
			}
			svc := byKind(docs, "Service")
			if len(svc) != 1 || named(get(svc[0], "spec", "ports"), "http") == nil {
				t.Errorf("no Service with an http port")
			}
			if c.warm != (len(svc) == 1 && named(get(svc[0], "spec", "ports"), "warm") != nil) {
				t.Errorf("Service warm port present = %v, want %v", !c.warm, c.warm)
			}
		})
	}
}

// TestChartValuesSchema: values.schema.json rejects a tag-only model image,
// negative replicas and unknown keys, naming the field; the template's own
// checks name theirs; what is allowed renders.
func TestChartValuesSchema(t *testing.T) {
	h := newHelm(t, "")
	base := []string{"-f", filepath.Join(testdataDir, "base.values.yaml")}
	rejects := []struct {
		name string
		args []string
		want []string
	}{
		{"tag-only model image", []string{"--set", "model.image=registry.modelcar.test/models/tiny-llama:v1"},
			[]string{"at '/model/image'", "'registry.modelcar.test/models/tiny-llama:v1' does not match pattern '@sha256:[a-f0-9]{64}$'"}},
		{"negative replicas", []string{"--set", "replicas=-1"},
			[]string{"at '/replicas'", "minimum: got -1, want 0"}},
		{"unknown top-level key", []string{"--set", "replica=2"},
			[]string{"additional properties 'replica' not allowed"}},
		{"unknown model key", []string{"--set", "model.imag=x"},
			[]string{"at '/model'", "additional properties 'imag' not allowed"}},
		{"unknown delivery", []string{"--set", "model.delivery=hostCopy"},
			[]string{"at '/model/delivery'", "value must be one of 'imageVolume', 'modelcar', 'initCopy'"}},
		{"tag-only modelcar image", []string{"--set", "modelcar.image=registry.modelcar.test/modelcar:latest"},
			[]string{"at '/modelcar/image'", "does not match pattern"}},
		{"malformed vLLM digest", []string{"--set", "vllm.image.digest=sha256:abc"},
			[]string{"at '/vllm/image/digest'"}},
		{"negative KEDA minimum", []string{"--set", "keda.minReplicaCount=-1"},
			[]string{"at '/keda/minReplicaCount'", "minimum"}},
		{"bad warm-up workload", []string{"--set-string", "warmProbe.workload=lots"},
			[]string{"at '/warmProbe/workload'"}},
		// Checks the schema cannot express, made by the templates.
		{"hostPath cache with a tag", []string{"--set", "model.image=registry.modelcar.test/models/tiny-llama:v1", "--set", "model.allowTag=true",
			"--set", "model.delivery=initCopy", "--set", "model.cache.hostPath=/var/lib/modelcar"},
			[]string{"model.cache.hostPath needs model.image pinned by digest"}},
		{"warm probe without modelcar image", []string{"--set", "modelcar.image="},
			[]string{"modelcar.image is required"}},
		{"KEDA without Prometheus", []string{"--set", "keda.enabled=true"},
			[]string{"keda.prometheus.serverAddress is required"}},
		{"KEDA minimum above maximum", []string{"--set", "keda.enabled=true", "--set", "keda.prometheus.serverAddress=http://p:9090",
			"--set", "keda.minReplicaCount=5", "--set", "keda.maxReplicaCount=2"},
			[]string{"keda.minReplicaCount (5) is above keda.maxReplicaCount (2)"}},
	}
	for _, c := range rejects {
		t.Run("rejects/"+c.name, func(t *testing.T) {
			args := append([]string{"template", releaseName, ChartDir, "--kube-version", kubeVersion()}, base...)
			out, errOut, err := h.run(append(args, c.args...)...)
			if err == nil {
				t.Fatalf("helm template accepted %q:\n%s", c.args, out)
			}
			for _, w := range c.want {
				if !strings.Contains(errOut, w) {
					t.Errorf("error does not say %q:\n%s", w, errOut)
				}
			}
		})
	}
	accepts := []struct {
		name  string
		args  []string
		check func(t *testing.T, docs []map[string]any)
	}{
		{"tag with allowTag", []string{"--set", "model.image=registry.modelcar.test/models/tiny-llama:v1", "--set", "model.allowTag=true"},
			func(t *testing.T, docs []map[string]any) {
				vol := named(get(byKind(docs, "Deployment")[0], "spec", "template", "spec", "volumes"), "model")
				if get(vol, "image", "reference") != "registry.modelcar.test/models/tiny-llama:v1" {
					t.Errorf("model volume %v", vol)
				}
			}},
		{"zero replicas", []string{"--set", "replicas=0"},
			func(t *testing.T, docs []map[string]any) {
				if r := get(byKind(docs, "Deployment")[0], "spec", "replicas"); fmt.Sprint(r) != "0" {
					t.Errorf("replicas %v, want 0", r)
				}
			}},
		{"KEDA from zero", []string{"--set", "keda.enabled=true", "--set", "keda.prometheus.serverAddress=http://p:9090", "--set", "keda.minReplicaCount=0"},
			func(t *testing.T, docs []map[string]any) {
				if r := get(byKind(docs, "ScaledObject")[0], "spec", "minReplicaCount"); fmt.Sprint(r) != "0" {
					t.Errorf("minReplicaCount %v, want 0", r)
				}
			}},
		{"no warm probe needs no modelcar image", []string{"--set", "modelcar.image=", "--set", "warmProbe.enabled=false"},
			func(t *testing.T, docs []map[string]any) {
				if named(get(byKind(docs, "Deployment")[0], "spec", "template", "spec", "containers"), "warm") != nil {
					t.Error("warm container rendered")
				}
			}},
	}
	for _, c := range accepts {
		t.Run("accepts/"+c.name, func(t *testing.T) {
			c.check(t, documents(t, h.template(t, goldenNamespace, append(slices.Clone(base), c.args...)...)))
		})
	}
}

// TestChartKubeVersion: with the pinned helm, `helm template` and `helm
// lint --strict` refuse the imageVolume delivery for Kubernetes before 1.31
// (no image volumes there) with the chart's message, and pass for the
// other deliveries on 1.29 and 1.30 and for imageVolume from 1.31.
func TestChartKubeVersion(t *testing.T) {
	h := newHelm(t, "")
	for _, c := range []struct {
		delivery, version string
		ok                bool
	}{
		{"image-volume", "1.29.0", false},
		{"image-volume", "1.30.0", false},
		{"image-volume", "1.31.0", true},
		{"modelcar", "1.29.0", true},
		{"modelcar", "1.30.0", true},
		{"init-copy", "1.29.0", true},
		{"init-copy", "1.30.0", true},
	} {
		t.Run(c.delivery+"/"+c.version, func(t *testing.T) {
			tmpl := append([]string{"template", releaseName, ChartDir, "--namespace", goldenNamespace, "--kube-version", c.version}, valuesFiles(c.delivery)...)
			out, errOut, err := h.run(tmpl...)
			lintOut, lintErrOut, lintErr := h.run(append([]string{"lint", "--strict", ChartDir, "--namespace", goldenNamespace, "--kube-version", c.version}, valuesFiles(c.delivery)...)...)
			// helm lint renders in lint mode, where a template's fail (like
			// required) is only logged ("[INFO] Fail: ..."): it passes either way.
			if lintErr != nil || !strings.Contains(lintOut, "1 chart(s) linted, 0 chart(s) failed") {
				t.Errorf("helm lint --strict: %v\n%s%s", lintErr, lintOut, lintErrOut)
			}
			want := "model.delivery=imageVolume needs Kubernetes 1.31 or later"
			if c.ok {
				if err != nil {
					t.Errorf("helm template: %v\n%s", err, errOut)
				} else if len(byKind(documents(t, out), "Deployment")) != 1 {
					t.Errorf("helm template rendered no Deployment:\n%s", out)
				}
				if strings.Contains(lintErrOut, want) {
					t.Errorf("helm lint logged the refusal:\n%s", lintErrOut)
				}
				return
			}
			if err == nil || !strings.Contains(errOut, want) || !strings.Contains(errOut, "the target is v"+c.version) {
				t.Errorf("helm template: %v, want a failure saying %q:\n%s", err, want, errOut)
			}
			if !strings.Contains(lintErrOut, "Fail: "+want) {
				t.Errorf("helm lint did not log the refusal:\n%s", lintErrOut)
			}
		})
	}
}

// TestChartPackage: `helm package` (what `make chart` runs) builds
// vllm-modelcar-VERSION.tgz, and Chart embeds every file of the chart.
func TestChartPackage(t *testing.T) {
	h := newHelm(t, "")
	dir := t.TempDir()
	out, errOut, err := h.run("package", ChartDir, "-d", dir)
	if err != nil {
		t.Fatalf("helm package: %v\n%s%s", err, out, errOut)
	}
	if _, err := os.Stat(filepath.Join(dir, ChartName+"-0.1.0.tgz")); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	var onDisk, embedded []string
	if err := filepath.WalkDir(ChartDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			onDisk = append(onDisk, filepath.ToSlash(p))
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if err := fs.WalkDir(Chart, ChartDir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			embedded = append(embedded, p)
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(onDisk, embedded) {
		t.Errorf("embedded chart files %q, on disk %q", embedded, onDisk)
	}
}

// crdSource is a CRD file inside a Go module: the real definitions of the
// kinds the chart renders for KEDA and prometheus-operator.
type crdSource struct {
	module, version, file, kind string
}

var crdSources = []crdSource{
	{"github.com/kedacore/keda/v2", "v2.21.0", "config/crd/bases/keda.sh_scaledobjects.yaml", "ScaledObject"},
	{"github.com/prometheus-operator/prometheus-operator", "v0.85.0", "example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml", "ServiceMonitor"},
}

var crdCache struct {
	once    sync.Once
	files   map[string]string // kind → CRD file
	missing map[string]string // kind → why it is missing
}

// crdFiles returns the CRD file of each kind in crdSources, from the module
// cache (`go mod download` fetches a missing module through the Go module
// proxy), and why each missing one is missing.
func crdFiles(t *testing.T) (files, missing map[string]string) {
	t.Helper()
	crdCache.once.Do(func() {
		crdCache.files, crdCache.missing = map[string]string{}, map[string]string{}
		for _, s := range crdSources {
			dir, err := moduleDir(s.module, s.version)
			if err == nil {
				p := filepath.Join(dir, filepath.FromSlash(s.file))
				if _, err = os.Stat(p); err == nil {
					crdCache.files[s.kind] = p
					continue
				}
			}
			crdCache.missing[s.kind] = fmt.Sprintf("%s@%s %s: %v", s.module, s.version, s.file, err)
		}
	})
	if len(crdCache.missing) > 0 && os.Getenv(testcluster.E2EEnv) == "1" {
		t.Fatalf("CRD files unavailable (%s=1: fails instead of skipping those kinds): %v", testcluster.E2EEnv, crdCache.missing)
	}
	return crdCache.files, crdCache.missing
}

func goBinary() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(runtime.GOROOT(), "bin", "go")
}

// moduleDir returns module@version's directory in the module cache,
// downloading it when missing (outside any module, so nothing here changes
// go.mod).
func moduleDir(module, version string) (string, error) {
	scratch, err := os.MkdirTemp("", "modelcar-deploy-crd-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(scratch)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBinary(), "mod", "download", "-json", module+"@"+version)
	cmd.Dir = scratch
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=", "GO111MODULE=on")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	var res struct{ Dir, Error string }
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		return "", fmt.Errorf("go mod download: %v: %s", runErr, strings.TrimSpace(stderr.String()))
	}
	if res.Error != "" || res.Dir == "" {
		return "", fmt.Errorf("go mod download: %s", res.Error)
	}
	return res.Dir, nil
}

// decodeYAML returns the objects in a YAML (or JSON) stream.
func decodeYAML(data []byte) ([]map[string]any, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var out []map[string]any
	for {
		var obj map[string]any
		if err := dec.Decode(&obj); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		if len(obj) > 0 {
			out = append(out, obj)
		}
	}
}

// writeCRDSchemas writes, for each served version of the CRDs in crdYAML, a
// standalone strict JSON schema under dir named as kubeconform looks it up
// ({kind}-{group's first label}-{version}.json, the layout of
// testcluster.SchemaLocation), and returns the files written.
func writeCRDSchemas(crdYAML []byte, dir string) ([]string, error) {
	objs, err := decodeYAML(crdYAML)
	if err != nil {
		return nil, err
	}
	var written []string
	for _, crd := range objs {
		if crd["kind"] != "CustomResourceDefinition" {
			continue
		}
		group, _ := get(crd, "spec", "group").(string)
		kind, _ := get(crd, "spec", "names", "kind").(string)
		versions, _ := get(crd, "spec", "versions").([]any)
		for _, v := range versions {
			name, _ := get(v, "name").(string)
			s, _ := get(v, "schema", "openAPIV3Schema").(map[string]any)
			if get(v, "served") != true || s == nil {
				continue
			}
			data, err := json.MarshalIndent(strictSchema(s), "", "  ")
			if err != nil {
				return nil, err
			}
			file := filepath.Join(dir, strings.ToLower(kind)+"-"+strings.ToLower(strings.Split(group, ".")[0])+"-"+strings.ToLower(name)+".json")
			if err := os.WriteFile(file, data, 0o644); err != nil {
				return nil, err
			}
			written = append(written, file)
		}
	}
	if len(written) == 0 {
		return nil, errors.New("no served CRD version with a schema")
	}
	return written, nil
}

// strictSchema converts a CRD's structural OpenAPI v3 schema the way
// kubeconform's openapi2jsonschema does in strict mode: an object with
// properties rejects unknown ones (unless it preserves unknown fields),
// int-or-string accepts a string or an integer, nullable accepts null.
func strictSchema(s map[string]any) map[string]any {
	if s["x-kubernetes-int-or-string"] == true {
		out := map[string]any{"oneOf": []any{map[string]any{"type": "string"}, map[string]any{"type": "integer"}}}
		if d, ok := s["description"]; ok {
			out["description"] = d
		}
		return out
	}
	out := make(map[string]any, len(s)+1)
	for k, v := range s {
		switch k {
		case "properties":
			props := map[string]any{}
			m, _ := v.(map[string]any)
			for name, p := range m {
				if ps, ok := p.(map[string]any); ok {
					props[name] = strictSchema(ps)
				} else {
					props[name] = p
				}
			}
			out[k] = props
		case "items", "additionalProperties", "not":
			if ps, ok := v.(map[string]any); ok {
				out[k] = strictSchema(ps)
			} else {
				out[k] = v
			}
		case "allOf", "anyOf", "oneOf":
			l, _ := v.([]any)
			list := make([]any, len(l))
			for i, p := range l {
				if ps, ok := p.(map[string]any); ok {
					list[i] = strictSchema(ps)
				} else {
					list[i] = p
				}
			}
			out[k] = list
		default:
			out[k] = v
		}
	}
	if _, ok := out["properties"]; ok && out["x-kubernetes-preserve-unknown-fields"] != true {
		if _, set := out["additionalProperties"]; !set {
			out["additionalProperties"] = false
		}
	}
	if out["nullable"] == true {
		if typ, ok := out["type"].(string); ok {
			out["type"] = []any{typ, "null"}
		}
	}
	return out
}

var kubeconformSummary = regexp.MustCompile(`Valid: (\d+), Invalid: (\d+), Errors: (\d+), Skipped: (\d+)`)

// TestChartKubeconform validates every object each case renders with
// kubeconform -strict, offline, against schemas generated from the test
// cluster's OpenAPI (testcluster.Schemas) and from the KEDA and
// prometheus-operator CRD files.
func TestChartKubeconform(t *testing.T) {
	c := testcluster.Shared(t)
	kubeconform := testcluster.KubeconformBinary(t)
	h := newHelm(t, "")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	dir := t.TempDir()
	location, err := c.Schemas(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	files, missing := crdFiles(t)
	var skip []string
	for kind, why := range missing {
		t.Logf("no CRD for %s, kubeconform skips it: %s", kind, why)
		skip = append(skip, kind)
	}
	slices.Sort(skip)
	for kind, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		written, err := writeCRDSchemas(data, dir)
		if err != nil {
			t.Fatalf("%s CRD %s: %v", kind, f, err)
		}
		t.Logf("%s: %d schema(s) from %s", kind, len(written), f)
	}

	validate := func(t *testing.T, manifests string) (string, error) {
		t.Helper()
		file := filepath.Join(t.TempDir(), "manifests.yaml")
		if err := os.WriteFile(file, []byte(manifests), 0o644); err != nil {
			t.Fatal(err)
		}
		args := []string{"-strict", "-summary", "-output", "text", "-schema-location", location}
		if len(skip) > 0 {
			args = append(args, "-skip", strings.Join(skip, ","))
		}
		out, err := exec.Command(kubeconform, append(args, file)...).CombinedOutput()
		return string(out), err
	}
	for _, gc := range goldenCases {
		t.Run(gc.name, func(t *testing.T) {
			manifests := h.template(t, goldenNamespace, valuesFiles(gc.name)...)
			docs := documents(t, manifests)
			skipped := 0
			for _, d := range docs {
				if slices.Contains(skip, fmt.Sprint(d["kind"])) {
					skipped++
				}
			}
			out, err := validate(t, manifests)
			if err != nil {
				t.Fatalf("kubeconform -strict: %v\n%s", err, out)
			}
			m := kubeconformSummary.FindStringSubmatch(out)
			if m == nil {
				t.Fatalf("no kubeconform summary:\n%s", out)
			}
			valid, _ := strconv.Atoi(m[1])
			nskipped, _ := strconv.Atoi(m[4])
			if valid != len(docs)-skipped || nskipped != skipped || m[2] != "0" || m[3] != "0" {
				t.Fatalf("kubeconform: %s; want Valid: %d, Skipped: %d", m[0], len(docs)-skipped, skipped)
			}
		})
	}
	// The CRD schemas are strict too: a misspelled ScaledObject field fails.
	if _, ok := files["ScaledObject"]; ok {
		t.Run("strict-crd", func(t *testing.T) {
			manifests := h.template(t, goldenNamespace, valuesFiles("image-volume-keda")...)
			bad := strings.Replace(manifests, "  pollingInterval:", "  pollingIntervall:", 1)
			if bad == manifests {
				t.Fatal("no pollingInterval in the rendered ScaledObject")
			}
			out, err := validate(t, bad)
			if err == nil || !strings.Contains(out, "pollingIntervall") {
				t.Fatalf("kubeconform accepted a misspelled ScaledObject field (err %v):\n%s", err, out)
			}
		})
	}
}

var crdGVR = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

// installCRDs applies the CRD files to the cluster (server-side apply) and
// waits until each is Established. They stay: the cluster is this test
// binary's, or a `make cluster-up` one where they are harmless.
func installCRDs(t *testing.T, ctx context.Context, c *testcluster.Cluster, files map[string]string) {
	t.Helper()
	dyn, err := dynamic.NewForConfig(c.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	force := true
	var names []string
	for kind, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		objs, err := decodeYAML(data)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		for _, obj := range objs {
			u := unstructured.Unstructured{Object: obj}
			body, err := u.MarshalJSON()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dyn.Resource(crdGVR).Patch(ctx, u.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{
				FieldManager: "modelcar-deploy-test", Force: &force,
			}); err != nil {
				t.Fatalf("applying the %s CRD %s: %v", kind, u.GetName(), err)
			}
			names = append(names, u.GetName())
		}
	}
	for _, name := range names {
		for {
			crd, err := dyn.Resource(crdGVR).Get(ctx, name, metav1.GetOptions{})
			if err == nil && crdEstablished(crd) {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("CRD %s not Established: %v", name, err)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
}

func crdEstablished(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		if m, _ := c.(map[string]any); m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// withoutKinds drops the documents of kinds from rendered manifests.
func withoutKinds(t *testing.T, manifests string, kinds []string) string {
	t.Helper()
	if len(kinds) == 0 {
		return manifests
	}
	var b strings.Builder
	for _, d := range documents(t, manifests) {
		if slices.Contains(kinds, fmt.Sprint(d["kind"])) {
			continue
		}
		data, err := json.Marshal(d)
		if err != nil {
			t.Fatal(err)
		}
		b.Write(data)
		b.WriteString("\n")
	}
	return b.String()
}

// TestChartDryRun sends every object each case renders to the test
// cluster's apiserver as a strict server-side dry run (unknown fields,
// invalid values and the apiserver's own checks), with the KEDA and
// prometheus-operator CRDs installed from their modules' CRD files; and
// checks the NOTES a real `helm install --dry-run=server` prints.
func TestChartDryRun(t *testing.T) {
	c := testcluster.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	files, missing := crdFiles(t)
	var skip []string
	for kind, why := range missing {
		t.Logf("no CRD for %s, the dry run leaves it out: %s", kind, why)
		skip = append(skip, kind)
	}
	installCRDs(t, ctx, c, files)
	ns := c.Namespace(t, "deploy")
	h := newHelm(t, c.Kubeconfig)
	for _, gc := range goldenCases {
		t.Run(gc.name, func(t *testing.T) {
			manifests := withoutKinds(t, h.template(t, ns, valuesFiles(gc.name)...), skip)
			// Discovery may lag a freshly Established CRD by a moment.
			for {
				err := c.DryRunApply(ctx, ns, []byte(manifests))
				if err == nil {
					return
				}
				if !strings.Contains(err.Error(), "no matches for kind") || ctx.Err() != nil {
					t.Fatalf("server-side dry run: %v", err)
				}
				time.Sleep(500 * time.Millisecond)
			}
		})
	}
	t.Run("notes", func(t *testing.T) {
		args := append([]string{"install", releaseName, ChartDir, "--namespace", ns, "--dry-run=server"}, valuesFiles("image-volume")...)
		out, errOut, err := h.run(args...)
		if err != nil {
			t.Fatalf("helm install --dry-run=server: %v\n%s", err, errOut)
		}
		i := strings.Index(out, "NOTES:")
		if i < 0 {
			t.Fatalf("helm install printed no NOTES:\n%s", out)
		}
		notes := out[i:]
		for _, want := range []string{
			"kubectl -n " + ns + " port-forward service/" + fullname + " 8000:8000",
			"curl -s http://127.0.0.1:8000/v1/models",
			"kubectl -n " + ns + " rollout status deployment/" + fullname + " --timeout=1800s",
			"kubectl get pods -n " + ns + " -l app.kubernetes.io/name=vllm-modelcar,app.kubernetes.io/instance=llm -o json > bundle/pods.json",
			"kubectl get events -n " + ns + " -o json > bundle/events.json",
			"kubectl get nodes -o json > bundle/nodes.json",
			`for c in vllm warm; do`,
			`--timestamps > "bundle/logs/` + ns + `_${p#pod/}_${c}.log"`,
			"modelcar measure --from bundle",
		} {
			if !strings.Contains(notes, want) {
				t.Errorf("NOTES lack %q:\n%s", want, notes)
			}
		}
	})
}
