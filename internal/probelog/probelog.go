// Package probelog is the contract between the modelcar warm-up probe,
// which writes these lines to its log, and measure, which reads them back
// from the sidecar's log: the line formats live here only. Each line is
// Prefix followed by one event; durations are seconds with three decimals
// and an "s" (12.300s), a model name is Go-quoted:
//
//	listening on ADDR
//	healthy after D
//	model "NAME" served after D
//	request prompt_tokens=N max_tokens=N concurrency=N latency=D api=API
//	warm-up done in D (N requests)
//	ready after D
//	failed after D: ERROR
//
// The probe writes other lines too (waiting, clamped steps, warming up
// again); Parse reports them as unknown.
package probelog

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Prefix starts every line the probe logs.
const Prefix = "modelcar-warm: "

// Kind names an event Parse understands.
type Kind string

const (
	Healthy   Kind = "healthy"
	Model     Kind = "model"
	Request   Kind = "request"
	Done      Kind = "done"
	Ready     Kind = "ready"
	Failed    Kind = "failed"
	Listening Kind = "listening"
)

// Event is one line: its kind and the values it carries.
type Event struct {
	Kind Kind
	// Duration is since the probe started for healthy, model, ready and
	// failed; the request's latency for request; the workload's duration
	// for done.
	Duration time.Duration
	Model    string // model
	// PromptTokens, MaxTokens, Concurrency and API describe a request.
	PromptTokens, MaxTokens, Concurrency int
	API                                  string
	Requests                             int    // done
	Error                                string // failed
	Addr                                 string // listening
}

// Line is e as the probe writes it, without Prefix or newline.
func (e Event) Line() string {
	d := secs(e.Duration)
	switch e.Kind {
	case Healthy:
		return "healthy after " + d
	case Model:
		return fmt.Sprintf("model %q served after %s", e.Model, d)
	case Request:
		return fmt.Sprintf("request prompt_tokens=%d max_tokens=%d concurrency=%d latency=%s api=%s", e.PromptTokens, e.MaxTokens, e.Concurrency, d, e.API)
	case Done:
		return fmt.Sprintf("warm-up done in %s (%d requests)", d, e.Requests)
	case Ready:
		return "ready after " + d
	case Failed:
		return fmt.Sprintf("failed after %s: %s", d, e.Error)
	case Listening:
		return "listening on " + e.Addr
	}
	return ""
}

// secs writes d as the probe's lines do: "12.300s".
func secs(d time.Duration) string { return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) + "s" }

var (
	durRE       = `([0-9]+(?:\.[0-9]+)?)s`
	healthyRE   = regexp.MustCompile(`^healthy after ` + durRE + `$`)
	modelRE     = regexp.MustCompile(`^model ("(?:[^"\\]|\\.)*") served after ` + durRE + `$`)
	requestRE   = regexp.MustCompile(`^request prompt_tokens=(\d+) max_tokens=(\d+) concurrency=(\d+) latency=` + durRE + `(?: api=(\w+))?`)
	doneRE      = regexp.MustCompile(`^warm-up done in ` + durRE + ` \((\d+) requests\)$`)
	readyRE     = regexp.MustCompile(`^ready after ` + durRE + `$`)
	failedRE    = regexp.MustCompile(`^failed after ` + durRE + `: (.*)$`)
	listeningRE = regexp.MustCompile(`^listening on (\S+)$`)
)

// Parse reads one line of the probe's log. Text before Prefix (a timestamp
// from kubectl logs --timestamps, say) is ignored. Lines of other kinds,
// or not from the probe, give false. A request line without api= (older
// probes) is a completions request.
func Parse(line string) (Event, bool) {
	i := strings.Index(line, Prefix)
	if i < 0 {
		return Event{}, false
	}
	s := strings.TrimRight(line[i+len(Prefix):], "\r\n")
	d := func(x string) time.Duration {
		f, _ := strconv.ParseFloat(x, 64)
		return time.Duration(f * float64(time.Second))
	}
	n := func(x string) int { v, _ := strconv.Atoi(x); return v }
	if m := healthyRE.FindStringSubmatch(s); m != nil {
		return Event{Kind: Healthy, Duration: d(m[1])}, true
	}
	if m := modelRE.FindStringSubmatch(s); m != nil {
		name, err := strconv.Unquote(m[1])
		if err != nil {
			return Event{}, false
		}
		return Event{Kind: Model, Model: name, Duration: d(m[2])}, true
	}
	if m := requestRE.FindStringSubmatch(s); m != nil {
		api := m[5]
		if api == "" {
			api = "completions"
		}
		return Event{Kind: Request, PromptTokens: n(m[1]), MaxTokens: n(m[2]), Concurrency: n(m[3]), Duration: d(m[4]), API: api}, true
	}
	if m := doneRE.FindStringSubmatch(s); m != nil {
		return Event{Kind: Done, Duration: d(m[1]), Requests: n(m[2])}, true
	}
	if m := readyRE.FindStringSubmatch(s); m != nil {
		return Event{Kind: Ready, Duration: d(m[1])}, true
	}
	if m := failedRE.FindStringSubmatch(s); m != nil {
		return Event{Kind: Failed, Duration: d(m[1]), Error: m[2]}, true
	}
	if m := listeningRE.FindStringSubmatch(s); m != nil {
		return Event{Kind: Listening, Addr: m[1]}, true
	}
	return Event{}, false
}
