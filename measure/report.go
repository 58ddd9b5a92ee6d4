package measure

import (
	"encoding/json"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Version is the JSON report schema version, written as "version".
const Version = 1

// The phase names, in timeline order, as they appear in reports.
const (
	Provision    = "provision"
	Pull         = "pull"
	Load         = "load"
	Warmup       = "warmup"
	Unattributed = "unattributed"
)

// PhaseNames lists the four phases in timeline order.
var PhaseNames = []string{Provision, Pull, Load, Warmup}

// A Report is the result of Analyze and, encoded with encoding/json, the
// JSON report (schema version 1, documented in SCHEMA.md):
//
//	{
//	  "version": 1,
//	  "cold_starts": [{
//	    "pod": "NS/NAME", "node": "NODE",
//	    "created": "RFC3339", "ready": "RFC3339",       // ready absent if never Ready
//	    "total_seconds": F,                             // created → Ready
//	    "phases": {"provision": F, "pull": F, "load": F, "warmup": F},
//	    "unattributed_seconds": F,                      // total - sum(phases), exactly
//	    "dominant": "pull",                             // largest phase, or "unattributed"
//	    "lever": "...",                                 // what fixes the dominant phase
//	    "details": {"provision": {...}, "pull": {...}, "load": {...}, "warmup": {...},
//	                "scale_up": {...}, "images": [...], "container": "vllm",
//	                "vllm_version": "0.8.5", "notes": [...]},
//	    "timeline": [{"phase": "provision", "start": F, "end": F, "note": "..."}],
//	    "missing": ["..."],                             // what could not be attributed, and why
//	    "invalid": ["..."]                              // timestamps ignored as invalid data (absent when none)
//	  }],
//	  "summary": {"pods": N, "total_seconds": {"p50": F, "p90": F}, "phases": {"provision": {"p50": F, "p90": F}, ...},
//	              "unattributed_seconds": {...}, "dominant": "pull", "lever": "..."},   // with two or more cold starts
//	  "missing": ["events.json"]                        // bundle files that were absent
//	}
//
// All seconds are rounded to the millisecond; times within a cold start are
// seconds after the pod's creation. Readers must ignore unknown fields:
// later versions of schema 1 only add fields.
type Report struct {
	Version    int         `json:"version"`
	ColdStarts []ColdStart `json:"cold_starts"`
	Summary    *Summary    `json:"summary,omitempty"`
	Missing    []string    `json:"missing,omitempty"`
}

// A ColdStart is one pod's way from creation to Ready.
type ColdStart struct {
	Pod                 string    `json:"pod"`
	Node                string    `json:"node"`
	Created             time.Time `json:"created"`
	Ready               time.Time `json:"ready,omitzero"`
	TotalSeconds        float64   `json:"total_seconds"`
	Phases              Phases    `json:"phases"`
	UnattributedSeconds float64   `json:"unattributed_seconds"`
	Dominant            string    `json:"dominant"`
	Lever               string    `json:"lever"`
	Details             Details   `json:"details"`
	Timeline            []Segment `json:"timeline"`
	Missing             []string  `json:"missing"`
	// Invalid lists the timestamps no cold start can have (in the future,
	// before the pod's creation, a negative duration), each with its file
	// and field; each was ignored, leaving what it bounded to another
	// source or unattributed.
	Invalid []string `json:"invalid,omitempty"`
}

// Phases holds the seconds attributed to each phase. A phase no source
// explains is 0 and its time is in UnattributedSeconds.
type Phases struct {
	Provision float64 `json:"provision"`
	Pull      float64 `json:"pull"`
	Load      float64 `json:"load"`
	Warmup    float64 `json:"warmup"`
}

// Get returns the named phase's seconds (Unattributed is not a phase).
func (p Phases) Get(name string) float64 {
	switch name {
	case Provision:
		return p.Provision
	case Pull:
		return p.Pull
	case Load:
		return p.Load
	case Warmup:
		return p.Warmup
	}
	return 0
}

func (p *Phases) add(name string, s float64) {
	switch name {
	case Provision:
		p.Provision += s
	case Pull:
		p.Pull += s
	case Load:
		p.Load += s
	case Warmup:
		p.Warmup += s
	}
}

// A Segment is a stretch of the timeline, in seconds after pod creation,
// attributed to one phase or "unattributed". Segments are ordered, do not
// overlap and cover [0, total_seconds].
type Segment struct {
	Phase string  `json:"phase"`
	Start float64 `json:"start"`
	End   float64 `json:"end"`
	// Note names, for unattributed segments, the events on either side
	// ("scheduled → pull started: sandbox, volumes").
	Note string `json:"note,omitempty"`
}

// Details says where each phase's boundaries came from and itemises it.
type Details struct {
	Provision PhaseDetail `json:"provision"`
	Pull      PhaseDetail `json:"pull"`
	Load      PhaseDetail `json:"load"`
	Warmup    PhaseDetail `json:"warmup"`
	// ScaleUp is set when the pod's node was created after the pod.
	ScaleUp *ScaleUp `json:"scale_up,omitempty"`
	// Images lists each container's image pull.
	Images []ImagePull `json:"images,omitempty"`
	// Container is the serving container whose start and log timed load.
	Container   string   `json:"container,omitempty"`
	VLLMVersion string   `json:"vllm_version,omitempty"`
	Notes       []string `json:"notes,omitempty"`
}

// A PhaseDetail gives the sources of a phase's start and end, and its steps.
type PhaseDetail struct {
	Known bool   `json:"known"`
	From  string `json:"from,omitempty"`
	To    string `json:"to,omitempty"`
	// Steps itemise the phase. Provision steps add up to the phase; load
	// and warmup steps are what the logs state, and may overlap (vLLM's
	// "init engine" includes profiling, torch.compile and graph capture).
	Steps []Step `json:"steps,omitempty"`
}

// A Step is one itemised part of a phase.
type Step struct {
	Name    string  `json:"name"`
	Seconds float64 `json:"seconds"`
	GiB     float64 `json:"gib,omitempty"`
	// At is when the step ended (or its line was logged), in seconds after
	// pod creation.
	At     float64 `json:"at"`
	Source string  `json:"source"`
}

// ScaleUp describes the wait for a new node.
type ScaleUp struct {
	// Trigger is "cluster-autoscaler" (TriggeredScaleUp), "karpenter"
	// (Nominated) or "" when no event says who added the node.
	Trigger string `json:"trigger"`
	// Target is the node group ("gpu-pool 0->1 (max: 4)") or the node claim
	// ("nodeclaim/default-x7k2p").
	Target           string   `json:"target,omitempty"`
	TriggeredAt      *float64 `json:"triggered_at,omitempty"`
	NodeCreatedAt    float64  `json:"node_created_at"`
	NodeReadyAt      *float64 `json:"node_ready_at,omitempty"`
	GPUAllocatableAt *float64 `json:"gpu_allocatable_at,omitempty"`
}

// An ImagePull is one container's image pull.
type ImagePull struct {
	Container string `json:"container"`
	Image     string `json:"image"`
	Cached    bool   `json:"cached"`
	// Seconds is the pull including kubelet's wait for other pulls; Start
	// and End place it after pod creation (before clipping to the phase).
	Seconds     float64 `json:"seconds"`
	PullSeconds float64 `json:"pull_seconds,omitempty"`
	Bytes       int64   `json:"bytes,omitempty"`
	Start       float64 `json:"start"`
	End         float64 `json:"end"`
	Source      string  `json:"source"`
}

// A Summary gives percentiles over the cold starts of a report with two or
// more. Percentiles interpolate linearly between the nearest ranks.
type Summary struct {
	Pods         int             `json:"pods"`
	Total        Stat            `json:"total_seconds"`
	Phases       map[string]Stat `json:"phases"`
	Unattributed Stat            `json:"unattributed_seconds"`
	Dominant     string          `json:"dominant"`
	Lever        string          `json:"lever"`
}

// A Stat is a percentile summary in seconds.
type Stat struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	Max float64 `json:"max"`
}

// ReadReport decodes a JSON report and checks its version and its shape:
// a JSON object with "version" and a "cold_starts" list whose entries have
// the fields every report writes (pod, created, total_seconds, phases with
// the four phases, unattributed_seconds). Other JSON that happens to have
// "version": 1 (a benchmark's results, a plan) is refused, not read as a
// report of zeros. A report with no cold starts is well formed.
func ReadReport(r io.Reader) (*Report, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, fmt.Errorf("reading report: %w", err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("decoding report: %w", err)
	}
	if top == nil {
		return nil, errNotReport("it is not a JSON object")
	}
	rawVersion, ok := top["version"]
	if !ok {
		return nil, errNotReport(`no "version"`)
	}
	var version int
	if err := json.Unmarshal(rawVersion, &version); err != nil {
		return nil, errNotReport(`"version" is not a number`)
	}
	if version != Version {
		return nil, fmt.Errorf("report version %d: this modelcar reads version %d", version, Version)
	}
	var cs []map[string]json.RawMessage
	if raw, ok := top["cold_starts"]; !ok || string(raw) == "null" {
		var keys []string
		for k := range top {
			keys = append(keys, strconv.Quote(k))
		}
		slices.Sort(keys)
		return nil, errNotReport(`no "cold_starts" list (its fields: ` + strings.Join(keys, ", ") + ")")
	} else if err := json.Unmarshal(raw, &cs); err != nil {
		return nil, errNotReport(`"cold_starts" is not a list of cold starts`)
	}
	for i, c := range cs {
		var lack []string
		for _, k := range []string{"pod", "created", "total_seconds", "phases", "unattributed_seconds"} {
			if _, ok := c[k]; !ok {
				lack = append(lack, strconv.Quote(k))
			}
		}
		var phases map[string]json.RawMessage
		if raw, ok := c["phases"]; ok && (json.Unmarshal(raw, &phases) != nil || phases == nil) {
			lack = append(lack, `"phases" as an object`)
		} else if ok {
			for _, ph := range PhaseNames {
				if _, ok := phases[ph]; !ok {
					lack = append(lack, strconv.Quote("phases."+ph))
				}
			}
		}
		if len(lack) > 0 {
			return nil, errNotReport(fmt.Sprintf("cold_starts[%d] lacks %s", i, strings.Join(lack, ", ")))
		}
	}
	var rep Report
	if err := json.Unmarshal(data, &rep); err != nil {
		return nil, fmt.Errorf("decoding report: %w", err)
	}
	if err := checkSeconds(&rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// checkSeconds refuses a report whose durations are negative: measure
// never writes one, and compare and plan would read it as a cold start
// faster than nothing ("no regression", "-8500.0 s").
func checkSeconds(rep *Report) error {
	for i, c := range rep.ColdStarts {
		fields := []struct {
			name string
			s    float64
		}{{"total_seconds", c.TotalSeconds}, {"unattributed_seconds", c.UnattributedSeconds}}
		for _, ph := range PhaseNames {
			fields = append(fields, struct {
				name string
				s    float64
			}{"phases." + ph, c.Phases.Get(ph)})
		}
		for _, f := range fields {
			if f.s < 0 {
				return fmt.Errorf("cold_starts[%d].%s is negative (%g s): not a valid report, a duration is never below 0", i, f.name, f.s)
			}
		}
	}
	return nil
}

func errNotReport(why string) error {
	return fmt.Errorf("not a cold-start report (modelcar measure --format json): %s", why)
}

func percentile(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	pos := p * float64(len(sorted)-1)
	lo := int(math.Floor(pos))
	hi := min(lo+1, len(sorted)-1)
	return round3(sorted[lo] + (sorted[hi]-sorted[lo])*(pos-float64(lo)))
}

func stat(vals []float64) Stat {
	s := slices.Clone(vals)
	slices.Sort(s)
	if len(s) == 0 {
		return Stat{}
	}
	return Stat{P50: percentile(s, .5), P90: percentile(s, .9), Max: s[len(s)-1]}
}

func summarize(cs []ColdStart) *Summary {
	if len(cs) < 2 {
		return nil
	}
	s := &Summary{Pods: len(cs), Phases: map[string]Stat{}}
	col := func(f func(c *ColdStart) float64) []float64 {
		var v []float64
		for i := range cs {
			v = append(v, f(&cs[i]))
		}
		return v
	}
	s.Total = stat(col(func(c *ColdStart) float64 { return c.TotalSeconds }))
	s.Unattributed = stat(col(func(c *ColdStart) float64 { return c.UnattributedSeconds }))
	var p50 Phases
	for _, ph := range PhaseNames {
		st := stat(col(func(c *ColdStart) float64 { return c.Phases.Get(ph) }))
		s.Phases[ph] = st
		p50.add(ph, st.P50)
	}
	s.Dominant = dominant(p50, s.Unattributed.P50)
	s.Lever = lever(s.Dominant, nil)
	for i := range cs {
		if cs[i].Dominant == s.Dominant {
			s.Lever = cs[i].Lever // refined by that cold start's details
			break
		}
	}
	return s
}

func dominant(p Phases, unattributed float64) string {
	best, bestS := Unattributed, unattributed
	for _, ph := range PhaseNames {
		if s := p.Get(ph); s > bestS || (best == Unattributed && s == bestS && s > 0) {
			best, bestS = ph, s
		}
	}
	return best
}

// lever says what fixes a phase, refined by the cold start's details when
// given.
func lever(phase string, c *ColdStart) string {
	switch phase {
	case Provision:
		if c != nil && c.Details.ScaleUp != nil {
			return "keep a warm GPU node ready: node-pool warmer (modelcar warm pool) instead of scaling up from zero"
		}
		return "free GPU capacity before the pod arrives: node-pool warmer (modelcar warm pool)"
	case Pull:
		return "pre-pull the image on GPU nodes (modelcar warm prepull), or pull lazily (modelcar pack --format zstd-chunked --prefetch all; needs the stargz snapshotter or CRI-O)"
	case Load:
		return "load faster: a pack format matching the load order, or a streaming loader (vllm --load-format runai_streamer)"
	case Warmup:
		if c != nil {
			for _, st := range c.Details.Warmup.Steps {
				if st.Name == markTorchCompile && st.Seconds >= c.Phases.Warmup/3 {
					return "keep vLLM's compile cache (VLLM_CACHE_ROOT on a persistent volume) and add a warm-up probe"
				}
				if st.Name == "readiness lag" && st.Seconds >= c.Phases.Warmup/2 {
					return "the readiness probe lags the server: lower its periodSeconds/initialDelaySeconds, or use the warm-up probe"
				}
			}
		}
		return "warm up before Ready: warm-up probe, and a persistent compile cache (VLLM_CACHE_ROOT)"
	}
	if c != nil && len(c.Missing) > 0 {
		return "collect what is missing so the time can be attributed: " + c.Missing[0]
	}
	return "collect what is missing so the time can be attributed (events expire after about an hour; logs need --timestamps)"
}

func round3(f float64) float64 { return math.Round(f*1000) / 1000 }

func seconds(d time.Duration) float64 { return float64(d.Milliseconds()) / 1000 }
