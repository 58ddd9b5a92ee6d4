package warm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/modelcar/modelcar/internal/probelog"
)

// Errors Run returns, wrapped with the details (errors.Is tells them apart).
var (
	// ErrNotHealthy: /health (or /v1/models) did not answer 200 before the
	// start-up deadline; the message says for how long and what it answered last.
	ErrNotHealthy = errors.New("vLLM not healthy")
	// ErrModelMismatch: the server does not serve ProbeConfig.Model.
	ErrModelMismatch = errors.New("served model mismatch")
	// ErrRequestTimeout: a warm-up request got no answer within RequestTimeout.
	ErrRequestTimeout = errors.New("warm-up request timed out")
	// ErrRequestFailed: a warm-up request (or /v1/models) answered a non-2xx
	// status or a body that is not a completion.
	ErrRequestFailed = errors.New("warm-up request failed")
	// ErrTimeout: the warm-up workload did not finish before the start-up
	// deadline (ProbeConfig.Timeout, counted from the start of Run).
	ErrTimeout = errors.New("warm-up not done before the deadline")
)

// Defaults for the zero values of ProbeConfig.
const (
	DefaultURL             = "http://127.0.0.1:8000"
	DefaultTimeout         = 30 * time.Minute
	DefaultRequestTimeout  = 5 * time.Minute
	DefaultInterval        = time.Second
	DefaultRecheckInterval = 5 * time.Second
	// DefaultWorkloadSpec is DefaultWorkload in ParseWorkload's notation.
	DefaultWorkloadSpec = "16x16@1,512x64@4,2048x64@8"
)

// API selects the OpenAI-compatible endpoint warm-up requests go to.
type API string

const (
	// Completions sends POST /v1/completions (the default).
	Completions API = "completions"
	// Chat sends POST /v1/chat/completions, which also warms the chat template.
	Chat API = "chat"
	// Both alternates: even-numbered requests go to completions, odd to chat.
	Both API = "both"
)

func (a API) path() string {
	if a == Chat {
		return "/v1/chat/completions"
	}
	return "/v1/completions"
}

// ParseAPI reads "completions", "chat" or "both".
func ParseAPI(s string) (API, error) {
	switch a := API(s); a {
	case Completions, Chat, Both:
		return a, nil
	case "":
		return Completions, nil
	}
	return "", fmt.Errorf("unknown API %q: want completions, chat or both", s)
}

// Request is one step of the warm-up workload: Concurrency identical-shape
// requests sent at once (so the server runs a batch of that size), each with
// a prompt of about PromptTokens tokens and asking for MaxTokens tokens.
type Request struct {
	PromptTokens int `json:"prompt_tokens"`
	MaxTokens    int `json:"max_tokens"`
	Concurrency  int `json:"concurrency"`
}

// String writes r in ParseWorkload's notation: PROMPTxMAX@CONCURRENCY.
func (r Request) String() string {
	return fmt.Sprintf("%dx%d@%d", r.PromptTokens, r.MaxTokens, r.Concurrency)
}

// Limits ParseWorkload enforces.
const (
	maxPromptTokens = 1 << 20
	maxMaxTokens    = 1 << 16
	maxConcurrency  = 1024
)

func (r Request) validate() error {
	switch {
	case r.PromptTokens < 1 || r.PromptTokens > maxPromptTokens:
		return fmt.Errorf("prompt tokens %d out of range 1..%d", r.PromptTokens, maxPromptTokens)
	case r.MaxTokens < 1 || r.MaxTokens > maxMaxTokens:
		return fmt.Errorf("max_tokens %d out of range 1..%d", r.MaxTokens, maxMaxTokens)
	case r.Concurrency < 1 || r.Concurrency > maxConcurrency:
		return fmt.Errorf("concurrency %d out of range 1..%d", r.Concurrency, maxConcurrency)
	}
	return nil
}

// DefaultWorkload: a short prompt alone, a medium one four at a time and a
// long one eight at a time, so prefill and decode run at batch sizes 1, 4
// and 8 (13 requests).
func DefaultWorkload() []Request {
	return []Request{{16, 16, 1}, {512, 64, 4}, {2048, 64, 8}}
}

var stepRE = regexp.MustCompile(`^(\d+)x(\d+)(?:@(\d+))?$`)

// ParseWorkload reads a comma-separated list of PROMPTxMAX[@CONCURRENCY]
// steps, e.g. "16x16@1,512x64@4,2048x64@8": prompt tokens x max_tokens @
// requests sent at once (default 1). Steps run one after another.
func ParseWorkload(spec string) ([]Request, error) {
	var w []Request
	for _, part := range strings.Split(spec, ",") {
		part = strings.TrimSpace(part)
		m := stepRE.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("workload step %q: want PROMPTxMAX_TOKENS[@CONCURRENCY], e.g. 512x64@4", part)
		}
		r := Request{Concurrency: 1}
		r.PromptTokens, _ = strconv.Atoi(m[1])
		r.MaxTokens, _ = strconv.Atoi(m[2])
		if m[3] != "" {
			r.Concurrency, _ = strconv.Atoi(m[3])
		}
		if err := r.validate(); err != nil {
			return nil, fmt.Errorf("workload step %q: %w", part, err)
		}
		w = append(w, r)
	}
	return w, nil
}

// FormatWorkload is the inverse of ParseWorkload.
func FormatWorkload(w []Request) string {
	s := make([]string, len(w))
	for i, r := range w {
		s[i] = r.String()
	}
	return strings.Join(s, ",")
}

// ProbeConfig configures Run and Serve. The zero value probes
// http://127.0.0.1:8000 with DefaultWorkload.
type ProbeConfig struct {
	// URL is vLLM's base URL (default DefaultURL); /health, /v1/models and
	// /v1/completions are resolved against it.
	URL string
	// Model is the served model name expected in /v1/models; empty takes
	// the first one listed.
	Model string
	// Workload is what is sent once the model is served (default
	// DefaultWorkload). Prompts are clamped to the max_model_len that vLLM
	// reports in /v1/models.
	Workload []Request
	// API is the endpoint warm-up requests go to (default Completions).
	API API
	// Timeout is the start-up deadline, from the start of Run to the end of
	// the workload (default DefaultTimeout).
	Timeout time.Duration
	// RequestTimeout bounds each warm-up request (default DefaultRequestTimeout).
	RequestTimeout time.Duration
	// Interval is the /health and /v1/models poll period (default DefaultInterval).
	Interval time.Duration
	// RecheckInterval (Serve only) is the /health poll period once warm: three
	// failures in a row make /ready 503 and the warm-up run again, as after
	// a vLLM restart (default DefaultRecheckInterval; negative: never).
	RecheckInterval time.Duration
	// APIKey, when set, is sent as "Authorization: Bearer KEY". It is never
	// logged and is redacted from errors.
	APIKey string
	// Log receives one line per event in the formats the package doc lists
	// (nil: discarded). Lines are written whole, one Write each.
	Log io.Writer
	// Client is the HTTP client (default: a client with no overall timeout;
	// the per-request deadlines come from the context).
	Client *http.Client
}

// withDefaults validates c (Validate) and fills its empty fields with
// their defaults.
func (c ProbeConfig) withDefaults() (ProbeConfig, error) {
	if err := c.Validate(); err != nil {
		return c, err
	}
	if c.URL == "" {
		c.URL = DefaultURL
	}
	c.URL = strings.TrimRight(c.URL, "/")
	if c.Workload == nil {
		c.Workload = DefaultWorkload()
	}
	c.API, _ = ParseAPI(string(c.API)) // checked by Validate
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = DefaultRequestTimeout
	}
	if c.Interval <= 0 {
		c.Interval = DefaultInterval
	}
	if c.RecheckInterval == 0 {
		c.RecheckInterval = DefaultRecheckInterval
	}
	if c.Log == nil {
		c.Log = io.Discard
	}
	if c.Client == nil {
		c.Client = &http.Client{}
	}
	return c, nil
}

// Result is what a successful warm-up measured. It marshals to JSON with
// durations in seconds (what /timings serves).
type Result struct {
	URL   string
	Model string
	// StartedAt is when Run started.
	StartedAt time.Time
	// HealthyAfter is when /health first answered 200, from StartedAt.
	HealthyAfter time.Duration
	// ModelLoadedAt is when /v1/models first listed the model.
	ModelLoadedAt time.Time
	// MaxModelLen is the context length /v1/models reported (0: not reported).
	MaxModelLen int
	// Requests are the warm-up requests in the order they were sent.
	Requests []RequestTiming
	// Warmup is how long the workload took (first request sent to last answer).
	Warmup time.Duration
	// Total is StartedAt to the end of the workload: when the server is warm.
	Total time.Duration
}

// RequestTiming is one warm-up request.
type RequestTiming struct {
	Step int // index into the workload
	API  API
	// PromptTokens is the prompt length sent, in words of about one token
	// each (the step's PromptTokens unless clamped to max_model_len).
	PromptTokens, MaxTokens, Concurrency int
	// UsagePromptTokens and CompletionTokens are the server's counts from
	// the response's usage (0 when absent).
	UsagePromptTokens, CompletionTokens int
	SentAt                              time.Time
	Latency                             time.Duration
}

type requestJSON struct {
	Step              int       `json:"step"`
	API               API       `json:"api"`
	PromptTokens      int       `json:"prompt_tokens"`
	MaxTokens         int       `json:"max_tokens"`
	Concurrency       int       `json:"concurrency"`
	UsagePromptTokens int       `json:"usage_prompt_tokens,omitempty"`
	CompletionTokens  int       `json:"completion_tokens,omitempty"`
	SentAt            time.Time `json:"sent_at"`
	LatencySeconds    float64   `json:"latency_seconds"`
}

type resultJSON struct {
	URL                 string        `json:"url"`
	Model               string        `json:"model"`
	StartedAt           time.Time     `json:"started_at"`
	HealthyAfterSeconds float64       `json:"healthy_after_seconds"`
	ModelLoadedAt       time.Time     `json:"model_loaded_at"`
	MaxModelLen         int           `json:"max_model_len,omitempty"`
	Requests            []requestJSON `json:"requests"`
	WarmupSeconds       float64       `json:"warmup_seconds"`
	TotalSeconds        float64       `json:"total_seconds"`
}

func secs(d time.Duration) float64   { return d.Seconds() }
func dur(s float64) time.Duration    { return time.Duration(s * float64(time.Second)) }
func fmtSecs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) + "s" }

// MarshalJSON writes durations as seconds: {"healthy_after_seconds": 12.3, ...}.
func (r Result) MarshalJSON() ([]byte, error) {
	j := resultJSON{URL: r.URL, Model: r.Model, StartedAt: r.StartedAt, HealthyAfterSeconds: secs(r.HealthyAfter),
		ModelLoadedAt: r.ModelLoadedAt, MaxModelLen: r.MaxModelLen, Requests: []requestJSON{},
		WarmupSeconds: secs(r.Warmup), TotalSeconds: secs(r.Total)}
	for _, q := range r.Requests {
		j.Requests = append(j.Requests, requestJSON{q.Step, q.API, q.PromptTokens, q.MaxTokens, q.Concurrency,
			q.UsagePromptTokens, q.CompletionTokens, q.SentAt, secs(q.Latency)})
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads what MarshalJSON writes.
func (r *Result) UnmarshalJSON(b []byte) error {
	var j resultJSON
	if err := json.Unmarshal(b, &j); err != nil {
		return err
	}
	*r = Result{URL: j.URL, Model: j.Model, StartedAt: j.StartedAt, HealthyAfter: dur(j.HealthyAfterSeconds),
		ModelLoadedAt: j.ModelLoadedAt, MaxModelLen: j.MaxModelLen, Warmup: dur(j.WarmupSeconds), Total: dur(j.TotalSeconds)}
	for _, q := range j.Requests {
		r.Requests = append(r.Requests, RequestTiming{q.Step, q.API, q.PromptTokens, q.MaxTokens, q.Concurrency,
			q.UsagePromptTokens, q.CompletionTokens, q.SentAt, dur(q.LatencySeconds)})
	}
	return nil
}

// logger writes whole "modelcar-warm: ..." lines, never the API key.
type logger struct {
	mu     sync.Mutex
	w      io.Writer
	redact func(string) string
}

// event writes one line of the probe's log contract (internal/probelog).
func (l *logger) event(e probelog.Event) { l.printf("%s", e.Line()) }

func (l *logger) printf(format string, args ...any) {
	line := l.redact(probelog.Prefix + fmt.Sprintf(format, args...) + "\n")
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.Write([]byte(line))
}

func redactor(key string) func(string) string {
	return func(s string) string {
		if key == "" {
			return s
		}
		return strings.ReplaceAll(s, key, "[redacted]")
	}
}

// redactedError hides the API key in an error's text, keeping errors.Is.
type redactedError struct {
	err    error
	redact func(string) string
}

func (e *redactedError) Error() string { return e.redact(e.err.Error()) }
func (e *redactedError) Unwrap() error { return e.err }

type prober struct {
	cfg    ProbeConfig
	log    *logger
	redact func(string) string
	start  time.Time
}

// Run waits for vLLM at cfg.URL to be healthy and to serve the model, sends
// the warm-up workload and returns its timings. It logs one line per event
// (see the package doc) and fails with an error wrapping one of ErrNotHealthy,
// ErrModelMismatch, ErrRequestTimeout, ErrRequestFailed or ErrTimeout, or
// the context's error when ctx ends first.
func Run(ctx context.Context, cfg ProbeConfig) (*Result, error) {
	c, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	p := newProber(c)
	res, err := p.run(ctx)
	if err != nil {
		err = &redactedError{err, p.redact}
		p.log.event(probelog.Event{Kind: probelog.Failed, Duration: time.Since(p.start), Error: err.Error()})
		return nil, err
	}
	return res, nil
}

func newProber(c ProbeConfig) *prober {
	r := redactor(c.APIKey)
	return &prober{cfg: c, redact: r, log: &logger{w: c.Log, redact: r}}
}

// errDeadline is the cause of the start-up deadline's context.
var errDeadline = errors.New("start-up deadline")

func (p *prober) run(parent context.Context) (*Result, error) {
	p.start = time.Now()
	ctx, cancel := context.WithTimeoutCause(parent, p.cfg.Timeout, errDeadline)
	defer cancel()
	p.log.printf("waiting for vLLM at %s (timeout %s)", p.cfg.URL, p.cfg.Timeout)
	res := &Result{URL: p.cfg.URL, StartedAt: p.start}

	if err := p.waitHealthy(ctx, parent); err != nil {
		return nil, err
	}
	res.HealthyAfter = time.Since(p.start)
	p.log.event(probelog.Event{Kind: probelog.Healthy, Duration: res.HealthyAfter})

	model, maxLen, err := p.waitModel(ctx, parent)
	if err != nil {
		return nil, err
	}
	res.Model, res.MaxModelLen, res.ModelLoadedAt = model, maxLen, time.Now()
	p.log.event(probelog.Event{Kind: probelog.Model, Model: model, Duration: res.ModelLoadedAt.Sub(p.start)})

	wstart := time.Now()
	n := 0
	for step, r := range p.cfg.Workload {
		sent := clampPrompt(r, maxLen)
		if sent != r.PromptTokens {
			p.log.printf("step %s: prompt_tokens=%d clamped to %d for max_model_len=%d", r, r.PromptTokens, sent, maxLen)
		}
		timings, err := p.runStep(ctx, parent, step, r, sent, model, n)
		if err != nil {
			return nil, err
		}
		res.Requests = append(res.Requests, timings...)
		n += len(timings)
	}
	res.Warmup = time.Since(wstart)
	res.Total = time.Since(p.start)
	p.log.event(probelog.Event{Kind: probelog.Done, Duration: res.Warmup, Requests: n})
	p.log.event(probelog.Event{Kind: probelog.Ready, Duration: res.Total})
	return res, nil
}

// clampPrompt keeps prompt plus answer (plus a margin for the chat template
// and words longer than one token) inside the context.
func clampPrompt(r Request, maxLen int) int {
	if maxLen <= 0 {
		return r.PromptTokens
	}
	room := (maxLen - r.MaxTokens - 64) * 7 / 8
	if room < 1 {
		room = 1
	}
	return min(r.PromptTokens, room)
}

// deadlineErr turns the end of ctx into the error to return: the parent's
// own error when it ended first, else what to say for the start-up deadline.
func deadlineErr(parent context.Context, sentinel error, format string, args ...any) error {
	if parent.Err() != nil {
		return fmt.Errorf("%s: %w", fmt.Sprintf(format, args...), parent.Err())
	}
	return fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...))
}

// get fetches path with a short per-attempt timeout.
func (p *prober) get(ctx context.Context, path string) (int, []byte, error) {
	actx, cancel := context.WithTimeout(ctx, min(p.cfg.RequestTimeout, 30*time.Second))
	defer cancel()
	req, err := http.NewRequestWithContext(actx, http.MethodGet, p.cfg.URL+path, nil)
	if err != nil {
		return 0, nil, err
	}
	p.auth(req)
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, b, err
}

func (p *prober) auth(req *http.Request) {
	if p.cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+p.cfg.APIKey)
	}
}

// describe says what an attempt got, for logs and errors.
func describe(path string, code int, body []byte, err error) string {
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		if errors.Is(err, context.DeadlineExceeded) {
			return path + ": no answer (attempt timed out)"
		}
		return path + ": " + err.Error()
	}
	s := fmt.Sprintf("%s answered %d %s", path, code, http.StatusText(code))
	if snip := snippet(body); snip != "" {
		s += ": " + snip
	}
	return s
}

// snippet is the start of a response body, on one line.
func snippet(b []byte) string {
	s := strings.Join(strings.Fields(string(b)), " ")
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

func (p *prober) waitHealthy(ctx, parent context.Context) error {
	last := "no answer yet"
	for {
		code, body, err := p.get(ctx, "/health")
		if err == nil && code == http.StatusOK {
			return nil
		}
		if ctx.Err() == nil {
			// Log what the server answers when it changes, not every poll.
			if now := describe("/health", code, body, err); statusKind(now) != statusKind(last) {
				p.log.printf("waiting after %s: %s", fmtSecs(time.Since(p.start)), now)
				last = now
			}
		}
		if !sleep(ctx, p.cfg.Interval) || ctx.Err() != nil {
			return deadlineErr(parent, ErrNotHealthy, "%s/health did not answer 200 within %s; last: %s", p.cfg.URL, p.cfg.Timeout, last)
		}
	}
}

// statusKind reduces an attempt's description to what a change is logged on.
func statusKind(s string) string {
	if i := strings.Index(s, ": "); i >= 0 && strings.Contains(s[:i], "answered") {
		return s[:i]
	}
	if i := strings.LastIndex(s, ": "); i >= 0 {
		return s[i:]
	}
	return s
}

type modelList struct {
	Data []struct {
		ID          string `json:"id"`
		MaxModelLen int    `json:"max_model_len"`
	} `json:"data"`
}

func (p *prober) waitModel(ctx, parent context.Context) (string, int, error) {
	last := "no answer yet"
	for {
		code, body, err := p.get(ctx, "/v1/models")
		switch {
		case err == nil && (code == http.StatusUnauthorized || code == http.StatusForbidden):
			hint := "set the API key"
			if p.cfg.APIKey != "" {
				hint = "check the API key"
			}
			return "", 0, fmt.Errorf("%w: %s (%s)", ErrRequestFailed, describe(p.cfg.URL+"/v1/models", code, body, nil), hint)
		case err == nil && code == http.StatusOK:
			var l modelList
			if jerr := json.Unmarshal(body, &l); jerr != nil {
				last = "/v1/models answered 200 but not a model list: " + snippet(body)
				break
			}
			if len(l.Data) == 0 {
				last = "/v1/models lists no model"
				break
			}
			var ids []string
			for _, m := range l.Data {
				if p.cfg.Model == "" || m.ID == p.cfg.Model {
					return m.ID, m.MaxModelLen, nil
				}
				ids = append(ids, strconv.Quote(m.ID))
			}
			return "", 0, fmt.Errorf("%w: expected %q, %s serves %s", ErrModelMismatch, p.cfg.Model, p.cfg.URL, strings.Join(ids, ", "))
		default:
			last = describe("/v1/models", code, body, err)
		}
		if !sleep(ctx, p.cfg.Interval) || ctx.Err() != nil {
			return "", 0, deadlineErr(parent, ErrNotHealthy, "%s/v1/models did not list a model within %s; last: %s", p.cfg.URL, p.cfg.Timeout, last)
		}
	}
}

// vocabulary: common English words that are one token each (with their
// leading space) in the usual BPE and SentencePiece vocabularies.
var vocabulary = strings.Fields(`the of and to in is it that was for on are with as be at by this had not
but from or have an they which one you were her all she there would their we him been has when who will
more no if out so said what up its about into than them can only other new some could time these two may
then do first any my now such like our over man me even most made after also did many before must through
back years where much your way well down should because each just those people how too little state good
very make world still own see men work long get here between both life being under never day same another
know while last might us great old year off come since against go came right used take three`)

// prompt is n words, different for every seed, so that no request is
// answered from another's prefix cache.
func prompt(n int, seed uint64) string {
	var b strings.Builder
	b.Grow(n * 6)
	x := seed*0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019
	for i := 0; i < n; i++ {
		x ^= x << 13
		x ^= x >> 7
		x ^= x << 17
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(vocabulary[x%uint64(len(vocabulary))])
	}
	return b.String()
}

type completionResponse struct {
	Choices []json.RawMessage `json:"choices"`
	Usage   struct {
		PromptTokens     int `json:"prompt_tokens"`
		CompletionTokens int `json:"completion_tokens"`
	} `json:"usage"`
}

// errRequestDeadline is the cause of one request's context.
var errRequestDeadline = errors.New("request timeout")

// runStep sends r.Concurrency requests at once and waits for all; the first
// failure cancels the others. first numbers the requests across steps.
func (p *prober) runStep(ctx, parent context.Context, step int, r Request, words int, model string, first int) ([]RequestTiming, error) {
	sctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	timings := make([]RequestTiming, r.Concurrency)
	errs := make([]error, r.Concurrency)
	var wg sync.WaitGroup
	for i := range r.Concurrency {
		api := p.cfg.API
		if api == Both {
			api = Completions
			if (first+i)%2 == 1 {
				api = Chat
			}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := RequestTiming{Step: step, API: api, PromptTokens: words, MaxTokens: r.MaxTokens, Concurrency: r.Concurrency}
			err := p.send(sctx, &t, model, prompt(words, uint64(first+i)))
			if err != nil {
				errs[i] = err
				cancel(err)
				return
			}
			timings[i] = t
			p.log.event(probelog.Event{Kind: probelog.Request, PromptTokens: t.PromptTokens, MaxTokens: t.MaxTokens,
				Concurrency: t.Concurrency, Duration: t.Latency, API: string(t.API)})
		}()
	}
	wg.Wait()
	var err error
	if cause := context.Cause(sctx); cause != nil && sctx.Err() != nil {
		err = cause
	}
	for _, e := range errs {
		if e != nil && err == nil {
			err = e
		}
	}
	if err == nil {
		return timings, nil
	}
	what := fmt.Sprintf("step %d (%s)", step+1, r)
	switch {
	case parent.Err() != nil:
		return nil, fmt.Errorf("%s: %w", what, parent.Err())
	case errors.Is(context.Cause(ctx), errDeadline):
		return nil, fmt.Errorf("%w (%s): %s still running", ErrTimeout, p.cfg.Timeout, what)
	}
	return nil, fmt.Errorf("%s: %w", what, err)
}

func (p *prober) send(ctx context.Context, t *RequestTiming, model, text string) error {
	body := map[string]any{"model": model, "max_tokens": t.MaxTokens, "temperature": 0,
		"ignore_eos": true, "stream": false}
	if t.API == Chat {
		body["messages"] = []map[string]string{{"role": "user", "content": text}}
	} else {
		body["prompt"] = text
	}
	b, _ := json.Marshal(body)
	rctx, cancel := context.WithTimeoutCause(ctx, p.cfg.RequestTimeout, errRequestDeadline)
	defer cancel()
	path := t.API.path()
	req, err := http.NewRequestWithContext(rctx, http.MethodPost, p.cfg.URL+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	p.auth(req)
	t.SentAt = time.Now()
	resp, err := p.cfg.Client.Do(req)
	if err != nil {
		if errors.Is(context.Cause(rctx), errRequestDeadline) {
			return fmt.Errorf("%w: POST %s got no answer within the request timeout %s", ErrRequestTimeout, path, p.cfg.RequestTimeout)
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("%w: POST %s: %s", ErrRequestFailed, path, describe(path, 0, nil, err))
	}
	defer resp.Body.Close()
	rb, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		if errors.Is(context.Cause(rctx), errRequestDeadline) {
			return fmt.Errorf("%w: POST %s: answer not complete within the request timeout %s", ErrRequestTimeout, path, p.cfg.RequestTimeout)
		}
		if ctx.Err() != nil {
			return context.Cause(ctx)
		}
		return fmt.Errorf("%w: POST %s: reading the answer: %v", ErrRequestFailed, path, err)
	}
	t.Latency = time.Since(t.SentAt)
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%w: POST %s", ErrRequestFailed, describe(path, resp.StatusCode, rb, nil))
	}
	var cr completionResponse
	if err := json.Unmarshal(rb, &cr); err != nil || len(cr.Choices) == 0 {
		return fmt.Errorf("%w: POST %s answered %d without choices: %s", ErrRequestFailed, path, resp.StatusCode, snippet(rb))
	}
	t.UsagePromptTokens, t.CompletionTokens = cr.Usage.PromptTokens, cr.Usage.CompletionTokens
	return nil
}

// Serve is sidecar mode: it listens on addr, logs "listening on ADDR"
// (the bound address, useful with port 0), runs the warm-up in the
// background and serves until ctx ends:
//
//	GET /ready    503 until the warm-up succeeded, then 200; after a
//	              failure it stays 503 with the error in the body. Once
//	              warm, /health is rechecked every RecheckInterval; three
//	              failures in a row (vLLM restarted) make it 503 again and
//	              the warm-up runs again.
//	GET /timings  the last Result as JSON (503 with {"state","error"} before)
//	GET /healthz  200 always (liveness of the probe itself)
//
// It returns nil when ctx ends, or the listen error.
func Serve(ctx context.Context, addr string, cfg ProbeConfig) error {
	if _, err := cfg.withDefaults(); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return ServeListener(ctx, ln, cfg)
}

// ServeListener is Serve on a listener the caller opened; it closes ln.
func ServeListener(ctx context.Context, ln net.Listener, cfg ProbeConfig) error {
	c, err := cfg.withDefaults()
	if err != nil {
		ln.Close()
		return err
	}
	s := &server{cfg: c, state: "warming", detail: "waiting for vLLM"}
	p := newProber(c)
	p.log.event(probelog.Event{Kind: probelog.Listening, Addr: ln.Addr().String()})
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.warmLoop(ctx, p)
	}()
	hs := &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer scancel()
		hs.Shutdown(sctx)
	}()
	err = hs.Serve(ln)
	cancel()
	<-done
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

type server struct {
	cfg    ProbeConfig
	mu     sync.Mutex
	state  string // warming, ready, failed
	detail string
	result *Result
}

func (s *server) set(state, detail string, res *Result) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.state, s.detail = state, detail
	if res != nil {
		s.result = res
	}
}

// retryBackoff is the first wait before a failed warm-up is tried again.
var retryBackoff = 10 * time.Second

func (s *server) warmLoop(ctx context.Context, p *prober) {
	failures := 0
	for {
		s.set("warming", "waiting for vLLM at "+s.cfg.URL, nil)
		res, err := Run(ctx, s.cfg)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			// /ready stays 503 with the error; the warm-up is tried again
			// with backoff, so a pod recovers without a restart once vLLM does.
			s.set("failed", err.Error(), nil)
			if s.cfg.RecheckInterval < 0 {
				return
			}
			failures++
			wait := min(time.Duration(failures)*retryBackoff, 2*time.Minute)
			p.log.printf("warming up again in %s", fmtSecs(wait))
			if !sleep(ctx, wait) {
				return
			}
			continue
		}
		failures = 0
		s.set("ready", fmt.Sprintf("model %q warm after %s", res.Model, fmtSecs(res.Total)), res)
		if s.cfg.RecheckInterval < 0 {
			return
		}
		why := s.watch(ctx, p)
		if ctx.Err() != nil {
			return
		}
		p.log.printf("vLLM unhealthy after ready (%s); warming up again", why)
	}
}

// watch polls /health once warm; it returns when three polls in a row fail.
func (s *server) watch(ctx context.Context, p *prober) string {
	fails := 0
	for sleep(ctx, s.cfg.RecheckInterval) {
		code, body, err := p.get(ctx, "/health")
		if err == nil && code == http.StatusOK {
			fails = 0
			continue
		}
		if ctx.Err() != nil {
			break
		}
		if fails++; fails >= 3 {
			return p.redact(describe("/health", code, body, err))
		}
	}
	return ""
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	s.mu.Lock()
	state, detail, res := s.state, s.detail, s.result
	s.mu.Unlock()
	switch r.URL.Path {
	case "/healthz":
		fmt.Fprintln(w, "ok")
	case "/ready":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if state != "ready" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		fmt.Fprintf(w, "%s: %s\n", state, detail)
	case "/timings":
		w.Header().Set("Content-Type", "application/json")
		if res == nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			msg := map[string]string{"state": state}
			if state == "failed" {
				msg["error"] = detail
			}
			json.NewEncoder(w).Encode(msg)
			return
		}
		json.NewEncoder(w).Encode(res)
	default:
		http.NotFound(w, r)
	}
}
