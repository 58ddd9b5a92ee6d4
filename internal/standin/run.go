package standin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// VLLMVersion is the vLLM whose log lines and HTTP API the stand-in
// imitates; it reports itself as VLLMVersion+standin.
const VLLMVersion = "0.11.0"

// Options are what Run needs besides the context.
type Options struct {
	// Args is vLLM serve's command line, without the program name.
	Args []string
	// Getenv reads the environment (VLLM_API_KEY, VLLM_CACHE_ROOT, HOME
	// and the STANDIN_* settings); nil is os.Getenv.
	Getenv func(string) string
	// Log receives vLLM's log (the container's stdout).
	Log io.Writer
	// Version is the stand-in's own version, logged once.
	Version string
	// Listening, when set, is called with the bound address once the server
	// accepts connections (/health answers 503), before the weights are
	// read; start-up goes on when it returns.
	Listening func(addr net.Addr)
}

// shutdownGrace bounds how long a stop waits for requests in flight.
const shutdownGrace = 5 * time.Second

// Run is one vLLM start-up and the serving after it, until ctx ends: it
// reads the model's config.json, listens, reads every weight file, then
// simulates torch.compile and CUDA graph capture, logging each step in
// vLLM's words with the durations it measured, and turns /health to 200.
// When ctx ends (SIGTERM) it stops serving, logs uvicorn's shutdown lines
// and returns nil; an error is a start-up that failed (bad arguments or
// settings, a missing or broken model file, a port in use).
func Run(ctx context.Context, o Options) error {
	getenv := o.Getenv
	if getenv == nil {
		getenv = os.Getenv
	}
	args, err := ParseArgs(o.Args)
	if err != nil {
		return err
	}
	set, err := SettingsFromEnv(getenv)
	if err != nil {
		return err
	}
	if args.APIKey == "" {
		args.APIKey = getenv("VLLM_API_KEY")
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	l := &logger{w: o.Log, pid: os.Getpid(), now: time.Now}
	l.logf(apiServer, "INFO", "api_server.py:1839", "vLLM API server version %s+standin", VLLMVersion)
	l.logf(apiServer, "INFO", "api_server.py:1840", "modelcar vllm-standin %s: a test stand-in for vLLM; it reads the weights and serves no model", o.Version)
	l.logf(apiServer, "INFO", "utils.py:233", "non-default args: {%s}", strings.Join(args.NonDefault, ", "))
	for _, f := range args.Ignored {
		l.logf(apiServer, "WARNING", "arg_utils.py:1738", "vllm-standin ignores %s", f)
	}

	cfg, err := ReadModelConfig(args.Model)
	if err != nil {
		return fmt.Errorf("reading the model's config: %w", err)
	}
	maxLen := args.MaxModelLen
	if maxLen == 0 {
		maxLen = cfg.MaxPositionEmbeddings
	}
	api := NewAPI(APIConfig{Model: args.ServedModelNames[0], MaxModelLen: maxLen, Version: VLLMVersion + "+standin",
		APIKey: args.APIKey, MaxNumSeqs: args.MaxNumSeqs, SlowRequests: set.SlowRequests,
		FirstRequestDelay: set.FirstRequest, SteadyDelay: set.Request})

	host := args.Host
	if host == "" {
		host = "0.0.0.0"
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(host, strconv.Itoa(args.Port)))
	if err != nil {
		return err
	}
	var h http.Handler = api
	if !args.DisableAccessLog {
		h = accessLog(l, api)
	}
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
	parent := ctx
	ctx, stop := context.WithCancelCause(ctx)
	defer stop(nil)
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			stop(fmt.Errorf("serving: %w", err))
		}
	}()
	if o.Listening != nil {
		o.Listening(ln.Addr())
	}

	err = startUp(ctx, l, args, cfg, set, getenv)
	if err == nil {
		l.logf(apiServer, "INFO", "api_server.py:1880", "Starting vLLM API server 0 on http://%s", ln.Addr())
		l.uvicorn("Started server process [%d]", l.pid)
		l.uvicorn("Waiting for application startup.")
		l.uvicorn("Application startup complete.")
		api.Ready()
		<-ctx.Done()
	}
	switch {
	case parent.Err() != nil:
		err = nil // stopped, while starting up or after
	case ctx.Err() != nil:
		err = context.Cause(ctx) // serving failed
	}
	down, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownGrace)
	defer cancel()
	l.uvicorn("Shutting down")
	l.uvicorn("Waiting for application shutdown.")
	srv.Shutdown(down)
	l.uvicorn("Application shutdown complete.")
	l.uvicorn("Finished server process [%d]", l.pid)
	return err
}

// startUp is the engine's start-up: load the weights, compile, capture
// graphs. "Model loading took" states the weights' bytes per GPU (the
// files' size over the tensor-parallel size) and the time from the start
// of the load, weight file selection included.
func startUp(ctx context.Context, l *logger, args Args, cfg ModelConfig, set Settings, getenv func(string) string) error {
	arch := "unknown"
	if len(cfg.Architectures) > 0 {
		arch = cfg.Architectures[0]
	}
	l.logf(engineCore, "INFO", "core.py:77", "Initializing a V1 LLM engine (v%s+standin) with config: model=%q, architecture=%s, load_format=%s, tensor_parallel_size=%d, enforce_eager=%t",
		VLLMVersion, args.Model, arch, args.LoadFormat, args.TensorParallel, args.EnforceEager)
	l.logf(engineCore, "INFO", "gpu_model_runner.py:2602", "Starting to load model %s...", args.Model)
	loadStart := time.Now()
	names, err := WeightFiles(args.Model, args.LoadFormat)
	if err != nil {
		return err
	}
	var files []WeightFile
	if args.LoadFormat == "dummy" {
		// Random weights: nothing read, but the memory is the checkpoint's.
		if files, err = statFiles(args.Model, "*.safetensors"); err != nil {
			return err
		}
	} else {
		weightsStart := time.Now()
		done := 0
		files, err = ReadWeights(ctx, args.Model, names, streams(args.LoadFormat), func(WeightFile) {
			done++
			el := time.Since(weightsStart)
			l.write(fmt.Sprintf("Loading %s checkpoint shards: %3d%% Completed | %d/%d [%s<%s, %5.2fs/it]\n", kind(names[0]),
				100*done/len(names), done, len(names), clock(el), clock(el/time.Duration(done)*time.Duration(len(names)-done)),
				el.Seconds()/float64(done)))
		})
		if err != nil {
			return err
		}
		l.logf(engineCore, "INFO", "default_loader.py:267", "Loading weights took %.6f seconds", time.Since(weightsStart).Seconds())
	}
	var bytes int64
	for _, f := range files {
		bytes += f.Size
	}
	gib := float64(bytes) / float64(args.TensorParallel) / (1 << 30)
	l.logf(engineCore, "INFO", "gpu_model_runner.py:2653", "Model loading took %.4f GiB and %.6f seconds", gib, time.Since(loadStart).Seconds())

	engineStart := time.Now()
	if !args.EnforceEager {
		if err := compile(ctx, l, set, cacheDir(getenv, args, files)); err != nil {
			return err
		}
	}
	if !args.EnforceEager {
		start := time.Now()
		if err := sleep(ctx, set.Graph); err != nil {
			return err
		}
		l.logf(engineCore, "INFO", "gpu_model_runner.py:3480", "Graph capturing finished in %.2f secs, took %.2f GiB", time.Since(start).Seconds(), graphGiB)
	}
	l.logf(engineCore, "INFO", "core.py:210", "init engine (profile, create kv cache, warmup model) took %.2f seconds", time.Since(engineStart).Seconds())
	return nil
}

// compile simulates torch.compile with vLLM's compile cache in dir (none
// when ""): a hit loads the compiled graphs instead of compiling them.
func compile(ctx context.Context, l *logger, set Settings, dir string) error {
	if dir != "" {
		l.logf(engineCore, "INFO", "backends.py:530", "Using cache directory: %s for vLLM's torch.compile", dir)
	}
	start := time.Now()
	if err := sleep(ctx, time.Duration(dynamoShare*float64(set.Compile))); err != nil {
		return err
	}
	l.logf(engineCore, "INFO", "backends.py:548", "Dynamo bytecode transform time: %.2f s", time.Since(start).Seconds())
	marker := filepath.Join(dir, "standin-compiled")
	if _, err := os.Stat(marker); dir != "" && err == nil {
		t := time.Now()
		if err := sleep(ctx, time.Duration(cacheLoadShare*float64(set.Compile))); err != nil {
			return err
		}
		l.logf(engineCore, "INFO", "backends.py:161", "Directly load the compiled graph(s) for dynamic shape from the cache, took %.3f s", time.Since(t).Seconds())
	} else {
		t := time.Now()
		if err := sleep(ctx, time.Duration((1-dynamoShare)*float64(set.Compile))); err != nil {
			return err
		}
		l.logf(engineCore, "INFO", "backends.py:215", "Compiling a graph for dynamic shape takes %.2f s", time.Since(t).Seconds())
		if dir != "" {
			if err := writeMarker(dir, marker); err != nil {
				l.logf(engineCore, "WARNING", "backends.py:205", "cannot store the compiled graph in the cache: %v", err)
			}
		}
	}
	l.logf(engineCore, "INFO", "monitor.py:34", "torch.compile takes %.2f s in total", time.Since(start).Seconds())
	return nil
}

// cacheDir is where vLLM keeps this model's compiled graphs:
// VLLM_CACHE_ROOT (default $HOME/.cache/vllm)/torch_compile_cache/HASH,
// the hash over what a compile depends on. "" when there is no root.
func cacheDir(getenv func(string) string, args Args, files []WeightFile) string {
	root := getenv("VLLM_CACHE_ROOT")
	if root == "" {
		if home := getenv("HOME"); home != "" {
			root = filepath.Join(home, ".cache", "vllm")
		}
	}
	if root == "" {
		return ""
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\x00%s\x00%d\x00%d\x00", VLLMVersion, args.Model, args.TensorParallel, args.MaxModelLen)
	for _, f := range files {
		fmt.Fprintf(h, "%s\x00%d\x00", f.Name, f.Size)
	}
	return filepath.Join(root, "torch_compile_cache", hex.EncodeToString(h.Sum(nil))[:10], "rank_0_0")
}

func writeMarker(dir, marker string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(marker, []byte("compiled by vllm-standin\n"), 0o644)
}

// statFiles lists the files matching pattern at the top of dir with their
// sizes, reading none.
func statFiles(dir, pattern string) ([]WeightFile, error) {
	names, err := glob(dir, pattern)
	if err != nil {
		return nil, err
	}
	var files []WeightFile
	for _, n := range names {
		st, err := os.Stat(filepath.Join(dir, n))
		if err != nil {
			return nil, err
		}
		files = append(files, WeightFile{Name: n, Size: st.Size()})
	}
	return files, nil
}

// kind names a checkpoint's format as vLLM's progress bar does.
func kind(name string) string {
	if strings.HasSuffix(name, ".safetensors") {
		return "safetensors"
	}
	return "pt"
}

// clock is tqdm's MM:SS.
func clock(d time.Duration) string {
	s := int(d.Round(time.Second) / time.Second)
	return fmt.Sprintf("%02d:%02d", s/60, s%60)
}

// sleep waits d, or until ctx ends.
func sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// accessLog logs each request as uvicorn does:
// `INFO:     127.0.0.1:53412 - "GET /health HTTP/1.1" 200 OK`.
func accessLog(l *logger, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		next.ServeHTTP(sw, r)
		l.uvicorn("%s - %q %d %s", r.RemoteAddr, r.Method+" "+r.URL.RequestURI()+" "+r.Proto, sw.status, http.StatusText(sw.status))
	})
}

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

// DefaultStreamerConcurrency is how many readers the Run:ai model streamer
// runs at once unless RUNAI_STREAMER_CONCURRENCY says otherwise (its
// default).
const DefaultStreamerConcurrency = 16

// streams is how many readers load the weights: one (safetensors' mmap) but
// for --load-format runai_streamer, which reads with
// RUNAI_STREAMER_CONCURRENCY (default 16) readers at once.
func streams(loadFormat string) int {
	if loadFormat != "runai_streamer" {
		return 1
	}
	if n, err := strconv.Atoi(os.Getenv("RUNAI_STREAMER_CONCURRENCY")); err == nil && n > 0 && n <= 256 {
		return n
	}
	return DefaultStreamerConcurrency
}
