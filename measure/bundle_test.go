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

	"github.com/modelcar/modelcar/internal/limits"
)

func TestReadBundleEvents(t *testing.T) {
	b, err := ReadBundle(filepath.Join(fixtures, "multi-pod"))
	if err != nil {
		t.Fatal(err)
	}
	// 21 items: each pod's Scheduled event appears through both APIs with
	// the same uid and is kept once; the 4 about the Deployment and the
	// ReplicaSet are not kept (nothing measured reads them).
	if len(b.Events) != 14 {
		t.Errorf("%d events, want 14 (duplicates by uid and events about other objects dropped)", len(b.Events))
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
		{"item over the limit", map[string]string{EventsFile: `{"items":[{"message":"` + strings.Repeat("a", limits.MaxBundleItemBytes) + `"}]}`},
			"events.json: item 0 at byte 10: the item is over the 8 MiB limit"},
		{"bare object over the limit", map[string]string{PodsFile: `{"a":"` + strings.Repeat("a", limits.MaxBundleItemBytes/2) + `","b":"` + strings.Repeat("b", limits.MaxBundleItemBytes/2) + `","c":1}`},
			"pods.json: at byte 8388623: the item is over the 8 MiB limit"},
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

// TestReadBundleKeepsWhatIsMeasured: ReadBundle keeps the selected pods,
// the events about them, the nodes they ran on and their logs, and drops
// the rest as it reads (events about other pods and objects, other nodes,
// other pods' logs), still checking every item and line.
func TestReadBundleKeepsWhatIsMeasured(t *testing.T) {
	b, err := ReadBundle(filepath.Join(fixtures, "multi-pod"), WithPods("llm/phi-vllm-6b8f9d7c5-bbbbb"))
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Pods) != 1 || b.Pods[0].Name != "phi-vllm-6b8f9d7c5-bbbbb" || len(b.Logs) != 1 || b.Logs[0].Pod != "phi-vllm-6b8f9d7c5-bbbbb" {
		t.Errorf("pods %+v, logs of %d pods", b.Pods, len(b.Logs))
	}
	if len(b.Events) != 5 { // Scheduled (both APIs, one uid), Pulling, Pulled, Created, Started
		t.Errorf("%d events, want bbbbb's 5", len(b.Events))
	}
	for _, e := range b.Events {
		if e.Object.Name != "phi-vllm-6b8f9d7c5-bbbbb" {
			t.Errorf("kept an event about %s %s", e.Object.Kind, e.Object.Name)
		}
	}
	if len(b.Nodes) != 1 || b.Nodes[0].Name != b.Pods[0].NodeName {
		t.Errorf("nodes %+v, want only %s", b.Nodes, b.Pods[0].NodeName)
	}
	if _, err := ReadBundle(filepath.Join(fixtures, "multi-pod"), WithPods("a/b/c")); err == nil {
		t.Error("WithPods(a/b/c): no error")
	}
	// A bundle without pods.json measures nothing: it keeps no events.
	dir := t.TempDir()
	writeEventsBundle(t, dir, 100)
	if b, err := ReadBundle(dir); err != nil || len(b.Events) != 0 {
		t.Errorf("events.json alone: %v, %d events kept", err, len(b.Events))
	}
}

// TestReadBundleEventsPerPod: events about one pod past
// limits.MaxEventsPerPod are counted, not kept, and the report notes them.
func TestReadBundleEventsPerPod(t *testing.T) {
	var events strings.Builder
	events.WriteString(`{"kind": "List", "items": [`)
	for i := range limits.MaxEventsPerPod + 5 {
		if i > 0 {
			events.WriteString(",")
		}
		fmt.Fprintf(&events, `{"metadata": {"uid": "u%d"}, "reason": "Unhealthy", "message": "Readiness probe failed", "firstTimestamp": "2025-01-01T00:00:%02dZ",
			"involvedObject": {"kind": "Pod", "namespace": "x", "name": "a"}}`, i, i%60)
	}
	events.WriteString("]}")
	dir := writeFiles(t, map[string]string{
		PodsFile:   `{"items":[{"metadata":{"name":"a","namespace":"x","creationTimestamp":"2025-01-01T00:00:00Z"}}]}`,
		EventsFile: events.String(),
	})
	b, err := ReadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Events) != limits.MaxEventsPerPod || b.IgnoredEvents["x/a"] != 5 {
		t.Errorf("%d events kept, ignored %v", len(b.Events), b.IgnoredEvents)
	}
	r, err := Analyze(b)
	if err != nil {
		t.Fatal(err)
	}
	if notes := strings.Join(r.ColdStarts[0].Details.Notes, "\n"); !strings.Contains(notes, "events.json holds 5 more events about this pod than the 10000 read") {
		t.Errorf("notes: %s", notes)
	}
}

// TestReadBundleLogLimits: of a measured pod's log, ReadBundle keeps the
// first limits.MaxLogLines lines or limits.MaxLogBytes, whichever comes
// first, reads no further, and the report notes it.
func TestReadBundleLogLimits(t *testing.T) {
	for _, tc := range []struct {
		name, text  string
		lines, want int // written, kept
	}{
		{"lines", "INFO ok", limits.MaxLogLines + 10, limits.MaxLogLines},
		{"bytes", strings.Repeat("x", 60<<10), limits.MaxLogBytes/(60<<10) + 10, limits.MaxLogBytes / (60 << 10)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{
				PodsFile: `{"items":[{"metadata":{"name":"a","namespace":"x","creationTimestamp":"2025-01-01T00:00:00Z"}}]}`,
			})
			os.MkdirAll(filepath.Join(dir, LogsDir), 0o755)
			f, err := os.Create(filepath.Join(dir, LogsDir, "x_a_c.log"))
			if err != nil {
				t.Fatal(err)
			}
			w := bufio.NewWriter(f)
			for range tc.lines {
				fmt.Fprintf(w, "2025-01-01T00:00:01Z %s\n", tc.text)
			}
			w.WriteString("no timestamp: past the limits, never read\n")
			if err := w.Flush(); err != nil {
				t.Fatal(err)
			}
			f.Close()
			b, err := ReadBundle(dir)
			if err != nil {
				t.Fatal(err)
			}
			if len(b.Logs) != 1 || len(b.Logs[0].Lines) != tc.want || !b.Logs[0].Cut {
				t.Fatalf("logs: %d, lines %d, cut %v; want %d lines, cut", len(b.Logs), len(b.Logs[0].Lines), b.Logs[0].Cut, tc.want)
			}
			r, err := Analyze(b)
			if err != nil {
				t.Fatal(err)
			}
			if notes := strings.Join(r.ColdStarts[0].Details.Notes, "\n"); !strings.Contains(notes, fmt.Sprintf("logs/x_a_c.log: only its first %d lines were read", tc.want)) {
				t.Errorf("notes: %s", notes)
			}
		})
	}
}

// TestParseLogLongLine: of a line over limits.MaxLogLineBytes, the text up
// to the limit is kept and the next line is read as usual.
func TestParseLogLongLine(t *testing.T) {
	long := "2025-01-01T00:00:00Z INFO config " + strings.Repeat("x", 4*limits.MaxLogLineBytes)
	lines, err := ParseLog(strings.NewReader(long + "\n2025-01-01T00:00:01Z Loading weights took 1.00 seconds\n"))
	if err != nil || len(lines) != 2 {
		t.Fatalf("%d lines, %v", len(lines), err)
	}
	if n := len(lines[0].Text); n != limits.MaxLogLineBytes-len("2025-01-01T00:00:00Z ") {
		t.Errorf("long line kept %d bytes of text, want up to the %d-byte limit", n, limits.MaxLogLineBytes)
	}
	if lines[1].Text != "Loading weights took 1.00 seconds" || lines[1].Time.Second() != 1 {
		t.Errorf("line after the long one = %+v", lines[1])
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
	events := decodeEventsFile(t, dir)
	if len(events) != 1000 {
		t.Fatalf("%d events", len(events))
	}
	var check bytes.Buffer
	json.NewEncoder(&check).Encode(events[10])
	if e := events[10]; e.Reason != "Scheduled" || e.Time.Nanosecond() != 250e6 || e.Component != "default-scheduler" {
		t.Errorf("event 10 = %s", check.String())
	}
}

// decodeEventsFile decodes dir's events.json, keeping every event (a bundle
// with no pods.json keeps none).
func decodeEventsFile(tb testing.TB, dir string) []Event {
	tb.Helper()
	f, err := os.Open(filepath.Join(dir, EventsFile))
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	events, err := DecodeEvents(f)
	if err != nil {
		tb.Fatal(err)
	}
	return events
}

// BenchmarkReadBundle100kEvents decodes an events.json that holds 100,000
// events as kubectl prints them (about 100 MB), keeping all; it must take
// well under a second.
func BenchmarkReadBundle100kEvents(b *testing.B) {
	dir := b.TempDir()
	size := writeEventsBundle(b, dir, 100_000)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		if events := decodeEventsFile(b, dir); len(events) != 100_000 {
			b.Fatalf("%d events", len(events))
		}
	}
}
