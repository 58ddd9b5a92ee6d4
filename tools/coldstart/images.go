package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// format is one image layout under test.
type format struct {
	name  string // as reported
	pack  string // modelcar pack --format; "" for the naive image
	lazy  bool   // pulled through stargz-snapshotter
	label string
	// prefetchAll packs with --prefetch all and runs the snapshotter with
	// prefetch_async_size, so whole weight layers stream in at mount
	// without holding the container start.
	prefetchAll bool
}

func (f format) snapshotter() string {
	if f.lazy {
		return "stargz"
	}
	return "overlayfs"
}

func allFormatList() []format {
	return []format{
		{name: "gzip-single", label: "(a) naive: one gzip layer of all files (Dockerfile COPY)"},
		{name: "tar", pack: "tar", label: "(b) modelcar tar: uncompressed per-file layers"},
		{name: "zstd", pack: "zstd", label: "(c) modelcar zstd: per-file layers"},
		{name: "estargz", pack: "estargz", lazy: true, label: "(d) modelcar estargz, lazy (stargz-snapshotter)"},
		{name: "zstd-chunked", pack: "zstd-chunked", lazy: true, label: "(d) modelcar zstd:chunked, lazy (stargz-snapshotter)"},
		{name: "estargz-prefetch", pack: "estargz", lazy: true, prefetchAll: true, label: "(d) modelcar estargz --prefetch all, lazy, async prefetch"},
		{name: "zstd-chunked-prefetch", pack: "zstd-chunked", lazy: true, prefetchAll: true, label: "(d) modelcar zstd:chunked --prefetch all, lazy, async prefetch"},
	}
}

func allFormats() []string {
	var names []string
	for _, f := range allFormatList() {
		names = append(names, f.name)
	}
	return names
}

func parseFormats(s string) ([]format, error) {
	var out []format
	seen := map[string]bool{}
	for _, n := range strings.Split(s, ",") {
		n = strings.TrimSpace(n)
		if n == "" || seen[n] {
			continue
		}
		found := false
		for _, f := range allFormatList() {
			if f.name == n {
				out, found = append(out, f), true
			}
		}
		if !found {
			return nil, fmt.Errorf("-formats: unknown format %q (known: %s)", n, strings.Join(allFormats(), ", "))
		}
		seen[n] = true
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("-formats: none given")
	}
	return out, nil
}

// model is the generated Hugging Face directory the images carry.
type model struct {
	dir         string
	files       []string // relative paths, sorted
	shards      []string // weight files in the order a loader reads them
	weightBytes int64
	totalBytes  int64
}

// ensureModel generates the model once per size, shard count and seed and
// reuses it on later runs (the stamp is written last).
func ensureModel(ctx context.Context, c config, dir string) (*model, error) {
	stamp := fmt.Sprintf("size=%s shards=%d seed=1\n", c.size, c.shards)
	stampPath := filepath.Join(dir, ".coldstart-model")
	if b, err := os.ReadFile(stampPath); err != nil || string(b) != stamp {
		if err := os.RemoveAll(dir); err != nil {
			return nil, err
		}
		tmp := dir + ".tmp"
		if err := os.RemoveAll(tmp); err != nil {
			return nil, err
		}
		logf("generating a %s model with %d shards in %s", c.size, c.shards, dir)
		cmd := exec.CommandContext(ctx, c.genmodel, "-out", tmp, "-size", c.size, "-shards", fmt.Sprint(c.shards), "-seed", "1")
		if out, err := cmd.CombinedOutput(); err != nil {
			return nil, fmt.Errorf("genmodel: %v: %s", err, out)
		}
		if err := os.WriteFile(filepath.Join(tmp, ".coldstart-model"), []byte(stamp), 0o644); err != nil {
			return nil, err
		}
		if err := os.Rename(tmp, dir); err != nil {
			return nil, err
		}
	}
	return loadModel(dir)
}

func loadModel(dir string) (*model, error) {
	m := &model{dir: dir}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	sizes := map[string]int64{}
	for _, e := range entries {
		if !e.Type().IsRegular() || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		info, err := e.Info()
		if err != nil {
			return nil, err
		}
		m.files = append(m.files, e.Name())
		sizes[e.Name()] = info.Size()
		m.totalBytes += info.Size()
	}
	sort.Strings(m.files)

	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	b, err := os.ReadFile(filepath.Join(dir, "model.safetensors.index.json"))
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &index); err != nil {
			return nil, fmt.Errorf("model.safetensors.index.json: %w", err)
		}
		seen := map[string]bool{}
		for _, shard := range index.WeightMap {
			if !seen[shard] {
				seen[shard] = true
				m.shards = append(m.shards, shard)
			}
		}
		sort.Strings(m.shards) // loaders read the shard files in name order
	case os.IsNotExist(err):
		m.shards = []string{"model.safetensors"}
	default:
		return nil, err
	}
	for _, s := range m.shards {
		size, ok := sizes[s]
		if !ok {
			return nil, fmt.Errorf("%s: shard %s named by the index is missing", dir, s)
		}
		m.weightBytes += size
	}
	return m, nil
}

// image is one pushed format.
type image struct {
	ref    string
	digest string
	layers int
	bytes  int64 // manifest, config and layers: what a full pull transfers
	// largest is the biggest layer, which measureLink downloads.
	largest v1.Descriptor
}

func buildImage(ctx context.Context, c config, host string, m *model, f format) (*image, error) {
	ref := fmt.Sprintf("%s/coldstart:%s", host, f.name)
	if f.pack == "" {
		if err := pushNaive(ctx, c, ref, m); err != nil {
			return nil, err
		}
	} else {
		args := []string{"pack", m.dir, "--output", ref, "--format", f.pack, "--plain-http", "-q"}
		if f.prefetchAll {
			args = append(args, "--prefetch", "all")
		}
		cmd := exec.CommandContext(ctx, c.modelcar, args...)
		if _, err := cmd.Output(); err != nil {
			msg := ""
			if ee, ok := err.(*exec.ExitError); ok {
				msg = string(ee.Stderr)
			}
			return nil, fmt.Errorf("modelcar pack --format %s: %v: %s", f.pack, err, msg)
		}
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return nil, err
	}
	desc, err := remote.Get(r, remote.WithContext(ctx))
	if err != nil {
		return nil, err
	}
	mf, err := v1.ParseManifest(bytes.NewReader(desc.Manifest))
	if err != nil {
		return nil, err
	}
	img := &image{ref: fmt.Sprintf("%s@%s", ref[:strings.LastIndex(ref, ":")], desc.Digest), digest: desc.Digest.String(), layers: len(mf.Layers)}
	img.bytes = desc.Size + mf.Config.Size
	for _, l := range mf.Layers {
		img.bytes += l.Size
		if l.Size > img.largest.Size {
			img.largest = l
		}
	}
	return img, nil
}

// pushNaive builds the image a Dockerfile `COPY . /models` build makes: one
// layer with every file, gzip at the default level, compressed on one core.
// The compressed layer is kept in the model directory's sibling cache, so a
// rerun on the same model does not compress it again.
func pushNaive(ctx context.Context, c config, ref string, m *model) error {
	layerPath := m.dir + ".naive-layer.tar.gz"
	stamp, _ := os.ReadFile(filepath.Join(m.dir, ".coldstart-model"))
	if b, err := os.ReadFile(layerPath + ".stamp"); err != nil || string(b) != string(stamp) {
		start := time.Now()
		if err := writeNaiveLayer(layerPath, m); err != nil {
			return err
		}
		if err := os.WriteFile(layerPath+".stamp", stamp, 0o644); err != nil {
			return err
		}
		logf("gzip-single: compressed the single layer in %s", time.Since(start).Round(time.Millisecond))
	}
	layer, err := tarball.LayerFromFile(layerPath)
	if err != nil {
		return err
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		return err
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return err
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture = "linux", "amd64"
	img, err = mutate.ConfigFile(img, cfg)
	if err != nil {
		return err
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	return remote.Write(r, img, remote.WithContext(ctx))
}

// writeNaiveLayer streams the one-gzip-layer image's layer to a temporary
// file and renames it into place, without renameio: that would fsync the
// whole multi-GB layer, a benchmark's cache the page cache keeps anyway.
func writeNaiveLayer(path string, m *model) (err error) {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	bw := bufio.NewWriterSize(f, 1<<20)
	zw, err := gzip.NewWriterLevel(bw, gzip.DefaultCompression)
	if err != nil {
		return err
	}
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: "models/", Mode: 0o755}); err != nil {
		return err
	}
	for _, name := range m.files {
		p := filepath.Join(m.dir, name)
		info, err := os.Stat(p)
		if err != nil {
			return err
		}
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: "models/" + name, Mode: 0o644, Size: info.Size()}); err != nil {
			return err
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		_, err = io.Copy(tw, src)
		src.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", p, err)
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// measureLink downloads the largest blob of the images over the shaped link
// and returns the achieved bytes per second: the bandwidth limit every
// format is compared with.
func measureLink(ctx context.Context, host string, images map[string]*image) (float64, error) {
	var largest v1.Descriptor
	for _, img := range images {
		if img.largest.Size > largest.Size {
			largest = img.largest
		}
	}
	if largest.Size == 0 {
		return 0, fmt.Errorf("no layer to measure the link with")
	}
	repoDigest, size := largest.Digest.String(), largest.Size
	// Up to 512 MiB is enough for a stable figure.
	n := min(size, 512<<20)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://%s/v2/coldstart/blobs/%s", host, repoDigest), nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=0-%d", n-1))
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent && resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("measuring the link: GET blob: %s", resp.Status)
	}
	got, err := io.Copy(io.Discard, io.LimitReader(resp.Body, n))
	if err != nil {
		return 0, err
	}
	return float64(got) / time.Since(start).Seconds(), nil
}
