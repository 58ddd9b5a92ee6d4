package measure

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const fixtures = "../testdata/measure"

// want is a cold start's expected phases, in seconds.
type want struct {
	total, provision, pull, load, warmup, unattributed float64
}

// The expected phases of every recorded bundle, worked out by hand from the
// timestamps in the fixtures (see the comments).
var expected = map[string]map[string]want{
	// Pod 10:00:00; scale-up triggered 10:00:11; node created 10:01:30,
	// Ready 10:02:10, GPU allocatable 10:02:40; Scheduled 10:02:45.25;
	// Pulled 10:04:01 "in 1m12.5s"; started 10:04:02; "Model loading took"
	// 10:04:39.6; Ready 10:05:45.
	"scaleup-cluster-autoscaler": {
		"llm/vllm-llama-7c9d8b6f5-x2k4q": {total: 345, provision: 165.25, pull: 72.5, load: 37.6, warmup: 65.4, unattributed: 4.25},
	},
	// Pod 11:00:00; Nominated 11:00:04; node created 11:00:52, Ready
	// 11:01:20 (GPU allocatable unknown); Scheduled 11:01:31.734512;
	// Pulled 11:03:02 "in 1m27.321s"; warm sidecar image cached; started
	// 11:03:03; "Model loading took" 11:03:34.455; Ready 11:04:11.
	"scaleup-karpenter": {
		"llm/qwen-vllm-0": {total: 251, provision: 91.734, pull: 87.321, load: 31.455, warmup: 36.545, unattributed: 3.945},
	},
	// Existing node; Scheduled 12:00:00.843; image already present;
	// started 12:00:03; 0.5-style "Loading model weights took 13.5 GB"
	// 12:00:31.9; Ready 12:00:52.
	"cached-image": {
		"llm/mistral-vllm-5f7b9c6d8-hx4tw": {total: 52, provision: 0.843, pull: 0, load: 28.9, warmup: 20.1, unattributed: 2.157},
	},
	// Scheduled 13:00:00.512; model image (init container) pulled
	// 13:00:02.298-13:05:52 (5m49.702s), vllm image 13:05:55.111-13:07:36;
	// started 13:07:37; "Loading weights took" 13:09:21.4; Ready 13:10:10.
	"slow-pull": {
		"llm/llama70b-vllm-0": {total: 610, provision: 0.512, pull: 450.591, load: 104.4, warmup: 48.6, unattributed: 5.897},
	},
	// No logs, no nodes.json: Scheduled 14:00:01.25; Pulled 14:00:48
	// "(45.1s including waiting)"; Ready 14:02:30.
	"missing-logs": {
		"llm/gemma-vllm-6d5c8f7b9-q8w2e": {total: 150, provision: 1.25, pull: 45.1, load: 0, warmup: 0, unattributed: 103.65},
	},
	// Recorded live, not written by hand: `modelcar measure run --record`
	// on the test cluster's real node (make e2e-coldstart, 2026-12-08: a
	// 2 GiB model in one gzip layer over a 1 Gbit/s link, the image removed
	// and the page cache dropped first, served by the vLLM stand-in with the
	// warm-up probe). The phases are what the live run reported.
	"real-node": {
		"llm/llm-84b6f76cb5-nwn55": {total: 35, provision: 0.802, pull: 27.619, load: 1.987, warmup: 4.013, unattributed: 0.579},
	},
	// Three replicas at 15:00:00: one with the image cached, one pulling it,
	// one waiting for that pull ("in 1.012s (38.1s including waiting)").
	"multi-pod": {
		"llm/phi-vllm-6b8f9d7c5-aaaaa": {total: 47, provision: 0.101, pull: 0, load: 18.5, warmup: 26.5, unattributed: 1.899},
		"llm/phi-vllm-6b8f9d7c5-bbbbb": {total: 85, provision: 0.105, pull: 37.8, load: 17.8, warmup: 26.2, unattributed: 3.095},
		"llm/phi-vllm-6b8f9d7c5-ccccc": {total: 87, provision: 0.109, pull: 38.1, load: 18.2, warmup: 26.8, unattributed: 3.791},
	},
}

func analyzeFixture(t *testing.T, name string, opts ...Option) *Report {
	t.Helper()
	b, err := ReadBundle(filepath.Join(fixtures, name))
	if err != nil {
		t.Fatal(err)
	}
	r, err := Analyze(b, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestFixturePhases checks every bundle's phases to the second.
func TestFixturePhases(t *testing.T) {
	dirs, err := os.ReadDir(fixtures)
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range dirs {
		if _, ok := expected[d.Name()]; !ok && d.IsDir() {
			t.Errorf("fixture %s has no expected phases", d.Name())
		}
	}
	for name, pods := range expected {
		t.Run(name, func(t *testing.T) {
			r := analyzeFixture(t, name)
			if len(r.ColdStarts) != len(pods) {
				t.Fatalf("%d cold starts, want %d", len(r.ColdStarts), len(pods))
			}
			for _, c := range r.ColdStarts {
				w, ok := pods[c.Pod]
				if !ok {
					t.Errorf("unexpected pod %s", c.Pod)
					continue
				}
				got := want{c.TotalSeconds, c.Phases.Provision, c.Phases.Pull, c.Phases.Load, c.Phases.Warmup, c.UnattributedSeconds}
				check := func(what string, g, w float64) {
					if math.Abs(g-w) > 0.5 {
						t.Errorf("%s %s = %.3f s, want %.3f s", c.Pod, what, g, w)
					}
				}
				check("total", got.total, w.total)
				check("provision", got.provision, w.provision)
				check("pull", got.pull, w.pull)
				check("load", got.load, w.load)
				check("warmup", got.warmup, w.warmup)
				check("unattributed", got.unattributed, w.unattributed)
				if got != w {
					t.Logf("%s: got %+v (to the ms), hand-computed %+v", c.Pod, got, w)
				}
			}
		})
	}
}

// TestPhasesAddUp: on every fixture, phases + unattributed = total exactly
// (to the millisecond the report keeps), and the timeline covers [0, total]
// without gaps or overlaps, its segments summing to each phase.
func TestPhasesAddUp(t *testing.T) {
	for name := range expected {
		r := analyzeFixture(t, name)
		for _, c := range r.ColdStarts {
			msOf := func(f float64) int64 { return int64(math.Round(f * 1000)) }
			sum := msOf(c.Phases.Provision) + msOf(c.Phases.Pull) + msOf(c.Phases.Load) + msOf(c.Phases.Warmup) + msOf(c.UnattributedSeconds)
			if sum != msOf(c.TotalSeconds) {
				t.Errorf("%s %s: phases + unattributed = %d ms, total %d ms", name, c.Pod, sum, msOf(c.TotalSeconds))
			}
			if f := c.Phases.Provision + c.Phases.Pull + c.Phases.Load + c.Phases.Warmup + c.UnattributedSeconds; math.Abs(f-c.TotalSeconds) > 1e-9 {
				t.Errorf("%s %s: float sum %v != total %v", name, c.Pod, f, c.TotalSeconds)
			}
			bySeg := map[string]int64{}
			at := 0.0
			for _, s := range c.Timeline {
				if msOf(s.Start) != msOf(at) || s.End <= s.Start {
					t.Errorf("%s %s: segment %+v does not follow %.3f", name, c.Pod, s, at)
				}
				bySeg[s.Phase] += msOf(s.End) - msOf(s.Start)
				at = s.End
			}
			if msOf(at) != msOf(c.TotalSeconds) {
				t.Errorf("%s %s: timeline ends at %.3f, total %.3f", name, c.Pod, at, c.TotalSeconds)
			}
			for _, ph := range PhaseNames {
				if bySeg[ph] != msOf(c.Phases.Get(ph)) {
					t.Errorf("%s %s: %s segments %d ms, phase %.3f s", name, c.Pod, ph, bySeg[ph], c.Phases.Get(ph))
				}
			}
			if bySeg[Unattributed] != msOf(c.UnattributedSeconds) {
				t.Errorf("%s %s: unattributed segments %d ms, field %.3f s", name, c.Pod, bySeg[Unattributed], c.UnattributedSeconds)
			}
		}
	}
}

func TestScaleUpDetails(t *testing.T) {
	ca := analyzeFixture(t, "scaleup-cluster-autoscaler").ColdStarts[0]
	su := ca.Details.ScaleUp
	if su == nil || su.Trigger != "cluster-autoscaler" || su.Target != "gpu-a100-pool 0->1 (max: 4)" || su.TriggeredAt == nil || *su.TriggeredAt != 11 {
		t.Fatalf("cluster-autoscaler scale-up = %+v", su)
	}
	if su.NodeCreatedAt != 90 || su.NodeReadyAt == nil || *su.NodeReadyAt != 130 || su.GPUAllocatableAt == nil || *su.GPUAllocatableAt != 160 {
		t.Errorf("scale-up times = %+v", su)
	}
	assertSteps(t, ca.Details.Provision.Steps, map[string]float64{"waiting for scale-up": 90, "node boot": 40, "GPU allocatable": 30, "scheduling": 5.25})
	if ca.Dominant != Provision || !strings.Contains(ca.Lever, "modelcar warm pool") {
		t.Errorf("dominant %s, lever %q", ca.Dominant, ca.Lever)
	}
	if ca.Details.VLLMVersion != "0.8.5" || ca.Details.Container != "vllm" || ca.Node != "gpu-a100-pool-9f2kx" {
		t.Errorf("details = %+v", ca.Details)
	}
	if len(ca.Missing) != 0 {
		t.Errorf("missing = %q", ca.Missing)
	}

	k := analyzeFixture(t, "scaleup-karpenter").ColdStarts[0]
	su = k.Details.ScaleUp
	if su == nil || su.Trigger != "karpenter" || su.Target != "nodeclaim/gpu-l4-x7k2p" || su.GPUAllocatableAt != nil {
		t.Fatalf("karpenter scale-up = %+v", su)
	}
	assertSteps(t, k.Details.Provision.Steps, map[string]float64{"waiting for scale-up": 52, "node boot": 28, "scheduling": 11.734})
}

func assertSteps(t *testing.T, steps []Step, want map[string]float64) {
	t.Helper()
	got := map[string]float64{}
	for _, s := range steps {
		got[s.Name] = s.Seconds
	}
	for name, w := range want {
		if g, ok := got[name]; !ok || math.Abs(g-w) > 0.0005 {
			t.Errorf("step %q = %v (present %v), want %v; steps %+v", name, g, ok, w, steps)
		}
	}
}

// TestLogVariants: each vLLM generation's lines itemise load and warmup.
func TestLogVariants(t *testing.T) {
	for _, tc := range []struct {
		fixture, version string
		load, warmup     map[string]float64
	}{
		{"cached-image", "0.5.4", map[string]float64{markModelWeights: 0},
			map[string]float64{markGraphCapture: 6, markStartup: 12.4, "readiness lag": 7.7}},
		{"slow-pull", "0.7.3", map[string]float64{markLoadingWeights: 93.1},
			map[string]float64{markMemProfile: 8.12, markGraphCapture: 27, markInitEngine: 36.4, markStartup: 41.3, "readiness lag": 7.3}},
		{"scaleup-cluster-autoscaler", "0.8.5", map[string]float64{markLoadingWeights: 17.85, markModelLoading: 18.512073, "before weights (imports, engine setup)": 19.088},
			map[string]float64{markDynamo: 12.41, markTorchCompile: 29.63, markGraphCapture: 22, markInitEngine: 58.84, markStartup: 60.7, "readiness lag": 4.7}},
		{"scaleup-karpenter", "0.11.0", map[string]float64{markLoadingWeights: 12.43, markModelLoading: 13.190132},
			map[string]float64{markCompileCache: 4.021, markTorchCompile: 9.63, markGraphCapture: 11, markInitEngine: 23.85, markWarm: 8.1, "readiness lag": 9.5}},
	} {
		c := analyzeFixture(t, tc.fixture).ColdStarts[0]
		if c.Details.VLLMVersion != tc.version {
			t.Errorf("%s: version %q, want %q", tc.fixture, c.Details.VLLMVersion, tc.version)
		}
		assertSteps(t, c.Details.Load.Steps, tc.load)
		assertSteps(t, c.Details.Warmup.Steps, tc.warmup)
	}
}

func TestMissingData(t *testing.T) {
	r := analyzeFixture(t, "missing-logs")
	if !slices.Equal(r.Missing, []string{NodesFile, LogsDir + "/"}) {
		t.Errorf("report missing = %q", r.Missing)
	}
	c := r.ColdStarts[0]
	joined := strings.Join(c.Missing, "\n")
	for _, w := range []string{"no vLLM log", "load and warmup unattributed", "no nodes.json"} {
		if !strings.Contains(joined, w) {
			t.Errorf("missing %q lacks %q", joined, w)
		}
	}
	if c.Details.Load.Known || c.Details.Warmup.Known || !c.Details.Pull.Known {
		t.Errorf("known: load %v warmup %v pull %v", c.Details.Load.Known, c.Details.Warmup.Known, c.Details.Pull.Known)
	}
	if c.Dominant != Unattributed || !strings.Contains(c.Lever, "collect what is missing") {
		t.Errorf("dominant %s lever %q", c.Dominant, c.Lever)
	}
}

func TestMultiPodSummary(t *testing.T) {
	r := analyzeFixture(t, "multi-pod")
	s := r.Summary
	if s == nil || s.Pods != 3 {
		t.Fatalf("summary = %+v", s)
	}
	if s.Total.P50 != 85 || s.Total.P90 != 86.6 || s.Total.Max != 87 {
		t.Errorf("total stat = %+v", s.Total)
	}
	if s.Phases[Pull].P50 != 37.8 || s.Phases[Load].P50 != 18.2 {
		t.Errorf("phase stats = %+v", s.Phases)
	}
	if s.Dominant != Pull {
		t.Errorf("dominant %s", s.Dominant)
	}
	if r := analyzeFixture(t, "multi-pod", WithPods("phi-vllm-6b8f9d7c5-bbbbb")); len(r.ColdStarts) != 1 || r.Summary != nil {
		t.Errorf("WithPods: %d cold starts", len(r.ColdStarts))
	}
	if r := analyzeFixture(t, "cached-image"); r.Summary != nil {
		t.Errorf("summary for one pod")
	}
}

// sameSecondBundle copies the cached-image bundle and squeezes it into the
// second of the pod's creation, as a cluster with no delays records it
// (kwok: creationTimestamp, conditions, container start and core/v1 events
// to the second), with the Scheduled event's eventTime (to the microsecond)
// moved to scheduled. The logs go: they are after Ready.
func sameSecondBundle(t *testing.T, scheduled string) *Bundle {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "same-second")
	if err := os.CopyFS(dir, os.DirFS(filepath.Join(fixtures, "cached-image"))); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(filepath.Join(dir, "logs")); err != nil {
		t.Fatal(err)
	}
	const created = "2025-03-14T12:00:00Z"
	edit := func(name string, f func(doc map[string]any)) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		var doc map[string]any
		if err := json.Unmarshal(data, &doc); err != nil {
			t.Fatal(err)
		}
		f(doc)
		data, _ = json.Marshal(doc)
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	edit("pods.json", func(doc map[string]any) {
		st := doc["items"].([]any)[0].(map[string]any)["status"].(map[string]any)
		for _, c := range st["conditions"].([]any) {
			c.(map[string]any)["lastTransitionTime"] = created
		}
		for _, c := range st["containerStatuses"].([]any) {
			c.(map[string]any)["state"] = map[string]any{"running": map[string]any{"startedAt": created}}
		}
	})
	edit("events.json", func(doc map[string]any) {
		for _, e := range doc["items"].([]any) {
			e := e.(map[string]any)
			if e["reason"] == "Scheduled" {
				e["eventTime"] = scheduled
				continue
			}
			e["firstTimestamp"], e["lastTimestamp"] = created, created
		}
	})
	b, err := ReadBundle(dir)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestReportReadyToTheSecond: a pod Ready within the second of its creation
// (Ready condition 12:00:00, to the second) but scheduled at 12:00:00.843
// (eventTime, to the microsecond) is not "0.0 s from creation to Ready" with
// a 0.8 s scheduling step: the total ends at the scheduling, the last thing
// that must precede Ready, and the provision phase and its steps fit in it.
// A Scheduled event more than a second after Ready cannot be explained by
// rounding: the total stays, and the steps are clipped to the phase.
func TestReportReadyToTheSecond(t *testing.T) {
	for _, tc := range []struct {
		scheduled        string
		total, provision float64
		note             bool
	}{
		{"2025-03-14T12:00:00.843210Z", 0.843, 0.843, true},
		{"2025-03-14T12:00:01.500000Z", 0, 0, false},
	} {
		r, err := Analyze(sameSecondBundle(t, tc.scheduled))
		if err != nil {
			t.Fatal(err)
		}
		c := r.ColdStarts[0]
		if c.TotalSeconds != tc.total || c.Phases.Provision != tc.provision {
			t.Errorf("scheduled %s: total %.3f, provision %.3f; want %.3f, %.3f", tc.scheduled, c.TotalSeconds, c.Phases.Provision, tc.total, tc.provision)
		}
		sum := c.UnattributedSeconds
		for _, ph := range PhaseNames {
			sum += c.Phases.Get(ph)
		}
		if math.Abs(sum-c.TotalSeconds) > 1e-9 {
			t.Errorf("scheduled %s: phases + unattributed %.3f, total %.3f", tc.scheduled, sum, c.TotalSeconds)
		}
		var steps float64
		for _, st := range c.Details.Provision.Steps {
			steps += st.Seconds
			if st.Seconds > c.TotalSeconds || st.At > c.TotalSeconds {
				t.Errorf("scheduled %s: step %+v past the total %.3f", tc.scheduled, st, c.TotalSeconds)
			}
		}
		if math.Abs(steps-c.Phases.Provision) > 1e-9 {
			t.Errorf("scheduled %s: provision steps %.3f, phase %.3f", tc.scheduled, steps, c.Phases.Provision)
		}
		if n := strings.Join(c.Details.Notes, "\n"); strings.Contains(n, "kept to the second") != tc.note {
			t.Errorf("scheduled %s: notes %q", tc.scheduled, c.Details.Notes)
		}
		var buf bytes.Buffer
		Render(&buf, r, Text)
		want := fmt.Sprintf("%.1f s from creation to Ready", tc.total)
		if !strings.Contains(buf.String(), want) || !strings.Contains(buf.String(), fmt.Sprintf("  %-13s %8s", Provision, fsec(tc.provision))+" ") ||
			!strings.Contains(buf.String(), "scheduling "+fsec(tc.provision)+" s") {
			t.Errorf("scheduled %s: text lacks %q:\n%s", tc.scheduled, want, buf.String())
		}
	}
}

// TestReportPullLever: the lever for a dominant pull names the lazy format
// the benchmark found fastest and plan recommends (zstd:chunked with
// prefetch, not eStargz), and what it needs on the node.
func TestReportPullLever(t *testing.T) {
	c := analyzeFixture(t, "slow-pull").ColdStarts[0]
	if c.Dominant != Pull || !strings.Contains(c.Lever, "modelcar warm prepull") || !strings.Contains(c.Lever, "modelcar pack --format zstd-chunked --prefetch all") ||
		!strings.Contains(c.Lever, "stargz snapshotter") || strings.Contains(c.Lever, "estargz") {
		t.Errorf("dominant %s, lever %q", c.Dominant, c.Lever)
	}
	if s := analyzeFixture(t, "multi-pod").Summary; s.Dominant != Pull || s.Lever != c.Lever {
		t.Errorf("summary: dominant %s, lever %q", s.Dominant, s.Lever)
	}
}

// TestStartRefinedByFirstLogLine: the API keeps a container's startedAt in
// whole seconds, so on the real node's recording (stand-in vLLM, which logs
// within milliseconds of its start) load counted from the second's
// beginning was 0.4 s longer than the load the server logged. A first log
// line inside startedAt's second bounds the start; one a second or more
// later, or a startedAt with a fraction, leaves startedAt as it is.
func TestStartRefinedByFirstLogLine(t *testing.T) {
	const logged = 1.597994 // "Model loading took 1.9997 GiB and 1.597994 seconds"
	for _, tc := range []struct {
		startedAt string
		load      float64
		refined   bool
	}{
		{"2026-12-08T02:20:32Z", 1.599, true},      // first line at :32.387
		{"2026-12-08T02:20:31Z", 2.987, false},     // first line 1.4 s later: startedAt stands
		{"2026-12-08T02:20:32.100Z", 1.887, false}, // not whole seconds: nothing to refine
	} {
		dir := filepath.Join(t.TempDir(), "real-node")
		if err := os.CopyFS(dir, os.DirFS(filepath.Join(fixtures, "real-node"))); err != nil {
			t.Fatal(err)
		}
		pods := filepath.Join(dir, "pods.json")
		data, err := os.ReadFile(pods)
		if err != nil {
			t.Fatal(err)
		}
		data = bytes.Replace(data, []byte(`"startedAt": "2026-12-08T02:20:32Z"`), []byte(`"startedAt": "`+tc.startedAt+`"`), 1)
		if err := os.WriteFile(pods, data, 0o644); err != nil {
			t.Fatal(err)
		}
		b, err := ReadBundle(dir)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Analyze(b)
		if err != nil {
			t.Fatal(err)
		}
		c := r.ColdStarts[0]
		if math.Abs(c.Phases.Load-tc.load) > 0.0015 {
			t.Errorf("startedAt %s: load %.3f s, want %.3f", tc.startedAt, c.Phases.Load, tc.load)
		}
		if got := strings.Contains(c.Details.Load.From, "refined by"); got != tc.refined {
			t.Errorf("startedAt %s: load from %q, refined %v, want %v", tc.startedAt, c.Details.Load.From, got, tc.refined)
		}
		if tc.refined && math.Abs(c.Phases.Load-logged)/logged > 0.10 {
			t.Errorf("startedAt %s: load %.3f s is not within 10%% of the %.3f s the server logged", tc.startedAt, c.Phases.Load, logged)
		}
	}
}
