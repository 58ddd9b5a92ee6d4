package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/modelcar/modelcar/internal/ref"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// packOutputForms are the outputs pack writes, for --output's help and
// for the error when it is missing.
const packOutputForms = "oci:DIR[:TAG] (an OCI image layout), oci-archive:FILE[:TAG] (an OCI archive), " +
	"the tag defaulting to latest, or REGISTRY/REPO[:TAG] (pushed while it is built)"

func newPackCmd() *cobra.Command {
	var (
		output, format, prefix, base, platform, maxLayer, threshold, cacheDir, prefetch string
		include, exclude, annotations, tags                                             []string
		level, jobs                                                                     int
		jsonOut, quiet, noCache, followSymlinks                                         bool
		tf                                                                              transferFlags
	)
	cmd := &cobra.Command{
		Use:   "pack DIR|hf:ORG/NAME[@REVISION] --output oci:DIR[:TAG]|oci-archive:FILE[:TAG]|REGISTRY/REPO[:TAG]",
		Short: "Pack a model directory into a reproducible, load-ordered OCI image",
		Long: `Pack validates a Hugging Face model directory (safetensors headers, shard
indexes, JSON files) and writes a runnable OCI image with the files under
/models: small files (configs, tokenizer, index) in the first layer, then one
layer per weight file in the order the index names them.

The same file contents always give the same digest, whatever the mtimes,
owners, paths or machine. Timestamps are the Unix epoch, or SOURCE_DATE_EPOCH.
Nothing is written until validation passes, and the output appears only when
complete. Prints the pinned reference of the image on stdout, as push does
(oci:DIR@sha256:..., oci-archive:FILE@sha256:... or REGISTRY/REPO@sha256:...;
--json for details, the same fields for every output).

Several --platform values (linux/amd64,linux/arm64) give an image index with
one image per platform: the model layers are shared, byte for byte, and each
platform's --base is picked from the base's index. Print and pin the index
digest; nodes pull the image for their own architecture.

hf:ORG/NAME[@REVISION] packs a model from the local Hugging Face cache
($HF_HUB_CACHE, $HF_HOME/hub or ~/.cache/huggingface/hub, as filled by
hf download): REVISION is a branch or tag (default main) or a commit. Nothing
is downloaded. The manifest records org.opencontainers.image.source and
.revision (the commit) unless --annotation sets them.

Symlinks in the model directory are followed when they resolve inside it; a
Hugging Face cache snapshot's links into its own repository's blobs/ are
followed too. A link that leads anywhere else (tokenizer.model -> /etc/shadow
in a cloned repository) fails the pack, naming the link and its target, unless
--follow-external-symlinks.

With a registry as output, layers stream to the registry while they are built:
one read of the model, nothing written to local disk, the tag pushed last.`,
		Example: `  # Plain tar layers (fastest pack and unpack), tagged v1
  modelcar pack ./Qwen2.5-7B-Instruct --output oci:./qwen:v1

  # A model in the local Hugging Face cache (after hf download), by repository id and
  # revision; the manifest records the source and the commit
  modelcar pack hf:Qwen/Qwen2.5-7B-Instruct@main --output oci:./qwen:v1

  # A Hugging Face cache snapshot, zstd:chunked for lazy pulling
  modelcar pack ~/.cache/huggingface/hub/models--Qwen--Qwen2.5-7B-Instruct/snapshots/a09a3545 \
      --format zstd-chunked --output oci-archive:qwen.tar:v1

  # On a base with a shell, for KServe's modelcar sidecar (storageUri: oci://...)
  modelcar pack ./model --base oci:./busybox --output oci:./model:kserve

  # For a fleet of x86 and Grace (arm64) GPU nodes: one index, shared layers
  modelcar pack ./model --base oci:./busybox --platform linux/amd64,linux/arm64 --output oci:./model:kserve

  # Straight to a registry from CI, no local copy
  modelcar pack ./model --output registry.example.com/models/qwen:v1

  # Only safetensors weights and configs; machine-readable result
  modelcar pack ./model --exclude '*.bin' --exclude 'original/' --output oci:out --json`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 1 {
				return usageError{fmt.Errorf("pack takes exactly one model directory, got %d arguments", len(args))}
			}
			if output == "" {
				return usageError{fmt.Errorf("--output is required: %s", packOutputForms)}
			}
			// What does not parse is a usage error, before anything is read.
			if _, err := ref.Parse(output); err != nil {
				return usageError{fmt.Errorf("--output: %w", err)}
			}
			for _, t := range tags {
				if !ref.ValidTag(t) {
					return usageError{fmt.Errorf("--tag %q: not a valid tag ([A-Za-z0-9_][A-Za-z0-9._-]*, at most 128)", t)}
				}
			}
			if strings.HasPrefix(args[0], pack.HFPrefix) {
				if err := pack.CheckHFSpec(args[0]); err != nil {
					return usageError{err}
				}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := pack.ParseFormat(format)
			if err != nil {
				return usageError{fmt.Errorf("--format: %w", err)}
			}
			if _, err := pack.ParsePlatforms(platform); err != nil {
				return usageError{err}
			}
			if cmd.Flags().Changed("jobs") && jobs < 1 {
				return usageError{fmt.Errorf("--jobs %d: want 1 or more", jobs)}
			}
			opts := []pack.Option{pack.WithFormat(f), pack.WithPrefix(prefix), pack.WithInclude(include...),
				pack.WithExclude(exclude...), pack.WithTags(tags...), pack.WithPlatform(platform)}
			if cmd.Flags().Changed("compression-level") {
				opts = append(opts, pack.WithCompressionLevel(level))
			}
			if cmd.Flags().Changed("prefetch") {
				if err := pack.CheckPrefetch(f, pack.Prefetch(prefetch)); err != nil {
					return usageError{fmt.Errorf("--prefetch: %w", err)}
				}
				opts = append(opts, pack.WithPrefetch(pack.Prefetch(prefetch)))
			}
			if jobs > 0 {
				opts = append(opts, pack.WithJobs(jobs))
			}
			if maxLayer != "" {
				n, err := parseSize(maxLayer)
				if err != nil {
					return usageError{fmt.Errorf("--max-layer-size: %w", err)}
				}
				opts = append(opts, pack.WithMaxLayerSize(n))
			}
			if threshold != "" {
				n, err := parseSize(threshold)
				if err != nil {
					return usageError{fmt.Errorf("--large-file-threshold: %w", err)}
				}
				opts = append(opts, pack.WithLargeFileThreshold(n))
			}
			if followSymlinks {
				opts = append(opts, pack.WithFollowExternalSymlinks())
			}
			dir := args[0]
			if strings.HasPrefix(dir, pack.HFPrefix) {
				cache, err := pack.HFCacheDir()
				if err != nil {
					return err
				}
				m, err := pack.ResolveHF(dir, cache)
				if err != nil {
					return err
				}
				dir = m.Dir
				// Where the model came from, unless --annotation says otherwise.
				opts = append(opts, pack.WithAnnotations(m.Annotations()))
			}
			ann, err := parseKV(annotations, "--annotation")
			if err != nil {
				return usageError{err}
			}
			opts = append(opts, pack.WithAnnotations(ann))
			if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
				sec, err := strconv.ParseInt(e, 10, 64)
				if err != nil {
					return usageError{fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", e)}
				}
				opts = append(opts, pack.WithEpoch(time.Unix(sec, 0)))
			}
			switch {
			case noCache:
				opts = append(opts, pack.WithCacheDir(""))
			case cacheDir != "":
				opts = append(opts, pack.WithCacheDir(cacheDir))
			}
			prog := newPackProgress(cmd.ErrOrStderr(), quiet)
			opts = append(opts, pack.WithProgress(prog.event))
			// The output and the base are opened by the transfer layer,
			// with every transfer flag, whatever their kind.
			popts, err := tf.options(cmd, output, base)
			if err != nil {
				return err
			}
			if base != "" {
				popts = append(popts, push.WithBase(base))
			}
			res, err := push.Pack(cmd.Context(), dir, output, opts, popts...)
			prog.finish()
			if err != nil {
				return packFields.explain(err)
			}
			if jsonOut {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			fmt.Fprintln(cmd.OutOrStdout(), res.Reference)
			return nil
		},
	}
	tf.register(cmd, false)
	fl := cmd.Flags()
	fl.StringVarP(&output, "output", "o", "", "where to write: "+packOutputForms)
	fl.StringVar(&format, "format", string(pack.FormatTar), "layer format: tar, gzip, zstd, estargz or zstd-chunked")
	fl.StringVar(&prefetch, "prefetch", string(pack.PrefetchSmall), "estargz/zstd-chunked: files stargz-snapshotter fetches at mount: small (configs, tokenizer) or all (weights too; set the snapshotter's prefetch_async_size)")
	fl.IntVar(&level, "compression-level", 0, "compression level for every layer (default: gzip/estargz 6 for text and -2, Huffman-only, for weights; zstd/zstd-chunked 3)")
	fl.StringVar(&prefix, "prefix", pack.DefaultPrefix, "directory the model files land in inside the image")
	fl.StringArrayVar(&include, "include", nil, "only pack files matching this glob (repeatable; gitignore-style)")
	fl.StringArrayVar(&exclude, "exclude", nil, "skip files matching this glob (repeatable; adds to the defaults "+strings.Join(pack.DefaultExcludes, " ")+")")
	fl.StringVar(&base, "base", "", "base image to put the model on (REGISTRY/REPO[:TAG|@DIGEST] or oci:PATH[:TAG])")
	fl.StringVar(&platform, "platform", "linux/amd64", "platforms of the image, comma-separated (several give an image index); each picks its --base from an index")
	fl.StringVar(&maxLayer, "max-layer-size", "", "largest layer allowed, e.g. 10GiB (default 50GiB, below ECR's 52,000 MiB cap)")
	fl.StringVar(&threshold, "large-file-threshold", "", "files from this size get their own layer even if not weights (default 64MiB)")
	fl.StringArrayVar(&annotations, "annotation", nil, "manifest annotation KEY=VALUE (repeatable)")
	fl.StringArrayVar(&tags, "tag", nil, "extra tag for the image in the output layout (repeatable)")
	fl.IntVar(&jobs, "jobs", 0, "layers built at once (default: number of CPUs)")
	fl.BoolVar(&jsonOut, "json", false, "print the result as JSON: the pinned and tagged references, digest, media type, size, and each layer's media type, size and files")
	fl.BoolVarP(&quiet, "quiet", "q", false, "no progress output")
	fl.BoolVar(&followSymlinks, "follow-external-symlinks", false, "also follow symlinks that resolve outside the model directory (and outside a Hugging Face cache snapshot's blobs/), packing the files they point to")
	fl.BoolVar(&noCache, "no-cache", false, "do not reuse layers from the digest cache")
	fl.StringVar(&cacheDir, "cache-dir", "", "layer digest cache directory (default $XDG_CACHE_HOME/modelcar/layers)")
	_ = cmd.RegisterFlagCompletionFunc("format", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var out []string
		for _, f := range pack.Formats {
			out = append(out, string(f))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// parseKV parses KEY=VALUE flags.
func parseKV(kvs []string, flag string) (map[string]string, error) {
	m := map[string]string{}
	for _, kv := range kvs {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%s %q: want KEY=VALUE", flag, kv)
		}
		m[k] = v
	}
	return m, nil
}

// parseSize parses sizes like 512MiB, 10GiB, 1.5GB or plain bytes.
// Not go-units: its RAMInBytes reads GB as GiB and its FromHumanSize GiB as
// GB, and --max-layer-size needs both (registry caps are given in either).
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mult   float64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1}}
	num, mult := strings.TrimSpace(s), 1.0
	for _, u := range units {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || f <= 0 {
		return 0, fmt.Errorf("%q is not a size (examples: 10GiB, 512MiB, 1000000)", s)
	}
	return int64(f * mult), nil
}

// packFields are the pack options a flag sets whose errors name the
// value: the output and the base, opened by push.Pack.
var packFields = fieldFlags{"Output": "--output", "Base": "--base"}
