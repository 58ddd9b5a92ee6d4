package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
)

const (
	deployTestdata = "../../testdata/deploy"
	testModelImage = "registry.modelcar.test/models/tiny-llama@sha256:4f1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c"
	testModelcar   = "registry.modelcar.test/modelcar@sha256:0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9"
)

// runDeployCmd runs `modelcar deploy ARGS` in-process and returns its
// stdout and the exit status main would give (0, 1, or 2 for usage).
func runDeployCmd(t *testing.T, args ...string) (stdout string, code int, err error) {
	t.Helper()
	cmd := newDeployCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetArgs(args)
	cmd.SilenceUsage, cmd.SilenceErrors = true, true
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none")) // never a developer's cluster
	err = cmd.ExecuteContext(context.Background())
	var ue usageError
	switch {
	case err == nil:
	case errors.As(err, &ue):
		code = 2
	default:
		code = 1
	}
	return out.String(), code, err
}

func decodeAll(t *testing.T, y string) []*unstructured.Unstructured {
	t.Helper()
	dec := utilyaml.NewYAMLOrJSONDecoder(strings.NewReader(y), 4096)
	var out []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return out
			}
			t.Fatalf("output does not parse: %v\n%s", err, y)
		}
		if len(m) > 0 {
			out = append(out, &unstructured.Unstructured{Object: m})
		}
	}
}

func find(objs []*unstructured.Unstructured, kind, name string) *unstructured.Unstructured {
	for _, o := range objs {
		if o.GetKind() == kind && o.GetName() == name {
			return o
		}
	}
	return nil
}

// TestDeployYAMLMatchesHelmTemplate: with the golden cases' values (and
// their fullname), -o yaml prints exactly what `helm template` printed into
// the golden files.
func TestDeployYAMLMatchesHelmTemplate(t *testing.T) {
	for _, c := range []string{"image-volume", "image-volume-keda", "modelcar", "init-copy"} {
		t.Run(c, func(t *testing.T) {
			golden, err := os.ReadFile(filepath.Join(deployTestdata, c+".golden.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			out, code, err := runDeployCmd(t, "--name", "llm", "-n", "modelcar-test",
				"-f", filepath.Join(deployTestdata, "base.values.yaml"), "-f", filepath.Join(deployTestdata, c+".values.yaml"),
				"--set", "fullnameOverride=llm-vllm-modelcar", "--image", testModelImage, "-o", "yaml")
			if code != 0 {
				t.Fatalf("exit %d: %v", code, err)
			}
			if out != string(golden) {
				t.Errorf("-o yaml differs from %s.golden.yaml", c)
			}
		})
	}
}

// TestDeployYAMLDefaults: --name names the objects and the served model,
// --image and --modelcar-image land in the pod, --prepull and --warm-pool
// append the warm objects.
func TestDeployYAMLDefaults(t *testing.T) {
	out, code, err := runDeployCmd(t, "--image", testModelImage, "--name", "tiny", "-n", "llm",
		"--modelcar-image", testModelcar, "--set-string", "nodeSelector.nvidia\\.com/gpu\\.present=true",
		"--prepull", "--warm-pool", "2", "--gpus-per-pod", "4", "-o", "yaml")
	if code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	objs := decodeAll(t, out)
	var kinds []string
	for _, o := range objs {
		kinds = append(kinds, o.GetKind()+"/"+o.GetName())
	}
	want := "Service/tiny Deployment/tiny PriorityClass/modelcar-placeholder DaemonSet/modelcar-prepull-tiny-llama Deployment/tiny-pool"
	if strings.Join(kinds, " ") != want {
		t.Fatalf("objects %q, want %s", kinds, want)
	}
	dep := find(objs, "Deployment", "tiny")
	if dep.GetNamespace() != "llm" {
		t.Errorf("namespace %q", dep.GetNamespace())
	}
	containers, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "containers")
	var args, warmImage string
	for _, c := range containers {
		c := c.(map[string]any)
		switch c["name"] {
		case "vllm":
			a, _, _ := unstructured.NestedStringSlice(c, "args")
			args = strings.Join(a, " ")
		case "warm":
			warmImage, _ = c["image"].(string)
		}
	}
	if !strings.Contains(args, "--served-model-name tiny") {
		t.Errorf("vllm args %q lack --served-model-name tiny", args)
	}
	if warmImage != testModelcar {
		t.Errorf("warm sidecar runs %q", warmImage)
	}
	vols, _, _ := unstructured.NestedSlice(dep.Object, "spec", "template", "spec", "volumes")
	if js, _ := json.Marshal(vols); !strings.Contains(string(js), `"reference":"`+testModelImage+`"`) {
		t.Errorf("model volume not %s: %v", testModelImage, vols)
	}
	pool := find(objs, "Deployment", "tiny-pool")
	if r, _, _ := unstructured.NestedFieldNoCopy(pool.Object, "spec", "replicas"); fmt.Sprint(r) != "2" {
		t.Errorf("pool replicas %v", r)
	}
	if sel, _, _ := unstructured.NestedString(pool.Object, "spec", "template", "spec", "nodeSelector", "nvidia.com/gpu.present"); sel != "true" {
		t.Errorf("pool nodeSelector %q", sel)
	}
	c0, _, _ := unstructured.NestedSlice(pool.Object, "spec", "template", "spec", "containers")
	if gpus, _, _ := unstructured.NestedFieldNoCopy(c0[0].(map[string]any), "resources", "limits", "nvidia.com/gpu"); fmt.Sprint(gpus) != "4" {
		t.Errorf("pool GPUs per pod %v", gpus)
	}
}

// TestDeployRejectsTag: a model image without a digest is refused; the
// command exits 1 naming the flag, the value and the fix, and allowTag
// accepts it. Set by --set instead, the error names the value's key.
func TestDeployRejectsTag(t *testing.T) {
	tag := "registry.modelcar.test/models/tiny-llama:v1"
	_, code, err := runDeployCmd(t, "--image", tag, "--name", "tiny", "--modelcar-image", testModelcar, "-o", "yaml")
	if code != 1 || err == nil {
		t.Fatalf("exit %d (%v), want 1", code, err)
	}
	for _, w := range []string{`--image "` + tag + `": image reference has no digest`, "pinned by digest, REPO@sha256:<64 hex>, as 'modelcar push' prints it", "--set model.allowTag=true"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q:\n%v", w, err)
		}
	}
	const mcTag = "registry.modelcar.test/modelcar:v1"
	_, code, err = runDeployCmd(t, "--set", "model.image="+tag, "--name", "tiny", "--modelcar-image", mcTag, "-o", "yaml")
	for _, w := range []string{`model.image "` + tag + `": image reference has no digest`, `--modelcar-image "` + mcTag + `": image reference has no digest`, "'crane digest REPO:TAG'", "--set modelcar.allowTag=true"} {
		if code != 1 || err == nil || !strings.Contains(err.Error(), w) {
			t.Errorf("--set model.image=TAG and a bad --modelcar-image: exit %d, error does not say %q:\n%v", code, w, err)
		}
	}
	if _, code, err := runDeployCmd(t, "--image", tag, "--name", "tiny", "--modelcar-image", testModelcar, "--set", "model.allowTag=true", "-o", "yaml"); code != 0 {
		t.Errorf("allowTag: exit %d: %v", code, err)
	}

	// As users run it, when main registers the command.
	r := run(t, nil, "deploy", "--image", tag, "--name", "tiny", "--modelcar-image", testModelcar, "-o", "yaml")
	if strings.Contains(r.stderr, `unknown command "deploy"`) {
		t.Logf("the modelcar binary has no deploy command yet (main.go): checked in-process only")
		return
	}
	if r.code != 1 || !strings.Contains(r.stderr, `--image "`+tag+`"`) || r.stdout != "" {
		t.Errorf("modelcar deploy with a tag: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
}

// TestDeployUsage: flag mistakes exit 2 before anything renders.
func TestDeployUsage(t *testing.T) {
	base := []string{"--image", testModelImage, "--modelcar-image", testModelcar}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--name", "x"}, "choose -o yaml"},
		{[]string{"-o", "yaml"}, "--name is required"},
		{[]string{"--name", "x", "-o", "yaml", "--apply"}, "exclude each other"},
		{[]string{"--name", "x", "-o", "json"}, "unknown output format"},
		{[]string{"--name", "x", "-o", "yaml", "--dry-run=server"}, "goes with --apply"},
		{[]string{"--name", "x", "--apply", "--dry-run=client"}, "use -o yaml"},
		{[]string{"--name", "x", "-o", "yaml", "--gpus-per-pod", "2"}, "goes with --warm-pool"},
		{[]string{"--name", "x", "-o", "yaml", "--set", "a.b"}, "failed parsing --set"},
	} {
		_, code, err := runDeployCmd(t, append(append([]string(nil), base...), c.args...)...)
		if code != 2 || err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: exit %d, %v; want 2 and %q", c.args, code, err, c.want)
		}
	}
	if _, code, err := runDeployCmd(t, "--name", "x", "-o", "yaml"); code != 2 || !strings.Contains(err.Error(), "--image is required") {
		t.Errorf("no --image: exit %d, %v", code, err)
	}
	// initCopy has nothing for the kubelet to pre-pull.
	_, code, err := runDeployCmd(t, append(base, "--name", "x", "-o", "yaml", "--set", "model.delivery=initCopy", "--prepull")...)
	if code != 1 || !strings.Contains(err.Error(), `--prepull: model.delivery "initCopy"`) || !strings.Contains(err.Error(), "nothing to pre-pull") {
		t.Errorf("initCopy --prepull: exit %d, %v", code, err)
	}
	// --apply without a kubeconfig says so.
	_, code, err = runDeployCmd(t, append(base, "--name", "x", "--apply")...)
	if code != 1 || err == nil {
		t.Errorf("--apply without a cluster: exit %d, %v", code, err)
	}
}

// TestDeployApplyOnCluster drives --apply (dry run, real, again) through the
// CLI on the shared test cluster (clusterForCLI: under MODELCAR_E2E=1, or
// with MODELCAR_CLUSTER_KUBECONFIG); the deploy package's tests cover the
// same (and the pod becoming Ready) through the library.
func TestDeployApplyOnCluster(t *testing.T) {
	c := clusterForCLI(t)
	kc := c.Kubeconfig
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns := c.Namespace(t, "deploy-cli")
	args := []string{"--image", testModelImage, "--name", "tiny", "-n", ns, "--modelcar-image", testModelcar, "--kubeconfig", kc, "--prepull", "--apply"}
	want := "daemonset.apps/modelcar-prepull-tiny-llama created%[1]s\nservice/tiny created%[1]s\ndeployment.apps/tiny created%[1]s\n"
	if out, code, err := runDeployCmd(t, append(args, "--dry-run=server")...); code != 0 || out != fmt.Sprintf(want, " (server dry run)") {
		t.Fatalf("dry run: exit %d, %v\n%s", code, err, out)
	}
	if deps, err := c.Client().AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{}); err != nil || len(deps.Items) != 0 {
		t.Fatalf("the dry run created Deployments: %v", err)
	}
	if out, code, err := runDeployCmd(t, args...); code != 0 || out != fmt.Sprintf(want, "") {
		t.Fatalf("apply: exit %d, %v\n%s", code, err, out)
	}
	dep, err := c.Client().AppsV1().Deployments(ns).Get(ctx, "tiny", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := c.Client().AppsV1().DaemonSets(ns).Get(ctx, "modelcar-prepull-tiny-llama", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Applying again changes no spec. (The DaemonSet may read "configured"
	// while its controller still updates its status.)
	if out, code, err := runDeployCmd(t, args...); code != 0 || !strings.HasPrefix(out, "daemonset.apps/modelcar-prepull-tiny-llama ") ||
		!strings.HasSuffix(out, "\nservice/tiny unchanged\ndeployment.apps/tiny unchanged\n") {
		t.Fatalf("re-apply: exit %d, %v\n%s", code, err, out)
	}
	dep2, err := c.Client().AppsV1().Deployments(ns).Get(ctx, "tiny", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ds2, err := c.Client().AppsV1().DaemonSets(ns).Get(ctx, "modelcar-prepull-tiny-llama", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep2.Generation != dep.Generation || ds2.Generation != ds.Generation {
		t.Errorf("re-apply changed a spec: Deployment generation %d → %d, DaemonSet %d → %d", dep.Generation, dep2.Generation, ds.Generation, ds2.Generation)
	}
}

// TestDeployWithoutModelcarImage: with the warm-up probe on (the default)
// and no --modelcar-image, the error names the flag, how to make that
// image, and warmProbe.enabled=false as the alternative.
func TestDeployWithoutModelcarImage(t *testing.T) {
	img := "registry.modelcar.test/models/tiny-llama@sha256:" + strings.Repeat("ab", 32)
	_, code, err := runDeployCmd(t, "--image", img, "--name", "tiny", "-o", "yaml")
	if code != 1 || err == nil {
		t.Fatalf("exit %d (%v), want 1", code, err)
	}
	for _, w := range []string{"--modelcar-image", "make image", "--set warmProbe.enabled=false"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %q:\n%v", w, err)
		}
	}
	if _, code, err := runDeployCmd(t, "--image", img, "--name", "tiny", "--set", "warmProbe.enabled=false", "-o", "yaml"); code != 0 {
		t.Errorf("warmProbe.enabled=false: exit %d: %v", code, err)
	}
}
