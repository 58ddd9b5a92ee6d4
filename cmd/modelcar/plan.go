package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/modelcar/modelcar/measure"
	"github.com/modelcar/modelcar/measure/plan"
	"github.com/modelcar/modelcar/warm"
)

// planFlags are the flags of `modelcar plan`.
type planFlags struct {
	from, factsFile, benchFile, currentFormat string
	facts                                     []string
	discover                                  bool
	kube                                      kubeFlags
	image, format, output, emit               string
	selectors, tolerations                    []string
	poolReplicas                              int32
}

func newPlanCmd() *cobra.Command {
	var f planFlags
	cmd := &cobra.Command{
		Use:   "plan --from REPORT.json [--cluster-facts FILE | --discover] [--bench RESULTS.json] [--emit DIR --image REF@sha256:...]",
		Short: "Rank what would shorten the measured cold starts, with the numbers, and write the objects that apply it",
		Long: `Plan reads a cold-start report ('modelcar measure --format json', or a bundle
directory, which it measures first) and ranks the levers that shorten the cold
start by the time each can save, an upper bound, with the arithmetic behind
every number: a warm GPU node pool (provision), a pre-pull DaemonSet, repacking
into uncompressed per-file layers and lazy pulling (pull), a Kubernetes image
volume (the init-container copy), a streaming weight loader (load), vLLM's
compile cache, the readiness probe period and the warm-up probe (warmup).

Values are the report's p50 with two or more cold starts, else the single one's.
Each lever has a confidence (high: the report measured what it removes; medium:
part of it, or scaled by the benchmark; low: a default) and the conditions it
needs. Levers whose prerequisite is missing are listed under "needs" with the
reason, and levers the numbers do not support under "no gain".

What the plan knows of the cluster (facts) comes from --discover (the API
server's version; the GPU nodes' container runtime, GPU count, ephemeral
storage and the modelcar.dev/snapshotter label; modelcar's warm objects), then
--cluster-facts FILE, then --fact KEY=VALUE, each overriding the one before.
Facts file keys: kubernetesVersion, containerRuntime, snapshotter (overlayfs,
native, stargz, nydus, soci), imageVolumes, nodeImageCacheGiB, gpusPerNode,
gpuNodeWarmPool, prepull, linkMbit.

--bench RESULTS.json (the node-side benchmark's results-*.json) scales format
savings by measured ratios; without it they use documented defaults and say
so. A file without version 1, link_mbit, model_bytes and results is refused.

--image names the model image: the report's pulls of its repository. When
the report has none (a new image, not deployed yet), the report's model
image stands in for it and the plan warns that the numbers are another
image's. The warm commands the plan prints carry -n, --node-selector and
--toleration, and make the objects --emit writes.

--emit DIR writes the objects to apply, all at once (a new directory renamed
into place): prepull.yaml and pool.yaml (as 'modelcar warm prepull/pool -o yaml'
render them) when those levers apply, values.yaml for the vllm-modelcar chart
and pack-flags.txt. It needs --image pinned by digest.`,
		Example: `  # Rank the levers for a measured cold start
  modelcar measure --from bundle -o cold-start.json
  modelcar plan --from cold-start.json

  # With what the cluster says, benchmark ratios, and the files to apply
  modelcar plan --from cold-start.json --discover --bench coldstart-bench.json \
    --image registry.example.com/models/llama@sha256:4f1c... -n llm --emit plan/
  for f in plan/prepull.yaml plan/pool.yaml; do [ ! -f "$f" ] || kubectl apply -f "$f"; done
  modelcar deploy --name llama --image registry.example.com/models/llama@sha256:4f1c... \
    -f prod.yaml -f plan/values.yaml --apply

  # Facts without a cluster at hand
  modelcar plan --from cold-start.json --fact kubernetesVersion=1.33.2 --fact snapshotter=stargz --format md`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError{fmt.Errorf("plan takes no arguments, got %q (the report is --from)", args)}
			}
			if f.from == "" {
				return usageError{errors.New("--from is required: a report from 'modelcar measure --format json', or a bundle directory")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error { return runPlan(cmd, &f) },
	}
	fl := cmd.Flags()
	fl.StringVar(&f.from, "from", "", "the cold-start report (measure --format json), or a bundle directory to measure")
	fl.StringVar(&f.factsFile, "cluster-facts", "", "YAML or JSON file of cluster facts (see above)")
	fl.StringArrayVar(&f.facts, "fact", nil, "set one fact, KEY=VALUE (repeatable; overrides --cluster-facts and --discover)")
	fl.BoolVar(&f.discover, "discover", false, "learn facts from the cluster (implied by --kubeconfig or --context)")
	f.kube.register(fl)
	fl.Lookup("kubeconfig").Usage = "kubeconfig file for --discover (default $KUBECONFIG or ~/.kube/config)"
	fl.Lookup("context").Usage = "kubeconfig context for --discover (default the current one)"
	fl.Lookup("namespace").Usage = "namespace of the emitted pre-pull and pool (default the kubeconfig context's, else default)"
	fl.StringVar(&f.benchFile, "bench", "", "the node-side cold-start benchmark's results (results-*.json, version 1)")
	fl.StringVar(&f.currentFormat, "current-format", "", "layer format of the model image in the report: "+strings.Join(plan.Formats(), ", ")+" (default: a single gzip stream when it pulled slower than 250 MB/s)")
	fl.StringVar(&f.image, "image", "", "the modelcar, REPO@sha256:...: names the model image in the report, and is what --emit pre-pulls and serves")
	fl.StringVar(&f.format, "format", "", "text, md or json (default: from the -o extension, else text)")
	fl.StringVarP(&f.output, "output", "o", "", "write the plan to FILE instead of stdout")
	fl.StringVar(&f.emit, "emit", "", "write the objects to apply into DIR: prepull.yaml, pool.yaml, values.yaml, pack-flags.txt")
	fl.StringArrayVar(&f.selectors, "node-selector", []string{"nvidia.com/gpu.present=true"}, "the GPU nodes, KEY=VALUE (repeatable): --discover reads them, the pre-pull and pool run on them")
	fl.StringArrayVar(&f.tolerations, "toleration", []string{"nvidia.com/gpu:NoSchedule"}, "toleration of the emitted pre-pull and pool, KEY[=VALUE][:EFFECT] (repeatable)")
	fl.Int32Var(&f.poolReplicas, "pool-replicas", 1, "placeholder pods of the emitted pool (GPUs each: the gpusPerNode fact, else 1)")
	_ = cmd.RegisterFlagCompletionFunc("format", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{string(measure.Text), string(measure.Markdown), string(measure.JSON)}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// planFieldFlags are the flags of plan that set plan.Options and
// plan.EmitOptions fields (the same names in both).
var planFieldFlags = fieldFlags{"CurrentFormat": "--current-format", "Image": "--image", "Namespace": "--namespace",
	"PoolReplicas": "--pool-replicas", "NodeSelector": "--node-selector", "Tolerations": "--toleration"}

// planFormat is the plan's format: --format, else -o's extension, else
// text. Its errors list only the formats a plan renders.
func planFormat(cmd *cobra.Command, format, output string) (measure.Format, error) {
	f, err := reportFormat(cmd, format, output)
	switch {
	case err == nil && f != measure.SVG:
		return f, nil
	case cmd.Flags().Changed("format"):
		return "", usageError{fmt.Errorf("--format %q: a plan renders as text, md or json", format)}
	}
	return "", usageError{fmt.Errorf("-o %s: a plan renders as text, md or json (pass --format)", output)}
}

func runPlan(cmd *cobra.Command, f *planFlags) error {
	format, err := planFormat(cmd, f.format, f.output)
	if err != nil {
		return err
	}
	var eo plan.EmitOptions
	if eo.NodeSelector, err = warm.ParseNodeSelector(f.selectors); err != nil {
		return usageError{fmt.Errorf("--node-selector: %w", err)}
	}
	if eo.Tolerations, err = warm.ParseTolerations(f.tolerations); err != nil {
		return usageError{fmt.Errorf("--toleration: %w", err)}
	}
	if f.poolReplicas < 1 {
		return usageError{fmt.Errorf("--pool-replicas %d: want 1 or more", f.poolReplicas)}
	}
	// The warm commands the plan prints carry what the emitted files do.
	eo.Image, eo.PoolReplicas = f.image, f.poolReplicas
	eo.Namespace = f.kube.renderNamespace()
	opts := plan.Options{From: f.from, Image: f.image, CurrentFormat: f.currentFormat,
		Namespace: eo.Namespace, NodeSelector: eo.NodeSelector, Tolerations: eo.Tolerations, PoolReplicas: eo.PoolReplicas}
	if err := opts.Validate(); err != nil {
		return planFieldFlags.usage(err)
	}
	if f.emit != "" {
		if f.image == "" {
			return usageError{errors.New("--emit needs --image, the modelcar to pre-pull and serve, REPO@sha256:...")}
		}
		if err := eo.Validate(); err != nil {
			return planFieldFlags.usage(err)
		}
	}
	facts, sources := plan.Facts{}, plan.Sources{}
	for _, kv := range f.facts { // checked before anything slow
		var one plan.Facts
		if _, err := one.SetFact(kv); err != nil {
			return usageError{fmt.Errorf("--fact: %w", err)}
		}
	}

	rep, err := readPlanReport(f.from)
	if err != nil {
		return err
	}
	if f.discover || f.kube.f.Explicit() {
		cs, _, err := measureKubeClient(f.kube.f)
		if err != nil {
			return err
		}
		d, err := plan.Discover(cmd.Context(), cs, eo.NodeSelector)
		if err != nil {
			return err
		}
		facts, sources, opts.Notes = d.Facts, d.Sources, d.Notes
	}
	if f.factsFile != "" {
		ff, err := plan.ReadFacts(f.factsFile)
		if err != nil {
			return err
		}
		facts.Merge(ff, sources, "file "+f.factsFile)
	}
	for _, kv := range f.facts {
		var one plan.Facts
		_, _ = one.SetFact(kv) // checked above
		facts.Merge(one, sources, "--fact")
	}
	opts.Facts, opts.Sources = facts, sources
	if f.benchFile != "" {
		if opts.Bench, err = plan.ReadBench(f.benchFile); err != nil {
			return err
		}
		opts.BenchFrom = f.benchFile
	}
	p, err := plan.Compute(rep, opts)
	if err != nil {
		return fmt.Errorf("%s: %w", f.from, err)
	}
	var buf bytes.Buffer
	if err := plan.Render(&buf, p, format); err != nil {
		return err
	}
	if err := writeOutput(cmd, f.output, buf.Bytes()); err != nil {
		return err
	}
	if f.emit == "" {
		return nil
	}
	names, err := plan.Emit(f.emit, p, eo)
	if err != nil {
		return fmt.Errorf("--emit %s: %w", f.emit, err)
	}
	fmt.Fprintf(cmd.ErrOrStderr(), "wrote %s: %s\n", f.emit, strings.Join(names, ", "))
	return nil
}

// readPlanReport reads a JSON report, or measures a bundle directory.
func readPlanReport(from string) (*measure.Report, error) {
	st, err := os.Stat(from)
	if err != nil {
		return nil, err
	}
	if !st.IsDir() {
		return readReport(from)
	}
	b, err := measure.ReadBundle(from)
	if err != nil {
		return nil, err
	}
	return measure.Analyze(b)
}
