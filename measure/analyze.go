package measure

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/modelcar/modelcar/internal/limits"
)

// An Option configures Analyze.
type Option func(*options) error

type options struct {
	pods      []string
	container string
	now       func() time.Time // what "in the future" is measured from
}

// WithPods analyses only these pods, each "NAMESPACE/NAME" or "NAME"
// (default: every pod in the bundle).
func WithPods(names ...string) Option {
	return func(o *options) error {
		for _, n := range names {
			if n == "" || strings.Count(n, "/") > 1 {
				return fmt.Errorf("pod %q: want NAME or NAMESPACE/NAME", n)
			}
		}
		o.pods = append(o.pods, names...)
		return nil
	}
}

// selects reports whether p is one of the pods to measure.
func (o *options) selects(p *Pod) bool {
	return len(o.pods) == 0 || slices.Contains(o.pods, p.Name) || slices.Contains(o.pods, p.Namespace+"/"+p.Name)
}

// WithContainer names the serving container whose start and log time the
// load (default: the container whose log has vLLM's weight-loading line,
// else the first whose image mentions vllm, else the first container).
func WithContainer(name string) Option {
	return func(o *options) error { o.container = name; return nil }
}

// Analyze splits each pod's cold start, creation to Ready, into provision,
// pull, load and warmup, with the source of every boundary, and reports
// what it cannot attribute. See the package documentation for the model.
func Analyze(b *Bundle, opts ...Option) (*Report, error) {
	o := options{now: time.Now}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	ix := newIndex(b)
	var pods []*Pod
	for i := range b.Pods {
		p := &b.Pods[i]
		if o.selects(p) {
			pods = append(pods, p)
		}
	}
	if len(pods) == 0 {
		if len(o.pods) > 0 {
			return nil, fmt.Errorf("no pod %s in the bundle", strings.Join(o.pods, ", "))
		}
		if slices.Contains(b.Missing, PodsFile) {
			return nil, fmt.Errorf("no %s in the bundle: nothing to measure", PodsFile)
		}
		return nil, fmt.Errorf("%s holds no pods", PodsFile)
	}
	slices.SortStableFunc(pods, func(a, b *Pod) int {
		return cmp.Or(a.Created.Compare(b.Created), cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
	})
	rep := &Report{Version: Version, ColdStarts: []ColdStart{}, Missing: b.Missing}
	for _, p := range pods {
		rep.ColdStarts = append(rep.ColdStarts, ix.coldStart(p, &o))
	}
	rep.Summary = summarize(rep.ColdStarts)
	return rep, nil
}

type index struct {
	b      *Bundle
	events map[string][]*Event // by NS/NAME of the Pod they are about
	nodes  map[string]*Node
	logs   map[string][]*Log // by NS/POD
}

func newIndex(b *Bundle) *index {
	ix := &index{b: b, events: map[string][]*Event{}, nodes: map[string]*Node{}, logs: map[string][]*Log{}}
	for i := range b.Events {
		e := &b.Events[i]
		if e.Object.Kind == "Pod" {
			k := e.Object.Namespace + "/" + e.Object.Name
			ix.events[k] = append(ix.events[k], e)
		}
	}
	for _, evs := range ix.events {
		slices.SortStableFunc(evs, func(a, b *Event) int { return a.Time.Compare(b.Time) })
	}
	for i := range b.Nodes {
		ix.nodes[b.Nodes[i].Name] = &b.Nodes[i]
	}
	for i := range b.Logs {
		l := &b.Logs[i]
		ix.logs[l.Namespace+"/"+l.Pod] = append(ix.logs[l.Namespace+"/"+l.Pod], l)
	}
	return ix
}

// an instant is a labelled point on a pod's timeline.
type instant struct {
	t     time.Time
	label string
}

// attribution is one phase's claimed interval before exclusive resolution.
type attribution struct {
	phase      string
	start, end time.Time
}

// podAnalysis carries one pod's working state.
type podAnalysis struct {
	cs       ColdStart
	created  time.Time
	end      time.Time
	points   []instant
	claims   []attribution
	latest   time.Time // the last thing seen, for pods that never became Ready
	isReady  bool
	serving  string
	started  time.Time // serving container start
	loaded   time.Time // weights loaded
	schedule time.Time
	valid    *validator
}

func (a *podAnalysis) off(t time.Time) float64 { return seconds(ms(t).Sub(a.created)) }

func (a *podAnalysis) seen(t time.Time) {
	if t.After(a.latest) {
		a.latest = t
	}
}

func (a *podAnalysis) missing(format string, args ...any) {
	a.cs.Missing = append(a.cs.Missing, fmt.Sprintf(format, args...))
}

// ms truncates to the millisecond: every duration in a report is then a
// whole number of milliseconds, and phases + unattributed = total exactly.
func ms(t time.Time) time.Time { return t.Truncate(time.Millisecond) }

func condition(cs []Condition, typ string) (time.Time, bool) {
	for _, c := range cs {
		if c.Type == typ && c.Status == "True" && !c.LastTransition.IsZero() {
			return c.LastTransition, true
		}
	}
	return time.Time{}, false
}

func (ix *index) coldStart(p *Pod, o *options) ColdStart {
	a := &podAnalysis{created: ms(p.Created), latest: p.Created, valid: newValidator(p, o.now())}
	_, readyAsRecorded := condition(p.Conditions, "Ready")
	p = a.valid.pod(p)
	a.cs = ColdStart{Pod: p.Namespace + "/" + p.Name, Node: p.NodeName, Created: p.Created, Missing: []string{}}
	a.points = append(a.points, instant{p.Created, "created"})
	var events []*Event
	for _, e := range ix.events[p.Namespace+"/"+p.Name] {
		if e.Object.UID != "" && p.UID != "" && e.Object.UID != p.UID {
			continue // an earlier pod of the same name
		}
		if !a.valid.event(e) {
			continue
		}
		events = append(events, e)
		a.seen(e.Time)
	}
	for _, c := range p.Conditions {
		a.seen(c.LastTransition)
	}
	ready, ok := condition(p.Conditions, "Ready")
	a.isReady = ok
	if ok {
		a.cs.Ready = ready
	}
	logs := a.valid.logs(ix.logs[p.Namespace+"/"+p.Name])
	for _, l := range logs {
		for i := len(l.Lines) - 1; i >= 0; i-- { // the last line with a valid time
			if t := l.Lines[i].Time; !t.IsZero() {
				a.seen(t)
				break
			}
		}
	}

	ix.provision(a, p, events)
	a.chooseServing(p, logs, events, o)
	ix.pull(a, p, events)
	a.loadAndWarmup(p, logs)

	if a.isReady {
		a.end = ms(ready)
		// The Ready condition is kept to the second: a pod Ready at
		// 12:00:00.9 says 12:00:00, before its own Scheduled event at
		// 12:00:00.6 (an eventTime, to the microsecond). What must precede
		// Ready and lies within that second moves the end, so the total is
		// never shorter than the phases and steps it contains.
		if at, what := a.beforeReady(); ready.Equal(ready.Truncate(time.Second)) && at.After(a.end) && at.Sub(a.end) < time.Second {
			a.cs.Details.Notes = append(a.cs.Details.Notes, fmt.Sprintf("the Ready condition (%s) is kept to the second and reads earlier than %s (+%.3f s): the total ends there",
				ready.UTC().Format(time.RFC3339), what, a.off(at)))
			a.end = at
		}
		a.points = append(a.points, instant{a.end, "Ready"})
	} else {
		a.end = ms(a.latest)
		if readyAsRecorded {
			a.missing("the Ready condition is invalid (see invalid): the total ends at the last thing seen (%s)", a.latest.UTC().Format(time.RFC3339))
		} else {
			a.missing("pod never became Ready: the total ends at the last thing seen (%s)", a.latest.UTC().Format(time.RFC3339))
		}
		a.points = append(a.points, instant{a.latest, "last seen"})
	}
	a.resolve()
	a.cs.Invalid = a.valid.invalid
	for _, l := range logs {
		if l.Cut {
			a.cs.Details.Notes = append(a.cs.Details.Notes, fmt.Sprintf("%s: only its first %d lines were read (at most %d lines, %s): later lines are not seen",
				l.File, len(l.Lines), limits.MaxLogLines, limits.Bytes(limits.MaxLogBytes)))
		}
	}
	if n := ix.b.IgnoredEvents[p.Namespace+"/"+p.Name]; n > 0 {
		a.cs.Details.Notes = append(a.cs.Details.Notes, fmt.Sprintf("%s holds %d more events about this pod than the %d read (a real cold start has tens): they are ignored",
			EventsFile, n, limits.MaxEventsPerPod))
	}
	a.cs.Dominant = dominant(a.cs.Phases, a.cs.UnattributedSeconds)
	a.cs.Lever = lever(a.cs.Dominant, &a.cs)
	return a.cs
}

// beforeReady returns the latest instant that must come before Ready
// (scheduled, an image pulled, the serving container started, weights
// loaded) and its name.
func (a *podAnalysis) beforeReady() (time.Time, string) {
	var at time.Time
	var what string
	see := func(t time.Time, name string) {
		if t.After(at) {
			at, what = t, name
		}
	}
	see(a.schedule, "scheduled")
	see(a.started, a.serving+" started")
	see(a.loaded, "weights loaded")
	for _, c := range a.claims {
		if c.phase != Warmup {
			see(c.end, c.phase+" end")
		}
	}
	return at, what
}

// provision: created → scheduled, split when the node came later.
func (ix *index) provision(a *podAnalysis, p *Pod, events []*Event) {
	d := &a.cs.Details.Provision
	var sched time.Time
	for _, e := range events {
		if e.Reason == "Scheduled" {
			sched = e.Time
			d.To = "Scheduled event (" + cmp.Or(e.Component, "scheduler") + ")"
			if a.cs.Node == "" {
				a.cs.Node = assignedNode(e.Message)
			}
			break
		}
	}
	if sched.IsZero() {
		if t, ok := condition(p.Conditions, "PodScheduled"); ok {
			sched, d.To = t, "PodScheduled condition"
		}
	}
	var scaleUp *ScaleUp
	for _, e := range events {
		if trigger, target, ok := scaleUpTarget(e.Reason, e.Message); ok && scaleUp == nil {
			at := a.off(e.Time)
			scaleUp = &ScaleUp{Trigger: trigger, Target: target, TriggeredAt: &at}
		}
		if e.Reason == "FailedScheduling" && len(a.cs.Details.Notes) == 0 {
			a.cs.Details.Notes = append(a.cs.Details.Notes, "FailedScheduling: "+e.Message)
		}
	}
	if sched.IsZero() {
		a.missing("no Scheduled event or PodScheduled condition: provision unattributed")
		return
	}
	sched = ms(sched)
	a.schedule = sched
	d.Known, d.From = true, "pod creationTimestamp"
	a.points = append(a.points, instant{sched, "scheduled"})
	a.claims = append(a.claims, attribution{Provision, a.created, sched})

	node := a.valid.node(ix.nodes[a.cs.Node])
	switch {
	case a.cs.Node == "":
		a.missing("no node named in spec.nodeName or the Scheduled event: provision not split")
	case node == nil && slices.Contains(ix.b.Missing, NodesFile):
		a.missing("no %s: cannot tell whether provision waited for a new node", NodesFile)
	case node == nil:
		a.missing("node %s not in %s: cannot tell whether provision waited for a new node", a.cs.Node, NodesFile)
	}
	if node == nil || !node.Created.After(p.Created) {
		switch {
		case node != nil && node.Created.IsZero():
			a.missing("node %s has no valid creationTimestamp: cannot tell whether provision waited for a new node", node.Name)
		case scaleUp != nil && node == nil:
			a.cs.Details.Notes = append(a.cs.Details.Notes, fmt.Sprintf("%s scale-up (%s) was triggered at +%.1f s; without the node's creation time provision is not split", scaleUp.Trigger, scaleUp.Target, *scaleUp.TriggeredAt))
		case scaleUp != nil:
			a.cs.Details.Notes = append(a.cs.Details.Notes, fmt.Sprintf("%s scale-up (%s) was triggered but the pod ran on an existing node", scaleUp.Trigger, scaleUp.Target))
		}
		d.Steps = append(d.Steps, Step{Name: "scheduling", Seconds: seconds(max(0, sched.Sub(a.created))), At: a.off(sched), Source: d.From + " → " + d.To})
		return
	}
	// The node came after the pod: scale-up wait, node boot, GPU allocatable, scheduling.
	if scaleUp == nil {
		scaleUp = &ScaleUp{}
	}
	a.cs.Details.ScaleUp = scaleUp
	prev, prevLabel := a.created, "pod creationTimestamp"
	step := func(name string, t time.Time, label string) *float64 {
		t = tmin(tmax(ms(t), prev), sched)
		d.Steps = append(d.Steps, Step{Name: name, Seconds: seconds(t.Sub(prev)), At: a.off(t), Source: prevLabel + " → " + label})
		prev, prevLabel = t, label
		at := a.off(t)
		return &at
	}
	scaleUp.NodeCreatedAt = *step("waiting for scale-up", node.Created, "node "+node.Name+" creationTimestamp")
	a.points = append(a.points, instant{node.Created, "node created"})
	if t, ok := condition(node.Conditions, "Ready"); ok {
		scaleUp.NodeReadyAt = step("node boot", t, "node Ready condition")
		a.points = append(a.points, instant{t, "node Ready"})
	} else {
		a.missing("node %s has no Ready condition: node boot not split from scheduling", node.Name)
	}
	if !node.GPUAllocatableAt.IsZero() {
		scaleUp.GPUAllocatableAt = step("GPU allocatable", node.GPUAllocatableAt, "GPU allocatable ("+GPUAllocatableAnnotation+")")
	}
	step("scheduling", sched, d.To)
}

// chooseServing picks the serving container and its start.
func (a *podAnalysis) chooseServing(p *Pod, logs []*Log, events []*Event, o *options) {
	name := o.container
	if name == "" {
		for _, l := range logs {
			for _, m := range scanLog(l) {
				if m.kind == markModelLoading || m.kind == markLoadingWeights || m.kind == markModelWeights {
					name = l.Container
				}
			}
			if name != "" {
				break
			}
		}
	}
	if name == "" {
		for _, c := range p.Containers {
			if !c.Init && strings.Contains(strings.ToLower(c.Image), "vllm") {
				name = c.Name
				break
			}
		}
	}
	if name == "" {
		for _, c := range p.Containers {
			if !c.Init {
				name = c.Name
				break
			}
		}
	}
	a.serving = name
	a.cs.Details.Container = name
	d := &a.cs.Details.Load
	for _, s := range p.Statuses {
		if s.Name == name && !s.Init && !s.StartedAt.IsZero() {
			a.started, d.From = s.StartedAt, "containerStatuses["+name+"].state.running.startedAt"
			if s.RestartCount > 0 {
				a.cs.Details.Notes = append(a.cs.Details.Notes, fmt.Sprintf("container %s restarted %d times: load is timed from its last start", name, s.RestartCount))
			}
		}
	}
	if a.started.IsZero() {
		for _, e := range events {
			if e.Reason == "Started" && containerOf(e.Object.FieldPath) == name {
				a.started, d.From = e.Time, "Started event ("+name+")"
				break
			}
		}
	}
	if a.started.IsZero() {
		for _, l := range logs {
			if l.Container == name && len(l.Lines) > 0 {
				a.started, d.From = l.Lines[0].Time, l.File+":1 (first log line; the container started earlier)"
			}
		}
	}
	if !a.started.IsZero() && a.started.Nanosecond() == 0 {
		// The API keeps startedAt (and event times) in whole seconds, so
		// the container started somewhere in the second it names. A first
		// log line inside that second bounds the start from above with the
		// runtime's nanosecond clock: counting from the second's beginning
		// would add up to a second of nothing to load.
		for _, l := range logs {
			if l.Container != name || len(l.Lines) == 0 {
				continue
			}
			if t := l.Lines[0].Time; !t.Before(a.started) && t.Sub(a.started) < time.Second {
				a.started = t
				d.From += " (whole seconds), refined by " + l.File + ":1 in the same second"
			}
			break
		}
	}
	if !a.started.IsZero() {
		a.started = ms(a.started)
		a.seen(a.started)
		a.points = append(a.points, instant{a.started, name + " started"})
	}
}

type pullKey struct{ container, image string }

// pull: the union of image-pull intervals from kubelet events.
func (ix *index) pull(a *podAnalysis, p *Pod, events []*Event) {
	d := &a.cs.Details.Pull
	pulling := map[pullKey]time.Time{}
	done := map[pullKey]bool{}
	for _, e := range events {
		if e.Reason == "Pulling" {
			if img, ok := pullingImage(e.Message); ok {
				k := pullKey{containerOf(e.Object.FieldPath), img}
				if _, dup := pulling[k]; !dup {
					pulling[k] = e.Time
				}
			}
			continue
		}
		if e.Reason != "Pulled" {
			continue
		}
		m, ok := parsePulled(e.Message)
		if !ok || !a.valid.pulled(e, m) {
			continue
		}
		k := pullKey{containerOf(e.Object.FieldPath), m.image}
		if done[k] {
			continue // a restart's repeat
		}
		done[k] = true
		end := ms(e.Time)
		ip := ImagePull{Container: k.container, Image: m.image, Cached: m.cached, Bytes: m.bytes, PullSeconds: seconds(m.pull)}
		if ip.Image == "" { // a fixed message naming no image (kwok): the container's, else the serving one's
			ip.Container = cmp.Or(ip.Container, a.serving)
			for _, c := range p.Containers {
				if c.Name == ip.Container {
					ip.Image = c.Image
				}
			}
		}
		start := end
		switch {
		case m.cached:
			ip.Source = "Pulled event: already present on machine"
		case m.inclusive > 0:
			start = ms(end.Add(-m.inclusive))
			ip.Source = "Pulled event time minus the duration in its message"
			if t, ok := pulling[k]; ok && t.Before(start.Add(-time.Second)) {
				start = ms(t) // failed attempts and back-off before the pull that worked
				ip.Source = "Pulling event (first attempt) → Pulled event"
				a.cs.Details.Notes = append(a.cs.Details.Notes, fmt.Sprintf("image %s needed more than one attempt: pull counts from the first", m.image))
			}
		default:
			if t, ok := pulling[k]; ok {
				start = ms(t)
				ip.Source = "Pulling event → Pulled event"
			} else {
				ip.Source = "Pulled event without a duration or a Pulling event: counted as 0"
			}
		}
		ip.Start, ip.End, ip.Seconds = a.off(start), a.off(end), seconds(end.Sub(start))
		a.cs.Details.Images = append(a.cs.Details.Images, ip)
		a.points = append(a.points, instant{start, "pull started"}, instant{end, "pulled " + shortImage(ip.Image)})
		a.claims = append(a.claims, attribution{Pull, start, end})
		a.seen(end)
	}
	for k := range pulling {
		if !done[k] {
			a.missing("image %s (container %s): Pulling but no Pulled event", k.image, k.container)
		}
	}
	if len(a.cs.Details.Images) == 0 {
		if slices.Contains(ix.b.Missing, EventsFile) {
			a.missing("no %s: pull unattributed", EventsFile)
		} else {
			a.missing("no Pulled events for this pod: pull unattributed (events expire after about an hour: record the bundle sooner)")
		}
		return
	}
	d.Known, d.From, d.To = true, "Pulling/Pulled events (kubelet)", "Pulled events: durations from their messages"
	if !a.started.IsZero() {
		d.To += ", up to the serving container's start"
	}
	slices.SortFunc(a.cs.Details.Images, func(x, y ImagePull) int { return cmp.Compare(x.Start, y.Start) })
}

func shortImage(img string) string {
	if i := strings.LastIndexByte(img, '/'); i >= 0 {
		img = img[i+1:]
	}
	if i := strings.Index(img, "@sha256:"); i >= 0 && len(img) > i+20 {
		img = img[:i+20]
	}
	return img
}

// loadAndWarmup: serving container started → weights loaded → Ready.
func (a *podAnalysis) loadAndWarmup(p *Pod, logs []*Log) {
	var serving *Log
	var marks []vllmMark
	for _, l := range logs {
		if l.Container == a.serving {
			serving = l
		}
		marks = append(marks, scanLog(l)...)
	}
	slices.SortStableFunc(marks, func(x, y vllmMark) int { return x.at.Compare(y.at) })
	if serving == nil {
		a.missing("no vLLM log (%s/%s_%s_%s.log): load and warmup unattributed", LogsDir, p.Namespace, p.Name, a.serving)
		return
	}
	for _, m := range marks {
		if m.kind == markVersion && a.cs.Details.VLLMVersion == "" {
			a.cs.Details.VLLMVersion = m.text
		}
	}
	// The end of load: the last "Model loading took" line, else "Loading
	// weights took", else 0.5-style "Loading model weights took G GB", in
	// the serving container's log (each tensor-parallel worker logs one).
	var end *vllmMark
	for _, kind := range []string{markModelLoading, markLoadingWeights, markModelWeights} {
		for i := range marks {
			if marks[i].kind == kind && marks[i].file == serving.File {
				end = &marks[i]
			}
		}
		if end != nil {
			break
		}
	}
	src := func(m *vllmMark) string { return fmt.Sprintf("%s:%d %q", m.file, m.line, m.text) }
	if end == nil {
		a.missing("%s has no weight-loading line (Model loading took / Loading weights took): load and warmup unattributed", serving.File)
		return
	}
	a.loaded = ms(end.at)
	a.points = append(a.points, instant{a.loaded, "weights loaded"})
	ld := &a.cs.Details.Load
	ld.To = src(end)
	weightSeconds := 0.0
	for _, kind := range []string{markLoadingWeights, markModelWeights, markModelLoading} {
		// One step per kind: the last line at or before the end of load
		// (every tensor-parallel worker logs its own).
		var last *vllmMark
		for i := range marks {
			if m := &marks[i]; m.kind == kind && m.file == serving.File && !m.at.After(end.at) {
				last = m
			}
		}
		if last != nil {
			ld.Steps = append(ld.Steps, Step{Name: kind, Seconds: last.seconds, GiB: round3(last.gib), At: a.off(last.at), Source: src(last)})
			weightSeconds = max(weightSeconds, last.seconds)
		}
	}
	if a.started.IsZero() {
		a.missing("no start time for container %s: load unattributed", a.serving)
	} else {
		ld.Known = true
		a.claims = append(a.claims, attribution{Load, a.started, a.loaded})
		if before := seconds(a.loaded.Sub(a.started)) - weightSeconds; weightSeconds > 0 && before > 0 {
			ld.Steps = slices.Insert(ld.Steps, 0, Step{Name: "before weights (imports, engine setup)", Seconds: round3(before),
				At: round3(a.off(a.loaded) - weightSeconds), Source: "container start → weights loaded, less the loading time the log states"})
		}
	}

	wd := &a.cs.Details.Warmup
	wd.Known, wd.From = true, "weights loaded ("+end.file+fmt.Sprintf(":%d)", end.line)
	if a.isReady {
		wd.To = "Ready condition"
	} else {
		wd.To = "last thing seen (not Ready)"
	}
	a.claims = append(a.claims, attribution{Warmup, a.loaded, time.Time{}}) // end set in resolve
	var startup *vllmMark
	for i := range marks {
		m := &marks[i]
		if m.at.Before(end.at) {
			continue
		}
		switch m.kind {
		case markMemProfile, markDynamo, markTorchCompile, markCompileCache, markGraphCapture, markInitEngine, markWarm:
			wd.Steps = append(wd.Steps, Step{Name: m.kind, Seconds: m.seconds, GiB: round3(m.gib), At: a.off(m.at), Source: src(m)})
		case markKVCache:
			if m.gib > 0 {
				wd.Steps = append(wd.Steps, Step{Name: m.kind, GiB: round3(m.gib), At: a.off(m.at), Source: src(m)})
			}
		case markStartup:
			if startup == nil {
				startup = m
				wd.Steps = append(wd.Steps, Step{Name: markStartup, Seconds: seconds(ms(m.at).Sub(a.loaded)), At: a.off(m.at),
					Source: src(m) + " minus weights loaded"})
				a.points = append(a.points, instant{m.at, "API server up"})
			}
		}
	}
	if startup != nil && a.isReady {
		wd.Steps = append(wd.Steps, Step{Name: "readiness lag", Seconds: max(0, seconds(ms(a.cs.Ready).Sub(ms(startup.at)))), At: a.off(a.cs.Ready),
			Source: "Application startup complete → Ready condition (readiness probe period, warm-up probe)"})
	}
}

// resolve turns the claims into an exclusive timeline over [created, end]:
// each claim is clipped to its window (provision before scheduling, pulls
// between scheduling and the serving container's start, load before weights
// loaded, warmup after), each instant goes to the first phase that claims
// it, and what no phase claims is unattributed.
func (a *podAnalysis) resolve() {
	lo, hi := a.created, tmax(a.end, a.created)
	clip := func(t time.Time) time.Time { return tmin(tmax(t, lo), hi) }
	pullLo, pullHi := lo, hi
	if !a.schedule.IsZero() {
		pullLo = clip(a.schedule)
	}
	switch {
	case !a.started.IsZero():
		pullHi = clip(a.started)
	case !a.loaded.IsZero():
		pullHi = clip(a.loaded)
	}
	pullHi = tmax(pullHi, pullLo)
	var claims []attribution
	for _, c := range a.claims {
		switch c.phase {
		case Pull:
			c.start, c.end = tmin(tmax(c.start, pullLo), pullHi), tmin(tmax(c.end, pullLo), pullHi)
		case Load:
			c.start = tmax(c.start, pullLo)
			c.end = tmax(c.end, c.start)
		case Warmup:
			c.end = hi
		}
		c.start, c.end = clip(c.start), clip(c.end)
		if c.end.After(c.start) {
			claims = append(claims, c)
		}
	}
	cuts := []time.Time{lo, hi}
	for _, c := range claims {
		cuts = append(cuts, c.start, c.end)
	}
	slices.SortFunc(cuts, func(x, y time.Time) int { return x.Compare(y) })
	cuts = slices.Compact(cuts)
	var segs []Segment
	var total, attributed time.Duration
	perPhase := map[string]time.Duration{}
	for i := 0; i+1 < len(cuts); i++ {
		s, e := cuts[i], cuts[i+1]
		phase := Unattributed
		for _, name := range PhaseNames {
			if slices.ContainsFunc(claims, func(c attribution) bool { return c.phase == name && !c.start.After(s) && !c.end.Before(e) }) {
				phase = name
				break
			}
		}
		d := e.Sub(s)
		total += d
		if phase != Unattributed {
			attributed += d
			perPhase[phase] += d
		}
		if n := len(segs); n > 0 && segs[n-1].Phase == phase {
			segs[n-1].End = a.off(e)
			continue
		}
		segs = append(segs, Segment{Phase: phase, Start: a.off(s), End: a.off(e)})
	}
	for i := range segs {
		if segs[i].Phase == Unattributed {
			segs[i].Note = a.between(segs[i])
		}
	}
	for _, name := range PhaseNames {
		a.cs.Phases.add(name, seconds(perPhase[name]))
	}
	a.cs.TotalSeconds = seconds(total)
	a.cs.UnattributedSeconds = seconds(total - attributed)
	// Provision steps split created → scheduled; like the phase, they end
	// at the total (a Scheduled event later than Ready is clipped).
	for i := range a.cs.Details.Provision.Steps {
		st := &a.cs.Details.Provision.Steps[i]
		if st.At > a.cs.TotalSeconds {
			st.Seconds = round3(max(0, st.Seconds-(st.At-a.cs.TotalSeconds)))
			st.At = a.cs.TotalSeconds
		}
	}
	if segs == nil {
		segs = []Segment{}
	}
	a.cs.Timeline = segs
}

// between names the labelled instants around an unattributed segment.
func (a *podAnalysis) between(s Segment) string {
	from, to := "", ""
	var fromT, toT float64 = -1, 1e18
	for _, p := range a.points {
		t := a.off(p.t)
		if t <= s.Start+0.0005 && t > fromT {
			from, fromT = p.label, t
		}
		if t >= s.End-0.0005 && t < toT {
			to, toT = p.label, t
		}
	}
	note := cmp.Or(from, "?") + " → " + cmp.Or(to, "?")
	switch {
	case from == "scheduled" && to == "pull started":
		note += ": pod sandbox, volumes"
	case from == "scheduled" && strings.HasSuffix(to, " started"):
		note += ": pod sandbox, volumes, container create"
	case strings.HasPrefix(from, "pulled") && to == "pull started":
		note += ": container start, init containers"
	case strings.HasPrefix(from, "pulled") && strings.HasSuffix(to, " started"):
		note += ": container create and start"
	}
	return note
}

func tmax(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

func tmin(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
