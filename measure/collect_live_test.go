package measure

import (
	"context"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// Offline tests of the live collector, on client-go's fake clientset.

var liveT0 = time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)

func mt(s float64) metav1.Time {
	return metav1.NewTime(liveT0.Add(time.Duration(s * float64(time.Second))))
}

// fakePod is a pod created at liveT0, scheduled on node, started at +5 and,
// when ready, Ready at +9.
func fakePod(ns, name, node string, ready bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: k8stypes.UID("uid-" + name), Labels: map[string]string{"app": "vllm"}, CreationTimestamp: mt(0)},
		Spec: corev1.PodSpec{NodeName: node, Containers: []corev1.Container{
			{Name: "vllm", Image: "vllm/vllm-openai:v0.8.5"}, {Name: "side", Image: "busybox"},
		}},
		Status: corev1.PodStatus{
			Phase: corev1.PodRunning,
			Conditions: []corev1.PodCondition{
				{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: mt(1)},
				{Type: corev1.PodReady, Status: corev1.ConditionFalse, LastTransitionTime: mt(1)},
			},
			ContainerStatuses: []corev1.ContainerStatus{
				{Name: "vllm", Image: "vllm/vllm-openai:v0.8.5", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: mt(5)}}},
				{Name: "side", Image: "busybox", State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: mt(5)}}},
			},
		},
	}
	if ready {
		p.Status.Conditions[1] = corev1.PodCondition{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: mt(9)}
	}
	return p
}

func fakeNode(name string, gpus int64) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: mt(-3600)},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{"nvidia.com/gpu": *resource.NewQuantity(gpus, resource.DecimalSI)},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, LastTransitionTime: mt(-3500)}},
		},
	}
}

// kwok-style events: fixed messages naming no image, no fieldPath, times
// to the second; Scheduled from the scheduler through events.k8s.io/v1.
func fakeEvents(ns string, p *corev1.Pod) ([]runtime.Object, *eventsv1.Event) {
	ref := corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: p.Name, UID: p.UID}
	core := func(uid, reason, msg string, at float64) *corev1.Event {
		return &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{Namespace: ns, Name: p.Name + "." + uid, UID: k8stypes.UID("ev-" + uid)},
			InvolvedObject: ref, Reason: reason, Message: msg, Source: corev1.EventSource{Component: "kwok_controller"},
			FirstTimestamp: mt(at), LastTimestamp: mt(at), Count: 1, Type: "Normal",
		}
	}
	scheduled := &eventsv1.Event{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: p.Name + ".s", UID: "ev-s"},
		EventTime:  metav1.NewMicroTime(liveT0.Add(500 * time.Millisecond)), Reason: "Scheduled",
		Note: "Successfully assigned " + ns + "/" + p.Name + " to " + p.Spec.NodeName, Regarding: ref,
		ReportingController: "default-scheduler", Action: "Binding", Type: "Normal",
	}
	other := &corev1.Event{ // about another pod: left out of the bundle
		ObjectMeta:     metav1.ObjectMeta{Namespace: ns, Name: "other.1", UID: "ev-other"},
		InvolvedObject: corev1.ObjectReference{Kind: "Pod", Namespace: ns, Name: "other"}, Reason: "Pulling", Message: "Pulling image",
		FirstTimestamp: mt(1), LastTimestamp: mt(1), Count: 1,
	}
	return []runtime.Object{
		core("1", "Pulling", "Pulling image", 1), core("2", "Pulled", "Successfully pulled image", 4),
		core("3", "Started", "Started container", 5), other,
	}, scheduled
}

func vllmLog(start float64) string {
	at := func(s float64) string {
		return liveT0.Add(time.Duration((start + s) * float64(time.Second))).Format(time.RFC3339Nano)
	}
	return at(0.3) + " INFO vLLM API server version 0.8.5\n" +
		at(2) + " INFO Loading weights took 1.00 seconds\n" +
		at(2.1) + " INFO Model loading took 15.0 GiB and 2.1 seconds\n" +
		at(3) + " INFO:     Application startup complete.\n"
}

// logReactor answers pods/log with log(container), or an error for "side".
func logReactor(log func(container string) string) k8stesting.ReactionFunc {
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "log" {
			return false, nil, nil
		}
		opts := a.(k8stesting.GenericAction).GetValue().(*corev1.PodLogOptions)
		if !opts.Timestamps {
			return true, nil, apierrors.NewBadRequest("want timestamps")
		}
		if opts.Container == "side" {
			return true, nil, apierrors.NewServiceUnavailable("no kubelet")
		}
		return true, &runtime.Unknown{Raw: []byte(log(opts.Container))}, nil
	}
}

// TestLiveWatchFakeClient: Watch on a pod already Ready converts what the
// API holds into the bundle the phase model reads, reads logs through the
// API with timestamps, and lists a log it cannot get as missing.
func TestLiveWatchFakeClient(t *testing.T) {
	const ns = "llm"
	p := fakePod(ns, "vllm-a", "gpu-0", true)
	objs, scheduled := fakeEvents(ns, p)
	client := fake.NewClientset(append(objs, p, fakeNode("gpu-0", 4), fakeNode("cpu-0", 0), scheduled)...)
	client.PrependReactor("get", "pods", logReactor(func(string) string { return vllmLog(5) }))
	var progress []string
	b, err := Watch(context.Background(), client, WatchOptions{Namespace: ns, Selector: "app=vllm", Timeout: time.Minute,
		Progress: func(m string) { progress = append(progress, m) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Pods) != 1 || len(b.Nodes) != 1 || b.Nodes[0].Name != "gpu-0" || len(b.Events) != 4 || len(b.Logs) != 1 {
		t.Fatalf("bundle: pods %d, nodes %+v, events %d, logs %d", len(b.Pods), b.Nodes, len(b.Events), len(b.Logs))
	}
	if !b.Nodes[0].GPUAllocatableAt.IsZero() {
		t.Errorf("a node that had GPUs when the watch started got GPUAllocatableAt %v", b.Nodes[0].GPUAllocatableAt)
	}
	if len(b.Missing) != 1 || !strings.HasPrefix(b.Missing[0], "logs/llm_vllm-a_side.log: container log unavailable: ") || !strings.Contains(b.Missing[0], "no kubelet") {
		t.Errorf("missing = %q", b.Missing)
	}
	rep, err := Analyze(b)
	if err != nil {
		t.Fatal(err)
	}
	cs := rep.ColdStarts[0]
	// startedAt is 5 s, to the second; the first log line at 5.3 s bounds
	// the start, so load counts from there and the 0.3 s before it is
	// unattributed.
	want := Phases{Provision: 0.5, Pull: 3, Load: 1.8, Warmup: 1.9}
	if cs.Phases != want || cs.UnattributedSeconds != 1.8 || cs.TotalSeconds != 9 || cs.Node != "gpu-0" {
		t.Errorf("cold start: phases %+v, unattributed %.3f, total %.3f, node %s; want %+v, 1.8, 9, gpu-0", cs.Phases, cs.UnattributedSeconds, cs.TotalSeconds, cs.Node, want)
	}
	if len(cs.Details.Images) != 1 || cs.Details.Images[0].Image != "vllm/vllm-openai:v0.8.5" || cs.Details.Images[0].Container != "vllm" {
		t.Errorf("images = %+v", cs.Details.Images)
	}
	if !strings.Contains(strings.Join(progress, "\n"), "log of container side unavailable") {
		t.Errorf("progress = %q", progress)
	}

	// --container: only the serving container's log is read.
	b, err = Watch(context.Background(), client, WatchOptions{Namespace: ns, Pods: []string{"llm/vllm-a"}, Container: "vllm"})
	if err != nil || len(b.Missing) != 0 || len(b.Logs) != 1 {
		t.Errorf("--container vllm: %v, missing %q, %d logs", err, b.Missing, len(b.Logs))
	}
}

// TestLiveWatchTimeout: a pod that never becomes Ready is returned as seen
// when the timeout passes, with Missing saying so; a named pod that never
// appears is listed too; no pod at all is an error.
func TestLiveWatchTimeout(t *testing.T) {
	const ns = "llm"
	p := fakePod(ns, "vllm-a", "gpu-0", false)
	client := fake.NewClientset(p, fakeNode("gpu-0", 4))
	client.PrependReactor("get", "pods", logReactor(func(string) string { return vllmLog(5) }))
	b, err := Watch(context.Background(), client, WatchOptions{Namespace: ns, Pods: []string{"vllm-a", "vllm-b"}, Container: "vllm", Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(b.Missing, "\n")
	if !strings.Contains(got, "pod llm/vllm-a: not Ready after 200ms") || !strings.Contains(got, "pod llm/vllm-b: not seen within 200ms") {
		t.Errorf("missing = %q", b.Missing)
	}
	if len(b.Logs) != 1 {
		t.Errorf("the log of a pod not Ready is read at the end: %d logs", len(b.Logs))
	}
	rep, err := Analyze(b)
	if err != nil {
		t.Fatal(err)
	}
	if cs := rep.ColdStarts[0]; !cs.Ready.IsZero() || !strings.Contains(strings.Join(cs.Missing, "\n"), "never became Ready") {
		t.Errorf("cold start: ready %v, missing %q", cs.Ready, cs.Missing)
	}

	if _, err := Watch(context.Background(), client, WatchOptions{Namespace: ns, Selector: "app=none", Timeout: 100 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "no pod matching app=none appeared") {
		t.Errorf("no pods: %v", err)
	}
	for _, o := range []WatchOptions{{Selector: "app=x"}, {Namespace: ns}, {Namespace: ns, Selector: "app in (("},
		{Namespace: ns, Pods: []string{"other/vllm-a"}}, {Namespace: ns, Pods: []string{""}}} {
		if _, err := Watch(context.Background(), client, o); err == nil {
			t.Errorf("Watch(%+v) = nil error", o)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Watch(ctx, client, WatchOptions{Namespace: ns, Selector: "app=vllm"}); err == nil {
		t.Error("Watch with a cancelled context: nil error")
	}
}

// TestLiveWatchNodeGPUs: a node seen without GPUs, then with them, gets the
// time Watch saw them (Node.GPUAllocatableAt); forbidden events and their
// absence are partial data, not a failure.
func TestLiveWatchNodeGPUs(t *testing.T) {
	const ns = "llm"
	p := fakePod(ns, "vllm-a", "gpu-new", false)
	client := fake.NewClientset(p, fakeNode("gpu-new", 0))
	forbidden := func(a k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "events"}, "", nil)
	}
	client.PrependReactor("list", "events", forbidden)
	client.PrependReactor("get", "pods", logReactor(func(string) string { return vllmLog(5) }))
	seen := make(chan struct{})
	opts := WatchOptions{Namespace: ns, Selector: "app=vllm", Container: "vllm", Timeout: time.Minute,
		Progress: func(m string) {
			if strings.HasPrefix(m, "node gpu-new: 2 GPUs allocatable") {
				close(seen)
			}
		}}
	synced := make(chan struct{})
	opts.synced = func() { close(synced) }
	type result struct {
		b   *Bundle
		err error
	}
	done := make(chan result, 1)
	before := time.Now()
	go func() { b, err := Watch(context.Background(), client, opts); done <- result{b, err} }()
	<-synced
	ctx := context.Background()
	if _, err := client.CoreV1().Nodes().UpdateStatus(ctx, fakeNode("gpu-new", 2), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	<-seen
	if _, err := client.CoreV1().Pods(ns).UpdateStatus(ctx, fakePod(ns, "vllm-a", "gpu-new", true), metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	res := <-done
	if res.err != nil {
		t.Fatal(res.err)
	}
	b := res.b
	if len(b.Nodes) != 1 || b.Nodes[0].GPUs != 2 || b.Nodes[0].GPUAllocatableAt.Before(before) || b.Nodes[0].GPUAllocatableAt.After(time.Now()) {
		t.Errorf("nodes = %+v", b.Nodes)
	}
	if len(b.Events) != 0 || len(b.Missing) != 1 || b.Missing[0] != EventsFile {
		t.Errorf("events %d, missing %q; want none and %s", len(b.Events), b.Missing, EventsFile)
	}
	rep, err := Analyze(b)
	if err != nil {
		t.Fatal(err)
	}
	if cs := rep.ColdStarts[0]; !strings.Contains(strings.Join(cs.Missing, "\n"), "no events.json: pull unattributed") {
		t.Errorf("missing = %q", cs.Missing)
	}
}

// TestLiveKwokPullMessages: kwok's fixed "Pulling image" and "Successfully
// pulled image" name no image and no container; the pull is timed from one
// to the other, for the serving container's image.
func TestLiveKwokPullMessages(t *testing.T) {
	if img, ok := pullingImage("Pulling image"); !ok || img != "" {
		t.Errorf("pullingImage(kwok) = %q, %v", img, ok)
	}
	if m, ok := parsePulled("Successfully pulled image"); !ok || m.image != "" || m.cached {
		t.Errorf("parsePulled(kwok) = %+v, %v", m, ok)
	}
	if _, ok := pullingImage("Pulling image later"); ok {
		t.Error(`pullingImage("Pulling image later") = ok`)
	}
}

// TestLiveRunOptions: Run checks its options before touching the cluster.
func TestLiveRunOptions(t *testing.T) {
	client := fake.NewClientset()
	for _, o := range []RunOptions{
		{Deployment: "d"}, {Namespace: "n"}, {Namespace: "n", Deployment: "d", Mode: "restart"}, {Namespace: "n", Deployment: "d", Times: -1},
	} {
		if _, err := Run(context.Background(), client, o); err == nil {
			t.Errorf("Run(%+v) = nil error", o)
		}
	}
	if _, err := Run(context.Background(), client, RunOptions{Namespace: "n", Deployment: "d"}); !apierrors.IsNotFound(err) {
		t.Errorf("Run on a missing deployment: %v", err)
	}
}
