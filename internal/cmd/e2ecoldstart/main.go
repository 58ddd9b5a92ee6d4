// Command e2ecoldstart closes the cold-start optimizer's loop on a real node
// (`make e2e-coldstart`, root): it starts the test cluster with a real node
// (internal/testcluster) and a registry, deploys the vllm-modelcar chart
// serving a generated model through the vLLM stand-in, and then
//
//  1. measures the baseline: the image a user starts from (the model in one
//     gzip layer, as a Dockerfile COPY makes it), -runs cold starts, each
//     with the image removed from the node and the page cache dropped
//     (`modelcar measure run --before-each`);
//  2. asks `modelcar plan --discover --bench --emit` what to change;
//  3. applies everything it emitted: the pack flags (re-pack, push), the
//     pre-pull (for the image now served) and the chart values;
//  4. measures again, the page cache dropped before each start, the image
//     left where the pre-pull put it;
//  5. prints and writes (JSON, Markdown) per phase and per lever the
//     predicted saving beside the measured one.
//
// Everything it starts is stopped by PID and removed when it ends.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"

	"github.com/modelcar/modelcar/internal/testcluster"
	"github.com/modelcar/modelcar/internal/testmodel"
	"github.com/modelcar/modelcar/measure"
	"github.com/modelcar/modelcar/measure/plan"
)

type config struct {
	modelcar, work, size, rate, bench, jsonOut, mdOut string
	runs                                              int
}

func main() {
	testcluster.RunNodeAgentIfRequested()
	var c config
	flag.StringVar(&c.modelcar, "modelcar", "bin/modelcar", "the modelcar binary")
	flag.StringVar(&c.work, "work", ".work/e2e-coldstart", "work directory (replaced)")
	flag.StringVar(&c.size, "size", "2GiB", "model weights")
	flag.StringVar(&c.rate, "rate", "1gbit", "the node's pull link (tc rate)")
	flag.IntVar(&c.runs, "runs", 3, "cold starts per measurement")
	flag.StringVar(&c.bench, "bench", "testdata/coldstart/results-containerd2-1gbit.json", "node-side benchmark results for plan --bench")
	flag.StringVar(&c.jsonOut, "json", "", "write the results as JSON here")
	flag.StringVar(&c.mdOut, "md", "", "write the results as Markdown here")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, c); err != nil {
		fmt.Fprintf(os.Stderr, "e2e-coldstart: %v\n", err)
		os.Exit(1)
	}
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "e2e-coldstart: "+format+"\n", args...)
}

func run(ctx context.Context, c config) (err error) {
	size, err := testmodel.ParseSize(c.size)
	if err != nil {
		return err
	}
	work, err := filepath.Abs(c.work)
	if err != nil {
		return err
	}
	if c.modelcar, err = filepath.Abs(c.modelcar); err != nil {
		return err
	}
	if err := os.RemoveAll(work); err != nil {
		return err
	}
	if err := os.MkdirAll(work, 0o755); err != nil {
		return err
	}
	begin := time.Now()

	// The cluster, a registry and the real node.
	cl, err := testcluster.Start(ctx, testcluster.Options{Dir: filepath.Join(work, "cluster"), Log: os.Stderr})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, testcluster.StopDir(cl.Dir)) }()
	reg, err := freeAddr()
	if err != nil {
		return err
	}
	if err := testcluster.StartRegistry(ctx, filepath.Join(work, "registry"), reg); err != nil {
		return err
	}
	defer func() { err = errors.Join(err, testcluster.StopDir(filepath.Join(work, "registry"))) }()
	node, err := cl.AddRealNode(ctx, testcluster.RealNodeOptions{Registries: []string{reg}, Rate: c.rate, Log: os.Stderr})
	if err != nil {
		return err
	}
	defer func() { err = errors.Join(err, node.Stop(context.Background())) }()
	kc := cl.Kubeconfig

	// The model, the image a user starts from, the stand-in and modelcar's
	// own image.
	m, err := testmodel.Generate(filepath.Join(work, "model"), testmodel.Options{TotalSize: size})
	if err != nil {
		return err
	}
	logf("model: %s in %d files", c.size, len(m.Files))
	baseline, err := naiveImage(ctx, c, m.Dir, filepath.Join(work, "naive"), reg+"/models/e2e:naive")
	if err != nil {
		return err
	}
	standin, err := projectImage(ctx, c, "vllm-standin", work, reg)
	if err != nil {
		return err
	}
	mcImage, err := projectImage(ctx, c, "modelcar", work, reg)
	if err != nil {
		return err
	}

	// Deploy, then the baseline.
	const ns = "llm"
	deployArgs := append([]string{"deploy", "--kubeconfig", kc, "-n", ns, "--create-namespace", "--name", "llm", "--modelcar-image", mcImage},
		node.ChartFlags(standin, "4Gi")...)
	deployArgs = append(deployArgs, "--set", "strategy.type=Recreate", "--set", "strategy.rollingUpdate=null")
	if _, err := mc(ctx, c, append(deployArgs, "--image", baseline, "--apply")...); err != nil {
		return err
	}
	_, baseDigest, _ := strings.Cut(baseline, "@")
	rmi := node.RemoveImageScript(baseDigest) + "; "
	drop := "sync; echo 3 > /proc/sys/vm/drop_caches"
	before := filepath.Join(work, "baseline.json")
	logf("baseline: %d cold starts of %s, the image removed and the page cache dropped before each", c.runs, baseline)
	if _, err := mc(ctx, c, "measure", "run", "--kubeconfig", kc, "-n", ns, "--deployment", "llm", "--times", strconv.Itoa(c.runs),
		"--timeout", "20m", "--before-each", rmi+drop, "-o", before, "--record", filepath.Join(work, "baseline-runs")); err != nil {
		return err
	}

	// The plan, and everything it emitted.
	bits, err := testcluster.ParseRate(c.rate)
	if err != nil {
		return err
	}
	planDir := filepath.Join(work, "plan")
	planJSON := filepath.Join(work, "plan.json")
	if _, err := mc(ctx, c, "plan", "--from", before, "--kubeconfig", kc, "--bench", c.bench, "--image", baseline, "-n", ns,
		"--node-selector", "modelcar.test/real-node=true", "--toleration", "nvidia.com/gpu:NoSchedule",
		"--fact", fmt.Sprintf("linkMbit=%g", bits/1e6), // the node's link, as a user states it
		"--emit", planDir, "--format", "json", "-o", planJSON); err != nil {
		return err
	}
	var p plan.Plan
	if err := readJSON(planJSON, &p); err != nil {
		return err
	}
	image := baseline
	var applied []string
	repacked := ""
	if flags, ok, err := packFlags(filepath.Join(planDir, plan.PackFlagsFile)); err != nil {
		return err
	} else if ok {
		out := "oci:" + filepath.Join(work, "repacked") + ":after"
		if _, err := mc(ctx, c, append(append([]string{"pack", m.Dir}, flags...), "--output", out)...); err != nil {
			return err
		}
		if image, err = mc(ctx, c, "push", "--plain-http", out, reg+"/models/e2e:after"); err != nil {
			return err
		}
		applied = append(applied, "pack "+strings.Join(flags, " "))
		// The re-packed image alone, cold as the baseline: what the
		// format saves.
		if _, err := mc(ctx, c, append(deployArgs, "--image", image, "--apply")...); err != nil {
			return err
		}
		_, d, _ := strings.Cut(image, "@")
		repacked = filepath.Join(work, "repacked.json")
		logf("re-packed: %d cold starts of %s, the image removed and the page cache dropped before each", c.runs, image)
		if _, err := mc(ctx, c, "measure", "run", "--kubeconfig", kc, "-n", ns, "--deployment", "llm", "--times", strconv.Itoa(c.runs),
			"--timeout", "20m", "--before-each", node.RemoveImageScript(d)+"; "+drop, "-o", repacked, "--record", filepath.Join(work, "repacked-runs")); err != nil {
			return err
		}
	}
	if exists(filepath.Join(planDir, plan.PrepullFile)) {
		// The emitted pre-pull names the image the plan was made for; the
		// image served now is the re-packed one.
		if _, err := mc(ctx, c, "warm", "prepull", "--kubeconfig", kc, "-n", ns, "--image", image,
			"--node-selector", "modelcar.test/real-node=true", "--toleration", "nvidia.com/gpu:NoSchedule",
			"--pause-image", testcluster.PauseImage, "--allow-tag", "--apply", "--wait", "--timeout", "20m"); err != nil {
			return err
		}
		applied = append(applied, "warm prepull")
	}
	args := append([]string(nil), deployArgs...)
	if exists(filepath.Join(planDir, plan.ValuesFile)) {
		args = append(args, "-f", filepath.Join(planDir, plan.ValuesFile))
		applied = append(applied, "chart values")
	}
	if _, err := mc(ctx, c, append(args, "--image", image, "--apply")...); err != nil {
		return err
	}

	after := filepath.Join(work, "after.json")
	logf("after: %d cold starts of %s (applied: %s), the page cache dropped before each", c.runs, image, strings.Join(applied, ", "))
	if _, err := mc(ctx, c, "measure", "run", "--kubeconfig", kc, "-n", ns, "--deployment", "llm", "--times", strconv.Itoa(c.runs),
		"--timeout", "20m", "--before-each", drop, "-o", after, "--record", filepath.Join(work, "after-runs")); err != nil {
		return err
	}

	res, err := compare(before, repacked, after, &p, applied)
	if err != nil {
		return err
	}
	rate := bits / 8
	res.Pulls = containerdPulls(cl.LogPath(node.Name+"-containerd"), map[string]string{"baseline": baseline, "repacked": image}, rate)
	for i := range res.Pulls {
		link, unzip, err := pullLimits(ctx, node, res.Pulls[i].Image)
		if err != nil {
			return err
		}
		res.Pulls[i].LinkMeasuredSeconds, res.Pulls[i].DecompressSeconds = link, unzip
		switch {
		case res.Pulls[i].Stage == "baseline":
			res.Pulls[i].MeasuredPullSecondsP50 = res.Before.Pull
		case res.Repacked != nil:
			res.Pulls[i].MeasuredPullSecondsP50 = res.Repacked.Pull
		}
	}
	res.Date = time.Now().UTC().Format(time.RFC3339)
	res.Machine = fmt.Sprintf("%d CPUs, %s, %s", runtime.NumCPU(), runtime.GOOS, runtime.GOARCH)
	res.Size, res.Rate, res.Runs, res.Baseline, res.After = c.size, c.rate, c.runs, baseline, image
	res.Seconds = time.Since(begin).Seconds()
	md := res.markdown()
	fmt.Print(md)
	if c.mdOut != "" {
		if err := os.WriteFile(c.mdOut, []byte(md), 0o644); err != nil {
			return err
		}
	}
	if c.jsonOut != "" {
		b, _ := json.MarshalIndent(res, "", "  ")
		if err := os.WriteFile(c.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

// mc runs the modelcar binary; its stdout (trimmed) is returned, its stderr
// shown.
func mc(ctx context.Context, c config, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, c.modelcar, args...)
	var out bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = os.Stderr
	logf("modelcar %s", strings.Join(args, " "))
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("modelcar %s: %w", args[0], err)
	}
	return strings.TrimSpace(out.String()), nil
}

// naiveImage is the image a user starts from: the model directory under
// /models in one gzip layer, as a Dockerfile COPY makes it.
func naiveImage(ctx context.Context, c config, modelDir, dir, ref string) (string, error) {
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		pr, pw := io.Pipe()
		go func() {
			cmd := exec.Command("tar", "-C", filepath.Dir(modelDir), "--transform", "s,^"+filepath.Base(modelDir)+",models,",
				"--owner=0", "--group=0", "--numeric-owner", "--mtime=@0", "--sort=name", "-cf", "-", filepath.Base(modelDir))
			cmd.Stdout = pw
			pw.CloseWithError(cmd.Run())
		}()
		return pr, nil
	})
	if err != nil {
		return "", err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return "", err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return "", err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return "", err
	}
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		return "", err
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "naive"})); err != nil {
		return "", err
	}
	logf("naive image: one gzip layer in %s", dir)
	return mc(ctx, c, "push", "--plain-http", "oci:"+dir+":naive", ref)
}

// projectImage builds one of the project's images for this machine and
// pushes it.
func projectImage(ctx context.Context, c config, target, work, reg string) (string, error) {
	out := filepath.Join(work, target+"-image")
	cmd := exec.CommandContext(ctx, "go", "run", "./internal/cmd/image", "-target", target, "-platforms", "linux/"+runtime.GOARCH, "-version", "e2e", "-out", out)
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the %s image: %w", target, err)
	}
	return mc(ctx, c, "push", "--plain-http", "oci:"+out+":e2e", reg+"/"+target+":e2e")
}

// packFlags reads the first line of pack-flags.txt that is not a comment.
func packFlags(path string) ([]string, bool, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		if len(f) > 0 && f[0] == "modelcar" {
			f = f[1:]
		}
		if len(f) > 0 && f[0] == "pack" {
			f = f[1:]
		}
		var flags []string
		for _, a := range f {
			if a == "DIR" || a == "MODEL" || strings.HasPrefix(a, "./") {
				continue
			}
			flags = append(flags, a)
		}
		return flags, len(flags) > 0, nil
	}
	return nil, false, nil
}

// results is what the run found.
type results struct {
	Date, Machine, Size, Rate string
	Runs                      int
	Baseline, After           string
	Applied                   []string
	Before, Now               measure.Phases
	Repacked                  *measure.Phases `json:",omitempty"`
	BeforeTotal, AfterTotal   float64
	RepackedTotal             float64 `json:",omitempty"`
	Levers                    []leverResult
	Pulls                     []pullCheck
	Loads                     []loadCheck
	Seconds                   float64
}

// loadCheck sets measure's load phase beside the load the stand-in logged
// ("Model loading took ... S seconds"), per cold start of one stage.
type loadCheck struct {
	Stage            string
	Measured, Logged []float64
	// WorstRatio is the measured / logged ratio furthest from 1.
	WorstRatio float64
}

// loadChecks reads each cold start's load phase and its "model loading"
// step (the server's own number) from a report.
func loadChecks(stage string, r *measure.Report) loadCheck {
	lc := loadCheck{Stage: stage, WorstRatio: 1}
	for _, c := range r.ColdStarts {
		for _, st := range c.Details.Load.Steps {
			if st.Name != "model loading" || st.Seconds <= 0 {
				continue
			}
			lc.Measured = append(lc.Measured, c.Phases.Load)
			lc.Logged = append(lc.Logged, st.Seconds)
			if q := c.Phases.Load / st.Seconds; math.Abs(q-1) > math.Abs(lc.WorstRatio-1) {
				lc.WorstRatio = q
			}
		}
	}
	return lc
}

type leverResult struct {
	Name, Phase         string
	Predicted, Measured float64
	Ratio               float64 // measured / predicted
	Between             string  // the two measurements compared
}

// pullCheck sets measure's pull phase beside containerd's own record of the
// same pulls and the image's bytes over the link's rate.
type pullCheck struct {
	Stage             string
	Image             string
	Bytes             int64
	ContainerdSeconds []float64 // each cold pull, as containerd logged it
	LinkSeconds       float64   // bytes / rate
	// LinkMeasuredSeconds: the layers fetched over the node's link, nothing
	// unpacked (pullLimits); DecompressSeconds: its gzip layers
	// decompressed on this CPU (0: none).
	LinkMeasuredSeconds     float64
	DecompressSeconds       float64
	MeasuredPullSecondsP50  float64
	ContainerdSecondsMedian float64
}

// LimitSeconds is the fastest this pull could be on this node: the layers
// fetched over the link, then the gzip layers decompressed (containerd
// fetches a layer whole before it unpacks it).
func (p pullCheck) LimitSeconds() float64 { return p.LinkMeasuredSeconds + p.DecompressSeconds }

func compare(beforePath, repackedPath, afterPath string, p *plan.Plan, applied []string) (*results, error) {
	var b, a measure.Report
	if err := readJSON(beforePath, &b); err != nil {
		return nil, err
	}
	if err := readJSON(afterPath, &a); err != nil {
		return nil, err
	}
	r := &results{Applied: applied}
	r.Before, r.BeforeTotal = typical(&b)
	r.Now, r.AfterTotal = typical(&a)
	r.Loads = append(r.Loads, loadChecks("baseline", &b))
	if repackedPath != "" {
		var rp measure.Report
		if err := readJSON(repackedPath, &rp); err != nil {
			return nil, err
		}
		ph, total := typical(&rp)
		r.Repacked, r.RepackedTotal = &ph, total
		r.Loads = append(r.Loads, loadChecks("repacked", &rp))
	}
	r.Loads = append(r.Loads, loadChecks("after", &a))
	phase := func(ph measure.Phases, n string) float64 {
		switch n {
		case measure.Provision:
			return ph.Provision
		case measure.Pull:
			return ph.Pull
		case measure.Load:
			return ph.Load
		}
		return ph.Warmup
	}
	for _, l := range p.Levers {
		if l.Status != plan.Apply {
			continue
		}
		lr := leverResult{Name: l.Name, Phase: l.Phase, Predicted: l.SavingSeconds}
		switch {
		case strings.HasPrefix(l.Name, "repack") && r.Repacked != nil:
			// The re-packed image, as cold as the baseline.
			lr.Measured = r.Before.Pull - r.Repacked.Pull
			lr.Between = "baseline → re-packed, both cold"
		default:
			lr.Measured = phase(r.Before, l.Phase) - phase(r.Now, l.Phase)
			lr.Between = "baseline → everything applied"
		}
		if lr.Predicted > 0 {
			lr.Ratio = lr.Measured / lr.Predicted
		}
		r.Levers = append(r.Levers, lr)
	}
	return r, nil
}

// typical is the report's p50 per phase with several cold starts, else the
// one's.
func typical(r *measure.Report) (measure.Phases, float64) {
	if r.Summary != nil {
		ph := measure.Phases{}
		get := func(n string) float64 { return r.Summary.Phases[n].P50 }
		ph.Provision, ph.Pull, ph.Load, ph.Warmup = get(measure.Provision), get(measure.Pull), get(measure.Load), get(measure.Warmup)
		return ph, r.Summary.Total.P50
	}
	if len(r.ColdStarts) > 0 {
		return r.ColdStarts[0].Phases, r.ColdStarts[0].TotalSeconds
	}
	return measure.Phases{}, 0
}

func (r *results) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "`make e2e-coldstart` on %s (%s): a %s model, %d cold starts per measurement (p50), the node's link %s; %.0f s in all.\n\n",
		r.Date[:10], r.Machine, r.Size, r.Runs, r.Rate, r.Seconds)
	fmt.Fprintf(&b, "Applied, in order: %s.\n\n", strings.Join(r.Applied, "; "))
	fmt.Fprintf(&b, "| phase | baseline (s) |")
	if r.Repacked != nil {
		fmt.Fprintf(&b, " re-packed, cold (s) |")
	}
	fmt.Fprintf(&b, " everything applied (s) |\n|---|---:|")
	if r.Repacked != nil {
		fmt.Fprintf(&b, "---:|")
	}
	fmt.Fprintf(&b, "---:|\n")
	row := func(n string, x float64, rp func(*measure.Phases) float64, rt float64, y float64) {
		fmt.Fprintf(&b, "| %s | %.1f |", n, x)
		if r.Repacked != nil {
			v := rt
			if rp != nil {
				v = rp(r.Repacked)
			}
			fmt.Fprintf(&b, " %.1f |", v)
		}
		fmt.Fprintf(&b, " %.1f |\n", y)
	}
	row("pull", r.Before.Pull, func(p *measure.Phases) float64 { return p.Pull }, 0, r.Now.Pull)
	row("load", r.Before.Load, func(p *measure.Phases) float64 { return p.Load }, 0, r.Now.Load)
	row("warm-up", r.Before.Warmup, func(p *measure.Phases) float64 { return p.Warmup }, 0, r.Now.Warmup)
	row("**total to Ready**", r.BeforeTotal, nil, r.RepackedTotal, r.AfterTotal)
	if r.AfterTotal > 0 {
		fmt.Fprintf(&b, "\nTo Ready, everything applied on a node the pre-pull ran on: %.1fx shorter than the baseline.\n", r.BeforeTotal/r.AfterTotal)
	}
	fmt.Fprintf(&b, "\n| lever | phase | predicted saving (s) | measured saving (s) | measured / predicted | measured between |\n|---|---|---:|---:|---:|---|\n")
	for _, l := range r.Levers {
		fmt.Fprintf(&b, "| %s | %s | %.1f | %.1f | %.2f | %s |\n", l.Name, l.Phase, l.Predicted, l.Measured, l.Ratio, l.Between)
	}
	if len(r.Pulls) > 0 {
		fmt.Fprintf(&b, "\n| cold pull | image bytes | measure's pull p50 (s) | containerd's record, median (s) | bytes / link rate (s) | fetch over the link, measured (s) | gzip decompression on this CPU (s) | measure's pull / measured limit |\n|---|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, p := range r.Pulls {
			unzip := "none"
			if p.DecompressSeconds > 0 {
				unzip = fmt.Sprintf("%.2f", p.DecompressSeconds)
			}
			ratio := "n/a"
			if l := p.LimitSeconds(); l > 0 {
				ratio = fmt.Sprintf("%.2f", p.MeasuredPullSecondsP50/l)
			}
			fmt.Fprintf(&b, "| %s | %d | %.2f | %.2f | %.2f | %.2f | %s | %s |\n", p.Stage, p.Bytes, p.MeasuredPullSecondsP50, p.ContainerdSecondsMedian, p.LinkSeconds, p.LinkMeasuredSeconds, unzip, ratio)
		}
		fmt.Fprintf(&b, "\nThe measured limit is the fetch over the link plus the gzip decompression after it: containerd fetches a layer whole before it unpacks it, so for one gzip layer the two add up.\n")
	}
	if len(r.Loads) > 0 {
		fmt.Fprintf(&b, "\n| load | measure's load, each start (s) | the stand-in logged, each start (s) | measured / logged, furthest from 1 |\n|---|---|---|---:|\n")
		secs := func(v []float64) string {
			var out []string
			for _, x := range v {
				out = append(out, fmt.Sprintf("%.3f", x))
			}
			return strings.Join(out, ", ")
		}
		for _, l := range r.Loads {
			fmt.Fprintf(&b, "| %s | %s | %s | %.3f |\n", l.Stage, secs(l.Measured), secs(l.Logged), l.WorstRatio)
		}
	}
	return b.String()
}

// containerdPulls reads containerd's own record of each cold pull of the
// staged images ("Pulled image REF ... size N in D") from its log.
func containerdPulls(logPath string, stages map[string]string, rate float64) []pullCheck {
	data, err := os.ReadFile(logPath)
	if err != nil {
		return nil
	}
	re := regexp.MustCompile(`Pulled image \\"([^"\\]+)\\".* size \\"([0-9]+)\\" in ((?:[0-9.]+[a-zµ]+)+)`)
	var out []pullCheck
	for _, stage := range []string{"baseline", "repacked"} {
		ref, ok := stages[stage]
		if !ok {
			continue
		}
		pc := pullCheck{Stage: stage, Image: ref}
		for _, m := range re.FindAllStringSubmatch(string(data), -1) {
			if m[1] != ref {
				continue
			}
			d, err := time.ParseDuration(m[3])
			if err != nil {
				continue
			}
			pc.Bytes, _ = strconv.ParseInt(m[2], 10, 64)
			pc.ContainerdSeconds = append(pc.ContainerdSeconds, d.Seconds())
		}
		if len(pc.ContainerdSeconds) == 0 {
			continue
		}
		pc.ContainerdSecondsMedian = median(pc.ContainerdSeconds)
		pc.LinkSeconds = float64(pc.Bytes) / rate
		out = append(out, pc)
	}
	return out
}

func median(v []float64) float64 {
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
