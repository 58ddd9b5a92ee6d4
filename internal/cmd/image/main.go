// Command image builds modelcar's own container images reproducibly, the
// way ko does, with go-containerregistry and no container engine: modelcar's
// (`make image`) and the test-only vLLM stand-in's (`make standin-image`,
// -target vllm-standin, internal/cmd/vllm-standin):
//
//	go run ./internal/cmd/image -version v1.2.3 -out .work/image
//	go run ./internal/cmd/image -target vllm-standin -version v1.2.3 -out .work/standin-image
//
// It cross-compiles the target's static binary for each platform
// (CGO_ENABLED=0, -trimpath, -ldflags '-s -w -X main.version=VERSION', no
// VCS stamp) and puts it in a one-layer image: /usr/local/bin/TARGET (0755,
// root-owned), /etc/passwd and /etc/group with the non-root user nonroot
// (65532), /home/nonroot and /tmp; no shell. The image runs as 65532:65532
// with entrypoint /usr/local/bin/TARGET and works with a read-only root
// filesystem. Every timestamp is SOURCE_DATE_EPOCH (or 0), so the same
// source and toolchain give the same digest.
//
// The result is an OCI image index (one manifest per platform) in an OCI
// layout at -out, tagged VERSION: push it with
//
//	modelcar push oci:.work/image:VERSION registry.example.com/modelcar:VERSION
//	modelcar push oci:.work/standin-image:VERSION registry.example.com/vllm-standin:VERSION
//
// The index digest is printed on stdout; progress goes to stderr.
package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/modelcar/modelcar/internal/ref"
	"github.com/modelcar/modelcar/pack"
)

const (
	binDir    = "usr/local/bin/"
	nonroot   = 65532
	refName   = "org.opencontainers.image.ref.name"
	sourceURL = "https://github.com/modelcar/modelcar"
)

// A target is an image this command builds: one main package as
// /usr/local/bin/NAME, the entrypoint.
type target struct {
	Name    string // the binary's name and the image's title
	Pkg     string // its main package
	Comment string // the layer's history comment
}

var targets = []target{
	{Name: "modelcar", Pkg: "github.com/modelcar/modelcar/cmd/modelcar", Comment: "static modelcar binary, /etc/passwd, /etc/group"},
	{Name: "vllm-standin", Pkg: "github.com/modelcar/modelcar/internal/cmd/vllm-standin",
		Comment: "static vllm-standin binary (a test-only stand-in for vLLM), /etc/passwd, /etc/group"},
}

func findTarget(name string) (target, error) {
	var names []string
	for _, t := range targets {
		if t.Name == name {
			return t, nil
		}
		names = append(names, t.Name)
	}
	return target{}, fmt.Errorf("target %q: want one of %s", name, strings.Join(names, ", "))
}

// binPath is where the target's binary is in the image, without the
// leading slash.
func (t target) binPath() string { return binDir + t.Name }

type options struct {
	Out       string
	Version   string
	Target    target
	Go        string
	Platforms []v1.Platform
	Epoch     time.Time
	CACerts   string // optional CA bundle for /etc/ssl/certs/ca-certificates.crt
	Log       io.Writer
}

func main() {
	o := options{Log: os.Stderr}
	var platforms, targetName string
	var epoch int64 = -1
	flag.StringVar(&targetName, "target", "modelcar", "image to build: modelcar, or vllm-standin (the test-only vLLM stand-in)")
	flag.StringVar(&o.Out, "out", ".work/image", "OCI layout directory to write (replaced if it is one)")
	flag.StringVar(&o.Version, "version", "devel", "version stamped into the binary (-X main.version) and the layout tag")
	flag.StringVar(&platforms, "platforms", "linux/amd64,linux/arm64", "comma-separated platforms")
	flag.StringVar(&o.Go, "go", "go", "go command")
	flag.Int64Var(&epoch, "source-date-epoch", -1, "timestamp of every file and of the image, in Unix seconds (default: $SOURCE_DATE_EPOCH, else 0)")
	flag.StringVar(&o.CACerts, "ca-certs", "", "CA bundle to include as /etc/ssl/certs/ca-certificates.crt (pin it for reproducibility)")
	flag.Parse()
	if flag.NArg() != 0 {
		fail(fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	var err error
	if o.Target, err = findTarget(targetName); err != nil {
		fail(err)
	}
	if o.Platforms, err = parsePlatforms(platforms); err != nil {
		fail(err)
	}
	if epoch < 0 {
		epoch = 0
		if s := os.Getenv("SOURCE_DATE_EPOCH"); s != "" {
			if epoch, err = strconv.ParseInt(s, 10, 64); err != nil || epoch < 0 {
				fail(fmt.Errorf("SOURCE_DATE_EPOCH=%q: want Unix seconds", s))
			}
		}
	}
	o.Epoch = time.Unix(epoch, 0).UTC()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	d, err := build(ctx, o)
	if err != nil {
		fail(err)
	}
	fmt.Println(d)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "image:", err)
	os.Exit(1)
}

// parsePlatforms reads -platforms with pack's parser (the one modelcar's
// --platform uses: names normalized, each once, sorted), keeps to the two
// platforms modelcar is built for, and records arm64 as arm64/v8, as Go
// images commonly are (pack drops that default variant instead).
func parsePlatforms(s string) ([]v1.Platform, error) {
	ps, err := pack.ParsePlatforms(s)
	if err != nil {
		return nil, err
	}
	for i, p := range ps {
		if p.OS != "linux" || (p.Architecture != "amd64" && p.Architecture != "arm64") {
			return nil, fmt.Errorf("platform %q: want linux/amd64 or linux/arm64", p.String())
		}
		if p.Architecture == "arm64" && p.Variant == "" {
			ps[i].Variant = "v8"
		}
	}
	return ps, nil
}

// build compiles the target, writes the layout and returns the index digest.
func build(ctx context.Context, o options) (v1.Hash, error) {
	if err := check(o); err != nil {
		return v1.Hash{}, err
	}
	tmp, err := os.MkdirTemp("", o.Target.Name+"-image-")
	if err != nil {
		return v1.Hash{}, err
	}
	defer os.RemoveAll(tmp)
	bins, err := compileAll(ctx, o, tmp)
	if err != nil {
		return v1.Hash{}, err
	}
	return assemble(o, bins)
}

func check(o options) error {
	if o.Target.Name == "" || o.Target.Pkg == "" {
		return errors.New("no target")
	}
	if !ref.ValidTag(o.Version) {
		return fmt.Errorf("version %q is not a valid tag", o.Version)
	}
	if len(o.Platforms) == 0 {
		return errors.New("no platforms")
	}
	if ents, err := os.ReadDir(o.Out); err == nil && len(ents) > 0 {
		if _, err := os.Stat(filepath.Join(o.Out, "oci-layout")); err != nil {
			return fmt.Errorf("-out %s exists and is not an OCI layout: not replacing it", o.Out)
		}
	}
	return nil
}

// compileAll builds a binary per platform in dir; they are named by index.
func compileAll(ctx context.Context, o options, dir string) ([]string, error) {
	var bins []string
	for _, p := range o.Platforms {
		bin := filepath.Join(dir, o.Target.Name+"-"+p.Architecture)
		fmt.Fprintf(o.Log, "building %s %s for %s\n", o.Target.Name, o.Version, p.String())
		if err := compile(ctx, o, p, bin); err != nil {
			return nil, err
		}
		bins = append(bins, bin)
	}
	return bins, nil
}

// assemble makes the image index from the binaries (one per o.Platforms)
// and writes the layout.
func assemble(o options, bins []string) (v1.Hash, error) {
	if err := check(o); err != nil {
		return v1.Hash{}, err
	}
	var cas []byte
	if o.CACerts != "" {
		var err error
		if cas, err = os.ReadFile(o.CACerts); err != nil {
			return v1.Hash{}, err
		}
	}
	var adds []mutate.IndexAddendum
	for i, p := range o.Platforms {
		img, err := platformImage(o, p, bins[i], cas)
		if err != nil {
			return v1.Hash{}, fmt.Errorf("%s: %w", p.String(), err)
		}
		pl := p
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &pl}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), adds...)
	idx = mutate.Annotations(idx, map[string]string{
		"org.opencontainers.image.version": o.Version,
		"org.opencontainers.image.created": o.Epoch.Format(time.RFC3339),
		"org.opencontainers.image.source":  sourceURL,
		"org.opencontainers.image.title":   o.Target.Name,
	}).(v1.ImageIndex)
	d, err := idx.Digest()
	if err != nil {
		return v1.Hash{}, err
	}
	if err := writeLayout(o.Out, idx, o.Version); err != nil {
		return v1.Hash{}, err
	}
	fmt.Fprintf(o.Log, "wrote oci:%s:%s\n", o.Out, o.Version)
	return d, nil
}

func compile(ctx context.Context, o options, p v1.Platform, out string) error {
	cmd := exec.CommandContext(ctx, o.Go, "build", "-trimpath", "-buildvcs=false",
		"-ldflags", "-s -w -X main.version="+o.Version, "-o", out, o.Target.Pkg)
	// Pin what the environment could otherwise change in the output.
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+p.OS, "GOARCH="+p.Architecture, "GOAMD64=v1", "GOARM64=v8.0",
		"GOEXPERIMENT=", "GOFIPS140=off")
	cmd.Stdout, cmd.Stderr = o.Log, o.Log
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("go build for %s: %w", p.String(), err)
	}
	return nil
}

// file is one layer entry.
type file struct {
	name     string
	mode     int64 // permission bits plus tar's setuid/setgid/sticky
	dir      bool
	uid, gid int
	body     []byte
}

func files(t target, bin, cas []byte) []file {
	fs := []file{
		{name: "etc/", dir: true, mode: 0o755},
		{name: "etc/group", mode: 0o644, body: []byte("root:x:0:\nnonroot:x:65532:\n")},
		{name: "etc/passwd", mode: 0o644, body: []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n")},
		{name: "home/", dir: true, mode: 0o755},
		{name: "home/nonroot/", dir: true, mode: 0o700, uid: nonroot, gid: nonroot},
		{name: "tmp/", dir: true, mode: 0o1777},
		{name: "usr/", dir: true, mode: 0o755},
		{name: "usr/local/", dir: true, mode: 0o755},
		{name: "usr/local/bin/", dir: true, mode: 0o755},
		{name: t.binPath(), mode: 0o755, body: bin},
	}
	if cas != nil {
		fs = append(fs, file{name: "etc/ssl/", dir: true, mode: 0o755}, file{name: "etc/ssl/certs/", dir: true, mode: 0o755},
			file{name: "etc/ssl/certs/ca-certificates.crt", mode: 0o644, body: cas})
	}
	sort.Slice(fs, func(i, j int) bool { return fs[i].name < fs[j].name })
	return fs
}

// layerTar is the uncompressed layer: fixed order, owners and times.
func layerTar(fs []file, epoch time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range fs {
		h := &tar.Header{Name: f.name, Mode: f.mode, Uid: f.uid, Gid: f.gid, ModTime: epoch, Format: tar.FormatUSTAR}
		if f.dir {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(f.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

func platformImage(o options, p v1.Platform, binFile string, cas []byte) (v1.Image, error) {
	bin, err := os.ReadFile(binFile)
	if err != nil {
		return nil, err
	}
	tb, err := layerTar(files(o.Target, bin, cas), o.Epoch)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(tb)), nil },
		tarball.WithMediaType(types.OCILayer), tarball.WithCompressionLevel(gzip.BestCompression))
	if err != nil {
		return nil, err
	}
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{Layer: layer, MediaType: types.OCILayer, History: v1.History{
		Created: v1.Time{Time: o.Epoch}, CreatedBy: "internal/cmd/image: " + o.Target.Name + " " + o.Version, Comment: o.Target.Comment}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Architecture, cf.OS, cf.Variant = p.Architecture, p.OS, p.Variant
	cf.Created = v1.Time{Time: o.Epoch}
	cf.Config = v1.Config{
		User:       fmt.Sprintf("%d:%d", nonroot, nonroot),
		Entrypoint: []string{"/" + o.Target.binPath()},
		WorkingDir: "/",
		Env:        []string{"PATH=/usr/local/bin"},
		Labels: map[string]string{
			"org.opencontainers.image.version": o.Version,
			"org.opencontainers.image.source":  sourceURL,
			"org.opencontainers.image.title":   o.Target.Name,
		},
	}
	return mutate.ConfigFile(img, cf)
}

// writeLayout writes idx, tagged tag, as a fresh OCI layout replacing dir
// (which check allowed).
func writeLayout(dir string, idx v1.ImageIndex, tag string) error {
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		return err
	}
	staging, err := os.MkdirTemp(filepath.Dir(dir), "."+filepath.Base(dir)+".tmp-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(staging)
	p, err := layout.Write(staging, empty.Index)
	if err != nil {
		return err
	}
	if err := p.AppendIndex(idx, layout.WithAnnotations(map[string]string{refName: tag})); err != nil {
		return err
	}
	if err := os.Chmod(staging, 0o755); err != nil {
		return err
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	return os.Rename(staging, dir)
}
