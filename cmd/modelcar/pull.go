package main

import (
	"fmt"

	"github.com/spf13/cobra"

	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

func newPullCmd() *cobra.Command {
	var (
		f        transferFlags
		prefix   string
		platform = newPlatformValue("linux/amd64")
	)
	cmd := &cobra.Command{
		Use:   "pull REF DIR",
		Short: "Extract a modelcar's model files into a directory",
		Long: `Pull downloads the layers of REF (a registry reference, oci:PATH or
oci-archive:FILE) in parallel and streams the files under /models into DIR.
Every blob digest and diffID is verified; nothing is written outside DIR (paths
with .., absolute paths, escaping links and device files are refused); files
appear under their names only when their layer is complete. Re-running an
interrupted pull skips the layers already in place; the state for that, and the
stamp of a complete pull, is kept beside DIR (PARENT/.NAME.modelcar-pull.json),
so DIR holds the model alone. DIR must be new or empty.
Prints the pinned reference of REF on stdout (REPO@sha256:...; for a
multi-platform image, the index's digest, not the platform image's).`,
		Example: `  # In an init container: copy the model to a node-local cache path
  modelcar pull registry.example.com/models/llama@sha256:4f1c... /cache/llama

  # On a laptop, from an archive
  modelcar pull oci-archive:llama.tar ./llama`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError{fmt.Errorf("pull takes REF and DIR, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := f.options(cmd, args[0])
			if err != nil {
				return err
			}
			prog := newTransferProgress(cmd.ErrOrStderr(), f.quiet, "pull")
			po := prog.pullOptions(push.PullOptions{Prefix: prefix, Platform: platform.p})
			res, err := push.Pull(cmd.Context(), args[0], args[1], po, opts...)
			prog.finish()
			if err != nil {
				return err
			}
			return f.printResult(cmd, res.Reference, res.Digest, res)
		},
	}
	f.register(cmd, true)
	cmd.Flags().StringVar(&prefix, "prefix", pack.DefaultPrefix, "directory inside the image holding the model")
	cmd.Flags().Var(platform, "platform", "platform to pick from an image index: OS/ARCH[/VARIANT]")
	return cmd
}

func newVerifyCmd() *cobra.Command {
	var (
		f               transferFlags
		against, prefix string
	)
	cmd := &cobra.Command{
		Use:   "verify REF|oci:PATH|oci-archive:FILE",
		Short: "Re-hash every blob of a modelcar and check it against its descriptor",
		Long: `Verify re-reads every manifest and blob of the image and checks each against
its descriptor's digest and size; --against DIR also compares the model files.
Prints the pinned reference REPO@sha256:... of what it verified on stdout, and
its summary on stderr.`,
		Example: `  modelcar verify oci:./llama:v1
  modelcar verify registry.example.com/models/llama@sha256:4f1c... --against ./Llama-3.1-8B`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("verify takes one reference, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			opts, err := f.options(cmd, args[0])
			if err != nil {
				return err
			}
			res, err := push.Verify(cmd.Context(), args[0], against, prefix, opts...)
			if err != nil {
				return err
			}
			if !f.quiet {
				msg := fmt.Sprintf("%s: %d blobs, %s verified", res.Digest, res.Blobs, humanBytes(res.Bytes))
				if against != "" {
					msg += fmt.Sprintf("; %d files match %s", res.Files, against)
				}
				fmt.Fprintln(cmd.ErrOrStderr(), msg)
			}
			return f.printResult(cmd, res.Reference, res.Digest, res)
		},
	}
	f.register(cmd, true)
	cmd.Flags().StringVar(&against, "against", "", "also compare the model files with this directory")
	cmd.Flags().StringVar(&prefix, "prefix", pack.DefaultPrefix, "directory inside the image holding the model (with --against)")
	return cmd
}
