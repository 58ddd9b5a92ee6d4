package testcluster

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A manifest as a chart or `kubectl create --dry-run -o yaml` renders it:
// nulls and empty objects, integer quantities and ports, GPU requests.
const validManifests = `apiVersion: scheduling.k8s.io/v1
kind: PriorityClass
metadata:
  name: gpu-placeholder
value: -10
preemptionPolicy: Never
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: llm-config
  creationTimestamp: null
data:
  MODEL: llama
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: llm
  labels: {app: llm}
spec:
  replicas: 1
  selector:
    matchLabels: {app: llm}
  strategy: {}
  template:
    metadata:
      creationTimestamp: null
      labels: {app: llm}
    spec:
      tolerations:
      - key: nvidia.com/gpu
        operator: Exists
        effect: NoSchedule
      nodeSelector:
        nvidia.com/gpu.present: "true"
      containers:
      - name: server
        image: registry.modelcar.test/models/llm:v1
        ports:
        - containerPort: 8000
        readinessProbe:
          httpGet: {path: /health, port: 8000}
        resources:
          limits: {nvidia.com/gpu: 1, memory: 16Gi}
          requests: {cpu: 2, memory: 16Gi}
status: {}
---
apiVersion: v1
kind: Service
metadata:
  name: llm
spec:
  selector: {app: llm}
  ports:
  - port: 80
    targetPort: 8000
`

// The same Deployment with a misspelled field: helm renders it, kubeconform
// in strict mode and a strict server-side dry run reject it.
const invalidManifest = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: llm
spec:
  selector:
    matchLabels: {app: llm}
  template:
    metadata:
      labels: {app: llm}
    spec:
      containers:
      - name: server
        image: registry.modelcar.test/models/llm:v1
        imagePullPolicyy: Always
`

func kubeconform(t *testing.T, location string, manifest string) (string, error) {
	t.Helper()
	bin := KubeconformBinary(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "manifest.yaml")
	if err := os.WriteFile(file, []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-strict", "-summary", "-output", "text", "-schema-location", location, file)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestSchemasKubeconform: schemas generated from the live apiserver let
// kubeconform validate manifests offline, strictly.
func TestSchemasKubeconform(t *testing.T) {
	c := Shared(t)
	KubeconformBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	dir := t.TempDir()
	begin := time.Now()
	location, err := c.Schemas(ctx, dir)
	if err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.json"))
	t.Logf("%d schemas in %v", len(files), time.Since(begin).Round(time.Millisecond))
	for _, f := range []string{"deployment-apps-v1.json", "pod-v1.json", "priorityclass-scheduling-v1.json", "daemonset-apps-v1.json"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Errorf("no %s: %v", f, err)
		}
	}

	out, err := kubeconform(t, location, validManifests)
	if err != nil || !strings.Contains(out, "Valid: 4") {
		t.Fatalf("kubeconform on valid manifests: %v\n%s", err, out)
	}
	out, err = kubeconform(t, location, invalidManifest)
	if err == nil || !strings.Contains(out, "imagePullPolicyy") {
		t.Fatalf("kubeconform accepted a misspelled field (err %v):\n%s", err, out)
	}
	out, err = kubeconform(t, location, "apiVersion: modelcar.test/v1\nkind: Unknown\nmetadata: {name: x}\n")
	if err == nil {
		t.Fatalf("kubeconform accepted an unknown kind:\n%s", out)
	}
}

// TestHelmTemplateValidation: a chart rendered by helm (pinned, offline,
// --kube-version of this cluster) validates with kubeconform and a strict
// server-side dry run; a misspelled field passes helm but fails both.
func TestHelmTemplateValidation(t *testing.T) {
	c := Shared(t)
	helm := HelmBinary(t)
	KubeconformBinary(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := c.Namespace(t, "helm")
	location, err := c.Schemas(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}

	home := t.TempDir()
	env := append(os.Environ(),
		"HELM_CACHE_HOME="+filepath.Join(home, "cache"),
		"HELM_CONFIG_HOME="+filepath.Join(home, "config"),
		"HELM_DATA_HOME="+filepath.Join(home, "data"),
		"KUBECONFIG="+c.Kubeconfig,
	)
	render := func(deployment string) string {
		t.Helper()
		chart := filepath.Join(t.TempDir(), "llm")
		for name, content := range map[string]string{
			"Chart.yaml":                "apiVersion: v2\nname: llm\nversion: 0.1.0\nkubeVersion: \">=1.30.0-0\"\n",
			"values.yaml":               "replicas: 1\nimage: registry.modelcar.test/models/llm:v1\n",
			"templates/deployment.yaml": deployment,
		} {
			p := filepath.Join(chart, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		cmd := exec.Command(helm, "template", "llm", chart, "--namespace", ns, "--kube-version", strings.TrimPrefix(KubernetesVersion, "v"))
		cmd.Env = env
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Run(); err != nil {
			t.Fatalf("helm template: %v\n%s", err, stderr.String())
		}
		return stdout.String()
	}
	const good = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: {{ .Release.Name }}
spec:
  replicas: {{ .Values.replicas }}
  selector:
    matchLabels: {app: {{ .Release.Name }}}
  template:
    metadata:
      labels: {app: {{ .Release.Name }}}
    spec:
      containers:
      - name: server
        image: {{ .Values.image }}
        resources:
          limits: {nvidia.com/gpu: 1}
`
	rendered := render(good)
	if out, err := kubeconform(t, location, rendered); err != nil {
		t.Fatalf("kubeconform on the rendered chart: %v\n%s", err, out)
	}
	if err := c.DryRunApply(ctx, ns, []byte(rendered)); err != nil {
		t.Fatalf("server-side dry run of the rendered chart: %v", err)
	}

	bad := render(strings.Replace(good, "image: {{ .Values.image }}", "image: {{ .Values.image }}\n        imagePullPolicyy: Always", 1))
	if out, err := kubeconform(t, location, bad); err == nil {
		t.Errorf("kubeconform accepted a misspelled field:\n%s", out)
	}
	err = c.DryRunApply(ctx, ns, []byte(bad))
	if err == nil || !strings.Contains(err.Error(), "imagePullPolicyy") {
		t.Errorf("server-side dry run of a misspelled field: %v, want an unknown-field error", err)
	}
}
