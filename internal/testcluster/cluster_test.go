package testcluster

import (
	"context"
	"fmt"
	"net"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

func TestMain(m *testing.M) { Main(m) }

// testTimeout bounds each wait in these tests.
const testTimeout = 2 * time.Minute

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// gpuContainer is a container that asks for n GPUs.
func gpuContainer(name string, n int64) corev1.Container {
	gpus := *resource.NewQuantity(n, resource.DecimalSI)
	return corev1.Container{
		Name:  name,
		Image: "registry.modelcar.test/models/llm:v1",
		Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), GPUResource: gpus},
			Limits:   corev1.ResourceList{GPUResource: gpus},
		},
	}
}

// fixtureGPUNodes returns the names of the GPU fixture pool's nodes.
func fixtureGPUNodes(t *testing.T, ctx context.Context, cs kubernetes.Interface) []string {
	t.Helper()
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: PoolLabel + "=gpu"})
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, n := range nodes.Items {
		if n.Labels[GPUPresentLabel] != "true" {
			t.Fatalf("fixture node %s has no %s=true label", n.Name, GPUPresentLabel)
		}
		names = append(names, n.Name)
	}
	sort.Strings(names)
	if len(names) != FixtureGPUNodesPerPool {
		t.Fatalf("GPU fixture nodes: %v, want %d", names, FixtureGPUNodesPerPool)
	}
	return names
}

// podsOf lists the pods in ns matching the selector.
func podsOf(ctx context.Context, cs kubernetes.Interface, ns string, sel map[string]string) ([]corev1.Pod, error) {
	list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: labels.SelectorFromSet(sel).String()})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// poll is wait.PollUntilContextTimeout with this file's interval and timeout,
// failing t with what (and the last state) when the condition never holds.
func poll(t *testing.T, ctx context.Context, what string, cond func(ctx context.Context) (bool, string, error)) {
	t.Helper()
	var last string
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, testTimeout, true, func(ctx context.Context) (bool, error) {
		ok, state, err := cond(ctx)
		last = state
		return ok, err
	})
	if err != nil {
		t.Fatalf("%s: %v (last state: %s)", what, err, last)
	}
}

// eventReasons returns, per pod name, the reasons of the events about pods
// in ns read through events.k8s.io/v1 and through core/v1.
func eventReasons(ctx context.Context, cs kubernetes.Interface, ns string) (eventsAPI, coreAPI map[string][]string, err error) {
	evs, err := cs.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, err
	}
	eventsAPI = map[string][]string{}
	for _, e := range evs.Items {
		if e.Regarding.Kind == "Pod" {
			eventsAPI[e.Regarding.Name] = append(eventsAPI[e.Regarding.Name], e.Reason)
		}
	}
	core, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, nil, err
	}
	coreAPI = map[string][]string{}
	for _, e := range core.Items {
		if e.InvolvedObject.Kind == "Pod" {
			coreAPI[e.InvolvedObject.Name] = append(coreAPI[e.InvolvedObject.Name], e.Reason)
		}
	}
	return eventsAPI, coreAPI, nil
}

func hasAll(have []string, want ...string) bool {
	for _, w := range want {
		if !slices.Contains(have, w) {
			return false
		}
	}
	return true
}

// TestSmoke: a DaemonSet on the GPU pool lands on exactly the GPU nodes and
// rolls out; a Deployment requesting GPUs runs on GPU nodes, becomes Ready,
// and its pods get the Scheduled, Pulling and Pulled events with the pull
// delay their annotation asks for.
func TestSmoke(t *testing.T) {
	c := Shared(t)
	if d := StartTime(); d > 0 {
		t.Logf("cluster started in %v", d.Round(100*time.Millisecond))
	}
	cs := c.Client()
	ctx := testContext(t)
	ns := c.Namespace(t, "smoke")
	gpuNodes := fixtureGPUNodes(t, ctx, cs)

	// A DaemonSet on the GPU pool (like a model-cache warmer).
	dsLabels := map[string]string{"app": "gpu-agent"}
	ds := &appsv1.DaemonSet{
		ObjectMeta: metav1.ObjectMeta{Name: "gpu-agent"},
		Spec: appsv1.DaemonSetSpec{
			Selector: &metav1.LabelSelector{MatchLabels: dsLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: dsLabels},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{GPUPresentLabel: "true"},
					Tolerations:  []corev1.Toleration{GPUToleration()},
					Containers:   []corev1.Container{{Name: "agent", Image: "registry.modelcar.test/agent:v1"}},
				},
			},
		},
	}
	if _, err := cs.AppsV1().DaemonSets(ns).Create(ctx, ds, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// A Deployment asking for one GPU per pod, with a 2s simulated pull.
	const pullDelay = 2 * time.Second
	depLabels := map[string]string{"app": "llm"}
	replicas := int32(2)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "llm"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: depLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{
					Labels:      depLabels,
					Annotations: map[string]string{PullDelayAnnotation: pullDelay.String(), ReadyDelayAnnotation: "500ms"},
				},
				Spec: corev1.PodSpec{
					Tolerations: []corev1.Toleration{GPUToleration()},
					Containers:  []corev1.Container{gpuContainer("server", 1)},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	poll(t, ctx, "DaemonSet rollout", func(ctx context.Context) (bool, string, error) {
		d, err := cs.AppsV1().DaemonSets(ns).Get(ctx, ds.Name, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		s := d.Status
		state := fmt.Sprintf("desired=%d updated=%d ready=%d available=%d", s.DesiredNumberScheduled, s.UpdatedNumberScheduled, s.NumberReady, s.NumberAvailable)
		return s.ObservedGeneration >= d.Generation && s.DesiredNumberScheduled == int32(len(gpuNodes)) &&
			s.UpdatedNumberScheduled == s.DesiredNumberScheduled && s.NumberReady == s.DesiredNumberScheduled &&
			s.NumberAvailable == s.DesiredNumberScheduled, state, nil
	})
	dsPods, err := podsOf(ctx, cs, ns, dsLabels)
	if err != nil {
		t.Fatal(err)
	}
	var dsNodes []string
	for _, p := range dsPods {
		if !podReady(&p) || p.Status.Phase != corev1.PodRunning {
			t.Errorf("DaemonSet pod %s: phase %s, ready %v", p.Name, p.Status.Phase, podReady(&p))
		}
		dsNodes = append(dsNodes, p.Spec.NodeName)
	}
	sort.Strings(dsNodes)
	if !slices.Equal(dsNodes, gpuNodes) {
		t.Errorf("DaemonSet pods on %v, want one on each GPU node %v", dsNodes, gpuNodes)
	}

	poll(t, ctx, "Deployment rollout", func(ctx context.Context) (bool, string, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, dep.Name, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		s := d.Status
		state := fmt.Sprintf("updated=%d ready=%d available=%d", s.UpdatedReplicas, s.ReadyReplicas, s.AvailableReplicas)
		return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == replicas && s.ReadyReplicas == replicas &&
			s.AvailableReplicas == replicas, state, nil
	})
	depPods, err := podsOf(ctx, cs, ns, depLabels)
	if err != nil {
		t.Fatal(err)
	}
	if len(depPods) != int(replicas) {
		t.Fatalf("Deployment has %d pods, want %d", len(depPods), replicas)
	}
	for _, p := range depPods {
		if !slices.Contains(gpuNodes, p.Spec.NodeName) {
			t.Errorf("GPU pod %s on %q, want a GPU node %v", p.Name, p.Spec.NodeName, gpuNodes)
		}
		if p.Status.PodIP == "" || p.Status.HostIP == "" {
			t.Errorf("pod %s: podIP %q hostIP %q", p.Name, p.Status.PodIP, p.Status.HostIP)
		}
	}

	// Events: Scheduled from the scheduler, Pulling and Pulled (and
	// Started) from kwok's stages, through both event APIs.
	want := []string{"Scheduled", ReasonPulling, ReasonPulled, ReasonStarted}
	poll(t, ctx, "pod events", func(ctx context.Context) (bool, string, error) {
		byEventsAPI, byCoreAPI, err := eventReasons(ctx, cs, ns)
		if err != nil {
			return false, "", err
		}
		for _, p := range depPods {
			if !hasAll(byEventsAPI[p.Name], want...) || !hasAll(byCoreAPI[p.Name], want...) {
				return false, fmt.Sprintf("%s: events.k8s.io/v1 %v, core/v1 %v", p.Name, byEventsAPI[p.Name], byCoreAPI[p.Name]), nil
			}
		}
		return true, "", nil
	})

	// The Pulling to Pulled gap is the annotation's delay (event times have
	// a resolution of one second).
	core, err := cs.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range depPods {
		var pulling, pulled time.Time
		for _, e := range core.Items {
			if e.InvolvedObject.Name != p.Name {
				continue
			}
			switch e.Reason {
			case ReasonPulling:
				pulling = eventTime(e)
			case ReasonPulled:
				pulled = eventTime(e)
			}
		}
		if gap := pulled.Sub(pulling); gap < pullDelay-time.Second || gap > pullDelay+10*time.Second {
			t.Errorf("pod %s: Pulled %v after Pulling, want about %v", p.Name, gap, pullDelay)
		}
	}
}

func eventTime(e corev1.Event) time.Time {
	if !e.EventTime.IsZero() {
		return e.EventTime.Time
	}
	if !e.FirstTimestamp.IsZero() {
		return e.FirstTimestamp.Time
	}
	return e.LastTimestamp.Time
}

// TestPreemption: placeholder pods at a negative priority that may not
// preempt fill every GPU of a pool; a normal-priority GPU pod arrives; the
// scheduler preempts one placeholder and the new pod runs, while the
// placeholder's replacement stays Pending.
func TestPreemption(t *testing.T) {
	c := Shared(t)
	cs := c.Client()
	ctx := testContext(t)
	ns := c.Namespace(t, "preempt")

	// A private GPU pool: a taint keeps every other test's pods off it, so
	// "all GPUs are taken" holds whatever else runs on the cluster.
	const nodes, gpusPerNode = 2, 4
	privateTaint := corev1.Taint{Key: "modelcar.test/private", Value: ns, Effect: corev1.TaintEffectNoSchedule}
	pool := ns
	poolNodes := c.Nodes(t, NodePool{Name: pool, Count: nodes, GPUs: gpusPerNode, Taints: []corev1.Taint{privateTaint}})
	tolerations := []corev1.Toleration{GPUToleration(), {Key: privateTaint.Key, Operator: corev1.TolerationOpEqual, Value: privateTaint.Value, Effect: privateTaint.Effect}}
	nodeSelector := map[string]string{PoolLabel: pool}

	never := corev1.PreemptNever
	pc := &schedulingv1.PriorityClass{
		ObjectMeta:       metav1.ObjectMeta{Name: "placeholder-" + ns},
		Value:            -10,
		PreemptionPolicy: &never,
		Description:      "GPU placeholders: first to be preempted, never preempt",
	}
	if _, err := cs.SchedulingV1().PriorityClasses().Create(ctx, pc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cs.SchedulingV1().PriorityClasses().Delete(context.Background(), pc.Name, metav1.DeleteOptions{})
	})

	placeholders := int32(nodes * gpusPerNode)
	phLabels := map[string]string{"app": "gpu-placeholder"}
	ph := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "gpu-placeholder"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &placeholders,
			Selector: &metav1.LabelSelector{MatchLabels: phLabels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: phLabels},
				Spec: corev1.PodSpec{
					PriorityClassName: pc.Name,
					NodeSelector:      nodeSelector,
					Tolerations:       tolerations,
					Containers:        []corev1.Container{gpuContainer("pause", 1)},
				},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, ph, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "placeholders fill the pool", func(ctx context.Context) (bool, string, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, ph.Name, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		return d.Status.ReadyReplicas == placeholders, fmt.Sprintf("ready=%d", d.Status.ReadyReplicas), nil
	})
	before, err := podsOf(ctx, cs, ns, phLabels)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range before {
		if p.Spec.Priority == nil || *p.Spec.Priority != -10 {
			t.Fatalf("placeholder %s priority %v, want -10", p.Name, p.Spec.Priority)
		}
	}

	// A normal-priority pod asking for one GPU.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "llm", Labels: map[string]string{"app": "llm"}},
		Spec: corev1.PodSpec{
			NodeSelector: nodeSelector,
			Tolerations:  tolerations,
			Containers:   []corev1.Container{gpuContainer("server", 1)},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	poll(t, ctx, "the GPU pod runs", func(ctx context.Context) (bool, string, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		state := fmt.Sprintf("phase=%s node=%q nominated=%q", p.Status.Phase, p.Spec.NodeName, p.Status.NominatedNodeName)
		return p.Status.Phase == corev1.PodRunning && podReady(p), state, nil
	})
	got, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(poolNodes, got.Spec.NodeName) {
		t.Errorf("GPU pod on %q, want one of %v", got.Spec.NodeName, poolNodes)
	}

	// Exactly one placeholder was preempted (a Preempted event, and its pod
	// gone); its replacement cannot preempt anything and stays Pending,
	// Unschedulable.
	poll(t, ctx, "one placeholder preempted, its replacement pending", func(ctx context.Context) (bool, string, error) {
		pods, err := podsOf(ctx, cs, ns, phLabels)
		if err != nil {
			return false, "", err
		}
		var running, pending int
		survivors := map[string]bool{}
		for _, p := range pods {
			switch {
			case p.DeletionTimestamp != nil:
			case p.Status.Phase == corev1.PodRunning:
				running++
				survivors[p.Name] = true
			case p.Status.Phase == corev1.PodPending && p.Spec.NodeName == "" && unschedulableReason(&p) == corev1.PodReasonUnschedulable:
				pending++
			}
		}
		var gone []string
		for _, p := range before {
			if !survivors[p.Name] {
				gone = append(gone, p.Name)
			}
		}
		evs, err := cs.EventsV1().Events(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, "", err
		}
		var preempted []string
		for _, e := range evs.Items {
			if e.Reason == "Preempted" && e.Regarding.Kind == "Pod" {
				preempted = append(preempted, e.Regarding.Name)
			}
		}
		state := fmt.Sprintf("running=%d pending=%d gone=%v preempted=%v", running, pending, gone, preempted)
		return running == int(placeholders)-1 && pending == 1 && len(gone) == 1 &&
			slices.Equal(preempted, gone), state, nil
	})
}

// unschedulableReason is the reason of p's PodScheduled condition.
func unschedulableReason(p *corev1.Pod) string {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse {
			return cond.Reason
		}
	}
	return ""
}

// TestNodeAddressesStayOnLoopback: every address a node reports is
// loopback or its own name, and the apiserver reaches a node's kubelet (for
// logs) by its InternalIP: a log request fails on 127.0.0.1, not by looking
// up the node's name in DNS.
func TestNodeAddressesStayOnLoopback(t *testing.T) {
	c := Shared(t)
	cs := c.Client()
	ctx := testContext(t)
	nodes, err := cs.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		for _, a := range n.Status.Addresses {
			if a.Type == corev1.NodeHostName {
				continue
			}
			if ip := net.ParseIP(a.Address); ip == nil || !ip.IsLoopback() {
				t.Errorf("node %s reports %s address %s, not loopback", n.Name, a.Type, a.Address)
			}
		}
	}
	ns := c.Namespace(t, "logs")
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "server"},
		Spec: corev1.PodSpec{
			Tolerations: []corev1.Toleration{GPUToleration()},
			Containers:  []corev1.Container{gpuContainer("server", 1)},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var node string
	poll(t, ctx, "pod running", func(ctx context.Context) (bool, string, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, "", err
		}
		node = p.Spec.NodeName
		return p.Status.Phase == corev1.PodRunning, string(p.Status.Phase), nil
	})
	body, err := cs.CoreV1().Pods(ns).GetLogs(pod.Name, &corev1.PodLogOptions{}).DoRaw(ctx)
	if err == nil {
		t.Skip("a kubelet answered on 127.0.0.1; nothing to check")
	}
	// The apiserver's reason is in the response body.
	if msg := string(body); !strings.Contains(msg, "127.0.0.1") || strings.Contains(msg, "lookup "+node) {
		t.Errorf("log request for a pod on %s: %v: %s; want a failure on 127.0.0.1 with no DNS lookup", node, err, msg)
	}
}
