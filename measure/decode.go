package measure

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"
)

// The raw types mirror the kubectl JSON shapes, holding only the fields
// measure reads: encoding/json skips the rest without building them, which
// keeps a 100,000-event bundle well under a second. They are also what Write
// emits, so recorded bundles round-trip.

type rawMeta struct {
	Name              string            `json:"name,omitempty"`
	Namespace         string            `json:"namespace,omitempty"`
	UID               string            `json:"uid,omitempty"`
	CreationTimestamp time.Time         `json:"creationTimestamp,omitzero"`
	Annotations       map[string]string `json:"annotations,omitempty"`
}

type rawCondition struct {
	Type               string    `json:"type"`
	Status             string    `json:"status"`
	LastTransitionTime time.Time `json:"lastTransitionTime,omitzero"`
}

type rawContainer struct {
	Name  string `json:"name"`
	Image string `json:"image,omitempty"`
}

type rawTimes struct {
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

type rawContainerStatus struct {
	Name         string `json:"name"`
	Image        string `json:"image,omitempty"`
	Ready        bool   `json:"ready"`
	RestartCount int    `json:"restartCount"`
	State        struct {
		Running    *rawTimes `json:"running,omitempty"`
		Terminated *rawTimes `json:"terminated,omitempty"`
	} `json:"state"`
}

type rawPod struct {
	APIVersion string  `json:"apiVersion,omitempty"`
	Kind       string  `json:"kind,omitempty"`
	Metadata   rawMeta `json:"metadata"`
	Spec       struct {
		NodeName       string         `json:"nodeName,omitempty"`
		InitContainers []rawContainer `json:"initContainers,omitempty"`
		Containers     []rawContainer `json:"containers"`
	} `json:"spec"`
	Status struct {
		Conditions            []rawCondition       `json:"conditions,omitempty"`
		InitContainerStatuses []rawContainerStatus `json:"initContainerStatuses,omitempty"`
		ContainerStatuses     []rawContainerStatus `json:"containerStatuses,omitempty"`
	} `json:"status"`
}

type rawNode struct {
	APIVersion string  `json:"apiVersion,omitempty"`
	Kind       string  `json:"kind,omitempty"`
	Metadata   rawMeta `json:"metadata"`
	Status     struct {
		Conditions  []rawCondition    `json:"conditions,omitempty"`
		Allocatable map[string]string `json:"allocatable,omitempty"`
	} `json:"status"`
}

type rawRef struct {
	Kind      string `json:"kind,omitempty"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name,omitempty"`
	UID       string `json:"uid,omitempty"`
	FieldPath string `json:"fieldPath,omitempty"`
}

type rawSource struct {
	Component string `json:"component,omitempty"`
}

// rawEvent is the union of core/v1 Event and events.k8s.io/v1 Event.
type rawEvent struct {
	APIVersion string `json:"apiVersion,omitempty"`
	Kind       string `json:"kind,omitempty"`
	Metadata   struct {
		Name      string `json:"name,omitempty"`
		Namespace string `json:"namespace,omitempty"`
		UID       string `json:"uid,omitempty"`
	} `json:"metadata"`
	Reason    string    `json:"reason,omitempty"`
	EventTime time.Time `json:"eventTime,omitzero"`
	// core/v1
	InvolvedObject     *rawRef    `json:"involvedObject,omitempty"`
	Message            string     `json:"message,omitempty"`
	Source             *rawSource `json:"source,omitempty"`
	ReportingComponent string     `json:"reportingComponent,omitempty"`
	FirstTimestamp     time.Time  `json:"firstTimestamp,omitzero"`
	LastTimestamp      time.Time  `json:"lastTimestamp,omitzero"`
	Count              int        `json:"count,omitempty"`
	// events.k8s.io/v1
	Regarding                *rawRef    `json:"regarding,omitempty"`
	Note                     string     `json:"note,omitempty"`
	ReportingController      string     `json:"reportingController,omitempty"`
	DeprecatedSource         *rawSource `json:"deprecatedSource,omitempty"`
	DeprecatedFirstTimestamp time.Time  `json:"deprecatedFirstTimestamp,omitzero"`
	DeprecatedLastTimestamp  time.Time  `json:"deprecatedLastTimestamp,omitzero"`
	DeprecatedCount          int        `json:"deprecatedCount,omitempty"`
}

type rawList[T any] struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Items      []T    `json:"items"`
}

// DecodePods decodes `kubectl get pods -o json` (a List, a single Pod, or
// several of these one after another).
func DecodePods(r io.Reader) ([]Pod, error) {
	var pods []Pod
	err := decodeItems(r, func(i int, p *rawPod) error {
		pod, err := p.pod()
		if err != nil {
			return itemError(i, p.Metadata.Namespace, p.Metadata.Name, err)
		}
		pods = append(pods, pod)
		return nil
	})
	return pods, err
}

// DecodeNodes decodes `kubectl get nodes -o json`.
func DecodeNodes(r io.Reader) ([]Node, error) {
	return decodeNodes(r, func(*Node) bool { return true })
}

// decodeNodes decodes every node, keeping those keep says to.
func decodeNodes(r io.Reader, keep func(*Node) bool) ([]Node, error) {
	var nodes []Node
	err := decodeItems(r, func(i int, n *rawNode) error {
		node, err := n.node()
		if err != nil {
			return itemError(i, "", n.Metadata.Name, err)
		}
		if keep(&node) {
			nodes = append(nodes, node)
		}
		return nil
	})
	return nodes, err
}

// DecodeEvents decodes `kubectl get events -o json` and/or
// `kubectl get events.events.k8s.io -o json`: core/v1 and events.k8s.io/v1
// items may be mixed. An event seen in both shapes (same metadata.uid) is
// kept once, preferring the copy with the finer timestamp.
func DecodeEvents(r io.Reader) ([]Event, error) {
	return decodeEvents(r, func(*Event) bool { return true })
}

// decodeEvents decodes every event, keeping those keep says to: one item
// at a time, so what is not kept costs no memory.
func decodeEvents(r io.Reader, keep func(*Event) bool) ([]Event, error) {
	var events []Event
	seen := map[string]int{}
	ep := newEventParser()
	var e rawEvent
	err := splitItems(r, func(i int, off int64, b []byte) error {
		if err := ep.parse(b, &e); err != nil {
			return fmt.Errorf("item %d at byte %d: %w", i, off, err)
		}
		ev, err := e.event()
		if err != nil {
			return itemError(i, e.Metadata.Namespace, e.Metadata.Name, err)
		}
		if !keep(&ev) {
			return nil
		}
		if ev.UID != "" {
			if j, ok := seen[ev.UID]; ok {
				if ev.Time.Nanosecond() != 0 && events[j].Time.Nanosecond() == 0 {
					events[j] = ev
				}
				return nil
			}
			seen[ev.UID] = len(events)
		}
		events = append(events, ev)
		return nil
	})
	return events, err
}

func itemError(i int, ns, name string, err error) error {
	switch {
	case ns != "" && name != "":
		return fmt.Errorf("item %d (%s/%s): %w", i, ns, name, err)
	case name != "":
		return fmt.Errorf("item %d (%s): %w", i, name, err)
	}
	return fmt.Errorf("item %d: %w", i, err)
}

// decodeItems streams the items of one or more Lists (or bare objects) to
// each, decoding one item at a time with encoding/json.
func decodeItems[T any](r io.Reader, each func(i int, item *T) error) error {
	return splitItems(r, func(i int, off int64, b []byte) error {
		var item T
		if err := json.Unmarshal(b, &item); err != nil {
			return fmt.Errorf("item %d at byte %d: %w", i, off, err)
		}
		return each(i, &item)
	})
}

func (p *rawPod) pod() (Pod, error) {
	m := p.Metadata
	if m.Name == "" {
		return Pod{}, fmt.Errorf("no metadata.name")
	}
	if m.CreationTimestamp.IsZero() {
		return Pod{}, fmt.Errorf("no metadata.creationTimestamp")
	}
	pod := Pod{Namespace: m.Namespace, Name: m.Name, UID: m.UID, Created: m.CreationTimestamp, NodeName: p.Spec.NodeName}
	if pod.Namespace == "" {
		pod.Namespace = "default"
	}
	for _, c := range p.Spec.InitContainers {
		pod.Containers = append(pod.Containers, Container{Name: c.Name, Image: c.Image, Init: true})
	}
	for _, c := range p.Spec.Containers {
		pod.Containers = append(pod.Containers, Container{Name: c.Name, Image: c.Image})
	}
	pod.Conditions = conditions(p.Status.Conditions)
	for _, init := range []bool{true, false} {
		list := p.Status.ContainerStatuses
		if init {
			list = p.Status.InitContainerStatuses
		}
		for _, s := range list {
			cs := ContainerStatus{Name: s.Name, Image: s.Image, Init: init, Ready: s.Ready, RestartCount: s.RestartCount}
			if r := s.State.Running; r != nil {
				cs.StartedAt = r.StartedAt
			} else if t := s.State.Terminated; t != nil {
				cs.StartedAt, cs.FinishedAt = t.StartedAt, t.FinishedAt
			}
			pod.Statuses = append(pod.Statuses, cs)
		}
	}
	return pod, nil
}

func conditions(raw []rawCondition) []Condition {
	var cs []Condition
	for _, c := range raw {
		cs = append(cs, Condition{Type: c.Type, Status: c.Status, LastTransition: c.LastTransitionTime})
	}
	return cs
}

func (n *rawNode) node() (Node, error) {
	if n.Metadata.Name == "" {
		return Node{}, fmt.Errorf("no metadata.name")
	}
	node := Node{Name: n.Metadata.Name, Created: n.Metadata.CreationTimestamp, Conditions: conditions(n.Status.Conditions)}
	for _, k := range []string{"nvidia.com/gpu", "amd.com/gpu"} {
		if q, ok := n.Status.Allocatable[k]; ok {
			v, err := strconv.ParseInt(q, 10, 64)
			if err != nil {
				return Node{}, fmt.Errorf("status.allocatable[%q]: %q is not a whole number", k, q)
			}
			node.GPUs += v
		}
	}
	if s, ok := n.Metadata.Annotations[GPUAllocatableAnnotation]; ok {
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return Node{}, fmt.Errorf("annotation %s: %w", GPUAllocatableAnnotation, err)
		}
		node.GPUAllocatableAt = t
	}
	return node, nil
}

func (e *rawEvent) event() (Event, error) {
	ev := Event{UID: e.Metadata.UID, Namespace: e.Metadata.Namespace, Reason: e.Reason}
	ref := e.InvolvedObject
	if ref == nil {
		ref = e.Regarding
	}
	if ref == nil {
		return Event{}, fmt.Errorf("no involvedObject or regarding")
	}
	ev.Object = ObjectRef{Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name, UID: ref.UID, FieldPath: ref.FieldPath}
	if ev.Object.Namespace == "" && ev.Object.Kind == "Pod" {
		ev.Object.Namespace = ev.Namespace
	}
	ev.Message = e.Message
	if ev.Message == "" {
		ev.Message = e.Note
	}
	ev.Component = firstNonEmpty(e.ReportingComponent, e.ReportingController)
	if ev.Component == "" && e.Source != nil {
		ev.Component = e.Source.Component
	}
	if ev.Component == "" && e.DeprecatedSource != nil {
		ev.Component = e.DeprecatedSource.Component
	}
	ev.Time = firstTime(e.EventTime, e.FirstTimestamp, e.DeprecatedFirstTimestamp, e.LastTimestamp, e.DeprecatedLastTimestamp)
	ev.LastTime = firstTime(e.LastTimestamp, e.DeprecatedLastTimestamp, ev.Time)
	if ev.Time.IsZero() {
		return Event{}, fmt.Errorf("no eventTime, firstTimestamp or lastTimestamp")
	}
	ev.Count = max(e.Count, e.DeprecatedCount, 1)
	return ev, nil
}

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

func firstTime(ts ...time.Time) time.Time {
	for _, t := range ts {
		if !t.IsZero() {
			return t
		}
	}
	return time.Time{}
}

// Writing: the inverse conversions, for Bundle.Write.

func podList(pods []Pod) rawList[rawPod] {
	l := rawList[rawPod]{APIVersion: "v1", Kind: "List", Items: []rawPod{}}
	for _, p := range pods {
		var r rawPod
		r.APIVersion, r.Kind = "v1", "Pod"
		r.Metadata = rawMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID, CreationTimestamp: p.Created}
		r.Spec.NodeName = p.NodeName
		r.Spec.Containers = []rawContainer{}
		for _, c := range p.Containers {
			if c.Init {
				r.Spec.InitContainers = append(r.Spec.InitContainers, rawContainer{c.Name, c.Image})
			} else {
				r.Spec.Containers = append(r.Spec.Containers, rawContainer{c.Name, c.Image})
			}
		}
		r.Status.Conditions = rawConditions(p.Conditions)
		for _, s := range p.Statuses {
			rs := rawContainerStatus{Name: s.Name, Image: s.Image, Ready: s.Ready, RestartCount: s.RestartCount}
			if !s.FinishedAt.IsZero() {
				rs.State.Terminated = &rawTimes{StartedAt: s.StartedAt, FinishedAt: s.FinishedAt}
			} else if !s.StartedAt.IsZero() {
				rs.State.Running = &rawTimes{StartedAt: s.StartedAt}
			}
			if s.Init {
				r.Status.InitContainerStatuses = append(r.Status.InitContainerStatuses, rs)
			} else {
				r.Status.ContainerStatuses = append(r.Status.ContainerStatuses, rs)
			}
		}
		l.Items = append(l.Items, r)
	}
	return l
}

func rawConditions(cs []Condition) []rawCondition {
	var out []rawCondition
	for _, c := range cs {
		out = append(out, rawCondition{Type: c.Type, Status: c.Status, LastTransitionTime: c.LastTransition})
	}
	return out
}

func nodeList(nodes []Node) rawList[rawNode] {
	l := rawList[rawNode]{APIVersion: "v1", Kind: "List", Items: []rawNode{}}
	for _, n := range nodes {
		var r rawNode
		r.APIVersion, r.Kind = "v1", "Node"
		r.Metadata = rawMeta{Name: n.Name, CreationTimestamp: n.Created}
		if !n.GPUAllocatableAt.IsZero() {
			r.Metadata.Annotations = map[string]string{GPUAllocatableAnnotation: n.GPUAllocatableAt.UTC().Format(time.RFC3339Nano)}
		}
		r.Status.Conditions = rawConditions(n.Conditions)
		if n.GPUs > 0 {
			r.Status.Allocatable = map[string]string{"nvidia.com/gpu": strconv.FormatInt(n.GPUs, 10)}
		}
		l.Items = append(l.Items, r)
	}
	return l
}

func eventList(events []Event) rawList[rawEvent] {
	l := rawList[rawEvent]{APIVersion: "v1", Kind: "List", Items: []rawEvent{}}
	for _, e := range events {
		r := rawEvent{APIVersion: "v1", Kind: "Event", Reason: e.Reason, Message: e.Message,
			ReportingComponent: e.Component, EventTime: e.Time, FirstTimestamp: e.Time, LastTimestamp: e.LastTime, Count: e.Count}
		r.Metadata.UID, r.Metadata.Namespace = e.UID, e.Namespace
		o := e.Object
		r.InvolvedObject = &rawRef{Kind: o.Kind, Namespace: o.Namespace, Name: o.Name, UID: o.UID, FieldPath: o.FieldPath}
		l.Items = append(l.Items, r)
	}
	return l
}

func writeJSONFile(path string, v any) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(f)
	enc := json.NewEncoder(bw)
	enc.SetIndent("", "    ")
	if err := enc.Encode(v); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
