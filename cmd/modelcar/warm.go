package main

import (
	"encoding/json"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/modelcar/modelcar/warm"
)

func newWarmCmd() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "warm",
		Short: "Make inference pods warm before they take traffic",
		Long: `Warm holds what makes a pod ready to serve at full speed when Kubernetes
routes traffic to it: 'warm prepull' puts the modelcar on every matching node
before a pod needs it, 'warm pool' keeps GPU nodes provisioned with low-priority
placeholder pods that real pods preempt, 'warm status' reports per node, and
'warm probe' warms vLLM up before the pod reports Ready.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown warm subcommand %q (try 'modelcar warm prepull', 'pool', 'status' or 'probe')", args[0])}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newWarmProbeCmd())
	addWarmK8sCmds(cmd)
	return cmd
}

// probeFlags are the flags of 'warm probe' that set warm.ProbeConfig fields.
var probeFlags = fieldFlags{
	"URL": "--url", "Model": "--model", "Workload": "--workload", "API": "--api",
	"Timeout": "--timeout", "RequestTimeout": "--request-timeout", "Interval": "--interval",
	"RecheckInterval": "--recheck-interval", "APIKey": "--api-key-env",
}

func newWarmProbeCmd() *cobra.Command {
	var (
		cfg                    warm.ProbeConfig
		listen, spec, api, key string
		exec, jsonOut          bool
	)
	cmd := &cobra.Command{
		Use:   "probe [--listen ADDR | --exec]",
		Short: "Warm vLLM up, then report ready (sidecar readiness endpoint or exec probe)",
		Long: `Probe waits for vLLM's /health to answer 200 and for /v1/models to list the
model (--model, or whatever is served first), then sends a warm-up workload
so that compilation, CUDA graph capture and allocator growth happen before
the first user request: steps of PROMPT_TOKENSxMAX_TOKENS@CONCURRENCY, each
step's requests at once so several batch sizes run. Each latency is logged
on stderr as a 'modelcar-warm: ...' line that 'modelcar measure' reads.

--listen ADDR (sidecar): serves /ready (503 until warm, then 200) for the pod's
readinessProbe, /timings (the warm-up timings as JSON) and /healthz; logs the
bound address. A failed warm-up keeps /ready at 503 with the error in its
body. Once warm, /health is rechecked; if vLLM restarts, /ready turns 503 and
the warm-up runs again. Stops on SIGTERM.

--exec: warms up once and exits 0, or 1 with the error. Each run sends the
whole workload, so use it as a startupProbe (timeoutSeconds above --timeout)
or in a script, not as a periodic readinessProbe.

Timeouts and failures are explicit: vLLM never healthy before --timeout (with
the last status it answered), a served model other than --model, a request
without an answer within --request-timeout, a non-2xx answer.`,
		Example: `  # Sidecar beside vLLM: readinessProbe httpGet :8090/ready
  modelcar warm probe --listen :8090 --model meta-llama/Llama-3.1-8B-Instruct

  # startupProbe exec in the vLLM container, with vLLM's --api-key
  modelcar warm probe --exec --api-key-env VLLM_API_KEY --timeout 20m

  # A lighter workload through the chat endpoint
  modelcar warm probe --exec --workload 16x16@1,1024x32@4 --api chat`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError{fmt.Errorf("probe takes no arguments, got %q", args)}
			}
			if (listen == "") == !exec {
				return usageError{fmt.Errorf("choose one of --listen ADDR (sidecar) or --exec (exit status)")}
			}
			if jsonOut && !exec {
				return usageError{fmt.Errorf("--json goes with --exec (in sidecar mode the timings are on /timings)")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			var err error
			if cfg.Workload, err = warm.ParseWorkload(spec); err != nil {
				return usageError{fmt.Errorf("--workload: %w", err)}
			}
			if cfg.API, err = warm.ParseAPI(api); err != nil {
				return usageError{fmt.Errorf("--api: %w", err)}
			}
			if key != "" {
				if cfg.APIKey = os.Getenv(key); cfg.APIKey == "" {
					return usageError{fmt.Errorf("--api-key-env: environment variable %s is empty or unset", key)}
				}
			}
			if err := cfg.Validate(); err != nil {
				return probeFlags.usage(err)
			}
			cfg.Log = cmd.ErrOrStderr()
			if !exec {
				return warm.Serve(cmd.Context(), listen, cfg)
			}
			res, err := warm.Run(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			if jsonOut {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&cfg.URL, "url", warm.DefaultURL, "vLLM's base URL, http://HOST:PORT or https://HOST:PORT")
	fl.StringVar(&cfg.Model, "model", "", "served model name to expect in /v1/models (default: the first listed)")
	fl.StringVar(&listen, "listen", "", "sidecar mode: serve /ready, /timings and /healthz on ADDR (e.g. :8090, 127.0.0.1:0)")
	fl.BoolVar(&exec, "exec", false, "exec mode: warm up once, exit 0 when warm, 1 on failure")
	fl.BoolVar(&jsonOut, "json", false, "with --exec, print the warm-up timings as JSON on stdout")
	fl.DurationVar(&cfg.Timeout, "timeout", warm.DefaultTimeout, "start-up deadline: vLLM healthy, model served and workload done")
	fl.DurationVar(&cfg.RequestTimeout, "request-timeout", warm.DefaultRequestTimeout, "deadline for each warm-up request")
	fl.DurationVar(&cfg.Interval, "interval", warm.DefaultInterval, "poll period of /health and /v1/models")
	fl.DurationVar(&cfg.RecheckInterval, "recheck-interval", warm.DefaultRecheckInterval, "sidecar: /health poll period once warm (negative: never)")
	fl.StringVar(&spec, "workload", warm.DefaultWorkloadSpec, "warm-up steps PROMPT_TOKENSxMAX_TOKENS@CONCURRENCY, comma-separated")
	fl.StringVar(&api, "api", string(warm.Completions), "endpoint: completions, chat or both")
	fl.StringVar(&key, "api-key-env", "", "send the API key in this environment variable as a bearer token (never logged)")
	return cmd
}
