package main

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
)

// TestImageReproducible builds each target's image twice into different
// directories and gets the same digest, then checks what is in it. Only
// linux/amd64 unless MODELCAR_IMAGE_ALL_PLATFORMS is set (cross-compiling
// arm64 from a cold cache takes over a minute).
func TestImageReproducible(t *testing.T) {
	if testing.Short() {
		t.Skip("builds each image twice")
	}
	for _, tg := range targets {
		t.Run(tg.Name, func(t *testing.T) { testReproducible(t, tg) })
	}
}

func testReproducible(t *testing.T, tg target) {
	platforms := "linux/amd64"
	if os.Getenv("MODELCAR_IMAGE_ALL_PLATFORMS") != "" {
		platforms += ",linux/arm64"
	}
	ps, err := parsePlatforms(platforms)
	if err != nil {
		t.Fatal(err)
	}
	var log bytes.Buffer
	epoch := time.Unix(1700000000, 0).UTC()
	o := options{Version: "v0.0.0-imagetest", Target: tg, Go: "go", Platforms: ps, Epoch: epoch, Log: &log}
	ctx := context.Background()
	mk := func(out string, o options) v1.Hash {
		t.Helper()
		o.Out = out
		d, err := build(ctx, o)
		if err != nil {
			t.Fatalf("build: %v\n%s", err, log.String())
		}
		return d
	}
	// Two independent builds: build, and compileAll then assemble (whose
	// binaries are reused below).
	dirA, dirB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "nested", "b")
	da := mk(dirA, o)
	bins, err := compileAll(ctx, o, t.TempDir())
	if err != nil {
		t.Fatalf("%v\n%s", err, log.String())
	}
	o.Out = dirB
	db, err := assemble(o, bins)
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Fatalf("two builds of the same source: %s and %s", da, db)
	}

	p, err := layout.FromPath(dirA)
	if err != nil {
		t.Fatal(err)
	}
	top, err := p.ImageIndex()
	if err != nil {
		t.Fatal(err)
	}
	tm, _ := top.IndexManifest()
	if len(tm.Manifests) != 1 || tm.Manifests[0].Digest != da || tm.Manifests[0].Annotations[refName] != o.Version {
		t.Fatalf("index.json %+v", tm)
	}
	idx, err := top.ImageIndex(da)
	if err != nil {
		t.Fatal(err)
	}
	im, _ := idx.IndexManifest()
	if len(im.Manifests) != len(ps) || im.Annotations["org.opencontainers.image.version"] != o.Version ||
		im.Annotations["org.opencontainers.image.title"] != tg.Name {
		t.Fatalf("image index %+v", im)
	}
	for i, desc := range im.Manifests {
		if !reflect.DeepEqual(*desc.Platform, ps[i]) {
			t.Errorf("manifest %d platform %+v, want %+v", i, desc.Platform, ps[i])
		}
		img, err := idx.Image(desc.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		c := cf.Config
		if c.User != "65532:65532" || !reflect.DeepEqual(c.Entrypoint, []string{"/usr/local/bin/" + tg.Name}) || c.WorkingDir != "/" ||
			len(c.Cmd) != 0 || cf.Architecture != ps[i].Architecture || cf.OS != "linux" || !cf.Created.Time.Equal(epoch) {
			t.Errorf("%s config %+v", ps[i].Architecture, cf)
		}
		layers, _ := img.Layers()
		if len(layers) != 1 {
			t.Fatalf("%d layers", len(layers))
		}
		entries, bin := readLayer(t, layers[0], tg.binPath())
		want := map[string]string{
			"etc/": "dir 755 0:0", "etc/group": "file 644 0:0", "etc/passwd": "file 644 0:0",
			"home/": "dir 755 0:0", "home/nonroot/": "dir 700 65532:65532", "tmp/": "dir 1777 0:0",
			"usr/": "dir 755 0:0", "usr/local/": "dir 755 0:0", "usr/local/bin/": "dir 755 0:0",
			tg.binPath(): "file 755 0:0",
		}
		if !reflect.DeepEqual(entries, want) {
			t.Errorf("layer entries %v\nwant %v", entries, want)
		}
		if ps[i].Architecture == runtime.GOARCH && runtime.GOOS == "linux" {
			f := filepath.Join(t.TempDir(), tg.Name)
			os.WriteFile(f, bin, 0o755)
			out, err := exec.Command(f, "--version").CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), tg.Name+" v0.0.0-imagetest") {
				t.Errorf("the image's binary: %q, %v", out, err)
			}
		}
	}

	// Another timestamp is another digest; -out is replaced, not appended to.
	o.Out = dirA
	if d, err := assemble(o, bins); err != nil || d != da {
		t.Errorf("assembled again: %s, %v; want %s", d, err, da)
	}
	o.Epoch = epoch.Add(time.Second)
	if d, err := assemble(o, bins); err != nil || d == da {
		t.Errorf("a different SOURCE_DATE_EPOCH gave %s, %v", d, err)
	}
	if b, _ := os.ReadFile(filepath.Join(dirA, "index.json")); strings.Count(string(b), refName) != 1 {
		t.Errorf("index.json after a rebuild: %s", b)
	}
	// A directory that is not a layout is not replaced.
	notLayout := t.TempDir()
	os.WriteFile(filepath.Join(notLayout, "precious"), []byte("x"), 0o644)
	o.Out = notLayout
	if _, err := build(ctx, o); err == nil || !strings.Contains(err.Error(), "not an OCI layout") {
		t.Errorf("non-layout -out: %v", err)
	}
}

// readLayer returns "type mode uid:gid" by name, checks every time is the
// epoch, and returns the binary at binPath.
func readLayer(t *testing.T, l v1.Layer, binPath string) (map[string]string, []byte) {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	got := map[string]string{}
	var bin []byte
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		kind := "file"
		if h.Typeflag == tar.TypeDir {
			kind = "dir"
		}
		mode := h.FileInfo().Mode()
		perm := int64(mode.Perm())
		if mode&os.ModeSticky != 0 {
			perm |= 0o1000
		}
		got[h.Name] = fmt.Sprintf("%s %o %d:%d", kind, perm, h.Uid, h.Gid)
		if h.ModTime.Unix() != 1700000000 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: mtime %v, owner names %q %q", h.Name, h.ModTime, h.Uname, h.Gname)
		}
		if h.Name == binPath {
			bin, _ = io.ReadAll(tr)
		}
		if h.Name == "etc/passwd" {
			b, _ := io.ReadAll(tr)
			if !strings.Contains(string(b), "nonroot:x:65532:65532:") {
				t.Errorf("/etc/passwd: %s", b)
			}
		}
	}
	for i := 1; i < len(names); i++ {
		if names[i-1] >= names[i] {
			t.Errorf("layer entries not sorted: %v", names)
		}
	}
	return got, bin
}

func TestImagePlatforms(t *testing.T) {
	ps, err := parsePlatforms("linux/amd64, linux/arm64")
	if err != nil || len(ps) != 2 || ps[1].Variant != "v8" {
		t.Errorf("%+v, %v", ps, err)
	}
	for _, bad := range []string{"windows/amd64", "linux/s390x", "linux/amd64,"} {
		if _, err := parsePlatforms(bad); err == nil {
			t.Errorf("parsePlatforms(%q) accepted", bad)
		}
	}
	if _, err := build(context.Background(), options{Version: "bad tag!", Target: targets[0], Platforms: []v1.Platform{{OS: "linux", Architecture: "amd64"}}}); err == nil {
		t.Error("an invalid version tag was accepted")
	}
	if _, err := findTarget("vllm"); err == nil || !strings.Contains(err.Error(), "modelcar, vllm-standin") {
		t.Errorf("an unknown target: %v", err)
	}
	if tg, err := findTarget("vllm-standin"); err != nil || tg.binPath() != "usr/local/bin/vllm-standin" {
		t.Errorf("vllm-standin: %+v %v", tg, err)
	}
}
