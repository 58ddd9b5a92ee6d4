package warm_test

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/modelcar/modelcar/internal/kube"
	"github.com/modelcar/modelcar/internal/testcluster"
	"github.com/modelcar/modelcar/warm"
)

// TestMain runs the package's tests; those on the Kubernetes test cluster
// share one (testcluster.Shared), stopped afterwards.
func TestMain(m *testing.M) { testcluster.Main(m) }

// Image references the tests render; nothing pulls them (kwok nodes).
const (
	testDigest   = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	testImage    = "registry.modelcar.test/models/llama-3.1-8b@" + testDigest
	testModelcar = "registry.modelcar.test/modelcar@sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

func kctx(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func gpuPrepull(ns string) warm.PrepullOptions {
	return warm.PrepullOptions{
		Image:        testImage,
		Namespace:    ns,
		NodeSelector: map[string]string{testcluster.GPUPresentLabel: "true"},
		Tolerations:  []corev1.Toleration{testcluster.GPUToleration()},
	}
}

func scheduledPool(ns string) warm.PoolOptions {
	return warm.PoolOptions{
		Name:         "sched",
		Namespace:    ns,
		Replicas:     1,
		GPUsPerPod:   1,
		NodeSelector: map[string]string{testcluster.PoolLabel: "none"}, // placeholders stay Pending
		Schedules: []warm.Schedule{
			{Cron: "0 8 * * 1-5", Replicas: 4},
			{Cron: "0 20 * * *", Replicas: 0},
		},
		ModelcarImage:    testModelcar,
		TimeZone:         "Europe/Paris",
		ImagePullSecrets: []string{"regcred"},
	}
}

func render(t *testing.T, objs []warm.Object) string {
	t.Helper()
	var b bytes.Buffer
	if err := kube.Render(&b, objs); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// allManifests renders every kind of manifest modelcar makes.
func allManifests(t *testing.T, ns string) map[string]string {
	t.Helper()
	out := map[string]string{}
	vol, err := warm.PrepullObjects(gpuPrepull(ns))
	if err != nil {
		t.Fatal(err)
	}
	out["prepull-image-volume"] = render(t, vol)
	o := gpuPrepull(ns)
	o.Mode, o.Name, o.PauseImage, o.PriorityClassName = warm.InitContainerMode, "init", "mirror.example/pause:3.10@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a", "system-node-critical"
	o.ImagePullSecrets = []string{"regcred"}
	init, err := warm.PrepullObjects(o)
	if err != nil {
		t.Fatal(err)
	}
	out["prepull-init-container"] = render(t, init)
	pool, err := warm.Pool(scheduledPool(ns))
	if err != nil {
		t.Fatal(err)
	}
	out["pool-scheduled"] = render(t, pool)
	return out
}

// TestRenderStable: rendering is deterministic, in apply order, without
// status or null fields.
func TestRenderStable(t *testing.T) {
	a, b := allManifests(t, "ns1"), allManifests(t, "ns1")
	for k := range a {
		if a[k] != b[k] {
			t.Errorf("%s renders differently twice", k)
		}
		for _, bad := range []string{"status:", "creationTimestamp", "null"} {
			if strings.Contains(a[k], bad) {
				t.Errorf("%s contains %q:\n%s", k, bad, a[k])
			}
		}
	}
	var kinds []string
	for _, line := range strings.Split(a["pool-scheduled"], "\n") {
		if strings.HasPrefix(line, "kind: ") {
			kinds = append(kinds, strings.TrimPrefix(line, "kind: "))
		}
	}
	want := "PriorityClass ServiceAccount Role RoleBinding Deployment CronJob CronJob"
	if got := strings.Join(kinds, " "); got != want {
		t.Errorf("pool kinds in order %q, want %q", got, want)
	}
	if n := strings.Count(a["pool-scheduled"], "\n---\n"); n != 6 {
		t.Errorf("pool: %d separators, want 6", n)
	}
}

func TestParseFlags(t *testing.T) {
	tol, err := warm.ParseToleration("nvidia.com/gpu=present:NoSchedule")
	if err != nil || tol != (corev1.Toleration{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpEqual, Value: "present", Effect: corev1.TaintEffectNoSchedule}) {
		t.Errorf("toleration with value: %+v %v", tol, err)
	}
	tol, err = warm.ParseToleration("dedicated")
	if err != nil || tol != (corev1.Toleration{Key: "dedicated", Operator: corev1.TolerationOpExists}) {
		t.Errorf("toleration key only: %+v %v", tol, err)
	}
	for _, bad := range []string{"", ":NoSchedule", "k=v:Sometimes"} {
		if _, err := warm.ParseToleration(bad); err == nil {
			t.Errorf("toleration %q accepted", bad)
		}
	}
	sel, err := warm.ParseNodeSelector([]string{"a=b", "c="})
	if err != nil || len(sel) != 2 || sel["a"] != "b" || sel["c"] != "" {
		t.Errorf("node selector: %v %v", sel, err)
	}
	if _, err := warm.ParseNodeSelector([]string{"novalue"}); err == nil {
		t.Error("node selector without = accepted")
	}
	s, err := warm.ParseSchedule("0 8 * * 1-5=4")
	if err != nil || s != (warm.Schedule{Cron: "0 8 * * 1-5", Replicas: 4}) {
		t.Errorf("schedule: %+v %v", s, err)
	}
	if s, err := warm.ParseSchedule("@daily=0"); err != nil || s.Cron != "@daily" {
		t.Errorf("@daily: %+v %v", s, err)
	}
	for _, bad := range []string{"0 8 * * 1-5", "0 8 * *=4", "0 8 * * *=-1", "0 8 * * *=x"} {
		if _, err := warm.ParseSchedule(bad); err == nil {
			t.Errorf("schedule %q accepted", bad)
		}
	}
}

// TestManifestsValidate: every rendered manifest passes kubeconform
// -strict with this cluster's schemas and a strict server-side dry run.
func TestManifestsValidate(t *testing.T) {
	c := testcluster.Shared(t)
	bin := testcluster.KubeconformBinary(t)
	t.Parallel()
	ctx := kctx(t)
	ns := c.Namespace(t, "warm-validate")
	location, err := c.Schemas(ctx, t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for name, manifest := range allManifests(t, ns) {
		file := filepath.Join(dir, name+".yaml")
		if err := os.WriteFile(file, []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command(bin, "-strict", "-summary", "-output", "text", "-schema-location", location, file).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Invalid: 0, Errors: 0") {
			t.Errorf("kubeconform %s: %v\n%s\n%s", name, err, out, manifest)
		}
		if err := c.DryRunApply(ctx, ns, []byte(manifest)); err != nil {
			t.Errorf("server-side dry run of %s: %v\n%s", name, err, manifest)
		}
	}
}
