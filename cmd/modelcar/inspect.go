package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/modelcar/modelcar/pack"
)

func newInspectCmd() *cobra.Command {
	var jsonOut bool
	cmd := &cobra.Command{
		Use:   "inspect oci:PATH[:TAG|@DIGEST]|oci-archive:FILE[:TAG]",
		Short: "Show a modelcar's layers, files, sizes, formats and annotations",
		Example: `  modelcar inspect oci:./llama:v1
  modelcar inspect oci-archive:llama.tar --json | jq '.layers[].files'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("inspect takes exactly one image reference, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			info, err := pack.Inspect(cmd.Context(), args[0])
			if err != nil {
				return err
			}
			if jsonOut {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(info)
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "Reference: %s\nDigest:    %s\nMediaType: %s\nPlatform:  %s\nLayers:    %d (%s)\n",
				info.Reference, info.Digest, info.MediaType, info.Platform, len(info.Layers), humanBytes(info.TotalSize))
			for k, v := range info.Annotations {
				fmt.Fprintf(w, "Annotation: %s=%s\n", k, v)
			}
			tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
			fmt.Fprintln(tw, "\n#\tDIGEST\tSIZE\tFORMAT\tFILES")
			for i, l := range info.Layers {
				files := strings.Join(l.Files, ", ")
				if len(files) > 80 {
					files = files[:77] + "..."
				}
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i, l.Digest.Hex[:12], humanBytes(l.Size), l.Format, files)
			}
			return tw.Flush()
		},
	}
	cmd.Flags().BoolVar(&jsonOut, "json", false, "print JSON")
	return cmd
}

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
