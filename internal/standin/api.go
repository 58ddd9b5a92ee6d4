package standin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"
)

// APIConfig shapes the HTTP API. Zero fields leave a behaviour off.
type APIConfig struct {
	// Model is the served model name: /v1/models lists it and completions
	// naming another model answer 404.
	Model string
	// MaxModelLen, when set, is reported in /v1/models, and a completion
	// whose prompt words plus max_tokens exceed it answers 400.
	MaxModelLen int
	// Version, when set, is answered by /version.
	Version string
	// APIKey, when set, makes /v1/* answer 401 unless the request says
	// "Authorization: Bearer KEY" (vLLM's --api-key and VLLM_API_KEY).
	APIKey string
	// MaxNumSeqs is how many completions run at once (vLLM's
	// --max-num-seqs); the others wait and are counted in
	// vllm:num_requests_waiting. 0 runs every request at once.
	MaxNumSeqs int
	// SlowRequests is how many completions after each (re)start take
	// FirstRequestDelay, as vLLM's first batches do while kernels compile;
	// the others take SteadyDelay.
	SlowRequests      int
	FirstRequestDelay time.Duration
	SteadyDelay       time.Duration
	// OnCompletion, when set, sees every completion request once its body
	// is parsed, before it is checked or delayed. It may block (and should
	// return when ctx ends). A *StatusError answers with its status; any
	// other error ends the request without an answer.
	OnCompletion func(ctx context.Context, r Request) error
}

// A Request is a completion request as the API received it.
type Request struct {
	Seq         int    // 0, 1, ... in arrival order
	Path        string // /v1/completions or /v1/chat/completions
	Model       string
	PromptWords int // words in the prompt (or in the messages' contents)
	MaxTokens   int
	IgnoreEOS   bool
	Auth        string // the Authorization header as sent
}

// A StatusError makes a completion answer Status with a vLLM-shaped error
// body holding Message.
type StatusError struct {
	Status  int
	Message string
}

func (e *StatusError) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Message) }

// API is vLLM's OpenAI-compatible HTTP surface as it behaves during and
// after start-up. It starts loading: /health answers 503 until Ready.
type API struct {
	cfg   APIConfig
	slots chan struct{} // nil: no limit

	mu               sync.Mutex
	loading          bool
	served           int // completions admitted since the last (re)start
	seq              int
	waiting, running int
}

// NewAPI returns an API that is loading.
func NewAPI(cfg APIConfig) *API {
	a := &API{cfg: cfg, loading: true}
	if cfg.MaxNumSeqs > 0 {
		a.slots = make(chan struct{}, cfg.MaxNumSeqs)
	}
	return a
}

// Ready ends loading: /health answers 200 from now on.
func (a *API) Ready() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.loading = false
}

// Restart goes back to loading, as when vLLM's container restarts: /health
// answers 503 until Ready, and the next completions are slow again.
func (a *API) Restart() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.loading, a.served = true, 0
}

// Loading reports whether the API is loading.
func (a *API) Loading() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.loading
}

// ServeHTTP answers /health, /version, /metrics, /v1/models,
// /v1/completions and /v1/chat/completions.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/v1/") && a.cfg.APIKey != "" && r.Header.Get("Authorization") != "Bearer "+a.cfg.APIKey {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "Unauthorized"})
		return
	}
	loading := a.Loading()
	switch r.URL.Path {
	case "/health":
		if loading {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	case "/version":
		if a.cfg.Version == "" {
			notFound(w)
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"version": a.cfg.Version})
	case "/metrics":
		a.metrics(w)
	case "/v1/models":
		if loading {
			// vLLM does not route before start-up completes; this is what a
			// proxy in front of it would say.
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		m := map[string]any{"id": a.cfg.Model, "object": "model", "created": time.Now().Unix(), "owned_by": "vllm",
			"root": a.cfg.Model, "parent": nil}
		if a.cfg.MaxModelLen > 0 {
			m["max_model_len"] = a.cfg.MaxModelLen
		}
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{m}})
	case "/v1/completions", "/v1/chat/completions":
		if r.Method != http.MethodPost {
			vllmError(w, http.StatusMethodNotAllowed, "BadRequestError", "method not allowed")
			return
		}
		a.complete(w, r)
	default:
		notFound(w)
	}
}

// metrics writes the request gauges in Prometheus' text format.
func (a *API) metrics(w http.ResponseWriter) {
	a.mu.Lock()
	running, waiting := a.running, a.waiting
	a.mu.Unlock()
	labels := fmt.Sprintf(`{engine="0",model_name="%s"}`, promEscape(a.cfg.Model))
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	fmt.Fprintf(w, "# HELP vllm:num_requests_running Number of requests in model execution batches.\n"+
		"# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running%s %d.0\n"+
		"# HELP vllm:num_requests_waiting Number of requests waiting to be processed.\n"+
		"# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting%s %d.0\n",
		labels, running, labels, waiting)
}

func promEscape(s string) string {
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

type completionBody struct {
	Model     string `json:"model"`
	Prompt    string `json:"prompt"`
	MaxTokens int    `json:"max_tokens"`
	IgnoreEOS bool   `json:"ignore_eos"`
	Messages  []struct {
		Role    string `json:"role"`
		Content string `json:"content"`
	} `json:"messages"`
}

func (a *API) complete(w http.ResponseWriter, r *http.Request) {
	var body completionBody
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		vllmError(w, http.StatusBadRequest, "BadRequestError", "invalid JSON: "+err.Error())
		return
	}
	words := len(strings.Fields(body.Prompt))
	for _, m := range body.Messages {
		words += len(strings.Fields(m.Content))
	}
	a.mu.Lock()
	req := Request{Seq: a.seq, Path: r.URL.Path, Model: body.Model, PromptWords: words,
		MaxTokens: body.MaxTokens, IgnoreEOS: body.IgnoreEOS, Auth: r.Header.Get("Authorization")}
	a.seq++
	a.mu.Unlock()

	ctx := r.Context()
	if a.cfg.OnCompletion != nil {
		if err := a.cfg.OnCompletion(ctx, req); err != nil {
			if se := (*StatusError)(nil); errors.As(err, &se) {
				vllmError(w, se.Status, "InternalServerError", se.Message)
			}
			return
		}
	}
	switch {
	case a.Loading():
		vllmError(w, http.StatusServiceUnavailable, "ServiceUnavailableError", "model is loading")
		return
	case body.Model != a.cfg.Model:
		vllmError(w, http.StatusNotFound, "NotFoundError", fmt.Sprintf("The model `%s` does not exist.", body.Model))
		return
	case a.cfg.MaxModelLen > 0 && words+body.MaxTokens > a.cfg.MaxModelLen:
		vllmError(w, http.StatusBadRequest, "BadRequestError", fmt.Sprintf(
			"This model's maximum context length is %d tokens. However, you requested %d tokens.", a.cfg.MaxModelLen, words+body.MaxTokens))
		return
	}
	if !a.run(ctx) {
		return
	}

	text := strings.TrimSpace(strings.Repeat(" tok", body.MaxTokens))
	usage := map[string]int{"prompt_tokens": words, "completion_tokens": body.MaxTokens, "total_tokens": words + body.MaxTokens}
	created := time.Now().Unix()
	if r.URL.Path == "/v1/chat/completions" {
		writeJSON(w, http.StatusOK, map[string]any{"id": fmt.Sprintf("chatcmpl-%d", req.Seq), "object": "chat.completion",
			"created": created, "model": a.cfg.Model, "usage": usage, "choices": []any{map[string]any{
				"index": 0, "message": map[string]string{"role": "assistant", "content": text}, "finish_reason": "length"}}})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": fmt.Sprintf("cmpl-%d", req.Seq), "object": "text_completion",
		"created": created, "model": a.cfg.Model, "usage": usage, "choices": []any{map[string]any{
			"index": 0, "text": text, "logprobs": nil, "finish_reason": "length", "stop_reason": nil}}})
}

// run waits for a slot (counted as waiting), then takes the request's
// delay (counted as running). It is false when ctx ended first.
func (a *API) run(ctx context.Context) bool {
	if a.slots != nil {
		a.count(&a.waiting, 1)
		select {
		case a.slots <- struct{}{}:
			a.count(&a.waiting, -1)
			defer func() { <-a.slots }()
		case <-ctx.Done():
			a.count(&a.waiting, -1)
			return false
		}
	}
	a.mu.Lock()
	delay := a.cfg.SteadyDelay
	if a.served < a.cfg.SlowRequests {
		delay = a.cfg.FirstRequestDelay
	}
	a.served++
	a.running++
	a.mu.Unlock()
	defer a.count(&a.running, -1)
	return sleep(ctx, delay) == nil
}

func (a *API) count(n *int, d int) {
	a.mu.Lock()
	*n += d
	a.mu.Unlock()
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func notFound(w http.ResponseWriter) {
	writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not Found"})
}

func vllmError(w http.ResponseWriter, code int, typ, msg string) {
	writeJSON(w, code, map[string]any{"object": "error", "message": msg, "type": typ, "param": nil, "code": code})
}
