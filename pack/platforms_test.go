package pack_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

var (
	amd64 = v1.Platform{OS: "linux", Architecture: "amd64"}
	arm64 = v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}
)

// writeMultiBase writes a base index tagged "busybox" into a layout: an
// amd64 and an arm64/v8 image, each with its own random layer.
func writeMultiBase(t *testing.T) (string, map[string]v1.Image) {
	t.Helper()
	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	imgs := map[string]v1.Image{}
	for _, pl := range []v1.Platform{amd64, arm64} {
		img := baseImage(t, pl, 1, "sh")
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &pl}})
		imgs[pl.String()] = img
	}
	return writeBaseLayout(t, func(p layout.Path, tag layout.Option) error { return p.AppendIndex(idx, tag) }), imgs
}

// layoutIndex opens the image index h of the layout dir.
func layoutIndex(t *testing.T, dir string, h v1.Hash) v1.ImageIndex {
	t.Helper()
	root, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	idx, err := root.ImageIndex(h)
	if err != nil {
		t.Fatalf("index %s in %s: %v", h, dir, err)
	}
	return idx
}

func TestPackMultiPlatformIndexSharesModelLayers(t *testing.T) {
	m := genModel(t, 21, 2<<20, 2)
	baseDir, bases := writeMultiBase(t)
	base := "oci:" + baseDir + ":busybox"
	out := filepath.Join(t.TempDir(), "multi")
	res := packBaseT(t, m.Dir, "oci:"+out+":v1", base, pack.WithPlatform("linux/arm64/v8, linux/amd64"))

	if res.MediaType != types.OCIImageIndex || len(res.Platforms) != 2 ||
		res.Platforms[0].Platform != "linux/amd64" || res.Platforms[1].Platform != "linux/arm64/v8" {
		t.Fatalf("result: %s with platforms %+v", res.MediaType, res.Platforms)
	}
	idx := layoutIndex(t, out, res.Digest)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 2 {
		t.Fatalf("index lists %d manifests", len(im.Manifests))
	}
	for i, d := range im.Manifests {
		pl := res.Platforms[i]
		if d.Platform == nil || d.Platform.String() != pl.Platform || d.Digest != pl.Digest || d.MediaType != types.OCIManifestSchema1 {
			t.Fatalf("index entry %d: %+v, want %+v", i, d, pl)
		}
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		layers, err := img.Layers()
		if err != nil {
			t.Fatal(err)
		}
		baseLayers, _ := bases[pl.Platform].Layers()
		if len(layers) != len(baseLayers)+len(res.Layers) || pl.BaseLayers != len(baseLayers) {
			t.Fatalf("%s: %d layers, %d base layers reported", pl.Platform, len(layers), pl.BaseLayers)
		}
		want, _ := baseLayers[0].Digest()
		if got, _ := layers[0].Digest(); got != want {
			t.Errorf("%s: first layer %s, want its own base layer %s", pl.Platform, got, want)
		}
		for j, ml := range res.Layers {
			if got, _ := layers[len(baseLayers)+j].Digest(); got != ml.Digest {
				t.Errorf("%s: model layer %d is %s, want the shared %s", pl.Platform, j, got, ml.Digest)
			}
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Platform().String() != pl.Platform {
			t.Errorf("%s: config says %s", pl.Platform, cfg.Platform())
		}
	}

	// The amd64 image is the very image a single-platform pack makes, and
	// the index does not depend on the order platforms are named in.
	single := packBaseT(t, m.Dir, "oci:"+filepath.Join(t.TempDir(), "single"), base, pack.WithPlatform("linux/amd64"))
	if single.MediaType != types.OCIManifestSchema1 || single.Digest != res.Platforms[0].Digest {
		t.Errorf("single-platform pack: %s %s, index's amd64 image %s", single.MediaType, single.Digest, res.Platforms[0].Digest)
	}
	again := packBaseT(t, m.Dir, "oci:"+filepath.Join(t.TempDir(), "again"), base, pack.WithPlatform("linux/amd64,linux/arm64/v8"))
	if again.Digest != res.Digest {
		t.Errorf("platforms in another order: index %s, want %s", again.Digest, res.Digest)
	}

	// Inspect picks the image by platform and lists the index.
	info, err := push.Inspect(context.Background(), "oci:"+out+":v1", arm64)
	if err != nil {
		t.Fatal(err)
	}
	if info.Digest != res.Platforms[1].Digest || info.Platform != "linux/arm64/v8" || info.Index == nil ||
		info.Index.Digest != res.Digest || len(info.Index.Images) != 2 {
		t.Fatalf("inspect arm64: %s %s index %+v", info.Digest, info.Platform, info.Index)
	}
	if _, err := push.Inspect(context.Background(), "oci:"+out+":v1", v1.Platform{OS: "linux", Architecture: "s390x"}); err == nil ||
		!strings.Contains(err.Error(), "no image for platform linux/s390x (have linux/amd64, linux/arm64/v8)") {
		t.Errorf("inspect a platform the index lacks: %v", err)
	}
}

func TestPackMultiPlatformWithoutBase(t *testing.T) {
	m := genModel(t, 22, 1<<20, 1)
	out := filepath.Join(t.TempDir(), "multi")
	res := packT(t, m.Dir, "oci:"+out, pack.WithPlatform("linux/amd64,linux/arm64"))
	idx := layoutIndex(t, out, res.Digest)
	var configs []v1.ConfigFile
	for _, pl := range res.Platforms {
		img, err := idx.Image(pl.Digest)
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.ConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		if cfg.Platform().String() != pl.Platform || pl.BaseLayers != 0 {
			t.Errorf("%s: config platform %s, %d base layers", pl.Platform, cfg.Platform(), pl.BaseLayers)
		}
		configs = append(configs, *cfg)
	}
	// Apart from the architecture, the configs are the same.
	configs[1].Architecture = configs[0].Architecture
	a, _ := json.Marshal(configs[0])
	b, _ := json.Marshal(configs[1])
	if string(a) != string(b) {
		t.Errorf("configs differ beyond the architecture:\n%s\n%s", a, b)
	}
}

func TestPackMultiPlatformBadInput(t *testing.T) {
	m := genModel(t, 23, 1<<20, 1)
	baseDir, _ := writeMultiBase(t)
	singleBase, _ := writeBase(t)
	for _, tc := range []struct{ platforms, base, want string }{
		{"linux/amd64,linux/s390x", "oci:" + baseDir + ":busybox", "no image for platform linux/s390x (have linux/amd64, linux/arm64/v8)"},
		{"linux/amd64,linux/arm64", "oci:" + singleBase + ":busybox", "is an image for linux/amd64, not linux/arm64"},
		{"linux/arm64", "oci:" + singleBase + ":busybox", "is an image for linux/amd64, not linux/arm64"},
		{"linux/amd64,linux/amd64", "", "--platform linux/amd64: named twice"},
		{"linux/amd64,,linux/arm64", "", `--platform "": want OS/ARCH`},
	} {
		out := filepath.Join(t.TempDir(), "out")
		opts := []pack.Option{pack.WithCacheDir(""), pack.WithPlatform(tc.platforms)}
		var popts []push.Option
		if tc.base != "" {
			popts = append(popts, push.WithBase(tc.base))
		}
		_, err := push.Pack(context.Background(), m.Dir, "oci:"+out, opts, popts...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("--platform %s: %v, want an error with %q", tc.platforms, err, tc.want)
		}
		if _, serr := os.Stat(out); !os.IsNotExist(serr) {
			t.Errorf("--platform %s: output left behind (%v)", tc.platforms, serr)
		}
	}
}

// TestSkopeoReadsMultiPlatformLayout: skopeo picks each platform's image
// from the index and copies the whole index keeping its digest.
func TestSkopeoReadsMultiPlatformLayout(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with skopeo")
	}
	m := genModel(t, 24, 2<<20, 2)
	baseDir, _ := writeMultiBase(t)
	out := filepath.Join(t.TempDir(), "oci")
	res := packBaseT(t, m.Dir, "oci:"+out+":v1", "oci:"+baseDir+":busybox", pack.WithPlatform("linux/amd64,linux/arm64/v8"))
	baseLayer := map[string]string{}
	for _, arch := range []string{"amd64", "arm64"} {
		var got struct {
			Digest       string // the index's: skopeo reports the digest the reference names
			Architecture string
			Layers       []string
		}
		raw := testenv.Skopeo(t, "inspect", "--override-os", "linux", "--override-arch", arch, "--override-variant", "v8", "oci:"+out+":v1")
		if err := json.Unmarshal([]byte(raw), &got); err != nil {
			t.Fatal(err)
		}
		if got.Architecture != arch || got.Digest != res.Digest.String() || len(got.Layers) != 1+len(res.Layers) {
			t.Fatalf("skopeo inspect %s: %+v, want index %s with 1+%d layers", arch, got, res.Digest, len(res.Layers))
		}
		for j, l := range res.Layers {
			if got.Layers[1+j] != l.Digest.String() {
				t.Errorf("skopeo inspect %s: layer %d is %s, want the shared model layer %s", arch, 1+j, got.Layers[1+j], l.Digest)
			}
		}
		baseLayer[arch] = got.Layers[0]
	}
	if baseLayer["amd64"] == baseLayer["arm64"] {
		t.Errorf("skopeo picked the same base layer for both platforms")
	}
	cp := filepath.Join(t.TempDir(), "copy")
	testenv.Skopeo(t, "copy", "--all", "--preserve-digests", "oci:"+out+":v1", "oci:"+cp+":v1")
	info, err := push.Inspect(context.Background(), "oci:"+cp+":v1", amd64)
	if err != nil {
		t.Fatal(err)
	}
	if info.Index == nil || info.Index.Digest != res.Digest {
		t.Errorf("skopeo copy --all: index %+v, want %s", info.Index, res.Digest)
	}
}

// TestPackArm64V8IsArm64: linux/arm64/v8 and linux/arm64 name one platform,
// in what pack writes and in what inspect picks.
func TestPackArm64V8IsArm64(t *testing.T) {
	m := genModel(t, 26, 1<<20, 1)
	out := filepath.Join(t.TempDir(), "a")
	a := packT(t, m.Dir, "oci:"+out+":v1", pack.WithPlatform("linux/amd64,linux/arm64"))
	b := packT(t, m.Dir, "oci:"+filepath.Join(t.TempDir(), "b"), pack.WithPlatform("linux/arm64/v8,linux/amd64"))
	if a.Digest != b.Digest {
		t.Errorf("linux/arm64 gives %s, linux/arm64/v8 gives %s", a.Digest, b.Digest)
	}
	info, err := push.Inspect(context.Background(), "oci:"+out+":v1", arm64)
	if err != nil || info.Platform != "linux/arm64" {
		t.Errorf("inspect --platform linux/arm64/v8 of an index listing linux/arm64: %v, %v", info, err)
	}
	if _, err := push.Pack(context.Background(), m.Dir, "oci:"+filepath.Join(t.TempDir(), "c"), []pack.Option{pack.WithPlatform("linux/arm64,linux/arm64/v8")}); err == nil ||
		!strings.Contains(err.Error(), "named twice") {
		t.Errorf("linux/arm64 and linux/arm64/v8 together: %v", err)
	}
}

// TestPackBaseByDigestInsideIndex: --base oci:LAYOUT@sha256:... may name a
// platform's image inside the layout's index.
func TestPackBaseByDigestInsideIndex(t *testing.T) {
	m := genModel(t, 27, 1<<20, 1)
	baseDir, bases := writeMultiBase(t)
	dg, err := bases[arm64.String()].Digest()
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	res := packBaseT(t, m.Dir, "oci:"+out, "oci:"+baseDir+"@"+dg.String(), pack.WithPlatform("linux/arm64"))
	_, _, layers := layoutImage(t, out, res.Digest)
	baseLayers, _ := bases[arm64.String()].Layers()
	want, _ := baseLayers[0].Digest()
	if got, _ := layers[0].Digest(); got != want || res.BaseLayers != 1 {
		t.Errorf("first layer %s (%d base layers), want the arm64 base's %s", got, res.BaseLayers, want)
	}
}
