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
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/modelcar/modelcar/internal/redact"
	"github.com/modelcar/modelcar/internal/ref"
	"github.com/modelcar/modelcar/pack"
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
	// Bad flags (unknown, or a value that does not parse) are usage errors,
	// in every subcommand: they inherit the root's flag error function.
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newPackCmd(), newInspectCmd(), newPushCmd(), newPullCmd(), newMirrorCmd(), newVerifyCmd(), newLoginCmd(), newWarmCmd(), newMeasureCmd(), newPlanCmd(), newDeployCmd())
	return root
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := execute(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// execute runs modelcar with args and returns its exit status: 0, 1 for
// failures, 2 for usage errors (see usageError).
func execute(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	// Whatever a command prints, no credential it holds: those read from
	// stdin are added as read, those sent to a registry as sent.
	stdout, stderr = redact.NewWriter(stdout), redact.NewWriter(stderr)
	root := newRootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return 0
	}
	if ctx.Err() != nil {
		// After SIGINT or SIGTERM the command's own error is whatever the
		// cancellation broke first (a closed temporary file, say): say why.
		err = fmt.Errorf("interrupted (%w); what was being written is not published", context.Cause(ctx))
	}
	err = asUsageError(err)
	fmt.Fprintln(stderr, "Error:", err)
	if hint := hintFor(err); hint != "" {
		fmt.Fprintln(stderr, "Hint:", hint)
	}
	var ue usageError
	if errors.As(err, &ue) {
		return 2
	}
	return 1
}

// asUsageError marks as usage errors cobra's errors for an unknown command
// and the reference parser's for a registry reference without a registry
// host (such as ./out or qwen:v1).
func asUsageError(err error) error {
	var ue usageError
	if errors.As(err, &ue) {
		return err
	}
	switch {
	case strings.HasPrefix(err.Error(), "unknown command "):
		// cobra's error for an unknown subcommand of the root, and
		// cobra.NoArgs's for a stray argument: plain errors, this text.
		return usageError{err}
	case errors.Is(err, ref.ErrNotRegistry):
		return usageError{err}
	}
	return err
}

// hintFor suggests the fix for errors users meet often.
func hintFor(err error) string {
	msg := err.Error()
	var lr loginRejected
	var ext *pack.ExternalSymlinkError
	switch {
	case errors.As(err, &ext):
		return fmt.Sprintf("if %s is meant to be packed, add --follow-external-symlinks (or copy the file into the model directory)", ext.Resolved)
	case errors.As(err, &lr):
		return fmt.Sprintf("check the user name and the password or token given on stdin; nothing was saved for %s", lr.host)
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
