package probelog

import (
	"reflect"
	"testing"
	"time"
)

// TestParse: every event line parses to its values, and Line writes back
// the same text; other lines, the probe's or not, are unknown.
func TestParse(t *testing.T) {
	for line, want := range map[string]Event{
		"modelcar-warm: healthy after 12.300s":                                                        {Kind: Healthy, Duration: 12300 * time.Millisecond},
		`modelcar-warm: model "meta-llama/Llama-3.1-8B" served after 12.310s`:                         {Kind: Model, Model: "meta-llama/Llama-3.1-8B", Duration: 12310 * time.Millisecond},
		"modelcar-warm: request prompt_tokens=512 max_tokens=64 concurrency=4 latency=0.840s":         {Kind: Request, PromptTokens: 512, MaxTokens: 64, Concurrency: 4, API: "completions", Duration: 840 * time.Millisecond},
		"x modelcar-warm: request prompt_tokens=1 max_tokens=2 concurrency=3 latency=1.000s api=chat": {Kind: Request, PromptTokens: 1, MaxTokens: 2, Concurrency: 3, API: "chat", Duration: time.Second},
		"modelcar-warm: warm-up done in 7.910s (9 requests)":                                          {Kind: Done, Duration: 7910 * time.Millisecond, Requests: 9},
		"modelcar-warm: ready after 20.000s\r\n":                                                      {Kind: Ready, Duration: 20 * time.Second},
		"modelcar-warm: failed after 1.500s: vLLM not healthy: x":                                     {Kind: Failed, Duration: 1500 * time.Millisecond, Error: "vLLM not healthy: x"},
		"modelcar-warm: listening on 127.0.0.1:8090":                                                  {Kind: Listening, Addr: "127.0.0.1:8090"},
	} {
		got, ok := Parse(line)
		if !ok || !reflect.DeepEqual(got, want) {
			t.Errorf("Parse(%q) = %+v, %v; want %+v", line, got, ok, want)
			continue
		}
		if got.API == "completions" && got.Kind == Request && line[0] == 'm' {
			continue // written with api= since; parsed without it for older probes
		}
		if back, ok := Parse("t " + Prefix + got.Line()); !ok || !reflect.DeepEqual(back, want) {
			t.Errorf("Line of %+v = %q parses to %+v, %v", got, got.Line(), back, ok)
		}
	}
	for _, line := range []string{"INFO vLLM healthy after 1s", "modelcar-warm: waiting for vLLM at x (timeout 1s)", "modelcar-warm: healthy after soon"} {
		if ev, ok := Parse(line); ok {
			t.Errorf("Parse(%q) = %+v", line, ev)
		}
	}
}
