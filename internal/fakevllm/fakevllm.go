// Package fakevllm is a vLLM-compatible HTTP server for tests. It behaves
// like vLLM during start-up: /health answers 503 while the model "loads",
// then 200; /v1/models lists the served model; the first completions are
// slow (compilation, CUDA graph capture), the next ones fast. It records
// every completion request for assertions. The HTTP behaviour is
// internal/standin's API, the one the vLLM stand-in image serves.
//
// Tests control it with events, not timers: Ready ends loading, Restart
// goes back to loading (a vLLM restart), and Options.Gate holds each
// completion until the test lets it through.
package fakevllm

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/standin"
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
type Request = standin.Request

// Server is a running fake.
type Server struct {
	*httptest.Server
	t    testing.TB
	o    Options
	api  *standin.API
	life context.Context // ends when the test does: releases held handlers

	mu      sync.Mutex
	changed chan struct{} // closed and replaced when reqs grows
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
	life, end := context.WithCancel(context.Background())
	s := &Server{t: t, o: o, life: life, changed: make(chan struct{}), hits: map[string]int{}}
	s.api = standin.NewAPI(standin.APIConfig{Model: o.Model, MaxModelLen: o.MaxModelLen, APIKey: o.RequireKey,
		SlowRequests: o.SlowRequests, FirstRequestDelay: o.FirstRequestDelay, SteadyDelay: o.SteadyDelay,
		OnCompletion: s.onCompletion})
	if !o.Loading && o.LoadDelay == 0 {
		s.Ready()
	}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	if o.LoadDelay > 0 {
		timer := time.AfterFunc(o.LoadDelay, s.Ready)
		t.Cleanup(func() { timer.Stop() })
	}
	t.Cleanup(func() {
		end()
		s.Server.CloseClientConnections()
		s.Server.Close()
	})
	return s
}

// Ready ends loading: /health answers 200 from now on (unless NeverHealthy).
func (s *Server) Ready() {
	if !s.o.NeverHealthy {
		s.api.Ready()
	}
}

// Restart goes back to loading, as when vLLM's container restarts: /health
// answers 503 until Ready, and the next completions are slow again.
func (s *Server) Restart() { s.api.Restart() }

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

// serve counts the hit and hands the request to the API with a context
// that also ends with the test.
func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.hits[r.URL.Path]++
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(r.Context())
	defer cancel()
	defer context.AfterFunc(s.life, cancel)()
	s.api.ServeHTTP(w, r.WithContext(ctx))
}

// onCompletion records the request, then holds it at the gate, hangs or
// fails it as the options say.
func (s *Server) onCompletion(ctx context.Context, r Request) error {
	s.mu.Lock()
	s.reqs = append(s.reqs, r)
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
	if s.o.Gate != nil {
		select {
		case <-s.o.Gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if s.o.Hang {
		<-ctx.Done()
		return ctx.Err()
	}
	if s.o.FailStatus != 0 {
		return &standin.StatusError{Status: s.o.FailStatus, Message: "fake failure: EngineCore died"}
	}
	return nil
}
