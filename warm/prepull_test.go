package warm_test

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/modelcar/modelcar/internal/kube"
	"github.com/modelcar/modelcar/internal/testcluster"
	"github.com/modelcar/modelcar/warm"
)

// fast polls the test cluster often.
func fast(timeout time.Duration) warm.WaitOptions {
	return warm.WaitOptions{Timeout: timeout, Interval: 100 * time.Millisecond}
}

// poolNodes returns the sorted names of the nodes in a testcluster pool.
func poolNodes(t *testing.T, ctx context.Context, cs kubernetes.Interface, pool string) []string {
	t.Helper()
	list, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: testcluster.PoolLabel + "=" + pool})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range list.Items {
		names = append(names, n.Name)
	}
	sort.Strings(names)
	return names
}

func TestPrepullRefusesTag(t *testing.T) {
	o := gpuPrepull("ns")
	o.Image = "registry.modelcar.test/models/llama:v1"
	if _, err := warm.Prepull(o); !errors.Is(err, warm.ErrNoDigest) || !strings.Contains(err.Error(), "llama:v1") {
		t.Fatalf("tag without --allow-tag: %v", err)
	}
	o.AllowTag = true
	ds, err := warm.Prepull(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := ds.Annotations[warm.ImageDigestAnnotation]; ok {
		t.Error("digest annotation on a tag")
	}
	o.Image = "oci:./llama:v1"
	if _, err := warm.Prepull(o); err == nil || !strings.Contains(err.Error(), "local OCI layout") {
		t.Errorf("layout reference: %v", err)
	}
}

// TestPrepullPodSpec: the pod idles with tiny requests and no privileges,
// and pulls the image through an image volume or an init container.
func TestPrepullPodSpec(t *testing.T) {
	ds, err := warm.Prepull(gpuPrepull("ns"))
	if err != nil {
		t.Fatal(err)
	}
	if ds.Name != "modelcar-prepull-llama-3-1-8b" || ds.Labels[warm.ManagedByLabel] != "modelcar" || ds.Annotations[warm.ImageDigestAnnotation] != testDigest {
		t.Errorf("metadata: %s %v %v", ds.Name, ds.Labels, ds.Annotations)
	}
	p := ds.Spec.Template.Spec
	if len(p.Containers) != 1 || len(p.InitContainers) != 0 || p.Containers[0].Image != warm.DefaultPauseImage {
		t.Fatalf("containers: %+v", p.Containers)
	}
	c := p.Containers[0]
	if c.Resources.Requests.Cpu().String() != "1m" || c.Resources.Requests.Memory().String() != "8Mi" {
		t.Errorf("requests: %v", c.Resources.Requests)
	}
	sc := c.SecurityContext
	if !*sc.ReadOnlyRootFilesystem || *sc.AllowPrivilegeEscalation || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) ||
		*p.SecurityContext.RunAsUser != 65535 || *p.AutomountServiceAccountToken {
		t.Errorf("security: %+v %+v automount %v", sc, p.SecurityContext, *p.AutomountServiceAccountToken)
	}
	if len(p.Volumes) != 1 || p.Volumes[0].Image == nil || p.Volumes[0].Image.Reference != testImage || p.Volumes[0].Image.PullPolicy != corev1.PullIfNotPresent ||
		len(c.VolumeMounts) != 1 || !c.VolumeMounts[0].ReadOnly {
		t.Errorf("image volume: %+v %+v", p.Volumes, c.VolumeMounts)
	}
	o := gpuPrepull("ns")
	o.Mode, o.InitCommand = warm.InitContainerMode, []string{"/bin/sh", "-c", "exit 0"}
	ds, err = warm.Prepull(o)
	if err != nil {
		t.Fatal(err)
	}
	p = ds.Spec.Template.Spec
	if len(p.Volumes) != 0 || len(p.InitContainers) != 1 || p.InitContainers[0].Image != testImage || !slices.Equal(p.InitContainers[0].Command, o.InitCommand) {
		t.Errorf("init container mode: %+v %+v", p.Volumes, p.InitContainers)
	}
}

// TestPrepullGPUNodes: the DaemonSet lands on every GPU node and no CPU
// node, WaitPrepull reports each node and returns once all have the image,
// re-applying changes nothing, and DeletePrepull removes it.
func TestPrepullGPUNodes(t *testing.T) {
	c := testcluster.Shared(t)
	t.Parallel()
	cs, kc, ctx := c.Client(), c.Kube(), kctx(t)
	ns := c.Namespace(t, "prepull")
	gpu, cpu := poolNodes(t, ctx, cs, "gpu"), poolNodes(t, ctx, cs, "cpu")
	objs, err := warm.PrepullObjects(gpuPrepull(ns))
	if err != nil {
		t.Fatal(err)
	}
	name := objs[0].GetName()

	begin := time.Now()
	applied, err := warm.Apply(ctx, kc, objs, warm.ApplyOptions{})
	if err != nil || len(applied) != 1 || applied[0].Action != kube.Created {
		t.Fatalf("apply: %v %v", applied, err)
	}
	var mu sync.Mutex
	var progress []string
	opts := fast(time.Minute)
	opts.Progress = func(n warm.NodeStatus) {
		mu.Lock()
		defer mu.Unlock()
		progress = append(progress, n.String())
	}
	st, err := warm.WaitPrepull(ctx, cs, ns, name, opts)
	if err != nil {
		t.Fatalf("wait: %v", err)
	}
	t.Logf("all %d GPU nodes pulled %v after apply", st.Count(warm.NodePulled), time.Since(begin).Round(time.Millisecond))
	state := map[string]warm.NodeState{}
	for _, n := range st.Nodes {
		state[n.Node] = n.State
	}
	for _, n := range gpu {
		if state[n] != warm.NodePulled {
			t.Errorf("GPU node %s: %s", n, state[n])
		}
	}
	for _, n := range cpu {
		if state[n] != warm.NodeNotTargeted {
			t.Errorf("CPU node %s: %s", n, state[n])
		}
	}
	if st.Count(warm.NodePulled) != len(gpu) {
		t.Errorf("pulled on %d nodes, want the %d GPU nodes: %+v", st.Count(warm.NodePulled), len(gpu), st.Nodes)
	}
	mu.Lock()
	joined := strings.Join(progress, "\n")
	mu.Unlock()
	for _, n := range append(gpu, cpu...) {
		if !strings.Contains(joined, n+": ") {
			t.Errorf("no progress for node %s:\n%s", n, joined)
		}
	}

	// The pods themselves: one per GPU node, none on a CPU node.
	pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(map[string]string{warm.InstanceLabel: name}).String()})
	if err != nil {
		t.Fatal(err)
	}
	var on []string
	for _, p := range pods.Items {
		on = append(on, p.Spec.NodeName)
	}
	sort.Strings(on)
	if !slices.Equal(on, gpu) {
		t.Errorf("pods on %v, want %v", on, gpu)
	}

	// Idempotent: once the controller has written the status, the same
	// apply, then a dry run, change nothing.
	get := func(ctx context.Context) (string, error) {
		ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return ds.ResourceVersion, nil
	}
	rv := settledRV(t, ctx, get)
	for _, dry := range []bool{false, true} {
		again, err := warm.Apply(ctx, kc, objs, warm.ApplyOptions{DryRun: dry})
		if err != nil || again[0].Action != kube.Unchanged || again[0].Object.GetResourceVersion() != rv {
			t.Errorf("re-apply (dry run %v): %v %v, resourceVersion was %s", dry, again, err, rv)
		}
	}
	if now, err := get(ctx); now != rv {
		t.Errorf("resourceVersion after re-apply %s, want %s (%v)", now, rv, err)
	}
	// A change in a dry run is reported but not stored.
	changed := gpuPrepull(ns)
	changed.PauseImage = "mirror.example/pause:3.10@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a"
	cobjs, _ := warm.PrepullObjects(changed)
	dry, err := warm.Apply(ctx, kc, cobjs, warm.ApplyOptions{DryRun: true})
	if err != nil || dry[0].Action != kube.Configured || !strings.Contains(dry[0].String(), "configured (server dry run)") {
		t.Errorf("dry-run change: %v %v", dry, err)
	}
	if now, _ := get(ctx); now != rv {
		t.Error("a dry run changed the DaemonSet")
	}

	res, err := warm.DeletePrepull(ctx, kc, ns, name, false)
	if err != nil || len(res) != 1 || !res[0].Deleted {
		t.Fatalf("delete: %v %v", res, err)
	}
	if _, err := warm.GetPrepullStatus(ctx, cs, ns, name); err == nil {
		t.Error("status of a deleted prepull")
	}
	if res, err := warm.DeletePrepull(ctx, kc, ns, name, false); err != nil || res[0].Deleted {
		t.Errorf("second delete: %v %v", res, err)
	}
}

// TestPrepullInitContainer: init-container mode rolls out and waits too
// (kwok completes init containers as soon as the pod is bound).
func TestPrepullInitContainer(t *testing.T) {
	c := testcluster.Shared(t)
	t.Parallel()
	cs, kc, ctx := c.Client(), c.Kube(), kctx(t)
	ns := c.Namespace(t, "prepull-init")
	o := gpuPrepull(ns)
	o.Mode = warm.InitContainerMode
	objs, err := warm.PrepullObjects(o)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := warm.Apply(ctx, kc, objs, warm.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	st, err := warm.WaitPrepull(ctx, cs, ns, objs[0].GetName(), fast(time.Minute))
	if err != nil || st.Count(warm.NodePulled) != len(poolNodes(t, ctx, cs, "gpu")) {
		t.Fatalf("wait: %v %+v", err, st)
	}
	names, err := warm.ListPrepulls(ctx, cs, ns)
	if err != nil || !slices.Equal(names, []string{objs[0].GetName()}) {
		t.Errorf("list: %v %v", names, err)
	}
}

// TestPrepullWaitTimesOut: WaitPrepull gives up after its timeout with an
// error naming the nodes still pending and their state, or why no node is
// targeted.
func TestPrepullWaitTimesOut(t *testing.T) {
	c := testcluster.Shared(t)
	t.Parallel()
	cs := c.Client()
	const timeout = 2 * time.Second
	cases := []struct {
		name  string
		setup func(t *testing.T, ns string) warm.PrepullOptions
		want  []string
	}{{
		name: "slow pull",
		setup: func(t *testing.T, ns string) warm.PrepullOptions {
			o := gpuPrepull(ns)
			o.PodAnnotations = map[string]string{testcluster.PullDelayAnnotation: "1h"}
			return o
		},
		want: []string{"with the image on 0 of 2 target nodes; still pending: gpu-0", "gpu-1", "Pending, pause ContainerCreating"},
	}, {
		name: "toleration missing",
		setup: func(t *testing.T, ns string) warm.PrepullOptions {
			o := gpuPrepull(ns)
			o.Tolerations = nil
			return o
		},
		want: []string{"no node is targeted", "gpu-0: not targeted (taint nvidia.com/gpu=present:NoSchedule not tolerated)", "cpu-0: not targeted (no label nvidia.com/gpu.present=true)"},
	}, {
		name: "selector matches no node",
		setup: func(t *testing.T, ns string) warm.PrepullOptions {
			o := gpuPrepull(ns)
			o.NodeSelector[testcluster.InstanceTypeLabel] = "p5.48xlarge"
			return o
		},
		want: []string{"no node is targeted", "gpu-0: not targeted (label node.kubernetes.io/instance-type=g5.12xlarge, not p5.48xlarge)"},
	}, {
		name: "node without room",
		setup: func(t *testing.T, ns string) warm.PrepullOptions {
			// A private node that cannot fit even 1m of CPU.
			nodes := c.Nodes(t, testcluster.NodePool{Name: ns, Count: 1, CPU: "0", Labels: map[string]string{"modelcar.test/prepull": ns}})
			if len(nodes) != 1 {
				t.Fatalf("nodes %v", nodes)
			}
			return warm.PrepullOptions{Image: testImage, Namespace: ns, NodeSelector: map[string]string{"modelcar.test/prepull": ns}}
		},
		want: []string{"with the image on 0 of 1 target nodes; still pending: prepull-timeout-", "Unschedulable: 0/", "Insufficient cpu"},
	}}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ctx := kctx(t)
			ns := c.Namespace(t, "prepull-timeout")
			objs, err := warm.PrepullObjects(tc.setup(t, ns))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := warm.Apply(ctx, c.Kube(), objs, warm.ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			begin := time.Now()
			// Let the scheduler and kwok get as far as they will first.
			if tc.name == "node without room" || tc.name == "slow pull" {
				waitPodsPending(t, ctx, cs, ns)
			}
			st, err := warm.WaitPrepull(ctx, cs, ns, objs[0].GetName(), fast(timeout))
			took := time.Since(begin)
			var npe *warm.NotPulledError
			if !errors.Is(err, warm.ErrNotPulled) || !errors.As(err, &npe) || npe.Status != st || st.Done() {
				t.Fatalf("want a NotPulledError, got %v (status %+v)", err, st)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
			if took > timeout+5*time.Second {
				t.Errorf("gave up after %v, timeout %v", took, timeout)
			}
			t.Logf("%v", err)
		})
	}
}

// waitPodsPending waits until ns has pods and each shows why it is pending
// (unschedulable, or waiting on its containers).
func waitPodsPending(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns string) {
	t.Helper()
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) == 0 {
			return false, nil
		}
		for _, p := range pods.Items {
			explained := len(p.Status.ContainerStatuses) > 0
			for _, c := range p.Status.Conditions {
				if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse {
					explained = true
				}
			}
			if !explained {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("pods in %s never pending with a reason: %v", ns, err)
	}
}

// settledRV waits until controllers stop writing an object (its
// resourceVersion, from get, stays the same for half a second) and returns
// its resourceVersion.
func settledRV(t *testing.T, ctx context.Context, get func(context.Context) (string, error)) string {
	t.Helper()
	var last string
	var since time.Time
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 20*time.Second, true, func(ctx context.Context) (bool, error) {
		rv, err := get(ctx)
		if err != nil {
			return false, err
		}
		if rv != last {
			last, since = rv, time.Now()
		}
		return time.Since(since) >= 500*time.Millisecond, nil
	})
	if err != nil {
		t.Fatalf("resourceVersion never settled (last %s): %v", last, err)
	}
	return last
}

// TestPrepullStatusRules: how GetPrepullStatus reads nodes and pods, on a
// fake clientset (no cluster needed).
func TestPrepullStatusRules(t *testing.T) {
	ctx := context.Background()
	ds, err := warm.Prepull(gpuPrepull("ns"))
	if err != nil {
		t.Fatal(err)
	}
	ds.UID = "ds-uid"
	gpuTaint := corev1.Taint{Key: testcluster.GPUTaintKey, Value: testcluster.GPUTaintValue, Effect: corev1.TaintEffectNoSchedule}
	node := func(name string, gpu bool, taints ...corev1.Taint) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{}}, Spec: corev1.NodeSpec{Taints: taints}}
		if gpu {
			n.Labels[testcluster.GPUPresentLabel] = "true"
		}
		return n
	}
	listed := node("gpu-listed", true, gpuTaint)
	listed.Status.Images = []corev1.ContainerImage{{Names: []string{"registry.modelcar.test/models/llama-3.1-8b@" + testDigest}}}
	ready := metav1.NewTime(time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC))
	pod := func(name, node, image string, st corev1.PodStatus) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: "ns", Labels: ds.Spec.Template.Labels,
				Annotations:     map[string]string{warm.ImageAnnotation: image},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: ds.Name, UID: ds.UID}},
			},
			Spec:   corev1.PodSpec{NodeName: node},
			Status: st,
		}
	}
	readyStatus := corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: ready}}}
	unsched := pod("p-unsched", "", testImage, corev1.PodStatus{Phase: corev1.PodPending, Conditions: []corev1.PodCondition{{
		Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable", Message: "0/9 nodes are available: 1 Insufficient cpu."}}})
	unsched.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchFields: []corev1.NodeSelectorRequirement{{Key: "metadata.name", Operator: corev1.NodeSelectorOpIn, Values: []string{"gpu-full"}}}}}}}}
	cs := fake.NewClientset(ds,
		node("gpu-ready", true, gpuTaint), node("gpu-pulling", true, gpuTaint), node("gpu-stale", true, gpuTaint), listed,
		node("gpu-full", true, gpuTaint), node("gpu-other-taint", true, gpuTaint, corev1.Taint{Key: "team", Value: "a", Effect: corev1.TaintEffectNoExecute}),
		node("gpu-cordoned", true, gpuTaint, corev1.Taint{Key: "node.kubernetes.io/unschedulable", Effect: corev1.TaintEffectNoSchedule}),
		node("cpu-0", false),
		pod("p-ready", "gpu-ready", testImage, readyStatus),
		pod("p-pulling", "gpu-pulling", testImage, corev1.PodStatus{Phase: corev1.PodPending, ContainerStatuses: []corev1.ContainerStatus{{
			Name: "pause", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "ErrImagePull", Message: "401 Unauthorized"}}}}}),
		pod("p-old-image", "gpu-stale", "registry.modelcar.test/models/llama-3.1-8b@sha256:"+strings.Repeat("f", 64), readyStatus),
		unsched,
	)
	st, got := prepullStatus(t, ctx, cs, ds.Name)
	want := map[string]string{
		"gpu-ready":       "pulled: pod p-ready ready",
		"gpu-pulling":     "pending: pod p-pulling Pending, pause ErrImagePull: 401 Unauthorized",
		"gpu-stale":       "pending: no pod yet",
		"gpu-listed":      "pulled: listed in node.status.images",
		"gpu-full":        "pending: pod p-unsched Unschedulable: 0/9 nodes are available: 1 Insufficient cpu.",
		"gpu-other-taint": "not targeted: taint team=a:NoExecute not tolerated",
		"gpu-cordoned":    "pending: no pod yet",
		"cpu-0":           "not targeted: no label nvidia.com/gpu.present=true",
	}
	for n, w := range want {
		if got[n] != w {
			t.Errorf("%s: %q, want %q", n, got[n], w)
		}
	}
	if st.Targets() != 6 || st.Count(warm.NodePulled) != 2 || st.Done() {
		t.Errorf("targets %d pulled %d done %v", st.Targets(), st.Count(warm.NodePulled), st.Done())
	}
	if st.Nodes[len(st.Nodes)-1].Node != "gpu-stale" || !st.Nodes[6].Since.Equal(ready.Time) {
		t.Errorf("nodes not sorted, or since wrong: %+v", st.Nodes)
	}
	_, err = warm.WaitPrepull(ctx, cs, "ns", ds.Name, warm.WaitOptions{Timeout: 50 * time.Millisecond, Interval: 10 * time.Millisecond})
	if !errors.Is(err, warm.ErrNotPulled) || !strings.Contains(err.Error(), "with the image on 2 of 6 target nodes; still pending: gpu-cordoned: pending (no pod yet); gpu-full") {
		t.Errorf("wait: %v", err)
	}
	if _, err := warm.WaitPrepull(ctx, cs, "ns", "missing", fast(time.Second)); err == nil || errors.Is(err, warm.ErrNotPulled) {
		t.Errorf("wait for a missing DaemonSet: %v", err)
	}
}

// TestPrepullStatusNodeAffinity: a DaemonSet whose pods require a node
// affinity (deploy copies the chart's) does not count the nodes outside it
// as targets.
func TestPrepullStatusNodeAffinity(t *testing.T) {
	ctx := context.Background()
	ds, err := warm.Prepull(gpuPrepull("ns"))
	if err != nil {
		t.Fatal(err)
	}
	ds.Spec.Template.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{
			Key: "topology.kubernetes.io/zone", Operator: corev1.NodeSelectorOpIn, Values: []string{"zone-a"}}}}}}}}
	gpuTaint := corev1.Taint{Key: testcluster.GPUTaintKey, Value: testcluster.GPUTaintValue, Effect: corev1.TaintEffectNoSchedule}
	node := func(name, zone string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			testcluster.GPUPresentLabel: "true", "topology.kubernetes.io/zone": zone}}, Spec: corev1.NodeSpec{Taints: []corev1.Taint{gpuTaint}}}
	}
	cs := fake.NewClientset(ds, node("gpu-a", "zone-a"), node("gpu-b", "zone-b"))
	st, got := prepullStatus(t, ctx, cs, ds.Name)
	if got["gpu-a"] != "pending: no pod yet" || got["gpu-b"] != "not targeted: does not match the required node affinity" || st.Targets() != 1 {
		t.Errorf("status %v, %d targets", got, st.Targets())
	}
}

// prepullStatus reads the pre-pull status of DaemonSet ns/NAME, and each
// node's as "STATE: DETAIL".
func prepullStatus(t *testing.T, ctx context.Context, cs kubernetes.Interface, name string) (*warm.PrepullStatus, map[string]string) {
	t.Helper()
	st, err := warm.GetPrepullStatus(ctx, cs, "ns", name)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, n := range st.Nodes {
		got[n.Node] = string(n.State) + ": " + n.Detail
	}
	return st, got
}
