// Package fakevllm is a vLLM-compatible HTTP server for tests. It behaves
// like vLLM during start-up: /health answers 503 while the model "loads",
// then 200; /v1/models lists the served model; the first completions are
// slow (compilation, CUDA graph capture), the next ones fast. It records
// every completion request for assertions.
//
// Tests control it with events, not timers: Ready ends loading, Restart
// goes back to loading (a vLLM restart), and Options.Gate holds each
// completion until the test lets it through.
package fakevllm

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Options shape the fake server.
type Options struct {
	// Model is the served model name (default "fake/model").
	Model string
	// MaxModelLen, when set, is reported in /v1/models as vLLM does.
	MaxModelLen int
	// Loading starts the server loading: /health answers 503 until Ready.
	Loading bool
	// LoadDelay, when set, starts the server loading and calls Ready after
	// this long (Ready may still be called earlier).
	LoadDelay time.Duration
	// NeverHealthy makes /health answer 503 whatever happens.
	NeverHealthy bool
	// SlowRequests is how many completions take FirstRequestDelay after each
	// (re)start (default 2); the others take SteadyDelay.
	SlowRequests      int
	FirstRequestDelay time.Duration
	SteadyDelay       time.Duration
	// RequireKey makes /v1/* answer 401 unless "Authorization: Bearer KEY".
	RequireKey string
	// FailStatus, when set, makes every completion answer this status with a
	// vLLM-shaped error body.
	FailStatus int
	// Hang makes completions never answer: they end when the client gives up.
	Hang bool
	// Gate, when set, holds each completion (after it is recorded) until a
	// value is received from it.
	Gate chan struct{}
}

// Request is a recorded completion request.
type Request struct {
	Seq         int    // 0, 1, ... in arrival order
	Path        string // /v1/completions or /v1/chat/completions
	Model       string
	PromptWords int // words in the prompt (or in the messages' contents)
	MaxTokens   int
	IgnoreEOS   bool
	Auth        string // the Authorization header as sent
}

// Server is a running fake.
type Server struct {
	*httptest.Server
	t    testing.TB
	o    Options
	done chan struct{}

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when reqs grows
	loading bool
	served  int // completions since the last (re)start
	reqs    []Request
	hits    map[string]int
}

// Start starts a fake on 127.0.0.1:0; it is closed when the test ends.
func Start(t testing.TB, o Options) *Server {
	t.Helper()
	if o.Model == "" {
		o.Model = "fake/model"
	}
	if o.SlowRequests == 0 {
		o.SlowRequests = 2
	}
	s := &Server{t: t, o: o, done: make(chan struct{}), changed: make(chan struct{}),
		loading: o.Loading || o.LoadDelay > 0, hits: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	if o.LoadDelay > 0 {
		timer := time.AfterFunc(o.LoadDelay, s.Ready)
		t.Cleanup(func() { timer.Stop() })
	}
	t.Cleanup(func() {
		close(s.done) // releases held and hanging handlers
		s.Server.CloseClientConnections()
		s.Server.Close()
	})
	return s
}

// Ready ends loading: /health answers 200 from now on.
func (s *Server) Ready() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loading = false
}

// Restart goes back to loading, as when vLLM's container restarts: /health
// answers 503 until Ready, and the next completions are slow again.
func (s *Server) Restart() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.loading, s.served = true, 0
}

// Requests returns the completion requests received so far.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.reqs...)
}

// Hits is how many requests reached path (any method, any answer).
func (s *Server) Hits(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

// WaitRequests blocks until at least n completion requests were received,
// and returns them; it fails the test after 30 seconds.
func (s *Server) WaitRequests(n int) []Request {
	s.t.Helper()
	timeout := time.NewTimer(30 * time.Second)
	defer timeout.Stop()
	for {
		s.mu.Lock()
		reqs, ch := append([]Request(nil), s.reqs...), s.changed
		s.mu.Unlock()
		if len(reqs) >= n {
			return reqs
		}
		select {
		case <-ch:
		case <-timeout.C:
			s.t.Fatalf("fakevllm: %d completion requests after 30s, want %d", len(reqs), n)
		}
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

func vllmError(w http.ResponseWriter, code int, typ, msg string) {
	writeJSON(w, code, map[string]any{"object": "error", "message": msg, "type": typ, "param": nil, "code": code})
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.hits[r.URL.Path]++
	loading := s.loading || s.o.NeverHealthy
	s.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/v1/") && s.o.RequireKey != "" && r.Header.Get("Authorization") != "Bearer "+s.o.RequireKey {
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "Unauthorized"})
		return
	}
	switch r.URL.Path {
	case "/health":
		if loading {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		w.WriteHeader(http.StatusOK)
	case "/v1/models":
		if loading {
			// vLLM does not route before start-up completes; this is what a
			// proxy in front of it would say.
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		m := map[string]any{"id": s.o.Model, "object": "model", "created": time.Now().Unix(), "owned_by": "vllm",
			"root": s.o.Model, "parent": nil}
		if s.o.MaxModelLen > 0 {
			m["max_model_len"] = s.o.MaxModelLen
		}
		writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": []any{m}})
	case "/v1/completions", "/v1/chat/completions":
		if r.Method != http.MethodPost {
			vllmError(w, http.StatusMethodNotAllowed, "BadRequestError", "method not allowed")
			return
		}
		s.complete(w, r, loading)
	default:
		writeJSON(w, http.StatusNotFound, map[string]string{"detail": "Not Found"})
	}
}

func (s *Server) complete(w http.ResponseWriter, r *http.Request, loading bool) {
	var body struct {
		Model     string `json:"model"`
		Prompt    string `json:"prompt"`
		MaxTokens int    `json:"max_tokens"`
		IgnoreEOS bool   `json:"ignore_eos"`
		Messages  []struct {
			Role    string `json:"role"`
			Content string `json:"content"`
		} `json:"messages"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		vllmError(w, http.StatusBadRequest, "BadRequestError", "invalid JSON: "+err.Error())
		return
	}
	chat := r.URL.Path == "/v1/chat/completions"
	words := len(strings.Fields(body.Prompt))
	for _, m := range body.Messages {
		words += len(strings.Fields(m.Content))
	}
	s.mu.Lock()
	seq, served := len(s.reqs), s.served
	s.served++
	s.reqs = append(s.reqs, Request{Seq: seq, Path: r.URL.Path, Model: body.Model, PromptWords: words,
		MaxTokens: body.MaxTokens, IgnoreEOS: body.IgnoreEOS, Auth: r.Header.Get("Authorization")})
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()

	if s.o.Gate != nil {
		select {
		case <-s.o.Gate:
		case <-r.Context().Done():
			return
		case <-s.done:
			return
		}
	}
	if s.o.Hang {
		select {
		case <-r.Context().Done():
		case <-s.done:
		}
		return
	}
	delay := s.o.SteadyDelay
	if served < s.o.SlowRequests {
		delay = s.o.FirstRequestDelay
	}
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		case <-s.done:
			t.Stop()
			return
		}
	}
	switch {
	case loading:
		vllmError(w, http.StatusServiceUnavailable, "ServiceUnavailableError", "model is loading")
		return
	case s.o.FailStatus != 0:
		vllmError(w, s.o.FailStatus, "InternalServerError", "fake failure: EngineCore died")
		return
	case body.Model != s.o.Model:
		vllmError(w, http.StatusNotFound, "NotFoundError", fmt.Sprintf("The model `%s` does not exist.", body.Model))
		return
	case s.o.MaxModelLen > 0 && words+body.MaxTokens > s.o.MaxModelLen:
		vllmError(w, http.StatusBadRequest, "BadRequestError", fmt.Sprintf(
			"This model's maximum context length is %d tokens. However, you requested %d tokens.", s.o.MaxModelLen, words+body.MaxTokens))
		return
	}
	text := strings.TrimSpace(strings.Repeat(" tok", body.MaxTokens))
	usage := map[string]int{"prompt_tokens": words, "completion_tokens": body.MaxTokens, "total_tokens": words + body.MaxTokens}
	created := time.Now().Unix()
	if chat {
		writeJSON(w, http.StatusOK, map[string]any{"id": fmt.Sprintf("chatcmpl-%d", seq), "object": "chat.completion",
			"created": created, "model": s.o.Model, "usage": usage, "choices": []any{map[string]any{
				"index": 0, "message": map[string]string{"role": "assistant", "content": text}, "finish_reason": "length"}}})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id": fmt.Sprintf("cmpl-%d", seq), "object": "text_completion",
		"created": created, "model": s.o.Model, "usage": usage, "choices": []any{map[string]any{
			"index": 0, "text": text, "logprobs": nil, "finish_reason": "length", "stop_reason": nil}}})
}
