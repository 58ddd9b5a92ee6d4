package warm_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/fakevllm"
	"github.com/modelcar/modelcar/internal/probelog"
	"github.com/modelcar/modelcar/warm"
)

// syncBuffer is a log sink written by several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// small is a quick workload: 1 + 2 + 3 requests.
var small = []warm.Request{{PromptTokens: 8, MaxTokens: 4, Concurrency: 1}, {PromptTokens: 64, MaxTokens: 8, Concurrency: 2}, {PromptTokens: 256, MaxTokens: 8, Concurrency: 3}}

func config(f *fakevllm.Server, log io.Writer) warm.ProbeConfig {
	return warm.ProbeConfig{URL: f.URL, Workload: small, Interval: 5 * time.Millisecond, Timeout: time.Minute,
		RequestTimeout: 30 * time.Second, RecheckInterval: 5 * time.Millisecond, Log: log}
}

func TestProbeRun(t *testing.T) {
	f := fakevllm.Start(t, fakevllm.Options{Model: "org/llama", LoadDelay: 20 * time.Millisecond,
		FirstRequestDelay: 20 * time.Millisecond, SteadyDelay: time.Millisecond})
	var log syncBuffer
	cfg := config(f, &log)
	res, err := warm.Run(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	if res.Model != "org/llama" || len(res.Requests) != 6 || res.Total < res.Warmup || res.ModelLoadedAt.Before(res.StartedAt) {
		t.Errorf("result %+v", res)
	}
	t.Logf("log:\n%s", log.String())
	reqs := f.Requests()
	if len(reqs) != 6 {
		t.Fatalf("fake saw %d requests, want 6", len(reqs))
	}
	words := map[int]int{}
	for _, r := range reqs {
		words[r.PromptWords]++
		if r.Path != "/v1/completions" || r.Model != "org/llama" || !r.IgnoreEOS || r.Auth != "" {
			t.Errorf("request %+v", r)
		}
	}
	if !reflect.DeepEqual(words, map[int]int{8: 1, 64: 2, 256: 3}) {
		t.Errorf("prompt lengths %v", words)
	}
	// The log parses back into the result.
	var kinds []probelog.Kind
	steps := map[warm.Request]int{}
	for _, line := range strings.Split(strings.TrimSpace(log.String()), "\n") {
		if !strings.HasPrefix(line, probelog.Prefix) {
			t.Errorf("log line without prefix: %q", line)
		}
		ev, ok := probelog.Parse("2025-01-02T03:04:05.678Z " + line)
		if !ok {
			continue
		}
		kinds = append(kinds, ev.Kind)
		switch ev.Kind {
		case probelog.Model:
			if ev.Model != "org/llama" {
				t.Errorf("model event %+v", ev)
			}
		case probelog.Request:
			steps[warm.Request{PromptTokens: ev.PromptTokens, MaxTokens: ev.MaxTokens, Concurrency: ev.Concurrency}]++
			if ev.API != string(warm.Completions) {
				t.Errorf("request event %+v", ev)
			}
		case probelog.Done:
			if ev.Requests != 6 {
				t.Errorf("done event %+v", ev)
			}
		}
	}
	want := []probelog.Kind{probelog.Healthy, probelog.Model, probelog.Request, probelog.Request, probelog.Request,
		probelog.Request, probelog.Request, probelog.Request, probelog.Done, probelog.Ready}
	if !reflect.DeepEqual(kinds, want) {
		t.Errorf("events %v, want %v\n%s", kinds, want, log.String())
	}
	for _, r := range small {
		if steps[r] != r.Concurrency {
			t.Errorf("step %s logged %d times", r, steps[r])
		}
	}
	// JSON round trip, durations in seconds.
	b, err := json.Marshal(res)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"warmup_seconds":`) || !strings.Contains(string(b), `"latency_seconds":`) {
		t.Errorf("JSON %s", b)
	}
	var back warm.Result
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if back.Model != res.Model || len(back.Requests) != 6 || (back.Total-res.Total).Abs() > time.Microsecond {
		t.Errorf("round trip %+v", back)
	}
}

func TestProbeModelFromListAndChat(t *testing.T) {
	f := fakevllm.Start(t, fakevllm.Options{Model: "served-name"})
	cfg := config(f, nil)
	cfg.API = warm.Both
	res, err := warm.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Model != "served-name" {
		t.Errorf("model %q", res.Model)
	}
	if f.Hits("/v1/completions") != 3 || f.Hits("/v1/chat/completions") != 3 {
		t.Errorf("completions %d, chat %d; want 3 and 3", f.Hits("/v1/completions"), f.Hits("/v1/chat/completions"))
	}
}

func TestProbeClampsToMaxModelLen(t *testing.T) {
	f := fakevllm.Start(t, fakevllm.Options{MaxModelLen: 1024})
	var log syncBuffer
	cfg := config(f, &log)
	cfg.Workload = []warm.Request{{PromptTokens: 2048, MaxTokens: 64, Concurrency: 1}}
	if _, err := warm.Run(context.Background(), cfg); err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	if r := f.Requests()[0]; r.PromptWords+r.MaxTokens > 1024 {
		t.Errorf("prompt of %d words not clamped", r.PromptWords)
	}
	if !strings.Contains(log.String(), "clamped to") {
		t.Errorf("clamping not logged:\n%s", log.String())
	}
}

func TestProbeModelMismatch(t *testing.T) {
	f := fakevllm.Start(t, fakevllm.Options{Model: "mistral"})
	cfg := config(f, nil)
	cfg.Model = "llama"
	_, err := warm.Run(context.Background(), cfg)
	if !errors.Is(err, warm.ErrModelMismatch) || !strings.Contains(err.Error(), `expected "llama"`) || !strings.Contains(err.Error(), `"mistral"`) {
		t.Fatalf("err = %v", err)
	}
	if n := len(f.Requests()); n != 0 {
		t.Errorf("%d warm-up requests sent to the wrong model", n)
	}
}

func TestProbeNeverHealthy(t *testing.T) {
	f := fakevllm.Start(t, fakevllm.Options{NeverHealthy: true})
	var log syncBuffer
	cfg := config(f, &log)
	cfg.Timeout = 200 * time.Millisecond
	_, err := warm.Run(context.Background(), cfg)
	if !errors.Is(err, warm.ErrNotHealthy) || !strings.Contains(err.Error(), "within 200ms") || !strings.Contains(err.Error(), "503 Service Unavailable") {
		t.Fatalf("err = %v", err)
	}
	t.Logf("log:\n%s", log.String())
	if !strings.Contains(log.String(), "modelcar-warm: failed after ") || !strings.Contains(log.String(), "/health answered 503") {
		t.Errorf("log:\n%s", log.String())
	}
	if ev, ok := probelog.Parse(lastLine(log.String())); !ok || ev.Kind != probelog.Failed || !strings.Contains(ev.Error, "503") {
		t.Errorf("last line %q parses to %+v", lastLine(log.String()), ev)
	}

	// Nothing listening: the error says so.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfg.URL = "http://" + addr
	_, err = warm.Run(context.Background(), cfg)
	if !errors.Is(err, warm.ErrNotHealthy) || !strings.Contains(err.Error(), "connection refused") {
		t.Fatalf("err = %v", err)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

func TestProbeCanceled(t *testing.T) {
	f := fakevllm.Start(t, fakevllm.Options{Loading: true})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := warm.Run(ctx, config(f, nil))
	if !errors.Is(err, context.Canceled) || errors.Is(err, warm.ErrNotHealthy) {
		t.Fatalf("err = %v", err)
	}
}

func TestProbeRequestTimeout(t *testing.T) {
	f := fakevllm.Start(t, fakevllm.Options{Hang: true})
	cfg := config(f, nil)
	cfg.RequestTimeout = 50 * time.Millisecond
	_, err := warm.Run(context.Background(), cfg)
	if !errors.Is(err, warm.ErrRequestTimeout) || !strings.Contains(err.Error(), "step 1 (8x4@1)") || !strings.Contains(err.Error(), "request timeout 50ms") {
		t.Fatalf("err = %v", err)
	}

	// The start-up deadline, not the request timeout, ends the workload.
	cfg.RequestTimeout, cfg.Timeout = time.Minute, 300*time.Millisecond
	_, err = warm.Run(context.Background(), cfg)
	if !errors.Is(err, warm.ErrTimeout) || errors.Is(err, warm.ErrRequestTimeout) {
		t.Fatalf("err = %v", err)
	}
}

func TestProbeServerError(t *testing.T) {
	f := fakevllm.Start(t, fakevllm.Options{FailStatus: http.StatusInternalServerError})
	cfg := config(f, nil)
	cfg.Workload = []warm.Request{{PromptTokens: 16, MaxTokens: 16, Concurrency: 4}}
	_, err := warm.Run(context.Background(), cfg)
	if !errors.Is(err, warm.ErrRequestFailed) || !strings.Contains(err.Error(), "500 Internal Server Error") || !strings.Contains(err.Error(), "EngineCore died") {
		t.Fatalf("err = %v", err)
	}
}

func TestProbeAPIKey(t *testing.T) {
	const key = "sk-warm-secret-4242"
	f := fakevllm.Start(t, fakevllm.Options{RequireKey: key})
	var log syncBuffer
	cfg := config(f, &log)
	cfg.APIKey = key
	res, err := warm.Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range f.Requests() {
		if r.Auth != "Bearer "+key {
			t.Errorf("request %d sent Authorization %q", r.Seq, r.Auth)
		}
	}
	b, _ := json.Marshal(res)
	// Without the key: a clear 401, no retrying until the deadline.
	cfg.APIKey = ""
	_, err = warm.Run(context.Background(), cfg)
	if !errors.Is(err, warm.ErrRequestFailed) || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "API key") {
		t.Errorf("err = %v", err)
	}
	// A wrong key is rejected; neither key shows up anywhere.
	cfg.APIKey = key + "-wrong"
	_, err2 := warm.Run(context.Background(), cfg)
	if err2 == nil {
		t.Fatal("wrong key accepted")
	}
	for _, s := range []string{log.String(), string(b), err.Error(), err2.Error()} {
		if strings.Contains(s, key) {
			t.Errorf("API key leaked: %s", s)
		}
	}
}

func TestParseWorkload(t *testing.T) {
	w, err := warm.ParseWorkload(warm.DefaultWorkloadSpec)
	if err != nil || !reflect.DeepEqual(w, warm.DefaultWorkload()) || warm.FormatWorkload(w) != warm.DefaultWorkloadSpec {
		t.Errorf("default: %v, %v", w, err)
	}
	if w, err := warm.ParseWorkload("128x32, 64x8@16"); err != nil || !reflect.DeepEqual(w, []warm.Request{{128, 32, 1}, {64, 8, 16}}) {
		t.Errorf("spaces and default concurrency: %v, %v", w, err)
	}
	for _, bad := range []string{"", "16", "16x", "x16", "16x16@", "16x16@0", "0x16", "16x0", "16x16@2000", "16*16", "16x16@1,"} {
		if _, err := warm.ParseWorkload(bad); err == nil {
			t.Errorf("ParseWorkload(%q) accepted", bad)
		}
	}
}

// serve starts Serve on 127.0.0.1:0 and returns its base URL.
func serve(t *testing.T, cfg warm.ProbeConfig) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- warm.ServeListener(ctx, ln, cfg) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeListener: %v", err)
		}
	})
	return "http://" + ln.Addr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// eventually polls cond, as a kubelet polls a readiness probe.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after 30s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestProbeServeReadyAfterWorkload: /ready is 503 while vLLM loads and
// while any warm-up request is unanswered, and 200 only after the fake
// received (and answered) every request of the workload.
func TestProbeServeReadyAfterWorkload(t *testing.T) {
	gate := make(chan struct{})
	f := fakevllm.Start(t, fakevllm.Options{Loading: true, Gate: gate})
	var log syncBuffer
	cfg := config(f, &log)
	cfg.RecheckInterval = -1
	base := serve(t, cfg)

	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz %d", code)
	}
	eventually(t, "probe polling /health", func() bool { return f.Hits("/health") >= 2 })
	if code, body := get(t, base+"/ready"); code != 503 || !strings.HasPrefix(body, "warming") {
		t.Errorf("/ready while loading: %d %q", code, body)
	}
	if code, body := get(t, base+"/timings"); code != 503 || !strings.Contains(body, `"warming"`) {
		t.Errorf("/timings while loading: %d %q", code, body)
	}
	f.Ready()
	const total = 6
	for i := range total {
		f.WaitRequests(i + 1)
		if code, body := get(t, base+"/ready"); code != 503 {
			t.Fatalf("/ready answered %d %q with %d of %d requests received", code, body, i+1, total)
		}
		gate <- struct{}{}
	}
	eventually(t, "/ready 200", func() bool { code, _ := get(t, base+"/ready"); return code == 200 })
	if n := len(f.Requests()); n != total {
		t.Errorf("ready with %d requests received, want %d", n, total)
	}
	code, body := get(t, base+"/timings")
	var res warm.Result
	if err := json.Unmarshal([]byte(body), &res); code != 200 || err != nil || len(res.Requests) != total || res.Model != "fake/model" {
		t.Errorf("/timings: %d %v %s", code, err, body)
	}
	if !strings.Contains(log.String(), "modelcar-warm: listening on "+strings.TrimPrefix(base, "http://")) {
		t.Errorf("bound address not logged:\n%s", log.String())
	}
	if code, _ := get(t, base+"/nope"); code != 404 {
		t.Errorf("/nope: %d", code)
	}
}

// TestProbeServeRewarmsAfterRestart: when vLLM restarts after the pod was
// ready, /ready turns 503 and the workload runs again.
func TestProbeServeRewarmsAfterRestart(t *testing.T) {
	f := fakevllm.Start(t, fakevllm.Options{})
	var log syncBuffer
	base := serve(t, config(f, &log))
	eventually(t, "/ready 200", func() bool { code, _ := get(t, base+"/ready"); return code == 200 })
	f.Restart()
	eventually(t, "/ready 503 after a restart", func() bool { code, _ := get(t, base+"/ready"); return code == 503 })
	f.Ready()
	eventually(t, "/ready 200 again", func() bool { code, _ := get(t, base+"/ready"); return code == 200 })
	if n := len(f.Requests()); n != 12 {
		t.Errorf("%d requests, want the workload twice (12)", n)
	}
	if !strings.Contains(log.String(), "warming up again") {
		t.Errorf("log:\n%s", log.String())
	}
}

func TestProbeServeFailureStays503(t *testing.T) {
	f := fakevllm.Start(t, fakevllm.Options{Model: "b"})
	var log syncBuffer
	cfg := config(f, &log)
	cfg.Model = "a"
	base := serve(t, cfg)
	eventually(t, "failure reported", func() bool { _, body := get(t, base+"/ready"); return strings.HasPrefix(body, "failed") })
	code, body := get(t, base+"/ready")
	if code != 503 || !strings.Contains(body, `expected "a"`) {
		t.Errorf("/ready after failure: %d %q", code, body)
	}
	if code, body := get(t, base+"/timings"); code != 503 || !strings.Contains(body, "served model mismatch") {
		t.Errorf("/timings after failure: %d %q", code, body)
	}
	if code, _ := get(t, base+"/healthz"); code != 200 {
		t.Errorf("/healthz after failure: %d", code)
	}
	if !strings.Contains(log.String(), "modelcar-warm: failed after") {
		t.Errorf("failure not logged:\n%s", log.String())
	}
}

// TestProbeServeRetriesAfterFailure: a warm-up that times out (vLLM still
// loading) leaves /ready at 503 with the error, and the sidecar warms up
// again once vLLM is healthy: no pod restart needed.
func TestProbeServeRetriesAfterFailure(t *testing.T) {
	defer warm.SetRetryBackoff(10 * time.Millisecond)()
	f := fakevllm.Start(t, fakevllm.Options{Loading: true})
	base := serve(t, warm.ProbeConfig{URL: f.URL, Timeout: 100 * time.Millisecond, Interval: 5 * time.Millisecond,
		Workload: []warm.Request{{PromptTokens: 4, MaxTokens: 2, Concurrency: 1}}, Log: io.Discard})
	eventually(t, "the first warm-up fails", func() bool {
		code, body := get(t, base+"/ready")
		return code == http.StatusServiceUnavailable && strings.Contains(body, "health")
	})
	f.Ready()
	eventually(t, "ready after a retried warm-up", func() bool {
		code, _ := get(t, base+"/ready")
		return code == http.StatusOK
	})
}
