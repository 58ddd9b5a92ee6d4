package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcar/modelcar/internal/kube"
	"github.com/modelcar/modelcar/measure"
)

// measureKubeClient connects to the cluster the connection flags name
// (internal/kube) and returns the namespace to use. Tests replace it with a
// fake clientset.
var measureKubeClient = func(f *kube.Flags) (kubernetes.Interface, string, error) {
	c, ns, err := f.Connect()
	if err != nil {
		return nil, "", err
	}
	return c.Clientset, ns, nil
}

// measureLiveFlags are the flags watch and run share.
type measureLiveFlags struct {
	kube                              kubeFlags
	namespace                         string
	container, record, format, output string
	timeout                           time.Duration
	quiet                             bool
}

func (f *measureLiveFlags) add(cmd *cobra.Command, timeoutHelp string) {
	fl := cmd.Flags()
	f.kube.register(fl)
	fl.Lookup("namespace").Usage = "namespace of the pods (default the context's, else default)"
	fl.StringVar(&f.container, "container", "", "the serving container: only its log is read (default: every container's; the one whose log shows vLLM loading weights is timed)")
	fl.DurationVar(&f.timeout, "timeout", measure.DefaultRunTimeout, timeoutHelp)
	fl.StringVar(&f.format, "format", "", "report format: text, md, json or svg (default: from the -o extension, else text)")
	fl.StringVarP(&f.output, "output", "o", "", "write the report to FILE instead of stdout")
	fl.BoolVarP(&f.quiet, "quiet", "q", false, "no progress lines on stderr")
	_ = cmd.RegisterFlagCompletionFunc("format", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var out []string
		for _, f := range measure.Formats {
			out = append(out, string(f))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
}

func (f *measureLiveFlags) connect() (kubernetes.Interface, error) {
	client, ns, err := measureKubeClient(f.kube.f)
	if err != nil {
		return nil, err
	}
	f.namespace = ns
	return client, nil
}

func (f *measureLiveFlags) progress(cmd *cobra.Command) func(string) {
	if f.quiet {
		return nil
	}
	w := cmd.ErrOrStderr()
	return func(msg string) { fmt.Fprintln(w, "measure:", msg) }
}

// report renders rep and fails when a cold start never became Ready.
func (f *measureLiveFlags) report(cmd *cobra.Command, rep *measure.Report, format measure.Format) error {
	warnInvalid(cmd, rep)
	var buf bytes.Buffer
	if err := measure.Render(&buf, rep, format); err != nil {
		return err
	}
	if err := writeOutput(cmd, f.output, buf.Bytes()); err != nil {
		return err
	}
	notReady := 0
	for _, c := range rep.ColdStarts {
		if c.Ready.IsZero() {
			notReady++
		}
	}
	if notReady > 0 {
		return fmt.Errorf("%d of %d pods did not become Ready within --timeout %s (the report shows what was seen)", notReady, len(rep.ColdStarts), f.timeout)
	}
	return nil
}

// addMeasureLiveCmds adds `measure watch` and `measure run`.
func addMeasureLiveCmds(measure *cobra.Command) {
	measure.AddCommand(newMeasureWatchCmd(), newMeasureRunCmd())
}

func newMeasureWatchCmd() *cobra.Command {
	var (
		f        measureLiveFlags
		selector string
		pods     []string
	)
	cmd := &cobra.Command{
		Use:   "watch -n NS (-l SELECTOR | --pod NAME)... [--record DIR] [--format text|md|json|svg] [-o FILE]",
		Short: "Follow pods live until they are Ready and split their cold starts into phases",
		Long: `Watch follows pods through the Kubernetes API until every one is Ready (or
--timeout passes), then reports each cold start as 'modelcar measure --from'
does: provision, pull, load and warmup, and what no source explains.

It watches the namespace's Pods, its Events (core/v1 and events.k8s.io/v1) and
the cluster's Nodes, so it may start before or after the pods: what already
happened is read back (events are kept about an hour). When a pod becomes
Ready it reads its containers' logs with timestamps; a log it cannot read is
reported as missing, and load and warmup stay unattributed. It records when it
first saw a new node's GPUs become allocatable, which kubectl cannot.

--record DIR writes what it saw as a bundle that 'modelcar measure --from DIR'
reads back to the same report. With -l, it waits for at least one pod and
for every pod it sees; with --pod, for each named pod. The exit status is 1
when a pod was not Ready within --timeout (the report still shows it).`,
		Example: `  # Start watching, then deploy; report when the pods are Ready
  modelcar measure watch -n llm -l app.kubernetes.io/instance=llama &
  modelcar deploy --name llama -n llm --image REPO@sha256:... --modelcar-image REPO@sha256:... --apply
  wait

  # Keep the bundle, and a Markdown report for a pull request
  modelcar measure watch -n llm -l app.kubernetes.io/instance=llama --record bundle --format md -o report.md`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError{fmt.Errorf("watch takes no arguments, got %q (name pods with --pod)", args)}
			}
			if selector == "" && len(pods) == 0 {
				return usageError{errors.New("choose the pods: -l SELECTOR and/or --pod NAME")}
			}
			if f.timeout < 0 {
				return usageError{errors.New("--timeout must not be negative")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := reportFormat(cmd, f.format, f.output)
			if err != nil {
				return err
			}
			client, err := f.connect()
			if err != nil {
				return err
			}
			b, err := measure.Watch(cmd.Context(), client, measure.WatchOptions{
				Namespace: f.namespace, Selector: selector, Pods: pods, Container: f.container,
				Timeout: f.timeout, Record: f.record, Progress: f.progress(cmd),
			})
			if err != nil {
				return err
			}
			var opts []measure.Option
			if f.container != "" {
				opts = append(opts, measure.WithContainer(f.container))
			}
			rep, err := measure.Analyze(b, opts...)
			if err != nil {
				return err
			}
			return f.report(cmd, rep, format)
		},
	}
	f.add(cmd, "how long to wait for the pods to be Ready (0: no limit)")
	fl := cmd.Flags()
	fl.StringVarP(&selector, "selector", "l", "", "label selector of the pods, e.g. app=vllm")
	fl.StringArrayVar(&pods, "pod", nil, "a pod to follow, NAME (repeatable)")
	fl.StringVar(&f.record, "record", "", "also write what was seen as a bundle in DIR (read it with 'measure --from DIR')")
	return cmd
}

func newMeasureRunCmd() *cobra.Command {
	var (
		f          measureLiveFlags
		deployment string
		mode       string
		times      int
		freshNode  bool
		beforeEach string
	)
	cmd := &cobra.Command{
		Use:   "run --deployment NAME -n NS [--times N] [--mode scale|delete] [--fresh-node] [--format text|md|json|svg] [-o FILE]",
		Short: "Trigger real cold starts of a Deployment and measure each (p50/p90 per phase)",
		Long: `Run restarts a Deployment's pods --times times, one cold start after the
other, follows each as 'modelcar measure watch' does and reports every cold
start, with p50 and p90 per phase when there are two or more.

  --mode scale   scale to zero, wait until the pods are gone, scale back up
                 (the default; with 0 replicas, one is started and the
                 deployment is scaled to zero again at the end)
  --mode delete  delete the pods; the ReplicaSet starts new ones

A start is only cold if the image is not on the node and the node was not
warm: --fresh-node cordons the nodes the pods ran on before each start, so
the next one lands on another node (a new one, with a node autoscaler), and
uncordons them at the end. On a fixed node, --before-each runs a shell
command before each start (once the old pods are gone in --mode scale): the
place to remove the image from the node and drop its page cache. It gets
MODELCAR_RUN (1, 2, ...) in its environment; its output goes to stderr, and
its failure stops the run. An autoscaler such as KEDA or an HPA that scales
the deployment itself fights --mode scale: pause it first.

--timeout bounds each cold start. The exit status is 1 when a start did not
become Ready in time (the report still shows it).`,
		Example: `  # Three cold starts onto fresh nodes, as JSON for 'measure compare'
  modelcar measure run -n llm --deployment vllm --times 3 --fresh-node -o cold-start.json

  # Delete the pod instead of scaling, and keep each run's bundle
  modelcar measure run -n llm --deployment vllm --mode delete --record runs/

  # A cold node each time: the image removed, the page cache dropped
  modelcar measure run -n llm --deployment vllm --times 3 \
    --before-each 'ssh gpu-node "crictl rmi REPO@sha256:... ; sync; echo 3 > /proc/sys/vm/drop_caches"'`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError{fmt.Errorf("run takes no arguments, got %q (name the deployment with --deployment)", args)}
			}
			if deployment == "" {
				return usageError{errors.New("--deployment NAME is required")}
			}
			if times < 1 {
				return usageError{fmt.Errorf("--times must be at least 1, got %d", times)}
			}
			if mode != measure.ModeScale && mode != measure.ModeDelete {
				return usageError{fmt.Errorf("--mode %q: want scale or delete", mode)}
			}
			if f.timeout <= 0 {
				return usageError{errors.New("--timeout must be positive")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			format, err := reportFormat(cmd, f.format, f.output)
			if err != nil {
				return err
			}
			client, err := f.connect()
			if err != nil {
				return err
			}
			rep, runErr := measure.Run(cmd.Context(), client, measure.RunOptions{
				Namespace: f.namespace, Deployment: deployment, Times: times, Mode: mode, FreshNode: freshNode,
				Timeout: f.timeout, Container: f.container, Record: f.record, Progress: f.progress(cmd),
				BeforeEach: shellHook(cmd, beforeEach),
			})
			if rep == nil {
				return runErr
			}
			if err := f.report(cmd, rep, format); err != nil {
				return errors.Join(runErr, err)
			}
			return runErr
		},
	}
	f.add(cmd, "how long each cold start may take to be Ready")
	fl := cmd.Flags()
	fl.StringVar(&deployment, "deployment", "", "the Deployment to restart")
	fl.IntVar(&times, "times", 1, "how many cold starts to trigger, one after the other")
	fl.StringVar(&mode, "mode", measure.ModeScale, "how to trigger a cold start: scale (to zero and back) or delete (the pods)")
	fl.BoolVar(&freshNode, "fresh-node", false, "cordon the nodes the pods ran on before each start (uncordoned at the end)")
	fl.StringVar(&f.record, "record", "", "also write each cold start's bundle in DIR/run-N")
	fl.StringVar(&beforeEach, "before-each", "", "shell command run before each cold start (MODELCAR_RUN=N), e.g. to remove the image from the node")
	_ = cmd.RegisterFlagCompletionFunc("mode", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		return []string{measure.ModeScale, measure.ModeDelete}, cobra.ShellCompDirectiveNoFileComp
	})
	return cmd
}

// shellHook runs script with sh -c as a measure.RunOptions.BeforeEach hook
// (nil for an empty script), its output on the command's stderr.
func shellHook(cmd *cobra.Command, script string) func(context.Context, int) error {
	if script == "" {
		return nil
	}
	return func(ctx context.Context, run int) error {
		c := exec.CommandContext(ctx, "sh", "-c", script)
		c.Env = append(os.Environ(), "MODELCAR_RUN="+strconv.Itoa(run))
		c.Stdout, c.Stderr = cmd.ErrOrStderr(), cmd.ErrOrStderr()
		if err := c.Run(); err != nil {
			return fmt.Errorf("--before-each: %w", err)
		}
		return nil
	}
}
