// Command vllm-standin is a test-only stand-in for vLLM's OpenAI-compatible
// server (internal/standin): it takes `vllm serve`'s command line, reads
// every weight file of the model for real, simulates torch.compile and CUDA
// graph capture, logs each step in vLLM's words, and serves vLLM's HTTP API
// until SIGTERM or SIGINT, when it exits 0. It serves no model: completions
// are placeholder tokens. `make standin-image` puts it in an image at
// /usr/local/bin/vllm-standin, its entrypoint, for the vllm-modelcar chart:
//
//	vllm:
//	  image: {repository: REGISTRY/vllm-standin, tag: VERSION}
//	  command: []          # or [/usr/local/bin/vllm-standin]
//	  env:
//	    - {name: STANDIN_COMPILE_SECONDS, value: "30"}
//	    - {name: STANDIN_GRAPH_SECONDS, value: "10"}
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/modelcar/modelcar/internal/standin"
)

var version = "devel"

func main() {
	if len(os.Args) == 2 && (os.Args[1] == "--version" || os.Args[1] == "version") {
		fmt.Printf("vllm-standin %s (vLLM %s)\n", version, standin.VLLMVersion)
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := standin.Run(ctx, standin.Options{Args: os.Args[1:], Log: os.Stdout, Version: version}); err != nil {
		fmt.Fprintf(os.Stderr, "vllm-standin: ERROR: %v\n", err)
		os.Exit(1)
	}
}
