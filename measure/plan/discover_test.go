package plan

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	versionpkg "k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/modelcar/modelcar/internal/testcluster"
	"github.com/modelcar/modelcar/warm"
)

func gpuNode(name string, gpus int64, runtime string, labels, annotations map[string]string) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations},
		Status: corev1.NodeStatus{
			NodeInfo: corev1.NodeSystemInfo{ContainerRuntimeVersion: runtime},
			Allocatable: corev1.ResourceList{
				corev1.ResourceName(warm.DefaultGPUResource): *resource.NewQuantity(gpus, resource.DecimalSI),
				corev1.ResourceEphemeralStorage:              resource.MustParse("900Gi"),
			},
		},
	}
}

func fakeClient(version string, objs ...runtime.Object) *fake.Clientset {
	cs := fake.NewClientset(objs...)
	cs.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &versionpkg.Info{GitVersion: version}
	return cs
}

func TestPlanDiscoverFake(t *testing.T) {
	gpuLabels := map[string]string{"nvidia.com/gpu.present": "true", SnapshotterLabel: "stargz"}
	small := gpuNode("gpu-b", 4, "containerd://2.1.3", gpuLabels, nil)
	small.Status.Allocatable[corev1.ResourceEphemeralStorage] = resource.MustParse("300Gi")
	one := int32(1)
	cs := fakeClient("v1.36.2",
		gpuNode("gpu-a", 8, "containerd://2.1.3", gpuLabels, nil),
		small,
		gpuNode("cpu-a", 0, "cri-o://1.33.0", map[string]string{"role": "cpu"}, nil),
		&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "llm", Name: "modelcar-pool",
			Labels: map[string]string{warm.ManagedByLabel: warm.ManagedByValue, warm.ComponentLabel: warm.PoolComponent}},
			Spec: appsv1.DeploymentSpec{Replicas: &one}},
	)
	d, err := Discover(context.Background(), cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := d.Facts
	if f.KubernetesVersion != "1.36.2" || f.ContainerRuntime != "containerd://2.1.3" || f.Snapshotter != "stargz" || f.GPUsPerNode != 8 ||
		f.NodeImageCacheGiB != 300 || f.GPUNodeWarmPool == nil || !*f.GPUNodeWarmPool || f.Prepull == nil || *f.Prepull {
		t.Errorf("facts = %+v, notes %q", f, d.Notes)
	}
	if src := d.Sources["snapshotter"]; src != "live: 2 nodes with nvidia.com/gpu allocatable (modelcar.dev/snapshotter)" {
		t.Errorf("snapshotter source %q", src)
	}
	if src := d.Sources["gpuNodeWarmPool"]; src != "live: modelcar pool Deployment with replicas llm/modelcar-pool" {
		t.Errorf("pool source %q", src)
	}
	if len(d.Notes) != 0 {
		t.Errorf("notes %q", d.Notes)
	}

	// A selector picks the nodes; nodes that disagree leave the
	// snapshotter unknown and say so.
	cs = fakeClient("v1.33.1",
		gpuNode("a", 4, "containerd://1.7.22", map[string]string{"pool": "gpu", SnapshotterLabel: "stargz"}, nil),
		gpuNode("b", 4, "containerd://1.7.22", map[string]string{"pool": "gpu"}, map[string]string{SnapshotterLabel: "overlayfs"}),
		gpuNode("c", 4, "cri-o://1.33.0", map[string]string{"pool": "other", SnapshotterLabel: "stargz"}, nil),
	)
	d, err = Discover(context.Background(), cs, map[string]string{"pool": "gpu"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Facts.Snapshotter != "" || d.Facts.ContainerRuntime != "containerd://1.7.22" ||
		!slices.ContainsFunc(d.Notes, func(n string) bool {
			return strings.Contains(n, "disagree on modelcar.dev/snapshotter (overlayfs, stargz)")
		}) {
		t.Errorf("disagreeing nodes: %+v, %q", d.Facts, d.Notes)
	}

	// A selector that matches no node falls back to the nodes with GPUs.
	d, err = Discover(context.Background(), cs, map[string]string{"nvidia.com/gpu.present": "true"})
	if err != nil {
		t.Fatal(err)
	}
	if d.Facts.GPUsPerNode != 4 || !slices.Contains(d.Notes, "no node matches nvidia.com/gpu.present=true: the facts are the nodes with nvidia.com/gpu allocatable") {
		t.Errorf("fallback: %+v, %q", d.Facts, d.Notes)
	}

	// What RBAC forbids stays unknown, with a note; no node at all too.
	cs = fakeClient("v1.34.0")
	cs.PrependReactor("list", "daemonsets", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Group: "apps", Resource: "daemonsets"}, "", errors.New("no"))
	})
	d, err = Discover(context.Background(), cs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Facts.Prepull != nil || d.Facts.GPUNodeWarmPool == nil || *d.Facts.GPUNodeWarmPool ||
		!slices.Contains(d.Notes, "modelcar's warm objects not listed: forbidden (RBAC): those facts stay unknown") ||
		!slices.ContainsFunc(d.Notes, func(n string) bool { return strings.HasPrefix(n, "no GPU node found") }) {
		t.Errorf("forbidden: %+v, %q", d.Facts, d.Notes)
	}

	cs = fakeClient("v1.34.0")
	cs.Discovery().(*fakediscovery.FakeDiscovery).PrependReactor("get", "version", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, errors.New("connection refused")
	})
	if _, err := Discover(context.Background(), cs, nil); err == nil || !strings.Contains(err.Error(), "connection refused") {
		t.Errorf("no server: %v", err)
	}
}

// TestPlanDiscoverLive reads the facts of the real test cluster: its version,
// and GPU nodes this test adds with a container runtime and the
// snapshotter label, and a warm pool it applies.
func TestPlanDiscoverLive(t *testing.T) {
	c := testcluster.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := c.Namespace(t, "plan")
	pool := testcluster.NodePool{Name: "plan-" + ns[len(ns)-5:], Count: 2, GPUs: 8,
		Labels: map[string]string{SnapshotterLabel: "stargz"},
		Taints: []corev1.Taint{{Key: "modelcar.test/plan", Value: "private", Effect: corev1.TaintEffectNoSchedule}}}
	var names []string
	for _, n := range pool.Nodes() {
		n.Status.NodeInfo.ContainerRuntimeVersion = "containerd://2.1.3"
		if _, err := c.Client().CoreV1().Nodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		names = append(names, n.Name)
	}
	t.Cleanup(func() {
		if err := c.DeleteNodes(context.Background(), names...); err != nil {
			t.Log(err)
		}
	})
	objs, err := warm.Pool(warm.PoolOptions{Namespace: ns, Replicas: 0, GPUsPerPod: 8})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := warm.Apply(ctx, c.Kube(), objs, warm.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}

	sel := map[string]string{testcluster.PoolLabel: pool.Name}
	d, err := Discover(ctx, c.Client(), sel)
	if err != nil {
		t.Fatal(err)
	}
	f := d.Facts
	t.Logf("live facts %+v\nsources %v\nnotes %q", f, d.Sources, d.Notes)
	if want := strings.TrimPrefix(testcluster.KubernetesVersion, "v"); f.KubernetesVersion != want {
		t.Errorf("kubernetesVersion %q, want %q", f.KubernetesVersion, want)
	}
	if f.ContainerRuntime != "containerd://2.1.3" || f.Snapshotter != "stargz" || f.GPUsPerNode != 8 || f.NodeImageCacheGiB != 1024 || f.Prepull == nil {
		t.Errorf("facts = %+v (sources %v, notes %q)", f, d.Sources, d.Notes)
	}
	// A pool at 0 replicas keeps no node warm (other tests' pools may run:
	// only this namespace's is asserted on through the source).
	if strings.Contains(d.Sources["gpuNodeWarmPool"], ns+"/modelcar-pool") {
		t.Errorf("a pool of 0 replicas counted: %s", d.Sources["gpuNodeWarmPool"])
	}
	one := int32(1)
	objs, _ = warm.Pool(warm.PoolOptions{Namespace: ns, Replicas: one, GPUsPerPod: 8}) // pending: no fixture node has 8 GPUs
	if _, err := warm.Apply(ctx, c.Kube(), objs, warm.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	if d, err = Discover(ctx, c.Client(), sel); err != nil {
		t.Fatal(err)
	}
	if !*d.Facts.GPUNodeWarmPool || !strings.Contains(d.Sources["gpuNodeWarmPool"], ns+"/modelcar-pool") {
		t.Errorf("pool with a replica: %v (%s)", *d.Facts.GPUNodeWarmPool, d.Sources["gpuNodeWarmPool"])
	}
	// The version says image volumes are on (1.35+), and the plan says why.
	p := compute(t, "pull-gzip.json", Options{Facts: d.Facts, Sources: d.Sources})
	if p.Facts.ImageVolumes == nil || !*p.Facts.ImageVolumes || p.Lever(LeverLazyPull).Status != Apply {
		t.Errorf("plan on live facts: imageVolumes %v, lazy-pull %s", p.Facts.ImageVolumes, p.Lever(LeverLazyPull).Status)
	}
}
