package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/modelcar/modelcar/deploy"
	"github.com/modelcar/modelcar/internal/fielderr"
	"github.com/modelcar/modelcar/warm"
)

// deployFlags are the flags of `modelcar deploy`.
type deployFlags struct {
	image, name, modelcarImage   string
	valueFiles, sets, stringSets []string
	output                       string
	apply, createNamespace       bool
	dryRun                       string
	prepull                      bool
	warmPool                     int32
	gpusPerPod                   int64
	kube                         kubeFlags
	kubeVersion                  string
}

func newDeployCmd() *cobra.Command {
	var f deployFlags
	cmd := &cobra.Command{
		Use:   "deploy --image REF@sha256:... --name NAME (-o yaml | --apply)",
		Short: "Serve a modelcar with vLLM on Kubernetes (the embedded vllm-modelcar Helm chart)",
		Long: `Deploy renders the vllm-modelcar Helm chart built into modelcar (the same chart as
deploy/charts/vllm-modelcar, which also installs with plain helm) for the modelcar
--image, as 'helm template' would, and prints the manifests (-o yaml) or applies them
with server-side apply (--apply, field manager "modelcar"; --dry-run=server to have
the apiserver check everything without storing it). --apply first checks that the
namespace exists and applies nothing when it does not; --create-namespace creates it
(as helm's flag does; a server dry run only checks that it could, and cannot check the
objects that would go in it).

--name is the release name; the objects are named NAME (fullnameOverride, unless the
values set nameOverride or fullnameOverride) and the served model name defaults to
NAME. Values come as with helm: -f FILE (repeatable, later files win), then --set
KEY=VALUE (helm's syntax), then --set-string KEY=VALUE, then --image (model.image)
and --modelcar-image (modelcar.image: the warm-up sidecar and initCopy's puller).
The chart's values.schema.json checks them: a model image without @sha256: is
refused unless --set model.allowTag=true, a modelcar image without one unless
--set modelcar.allowTag=true. deploy/README.md documents every value.

--prepull also creates a 'modelcar warm prepull' DaemonSet pulling the modelcar on
the nodes the pods may run on (the values' nodeSelector, tolerations and node
affinity; when the pods request GPUs and the values set no nodeSelector, the nodes
labeled nvidia.com/gpu.present=true); --warm-pool N a 'modelcar warm pool' of N placeholder
pods holding --gpus-per-pod GPUs each (default: the vLLM container's) there.

The kubeconfig is found as kubectl finds it (--kubeconfig, $KUBECONFIG,
~/.kube/config; --context); the namespace is -n, else the context's.`,
		Example: `  # Print the manifests
  modelcar deploy --image registry.example.com/models/llama@sha256:4f1c... --name llama \
    --modelcar-image registry.example.com/modelcar@sha256:9b2e... -n llm -o yaml

  # Apply them, with a KEDA ScaledObject and a pre-pull on the GPU nodes
  modelcar deploy --image registry.example.com/models/llama@sha256:4f1c... --name llama \
    --modelcar-image registry.example.com/modelcar@sha256:9b2e... -n llm -f prod.yaml \
    --set keda.enabled=true --set keda.prometheus.serverAddress=http://prometheus:9090 \
    --prepull --apply

  # Let the apiserver check everything, storing nothing
  modelcar deploy ... --apply --dry-run=server`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError{fmt.Errorf("deploy takes no arguments, got %q (the model is --image)", args)}
			}
			return f.check(cmd)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			return runDeploy(cmd, f)
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&f.image, "image", "", "the modelcar, REPO@sha256:<64 hex> (model.image)")
	fl.StringVar(&f.name, "name", "", "release name; the objects' name and the served model name default to it (required)")
	fl.StringArrayVarP(&f.valueFiles, "values", "f", nil, "values file (repeatable; later files win)")
	fl.StringArrayVar(&f.sets, "set", nil, "set a value, KEY=VALUE in helm's syntax (repeatable; after -f)")
	fl.StringArrayVar(&f.stringSets, "set-string", nil, "set a value as a string, KEY=VALUE (repeatable; after --set)")
	fl.StringVar(&f.modelcarImage, "modelcar-image", "", "modelcar's own image, REPO@sha256:... (modelcar.image: warm-up sidecar, initCopy)")
	fl.StringVarP(&f.output, "output", "o", "", "print the manifests instead of applying them: yaml")
	fl.BoolVar(&f.apply, "apply", false, "apply with server-side apply")
	fl.BoolVar(&f.createNamespace, "create-namespace", false, "with --apply: create the namespace if it does not exist")
	fl.StringVar(&f.dryRun, "dry-run", "none", "with --apply: server (the apiserver validates and admits, stores nothing) or none")
	fl.BoolVar(&f.prepull, "prepull", false, "also create a pre-pull DaemonSet for the modelcar (modelcar warm prepull)")
	fl.Int32Var(&f.warmPool, "warm-pool", 0, "also create a node-pool warmer of N GPU placeholder pods (modelcar warm pool)")
	fl.Int64Var(&f.gpusPerPod, "gpus-per-pod", 0, "GPUs of each --warm-pool placeholder (default: the vLLM container's)")
	f.kube.register(fl)
	fl.StringVar(&f.kubeVersion, "kube-version", deploy.DefaultKubeVersion, "Kubernetes version the chart renders for (.Capabilities.KubeVersion)")
	return cmd
}

func (f *deployFlags) check(cmd *cobra.Command) error {
	if f.name == "" {
		return usageError{fmt.Errorf("--name is required (the release name)")}
	}
	if f.image == "" && !cmd.Flags().Changed("values") && !cmd.Flags().Changed("set") && !cmd.Flags().Changed("set-string") {
		return usageError{fmt.Errorf("--image is required (the modelcar, REPO@sha256:...)")}
	}
	switch {
	case f.output == "" && !f.apply:
		return usageError{fmt.Errorf("choose -o yaml (print the manifests) or --apply")}
	case f.output != "" && f.apply:
		return usageError{fmt.Errorf("-o %s and --apply exclude each other", f.output)}
	case f.output != "" && f.output != "yaml":
		return usageError{fmt.Errorf("unknown output format %q (only yaml)", f.output)}
	}
	switch f.dryRun {
	case "none", "server":
	case "client":
		return usageError{fmt.Errorf("--dry-run=client: use -o yaml to see what would be applied")}
	default:
		return usageError{fmt.Errorf("--dry-run=%s: want server or none", f.dryRun)}
	}
	if f.dryRun == "server" && !f.apply {
		return usageError{fmt.Errorf("--dry-run=server goes with --apply")}
	}
	if f.createNamespace && !f.apply {
		return usageError{fmt.Errorf("--create-namespace goes with --apply")}
	}
	if cmd.Flags().Changed("warm-pool") && f.warmPool < 0 {
		return usageError{fmt.Errorf("--warm-pool %d: want a number of placeholder pods, 0 or more", f.warmPool)}
	}
	if cmd.Flags().Changed("gpus-per-pod") {
		if !cmd.Flags().Changed("warm-pool") {
			return usageError{fmt.Errorf("--gpus-per-pod goes with --warm-pool")}
		}
		if f.gpusPerPod < 1 {
			return usageError{fmt.Errorf("--gpus-per-pod %d: want 1 or more", f.gpusPerPod)}
		}
	}
	return nil
}

// values merges -f, --set and the flags that set values, and fills the
// defaults that follow from --name.
func (f *deployFlags) values() (map[string]any, error) {
	vals, err := deploy.MergeValues(f.valueFiles, f.sets, f.stringSets)
	if err != nil {
		return nil, usageError{err}
	}
	if f.image != "" {
		deploy.SetValue(vals, "model.image", f.image)
	}
	if f.modelcarImage != "" {
		deploy.SetValue(vals, "modelcar.image", f.modelcarImage)
	}
	_, hasName := deploy.Lookup(vals, "nameOverride")
	_, hasFull := deploy.Lookup(vals, "fullnameOverride")
	if !hasName && !hasFull {
		vals["fullnameOverride"] = f.name
	}
	deploy.SetDefault(vals, "model.servedModelName", f.name)
	return vals, nil
}

func runDeploy(cmd *cobra.Command, f deployFlags) error {
	vals, err := f.values()
	if err != nil {
		return err
	}
	ns := f.kube.renderNamespace()
	opts := deploy.ReleaseOptions{
		RenderOptions: deploy.RenderOptions{ReleaseName: f.name, Namespace: ns, Values: vals, KubeVersion: f.kubeVersion},
		Prepull:       f.prepull,
	}
	if cmd.Flags().Changed("warm-pool") {
		opts.WarmPool = &deploy.WarmPool{Replicas: f.warmPool, GPUsPerPod: f.gpusPerPod}
	}
	rel, err := deploy.NewRelease(cmd.Context(), opts)
	if err != nil {
		return f.explain(err)
	}
	if f.output == "yaml" {
		return rel.WriteYAML(cmd.OutOrStdout())
	}
	c, _, err := f.kube.client()
	if err != nil {
		return err
	}
	res, err := rel.Apply(cmd.Context(), c, deploy.ApplyOptions{DryRun: f.dryRun == "server", CreateNamespace: f.createNamespace})
	printLines(cmd.OutOrStdout(), res)
	var nf *deploy.NamespaceNotFoundError
	if errors.As(err, &nf) {
		return fmt.Errorf("namespace %q not found, so nothing was applied: add --create-namespace to create it, or create it first (kubectl create namespace %s)", nf.Namespace, nf.Namespace)
	}
	return err
}

// deployFieldFlags are the flags of deploy that set deploy.ReleaseOptions
// fields.
var deployFieldFlags = fieldFlags{
	"ReleaseName": "--name", "KubeVersion": "--kube-version", "Prepull": "--prepull",
	"WarmPool": "--warm-pool", "WarmPool.Replicas": "--warm-pool", "WarmPool.GPUsPerPod": "--gpus-per-pod",
}

// explain writes the errors of deploy.NewRelease in the command's terms:
// a refused option or chart value (each of several joined) names the
// flag that set it, or the value when -f or --set did, and what to do.
// Other errors pass as they are.
func (f *deployFlags) explain(err error) error {
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	var out []error
	changed := false
	for _, e := range errs {
		// An option's error first: it may wrap the value that makes it
		// fail (--prepull with model.delivery=initCopy).
		if x := deployFieldFlags.explain(e); x != e {
			out, changed = append(out, x), true
			continue
		}
		var ve *deploy.ValueError
		if errors.As(e, &ve) {
			out, changed = append(out, f.valueError(ve)), true
			continue
		}
		out = append(out, e)
	}
	if !changed {
		return err
	}
	return errors.Join(out...)
}

// valueError writes a refused chart value as the flag that set it
// (--image, --modelcar-image) or, when -f or --set did, as the value's
// key, with what to do.
func (f *deployFlags) valueError(ve *deploy.ValueError) error {
	name := ve.Key
	switch {
	case ve.Key == "model.image" && f.image != "":
		name = "--image"
	case ve.Key == "modelcar.image" && f.modelcarImage != "":
		name = "--modelcar-image"
	}
	v := fielderr.FormatValue(ve.Value)
	if v != "" {
		v = " " + v
	}
	switch {
	case ve.Key == "model.image" && errors.Is(ve, warm.ErrNoDigest):
		return fmt.Errorf("%s%s: %w: it must be pinned by digest, REPO@sha256:<64 hex>, as 'modelcar push' prints it; for development, --set model.allowTag=true accepts a tag", name, v, warm.ErrNoDigest)
	case ve.Key == "modelcar.image" && errors.Is(ve, warm.ErrNoDigest):
		return fmt.Errorf("%s%s: %w: it must be pinned by digest, REPO@sha256:<64 hex>, as 'crane digest REPO:TAG' gives it; for development, --set modelcar.allowTag=true accepts a tag", name, v, warm.ErrNoDigest)
	case ve.Key == "model.image" && errors.Is(ve, warm.ErrRequired):
		return fmt.Errorf("--image is %w: the modelcar, REPO@sha256:... (or model.image in -f or --set)", warm.ErrRequired)
	case ve.Key == "modelcar.image" && errors.Is(ve, warm.ErrRequired):
		return fmt.Errorf("--modelcar-image is %w: the warm-up sidecar (warmProbe.enabled) and initCopy's pull run modelcar's own image; "+
			"build it with 'make image', push it (modelcar push oci:.work/image:VERSION REGISTRY/modelcar:VERSION prints the pinned reference) "+
			"and pass --modelcar-image REPO@sha256:...; or run without the warm-up sidecar: --set warmProbe.enabled=false", warm.ErrRequired)
	}
	return fmt.Errorf("%s%s: %w", name, v, ve.Err)
}

func printLines(w io.Writer, res *deploy.ReleaseApplied) {
	if res == nil {
		return
	}
	for _, l := range res.Lines() {
		fmt.Fprintln(w, l)
	}
}
