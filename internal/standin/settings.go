package standin

import (
	"fmt"
	"math"
	"strconv"
	"time"
)

// Settings are the stand-in's own knobs, read from the environment (the
// chart's vllm.env), since the command line is vLLM's.
type Settings struct {
	// Compile is how long the simulated torch.compile takes on a cold
	// compile cache (STANDIN_COMPILE_SECONDS, default 1): the first 30% is
	// the dynamo bytecode transform, which also runs on a cache hit; a cache
	// hit then loads the compiled graphs in 10% of it instead of compiling.
	Compile time.Duration
	// Graph is how long CUDA graph capture takes (STANDIN_GRAPH_SECONDS,
	// default 0.5).
	Graph time.Duration
	// SlowRequests completions after start-up take FirstRequest
	// (STANDIN_SLOW_REQUESTS, default 2; STANDIN_FIRST_REQUEST_SECONDS,
	// default 0.5), as vLLM's first batches do; the others take Request
	// (STANDIN_REQUEST_SECONDS, default 0.01).
	SlowRequests int
	FirstRequest time.Duration
	Request      time.Duration
}

// The simulated compile's parts, as fractions of Settings.Compile.
const (
	dynamoShare    = 0.3
	cacheLoadShare = 0.1
)

// graphGiB is the memory CUDA graph capture reports.
const graphGiB = 0.25

// The settings' environment variables.
const (
	EnvCompileSeconds      = "STANDIN_COMPILE_SECONDS"
	EnvGraphSeconds        = "STANDIN_GRAPH_SECONDS"
	EnvSlowRequests        = "STANDIN_SLOW_REQUESTS"
	EnvFirstRequestSeconds = "STANDIN_FIRST_REQUEST_SECONDS"
	EnvRequestSeconds      = "STANDIN_REQUEST_SECONDS"
)

// SettingsFromEnv reads the settings with getenv; an unset or empty
// variable keeps its default. Errors name the variable.
func SettingsFromEnv(getenv func(string) string) (Settings, error) {
	s := Settings{Compile: time.Second, Graph: 500 * time.Millisecond, SlowRequests: 2,
		FirstRequest: 500 * time.Millisecond, Request: 10 * time.Millisecond}
	for _, d := range []struct {
		name string
		to   *time.Duration
	}{{EnvCompileSeconds, &s.Compile}, {EnvGraphSeconds, &s.Graph}, {EnvFirstRequestSeconds, &s.FirstRequest}, {EnvRequestSeconds, &s.Request}} {
		v := getenv(d.name)
		if v == "" {
			continue
		}
		f, err := strconv.ParseFloat(v, 64)
		if err != nil || f < 0 || math.IsInf(f, 0) || math.IsNaN(f) || f > 1e6 {
			return Settings{}, fmt.Errorf("%s=%q: want seconds, 0 or more (such as 1.5)", d.name, v)
		}
		*d.to = time.Duration(f * float64(time.Second))
	}
	if v := getenv(EnvSlowRequests); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return Settings{}, fmt.Errorf("%s=%q: want a count, 0 or more", EnvSlowRequests, v)
		}
		s.SlowRequests = n
	}
	return s, nil
}
