package measure

import (
	"bytes"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Converting API objects into a Bundle: each object goes through its JSON
// form and the decoders ReadBundle uses, so a live bundle says exactly what
// the same objects recorded with `kubectl get -o json` say.

// list is the shape of `kubectl get -o json`.
type list struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Items      []any  `json:"items"`
}

func encodeList[T any](items []T) (*bytes.Reader, error) {
	l := list{APIVersion: "v1", Kind: "List", Items: make([]any, 0, len(items))}
	for _, it := range items {
		l.Items = append(l.Items, it)
	}
	data, err := json.Marshal(l)
	if err != nil {
		return nil, err
	}
	return bytes.NewReader(data), nil
}

// convertPods converts core/v1 Pods into the Bundle's Pods.
func convertPods(pods []*corev1.Pod) ([]Pod, error) {
	r, err := encodeList(pods)
	if err != nil {
		return nil, fmt.Errorf("converting pods: %w", err)
	}
	out, err := DecodePods(r)
	if err != nil {
		return nil, fmt.Errorf("converting pods: %w", err)
	}
	return out, nil
}

// convertNodes converts core/v1 Nodes into the Bundle's Nodes.
// gpuAllocatableAt gives, by node name, when a collector first saw the
// node's GPUs allocatable (Node.GPUAllocatableAt; zero or absent: unknown).
func convertNodes(nodes []*corev1.Node, gpuAllocatableAt map[string]time.Time) ([]Node, error) {
	r, err := encodeList(nodes)
	if err != nil {
		return nil, fmt.Errorf("converting nodes: %w", err)
	}
	out, err := DecodeNodes(r)
	if err != nil {
		return nil, fmt.Errorf("converting nodes: %w", err)
	}
	for i := range out {
		if t := gpuAllocatableAt[out[i].Name]; !t.IsZero() && out[i].GPUAllocatableAt.IsZero() {
			out[i].GPUAllocatableAt = t
		}
	}
	return out, nil
}

// decodeAPIEvents converts core/v1 and events.k8s.io/v1 Events (two views of
// the same events: one with the same UID is kept once, as DecodeEvents
// does) into the Bundle's Events.
func decodeAPIEvents(core []*corev1.Event, events []*eventsv1.Event) ([]Event, error) {
	items := make([]any, 0, len(core)+len(events))
	for _, e := range core {
		items = append(items, e)
	}
	for _, e := range events {
		items = append(items, e)
	}
	r, err := encodeList(items)
	if err != nil {
		return nil, fmt.Errorf("converting events: %w", err)
	}
	out, err := DecodeEvents(r)
	if err != nil {
		return nil, fmt.Errorf("converting events: %w", err)
	}
	return out, nil
}

// convertEvents converts the events and keeps those about the pods named in
// pods (by name, with their UID) in namespace ns.
func convertEvents(core []*corev1.Event, events []*eventsv1.Event, ns string, pods map[string]types.UID) ([]Event, error) {
	all, err := decodeAPIEvents(core, events)
	if err != nil {
		return nil, err
	}
	var out []Event
	for _, e := range all {
		o := e.Object
		uid, ok := pods[o.Name]
		if o.Kind != "Pod" || o.Namespace != ns || !ok || (o.UID != "" && o.UID != string(uid)) {
			continue
		}
		out = append(out, e)
	}
	return out, nil
}
