package pack_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/modelcar/modelcar/push"
)

// baseImage builds an OCI image for pl with n random layers and cmd.
func baseImage(t *testing.T, pl v1.Platform, n int, cmd ...string) v1.Image {
	t.Helper()
	img := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	for range n {
		l, err := random.Layer(4096, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, l); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cfg = cfg.DeepCopy()
	cfg.OS, cfg.Architecture, cfg.Variant = pl.OS, pl.Architecture, pl.Variant
	cfg.Config.Cmd = cmd
	if img, err = mutate.ConfigFile(img, cfg); err != nil {
		t.Fatal(err)
	}
	return img
}

// writeBase writes a two-layer linux/amd64 base image with a command into
// a layout, tagged busybox.
func writeBase(t *testing.T) (string, v1.Image) {
	t.Helper()
	img := baseImage(t, v1.Platform{OS: "linux", Architecture: "amd64"}, 2, "sh", "-c", "sleep infinity")
	return writeBaseLayout(t, func(p layout.Path, tag layout.Option) error { return p.AppendImage(img, tag) }), img
}

// writeBaseLayout creates a layout and lets add put the base in it with
// the tag option (busybox).
func writeBaseLayout(t *testing.T, add func(layout.Path, layout.Option) error) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "base")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := add(p, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "busybox"})); err != nil {
		t.Fatal(err)
	}
	return dir
}

func TestPackOnBaseKeepsModelLayerDigests(t *testing.T) {
	m := genModel(t, 13, 2<<20, 2)
	baseDir, baseImg := writeBase(t)
	plain := packT(t, m.Dir, "oci:"+filepath.Join(t.TempDir(), "plain"))
	out := filepath.Join(t.TempDir(), "onbase")
	onBase := packBaseT(t, m.Dir, "oci:"+out, "oci:"+baseDir+":busybox")
	if onBase.BaseLayers != 2 {
		t.Fatalf("BaseLayers = %d", onBase.BaseLayers)
	}
	for i := range plain.Layers {
		if plain.Layers[i].Digest != onBase.Layers[i].Digest {
			t.Errorf("model layer %d: %s without base, %s on base", i, plain.Layers[i].Digest, onBase.Layers[i].Digest)
		}
	}
	img, _, layers := layoutImage(t, out, onBase.Digest)
	if len(layers) != 2+len(plain.Layers) {
		t.Fatalf("%d layers", len(layers))
	}
	baseLayers, _ := baseImg.Layers()
	for i, bl := range baseLayers {
		want, _ := bl.Digest()
		got, _ := layers[i].Digest()
		if got != want {
			t.Errorf("base layer %d: %s, want %s", i, got, want)
		}
		// The blob is really in the output layout.
		rc, err := layers[i].Compressed()
		if err != nil {
			t.Fatalf("base layer %d not copied: %v", i, err)
		}
		rc.Close()
	}
	cfg, _ := img.ConfigFile()
	if strings.Join(cfg.Config.Cmd, " ") != "sh -c sleep infinity" || len(cfg.RootFS.DiffIDs) != len(layers) || len(cfg.History) != len(layers) {
		t.Errorf("config: cmd %v, %d diffIDs, %d history entries for %d layers", cfg.Config.Cmd, len(cfg.RootFS.DiffIDs), len(cfg.History), len(layers))
	}
	if _, err := push.Pack(context.Background(), m.Dir, "oci:"+filepath.Join(t.TempDir(), "x"), nil, push.WithBase("oci:"+baseDir+":nope")); err == nil || !strings.Contains(err.Error(), `no image tagged "nope"`) {
		t.Errorf("missing base tag: %v", err)
	}
}
