package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"time"

	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/leases"
	"github.com/containerd/containerd/v2/core/mount"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/stargz-snapshotter/fs/source"
	"github.com/opencontainers/image-spec/identity"
	"golang.org/x/sync/semaphore"
)

// measurement is one cold start of one format; times are seconds after the
// pull started.
type measurement struct {
	PullS       float64 `json:"pull_s"`             // the pull (and unpack) returned
	ConfigS     float64 `json:"config_readable_s"`  // config.json read through the mounted root
	FirstShardS float64 `json:"first_shard_read_s"` // first weight file read to its end
	AllWeightsS float64 `json:"all_weights_read_s"` // every weight file read
	LinkBytes   int64   `json:"link_bytes"`         // bytes the shaped link carried
	CPUUtil     float64 `json:"cpu_utilization"`    // CPU time of containerd, snapshotter and reader / (wall × CPUs)
	// CPU seconds per component: containerd (content store, decompression,
	// apply), the snapshotter (lazy fetch, decompression, cache), and this
	// process (the puller's HTTP fetches, which kubelet's CRI does inside
	// containerd, and the reader).
	CPUSeconds map[string]float64 `json:"cpu_seconds"`
}

// coldStart starts a fresh node, pulls the image as a kubelet would (through
// containerd, up to -max-concurrent-downloads layers at once, unpacked into
// the format's snapshotter), mounts the image's root filesystem and reads the
// model like a loader, then tears the node down.
func coldStart(ctx context.Context, c config, ps *processes, work string, m *model, img *image, f format) (_ measurement, err error) {
	var res measurement
	dir := filepath.Join(work, "node-"+f.name)
	if err := unmountUnder(dir); err != nil {
		return res, err
	}
	if err := os.RemoveAll(dir); err != nil {
		return res, err
	}
	n, err := startNode(ctx, ps, c, f, dir)
	if err != nil {
		return res, err
	}
	defer func() {
		if serr := n.stop(c.keep); serr != nil && err == nil {
			err = serr
		}
	}()

	client, err := containerd.New(n.socket, containerd.WithDefaultNamespace("coldstart"))
	if err != nil {
		return res, err
	}
	defer client.Close()
	ctx, done, err := client.WithLease(ctx, leases.WithExpiration(time.Hour))
	if err != nil {
		return res, err
	}
	defer done(context.WithoutCancel(ctx))

	if err := dropCaches(); err != nil {
		return res, fmt.Errorf("dropping the page cache: %w", err)
	}
	pids := map[string]int{"containerd": n.containerd.pid, "snapshotter": n.stargz.pid, "puller+reader": os.Getpid()}
	cpu0 := map[string]float64{}
	for name, pid := range pids {
		cpu0[name] = cpuSeconds(pid)
	}
	link0 := loBytes()
	start := time.Now()
	since := func() float64 { return time.Since(start).Seconds() }

	resolver := docker.NewResolver(docker.ResolverOptions{
		Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchLocalhost)),
	})
	opts := []containerd.RemoteOpt{
		containerd.WithResolver(resolver),
		containerd.WithPullUnpack,
		containerd.WithPullSnapshotter(f.snapshotter()),
		containerd.WithMaxConcurrentDownloads(c.downloads),
	}
	if c.unpacks > 1 {
		opts = append(opts, containerd.WithUnpackOpts([]containerd.UnpackOpt{
			containerd.WithUnpackLimiter(semaphore.NewWeighted(int64(c.unpacks)))}))
	}
	if f.lazy {
		opts = append(opts, containerd.WithImageHandlerWrapper(source.AppendDefaultLabelsHandlerWrapper(img.ref, c.prefetch)))
	}
	pulled, err := client.Pull(ctx, img.ref, opts...)
	if err != nil {
		return res, fmt.Errorf("pull %s: %w", img.ref, err)
	}
	res.PullS = since()

	diffIDs, err := pulled.RootFS(ctx)
	if err != nil {
		return res, err
	}
	chain := identity.ChainID(diffIDs).String()
	mounts, err := client.SnapshotService(f.snapshotter()).View(ctx, "coldstart-view", chain)
	if err != nil {
		return res, fmt.Errorf("view of %s in %s: %w", chain, f.snapshotter(), err)
	}
	root := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(root, 0o755); err != nil {
		return res, err
	}
	if err := mount.All(mounts, root); err != nil {
		return res, fmt.Errorf("mounting the image's root filesystem: %w", err)
	}
	defer mount.UnmountAll(root, 0)

	if _, err := os.ReadFile(filepath.Join(root, "models", "config.json")); err != nil {
		return res, err
	}
	res.ConfigS = since()
	buf := make([]byte, 4<<20)
	for i, shard := range m.shards {
		if err := readAll(filepath.Join(root, "models", shard), buf); err != nil {
			return res, err
		}
		if i == 0 {
			res.FirstShardS = since()
		}
	}
	res.AllWeightsS = since()
	res.LinkBytes = loBytes() - link0
	res.CPUSeconds = map[string]float64{}
	total := 0.0
	for name, pid := range pids {
		d := cpuSeconds(pid) - cpu0[name]
		res.CPUSeconds[name] = round3(d)
		total += d
	}
	res.CPUUtil = total / (res.AllWeightsS * float64(runtime.NumCPU()))
	return res, nil
}

// readAll reads a file to its end, sequentially, like a safetensors loader
// that copies every tensor to the GPU.
func readAll(path string, buf []byte) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf); err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	return nil
}
