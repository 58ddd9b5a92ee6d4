package standin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/standin"
	"github.com/modelcar/modelcar/internal/testmodel"
	"github.com/modelcar/modelcar/measure"
)

// kubeletLog stamps each line written to it with an RFC3339 time, as the
// container runtime does for `kubectl logs --timestamps`.
type kubeletLog struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	partial []byte
}

func (k *kubeletLog) Write(p []byte) (int, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.partial = append(k.partial, p...)
	for {
		i := bytes.IndexByte(k.partial, '\n')
		if i < 0 {
			return len(p), nil
		}
		fmt.Fprintf(&k.buf, "%s %s\n", time.Now().UTC().Format(time.RFC3339Nano), k.partial[:i])
		k.partial = k.partial[i+1:]
	}
}

func (k *kubeletLog) String() string {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.buf.String()
}

// env is a fixed environment for Options.Getenv.
func env(kv map[string]string) func(string) string {
	return func(k string) string { return kv[k] }
}

// started is a stand-in running in the test.
type started struct {
	base string // http://127.0.0.1:PORT
	log  *kubeletLog
	stop context.CancelFunc
	done chan error
	once sync.Once
	err  error // what Run returned
}

// start runs the stand-in on dir with the chart's arguments plus extra;
// listening, when set, runs while the stand-in waits before loading.
func start(t *testing.T, dir string, getenv func(string) string, listening func(base string), extra ...string) *started {
	t.Helper()
	ctx, stop := context.WithCancel(context.Background())
	s := &started{log: &kubeletLog{}, stop: stop, done: make(chan error, 1)}
	addr := make(chan string, 1)
	args := append([]string{"--model", dir, "--served-model-name", "org/m", "--port", "0", "--host", "127.0.0.1",
		"--tensor-parallel-size", "1", "--load-format", "auto"}, extra...)
	go func() {
		s.done <- standin.Run(ctx, standin.Options{Args: args, Getenv: getenv, Log: s.log, Version: "v0.0.0-test",
			Listening: func(a net.Addr) {
				base := "http://" + a.String()
				addr <- base
				if listening != nil {
					listening(base)
				}
			}})
	}()
	t.Cleanup(func() { s.shutdown() })
	select {
	case s.base = <-addr:
	case err := <-s.done:
		s.done <- err
		t.Fatalf("Run: %v\n%s", err, s.log)
	case <-time.After(30 * time.Second):
		t.Fatal("the stand-in did not listen within 30s")
	}
	return s
}

// shutdown stops the stand-in and returns what Run returned.
func (s *started) shutdown() error {
	s.once.Do(func() {
		s.stop()
		s.err = <-s.done
	})
	return s.err
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// status is a response's status code, -1 for an error.
func status(resp *http.Response, err error) int {
	if err != nil {
		return -1
	}
	resp.Body.Close()
	return resp.StatusCode
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatalf("POST %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// poll checks cond every few milliseconds until it holds, failing the test
// after 30 seconds.
func poll(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("no %s after 30s", what)
		}
		<-tick.C
	}
}

func genModel(t *testing.T, size int64, shards int) (string, int64) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "model")
	m, err := testmodel.Generate(dir, testmodel.Options{Seed: 3, TotalSize: size, Shards: shards})
	if err != nil {
		t.Fatal(err)
	}
	var weights int64
	for _, s := range m.Shards {
		st, err := os.Stat(filepath.Join(dir, s))
		if err != nil {
			t.Fatal(err)
		}
		weights += st.Size()
	}
	return dir, weights
}

// TestStartUpAndServe runs a start-up on a generated model: /health is 503
// while loading and 200 after; the log states a positive load time and
// the weights' size; measure attributes load and warm-up from that very
// log; /v1/models, completions and /metrics answer as vLLM's; SIGTERM
// (ctx) ends it cleanly. A second start with the same compile cache loads
// the compiled graphs instead of compiling.
func TestStartUpAndServe(t *testing.T) {
	dir, weights := genModel(t, 24<<20, 3)
	getenv := env(map[string]string{"STANDIN_COMPILE_SECONDS": "0.2", "STANDIN_GRAPH_SECONDS": "0.05",
		"STANDIN_SLOW_REQUESTS": "1", "STANDIN_FIRST_REQUEST_SECONDS": "0.05", "STANDIN_REQUEST_SECONDS": "0",
		"VLLM_CACHE_ROOT": t.TempDir()})
	created := time.Now().UTC()
	sawLoading := false
	extra := []string{"--max-model-len", "2048", "--gpu-memory-utilization", "0.85", "--enable-prefix-caching", "--max-num-seqs", "8"}
	s := start(t, dir, getenv, func(base string) {
		// Run's goroutine: no t.Fatal here.
		for _, path := range []string{"/health", "/v1/models"} {
			if code := status(http.Get(base + path)); code != http.StatusServiceUnavailable {
				t.Errorf("%s while loading: %d, want 503", path, code)
			}
		}
		if code := status(http.Post(base+"/v1/completions", "application/json", strings.NewReader(`{"model":"org/m","prompt":"a","max_tokens":1}`))); code != http.StatusServiceUnavailable {
			t.Errorf("completion while loading: %d, want 503", code)
		}
		sawLoading = true
	}, extra...)
	poll(t, "/health 200", func() bool { code, _ := get(t, s.base+"/health"); return code == http.StatusOK })
	ready := time.Now().UTC()
	if !sawLoading {
		t.Fatal("Listening was not called")
	}

	code, body := get(t, s.base+"/v1/models")
	var models struct {
		Data []struct {
			ID          string `json:"id"`
			MaxModelLen int    `json:"max_model_len"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &models); code != 200 || err != nil || len(models.Data) != 1 ||
		models.Data[0].ID != "org/m" || models.Data[0].MaxModelLen != 2048 {
		t.Errorf("/v1/models: %d %v %s", code, err, body)
	}
	if code, body := post(t, s.base+"/v1/completions", `{"model":"org/m","prompt":"one two three","max_tokens":2}`); code != 200 ||
		!strings.Contains(body, `"text":"tok tok"`) || !strings.Contains(body, `"total_tokens":5`) {
		t.Errorf("completion: %d %s", code, body)
	}
	if code, body := post(t, s.base+"/v1/chat/completions", `{"model":"org/m","messages":[{"role":"user","content":"hi"}],"max_tokens":1}`); code != 200 ||
		!strings.Contains(body, `"object":"chat.completion"`) {
		t.Errorf("chat completion: %d %s", code, body)
	}
	if code, body := post(t, s.base+"/v1/completions", `{"model":"other","prompt":"x","max_tokens":1}`); code != 404 || !strings.Contains(body, "does not exist") {
		t.Errorf("another model: %d %s", code, body)
	}
	if code, body := post(t, s.base+"/v1/completions", `{"model":"org/m","prompt":"x","max_tokens":2048}`); code != 400 || !strings.Contains(body, "maximum context length is 2048") {
		t.Errorf("too long: %d %s", code, body)
	}
	if code, body := get(t, s.base+"/metrics"); code != 200 || !strings.Contains(body, `vllm:num_requests_waiting{engine="0",model_name="org/m"} 0.0`) ||
		!strings.Contains(body, `vllm:num_requests_running{engine="0",model_name="org/m"} 0.0`) {
		t.Errorf("/metrics: %d %s", code, body)
	}
	if code, body := get(t, s.base+"/version"); code != 200 || !strings.Contains(body, standin.VLLMVersion+"+standin") {
		t.Errorf("/version: %d %s", code, body)
	}
	if err := s.shutdown(); err != nil {
		t.Fatalf("Run after a stop: %v", err)
	}
	out := s.log.String()
	for _, want := range []string{"vllm-standin ignores --enable-prefix-caching", "'max_model_len': 2048", "Application shutdown complete.",
		`"GET /health HTTP/1.1" 503 Service Unavailable`, `"GET /health HTTP/1.1" 200 OK`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
	if _, err := net.Dial("tcp", strings.TrimPrefix(s.base, "http://")); err == nil {
		t.Error("still listening after the stop")
	}

	// The log's own numbers.
	load := logged(t, out, `Loading weights took ([0-9.]+) seconds`)
	gib := logged(t, out, `Model loading took ([0-9.]+) GiB`)
	if load <= 0 {
		t.Errorf("Loading weights took %v seconds", load)
	}
	if want := float64(weights) / (1 << 30); math.Abs(gib-want) > 0.00005+1e-9 {
		t.Errorf("Model loading took %v GiB, the shards are %d bytes = %.6f GiB", gib, weights, want)
	}

	// measure reads it as a vLLM log of a pod that started it.
	rep := analyze(t, out, created, ready)
	cs := rep.ColdStarts[0]
	t.Logf("report: phases %+v\nload %+v\nwarmup %+v\nmissing %v", cs.Phases, cs.Details.Load.Steps, cs.Details.Warmup.Steps, cs.Missing)
	steps := func(d measure.PhaseDetail) map[string]measure.Step {
		m := map[string]measure.Step{}
		for _, s := range d.Steps {
			m[s.Name] = s
		}
		return m
	}
	ls, ws := steps(cs.Details.Load), steps(cs.Details.Warmup)
	if st, ok := ls["loading weights"]; !ok || st.Seconds != load {
		t.Errorf("measure's loading weights: %+v, the log says %v s", st, load)
	}
	if st, ok := ls["model loading"]; !ok || math.Abs(st.GiB-gib) > 0.0005 { // reports keep 3 decimals
		t.Errorf("measure's model loading: %+v, the log says %v GiB", st, gib)
	}
	for name, at := range map[string]float64{"dynamo transform": 0.06, "torch.compile": 0.2, "graph capture": 0.05, "init engine": 0.25} {
		if st, ok := ws[name]; !ok || st.Seconds < at-0.011 || st.Seconds > at+5 {
			t.Errorf("measure's %s: %+v, want about %v s", name, st, at)
		}
	}
	if _, ok := ws["api server up"]; !ok {
		t.Errorf("no 'Application startup complete' step in %+v", ws)
	}
	if cs.Phases.Load <= 0 || cs.Phases.Warmup <= 0 || !cs.Details.Load.Known {
		t.Errorf("phases %+v", cs.Phases)
	}
	if rep.ColdStarts[0].Details.VLLMVersion != standin.VLLMVersion+"+standin" {
		t.Errorf("version %q", rep.ColdStarts[0].Details.VLLMVersion)
	}
	if strings.Contains(out, "from the cache") {
		t.Error("the first start loaded compiled graphs from the cache")
	}

	// Again, with the compile cache the first start left.
	s = start(t, dir, getenv, nil, extra...)
	poll(t, "/health 200 again", func() bool { code, _ := get(t, s.base+"/health"); return code == http.StatusOK })
	if err := s.shutdown(); err != nil {
		t.Fatal(err)
	}
	out = s.log.String()
	if hit := logged(t, out, `Directly load the compiled graph\(s\) for dynamic shape from the cache, took ([0-9.]+) s`); hit < 0.02-0.001 || hit > 5 {
		t.Errorf("cache load %v s, want about 0.02", hit)
	}
	if tc := logged(t, out, `torch.compile takes ([0-9.]+) s in total`); tc >= 0.2 {
		t.Errorf("torch.compile %v s on a cache hit, want under the cold 0.2 s", tc)
	}
	rep = analyze(t, out, created, time.Now().UTC())
	if st := steps(rep.ColdStarts[0].Details.Warmup); st["compile cache"].Seconds <= 0 {
		t.Errorf("measure saw no compile cache hit: %+v", st)
	}
}

// logged returns the number the first match of pattern captures in out.
func logged(t *testing.T, out, pattern string) float64 {
	t.Helper()
	m := regexp.MustCompile(pattern).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no %q in the log:\n%s", pattern, out)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// analyze runs measure on a one-pod bundle whose vllm container started at
// created and was Ready at ready, with log as its log.
func analyze(t *testing.T, log string, created, ready time.Time) *measure.Report {
	t.Helper()
	lines, err := measure.ParseLog(strings.NewReader(log))
	if err != nil {
		t.Fatalf("measure.ParseLog: %v", err)
	}
	ready = ready.Add(time.Second).Truncate(time.Second) // conditions are to the second
	pod := measure.Pod{Namespace: "llm", Name: "vllm-0", UID: "u", Created: created.Add(-time.Second), NodeName: "real-0",
		Containers: []measure.Container{{Name: "vllm", Image: "registry/vllm-standin:test"}},
		Conditions: []measure.Condition{{Type: "PodScheduled", Status: "True", LastTransition: created.Add(-time.Second)},
			{Type: "Ready", Status: "True", LastTransition: ready}},
		Statuses: []measure.ContainerStatus{{Name: "vllm", Image: "registry/vllm-standin:test", Ready: true, StartedAt: created}}}
	rep, err := measure.Analyze(&measure.Bundle{Pods: []measure.Pod{pod},
		Logs: []measure.Log{{Namespace: "llm", Pod: "vllm-0", Container: "vllm", File: "logs/llm_vllm-0_vllm.log", Lines: lines}}})
	if err != nil {
		t.Fatalf("measure.Analyze: %v", err)
	}
	return rep
}

// TestBrokenWeights: a start-up on a model whose weights are broken fails
// with an error that names the file, as vLLM's does, and never serves.
func TestBrokenWeights(t *testing.T) {
	for _, tc := range []struct {
		name    string
		corrupt func(dir string) error
		want    []string
	}{
		{"truncated shard", func(dir string) error {
			p := filepath.Join(dir, "model-00002-of-00002.safetensors")
			st, err := os.Stat(p)
			if err != nil {
				return err
			}
			return os.Truncate(p, st.Size()-100)
		}, []string{"model-00002-of-00002.safetensors", "truncated"}},
		{"header length past the end", func(dir string) error {
			f, err := os.OpenFile(filepath.Join(dir, "model-00001-of-00002.safetensors"), os.O_WRONLY, 0)
			if err != nil {
				return err
			}
			defer f.Close()
			_, err = f.WriteAt([]byte{0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0}, 0)
			return err
		}, []string{"model-00001-of-00002.safetensors", "header length 2147483647 exceeds limit"}},
		{"shard the index names is missing", func(dir string) error {
			return os.Remove(filepath.Join(dir, "model-00002-of-00002.safetensors"))
		}, []string{"model.safetensors.index.json names model-00002-of-00002.safetensors, which is not in"}},
		{"no config.json", func(dir string) error {
			return os.Remove(filepath.Join(dir, "config.json"))
		}, []string{"config.json"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir, _ := genModel(t, 1<<20, 2)
			if err := tc.corrupt(dir); err != nil {
				t.Fatal(err)
			}
			var log kubeletLog
			err := standin.Run(context.Background(), standin.Options{Args: []string{"--model", dir, "--port", "0", "--host", "127.0.0.1"},
				Getenv: env(nil), Log: &log, Listening: func(net.Addr) {}})
			if err == nil {
				t.Fatalf("Run on a broken model succeeded:\n%s", log.String())
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
			if strings.Contains(log.String(), "Application startup complete") {
				t.Errorf("started up:\n%s", log.String())
			}
		})
	}
}

// TestStopWhileLoading: a stop (SIGTERM) during the load ends Run without
// an error.
func TestStopWhileLoading(t *testing.T) {
	dir, _ := genModel(t, 1<<20, 1)
	ctx, stop := context.WithCancel(context.Background())
	var log kubeletLog
	err := standin.Run(ctx, standin.Options{Args: []string{dir, "--port", "0", "--host", "127.0.0.1"}, Getenv: env(nil), Log: &log,
		Listening: func(net.Addr) { stop() }})
	if err != nil {
		t.Fatalf("Run stopped while loading: %v", err)
	}
	if out := log.String(); strings.Contains(out, "Application startup complete") || !strings.Contains(out, "Application shutdown complete") {
		t.Errorf("log:\n%s", out)
	}
}

func TestPortInUse(t *testing.T) {
	dir, _ := genModel(t, 1<<20, 1)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	err = standin.Run(context.Background(), standin.Options{Args: []string{dir, "--port", port, "--host", "127.0.0.1"}, Getenv: env(nil), Log: io.Discard})
	if err == nil || !strings.Contains(err.Error(), "address already in use") {
		t.Errorf("Run on a busy port: %v", err)
	}
}

func TestBadSettings(t *testing.T) {
	for k, v := range map[string]string{"STANDIN_COMPILE_SECONDS": "soon", "STANDIN_GRAPH_SECONDS": "-1", "STANDIN_SLOW_REQUESTS": "1.5"} {
		_, err := standin.SettingsFromEnv(env(map[string]string{k: v}))
		if err == nil || !strings.Contains(err.Error(), k) {
			t.Errorf("%s=%s: %v", k, v, err)
		}
	}
	s, err := standin.SettingsFromEnv(env(map[string]string{"STANDIN_COMPILE_SECONDS": "30", "STANDIN_GRAPH_SECONDS": "0"}))
	if err != nil || s.Compile != 30*time.Second || s.Graph != 0 || s.SlowRequests != 2 {
		t.Errorf("%+v %v", s, err)
	}
	if err := standin.Run(context.Background(), standin.Options{Args: []string{"--model", "/nonexistent"},
		Getenv: env(map[string]string{"STANDIN_GRAPH_SECONDS": "x"}), Log: io.Discard}); err == nil || !strings.Contains(err.Error(), "STANDIN_GRAPH_SECONDS") {
		t.Errorf("Run with a bad setting: %v", err)
	}
	if err := standin.Run(context.Background(), standin.Options{Args: []string{"--model", "/nonexistent"}, Getenv: env(nil), Log: io.Discard}); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("Run on no model: %v", err)
	}
}
