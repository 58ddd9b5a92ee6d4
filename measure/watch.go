package measure

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// WatchOptions say which pods Watch follows and what it collects.
type WatchOptions struct {
	// Namespace of the pods (required).
	Namespace string
	// Selector is a label selector ("app=vllm") that picks the pods.
	Selector string
	// Pods names pods to follow, NAME or NAMESPACE/NAME; with a Selector
	// too, a pod must match both. Selector or Pods is required.
	Pods []string
	// Container is the serving container (as in WithContainer): only its
	// log is fetched. Default: every container's log is fetched, and
	// Analyze picks the one that shows vLLM loading weights.
	Container string
	// Timeout bounds the wait for Ready (0: until ctx is done). When it
	// passes, Watch returns what it saw, and Bundle.Missing names the pods
	// that were not Ready.
	Timeout time.Duration
	// MinPods is how many pods matching Selector to wait for (default 1);
	// with Pods, Watch waits for every named pod.
	MinPods int
	// Record, when set, is a directory Watch records the bundle in
	// (Bundle.Write) before it returns; `measure --from DIR` reads it back
	// to the same report.
	Record string
	// LogSource fetches container logs (default: APILogs(client)). Tests
	// and clusters without real containers (kwok) inject their own.
	LogSource LogSource
	// Progress, when set, is told what happens, a line at a time ("pod
	// llm/x: Ready 45 s after creation"). It is called from several
	// goroutines, one call at a time.
	Progress func(msg string)

	skip   map[types.UID]bool // pods to leave out (Run: the ones it deleted)
	synced func()             // called once the caches have synced (Run triggers then)
}

// A LogSource returns the log of one container of a pod, each line with
// its time, as `kubectl logs --timestamps` would (ParseLog parses that
// form). An error means the log is unavailable: the bundle then lacks it
// and the report says so.
type LogSource func(ctx context.Context, pod *corev1.Pod, container string) ([]LogLine, error)

// APILogs reads container logs from the API server (pods/log with
// timestamps), as `kubectl logs --timestamps` does.
func APILogs(client kubernetes.Interface) LogSource {
	return func(ctx context.Context, pod *corev1.Pod, container string) ([]LogLine, error) {
		rc, err := client.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: container, Timestamps: true}).Stream(ctx)
		if err != nil {
			return nil, err
		}
		defer rc.Close()
		return ParseLog(rc)
	}
}

// logTimeout bounds one container's log fetch.
const logTimeout = 2 * time.Minute

// Watch follows pods live until every selected pod is Ready and returns
// what Kubernetes and the containers recorded about them, for Analyze.
//
// It runs informers on the namespace's Pods, its core/v1 and
// events.k8s.io/v1 Events (either may be forbidden: they are two views of
// the same events) and the cluster's Nodes, so a watch started after the
// pods still sees their whole history (events are kept about an hour).
// When a pod becomes Ready it fetches its containers' logs through
// opts.LogSource; a log it cannot get is listed in Bundle.Missing and the
// report leaves load and warmup unattributed. It records the first time
// it sees a node's GPUs become allocatable in Node.GPUAllocatableAt
// (nodes added during the watch, or that had none when it started). When
// opts.Timeout passes first, Watch returns what it saw; Missing names the
// pods that were not Ready. It fails only when it cannot list the pods,
// when ctx ends, or when no selected pod appeared at all.
func Watch(ctx context.Context, client kubernetes.Interface, opts WatchOptions) (*Bundle, error) {
	if opts.Namespace == "" {
		return nil, errors.New("watch: a namespace is required")
	}
	if opts.Selector == "" && len(opts.Pods) == 0 {
		return nil, errors.New("watch: a label selector or pod names are required")
	}
	if _, err := labels.Parse(opts.Selector); err != nil {
		return nil, fmt.Errorf("watch: selector %q: %w", opts.Selector, err)
	}
	for _, p := range opts.Pods {
		ns, name, ok := strings.Cut(p, "/")
		if !ok {
			ns, name = opts.Namespace, p
		}
		if name == "" || strings.Contains(name, "/") || ns != opts.Namespace {
			return nil, fmt.Errorf("watch: pod %q: want NAME or %s/NAME", p, opts.Namespace)
		}
	}
	c := newCollector(opts)
	if c.logs == nil {
		c.logs = APILogs(client)
	}
	ns := opts.Namespace

	// Which views can be listed: pods are required, the rest only makes the
	// report more complete.
	if _, err := client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: opts.Selector, Limit: 1}); err != nil {
		return nil, fmt.Errorf("watch: listing pods in %s: %w", ns, err)
	}
	optional := func(what string, list func() error) (bool, error) {
		err := list()
		switch {
		case err == nil:
			return true, nil
		case apierrors.IsForbidden(err) || apierrors.IsNotFound(err) || apierrors.IsMethodNotSupported(err):
			c.progress("%s unavailable: %v", what, err)
			return false, nil
		}
		return false, fmt.Errorf("watch: listing %s: %w", what, err)
	}
	one := metav1.ListOptions{Limit: 1}
	coreEvents, err := optional("core/v1 events", func() error { _, err := client.CoreV1().Events(ns).List(ctx, one); return err })
	if err != nil {
		return nil, err
	}
	newEvents, err := optional("events.k8s.io/v1 events", func() error { _, err := client.EventsV1().Events(ns).List(ctx, one); return err })
	if err != nil {
		return nil, err
	}
	nodes, err := optional("nodes", func() error { _, err := client.CoreV1().Nodes().List(ctx, one); return err })
	if err != nil {
		return nil, err
	}
	if !coreEvents && !newEvents {
		c.missing = append(c.missing, EventsFile)
	}
	if !nodes {
		c.missing = append(c.missing, NodesFile)
	}

	wctx, stop := context.WithCancel(ctx)
	podF := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = opts.Selector }))
	eventF := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(ns))
	nodeF := informers.NewSharedInformerFactory(client, 0)
	factories := []informers.SharedInformerFactory{podF, eventF, nodeF}
	stopped := false
	stopInformers := func() {
		if !stopped {
			stopped = true
			stop()
			for _, f := range factories {
				f.Shutdown()
			}
		}
	}
	defer c.logWG.Wait() // after the informers stopped: no fetch starts then
	defer stopInformers()

	type handler struct {
		inf cache.SharedIndexInformer
		h   cache.ResourceEventHandler
	}
	handlers := []handler{{podF.Core().V1().Pods().Informer(), cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { c.podSeen(ctx, obj, false) },
		UpdateFunc: func(_, obj any) { c.podSeen(ctx, obj, false) },
		DeleteFunc: func(obj any) { c.podSeen(ctx, obj, true) },
	}}}
	eventHandler := cache.ResourceEventHandlerFuncs{AddFunc: c.eventSeen, UpdateFunc: func(_, obj any) { c.eventSeen(obj) }}
	if coreEvents {
		handlers = append(handlers, handler{eventF.Core().V1().Events().Informer(), eventHandler})
	}
	if newEvents {
		handlers = append(handlers, handler{eventF.Events().V1().Events().Informer(), eventHandler})
	}
	if nodes {
		handlers = append(handlers, handler{nodeF.Core().V1().Nodes().Informer(), cache.ResourceEventHandlerDetailedFuncs{
			AddFunc:    func(obj any, initial bool) { c.nodeSeen(obj, initial) },
			UpdateFunc: func(_, obj any) { c.nodeSeen(obj, false) },
		}})
	}
	var synced []cache.DoneChecker
	for _, h := range handlers {
		reg, err := h.inf.AddEventHandler(h.h)
		if err != nil {
			return nil, fmt.Errorf("watch: %w", err)
		}
		synced = append(synced, reg.HasSyncedChecker())
	}
	for _, f := range factories {
		f.StartWithContext(wctx)
	}
	// Synced when every handler has been given what the first lists held.
	if !cache.WaitFor(wctx, "", synced...) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, errors.New("watch: the informers stopped before they synced")
	}
	if opts.synced != nil {
		opts.synced()
	}

	var timeout <-chan time.Time
	if opts.Timeout > 0 {
		t := time.NewTimer(opts.Timeout)
		defer t.Stop()
		timeout = t.C
	}
	timedOut := false
wait:
	for !c.done() {
		select {
		case <-c.changed:
		case <-timeout:
			timedOut = true
			break wait
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	stopInformers()

	if coreEvents || newEvents {
		// The events watch may deliver an event written just before a pod's
		// Ready status after the pods watch delivered that status: read the
		// tracked pods' events once more.
		if err := c.relistEvents(ctx, client, coreEvents); err != nil {
			c.progress("reading events again: %v", err)
		}
	}
	c.fetchRemainingLogs(ctx)
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	b, err := c.bundle(timedOut)
	if err != nil {
		return nil, err
	}
	if opts.Record != "" {
		if err := b.Write(opts.Record); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// collector is Watch's state, fed by the informers' handlers.
type collector struct {
	opts    WatchOptions
	logs    LogSource
	changed chan struct{} // a pod, log or node changed: check done again

	mu          sync.Mutex
	pods        map[types.UID]*podState
	coreEvents  map[types.UID]*corev1.Event
	newEvents   map[types.UID]*eventsv1.Event
	nodes       map[string]*nodeState
	missing     []string
	logWG       sync.WaitGroup
	progressMu  sync.Mutex
	wantedNames map[string]bool // opts.Pods, by NAME
}

type podState struct {
	pod         *corev1.Pod
	gone        bool // deleted while watched
	logsStarted bool
	logsDone    bool
	logs        []Log
	readyNoted  bool
}

type nodeState struct {
	node *corev1.Node
	// gpuAt is when the node was first seen with GPUs allocatable, after
	// being seen without or being added during the watch; zero otherwise.
	gpuAt time.Time
	// unknown: the node already had GPUs when the watch started, so when
	// they became allocatable is not known.
	unknown bool
}

func newCollector(opts WatchOptions) *collector {
	c := &collector{
		opts:       opts,
		logs:       opts.LogSource,
		changed:    make(chan struct{}, 1),
		pods:       map[types.UID]*podState{},
		coreEvents: map[types.UID]*corev1.Event{},
		newEvents:  map[types.UID]*eventsv1.Event{},
		nodes:      map[string]*nodeState{},
	}
	if len(opts.Pods) > 0 {
		c.wantedNames = map[string]bool{}
		for _, p := range opts.Pods {
			c.wantedNames[p[strings.IndexByte(p, '/')+1:]] = true
		}
	}
	return c
}

func (c *collector) progress(format string, args ...any) {
	if c.opts.Progress == nil {
		return
	}
	c.progressMu.Lock()
	defer c.progressMu.Unlock()
	c.opts.Progress(fmt.Sprintf(format, args...))
}

func (c *collector) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

func podReady(p *corev1.Pod) (time.Time, bool) {
	for _, cond := range p.Status.Conditions {
		if cond.Type == corev1.PodReady {
			return cond.LastTransitionTime.Time, cond.Status == corev1.ConditionTrue
		}
	}
	return time.Time{}, false
}

// inactive: a pod Watch no longer waits for (deleted, being deleted, or
// finished without becoming Ready).
func (st *podState) inactive() bool {
	p := st.pod
	return st.gone || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

func (c *collector) podSeen(ctx context.Context, obj any, deleted bool) {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	p, ok := obj.(*corev1.Pod)
	if !ok || c.opts.skip[p.UID] || (c.wantedNames != nil && !c.wantedNames[p.Name]) {
		return
	}
	c.mu.Lock()
	st := c.pods[p.UID]
	if st == nil {
		st = &podState{}
		c.pods[p.UID] = st
	}
	st.pod = p
	st.gone = st.gone || deleted
	ready, isReady := podReady(p)
	startLogs := isReady && !st.logsStarted && !st.inactive()
	if startLogs {
		st.logsStarted = true
		c.logWG.Add(1)
	}
	note := isReady && !st.readyNoted
	st.readyNoted = st.readyNoted || isReady
	c.mu.Unlock()
	if note {
		c.progress("pod %s/%s: Ready %.0f s after creation", p.Namespace, p.Name, ready.Sub(p.CreationTimestamp.Time).Seconds())
	}
	if startLogs {
		go func() {
			defer c.logWG.Done()
			c.fetchLogs(ctx, p, st)
		}()
	}
	c.signal()
}

// started: the container has run (a container that never started has no
// log, and the report says the pod never became Ready).
func started(p *corev1.Pod, container string) bool {
	for _, s := range p.Status.ContainerStatuses {
		if s.Name == container {
			return s.State.Running != nil || s.State.Terminated != nil || s.RestartCount > 0
		}
	}
	return false
}

// fetchLogs reads the logs of the pod's containers that have started (the
// serving one's only, when named) and marks the pod's logs done.
func (c *collector) fetchLogs(ctx context.Context, p *corev1.Pod, st *podState) {
	var names []string
	for _, ct := range p.Spec.Containers {
		if (c.opts.Container == "" || ct.Name == c.opts.Container) && started(p, ct.Name) {
			names = append(names, ct.Name)
		}
	}
	var logs []Log
	var missing []string
	for _, name := range names {
		file := LogsDir + "/" + p.Namespace + "_" + p.Name + "_" + name + ".log"
		lctx, cancel := context.WithTimeout(ctx, logTimeout)
		lines, err := c.logs(lctx, p, name)
		cancel()
		if err != nil {
			msg := err.Error()
			if len(msg) > 300 {
				msg = msg[:300] + "..."
			}
			missing = append(missing, fmt.Sprintf("%s: container log unavailable: %s", file, msg))
			c.progress("pod %s/%s: log of container %s unavailable: %s", p.Namespace, p.Name, name, msg)
			continue
		}
		logs = append(logs, Log{Namespace: p.Namespace, Pod: p.Name, Container: name, File: file, Lines: lines})
	}
	c.mu.Lock()
	st.logs, st.logsDone = logs, true
	c.missing = append(c.missing, missing...)
	c.mu.Unlock()
	c.signal()
}

// fetchRemainingLogs reads the logs of pods that never became Ready (what
// their containers said so far), then waits for every fetch.
func (c *collector) fetchRemainingLogs(ctx context.Context) {
	c.mu.Lock()
	for _, st := range c.pods {
		if !st.logsStarted && !st.gone {
			st.logsStarted = true
			c.logWG.Add(1)
			go func() {
				defer c.logWG.Done()
				c.fetchLogs(ctx, st.pod, st)
			}()
		}
	}
	c.mu.Unlock()
	c.logWG.Wait()
}

func (c *collector) eventSeen(obj any) {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch e := obj.(type) {
	case *corev1.Event:
		c.coreEvents[e.UID] = e
	case *eventsv1.Event:
		c.newEvents[e.UID] = e
	}
}

func gpus(n *corev1.Node) int64 {
	var total int64
	for _, r := range []corev1.ResourceName{"nvidia.com/gpu", "amd.com/gpu"} {
		if q, ok := n.Status.Allocatable[r]; ok {
			total += q.Value()
		}
	}
	return total
}

func (c *collector) nodeSeen(obj any, initial bool) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.nodes[n.Name]
	if st == nil {
		st = &nodeState{unknown: initial && gpus(n) > 0}
		c.nodes[n.Name] = st
	}
	st.node = n
	if st.gpuAt.IsZero() && !st.unknown && gpus(n) > 0 {
		st.gpuAt = now
		c.progress("node %s: %d GPUs allocatable", n.Name, gpus(n))
	}
}

// done: every selected pod Watch waits for is Ready and its logs read.
func (c *collector) done() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	active := 0
	seen := map[string]bool{}
	for _, st := range c.pods {
		seen[st.pod.Name] = true
		if st.inactive() {
			continue
		}
		if _, ok := podReady(st.pod); !ok || !st.logsDone {
			return false
		}
		active++
	}
	if c.wantedNames != nil {
		for name := range c.wantedNames {
			if !seen[name] {
				return false
			}
		}
		return true
	}
	return active >= max(1, c.opts.MinPods)
}

// relistEvents reads the tracked pods' events once more, one list per pod.
func (c *collector) relistEvents(ctx context.Context, client kubernetes.Interface, core bool) error {
	c.mu.Lock()
	names := map[string]bool{}
	for _, st := range c.pods {
		names[st.pod.Name] = true
	}
	c.mu.Unlock()
	ns := c.opts.Namespace
	for name := range names {
		if core {
			l, err := client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + name})
			if err != nil {
				return err
			}
			for i := range l.Items {
				c.eventSeen(&l.Items[i])
			}
			continue
		}
		l, err := client.EventsV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "regarding.name=" + name})
		if err != nil {
			return err
		}
		for i := range l.Items {
			c.eventSeen(&l.Items[i])
		}
	}
	return nil
}

// bundle converts what was seen into a Bundle: the tracked pods (the newest
// of each name), their events, their nodes and their logs.
func (c *collector) bundle(timedOut bool) (*Bundle, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	byName := map[string]*podState{}
	for _, st := range c.pods {
		if old := byName[st.pod.Name]; old == nil || old.pod.CreationTimestamp.Before(&st.pod.CreationTimestamp) {
			byName[st.pod.Name] = st
		}
	}
	if len(byName) == 0 {
		what := "matching " + c.opts.Selector
		if c.wantedNames != nil {
			what = "named " + strings.Join(slices.Sorted(maps.Keys(c.wantedNames)), ", ")
		}
		return nil, fmt.Errorf("watch: no pod %s appeared in namespace %s", what, c.opts.Namespace)
	}
	states := slices.SortedFunc(maps.Values(byName), func(a, b *podState) int {
		return cmp.Or(a.pod.CreationTimestamp.Compare(b.pod.CreationTimestamp.Time), cmp.Compare(a.pod.Name, b.pod.Name))
	})
	b := &Bundle{Missing: slices.Clone(c.missing)}
	var pods []*corev1.Pod
	nodeNames := map[string]bool{}
	podUIDs := map[string]types.UID{}
	for _, st := range states {
		pods = append(pods, st.pod)
		podUIDs[st.pod.Name] = st.pod.UID
		if st.pod.Spec.NodeName != "" {
			nodeNames[st.pod.Spec.NodeName] = true
		}
		b.Logs = append(b.Logs, st.logs...)
		if timedOut && !st.inactive() {
			if _, ok := podReady(st.pod); !ok {
				b.Missing = append(b.Missing, fmt.Sprintf("pod %s/%s: not Ready after %s", st.pod.Namespace, st.pod.Name, c.opts.Timeout))
			}
		}
	}
	if timedOut {
		for _, name := range slices.Sorted(maps.Keys(c.wantedNames)) {
			if byName[name] == nil {
				b.Missing = append(b.Missing, fmt.Sprintf("pod %s/%s: not seen within %s", c.opts.Namespace, name, c.opts.Timeout))
			}
		}
		if c.wantedNames == nil && len(byName) < c.opts.MinPods {
			b.Missing = append(b.Missing, fmt.Sprintf("only %d of %d pods appeared within %s", len(byName), c.opts.MinPods, c.opts.Timeout))
		}
	}
	var err error
	if b.Pods, err = convertPods(pods); err != nil {
		return nil, err
	}
	if b.Events, err = convertEvents(slices.Collect(maps.Values(c.coreEvents)), slices.Collect(maps.Values(c.newEvents)), c.opts.Namespace, podUIDs); err != nil {
		return nil, err
	}
	var nodes []*corev1.Node
	gpuAt := map[string]time.Time{}
	for _, name := range slices.Sorted(maps.Keys(nodeNames)) {
		if st := c.nodes[name]; st != nil && st.node != nil {
			nodes = append(nodes, st.node)
			gpuAt[name] = st.gpuAt
		}
	}
	if b.Nodes, err = convertNodes(nodes, gpuAt); err != nil {
		return nil, err
	}
	return b, nil
}
