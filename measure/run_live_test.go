package measure

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/modelcar/modelcar/internal/testcluster"
)

// TestRunLive triggers real cold starts of a Deployment on a private pool
// of three GPU nodes: two in scale mode onto fresh nodes (each start lands
// on a node the Deployment has not used yet; the nodes are uncordoned
// after), then one in delete mode.
func TestRunLive(t *testing.T) {
	t.Parallel()
	c := testcluster.Shared(t)
	client := c.Client()
	ns := c.Namespace(t, "measure-run")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()

	taint := corev1.Taint{Key: "modelcar.test/measure-run", Value: ns, Effect: corev1.TaintEffectNoSchedule}
	pool := testcluster.NodePool{Name: "measure-run-" + ns[len(ns)-5:], Count: 3, GPUs: 1, Taints: []corev1.Taint{taint}}
	nodes := addNodes(t, c, pool)
	const pullDelay, readyDelay = 1.0, 3.0
	createDeployment(t, client, ns, "vllm", 1, gpuPodTemplate("vllm", map[string]string{
		testcluster.PullDelayAnnotation:  "1s",
		testcluster.ReadyDelayAnnotation: "3s",
	}, map[string]string{testcluster.PoolLabel: pool.Name},
		corev1.Toleration{Key: taint.Key, Operator: corev1.TolerationOpEqual, Value: taint.Value, Effect: taint.Effect}))
	// The first pod's node, which the first measured start must avoid.
	var first string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		l, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=vllm"})
		if err != nil || len(l.Items) != 1 {
			return false, err
		}
		first = l.Items[0].Spec.NodeName
		return first != "", nil
	})
	if err != nil {
		t.Fatalf("the deployment's pod was not scheduled: %v", err)
	}

	logs := &fakeVLLMLog{}
	record := t.TempDir()
	var mu sync.Mutex
	var progress []string
	// The hook runs before each start, once the old pods are gone.
	var hooked []string
	rep, err := Run(ctx, client, RunOptions{
		Namespace: ns, Deployment: "vllm", Times: 2, Mode: ModeScale, FreshNode: true, Timeout: time.Minute,
		LogSource: logs.source, Record: record,
		Progress: func(m string) { mu.Lock(); progress = append(progress, m); mu.Unlock() },
		BeforeEach: func(ctx context.Context, run int) error {
			l, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=vllm"})
			if err != nil {
				return err
			}
			hooked = append(hooked, fmt.Sprintf("run %d: %d pods", run, len(l.Items)))
			return nil
		},
	})
	t.Logf("progress:\n%s", strings.Join(progress, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.ColdStarts) != 2 || rep.Summary == nil || rep.Summary.Pods != 2 {
		t.Fatalf("report: %d cold starts, summary %+v", len(rep.ColdStarts), rep.Summary)
	}
	if want := []string{"run 1: 0 pods", "run 2: 0 pods"}; !slices.Equal(hooked, want) {
		t.Errorf("BeforeEach saw %q, want %q", hooked, want)
	}
	used := []string{first}
	for i := range rep.ColdStarts {
		cs := &rep.ColdStarts[i]
		if cs.Ready.IsZero() || len(cs.Missing) != 0 {
			t.Errorf("cold start %d (%s): ready %v, missing %q", i+1, cs.Pod, cs.Ready, cs.Missing)
		}
		if !near(cs.Phases.Pull, pullDelay, 1) || !near(cs.Phases.Load, fakeModelLoadingAt, 1) || !near(cs.Phases.Warmup, readyDelay-fakeModelLoadingAt, 1) {
			t.Errorf("cold start %d: phases %+v; want pull %.1f, load %.1f, warmup %.1f (± 1)", i+1, cs.Phases, pullDelay, fakeModelLoadingAt, readyDelay-fakeModelLoadingAt)
		}
		checkSums(t, cs)
		if slices.Contains(used, cs.Node) || !slices.Contains(nodes, cs.Node) {
			t.Errorf("cold start %d ran on %s; want a fresh node of %q (used: %q)", i+1, cs.Node, nodes, used)
		}
		used = append(used, cs.Node)
		if _, err := ReadBundle(filepath.Join(record, fmt.Sprintf("run-%d", i+1))); err != nil {
			t.Errorf("recorded run %d: %v", i+1, err)
		}
	}
	for _, ph := range PhaseNames {
		st, ok := rep.Summary.Phases[ph]
		if !ok || st.P50 > st.P90 || st.P90 > st.Max {
			t.Errorf("summary %s = %+v", ph, st)
		}
	}
	if p := rep.Summary.Phases[Pull]; !near(p.P50, pullDelay, 1) {
		t.Errorf("summary pull p50 = %.3f, want %.1f ± 1", p.P50, pullDelay)
	}
	for _, name := range nodes {
		n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err != nil || n.Spec.Unschedulable {
			t.Errorf("node %s still cordoned after Run (%v)", name, err)
		}
	}
	d, err := client.AppsV1().Deployments(ns).Get(ctx, "vllm", metav1.GetOptions{})
	if err != nil || *d.Spec.Replicas != 1 {
		t.Errorf("deployment after Run: %v", err)
	}

	// Delete mode: the ReplicaSet replaces the deleted pod; only the new
	// one is measured.
	before, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=vllm"})
	if err != nil || len(before.Items) != 1 {
		t.Fatalf("pods before delete mode: %v", err)
	}
	// A failing hook stops the run before anything is deleted.
	rep, err = Run(ctx, client, RunOptions{Namespace: ns, Deployment: "vllm", Mode: ModeDelete, Timeout: time.Minute, LogSource: logs.source,
		BeforeEach: func(context.Context, int) error { return fmt.Errorf("node unreachable") }})
	if err == nil || !strings.Contains(err.Error(), "before cold start 1: node unreachable") || rep != nil {
		t.Errorf("a failing BeforeEach: report %v, error %v", rep, err)
	}
	if p, err := client.CoreV1().Pods(ns).Get(ctx, before.Items[0].Name, metav1.GetOptions{}); err != nil || p.DeletionTimestamp != nil {
		t.Errorf("a failing BeforeEach deleted the pod (%v)", err)
	}
	rep, err = Run(ctx, client, RunOptions{Namespace: ns, Deployment: "vllm", Mode: ModeDelete, Timeout: time.Minute, LogSource: logs.source})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.ColdStarts) != 1 || rep.Summary != nil || rep.ColdStarts[0].Pod == ns+"/"+before.Items[0].Name || rep.ColdStarts[0].Ready.IsZero() {
		t.Errorf("delete mode: %+v (the old pod was %s)", rep.ColdStarts, before.Items[0].Name)
	}
}
