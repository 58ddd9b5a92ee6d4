package main

import (
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/spf13/cobra"

	"github.com/modelcar/modelcar/internal/ref"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

func newInspectCmd() *cobra.Command {
	var (
		jsonOut, readLayers bool
		prefix              string
		platform            = newPlatformValue("linux/amd64")
		f                   transferFlags
	)
	cmd := &cobra.Command{
		Use:   "inspect REGISTRY/REPO[:TAG|@DIGEST]|oci:PATH[:TAG|@DIGEST]|oci-archive:FILE[:TAG|@DIGEST]",
		Short: "Show a modelcar's layers, files, sizes, formats and annotations",
		Long: `Inspect shows an image's manifest, platform, annotations and layers. An image
index (a multi-platform modelcar) comes first, with each platform's image; the
image picked with --platform is described after it.

The FILES of a layer in a layout (oci:) or archive (oci-archive:) are what its
tar holds, read from its headers (compressed layers are decompressed, with
bounded memory, and their digest checked). For a registry image, reading the
layers means downloading them, so FILES are by default what each layer's
title annotation claims, marked "(claimed)" ("filesClaimed": true in --json):
nothing checked them. --read-layers reads them there too; --read-layers=false
shows the claims for local images as well.`,
		Example: `  modelcar inspect oci:./llama:v1
  modelcar inspect localhost:5000/models/llama:v1 --plain-http
  modelcar inspect oci-archive:llama.tar --json | jq '.layers[].files'
  modelcar inspect oci:./llama:v1 --platform linux/arm64   # one image of a multi-platform modelcar`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("inspect takes exactly one image reference, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			read := readLayers
			if r, err := ref.Parse(args[0]); err == nil && !cmd.Flags().Changed("read-layers") {
				read = r.Kind != ref.Registry
			}
			info, err := inspect(cmd, &f, args[0], platform.p, read, prefix)
			if err != nil {
				return err
			}
			for i, l := range info.Layers {
				if l.ClaimedFiles != nil {
					fmt.Fprintf(cmd.ErrOrStderr(), "Warning: layer %d (%s) holds %s, but its title annotation claims %s\n",
						i, l.Digest, filesCell(l.Files), filesCell(l.ClaimedFiles))
				}
			}
			if jsonOut {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			return printInspect(cmd.OutOrStdout(), info)
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	cmd.Flags().Var(platform, "platform", "platform to pick from an image index: OS/ARCH[/VARIANT]")
	cmd.Flags().BoolVar(&readLayers, "read-layers", false, "list the files each layer's tar holds, not what its title annotation claims (default: true for oci: and oci-archive:, false for registries, where it downloads every layer)")
	cmd.Flags().StringVar(&prefix, "prefix", pack.DefaultPrefix, "directory inside the image holding the model: files under it are listed relative to it")
	f.register(cmd, false)
	return cmd
}

// inspect reads the image through push, as pull, mirror and verify read
// it (the same limits and checks, wherever it is), and describes it with
// pack.
func inspect(cmd *cobra.Command, f *transferFlags, s string, platform v1.Platform, readLayers bool, prefix string) (*pack.ImageInfo, error) {
	opts, err := f.options(cmd, s)
	if err != nil {
		return nil, err
	}
	if readLayers {
		opts = append(opts, push.WithListFiles(prefix))
	}
	return push.Inspect(cmd.Context(), s, platform, opts...)
}

// printInspect writes info as text. An index comes first, with the image
// of each platform: its digest is what pack prints and what a pod pins.
// The image picked for --platform follows, then its layers.
func printInspect(w io.Writer, info *pack.ImageInfo) error {
	fmt.Fprintf(w, "Reference: %s\n", info.Reference)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if idx := info.Index; idx != nil {
		fmt.Fprintf(w, "Index:     %s (%d platforms)\n", idx.Digest, len(idx.Images))
		printAnnotations(w, idx.Annotations)
		fmt.Fprintln(tw, "PLATFORM\tDIGEST\tSIZE")
		for _, im := range idx.Images {
			fmt.Fprintf(tw, "%s\t%s\t%d B\n", im.Platform, im.Digest, im.Size)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		fmt.Fprintf(w, "\nImage for %s (another is picked with --platform):\n", info.Platform)
	}
	fmt.Fprintf(w, "Digest:    %s\nMediaType: %s\nPlatform:  %s\nLayers:    %d (%s)\n",
		info.Digest, info.MediaType, info.Platform, len(info.Layers), humanBytes(info.TotalSize))
	printAnnotations(w, info.Annotations)
	fmt.Fprintln(tw, "\n#\tDIGEST\tSIZE\tFORMAT\tFILES")
	for i, l := range info.Layers {
		files := filesCell(l.Files)
		if len(files) > 80 || l.FilesTruncated {
			files = files[:min(len(files), 77)] + "..."
		}
		if l.FilesClaimed {
			files += " (claimed)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i, l.Digest.Hex[:12], humanBytes(l.Size), l.Format, files)
	}
	return tw.Flush()
}

// filesCell joins names with ", ", quoting (Go syntax) a name that holds a
// comma, a quote or anything unprintable, or has spaces at its ends, so
// that no name reads as two and none hides.
func filesCell(names []string) string {
	out := make([]string, len(names))
	for i, n := range names {
		out[i] = n
		if strings.ContainsAny(n, ",\"") || strings.TrimSpace(n) != n || strconv.Quote(n) != `"`+n+`"` {
			out[i] = strconv.Quote(n)
		}
	}
	return strings.Join(out, ", ")
}

// printAnnotations writes annotations one a line, sorted by key.
func printAnnotations(w io.Writer, ann map[string]string) {
	for _, k := range slices.Sorted(maps.Keys(ann)) {
		fmt.Fprintf(w, "Annotation: %s=%s\n", k, ann[k])
	}
}
