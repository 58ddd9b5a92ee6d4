package measure

import (
	"math"
	"testing"
	"time"
)

func TestParsePulled(t *testing.T) {
	for _, tc := range []struct {
		msg  string
		want pulledMessage
	}{
		{`Successfully pulled image "vllm/vllm-openai:v0.8.5" in 1m8.5s (1m8.5s including waiting). Image size: 9876543210 bytes.`,
			pulledMessage{image: "vllm/vllm-openai:v0.8.5", pull: 68500 * time.Millisecond, inclusive: 68500 * time.Millisecond, bytes: 9876543210}},
		{`Successfully pulled image "r/i@sha256:abc" in 532ms (4.1s including waiting). Image size: 12 bytes.`,
			pulledMessage{image: "r/i@sha256:abc", pull: 532 * time.Millisecond, inclusive: 4100 * time.Millisecond, bytes: 12}},
		{`Successfully pulled image "r/i:v1" in 1h2m3.456789s (1h2m3.456789s including waiting)`, // 1.27-1.29: no size
			pulledMessage{image: "r/i:v1", pull: time.Hour + 2*time.Minute + 3456789*time.Microsecond, inclusive: time.Hour + 2*time.Minute + 3456789*time.Microsecond}},
		{`Successfully pulled image "r/i:v1" in 14.012345678s`, // before 1.27
			pulledMessage{image: "r/i:v1", pull: 14012345678, inclusive: 14012345678}},
		{`Container image "r/i:v1" already present on machine`, pulledMessage{image: "r/i:v1", cached: true}},
		{`Container image "r/i:v1" already present on machine and can be accessed by the pod`, pulledMessage{image: "r/i:v1", cached: true}},
	} {
		got, ok := parsePulled(tc.msg)
		if !ok || got != tc.want {
			t.Errorf("parsePulled(%q) = %+v, %v; want %+v", tc.msg, got, ok, tc.want)
		}
	}
	if _, ok := parsePulled(`Failed to pull image "r/i:v1": not found`); ok {
		t.Error("a failure parsed as a pull")
	}
	if img, ok := pullingImage(`Pulling image "r/i:v1"`); !ok || img != "r/i:v1" {
		t.Errorf("pullingImage = %q", img)
	}
}

func TestScaleUpTarget(t *testing.T) {
	for _, tc := range []struct{ reason, msg, trigger, target string }{
		{"TriggeredScaleUp", "pod triggered scale-up: [{gpu-pool 0->1 (max: 4)}]", "cluster-autoscaler", "gpu-pool 0->1 (max: 4)"},
		{"TriggeredScaleUp", "pod triggered scale-up: [{a 0->1 (max: 4)} {b 2->3 (max: 8)}]", "cluster-autoscaler", "a 0->1 (max: 4); b 2->3 (max: 8)"},
		{"Nominated", "Pod should schedule on: nodeclaim/default-x7k2p", "karpenter", "nodeclaim/default-x7k2p"},
		{"Nominated", "Pod should schedule on: nodeclaim/default-x7k2p, node/ip-10-0-1-2", "karpenter", "nodeclaim/default-x7k2p, node/ip-10-0-1-2"},
	} {
		trigger, target, ok := scaleUpTarget(tc.reason, tc.msg)
		if !ok || trigger != tc.trigger || target != tc.target {
			t.Errorf("scaleUpTarget(%q) = %q, %q", tc.msg, trigger, target)
		}
	}
	if _, _, ok := scaleUpTarget("NotTriggerScaleUp", "pod didn't trigger scale-up: 2 max node group size reached"); ok {
		t.Error("NotTriggerScaleUp parsed as a scale-up")
	}
	if n := assignedNode("Successfully assigned llm/p to gpu-node-1"); n != "gpu-node-1" {
		t.Errorf("assignedNode = %q", n)
	}
}

// TestVLLMLines: the lines of several vLLM generations, with their prefixes.
func TestVLLMLines(t *testing.T) {
	for _, tc := range []struct {
		line    string
		kind    string
		seconds float64
		gib     float64
	}{
		{"INFO 06-10 12:00:31 model_runner.py:160] Loading model weights took 14.9595 GB", markModelWeights, 0, 14.9595},
		{"INFO 03-14 13:09:21 loader.py:422] Loading weights took 93.10 seconds", markLoadingWeights, 93.1, 0},
		{"(VllmWorker rank=0 pid=412) INFO 03-14 13:09:21 [default_loader.py:262] Loading weights took 3.97 secs", markLoadingWeights, 3.97, 0},
		{"INFO 03-14 10:04:39 [gpu_model_runner.py:1347] Model loading took 14.9889 GiB and 18.512073 seconds", markModelLoading, 18.512073, 14.9889},
		{"(EngineCore_DP0 pid=280) INFO 03-14 11:03:34 [gpu_model_runner.py:2653] Model loading took 8.2 GiB memory and 10.6 seconds", markModelLoading, 10.6, 8.2},
		{"INFO 01-01 00:00:00 [gpu_model_runner.py:1] Model loading took 512 MiB and 1.5 s", markModelLoading, 1.5, 0.5},
		{"INFO 03-14 10:05:14 [monitor.py:33] torch.compile takes 29.63 s in total", markTorchCompile, 29.63, 0},
		{"INFO [backends.py:197] Directly load the compiled graph(s) for dynamic shape from the cache, took 4.021 s", markCompileCache, 4.021, 0},
		{"INFO [backends.py:161] Directly load the compiled graph for shape None from the cache, took 2.3 s", markCompileCache, 2.3, 0},
		{"INFO [backends.py:430] Dynamo bytecode transform time: 12.41 s", markDynamo, 12.41, 0},
		{"INFO 03-14 12:00:43 model_runner.py:1225] Graph capturing finished in 6 secs.", markGraphCapture, 6, 0},
		{"INFO [gpu_model_runner.py:1686] Graph capturing finished in 22 secs, took 0.53 GiB", markGraphCapture, 22, 0.53},
		{"INFO [core.py:159] init engine (profile, create kv cache, warmup model) took 58.84 seconds", markInitEngine, 58.84, 0},
		{"INFO worker.py:267] Memory profiling takes 8.12 seconds", markMemProfile, 8.12, 0},
		{"INFO [gpu_worker.py:298] Available KV cache memory: 50.12 GiB", markKVCache, 0, 50.12},
		{"INFO:     Application startup complete.", markStartup, 0, 0},
		{"(APIServer pid=1) INFO:     Application startup complete.", markStartup, 0, 0},
		{"modelcar-warm: warm-up done in 8.100s (16 requests)", markWarm, 8.1, 0},
		{"modelcar-warm: warm-up done in 3.000s (4 requests)", markWarm, 3, 0},
		{"modelcar-warm: warm-up done in 7.910s (9 requests)", markWarm, 7.91, 0}, // as warm.Probe writes it
	} {
		l := &Log{Lines: []LogLine{{Text: tc.line}}}
		marks := scanLog(l)
		if len(marks) != 1 {
			t.Errorf("%q: %d marks", tc.line, len(marks))
			continue
		}
		m := marks[0]
		if m.kind != tc.kind || m.seconds != tc.seconds || math.Abs(m.gib-tc.gib) > 1e-9 {
			t.Errorf("%q: %s %v s %v GiB, want %s %v s %v GiB", tc.line, m.kind, m.seconds, m.gib, tc.kind, tc.seconds, tc.gib)
		}
	}
	for _, line := range []string{
		"INFO 03-14 10:04:20 [gpu_model_runner.py:1329] Starting to load model /models...",
		"Loading safetensors checkpoint shards: 100% Completed | 4/4 [00:17<00:00,  4.46s/it]",
		`INFO:     10.244.3.1:53412 - "GET /health HTTP/1.1" 200 OK`,
	} {
		if marks := scanLog(&Log{Lines: []LogLine{{Text: line}}}); len(marks) != 0 {
			t.Errorf("%q matched %+v", line, marks)
		}
	}
}
