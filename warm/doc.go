// Package warm makes an inference server warm before it takes traffic: the
// pre-pull DaemonSet that puts a modelcar on every matching node (Prepull),
// the GPU node-pool warmer of low-priority placeholder pods (Pool), what
// applying and deleting them needs beyond internal/kube's applier (the pool's
// scheduled replicas yield, ApplyPool's pruning, DeletePrepull and
// DeletePool refusing what modelcar did not create), the pre-pull's
// node-by-node status, and the vLLM warm-up probe (Run, Serve). Rendering,
// applying and connecting belong to internal/kube.
//
// PrepullOptions, PoolOptions and ProbeConfig validate themselves: Validate
// returns a *FieldError naming the first field it refuses (its Go name,
// "Image", "Schedules[1]"), its value and why (ErrNoDigest, ErrRequired),
// and Prepull, Pool, Run and Serve refuse the same options with the same
// error, before anything is rendered or sent. The errors speak of fields,
// never of a CLI's flags: a CLI maps Field to its flag with errors.As.
//
// # Probe
//
// Run waits for vLLM's GET /health to answer 200 (it answers 503 while the
// model loads, and nothing before it listens), reads the served model from
// GET /v1/models (checking it against ProbeConfig.Model when set), then
// sends a warm-up workload to POST /v1/completions and/or
// /v1/chat/completions: steps of several prompt lengths and max_tokens, each
// step's requests sent at once so several batch sizes run. It returns the
// timings, or an error wrapping ErrNotHealthy, ErrModelMismatch,
// ErrRequestTimeout, ErrRequestFailed or ErrTimeout.
//
// Serve runs the same warm-up as a sidecar and answers the pod's
// readinessProbe on /ready (503 until warm, then 200), serves the timings on
// /timings and its own liveness on /healthz. `modelcar warm probe --exec`
// is the exec-probe mode: Run once, exit 0 or 1.
//
// # Log format
//
// The probe logs one line per event. `modelcar measure` reads these lines
// from the sidecar's log, so their formats are a contract, which
// internal/probelog owns: the probe writes its events with probelog and
// measure parses them with probelog.Parse. Every line starts with "modelcar-warm: "; durations D are seconds
// with three decimals and an "s" (12.300s); NAME is a Go-quoted string.
//
//	modelcar-warm: listening on ADDR                      (Serve, the bound address)
//	modelcar-warm: waiting for vLLM at URL (timeout 30m0s)
//	modelcar-warm: waiting after D: WHAT                  (when what /health answers changes)
//	modelcar-warm: healthy after D                        (since the probe started)
//	modelcar-warm: model NAME served after D              (since the probe started)
//	modelcar-warm: step PxM@C: prompt_tokens=P clamped to Q for max_model_len=L
//	modelcar-warm: request prompt_tokens=P max_tokens=M concurrency=C latency=D api=API
//	modelcar-warm: warm-up done in D (N requests)         (first request sent to last answer)
//	modelcar-warm: ready after D                          (since the probe started)
//	modelcar-warm: failed after D: ERROR                  (since the probe started)
//	modelcar-warm: vLLM unhealthy after ready (WHAT); warming up again
//	modelcar-warm: warming up again in D                   (after a failure; /ready stays 503 meanwhile)
//
// One request line is written per request, when its answer is complete;
// P is the prompt length sent (in words of about one token each) and API
// is completions or chat. New key=value fields may be appended to request
// lines; parsers should not anchor at the end of the line.
package warm
