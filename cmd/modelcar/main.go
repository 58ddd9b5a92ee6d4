// Command modelcar packs Hugging Face models into digest-pinned OCI images
// (modelcars) and makes inference pods that use them start fast.
//
// This package only parses flags, wires options into the library packages
// and renders progress and results; the work happens in pack, push, warm,
// measure and deploy.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:   "modelcar",
		Short: "Pack Hugging Face models into digest-pinned OCI images that start fast",
		Long: `modelcar turns a Hugging Face model directory into a reproducible OCI image
(a "modelcar") with the files under /models, laid out for fast pulls.

Results (digests, JSON) go to stdout; progress goes to stderr when it is a terminal.`,
		Example: `  # Pack a model into an OCI image layout and print its digest
  modelcar pack ./Llama-3.1-8B-Instruct --output oci:./llama:v1

  # Lazy-pullable layers for stargz-snapshotter, as an archive for an air gap
  modelcar pack ./model --format estargz --output oci-archive:llama.tar:v1

  # Look at what was packed
  modelcar inspect oci:./llama:v1`,
		Version:       buildVersion(),
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetVersionTemplate("modelcar {{.Version}}\n")
	root.AddCommand(newPackCmd(), newInspectCmd(), newPushCmd(), newPullCmd(), newMirrorCmd(), newVerifyCmd(), newLoginCmd(), newWarmCmd(), newMeasureCmd(), newPlanCmd(), newDeployCmd())
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCmd().ExecuteContext(ctx)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "Error:", err)
		if hint := hintFor(err); hint != "" {
			fmt.Fprintln(os.Stderr, "Hint:", hint)
		}
		var ue usageError
		if errors.As(err, &ue) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// hintFor suggests the fix for errors users meet often.
func hintFor(err error) string {
	msg := err.Error()
	switch {
	case errors.Is(err, auth.ErrBasicCredentialNotFound), strings.Contains(msg, "401 Unauthorized"), strings.Contains(msg, "unauthorized"):
		return "the registry wants credentials: run 'modelcar login REGISTRY -u USER --password-stdin', or pass --username with --password-stdin"
	case strings.Contains(msg, "server gave HTTP response to HTTPS client"):
		return "the registry speaks plain HTTP: add --plain-http"
	case strings.Contains(msg, "x509:") || strings.Contains(msg, "tls: failed to verify certificate"):
		return "the registry's certificate is not trusted: add its CA to the system store, or use --insecure for a test registry"
	}
	return ""
}

// usageError marks errors in how a command was called (exit status 2).
type usageError struct{ error }

func (u usageError) Unwrap() error { return u.error }
