package measure

import (
	"strings"
	"testing"
	"time"
)

var t0 = time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)

func at(sec float64) time.Time { return t0.Add(time.Duration(sec * float64(time.Second))) }

func podAt(name string, ready float64, containers ...string) Pod {
	p := Pod{Namespace: "ns", Name: name, UID: "uid-" + name, Created: t0, NodeName: "n1",
		Conditions: []Condition{{Type: "PodScheduled", Status: "True", LastTransition: at(1)}}}
	if ready > 0 {
		p.Conditions = append(p.Conditions, Condition{Type: "Ready", Status: "True", LastTransition: at(ready)})
	}
	for _, c := range containers {
		p.Containers = append(p.Containers, Container{Name: c, Image: "img/" + c})
	}
	return p
}

func podEvent(pod, container, reason, msg string, sec float64) Event {
	e := Event{Object: ObjectRef{Kind: "Pod", Namespace: "ns", Name: pod, UID: "uid-" + pod}, Reason: reason, Message: msg, Time: at(sec), Count: 1}
	if container != "" {
		e.Object.FieldPath = "spec.containers{" + container + "}"
	}
	return e
}

func logOf(pod, container string, lines map[float64]string) Log {
	l := Log{Namespace: "ns", Pod: pod, Container: container, File: "logs/ns_" + pod + "_" + container + ".log"}
	for sec := 0.0; sec < 10000; sec += 0.5 {
		if s, ok := lines[sec]; ok {
			l.Lines = append(l.Lines, LogLine{Time: at(sec), Text: s})
		}
	}
	return l
}

func analyzeOne(t *testing.T, b *Bundle, opts ...Option) ColdStart {
	t.Helper()
	r, err := Analyze(b, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r.ColdStarts[0]
}

func TestNotReady(t *testing.T) {
	b := &Bundle{Pods: []Pod{podAt("p", 0, "vllm")}, Logs: []Log{logOf("p", "vllm", map[float64]string{
		20: "Loading weights took 5.0 seconds", 30: "still warming up"})}}
	b.Pods[0].Statuses = []ContainerStatus{{Name: "vllm", StartedAt: at(10)}}
	c := analyzeOne(t, b)
	if !c.Ready.IsZero() || c.TotalSeconds != 30 || c.Phases.Warmup != 10 || c.Phases.Load != 10 {
		t.Errorf("not ready: total %v phases %+v", c.TotalSeconds, c.Phases)
	}
	if !strings.Contains(strings.Join(c.Missing, "\n"), "pod never became Ready") {
		t.Errorf("missing = %q", c.Missing)
	}
}

func TestPullRetriesAndOldKubelet(t *testing.T) {
	b := &Bundle{Pods: []Pod{podAt("p", 200, "vllm", "side")}, Events: []Event{
		podEvent("p", "vllm", "Pulling", `Pulling image "img/vllm"`, 5),
		podEvent("p", "vllm", "Failed", `Failed to pull image "img/vllm": 503`, 20),
		podEvent("p", "vllm", "BackOff", `Back-off pulling image "img/vllm"`, 21),
		podEvent("p", "vllm", "Pulled", `Successfully pulled image "img/vllm" in 30s (30s including waiting). Image size: 1 bytes.`, 120),
		podEvent("p", "side", "Pulling", `Pulling image "img/side"`, 121),
		podEvent("p", "side", "Pulled", `Successfully pulled image "img/side"`, 124), // no duration: Pulling → Pulled
		podEvent("p", "vllm", "Started", "Started container vllm", 125),
		// a pod of the same name before: ignored
		{Object: ObjectRef{Kind: "Pod", Namespace: "ns", Name: "p", UID: "old"}, Reason: "Pulled", Message: `Successfully pulled image "img/x" in 99s`, Time: at(100), Count: 1},
	}}
	c := analyzeOne(t, b)
	// vllm [5, 120] (retries from the first Pulling), side [121, 124]
	// clipped at the vllm start (125): 115 + 3.
	if c.Phases.Pull != 118 || len(c.Details.Images) != 2 {
		t.Errorf("pull = %v, images %+v", c.Phases.Pull, c.Details.Images)
	}
	if !strings.Contains(strings.Join(c.Details.Notes, "\n"), "img/vllm needed more than one attempt") {
		t.Errorf("notes = %q", c.Details.Notes)
	}
	if c.Details.Images[1].Source != "Pulling event → Pulled event" || c.Details.Images[1].Seconds != 3 {
		t.Errorf("old kubelet pull = %+v", c.Details.Images[1])
	}
}

// TestPullAfterServingStart: a sidecar pulled while the server loads does
// not count as pull time.
func TestPullAfterServingStart(t *testing.T) {
	b := &Bundle{Pods: []Pod{podAt("p", 100, "vllm", "side")}, Events: []Event{
		podEvent("p", "vllm", "Pulled", `Container image "img/vllm" already present on machine`, 2),
		podEvent("p", "vllm", "Started", "Started container vllm", 3),
		podEvent("p", "side", "Pulled", `Successfully pulled image "img/side" in 20s (20s including waiting). Image size: 1 bytes.`, 25),
	}, Logs: []Log{logOf("p", "vllm", map[float64]string{50: "Model loading took 1.0 GiB and 40.0 seconds"})}}
	c := analyzeOne(t, b)
	if c.Phases.Pull != 0 || c.Phases.Load != 47 || c.Phases.Warmup != 50 || c.Phases.Provision != 1 || c.UnattributedSeconds != 2 {
		t.Errorf("phases %+v unattributed %v", c.Phases, c.UnattributedSeconds)
	}
}

func TestChooseServingContainer(t *testing.T) {
	b := &Bundle{Pods: []Pod{podAt("p", 100, "proxy", "server")}, Logs: []Log{
		logOf("p", "proxy", map[float64]string{5: "envoy ready"}),
		logOf("p", "server", map[float64]string{5: "start", 40: "Loading weights took 30 seconds"}),
	}}
	b.Pods[0].Statuses = []ContainerStatus{{Name: "proxy", StartedAt: at(3)}, {Name: "server", StartedAt: at(4), RestartCount: 2}}
	c := analyzeOne(t, b)
	if c.Details.Container != "server" || c.Phases.Load != 36 {
		t.Errorf("container %s load %v", c.Details.Container, c.Phases.Load)
	}
	if !strings.Contains(strings.Join(c.Details.Notes, "\n"), "restarted 2 times") {
		t.Errorf("notes = %q", c.Details.Notes)
	}
	c = analyzeOne(t, b, WithContainer("proxy"))
	if c.Details.Container != "proxy" || c.Details.Load.Known || !strings.Contains(strings.Join(c.Missing, "\n"), "no weight-loading line") {
		t.Errorf("WithContainer(proxy): %+v missing %q", c.Details.Load, c.Missing)
	}
}

// TestEventsExpired: with no events, the PodScheduled condition still
// gives provision, and the report says why pull is unattributed.
func TestEventsExpired(t *testing.T) {
	b := &Bundle{Pods: []Pod{podAt("p", 60, "vllm")}, Nodes: []Node{{Name: "n1", Created: t0.Add(-time.Hour)}}}
	c := analyzeOne(t, b)
	if c.Phases.Provision != 1 || c.Details.Provision.To != "PodScheduled condition" || c.UnattributedSeconds != 59 {
		t.Errorf("provision %v from %q, unattributed %v", c.Phases.Provision, c.Details.Provision.To, c.UnattributedSeconds)
	}
	m := strings.Join(c.Missing, "\n")
	if !strings.Contains(m, "events expire") || !strings.Contains(m, "no vLLM log") {
		t.Errorf("missing = %q", c.Missing)
	}
}

func TestAnalyzeErrors(t *testing.T) {
	if _, err := Analyze(&Bundle{Missing: []string{PodsFile}}); err == nil || !strings.Contains(err.Error(), "no pods.json") {
		t.Errorf("no pods: %v", err)
	}
	if _, err := Analyze(&Bundle{Pods: []Pod{podAt("p", 1)}}, WithPods("q")); err == nil || !strings.Contains(err.Error(), "no pod q") {
		t.Errorf("WithPods(q): %v", err)
	}
	if _, err := Analyze(&Bundle{Pods: []Pod{podAt("p", 1)}}, WithPods("a/b/c")); err == nil {
		t.Error("WithPods(a/b/c) did not fail")
	}
	if r, err := Analyze(&Bundle{Pods: []Pod{podAt("p", 1)}}, WithPods("ns/p")); err != nil || len(r.ColdStarts) != 1 {
		t.Errorf("WithPods(ns/p): %v", err)
	}
}
