package measure

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
)

// Run modes: how a cold start is triggered.
const (
	// ModeScale scales the Deployment to zero, waits until its pods are
	// gone, and scales it back.
	ModeScale = "scale"
	// ModeDelete deletes the Deployment's pods; its ReplicaSet replaces
	// them.
	ModeDelete = "delete"
)

// RunOptions say which Deployment Run restarts, how, and how often.
type RunOptions struct {
	Namespace  string
	Deployment string
	// Times is how many cold starts to trigger (default 1).
	Times int
	// Mode is ModeScale (default) or ModeDelete.
	Mode string
	// FreshNode cordons the nodes the Deployment's pods ran on before each
	// cold start, so the next start lands on another node (a new one, with
	// a node autoscaler, or one without the image); Run uncordons them when
	// it ends. Nodes already cordoned are left as they are.
	FreshNode bool
	// Timeout bounds each cold start, and the wait for the pods to go in
	// ModeScale (default 30 minutes).
	Timeout time.Duration
	// Container, LogSource and Progress are as in WatchOptions.
	Container string
	LogSource LogSource
	Progress  func(msg string)
	// Record, when set, is a directory each cold start's bundle is
	// recorded in, as DIR/run-1, DIR/run-2, ...
	Record string
	// BeforeEach, when set, runs before each cold start is triggered (run
	// counts from 1): in ModeScale once the old pods are gone, in ModeDelete
	// before they are deleted. It is where a start is made cold: the image
	// removed from the nodes, their page cache dropped. Its error ends Run.
	BeforeEach func(ctx context.Context, run int) error
}

// DefaultRunTimeout bounds one cold start of Run.
const DefaultRunTimeout = 30 * time.Minute

// Run triggers opts.Times real cold starts of a Deployment and measures
// each with Watch and Analyze. The report holds every cold start (one per
// pod per run) and, with two or more, the summary's p50 and p90 per phase.
// In ModeScale the Deployment ends at the replicas it had (one replica is
// started when it had none, and it is scaled to zero again at the end).
//
// On an error Run returns the cold starts measured so far with it (the
// report is nil when there were none). A run whose pods do not become Ready
// within the timeout is reported as measured (Missing says so) and the next
// run goes on.
func Run(ctx context.Context, client kubernetes.Interface, opts RunOptions) (*Report, error) {
	if opts.Namespace == "" || opts.Deployment == "" {
		return nil, errors.New("run: a namespace and a deployment are required")
	}
	if opts.Times == 0 {
		opts.Times = 1
	}
	if opts.Times < 0 {
		return nil, fmt.Errorf("run: times must be at least 1, got %d", opts.Times)
	}
	if opts.Mode == "" {
		opts.Mode = ModeScale
	}
	if opts.Mode != ModeScale && opts.Mode != ModeDelete {
		return nil, fmt.Errorf("run: mode %q: want %s or %s", opts.Mode, ModeScale, ModeDelete)
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultRunTimeout
	}
	if opts.Progress != nil { // one call at a time, from Run and its Watch
		var mu sync.Mutex
		progress := opts.Progress
		opts.Progress = func(m string) { mu.Lock(); defer mu.Unlock(); progress(m) }
	}
	r := &runner{client: client, opts: opts, cordoned: map[string]bool{}}
	ns := opts.Namespace
	dep, err := client.AppsV1().Deployments(ns).Get(ctx, opts.Deployment, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("run: %w", err)
	}
	sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil || sel.Empty() {
		return nil, fmt.Errorf("run: deployment %s/%s: no usable selector (%v)", ns, dep.Name, err)
	}
	r.selector = sel.String()
	replicas := int32(1)
	if dep.Spec.Replicas != nil {
		replicas = *dep.Spec.Replicas
	}
	r.replicas = max(replicas, 1)
	if replicas == 0 && opts.Mode == ModeDelete {
		return nil, fmt.Errorf("run: deployment %s/%s has no replicas to delete: scale it up first, or measure it in %s mode", ns, dep.Name, ModeScale)
	}
	defer func() {
		// Leave the cluster as found, even when ctx was cancelled.
		cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		defer cancel()
		if replicas == 0 && opts.Mode == ModeScale {
			if err := r.scale(cctx, 0); err != nil {
				r.progress("scaling %s back to 0: %v", dep.Name, err)
			}
		}
		r.uncordon(cctx)
	}()

	rep := &Report{Version: Version, ColdStarts: []ColdStart{}}
	for i := 1; i <= opts.Times; i++ {
		r.progress("cold start %d of %d: %s/%s (%s)", i, opts.Times, ns, dep.Name, opts.Mode)
		b, err := r.once(ctx, i)
		if err != nil {
			return partial(rep), fmt.Errorf("run %d of %d: %w", i, opts.Times, err)
		}
		one, err := Analyze(b, analyzeOpts(opts.Container)...)
		if err != nil {
			return partial(rep), fmt.Errorf("run %d of %d: %w", i, opts.Times, err)
		}
		rep.ColdStarts = append(rep.ColdStarts, one.ColdStarts...)
		for _, m := range one.Missing {
			if m = fmt.Sprintf("run %d: %s", i, m); !slices.Contains(rep.Missing, m) {
				rep.Missing = append(rep.Missing, m)
			}
		}
		for _, c := range one.ColdStarts {
			r.progress("cold start %d: %s on %s: %.1f s (%s)", i, c.Pod, c.Node, c.TotalSeconds, c.Dominant)
		}
	}
	rep.Summary = summarize(rep.ColdStarts)
	return rep, nil
}

func analyzeOpts(container string) []Option {
	if container == "" {
		return nil
	}
	return []Option{WithContainer(container)}
}

func partial(rep *Report) *Report {
	if len(rep.ColdStarts) == 0 {
		return nil
	}
	rep.Summary = summarize(rep.ColdStarts)
	return rep
}

type runner struct {
	client   kubernetes.Interface
	opts     RunOptions
	selector string
	replicas int32
	cordoned map[string]bool // nodes Run cordoned, to uncordon
}

func (r *runner) progress(format string, args ...any) {
	if r.opts.Progress != nil {
		r.opts.Progress(fmt.Sprintf(format, args...))
	}
}

func (r *runner) beforeEach(ctx context.Context, i int) error {
	if r.opts.BeforeEach == nil {
		return nil
	}
	r.progress("before cold start %d", i)
	if err := r.opts.BeforeEach(ctx, i); err != nil {
		return fmt.Errorf("before cold start %d: %w", i, err)
	}
	return nil
}

// once triggers one cold start and watches it until Ready.
func (r *runner) once(ctx context.Context, i int) (*Bundle, error) {
	ns := r.opts.Namespace
	pods, err := r.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: r.selector})
	if err != nil {
		return nil, err
	}
	var old []corev1.Pod
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil {
			old = append(old, p)
		}
	}
	if r.opts.FreshNode {
		for _, p := range old {
			if err := r.cordon(ctx, p.Spec.NodeName); err != nil {
				return nil, err
			}
		}
	}
	wo := WatchOptions{
		Namespace: ns, Selector: r.selector, Container: r.opts.Container, Timeout: r.opts.Timeout,
		MinPods: int(r.replicas), LogSource: r.opts.LogSource, Progress: r.opts.Progress,
	}
	if r.opts.Record != "" {
		wo.Record = filepath.Join(r.opts.Record, "run-"+strconv.Itoa(i))
	}
	var trigger func(context.Context) error
	switch r.opts.Mode {
	case ModeScale:
		if len(pods.Items) > 0 {
			if err := r.scale(ctx, 0); err != nil {
				return nil, err
			}
			r.progress("scaled %s to 0: waiting for its pods to go", r.opts.Deployment)
			if err := r.waitGone(ctx); err != nil {
				return nil, err
			}
		}
		if err := r.beforeEach(ctx, i); err != nil {
			return nil, err
		}
		trigger = func(ctx context.Context) error { return r.scale(ctx, r.replicas) }
	case ModeDelete:
		if err := r.beforeEach(ctx, i); err != nil {
			return nil, err
		}
		if len(old) == 0 {
			return nil, fmt.Errorf("deployment %s/%s has no pods to delete", ns, r.opts.Deployment)
		}
		wo.skip = map[types.UID]bool{}
		for _, p := range pods.Items {
			wo.skip[p.UID] = true // terminating ones too
		}
		trigger = func(ctx context.Context) error {
			for _, p := range old {
				err := r.client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}})
				if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
					return fmt.Errorf("deleting pod %s: %w", p.Name, err)
				}
			}
			return nil
		}
	}
	// Watch first, so it sees the new pods (and any new node) from their
	// start; trigger once its caches have synced.
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	synced := make(chan struct{})
	wo.synced = func() { close(synced) }
	type result struct {
		b   *Bundle
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := Watch(wctx, r.client, wo)
		done <- result{b, err}
	}()
	select {
	case <-synced:
	case res := <-done:
		return nil, res.err
	}
	if err := trigger(ctx); err != nil {
		cancel()
		<-done
		return nil, err
	}
	res := <-done
	return res.b, res.err
}

func (r *runner) scale(ctx context.Context, n int32) error {
	patch := fmt.Appendf(nil, `{"spec":{"replicas":%d}}`, n)
	_, err := r.client.AppsV1().Deployments(r.opts.Namespace).Patch(ctx, r.opts.Deployment, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("scaling %s to %d: %w", r.opts.Deployment, n, err)
	}
	return nil
}

// waitGone waits until the Deployment has no pods left.
func (r *runner) waitGone(ctx context.Context) error {
	err := wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, r.opts.Timeout, true, func(ctx context.Context) (bool, error) {
		l, err := r.client.CoreV1().Pods(r.opts.Namespace).List(ctx, metav1.ListOptions{LabelSelector: r.selector})
		if err != nil {
			return false, err
		}
		return len(l.Items) == 0, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for the pods of %s to go: %w", r.opts.Deployment, err)
	}
	return nil
}

func (r *runner) cordon(ctx context.Context, node string) error {
	if node == "" || r.cordoned[node] {
		return nil
	}
	n, err := r.client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("cordoning node %s: %w", node, err)
	}
	if n.Spec.Unschedulable {
		return nil // cordoned by someone else: theirs to uncordon
	}
	if err := r.setUnschedulable(ctx, node, true); err != nil {
		return err
	}
	r.cordoned[node] = true
	r.progress("cordoned node %s", node)
	return nil
}

func (r *runner) setUnschedulable(ctx context.Context, node string, v bool) error {
	patch := fmt.Appendf(nil, `{"spec":{"unschedulable":%t}}`, v)
	if _, err := r.client.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		verb := "cordoning"
		if !v {
			verb = "uncordoning"
		}
		return fmt.Errorf("%s node %s: %w", verb, node, err)
	}
	return nil
}

func (r *runner) uncordon(ctx context.Context) {
	for _, node := range slices.Sorted(maps.Keys(r.cordoned)) {
		if err := r.setUnschedulable(ctx, node, false); err != nil && !apierrors.IsNotFound(errors.Unwrap(err)) {
			r.progress("%v (uncordon it yourself)", err)
			continue
		}
		delete(r.cordoned, node)
		r.progress("uncordoned node %s", node)
	}
}
