package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/modelcar/modelcar/internal/kube"
	"github.com/modelcar/modelcar/warm"
)

// addWarmK8sCmds adds warm's cluster subcommands: prepull, pool, status
// and the hidden scale that pool schedules run.
func addWarmK8sCmds(cmd *cobra.Command) {
	cmd.AddCommand(newWarmPrepullCmd(), newWarmPoolCmd(), newWarmStatusCmd(), newWarmScaleCmd())
}

// kubeFlags are the cluster connection flags every command that talks to
// a cluster registers (internal/kube: --kubeconfig, --context,
// -n/--namespace, one User-Agent).
type kubeFlags struct{ f *kube.Flags }

func (k *kubeFlags) register(fl *pflag.FlagSet) {
	k.f = kube.NewFlags("modelcar/" + buildVersion())
	k.f.AddFlags(fl)
}

// check checks --namespace, before anything is rendered or applied.
func (k *kubeFlags) check() error {
	ns := k.f.NamespaceFlag()
	if ns == "" {
		return nil
	}
	if err := warm.CheckNamespace(ns); err != nil {
		return usageError{fmt.Errorf("--namespace %q: %w", ns, err)}
	}
	return nil
}

// client connects to the cluster and resolves the namespace.
func (k *kubeFlags) client() (*kube.Client, string, error) {
	if err := k.check(); err != nil {
		return nil, "", err
	}
	return k.f.Connect()
}

// renderNamespace is the namespace rendered manifests carry: --namespace,
// else the kubeconfig context's if there is one, else default. Rendering
// needs no cluster.
func (k *kubeFlags) renderNamespace() string { return k.f.RenderNamespace() }

// renderOrConnect is how the subcommands that render or apply manifests
// begin. With -o yaml (mode "yaml") it sets *namespace to the namespace
// rendered manifests carry (renderNamespace), prints the manifests objects
// returns on out and reports done: the command is over, err its result; no
// cluster is needed. Otherwise it connects to the cluster and sets
// *namespace to the namespace resolved; done is also set when that fails.
func (k *kubeFlags) renderOrConnect(out io.Writer, mode string, namespace *string, objects func() ([]warm.Object, error)) (c *kube.Client, done bool, err error) {
	if err := k.check(); err != nil {
		return nil, true, err
	}
	if mode == "yaml" {
		*namespace = k.renderNamespace()
		objs, err := objects()
		if err != nil {
			return nil, true, err
		}
		return nil, true, kube.Render(out, objs)
	}
	c, ns, err := k.client()
	if err != nil {
		return nil, true, err
	}
	*namespace = ns
	return c, false, nil
}

// warmOutputFlags choose between rendering, applying and deleting.
type warmOutputFlags struct {
	output, dryRun string
	apply, delete  bool
}

func (o *warmOutputFlags) register(fl *pflag.FlagSet, what string) {
	fl.StringVarP(&o.output, "output", "o", "", "print the manifests instead of applying them: yaml")
	fl.BoolVar(&o.apply, "apply", false, "apply "+what+" to the cluster with server-side apply (field manager modelcar)")
	fl.BoolVar(&o.delete, "delete", false, "delete what an earlier --apply created")
	fl.StringVar(&o.dryRun, "dry-run", "none", "with --apply or --delete: none, or server (the API server validates, admission included, and stores nothing)")
}

// check validates the combination; mode is "yaml", "apply" or "delete"
// ("" when none was chosen and none is required).
func (o *warmOutputFlags) check(required bool) (string, error) {
	var modes []string
	if o.output != "" {
		if o.output != "yaml" {
			return "", usageError{fmt.Errorf("-o %q: only yaml is supported", o.output)}
		}
		modes = append(modes, "-o yaml")
	}
	if o.apply {
		modes = append(modes, "--apply")
	}
	if o.delete {
		modes = append(modes, "--delete")
	}
	switch o.dryRun {
	case "none", "server":
	case "client":
		return "", usageError{errors.New("--dry-run=client: use -o yaml to see the manifests without a cluster")}
	default:
		return "", usageError{fmt.Errorf("--dry-run %q: want none or server", o.dryRun)}
	}
	if len(modes) > 1 {
		return "", usageError{fmt.Errorf("choose one of %s", strings.Join(modes, ", "))}
	}
	if o.dryRun == "server" && !o.apply && !o.delete {
		return "", usageError{errors.New("--dry-run=server goes with --apply or --delete")}
	}
	switch {
	case o.output != "":
		return "yaml", nil
	case o.apply:
		return "apply", nil
	case o.delete:
		return "delete", nil
	case required:
		return "", usageError{errors.New("choose -o yaml (print the manifests) or --apply (apply them to the cluster)")}
	}
	return "", nil
}

func printWarmApplied(w io.Writer, applied []kube.Applied) {
	for _, a := range applied {
		fmt.Fprintln(w, a)
	}
}

func printWarmDeleted(w io.Writer, res []kube.Deleted) {
	for _, r := range res {
		fmt.Fprintln(w, r)
	}
}

// prepullFlags are the flags of 'warm prepull' that set warm.PrepullOptions
// fields, poolFlags those of 'warm pool' for warm.PoolOptions.
var (
	prepullFlags = fieldFlags{
		"Image": "--image", "AllowTag": "--allow-tag", "Name": "--name", "Namespace": "--namespace",
		"Mode": "--mode", "PauseImage": "--pause-image", "InitCommand": "--init-command",
		"PriorityClassName": "--priority-class", "ImagePullSecrets": "--image-pull-secret",
		"NodeSelector": "--node-selector", "Tolerations": "--toleration",
	}
	poolFlags = fieldFlags{
		"Name": "--name", "Namespace": "--namespace", "Replicas": "--replicas", "GPUsPerPod": "--gpus-per-pod",
		"GPUResource": "--gpu-resource", "NodeSelector": "--node-selector", "Tolerations": "--toleration",
		"PauseImage": "--pause-image", "PriorityClass": "--priority-class", "Priority": "--priority",
		"Schedules": "--schedule", "ModelcarImage": "--modelcar-image", "AllowTag": "--allow-tag",
		"TimeZone": "--time-zone", "ImagePullSecrets": "--image-pull-secret",
	}
)

func newWarmPrepullCmd() *cobra.Command {
	var (
		kf                kubeFlags
		of                warmOutputFlags
		opts              warm.PrepullOptions
		selectors, tols   []string
		modeName          string
		waitFor           bool
		timeout, interval time.Duration
	)
	cmd := &cobra.Command{
		Use:   "prepull --image REF@sha256:... (-o yaml | --apply [--wait] | --delete)",
		Short: "Make every matching node pull a modelcar ahead of time (DaemonSet)",
		Long: `Prepull renders or applies a DaemonSet that makes every node matching
--node-selector and --toleration pull the modelcar, then idle: one pause
container per node requesting 1m CPU and 8Mi memory, non-root, read-only root
filesystem, no capabilities, no service account token.

--mode image-volume (default) mounts the modelcar as a Kubernetes image volume
(beta and on by default from Kubernetes 1.35): the image needs no shell or
command. --mode init-container, for older clusters, runs the modelcar as an
init container with --init-command (default /bin/true), which the image must
contain (e.g. a modelcar packed with 'pack --base').

The image must be pinned by digest (REPO@sha256:...) unless --allow-tag. For
air-gapped clusters, mirror the pause image and pass --pause-image, pinned by
digest too (unless --allow-tag).

--wait follows the rollout node by node on stderr and succeeds when every
target node has the image: its pre-pull pod started (the kubelet starts it
only once the image is pulled), or node.status.images lists the digest. Pod
state alone is enough, so this also works where node.status.images is
truncated or empty (kwok's fake nodes report none). On --timeout it fails
naming the nodes still pending and why (unschedulable, pulling, ErrImagePull)
or, if no node is targeted, why each node is not.

'modelcar warm status' reports the same per node later; --delete removes the
DaemonSet.`,
		Example: `  # GitOps: commit the manifest
  modelcar warm prepull --image registry.example.com/models/llama@sha256:... \
    --node-selector nvidia.com/gpu.present=true --toleration nvidia.com/gpu:NoSchedule -o yaml

  # Apply and wait until every GPU node has the image
  modelcar warm prepull --image registry.example.com/models/llama@sha256:... -n inference \
    --node-selector nvidia.com/gpu.present=true --toleration nvidia.com/gpu:NoSchedule --apply --wait

  # Remove it
  modelcar warm prepull --image registry.example.com/models/llama@sha256:... -n inference --delete`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			mode, err := of.check(!waitFor)
			if err != nil {
				return err
			}
			if waitFor && mode != "apply" && mode != "" {
				return usageError{errors.New("--wait goes with --apply (or alone, to wait for an existing pre-pull)")}
			}
			if opts.Mode, err = warm.ParsePrepullMode(modeName); err != nil {
				return usageError{fmt.Errorf("--mode: %w", err)}
			}
			if opts.NodeSelector, err = warm.ParseNodeSelector(selectors); err != nil {
				return usageError{fmt.Errorf("--node-selector: %w", err)}
			}
			if opts.Tolerations, err = warm.ParseTolerations(tols); err != nil {
				return usageError{fmt.Errorf("--toleration: %w", err)}
			}
			switch {
			case mode == "yaml" || mode == "apply":
				if err := opts.Validate(); err != nil {
					return prepullFlags.usage(err)
				}
			case opts.Name != "":
				if err := warm.CheckPrepullName(opts.Name); err != nil {
					return usageError{fmt.Errorf("--name %q: %w", opts.Name, err)}
				}
			case opts.Image == "":
				return usageError{errors.New("--name or --image is required to find the DaemonSet")}
			default:
				opts.Name = warm.PrepullName(opts.Image)
			}
			return runWarmPrepull(cmd, &kf, &of, opts, mode, waitFor, warm.WaitOptions{Timeout: timeout, Interval: interval})
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&opts.Image, "image", "", "the modelcar to pull, REPO@sha256:...")
	fl.BoolVar(&opts.AllowTag, "allow-tag", false, "accept --image and --pause-image references without a digest")
	fl.StringVar(&opts.Name, "name", "", "DaemonSet name (default modelcar-prepull-REPOSITORY)")
	fl.StringArrayVar(&selectors, "node-selector", nil, "only nodes with label KEY=VALUE (repeatable)")
	fl.StringArrayVar(&tols, "toleration", nil, "tolerate taint KEY[=VALUE][:EFFECT] (repeatable)")
	fl.StringVar(&modeName, "mode", string(warm.ImageVolumeMode), "how pods pull the image: image-volume or init-container")
	fl.StringVar(&opts.PauseImage, "pause-image", warm.DefaultPauseImage, "the container that idles after the pull, REPO@sha256:...")
	fl.StringArrayVar(&opts.InitCommand, "init-command", nil, "init-container mode: the command that exits at once, one flag per argument (default /bin/true)")
	fl.StringVar(&opts.PriorityClassName, "priority-class", "", "priorityClassName of the pods")
	fl.StringArrayVar(&opts.ImagePullSecrets, "image-pull-secret", nil, "Secret in the namespace for a private registry (repeatable)")
	fl.BoolVar(&waitFor, "wait", false, "wait until every target node has the image, showing progress on stderr")
	fl.DurationVar(&timeout, "timeout", warm.DefaultPrepullTimeout, "with --wait: how long to wait")
	fl.DurationVar(&interval, "interval", warm.DefaultPrepullInterval, "with --wait: how often to look")
	fl.Lookup("interval").Hidden = true
	kf.register(fl)
	of.register(fl, "the DaemonSet")
	return cmd
}

func runWarmPrepull(cmd *cobra.Command, kf *kubeFlags, of *warmOutputFlags, opts warm.PrepullOptions, mode string, waitFor bool, wo warm.WaitOptions) error {
	out, errw := cmd.OutOrStdout(), cmd.ErrOrStderr()
	c, done, err := kf.renderOrConnect(out, mode, &opts.Namespace, func() ([]warm.Object, error) { return warm.PrepullObjects(opts) })
	if done {
		return err
	}
	ns := opts.Namespace
	ctx := cmd.Context()
	dry := of.dryRun == "server"
	name := opts.Name
	switch mode {
	case "delete":
		res, err := warm.DeletePrepull(ctx, c, ns, name, dry)
		printWarmDeleted(out, res)
		return err
	case "apply":
		objs, err := warm.PrepullObjects(opts)
		if err != nil {
			return err
		}
		name = objs[0].GetName()
		applied, err := warm.Apply(ctx, c, objs, warm.ApplyOptions{DryRun: dry})
		printWarmApplied(out, applied)
		if err != nil || !waitFor || dry {
			return err
		}
	}
	begin := time.Now()
	wo.Progress = func(n warm.NodeStatus) {
		if n.State == warm.NodeNotTargeted {
			return
		}
		fmt.Fprintf(errw, "%6.1fs %s\n", time.Since(begin).Seconds(), n)
	}
	fmt.Fprintf(errw, "waiting for prepull %s/%s (timeout %v)\n", ns, name, wo.Timeout)
	st, err := warm.WaitPrepull(ctx, c.Clientset, ns, name, wo)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "%s (%.1fs)\n", st.Summary(), time.Since(begin).Seconds())
	return nil
}

func newWarmStatusCmd() *cobra.Command {
	var (
		kf      kubeFlags
		name    string
		jsonOut bool
	)
	cmd := &cobra.Command{
		Use:   "status [--name NAME] [-n NAMESPACE]",
		Short: "Show, node by node, whether the pre-pulls have their image",
		Long: `Status reports each node for the pre-pull DaemonSet --name, or for every
pre-pull modelcar created in the namespace: pulled (and since when), pending
(and why: unschedulable, pulling, ErrImagePull...) or not targeted (and why:
a label the node selector wants, a taint not tolerated).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if name != "" {
				if err := warm.CheckPrepullName(name); err != nil {
					return usageError{fmt.Errorf("--name %q: %w", name, err)}
				}
			}
			c, ns, err := kf.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			names := []string{name}
			if name == "" {
				if names, err = warm.ListPrepulls(ctx, c.Clientset, ns); err != nil {
					return err
				}
				if len(names) == 0 {
					return fmt.Errorf("no modelcar pre-pull in namespace %s (try -n NAMESPACE)", ns)
				}
			}
			var all []*warm.PrepullStatus
			for _, n := range names {
				st, err := warm.GetPrepullStatus(ctx, c.Clientset, ns, n)
				if err != nil {
					return err
				}
				all = append(all, st)
			}
			if jsonOut {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(all)
			}
			writeWarmStatus(cmd.OutOrStdout(), all, time.Now())
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "the pre-pull DaemonSet (default: all in the namespace)")
	fl.BoolVar(&jsonOut, "json", false, "print the status as JSON")
	kf.register(fl)
	return cmd
}

// writeWarmStatus prints one table per pre-pull.
func writeWarmStatus(w io.Writer, all []*warm.PrepullStatus, now time.Time) {
	for i, st := range all {
		if i > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintln(w, st.Summary())
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "NODE\tSTATE\tSINCE\tDETAIL")
		for _, n := range st.Nodes {
			since := "-"
			if !n.Since.IsZero() {
				since = n.Since.UTC().Format(time.RFC3339) + " (" + now.Sub(n.Since).Round(time.Second).String() + " ago)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", n.Node, n.State, since, n.Detail)
		}
		tw.Flush()
	}
}

func newWarmPoolCmd() *cobra.Command {
	var (
		kf              kubeFlags
		of              warmOutputFlags
		opts            warm.PoolOptions
		selectors, tols []string
		schedules       []string
	)
	cmd := &cobra.Command{
		Use:   "pool --replicas N --gpus-per-pod G (-o yaml | --apply | --delete)",
		Short: "Keep GPU nodes provisioned with placeholder pods that real pods preempt",
		Long: `Pool renders or applies a node-pool warmer: a Deployment of --replicas pause
pods, each requesting --gpus-per-pod of --gpu-resource, in a PriorityClass
with a negative value (--priority, default -10) and preemptionPolicy Never.
The placeholders keep GPU nodes up (a cluster autoscaler adds nodes for
them); any real pod preempts them at once (terminationGracePeriodSeconds 0)
and the autoscaler then adds a node for the evicted placeholder. A
toleration of the taint named like the GPU resource is always added.

--schedule "CRON=REPLICAS" (repeatable) scales the pool over time with
Kubernetes-native objects: one CronJob per window runs modelcar's own image
(--modelcar-image REF@sha256:...) as 'modelcar warm scale', under a
ServiceAccount whose Role allows only get on this Deployment and patch on
its scale subresource. Once a window has run it owns the replicas: applying
the pool again leaves them. Windows dropped from the command line are
deleted on --apply.

--delete removes the Deployment and the schedule's objects; the
PriorityClass is shared by all pools and stays.`,
		Example: `  # Two 8-GPU nodes kept warm
  modelcar warm pool --replicas 2 --gpus-per-pod 8 -n inference \
    --node-selector nvidia.com/gpu.present=true --apply

  # Four nodes on weekdays from 8:00, none from 20:00 (GitOps)
  modelcar warm pool --replicas 0 --gpus-per-pod 8 -n inference \
    --schedule "0 8 * * 1-5=4" --schedule "0 20 * * *=0" --time-zone Europe/Paris \
    --modelcar-image registry.example.com/modelcar@sha256:... -o yaml`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			mode, err := of.check(true)
			if err != nil {
				return err
			}
			if opts.NodeSelector, err = warm.ParseNodeSelector(selectors); err != nil {
				return usageError{fmt.Errorf("--node-selector: %w", err)}
			}
			if opts.Tolerations, err = warm.ParseTolerations(tols); err != nil {
				return usageError{fmt.Errorf("--toleration: %w", err)}
			}
			for _, s := range schedules {
				sch, err := warm.ParseSchedule(s)
				if errors.Is(err, warm.ErrScheduleTimeZone) {
					return usageError{fmt.Errorf("--schedule %q: %w: give the time zone apart, with --time-zone", s, warm.ErrScheduleTimeZone)}
				}
				if err != nil {
					return usageError{fmt.Errorf("--schedule: %w", err)}
				}
				opts.Schedules = append(opts.Schedules, sch)
			}
			if opts.Name == "" {
				opts.Name = warm.DefaultPoolName
			}
			if mode == "delete" {
				if err := warm.CheckPoolName(opts.Name, 0); err != nil {
					return usageError{fmt.Errorf("--name %q: %w", opts.Name, err)}
				}
			} else {
				if !cmd.Flags().Changed("replicas") || !cmd.Flags().Changed("gpus-per-pod") {
					return usageError{errors.New("--replicas and --gpus-per-pod are required")}
				}
				if opts.ModelcarImage != "" && len(opts.Schedules) == 0 {
					return usageError{errors.New("--modelcar-image is only used with --schedule")}
				}
				// What the manifests will carry; --apply resolves it again
				// when it connects.
				opts.Namespace = kf.renderNamespace()
				if err := opts.Validate(); err != nil {
					var fe *warm.FieldError
					if errors.As(err, &fe) && fe.Field == "ModelcarImage" && errors.Is(err, warm.ErrRequired) {
						return usageError{errors.New("--schedule needs --modelcar-image REF@sha256:..., modelcar's own image ('make image'), to run the scaler")}
					}
					return poolFlags.usage(err)
				}
			}
			out := cmd.OutOrStdout()
			c, done, err := kf.renderOrConnect(out, mode, &opts.Namespace, func() ([]warm.Object, error) { return warm.Pool(opts) })
			if done {
				return err
			}
			ns := opts.Namespace
			dry := of.dryRun == "server"
			if mode == "delete" {
				name := opts.Name
				if name == "" {
					name = warm.DefaultPoolName
				}
				res, err := warm.DeletePool(cmd.Context(), c, ns, name, dry)
				printWarmDeleted(out, res)
				return err
			}
			applied, pruned, err := warm.ApplyPool(cmd.Context(), c, opts, warm.ApplyOptions{DryRun: dry})
			printWarmApplied(out, applied)
			printWarmDeleted(out, pruned)
			return err
		},
	}
	fl := cmd.Flags()
	fl.Int32Var(&opts.Replicas, "replicas", 0, "placeholder pods")
	fl.Int64Var(&opts.GPUsPerPod, "gpus-per-pod", 0, "GPUs each placeholder requests (a node's GPU count keeps one node per placeholder)")
	fl.StringVar(&opts.GPUResource, "gpu-resource", warm.DefaultGPUResource, "the GPU extended resource")
	fl.StringVar(&opts.Name, "name", warm.DefaultPoolName, "Deployment name")
	fl.StringArrayVar(&selectors, "node-selector", nil, "only nodes with label KEY=VALUE (repeatable)")
	fl.StringArrayVar(&tols, "toleration", nil, "tolerate taint KEY[=VALUE][:EFFECT] (repeatable)")
	fl.StringArrayVar(&schedules, "schedule", nil, `scale to REPLICAS at CRON, as "CRON=REPLICAS" (repeatable)`)
	fl.StringVar(&opts.ModelcarImage, "modelcar-image", "", "modelcar's own image REF@sha256:... for the schedule's CronJobs")
	fl.BoolVar(&opts.AllowTag, "allow-tag", false, "accept --modelcar-image and --pause-image references without a digest")
	fl.StringVar(&opts.TimeZone, "time-zone", "", "time zone of the schedules, e.g. Europe/Paris (default the controller manager's)")
	fl.StringVar(&opts.PauseImage, "pause-image", warm.DefaultPauseImage, "the placeholders' container, REPO@sha256:...")
	fl.StringVar(&opts.PriorityClass, "priority-class", warm.DefaultPlaceholderPriorityClass, "the placeholders' PriorityClass (created)")
	fl.StringArrayVar(&opts.ImagePullSecrets, "image-pull-secret", nil, "Secret in the namespace for a private registry (repeatable)")
	fl.Int32Var(&opts.Priority, "priority", warm.DefaultPlaceholderPriority, "its value: negative, and not below cluster-autoscaler's --expendable-pods-priority-cutoff")
	kf.register(fl)
	of.register(fl, "the pool")
	return cmd
}

// newWarmScaleCmd is what a pool's schedule CronJobs run, in the cluster.
func newWarmScaleCmd() *cobra.Command {
	var (
		kf       kubeFlags
		name     string
		replicas int32
	)
	cmd := &cobra.Command{
		Use:    "scale --name POOL --replicas N",
		Short:  "Scale a pool's placeholders (run by the pool's schedule CronJobs)",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if name == "" || !cmd.Flags().Changed("replicas") {
				return usageError{errors.New("--name and --replicas are required")}
			}
			if err := warm.CheckPoolName(name, 0); err != nil {
				return usageError{fmt.Errorf("--name %q: %w", name, err)}
			}
			c, ns, err := kf.client()
			if err != nil {
				return err
			}
			prev, err := warm.Scale(cmd.Context(), c.Clientset, ns, name, replicas)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "pool %s/%s scaled from %d to %d replicas\n", ns, name, prev, replicas)
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&name, "name", "", "the pool's Deployment")
	fl.Int32Var(&replicas, "replicas", 0, "placeholder pods")
	kf.register(fl)
	return cmd
}
