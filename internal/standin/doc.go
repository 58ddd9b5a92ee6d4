// Package standin owns the vLLM stand-in: a test-only server that starts up
// and answers as vLLM does, for clusters where vLLM cannot run (no GPU, no
// Python packages). The vllm-modelcar chart runs it through its vllm.image
// and vllm.command values (internal/cmd/vllm-standin, built into an image by
// `make standin-image`).
//
// Run takes vLLM serve's command line as the chart passes it (ParseArgs:
// --model, --served-model-name, --port, --tensor-parallel-size,
// --load-format, --max-model-len, --gpu-memory-utilization, an optional
// leading "serve" and positional model; other flags are logged and
// ignored). It listens at once, /health answering 503, then does the work
// vLLM's start-up does with the model's files for real: it reads
// config.json, picks the weight files as vLLM's loader does (WeightFiles),
// parses and checks each safetensors header and reads every byte of every
// weight file through a memory map (ReadWeights), so the load takes what the
// disk and the page cache give; with --load-format runai_streamer it reads
// as the Run:ai model streamer does, RUNAI_STREAMER_CONCURRENCY (default 16)
// readers at once, so plan's streaming-load lever can be measured. torch.compile and CUDA graph capture are
// simulated for the durations Settings give (STANDIN_COMPILE_SECONDS,
// STANDIN_GRAPH_SECONDS), with vLLM's compile cache under VLLM_CACHE_ROOT
// turning a compile into a cache load on the next start. Each step is
// logged in vLLM 0.11's words with the durations measured, so modelcar
// measure reads the stand-in's log as it reads vLLM's:
//
//	(EngineCore_DP0 pid=1) INFO 05-01 10:00:02 [default_loader.py:267] Loading weights took 1.843022 seconds
//	(EngineCore_DP0 pid=1) INFO 05-01 10:00:02 [gpu_model_runner.py:2653] Model loading took 2.0001 GiB and 1.851201 seconds
//	(EngineCore_DP0 pid=1) INFO 05-01 10:00:02 [backends.py:548] Dynamo bytecode transform time: 0.30 s
//	(EngineCore_DP0 pid=1) INFO 05-01 10:00:03 [monitor.py:34] torch.compile takes 1.00 s in total
//	(EngineCore_DP0 pid=1) INFO 05-01 10:00:04 [gpu_model_runner.py:3480] Graph capturing finished in 0.50 secs, took 0.25 GiB
//	(EngineCore_DP0 pid=1) INFO 05-01 10:00:04 [core.py:210] init engine (profile, create kv cache, warmup model) took 1.50 seconds
//	(APIServer pid=1) INFO:     Application startup complete.
//
// (The load lines carry more decimals than vLLM's, so that small test
// models still measure.) Then /health answers 200, and API serves
// /v1/models, /v1/completions, /v1/chat/completions, /metrics
// (vllm:num_requests_running, vllm:num_requests_waiting) and /version as
// vLLM does, the first completions slow as a compile warm-up is. The same
// API backs internal/fakevllm, the in-process fake of the unit tests.
package standin
