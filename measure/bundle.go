package measure

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/modelcar/modelcar/internal/limits"
)

// Bundle file names, relative to the bundle directory. Each JSON file is the
// output of `kubectl get ... -o json`; each log is the output of
// `kubectl logs --timestamps` for one container.
const (
	PodsFile   = "pods.json"
	EventsFile = "events.json"
	NodesFile  = "nodes.json"
	LogsDir    = "logs"
)

// GPUAllocatableAnnotation is the Node annotation that carries, in a
// recorded bundle, the time a live collector first saw the node's
// nvidia.com/gpu (or amd.com/gpu) allocatable become non-zero. Kubernetes
// keeps no such timestamp, so bundles made with kubectl alone lack it and the
// "Ready → GPU allocatable" step is skipped.
const GPUAllocatableAnnotation = "modelcar.dev/gpu-allocatable-at"

// A Bundle is everything measure knows about a set of cold starts: the
// Pods, their Events, their Nodes and their containers' logs. ReadBundle
// fills one from a directory; a live collector fills one from watches and
// log streams (converting API objects into these types) and can record it
// with Write. Analyze turns a Bundle into a Report.
type Bundle struct {
	Pods   []Pod
	Events []Event
	Nodes  []Node
	Logs   []Log
	// Missing names the bundle files that were absent ("events.json",
	// "logs/"); analysis goes on with what is there.
	Missing []string
	// IgnoredEvents counts, by NAMESPACE/POD, the events about a pod past
	// the first limits.MaxEventsPerPod, which ReadBundle does not keep.
	IgnoredEvents map[string]int
}

// A Pod is the part of a core/v1 Pod that the phase model reads.
type Pod struct {
	Namespace, Name, UID string
	Created              time.Time // metadata.creationTimestamp
	NodeName             string    // spec.nodeName
	Containers           []Container
	Conditions           []Condition
	Statuses             []ContainerStatus
}

// A Container is one entry of spec.initContainers or spec.containers.
type Container struct {
	Name, Image string
	Init        bool
}

// A Condition is a Pod or Node status condition.
type Condition struct {
	Type, Status   string
	LastTransition time.Time
}

// A ContainerStatus is one entry of status.initContainerStatuses or
// status.containerStatuses.
type ContainerStatus struct {
	Name, Image  string
	Init, Ready  bool
	RestartCount int
	// StartedAt is state.running.startedAt, or state.terminated.startedAt for
	// a container that ran and exited (init containers).
	StartedAt  time.Time
	FinishedAt time.Time // state.terminated.finishedAt
}

// A Node is the part of a core/v1 Node that the phase model reads.
type Node struct {
	Name       string
	Created    time.Time // metadata.creationTimestamp
	Conditions []Condition
	// GPUs is the node's allocatable nvidia.com/gpu plus amd.com/gpu.
	GPUs int64
	// GPUAllocatableAt is when GPUs first became non-zero; zero when unknown
	// (see GPUAllocatableAnnotation).
	GPUAllocatableAt time.Time
}

// An Event is a core/v1 or events.k8s.io/v1 Event, normalised.
type Event struct {
	UID       string // metadata.uid: the same for both API views of one event
	Namespace string
	Object    ObjectRef // involvedObject (core) or regarding (events.k8s.io)
	Reason    string
	Message   string // message (core) or note (events.k8s.io)
	// Component is reportingComponent / reportingController, else
	// source.component / deprecatedSource.component ("kubelet",
	// "default-scheduler", "cluster-autoscaler", "karpenter").
	Component string
	// Time is when the event first happened: eventTime (microseconds) when
	// set, else firstTimestamp / deprecatedFirstTimestamp (seconds), else
	// lastTimestamp.
	Time     time.Time
	LastTime time.Time
	Count    int
}

// An ObjectRef names the object an Event is about.
type ObjectRef struct {
	Kind, Namespace, Name, UID string
	FieldPath                  string // e.g. spec.containers{vllm}
}

// A Log is one container's log, each line with its timestamp.
type Log struct {
	Namespace, Pod, Container string
	// File is where the log was read from, for sources in reports.
	File  string
	Lines []LogLine
	// Cut is set when ReadBundle kept only the log's beginning: its first
	// limits.MaxLogLines lines or limits.MaxLogBytes, whichever came first.
	Cut bool
}

// A LogLine is one line of `kubectl logs --timestamps`.
type LogLine struct {
	Time time.Time
	Text string
}

// ParseLogLine splits a `kubectl logs --timestamps` line into its RFC3339
// timestamp and text; ok is false when the line does not start with one.
func ParseLogLine(s string) (l LogLine, ok bool) {
	ts, text, _ := strings.Cut(s, " ")
	t, err := time.Parse(time.RFC3339Nano, ts)
	if err != nil {
		return LogLine{}, false
	}
	return LogLine{Time: t, Text: strings.TrimRight(text, "\r")}, true
}

// ReadBundle reads a bundle directory: pods.json, events.json, nodes.json
// and logs/NAMESPACE_POD_CONTAINER.log. Any of them may be missing (listed in
// Bundle.Missing), but not all. Errors name the file and the item or line.
//
// It keeps what measuring the bundle's pods needs: the pods (those WithPods
// names, when given), the events about them, the nodes they ran on and their
// logs. Every file is read a List item (or a log line) at a time, and what
// is not kept is dropped as it is read, so memory grows with the pods
// measured, not with the files: events.json may hold the whole namespace's
// events. An item over limits.MaxBundleItemBytes is refused; a log line over
// limits.MaxLogLineBytes is cut there; events about one pod past
// limits.MaxEventsPerPod are counted in IgnoredEvents, not kept.
func ReadBundle(dir string, opts ...Option) (*Bundle, error) {
	var o options
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	st, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("reading bundle: %w", err)
	}
	if !st.IsDir() {
		return nil, fmt.Errorf("reading bundle %s: not a directory", dir)
	}
	b := &Bundle{}
	readJSON := func(name string, decode func(io.Reader) error) error {
		f, err := os.Open(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			b.Missing = append(b.Missing, name)
			return nil
		}
		if err != nil {
			return err
		}
		defer f.Close()
		if err := decode(f); err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		return nil
	}
	if err := readJSON(PodsFile, func(r io.Reader) (err error) { b.Pods, err = DecodePods(r); return }); err != nil {
		return nil, err
	}
	b.Pods = slices.DeleteFunc(b.Pods, func(p Pod) bool { return !o.selects(&p) })
	pods := map[string]int{} // events kept about each
	nodes := map[string]bool{}
	for _, p := range b.Pods {
		pods[p.Namespace+"/"+p.Name] = 0
		nodes[p.NodeName] = true
	}
	keepEvent := func(e *Event) bool {
		key := e.Object.Namespace + "/" + e.Object.Name
		n, ok := pods[key]
		switch {
		case e.Object.Kind != "Pod" || !ok:
			return false
		case n >= limits.MaxEventsPerPod:
			if b.IgnoredEvents == nil {
				b.IgnoredEvents = map[string]int{}
			}
			b.IgnoredEvents[key]++
			return false
		}
		pods[key] = n + 1
		if e.Reason == "Scheduled" {
			nodes[assignedNode(e.Message)] = true
		}
		return true
	}
	if err := readJSON(EventsFile, func(r io.Reader) (err error) { b.Events, err = decodeEvents(r, keepEvent); return }); err != nil {
		return nil, err
	}
	if err := readJSON(NodesFile, func(r io.Reader) (err error) {
		b.Nodes, err = decodeNodes(r, func(n *Node) bool { return nodes[n.Name] })
		return
	}); err != nil {
		return nil, err
	}
	if err := b.readLogs(filepath.Join(dir, LogsDir), func(ns, pod string) bool { _, ok := pods[ns+"/"+pod]; return ok }); err != nil {
		return nil, err
	}
	if len(b.Missing) == 4 {
		return nil, fmt.Errorf("reading bundle %s: no %s, %s, %s or %s/: not a measure bundle", dir, PodsFile, EventsFile, NodesFile, LogsDir)
	}
	return b, nil
}

// readLogs reads the logs of the pods keep says are measured.
func (b *Bundle) readLogs(dir string, keep func(ns, pod string) bool) error {
	ents, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		b.Missing = append(b.Missing, LogsDir+"/")
		return nil
	}
	if err != nil {
		return fmt.Errorf("reading logs: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() || !strings.HasSuffix(e.Name(), ".log") {
			continue
		}
		rel := LogsDir + "/" + e.Name()
		parts := strings.Split(strings.TrimSuffix(e.Name(), ".log"), "_")
		if len(parts) != 3 || parts[0] == "" || parts[1] == "" || parts[2] == "" {
			return fmt.Errorf("%s: want the name NAMESPACE_POD_CONTAINER.log", rel)
		}
		f, err := os.Open(filepath.Join(dir, e.Name()))
		if err != nil {
			return fmt.Errorf("reading logs: %w", err)
		}
		// Every log is checked; only the measured pods' lines are kept, up
		// to the limits, past which the log is not read.
		var lines []LogLine
		kept, cut, size := keep(parts[0], parts[1]), false, 0
		err = parseLog(f, func(l LogLine) bool {
			if !kept {
				return true
			}
			if size += len(l.Text); len(lines) == limits.MaxLogLines || size > limits.MaxLogBytes {
				cut = true
				return false
			}
			lines = append(lines, l)
			return true
		})
		f.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", rel, err)
		}
		if kept {
			b.Logs = append(b.Logs, Log{Namespace: parts[0], Pod: parts[1], Container: parts[2], File: rel, Lines: lines, Cut: cut})
		}
	}
	return nil
}

// ParseLog reads `kubectl logs --timestamps` output. Every non-empty line
// must start with an RFC3339 timestamp; the error names the first that does
// not. Of a line longer than limits.MaxLogLineBytes, the text up to there
// is kept.
func ParseLog(r io.Reader) ([]LogLine, error) {
	var lines []LogLine
	err := parseLog(r, func(l LogLine) bool { lines = append(lines, l); return true })
	if err != nil {
		return nil, err
	}
	return lines, nil
}

// parseLog calls each with every line of a log, one line at a time, until
// each returns false.
func parseLog(r io.Reader, each func(LogLine) bool) error {
	br := bufio.NewReaderSize(r, limits.MaxLogLineBytes)
	for n := 1; ; n++ {
		b, err := br.ReadSlice('\n')
		s := string(b)
		for err == bufio.ErrBufferFull { // a line over the limit: drop the rest of it
			_, err = br.ReadSlice('\n')
		}
		if s = strings.TrimRight(s, "\r\n"); s != "" {
			l, ok := ParseLogLine(s)
			if !ok {
				if len(s) > 60 {
					s = s[:60] + "..."
				}
				return fmt.Errorf("line %d: want an RFC3339 timestamp first (kubectl logs --timestamps), got %q", n, s)
			}
			if !each(l) {
				return nil
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("line %d: %w", n, err)
		}
	}
}

// Write records the bundle in dir in the layout ReadBundle reads (the
// kubectl shapes, holding only the fields measure uses, with sub-second
// times kept). A live collector calls it for --record.
func (b *Bundle) Write(dir string) error {
	if err := os.MkdirAll(filepath.Join(dir, LogsDir), 0o755); err != nil {
		return fmt.Errorf("recording bundle: %w", err)
	}
	write := func(name string, v any) error {
		if err := writeJSONFile(filepath.Join(dir, name), v); err != nil {
			return fmt.Errorf("recording %s: %w", name, err)
		}
		return nil
	}
	if err := write(PodsFile, podList(b.Pods)); err != nil {
		return err
	}
	if err := write(EventsFile, eventList(b.Events)); err != nil {
		return err
	}
	if err := write(NodesFile, nodeList(b.Nodes)); err != nil {
		return err
	}
	for _, l := range b.Logs {
		name := LogsDir + "/" + l.Namespace + "_" + l.Pod + "_" + l.Container + ".log"
		var sb strings.Builder
		for _, ln := range l.Lines {
			sb.WriteString(ln.Time.UTC().Format(time.RFC3339Nano))
			sb.WriteByte(' ')
			sb.WriteString(ln.Text)
			sb.WriteByte('\n')
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(sb.String()), 0o644); err != nil {
			return fmt.Errorf("recording %s: %w", name, err)
		}
	}
	return nil
}
