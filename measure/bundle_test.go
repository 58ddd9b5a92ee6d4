package measure

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestReadBundleEvents(t *testing.T) {
	b, err := ReadBundle(filepath.Join(fixtures, "multi-pod"))
	if err != nil {
		t.Fatal(err)
	}
	// 21 items: each pod's Scheduled event appears through both APIs with
	// the same uid and is kept once.
	if len(b.Events) != 18 {
		t.Errorf("%d events, want 18 (duplicates by uid dropped)", len(b.Events))
	}
	var found bool
	for _, e := range b.Events {
		// An events.k8s.io/v1 kubelet event: no eventTime, the time is
		// deprecatedFirstTimestamp, the component reportingController.
		if e.Object.Name == "phi-vllm-6b8f9d7c5-ccccc" && e.Reason == "Pulled" {
			found = true
			if e.Component != "kubelet" || !e.Time.Equal(time.Date(2025, 3, 14, 15, 0, 41, 0, time.UTC)) || e.Object.FieldPath != "spec.containers{vllm}" ||
				!strings.HasPrefix(e.Message, `Successfully pulled image "vllm/vllm-openai:v0.9.2" in 1.012s`) {
				t.Errorf("events.k8s.io kubelet event = %+v", e)
			}
		}
	}
	if !found {
		t.Error("no Pulled event for pod ccccc")
	}
	if len(b.Pods) != 3 || len(b.Nodes) != 2 || len(b.Logs) != 3 || len(b.Missing) != 0 {
		t.Errorf("pods %d nodes %d logs %d missing %q", len(b.Pods), len(b.Nodes), len(b.Logs), b.Missing)
	}
	l := b.Logs[0]
	if l.Namespace != "llm" || l.Pod != "phi-vllm-6b8f9d7c5-aaaaa" || l.Container != "vllm" || len(l.Lines) != 5 {
		t.Errorf("log = %s/%s/%s, %d lines", l.Namespace, l.Pod, l.Container, len(l.Lines))
	}
}

func TestReadBundleShapes(t *testing.T) {
	b, err := ReadBundle(filepath.Join(fixtures, "slow-pull"))
	if err != nil {
		t.Fatal(err)
	}
	p := b.Pods[0]
	if len(p.Containers) != 2 || !p.Containers[0].Init || p.Containers[0].Name != "model" || p.Containers[1].Name != "vllm" {
		t.Errorf("containers = %+v", p.Containers)
	}
	if len(p.Statuses) != 2 || !p.Statuses[0].Init || p.Statuses[0].FinishedAt.IsZero() || p.Statuses[1].StartedAt.IsZero() {
		t.Errorf("statuses = %+v", p.Statuses)
	}
	n, err := ReadBundle(filepath.Join(fixtures, "scaleup-cluster-autoscaler"))
	if err != nil {
		t.Fatal(err)
	}
	if nd := n.Nodes[0]; nd.GPUs != 1 || !nd.GPUAllocatableAt.Equal(time.Date(2025, 3, 14, 10, 2, 40, 0, time.UTC)) {
		t.Errorf("node = %+v", nd)
	}
}

// TestDecodeVariants: a bare object (kubectl get pod X -o json), Lists one
// after another, and "items": null all decode.
func TestDecodeVariants(t *testing.T) {
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"a","namespace":"x","creationTimestamp":"2025-01-01T00:00:00Z"},"spec":{"containers":[{"name":"c","image":"i"}]}}`
	list := `{"apiVersion":"v1","kind":"List","items":[` + strings.Replace(pod, `"a"`, `"b"`, 1) + `]}`
	pods, err := DecodePods(strings.NewReader(pod + "\n" + list + "\n" + `{"kind":"PodList","items":null}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(pods) != 2 || pods[0].Name != "a" || pods[1].Name != "b" || pods[1].Containers[0].Image != "i" {
		t.Errorf("pods = %+v", pods)
	}
	if _, err := DecodePods(strings.NewReader(`{"kind":"List","items":[]}`)); err != nil {
		t.Error(err)
	}
}

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestReadBundleErrors: errors name the file and the item or line.
func TestReadBundleErrors(t *testing.T) {
	okPod := `{"metadata":{"name":"a","namespace":"x","creationTimestamp":"2025-01-01T00:00:00Z"}}`
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  string
	}{
		{"no creation time", map[string]string{PodsFile: `{"items":[` + okPod + `,{"metadata":{"name":"b","namespace":"x"}}]}`},
			"pods.json: item 1 (x/b): no metadata.creationTimestamp"},
		{"bad event json", map[string]string{EventsFile: `{"items":[{"involvedObject":{"kind":"Pod"},"firstTimestamp":"2025-01-01T00:00:00Z"},{"count":"three"}]}`},
			"events.json: item 1 at byte 84: count: "},
		{"event without object", map[string]string{EventsFile: `{"items":[{"metadata":{"name":"e","namespace":"x"},"reason":"Pulled"}]}`},
			"events.json: item 0 (x/e): no involvedObject or regarding"},
		{"truncated", map[string]string{NodesFile: `{"items":[{"metadata":{"name":"n"}},{"metadata":`},
			"nodes.json: item 1: truncated JSON"},
		{"bad gpu quantity", map[string]string{NodesFile: `{"items":[{"metadata":{"name":"n"},"status":{"allocatable":{"nvidia.com/gpu":"1.5"}}}]}`},
			`nodes.json: item 0 (n): status.allocatable["nvidia.com/gpu"]`},
		{"not json", map[string]string{PodsFile: `pods: []`}, "pods.json: at byte"},
		{"log without timestamps", map[string]string{"logs/x_a_c.log": "2025-01-01T00:00:00Z ok\nINFO no timestamp\n"},
			`logs/x_a_c.log: line 2: want an RFC3339 timestamp first (kubectl logs --timestamps), got "INFO no timestamp"`},
		{"log name", map[string]string{"logs/a.log": ""}, "logs/a.log: want the name NAMESPACE_POD_CONTAINER.log"},
		{"empty dir", map[string]string{"README": ""}, "not a measure bundle"},
	} {
		_, err := ReadBundle(writeFiles(t, tc.files))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	if _, err := ReadBundle(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("no error for a missing directory")
	}
}

// TestWriteRoundTrip: a recorded bundle reads back to the same report.
func TestWriteRoundTrip(t *testing.T) {
	for name := range expected {
		b, err := ReadBundle(filepath.Join(fixtures, name))
		if err != nil {
			t.Fatal(err)
		}
		want, err := Analyze(b)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if err := b.Write(dir); err != nil {
			t.Fatal(err)
		}
		b2, err := ReadBundle(dir)
		if err != nil {
			t.Fatal(err)
		}
		b2.Missing = b.Missing // Write writes every file, empty or not
		got, err := Analyze(b2)
		if err != nil {
			t.Fatal(err)
		}
		var w, g bytes.Buffer
		Render(&w, want, JSON)
		Render(&g, got, JSON)
		if w.String() != g.String() {
			t.Errorf("%s: report after Write differs:\n%s\nwant\n%s", name, g.String(), w.String())
		}
	}
}

func TestParseLogLine(t *testing.T) {
	for _, tc := range []struct {
		in   string
		ok   bool
		text string
	}{
		{"2025-03-14T10:04:38.900381027Z INFO Loading weights took 17.85 seconds", true, "INFO Loading weights took 17.85 seconds"},
		{"2025-03-14T10:04:38+02:00 x\r", true, "x"},
		{"2025-03-14T10:04:38Z", true, ""},
		{"INFO 03-14 10:04:38 no timestamp", false, ""},
	} {
		l, ok := ParseLogLine(tc.in)
		if ok != tc.ok || l.Text != tc.text {
			t.Errorf("ParseLogLine(%q) = %q, %v", tc.in, l.Text, ok)
		}
	}
}

// writeEventsBundle writes a bundle with n events (kubelet and scheduler,
// core/v1 and events.k8s.io/v1 shapes, as kubectl prints them) about n/10
// pods.
func writeEventsBundle(tb testing.TB, dir string, n int) int64 {
	tb.Helper()
	f, err := os.Create(filepath.Join(dir, EventsFile))
	if err != nil {
		tb.Fatal(err)
	}
	w := bufio.NewWriter(f)
	w.WriteString("{\n    \"apiVersion\": \"v1\",\n    \"items\": [\n")
	base := time.Date(2025, 3, 14, 10, 0, 0, 0, time.UTC)
	reasons := []struct{ reason, msg string }{
		{"Pulling", `Pulling image \"vllm/vllm-openai:v0.8.5\"`},
		{"Pulled", `Successfully pulled image \"vllm/vllm-openai:v0.8.5\" in 1m12.5s (1m12.5s including waiting). Image size: 9876543210 bytes.`},
		{"Created", "Created container: vllm"},
		{"Started", "Started container vllm"},
		{"Unhealthy", `Readiness probe failed: Get \"http://10.244.3.5:8000/health\": dial tcp 10.244.3.5:8000: connect: connection refused`},
	}
	for i := 0; i < n; i++ {
		pod := fmt.Sprintf("vllm-llama-7c9d8b6f5-%05d", i/10)
		ts := base.Add(time.Duration(i) * time.Second).Format(time.RFC3339)
		if i > 0 {
			w.WriteString(",\n")
		}
		if i%10 == 0 {
			fmt.Fprintf(w, `        {
            "action": "Binding",
            "apiVersion": "events.k8s.io/v1",
            "eventTime": "%s",
            "kind": "Event",
            "metadata": {
                "creationTimestamp": "%s",
                "name": "%s.182c4a4572a1%04x",
                "namespace": "llm",
                "resourceVersion": "%d",
                "uid": "e1000001-0000-4000-8000-%012d"
            },
            "note": "Successfully assigned llm/%s to gpu-node-%d",
            "reason": "Scheduled",
            "regarding": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": "%s",
                "namespace": "llm",
                "resourceVersion": "%d",
                "uid": "3f6e2a9c-8b1d-4c7e-a5f0-%012d"
            },
            "reportingController": "default-scheduler",
            "reportingInstance": "default-scheduler-cp-1",
            "type": "Normal"
        }`, base.Add(time.Duration(i)*time.Second+250*time.Millisecond).Format("2006-01-02T15:04:05.000000Z"), ts, pod, i&0xffff, 100000+i, i, pod, i%7, pod, 90000+i, i/10)
			continue
		}
		r := reasons[i%len(reasons)]
		fmt.Fprintf(w, `        {
            "apiVersion": "v1",
            "count": 1,
            "eventTime": null,
            "firstTimestamp": "%s",
            "involvedObject": {
                "apiVersion": "v1",
                "fieldPath": "spec.containers{vllm}",
                "kind": "Pod",
                "name": "%s",
                "namespace": "llm",
                "resourceVersion": "%d",
                "uid": "3f6e2a9c-8b1d-4c7e-a5f0-%012d"
            },
            "kind": "Event",
            "lastTimestamp": "%s",
            "message": "%s",
            "metadata": {
                "creationTimestamp": "%s",
                "name": "%s.182c4a4631aa%04x",
                "namespace": "llm",
                "resourceVersion": "%d",
                "uid": "e1000001-0000-4000-8000-%012d"
            },
            "reason": "%s",
            "reportingComponent": "kubelet",
            "reportingInstance": "gpu-node-%d",
            "source": {
                "component": "kubelet",
                "host": "gpu-node-%d"
            },
            "type": "Normal"
        }`, ts, pod, 90000+i, i/10, ts, r.msg, ts, pod, i&0xffff, 100000+i, i, r.reason, i%7, i%7)
	}
	w.WriteString("\n    ],\n    \"kind\": \"List\",\n    \"metadata\": {\n        \"resourceVersion\": \"\"\n    }\n}\n")
	if err := w.Flush(); err != nil {
		tb.Fatal(err)
	}
	st, _ := f.Stat()
	f.Close()
	return st.Size()
}

func TestGeneratedEvents(t *testing.T) {
	dir := t.TempDir()
	writeEventsBundle(t, dir, 1000)
	b, err := ReadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Events) != 1000 {
		t.Fatalf("%d events", len(b.Events))
	}
	var check bytes.Buffer
	json.NewEncoder(&check).Encode(b.Events[10])
	if e := b.Events[10]; e.Reason != "Scheduled" || e.Time.Nanosecond() != 250e6 || e.Component != "default-scheduler" {
		t.Errorf("event 10 = %s", check.String())
	}
}

// BenchmarkReadBundle100kEvents reads a bundle whose events.json holds
// 100,000 events as kubectl prints them (about 100 MB); it must take well
// under a second.
func BenchmarkReadBundle100kEvents(b *testing.B) {
	dir := b.TempDir()
	size := writeEventsBundle(b, dir, 100_000)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		bd, err := ReadBundle(dir)
		if err != nil {
			b.Fatal(err)
		}
		if len(bd.Events) != 100_000 {
			b.Fatalf("%d events", len(bd.Events))
		}
	}
}
