package main

import (
	"encoding/json"
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
interrupted pull skips the layers already in place. DIR must be new or empty.
Prints the manifest digest on stdout.`,
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
			var progFn func(int64)
			if prog != nil {
				progFn = func(n int64) { prog.bar.Add64(n) }
			}
			dg, err := push.Pull(cmd.Context(), args[0], args[1], push.PullOptions{Prefix: prefix, Platform: platform.p, Progress: progFn}, opts...)
			prog.finish()
			if err != nil {
				return err
			}
			if f.jsonOut {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]string{"digest": dg, "directory": args[1]})
			}
			fmt.Fprintln(cmd.OutOrStdout(), dg)
			return nil
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
			if f.jsonOut {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(res)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %d blobs, %s verified", res.Digest, res.Blobs, humanBytes(res.Bytes))
			if against != "" {
				fmt.Fprintf(cmd.OutOrStdout(), "; %d files match %s", res.Files, against)
			}
			fmt.Fprintln(cmd.OutOrStdout())
			return nil
		},
	}
	f.register(cmd, true)
	cmd.Flags().StringVar(&against, "against", "", "also compare the model files with this directory")
	cmd.Flags().StringVar(&prefix, "prefix", pack.DefaultPrefix, "directory inside the image holding the model (with --against)")
	return cmd
}
