// Command coldstart is modelcar's node-side cold-start benchmark (make
// bench-coldstart). It proves or disproves the layouts `modelcar pack`
// chooses by timing what a GPU node does between "pull the image" and "the
// model server has read its weights", with the real components a node runs:
//
//   - a real registry (Debian's docker-registry) behind a link shaped to a
//     realistic bandwidth: everything runs inside a private network namespace
//     whose loopback carries a tc token-bucket filter (-rate, 1 Gbit/s by
//     default), so the host's own network is never touched;
//   - a real containerd (Debian's package) pulling and unpacking with its
//     overlayfs snapshotter, and with stargz-snapshotter (built from its Go
//     module, tools/coldstart/cmd/stargz-grpc) as a proxy snapshotter for lazy
//     pulls, the small files prefetched;
//   - a reader that, once the image's root filesystem is mounted, reads
//     config.json and then every weight file in the index's order, as a
//     loader does.
//
// For each image format it reports the time from pull start to config.json
// readable, first shard fully read and all weights read, with ratios against
// the naive image (one gzip layer of everything, as a Dockerfile build makes
// it) and against the link's limit (image bytes / measured bandwidth).
//
// The command runs as root (network namespaces, tc, mounts). It creates one
// network namespace and removes it, and stops every process it started, by
// PID, whatever happens.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

type config struct {
	modelcar   string
	genmodel   string
	stargz     string
	registry   string
	containerd string
	work       string
	size       string
	shards     int
	rate       string
	formats    string
	runs       int
	jsonOut    string
	mdOut      string
	inner      bool
	keep       bool
	prefetch   int64
	downloads  int
	sgConfig   string
	unpacks    int
}

func main() {
	var c config
	flag.StringVar(&c.modelcar, "modelcar", "bin/modelcar", "modelcar binary (packs formats b-d)")
	flag.StringVar(&c.genmodel, "genmodel", "bin/genmodel", "test model generator binary")
	flag.StringVar(&c.stargz, "stargz", "bin/stargz-grpc", "stargz snapshotter daemon (tools/coldstart/cmd/stargz-grpc)")
	flag.StringVar(&c.registry, "registry", "docker-registry", "registry binary (Debian's docker-registry)")
	flag.StringVar(&c.containerd, "containerd", "containerd", "containerd binary (Debian's containerd)")
	flag.StringVar(&c.work, "work", ".work/coldstart", "work directory (model, registry storage, containerd roots)")
	flag.StringVar(&c.size, "size", "2GiB", "approximate weight bytes of the generated model")
	flag.IntVar(&c.shards, "shards", 4, "weight shards of the generated model")
	flag.StringVar(&c.rate, "rate", "1gbit", "link bandwidth between node and registry (tc rate)")
	flag.StringVar(&c.formats, "formats", strings.Join(allFormats(), ","), "formats to measure, comma-separated")
	flag.IntVar(&c.runs, "runs", 1, "cold starts measured per format (the median is reported)")
	flag.StringVar(&c.jsonOut, "json", "", "also write the results as JSON to this file")
	flag.StringVar(&c.mdOut, "md", "", "also write the results as a Markdown table to this file")
	flag.BoolVar(&c.keep, "keep", false, "keep the work directory's registry and containerd state")
	flag.Int64Var(&c.prefetch, "prefetch-size", 10<<20, "bytes the lazy pull prefetches per layer beyond the prioritized files' landmark")
	flag.IntVar(&c.downloads, "max-concurrent-downloads", 3, "layers fetched at once (kubelet/CRI default: 3)")
	flag.IntVar(&c.unpacks, "max-concurrent-unpacks", 1, "layers unpacked at once (containerd 2.x transfer service's max_concurrent_unpacks; default 1; more needs a snapshotter with rebase, such as containerd 2.x overlayfs)")
	flag.StringVar(&c.sgConfig, "stargz-config", "", "stargz snapshotter config.toml to measure instead of the built-in one")
	flag.BoolVar(&c.inner, "inner", false, "internal: run inside the benchmark's network namespace")
	flag.Parse()

	var err error
	if c.inner {
		err = runInner(c)
	} else {
		err = runOuter(c)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "coldstart:", err)
		os.Exit(1)
	}
}

// runOuter checks the machine, creates the network namespace, re-runs this
// program inside it (network namespace only: mounts stay shared, so the
// snapshotter's FUSE mounts are visible to the reader), and removes the
// namespace afterwards.
func runOuter(c config) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root: it creates a network namespace, shapes its link with tc and mounts snapshots")
	}
	for _, tool := range []string{"ip", "tc", "nsenter", c.registry, c.containerd} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found (make bench-coldstart installs it: .ci/install-deps.sh): %w", tool, err)
		}
	}
	for _, bin := range []string{c.modelcar, c.genmodel, c.stargz} {
		if _, err := os.Stat(bin); err != nil {
			return fmt.Errorf("%w (make bench-coldstart builds it)", err)
		}
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ns := fmt.Sprintf("modelcar-coldstart-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", ns, err, out)
	}
	defer func() {
		if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
			fmt.Fprintf(os.Stderr, "coldstart: ip netns del %s: %v: %s\n", ns, err, out)
		}
	}()

	args := append([]string{"--net=/run/netns/" + ns, "--", self, "-inner"}, os.Args[1:]...)
	cmd := exec.Command("nsenter", args...)
	cmd.Stdout, cmd.Stderr, cmd.Stdin = os.Stdout, os.Stderr, nil
	if err := cmd.Start(); err != nil {
		return err
	}
	// Forward interrupts to the inner run, which stops what it started.
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	for {
		select {
		case s := <-sig:
			_ = cmd.Process.Signal(s)
		case err := <-done:
			if err != nil {
				return fmt.Errorf("benchmark inside namespace %s: %w", ns, err)
			}
			return nil
		}
	}
}

// runInner runs inside the namespace: model, registry, images, link shaping,
// then one measured cold start per format and run.
func runInner(c config) error {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()

	formats, err := parseFormats(c.formats)
	if err != nil {
		return err
	}
	work, err := filepath.Abs(c.work)
	if err != nil {
		return err
	}
	if err := run(ctx, "ip", "link", "set", "lo", "up"); err != nil {
		return err
	}
	procs := &processes{}
	defer procs.stopAll()

	start := time.Now()
	model, err := ensureModel(ctx, c, filepath.Join(work, "model"))
	if err != nil {
		return err
	}
	regDir := filepath.Join(work, "registry")
	if err := os.RemoveAll(regDir); err != nil {
		return err
	}
	if !c.keep {
		defer os.RemoveAll(regDir)
	}
	reg, err := startRegistry(ctx, procs, c.registry, regDir)
	if err != nil {
		return err
	}
	logf("registry %s (pid %d); building images of %s (%s)", reg.host, reg.proc.pid, model.dir, humanBytes(model.weightBytes))

	images := map[string]*image{}
	for _, f := range formats {
		img, err := buildImage(ctx, c, reg.host, model, f)
		if err != nil {
			return fmt.Errorf("building the %s image: %w", f.name, err)
		}
		images[f.name] = img
		logf("%-13s %s: %d layers, %s", f.name, img.ref, img.layers, humanBytes(img.bytes))
	}

	link, err := shapeLink(ctx, c.rate)
	if err != nil {
		return err
	}
	defer link.remove()
	bw, err := measureLink(ctx, reg.host, images)
	if err != nil {
		return err
	}
	logf("link: tc tbf rate %s on lo; measured %s/s over HTTP", c.rate, humanBytes(int64(bw)))

	res := results{
		Version:     1,
		Date:        time.Now().UTC().Format(time.RFC3339),
		Machine:     machineDescription(),
		LinkRate:    c.rate,
		LinkMbit:    link.mbit,
		MeasuredBps: bw,
		ModelBytes:  model.totalBytes,
		WeightBytes: model.weightBytes,
		Shards:      len(model.shards),
		Runs:        c.runs,
		Downloads:   c.downloads,
		Unpacks:     c.unpacks,
		Containerd:  containerdVersion(c.containerd),
	}
	for _, f := range formats {
		img := images[f.name]
		var runs []measurement
		for i := 0; i < c.runs; i++ {
			m, err := coldStart(ctx, c, procs, work, model, img, f)
			if err != nil {
				return fmt.Errorf("%s cold start %d: %w", f.name, i+1, err)
			}
			logf("%-13s run %d: pulled %.2fs, config.json %.2fs, first shard %.2fs, all weights %.2fs (cpu %.0f%%: %s)",
				f.name, i+1, m.PullS, m.ConfigS, m.FirstShardS, m.AllWeightsS, 100*m.CPUUtil, cpuBreakdown(m.CPUSeconds))
			runs = append(runs, m)
		}
		res.Results = append(res.Results, summarize(f, img, runs, bw))
	}
	res.finish()
	res.Elapsed = time.Since(start).Round(time.Second).String()

	fmt.Print(res.table())
	if c.jsonOut != "" {
		if err := writeFileAtomic(c.jsonOut, res.json()); err != nil {
			return err
		}
	}
	if c.mdOut != "" {
		if err := writeFileAtomic(c.mdOut, []byte(res.markdown())); err != nil {
			return err
		}
	}
	return nil
}

func cpuBreakdown(cpu map[string]float64) string {
	var parts []string
	for _, name := range []string{"containerd", "snapshotter", "puller+reader"} {
		parts = append(parts, fmt.Sprintf("%s %.1fs", name, cpu[name]))
	}
	return strings.Join(parts, ", ")
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "coldstart: "+format+"\n", args...)
}
