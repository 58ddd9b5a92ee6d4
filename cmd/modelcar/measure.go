package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/google/renameio/v2"
	"github.com/spf13/cobra"

	"github.com/modelcar/modelcar/measure"
)

func newMeasureCmd() *cobra.Command {
	var (
		from, format, output, container string
		pods                            []string
	)
	cmd := &cobra.Command{
		Use:   "measure --from DIR [--format text|md|json|svg] [-o FILE]",
		Short: "Split pod cold starts into provision, image pull, model load and warm-up",
		Long: `Measure reads a bundle of what Kubernetes and vLLM recorded about pods
starting, and splits each pod's time from creation to Ready into four phases:

  provision  pod created → scheduled (with a new node: waiting for scale-up,
             node boot, Ready → GPU allocatable, scheduling)
  pull       the union of the pod's image pulls, from kubelet events
  load       serving container started → vLLM's weights loaded
  warmup     weights loaded → pod Ready (profiling, KV cache, torch.compile,
             graph capture, warm-up probe, readiness probe)

Time no source explains is reported as unattributed, so the phases add up to
the total exactly; missing data is listed, never guessed. The report names the
dominant phase and the lever that fixes it.

A bundle is a directory a user can make with kubectl alone:

  pods.json    kubectl get pods -n NS -o json
  events.json  kubectl get events -n NS -o json (core/v1 and/or events.k8s.io/v1)
  nodes.json   kubectl get nodes -o json
  logs/NAMESPACE_POD_CONTAINER.log
               kubectl logs -n NS POD -c CONTAINER --timestamps

Compare two JSON reports with 'modelcar measure compare' to gate CI on
regressions. The report goes to stdout, or to -o FILE.`,
		Example: `  # Record a bundle for the pods of a deployment, then measure them
  mkdir -p bundle/logs
  kubectl get pods -n llm -l app=vllm -o json > bundle/pods.json
  kubectl get events -n llm -o json > bundle/events.json
  kubectl get nodes -o json > bundle/nodes.json
  for p in $(kubectl get pods -n llm -l app=vllm -o name); do
    kubectl logs -n llm "$p" -c vllm --timestamps > "bundle/logs/llm_${p#pod/}_vllm.log"
  done
  modelcar measure --from bundle

  # A Markdown report for a pull request, and the JSON to compare later
  modelcar measure --from bundle --format md > report.md
  modelcar measure --from bundle -o cold-start.json

  # A waterfall chart
  modelcar measure --from bundle --format svg -o cold-start.svg`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 0 {
				return usageError{fmt.Errorf("measure takes no arguments, got %q (did you mean 'modelcar measure compare'?)", args)}
			}
			if from == "" {
				return usageError{fmt.Errorf("--from DIR is required: a bundle of pods.json, events.json, nodes.json and logs/")}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := reportFormat(cmd, format, output)
			if err != nil {
				return err
			}
			var opts []measure.Option
			if len(pods) > 0 {
				opts = append(opts, measure.WithPods(pods...))
			}
			if container != "" {
				opts = append(opts, measure.WithContainer(container))
			}
			b, err := measure.ReadBundle(from, opts...)
			if err != nil {
				return err
			}
			rep, err := measure.Analyze(b, opts...)
			if err != nil {
				return err
			}
			warnInvalid(cmd, rep)
			var buf bytes.Buffer
			if err := measure.Render(&buf, rep, f); err != nil {
				return err
			}
			return writeOutput(cmd, output, buf.Bytes())
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&from, "from", "", "bundle directory: pods.json, events.json, nodes.json, logs/NAMESPACE_POD_CONTAINER.log")
	fl.StringVar(&format, "format", "", "report format: text, md, json or svg (default: from the -o extension, else text)")
	fl.StringVarP(&output, "output", "o", "", "write the report to FILE instead of stdout")
	fl.StringArrayVar(&pods, "pod", nil, "measure only this pod, NAME or NAMESPACE/NAME (repeatable; default: every pod in the bundle)")
	fl.StringVar(&container, "container", "", "the serving container (default: the one whose log shows vLLM loading weights)")
	_ = cmd.RegisterFlagCompletionFunc("format", func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective) {
		var out []string
		for _, f := range measure.Formats {
			out = append(out, string(f))
		}
		return out, cobra.ShellCompDirectiveNoFileComp
	})
	cmd.AddCommand(newMeasureCompareCmd())
	addMeasureLiveCmds(cmd)
	return cmd
}

func newMeasureCompareCmd() *cobra.Command {
	var format, output, maxRegression string
	cmd := &cobra.Command{
		Use:   "compare BASE.json NEW.json [--max-regression 10%]",
		Short: "Compare two cold-start reports phase by phase; exit 1 on a regression",
		Long: `Compare reads two JSON reports written by 'modelcar measure --format json'
and compares the total and each phase: the median (p50) over each report's
cold starts, the value itself for a report of one.

The total or a phase regresses when it grows by more than --max-regression
AND by at least 1 second, so noise in short phases never fails CI.
Unattributed time is shown but not gated. A pod of NEW that never became
Ready fails the comparison too. The comparison goes to stdout (or -o FILE);
the exit status is 1 when something regressed or never became Ready, and 2
on bad usage or a file that cannot be compared (missing, not a report
written by 'modelcar measure --format json', or with no cold starts).`,
		Example: `  # Gate a pull request on the cold start of the main branch
  modelcar measure compare main.json pr.json --max-regression 10% --format md > diff.md`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) != 2 {
				return usageError{fmt.Errorf("compare takes BASE.json and NEW.json, got %d arguments", len(args))}
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := reportFormat(cmd, format, output)
			if err != nil {
				return err
			}
			if f == measure.SVG {
				return usageError{fmt.Errorf("--format: a comparison renders as text, md or json")}
			}
			limit, err := parseFraction(maxRegression)
			if err != nil {
				return usageError{fmt.Errorf("--max-regression: %w", err)}
			}
			base, err := readComparable(args[0])
			if err != nil {
				return err
			}
			next, err := readComparable(args[1])
			if err != nil {
				return err
			}
			diff, regressed := measure.Compare(base, next, limit)
			var buf bytes.Buffer
			if err := measure.RenderDiff(&buf, diff, f); err != nil {
				return err
			}
			if err := writeOutput(cmd, output, buf.Bytes()); err != nil {
				return err
			}
			if regressed {
				var names, fails []string
				for _, r := range diff.Rows {
					if r.Regressed {
						names = append(names, fmt.Sprintf("%s %+.1f s", r.Name, r.Delta))
					}
				}
				if len(diff.NotReady) > 0 {
					fails = append(fails, fmt.Sprintf("%s: never Ready: %s (its times end at the last thing seen)", args[1], strings.Join(diff.NotReady, ", ")))
				}
				if len(names) > 0 {
					fails = append(fails, fmt.Sprintf("cold start regressed past %s%%: %s", strconv.FormatFloat(100*limit, 'f', -1, 64), strings.Join(names, ", ")))
				}
				return errors.New(strings.Join(fails, "; "))
			}
			return nil
		},
	}
	fl := cmd.Flags()
	fl.StringVar(&maxRegression, "max-regression", "10%", "allowed growth of the total and of each phase, e.g. 10% or 0.1 (increases under 1 s never count)")
	fl.StringVar(&format, "format", "", "text, md or json (default: from the -o extension, else text)")
	fl.StringVarP(&output, "output", "o", "", "write the comparison to FILE instead of stdout")
	return cmd
}

// outputExts maps the -o extensions a report's format follows from; a
// name with no extension is text.
var outputExts = []struct {
	ext    string
	format measure.Format
}{
	{".txt", measure.Text}, {".text", measure.Text},
	{".md", measure.Markdown}, {".markdown", measure.Markdown},
	{".json", measure.JSON}, {".svg", measure.SVG},
}

// warnInvalid names on stderr, pod by pod, the timestamps the report
// ignored as invalid data (they are in the report too).
func warnInvalid(cmd *cobra.Command, rep *measure.Report) {
	for _, c := range rep.ColdStarts {
		for _, m := range c.Invalid {
			fmt.Fprintf(cmd.ErrOrStderr(), "warning: %s: invalid data: %s\n", c.Pod, m)
		}
	}
}

// reportFormat parses --format, defaulting to the -o file's extension. An
// extension no format writes (-o report.yaml) is refused, before any work,
// unless --format names the format.
func reportFormat(cmd *cobra.Command, format, output string) (measure.Format, error) {
	if !cmd.Flags().Changed("format") && output != "" && output != "-" {
		ext := strings.ToLower(filepath.Ext(output))
		if ext == "" {
			return measure.Text, nil
		}
		var known []string
		for _, e := range outputExts {
			if e.ext == ext {
				return e.format, nil
			}
			known = append(known, e.ext)
		}
		return "", usageError{fmt.Errorf("-o %s: cannot write a %s file: the extension picks the format, one of %s (or pass --format)",
			output, filepath.Ext(output), strings.Join(known, ", "))}
	}
	f, err := measure.ParseFormat(format)
	if err != nil {
		return "", usageError{fmt.Errorf("--format: %w", err)}
	}
	return f, nil
}

// parseFraction parses 10%, 2.5% or 0.1 into a fraction.
func parseFraction(s string) (float64, error) {
	t := strings.TrimSpace(s)
	pct := strings.HasSuffix(t, "%")
	v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(t, "%")), 64)
	switch {
	case err != nil || v < 0:
		return 0, fmt.Errorf("%q is not a percentage (examples: 10%%, 2.5%%, 0.1)", s)
	case pct:
		return v / 100, nil
	case v > 1:
		return 0, fmt.Errorf("%q: write a percentage as %s%% or a fraction as %g", s, t, v/100)
	}
	return v, nil
}

func readReport(path string) (*measure.Report, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r, err := measure.ReadReport(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// readComparable reads a report for compare: a file that is not a report,
// or a report with no cold starts, cannot be compared (exit 2, so that it
// is not mistaken for a regression).
func readComparable(path string) (*measure.Report, error) {
	r, err := readReport(path)
	if err != nil {
		return nil, usageError{err}
	}
	if len(r.ColdStarts) == 0 {
		return nil, usageError{fmt.Errorf("%s: the report has no cold starts: nothing to compare", path)}
	}
	return r, nil
}

// writeOutput writes data to stdout, or to output whole (a temporary file
// renamed into place); its errors name output, not the temporary file.
func writeOutput(cmd *cobra.Command, output string, data []byte) error {
	if output == "" || output == "-" {
		_, err := cmd.OutOrStdout().Write(data)
		return err
	}
	fail := func(err error) error {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("-o %s: %w", output, err)
	}
	// renameio: a temporary file beside output, mode 0644 whatever the
	// umask (as a report others read should be), fsynced, renamed over it.
	f, err := renameio.NewPendingFile(output, renameio.WithTempDir(filepath.Dir(output)), renameio.WithStaticPermissions(0o644))
	if err != nil {
		return fail(err)
	}
	defer f.Cleanup()
	if _, err = f.Write(data); err == nil {
		err = f.CloseAtomicallyReplace()
	}
	if err != nil {
		var le *os.LinkError
		if errors.As(err, &le) {
			err = le.Err
		}
		return fail(err)
	}
	return nil
}
