package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcar/modelcar/measure"
)

// TestHostileMeasureNegativeSeconds: a report whose seconds are negative
// (a total, a phase, unattributed time) is refused by measure compare and
// by plan, naming the file and the field: compare exits 2 (a file that
// cannot be compared, not a regression), plan 1 (as for any report it
// cannot read). compare said "no regression" and plan printed "-8500.0 s".
// Each crafted report counts in the hostile suite of make test-faults.
func TestHostileMeasureNegativeSeconds(t *testing.T) {
	good, err := os.ReadFile(filepath.Join(planFixtures, "slow-pull.json"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	base := filepath.Join(dir, "base.json")
	if err := os.WriteFile(base, good, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, field, json string }{
		{"total", "cold_starts[0].total_seconds", `"total_seconds": -8500`},
		{"phase", "cold_starts[0].phases.pull", `"pull": -8500`},
		{"unattributed", "cold_starts[0].unattributed_seconds", `"unattributed_seconds": -1`},
	} {
		bad := negate(t, string(good), tc.name)
		path := filepath.Join(dir, tc.name+".json")
		if err := os.WriteFile(path, []byte(bad), 0o644); err != nil {
			t.Fatal(err)
		}
		want := path + ": " + tc.field + " is negative"
		for _, op := range []struct {
			name string
			res  result
			code int
		}{
			{"compare", runInProcess(t, "", "measure", "compare", base, path), 2},
			{"plan", runPlanCmd(t, "--from", path), 1},
		} {
			if op.res.code != op.code || !strings.Contains(op.res.stderr, want) {
				t.Errorf("%s of %s: exit %d, stderr %q; want exit %d and %q", op.name, tc.name, op.res.code, op.res.stderr, op.code, want)
				continue
			}
			if strings.Contains(op.res.stdout, "-8500") {
				t.Errorf("%s of %s printed the negative seconds: %s", op.name, tc.name, op.res.stdout)
			}
			t.Logf("FAULT name=hostile/measure-negative-%s/%s outcome=failed-clearly bytes_lost=0", tc.name, op.name)
		}
	}
}

// negate makes one field of the first cold start of a rendered report
// negative: which is "total", "phase" (pull) or "unattributed".
func negate(t *testing.T, report, which string) string {
	t.Helper()
	keys := map[string]string{"total": `"total_seconds": `, "phase": `"pull": `, "unattributed": `"unattributed_seconds": `}
	key := keys[which]
	i := strings.Index(report, key)
	if i < 0 {
		t.Fatalf("no %s in the fixture", key)
	}
	j := i + len(key)
	k := j + strings.IndexAny(report[j:], ",\n}")
	return report[:j] + "-8500" + report[k:]
}

// measureRSSBound is the peak resident memory allowed to measure --from a
// bundle whose events.json holds 512 MiB of events about other pods and
// nodes (the namespace's events, recorded beside the few pods measured).
// Before the bundle was decoded for the pods measured only, it peaked at
// 821 MiB.
const measureRSSBound = 128 << 20

// TestHostileMeasureLargeBundle: measure --from a bundle with 512 MiB of
// events.json (written streaming, about 750,000 events about other pods and
// the nodes, around slow-pull's own) stays under measureRSSBound, and
// reports exactly what it reports for slow-pull alone; so it does with a
// 512 MiB log of the measured pod besides.
func TestHostileMeasureLargeBundle(t *testing.T) {
	if testing.Short() {
		t.Skip("writes and reads a 512 MiB bundle")
	}
	const fixture = measureFixtures + "/slow-pull"
	dir := t.TempDir()
	for _, name := range []string{"pods.json", "nodes.json", "logs/llm_llama70b-vllm-0_vllm.log"} {
		data, err := os.ReadFile(filepath.Join(fixture, name))
		if err != nil {
			t.Fatal(err)
		}
		os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o755)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	var own struct{ Items []json.RawMessage }
	data, err := os.ReadFile(filepath.Join(fixture, "events.json"))
	if err != nil || json.Unmarshal(data, &own) != nil || len(own.Items) == 0 {
		t.Fatalf("slow-pull events: %v", err)
	}
	f, err := os.Create(filepath.Join(dir, "events.json"))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriterSize(f, 1<<20)
	w.WriteString(`{"apiVersion": "v1", "kind": "List", "items": [`)
	const size = 512 << 20
	next := 0 // slow-pull's events, spread through the noise
	for i, written := 0, 0; written < size; i++ {
		if i > 0 {
			w.WriteString(",\n")
		}
		if i%100_000 == 0 && next < len(own.Items) {
			w.Write(own.Items[next])
			w.WriteString(",\n")
			next++
		}
		kind, name, fieldPath := "Pod", fmt.Sprintf("other-vllm-%07d", i/8), `"fieldPath": "spec.containers{vllm}", `
		if i%8 == 7 {
			kind, name, fieldPath = "Node", fmt.Sprintf("gpu-h100-%d", i%64), ""
		}
		n, _ := fmt.Fprintf(w, `{"apiVersion": "v1", "kind": "Event", "count": 1, "eventTime": null,
 "firstTimestamp": "2025-03-14T13:%02d:%02dZ", "lastTimestamp": "2025-03-14T13:%02d:%02dZ",
 "involvedObject": {"apiVersion": "v1", %s"kind": "%s", "name": "%s", "namespace": "llm", "uid": "0a000000-0000-4000-8000-%012d"},
 "message": "Successfully pulled image \"registry.example.com/models/llama-3.1-70b-instruct:v1\" in 3.2s (3.2s including waiting). Image size: 140000000000 bytes.",
 "metadata": {"name": "%s.%016x", "namespace": "llm", "uid": "e9000000-0000-4000-8000-%012d", "resourceVersion": "%d"},
 "reason": "Pulled", "reportingComponent": "kubelet", "reportingInstance": "gpu-h100-%d", "source": {"component": "kubelet", "host": "gpu-h100-%d"}, "type": "Normal"}`,
			i/60%60, i%60, i/60%60, i%60, fieldPath, kind, name, i/8, name, i, i, 1000+i, i%64, i%64)
		written += n
	}
	for _, item := range own.Items[next:] {
		w.WriteString(",\n")
		w.Write(item)
	}
	w.WriteString("]}\n")
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f.Close()

	want := runInProcess(t, "", "measure", "--from", fixture, "--format", "json")
	r, peak := runPeak(t, "measure", "--from", dir, "--format", "json")
	t.Logf("measure of the 512 MiB bundle: peak RSS %d MiB (bound %d MiB)", peak>>20, measureRSSBound>>20)
	if r.code != 0 || want.code != 0 || r.stdout != want.stdout {
		t.Errorf("measure of the large bundle: exit %d, stderr %s\n%s\nwant (slow-pull alone)\n%s", r.code, r.stderr, r.stdout, want.stdout)
	}
	if peak > measureRSSBound {
		t.Fatalf("peak RSS %d MiB, over %d MiB", peak>>20, measureRSSBound>>20)
	}
	t.Logf("FAULT name=hostile/measure-512MiB-events outcome=survived bytes_lost=0 peak_rss=%d", peak)

	// The same bundle with 512 MiB of health checks after Ready in the
	// serving container's log: read up to the log limits, the same phases,
	// and a note.
	lf, err := os.OpenFile(filepath.Join(dir, "logs/llm_llama70b-vllm-0_vllm.log"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	w = bufio.NewWriterSize(lf, 1<<20)
	for written := 0; written < size; {
		n, _ := w.WriteString("2025-03-14T13:10:11.404412273Z INFO:     10.1.4.1:52318 - \"GET /health HTTP/1.1\" 200 OK\n")
		written += n
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	lf.Close()
	r, peak = runPeak(t, "measure", "--from", dir, "--format", "json")
	t.Logf("measure of the bundle with a 512 MiB log too: peak RSS %d MiB (bound %d MiB)", peak>>20, measureRSSBound>>20)
	var got, base measure.Report
	if r.code != 0 || json.Unmarshal([]byte(r.stdout), &got) != nil || json.Unmarshal([]byte(want.stdout), &base) != nil ||
		got.ColdStarts[0].Phases != base.ColdStarts[0].Phases || got.ColdStarts[0].TotalSeconds != base.ColdStarts[0].TotalSeconds ||
		!strings.Contains(r.stdout, "only its first 100000 lines were read") {
		t.Errorf("measure with a 512 MiB log: exit %d, stderr %s\n%s", r.code, r.stderr, r.stdout)
	}
	if peak > measureRSSBound {
		t.Fatalf("peak RSS %d MiB, over %d MiB", peak>>20, measureRSSBound>>20)
	}
	t.Logf("FAULT name=hostile/measure-512MiB-log outcome=survived bytes_lost=0 peak_rss=%d", peak)
}
