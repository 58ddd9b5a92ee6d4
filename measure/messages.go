package measure

import (
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/modelcar/modelcar/internal/probelog"
)

// Event message formats (kubelet, cluster-autoscaler, Karpenter, scheduler).

// pulledMessage is a parsed kubelet Pulled event message:
//
//	Successfully pulled image "X" in 1m8.5s (1m8.5s including waiting). Image size: N bytes.
//	Successfully pulled image "X" in 1.234s (older kubelets: no waiting, no size)
//	Container image "X" already present on machine
//	Successfully pulled image (a fixed message naming no image: kwok)
type pulledMessage struct {
	image     string
	cached    bool
	pull      time.Duration // "in X"; 0 when cached or absent
	inclusive time.Duration // "(Y including waiting)", else pull
	bytes     int64
}

func parsePulled(msg string) (pulledMessage, bool) {
	if rest, ok := strings.CutPrefix(msg, "Container image "); ok && strings.Contains(rest, "already present") {
		img, _, _ := cutQuoted(rest)
		return pulledMessage{image: img, cached: true}, true
	}
	if strings.TrimRight(msg, ". ") == "Successfully pulled image" {
		return pulledMessage{}, true // no image named: the caller takes it from the pod
	}
	rest, ok := strings.CutPrefix(msg, "Successfully pulled image ")
	if !ok {
		return pulledMessage{}, false
	}
	img, rest, ok := cutQuoted(rest)
	if !ok {
		return pulledMessage{}, false
	}
	m := pulledMessage{image: img}
	if rest, ok = strings.CutPrefix(rest, " in "); !ok {
		return m, true
	}
	tok, rest, _ := strings.Cut(rest, " ")
	m.pull, _ = time.ParseDuration(strings.TrimRight(tok, ".,"))
	m.inclusive = m.pull
	if r, ok := strings.CutPrefix(rest, "("); ok {
		tok, r, _ = strings.Cut(r, " ")
		if strings.HasPrefix(r, "including waiting") {
			if d, err := time.ParseDuration(tok); err == nil {
				m.inclusive = d
			}
		}
	}
	if _, r, ok := strings.Cut(rest, "Image size: "); ok {
		tok, _, _ := strings.Cut(r, " ")
		m.bytes, _ = strconv.ParseInt(tok, 10, 64)
	}
	return m, true
}

// pullingImage returns X from `Pulling image "X"`, and "" from a fixed
// "Pulling image" that names none (kwok).
func pullingImage(msg string) (string, bool) {
	if strings.TrimRight(msg, ". ") == "Pulling image" {
		return "", true
	}
	rest, ok := strings.CutPrefix(msg, "Pulling image ")
	if !ok {
		return "", false
	}
	img, _, ok := cutQuoted(rest)
	return img, ok
}

// cutQuoted splits `"X" rest` into X and rest.
func cutQuoted(s string) (quoted, rest string, ok bool) {
	if !strings.HasPrefix(s, `"`) {
		return "", s, false
	}
	end := strings.IndexByte(s[1:], '"')
	if end < 0 {
		return "", s, false
	}
	return s[1 : 1+end], s[2+end:], true
}

// containerOf returns NAME from a fieldPath like spec.containers{NAME} or
// spec.initContainers{NAME}.
func containerOf(fieldPath string) string {
	_, rest, ok := strings.Cut(fieldPath, "{")
	if !ok {
		return ""
	}
	name, _, _ := strings.Cut(rest, "}")
	return name
}

// scaleUpTarget extracts what a scale-up event names:
//
//	cluster-autoscaler TriggeredScaleUp: pod triggered scale-up: [{group 0->1 (max: 4)}]
//	Karpenter Nominated: Pod should schedule on: nodeclaim/default-x7k2p
func scaleUpTarget(reason, msg string) (trigger, target string, ok bool) {
	switch {
	case reason == "TriggeredScaleUp" || strings.Contains(msg, "triggered scale-up"):
		_, rest, _ := strings.Cut(msg, "[")
		rest, _, _ = strings.Cut(rest, "]")
		groups := []string{}
		for _, g := range strings.Split(rest, "}") {
			if g = strings.Trim(strings.TrimSpace(g), "{, "); g != "" {
				groups = append(groups, g)
			}
		}
		return "cluster-autoscaler", strings.Join(groups, "; "), true
	case reason == "Nominated" || strings.Contains(msg, "should schedule on"):
		_, rest, _ := strings.Cut(msg, "schedule on:")
		return "karpenter", strings.TrimSpace(rest), true
	}
	return "", "", false
}

// assignedNode returns NODE from the scheduler's
// "Successfully assigned NS/POD to NODE".
func assignedNode(msg string) string {
	i := strings.LastIndex(msg, " to ")
	if !strings.HasPrefix(msg, "Successfully assigned") || i < 0 {
		return ""
	}
	return strings.TrimSpace(msg[i+4:])
}

// vLLM and warm-up probe log lines. Versions word these differently (GB in
// 0.5-0.7, GiB later; "memory" in 0.11; secs/seconds/s), so the patterns
// match the stable core of each line anywhere in it, after any
// "(APIServer pid=1) INFO 05-01 10:00:00 [file.py:123]" prefix.
var (
	num = `([0-9]+(?:\.[0-9]+)?)`
	sec = `\s*s(?:ec(?:ond)?s?)?\b`
	mem = `\s*(GiB|GB|MiB|MB)`

	reModelLoading   = regexp.MustCompile(`Model loading took\s+` + num + mem + `(?:\s+memory)?\s+and\s+` + num + sec)
	reLoadingWeights = regexp.MustCompile(`Loading weights took\s+` + num + sec)
	reModelWeights   = regexp.MustCompile(`Loading model weights took\s+` + num + mem)
	reTorchCompile   = regexp.MustCompile(`torch\.compile takes\s+` + num + sec + `\s+in total`)
	reCompileCache   = regexp.MustCompile(`load the compiled graph.*from the cache, took\s+` + num + sec)
	reDynamo         = regexp.MustCompile(`Dynamo bytecode transform time:\s*` + num + sec)
	reGraphCapture   = regexp.MustCompile(`Graph capturing finished in\s+` + num + sec + `(?:,\s*took\s+` + num + mem + `)?`)
	reInitEngine     = regexp.MustCompile(`init engine \([^)]*\) took\s+` + num + sec)
	reMemProfile     = regexp.MustCompile(`Memory profiling takes\s+` + num + sec)
	reKVCacheGiB     = regexp.MustCompile(`Available KV cache memory:\s*` + num + mem)
	reKVTokens       = regexp.MustCompile(`GPU KV cache size:\s*([0-9,]+) tokens`)
	reGPUBlocks      = regexp.MustCompile(`# GPU blocks:\s*([0-9]+)`)
	reVersion        = regexp.MustCompile(`vLLM API server version:?\s*v?([0-9][0-9A-Za-z.+\-]*)`)
)

// warmDone reads the line the modelcar warm-up probe writes when it is
// done ("modelcar-warm: warm-up done in S (N requests)", parsed by
// internal/probelog, which owns the probe's formats): its timestamp ends
// the probe step of warmup, and S is its duration.
func warmDone(t string, m *vllmMark) bool {
	ev, ok := probelog.Parse(t)
	if !ok || ev.Kind != probelog.Done {
		return false
	}
	m.seconds = ev.Duration.Seconds()
	return true
}

// vllmMark is one recognised log line.
type vllmMark struct {
	kind    string // see the mark* constants
	at      time.Time
	seconds float64 // the duration the line states, or 0
	gib     float64 // memory the line states, in GiB, or 0
	text    string
	line    int
	file    string
}

const (
	markModelLoading   = "model loading"
	markLoadingWeights = "loading weights"
	markModelWeights   = "model weights"
	markTorchCompile   = "torch.compile"
	markCompileCache   = "compile cache"
	markDynamo         = "dynamo transform"
	markGraphCapture   = "graph capture"
	markInitEngine     = "init engine"
	markMemProfile     = "memory profiling"
	markKVCache        = "kv cache"
	markStartup        = "api server up"
	markWarm           = "warm-up probe"
	markVersion        = "version"
)

// scanLog returns the vLLM and warm-up lines it recognises in one log.
func scanLog(l *Log) []vllmMark {
	var marks []vllmMark
	for i, ln := range l.Lines {
		t := ln.Text
		if !strings.Contains(t, "took") && !strings.Contains(t, "takes") && !strings.Contains(t, "finished") &&
			!strings.Contains(t, "complete") && !strings.Contains(t, "KV cache") && !strings.Contains(t, "blocks") &&
			!strings.Contains(t, "version") && !strings.Contains(t, "transform") && !strings.Contains(t, probelog.Prefix) {
			continue
		}
		m := vllmMark{at: ln.Time, text: strings.TrimSpace(t), line: i + 1, file: l.File}
		switch {
		case match(reModelLoading, t, &m, 3, 1, 2):
			m.kind = markModelLoading
		case match(reLoadingWeights, t, &m, 1, 0, 0):
			m.kind = markLoadingWeights
		case match(reModelWeights, t, &m, 0, 1, 2):
			m.kind = markModelWeights
		case match(reTorchCompile, t, &m, 1, 0, 0):
			m.kind = markTorchCompile
		case match(reCompileCache, t, &m, 1, 0, 0):
			m.kind = markCompileCache
		case match(reDynamo, t, &m, 1, 0, 0):
			m.kind = markDynamo
		case match(reGraphCapture, t, &m, 1, 2, 3):
			m.kind = markGraphCapture
		case match(reInitEngine, t, &m, 1, 0, 0):
			m.kind = markInitEngine
		case match(reMemProfile, t, &m, 1, 0, 0):
			m.kind = markMemProfile
		case match(reKVCacheGiB, t, &m, 0, 1, 2), match(reKVTokens, t, &m, 0, 0, 0), match(reGPUBlocks, t, &m, 0, 0, 0):
			m.kind = markKVCache
		case strings.Contains(t, "Application startup complete"):
			m.kind = markStartup
		case warmDone(t, &m):
			m.kind = markWarm
		case match(reVersion, t, &m, 0, 0, 0):
			m.kind = markVersion
			m.text = reVersion.FindStringSubmatch(t)[1]
		default:
			continue
		}
		marks = append(marks, m)
	}
	return marks
}

// match applies re to t and fills m's seconds and GiB from the numbered
// groups (0: none).
func match(re *regexp.Regexp, t string, m *vllmMark, secGroup, memGroup, unitGroup int) bool {
	g := re.FindStringSubmatch(t)
	if g == nil {
		return false
	}
	if secGroup > 0 {
		m.seconds, _ = strconv.ParseFloat(g[secGroup], 64)
	}
	if memGroup > 0 && g[memGroup] != "" {
		v, _ := strconv.ParseFloat(g[memGroup], 64)
		if u := g[unitGroup]; u == "MiB" || u == "MB" {
			v /= 1024 // vLLM's "GB" and "MB" are powers of 1024 too
		}
		m.gib = v
	}
	return true
}
