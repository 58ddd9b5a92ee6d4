package measure

import (
	"bytes"
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcar/modelcar/internal/testcluster"
)

// The end-to-end tests run on the real control plane with kwok fake GPU
// nodes (internal/testcluster): kwok's pod stages emit Scheduled, Pulling
// and Pulled events and set the container's start and the Ready condition
// after the delays the pod's annotations give, and a fake log source plays
// vLLM's log, timed from the container's start. The phases must match the
// configured delays within a second: Kubernetes keeps most of these times
// to the second.

func TestMain(m *testing.M) { testcluster.Main(m) }

// The fake vLLM log, in seconds after the container's start.
const (
	fakeLoadingWeightsAt = 2.0 // "Loading weights took 1.00 seconds"
	fakeModelLoadingAt   = 2.1 // "Model loading took 15.0 GiB and 2.1 seconds": weights loaded
	fakeStartupAt        = 4.0 // "Application startup complete."
)

// fakeVLLMLog is a LogSource that plays a vLLM 0.8 log from the container's
// startedAt; it counts its calls per pod.
type fakeVLLMLog struct {
	mu    sync.Mutex
	calls map[string]int
}

func (f *fakeVLLMLog) source(_ context.Context, p *corev1.Pod, container string) ([]LogLine, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[p.Name]++
	f.mu.Unlock()
	var start time.Time
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container && s.State.Running != nil {
			start = s.State.Running.StartedAt.Time
		}
	}
	if start.IsZero() {
		return nil, errors.New("container " + container + " has not started")
	}
	at := func(s float64) time.Time { return start.Add(time.Duration(s * float64(time.Second))) }
	return []LogLine{
		{at(0.3), "INFO 05-01 10:00:00 [api_server.py:1043] vLLM API server version 0.8.5"},
		{at(0.4), "INFO 05-01 10:00:00 [config.py:689] This model supports multiple tasks: {'generate'}. Defaulting to 'generate'."},
		{at(fakeLoadingWeightsAt), "INFO 05-01 10:00:02 [loader.py:458] Loading weights took 1.00 seconds"},
		{at(fakeModelLoadingAt), "INFO 05-01 10:00:02 [gpu_model_runner.py:1347] Model loading took 15.0 GiB and 2.1 seconds"},
		{at(fakeStartupAt), "INFO:     Application startup complete."},
	}, nil
}

// gpuPodTemplate is a vLLM-like pod on the GPU pool with kwok delays.
func gpuPodTemplate(app string, delays map[string]string, nodeSelector map[string]string, tolerations ...corev1.Toleration) corev1.PodTemplateSpec {
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}, Annotations: delays},
		Spec: corev1.PodSpec{
			NodeSelector: nodeSelector,
			Tolerations:  append([]corev1.Toleration{testcluster.GPUToleration()}, tolerations...),
			Containers: []corev1.Container{{
				Name:  "vllm",
				Image: "vllm/vllm-openai:v0.8.5",
				Resources: corev1.ResourceRequirements{
					Limits: corev1.ResourceList{testcluster.GPUResource: resource.MustParse("1")},
				},
			}},
		},
	}
}

func createDeployment(t *testing.T, client kubernetes.Interface, ns, name string, replicas int32, tmpl corev1.PodTemplateSpec) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: tmpl.Labels},
			Template: tmpl,
		},
	}
	d, err := client.AppsV1().Deployments(ns).Create(context.Background(), d, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// addNodes creates pool's nodes, as an autoscaler would, without waiting
// for them to be schedulable (testcluster's Cluster.Nodes waits for the node
// lifecycle controller, up to its monitor period): the cold starts wait for
// them anyway. They are deleted when t ends.
func addNodes(t *testing.T, c *testcluster.Cluster, pool testcluster.NodePool) []string {
	t.Helper()
	var names []string
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := c.DeleteNodes(ctx, names...); err != nil {
			t.Logf("deleting nodes: %v", err)
		}
	})
	for _, n := range pool.Nodes() {
		if _, err := c.Client().CoreV1().Nodes().Create(context.Background(), n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		names = append(names, n.Name)
	}
	return names
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol+1e-9 }

// checkSums: the phases and unattributed add up to the total (to the ms).
func checkSums(t *testing.T, c *ColdStart) {
	t.Helper()
	p := c.Phases
	if sum := p.Provision + p.Pull + p.Load + p.Warmup + c.UnattributedSeconds; !near(sum, c.TotalSeconds, 0.0015) {
		t.Errorf("%s: phases %+v + unattributed %.3f = %.3f, total %.3f", c.Pod, p, c.UnattributedSeconds, sum, c.TotalSeconds)
	}
}

func startWatch(ctx context.Context, client kubernetes.Interface, opts WatchOptions) (<-chan struct{}, func() (*Bundle, error)) {
	synced := make(chan struct{})
	opts.synced = func() { close(synced) }
	var b *Bundle
	var err error
	done := make(chan struct{})
	go func() {
		defer close(done)
		b, err = Watch(ctx, client, opts)
	}()
	return synced, func() (*Bundle, error) { <-done; return b, err }
}

// waitSynced waits until Watch's caches have synced, or Watch failed.
func waitSynced(t *testing.T, synced <-chan struct{}, result func() (*Bundle, error)) {
	t.Helper()
	failed := make(chan error, 1)
	go func() {
		if _, err := result(); err != nil {
			failed <- err
		}
	}()
	select {
	case <-synced:
	case err := <-failed:
		t.Fatalf("watch: %v", err)
	}
}

// TestWatchLive is issue 6's end-to-end check: a Deployment on the GPU
// pool whose pod pulls for 3 s and is Ready 5 s after its container
// started, with the fake vLLM log; Watch, started before the Deployment,
// follows it until Ready, and Analyze reports pull ≈ 3 s, load and warmup
// as the log and the delays say, within a second. The recorded bundle reads
// back to the same report.
func TestWatchLive(t *testing.T) {
	t.Parallel()
	c := testcluster.Shared(t)
	client := c.Client()
	ns := c.Namespace(t, "measure-watch")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const (
		pullingDelay = 1.0 // scheduled → Pulling: sandbox, volumes (unattributed)
		pullDelay    = 3.0
		readyDelay   = 5.0 // container started → Ready
	)
	logs := &fakeVLLMLog{}
	record := t.TempDir()
	var progress []string
	var progressMu sync.Mutex
	synced, result := startWatch(ctx, client, WatchOptions{
		Namespace: ns, Selector: "app=vllm", Timeout: time.Minute, Record: record, LogSource: logs.source,
		Progress: func(m string) { progressMu.Lock(); progress = append(progress, m); progressMu.Unlock() },
	})
	waitSynced(t, synced, result)
	createDeployment(t, client, ns, "vllm", 1, gpuPodTemplate("vllm", map[string]string{
		testcluster.PullingDelayAnnotation: "1s",
		testcluster.PullDelayAnnotation:    "3s",
		testcluster.ReadyDelayAnnotation:   "5s",
	}, map[string]string{testcluster.GPUPresentLabel: "true"}))

	b, err := result()
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Pods) != 1 || len(b.Logs) != 1 || len(b.Nodes) != 1 {
		t.Fatalf("bundle: %d pods, %d logs, %d nodes; want 1 each (missing %q)", len(b.Pods), len(b.Logs), len(b.Nodes), b.Missing)
	}
	if len(b.Missing) != 0 {
		t.Errorf("missing = %q", b.Missing)
	}
	if n := logs.calls[b.Pods[0].Name]; n != 1 {
		t.Errorf("log source called %d times for the pod; want once, at Ready", n)
	}
	reasons := map[string]bool{}
	for _, e := range b.Events {
		reasons[e.Reason] = true
	}
	for _, r := range []string{"Scheduled", testcluster.ReasonPulling, testcluster.ReasonPulled, testcluster.ReasonStarted} {
		if !reasons[r] {
			t.Errorf("no %s event in the bundle (%d events)", r, len(b.Events))
		}
	}

	rep, err := Analyze(b)
	if err != nil {
		t.Fatal(err)
	}
	cs := &rep.ColdStarts[0]
	var text bytes.Buffer
	if err := Render(&text, rep, Text); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", text.String())
	if cs.Ready.IsZero() || cs.Node == "" || len(cs.Missing) != 0 {
		t.Errorf("cold start: ready %v, node %q, missing %q", cs.Ready, cs.Node, cs.Missing)
	}
	if !cs.Details.Provision.Known || !cs.Details.Pull.Known || !cs.Details.Load.Known || !cs.Details.Warmup.Known {
		t.Errorf("a phase is unknown: %+v", cs.Details)
	}
	wantLoad := fakeModelLoadingAt
	wantWarmup := readyDelay - fakeModelLoadingAt
	if !near(cs.Phases.Pull, pullDelay, 1) {
		t.Errorf("pull = %.3f s, want %.1f ± 1", cs.Phases.Pull, pullDelay)
	}
	if !near(cs.Phases.Load, wantLoad, 1) {
		t.Errorf("load = %.3f s, want %.1f ± 1", cs.Phases.Load, wantLoad)
	}
	if !near(cs.Phases.Warmup, wantWarmup, 1) {
		t.Errorf("warmup = %.3f s, want %.1f ± 1", cs.Phases.Warmup, wantWarmup)
	}
	if cs.Phases.Provision > 2 {
		t.Errorf("provision = %.3f s, want scheduling only (a free GPU node)", cs.Phases.Provision)
	}
	if !near(cs.UnattributedSeconds, pullingDelay, 1) {
		t.Errorf("unattributed = %.3f s, want %.1f ± 1 (scheduled → Pulling)", cs.UnattributedSeconds, pullingDelay)
	}
	if !near(cs.TotalSeconds, pullingDelay+pullDelay+readyDelay, 2.5) {
		t.Errorf("total = %.3f s, want about %.1f", cs.TotalSeconds, pullingDelay+pullDelay+readyDelay)
	}
	checkSums(t, cs)
	if len(cs.Details.Images) != 1 || cs.Details.Images[0].Image != "vllm/vllm-openai:v0.8.5" || cs.Details.Images[0].Container != "vllm" {
		t.Errorf("images = %+v", cs.Details.Images)
	}
	steps := map[string]Step{}
	for _, st := range append(cs.Details.Load.Steps, cs.Details.Warmup.Steps...) {
		steps[st.Name] = st
	}
	if st := steps[markModelLoading]; st.Seconds != 2.1 || st.GiB != 15 {
		t.Errorf("model loading step = %+v", st)
	}
	if st := steps[markLoadingWeights]; st.Seconds != 1 {
		t.Errorf("loading weights step = %+v", st)
	}
	if st := steps[markStartup]; !near(st.Seconds, fakeStartupAt-fakeModelLoadingAt, 0.001) {
		t.Errorf("api server up step = %+v", st)
	}
	if cs.Details.VLLMVersion != "0.8.5" || cs.Details.Container != "vllm" {
		t.Errorf("version %q, container %q", cs.Details.VLLMVersion, cs.Details.Container)
	}
	progressMu.Lock()
	if !strings.Contains(strings.Join(progress, "\n"), ": Ready ") {
		t.Errorf("progress = %q", progress)
	}
	progressMu.Unlock()

	// --record: the bundle reads back to the same report.
	back, err := ReadBundle(record)
	if err != nil {
		t.Fatal(err)
	}
	rep2, err := Analyze(back)
	if err != nil {
		t.Fatal(err)
	}
	var j1, j2 bytes.Buffer
	if err := Render(&j1, rep, JSON); err != nil {
		t.Fatal(err)
	}
	if err := Render(&j2, rep2, JSON); err != nil {
		t.Fatal(err)
	}
	if j1.String() != j2.String() {
		t.Errorf("the recorded bundle reads back to another report:\nlive:\n%s\nrecorded:\n%s", j1.String(), j2.String())
	}
}

// TestWatchLiveNewNode: a pod that waits for a GPU node that does not exist
// yet; the node appears while Watch runs, so provision is split into
// waiting for scale-up, node boot, GPU allocatable (the time Watch first saw
// the node's GPUs) and scheduling.
func TestWatchLiveNewNode(t *testing.T) {
	t.Parallel()
	c := testcluster.Shared(t)
	client := c.Client()
	ns := c.Namespace(t, "measure-node")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	pool := testcluster.NodePool{
		Name: "measure-new-" + ns[len(ns)-5:], Count: 1, GPUs: 2,
		Taints: []corev1.Taint{{Key: "modelcar.test/measure-new", Value: ns, Effect: corev1.TaintEffectNoSchedule}},
	}
	logs := &fakeVLLMLog{}
	synced, result := startWatch(ctx, client, WatchOptions{Namespace: ns, Pods: []string{"vllm-0"}, Container: "vllm", Timeout: time.Minute, LogSource: logs.source})
	waitSynced(t, synced, result)
	tmpl := gpuPodTemplate("vllm", map[string]string{testcluster.ReadyDelayAnnotation: "3s"},
		map[string]string{testcluster.PoolLabel: pool.Name},
		corev1.Toleration{Key: "modelcar.test/measure-new", Operator: corev1.TolerationOpEqual, Value: ns, Effect: corev1.TaintEffectNoSchedule})
	pod := &corev1.Pod{ObjectMeta: tmpl.ObjectMeta, Spec: tmpl.Spec}
	pod.Name = "vllm-0"
	pod, err := client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// The scheduler finds no node for it...
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		p, err := client.CoreV1().Pods(ns).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		for _, cond := range p.Status.Conditions {
			if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("pod never unschedulable: %v", err)
	}
	// ...and the node comes at least a second after the pod: creation
	// timestamps are kept to the second, and measure counts a node as new
	// only when it was created after the pod.
	select {
	case <-time.After(time.Until(pod.CreationTimestamp.Add(1100 * time.Millisecond))):
	case <-ctx.Done():
		t.Fatal(ctx.Err())
	}
	nodes := addNodes(t, c, pool)

	b, err := result()
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Nodes) != 1 || b.Nodes[0].Name != nodes[0] {
		t.Fatalf("bundle nodes = %+v, want %s", b.Nodes, nodes[0])
	}
	n := b.Nodes[0]
	if n.GPUs != 2 || n.GPUAllocatableAt.IsZero() || n.GPUAllocatableAt.Before(n.Created) {
		t.Errorf("node: %d GPUs, allocatable at %v, created %v", n.GPUs, n.GPUAllocatableAt, n.Created)
	}
	rep, err := Analyze(b, WithContainer("vllm"))
	if err != nil {
		t.Fatal(err)
	}
	cs := &rep.ColdStarts[0]
	var text bytes.Buffer
	_ = Render(&text, rep, Text)
	t.Logf("report:\n%s", text.String())
	su := cs.Details.ScaleUp
	if su == nil || su.GPUAllocatableAt == nil || su.NodeReadyAt == nil {
		t.Fatalf("scale-up = %+v; want the node's creation, Ready and GPU allocatable", su)
	}
	var names []string
	var sum float64
	for _, st := range cs.Details.Provision.Steps {
		names = append(names, st.Name)
		sum += st.Seconds
	}
	if strings.Join(names, ",") != "waiting for scale-up,node boot,GPU allocatable,scheduling" || !near(sum, cs.Phases.Provision, 0.002) {
		t.Errorf("provision steps %q add up to %.3f, phase %.3f", names, sum, cs.Phases.Provision)
	}
	if cs.Phases.Provision < 1 || cs.Dominant == "" {
		t.Errorf("provision = %.3f s, want the second or more the node took", cs.Phases.Provision)
	}
	checkSums(t, cs)
}
