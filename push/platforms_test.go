package push_test

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/internal/testmodel"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// TestMultiPlatformThroughRegistry: a two-platform modelcar packed straight
// to a registry has the digest a layout pack gives; crane resolves each
// platform to its image; a push of the layout and a mirror through an
// archive keep the index digest; pull picks the platform and extracts the
// model byte-identical.
func TestMultiPlatformThroughRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registry, crane")
	}
	reg := testenv.StartRegistry(t)
	m, err := testmodel.Generate(filepath.Join(t.TempDir(), "model"), testmodel.Options{Seed: 31, TotalSize: 3 << 20, Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	popts := []pack.Option{pack.WithCacheDir(""), pack.WithPlatform("linux/amd64,linux/arm64")}
	local, err := push.Pack(context.Background(), m.Dir, "oci:"+filepath.Join(t.TempDir(), "oci")+":v1", popts)
	if err != nil {
		t.Fatal(err)
	}
	direct, err := push.Pack(context.Background(), m.Dir, reg.Ref("multi/direct")+":v1", popts,
		push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if direct.Digest != local.Digest || len(direct.Platforms) != 2 {
		t.Fatalf("packed to registry %s %+v, to layout %s", direct.Digest, direct.Platforms, local.Digest)
	}
	for _, pl := range local.Platforms {
		got := strings.TrimSpace(testenv.Crane(t, "digest", "--insecure", "--platform", pl.Platform, reg.Ref("multi/direct")+":v1"))
		if got != pl.Digest.String() {
			t.Errorf("crane digest --platform %s: %s, want %s", pl.Platform, got, pl.Digest)
		}
	}
	if got := strings.TrimSpace(testenv.Crane(t, "digest", "--insecure", reg.Ref("multi/direct")+":v1")); got != local.Digest.String() {
		t.Errorf("crane digest: %s, want the index %s", got, local.Digest)
	}

	pushed := copyT(t, local.Tagged, reg.Ref("multi/pushed")+":v1")
	archive := "oci-archive:" + filepath.Join(t.TempDir(), "multi.tar") + ":v1"
	copyT(t, pushed.Reference, archive)
	back := copyT(t, archive, reg.Ref("multi/back")+":v1")
	if pushed.Digest != local.Digest.String() || back.Digest != local.Digest.String() {
		t.Fatalf("push %s, mirror back %s, want %s", pushed.Digest, back.Digest, local.Digest)
	}
	if _, err := push.Verify(context.Background(), back.Reference, m.Dir, "", push.WithPlainHTTP(true)); err != nil {
		t.Errorf("verify: %v", err)
	}

	dir := filepath.Join(t.TempDir(), "pulled")
	dg, err := push.Pull(context.Background(), back.Reference, dir,
		push.PullOptions{Platform: v1.Platform{OS: "linux", Architecture: "arm64"}},
		push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()))
	if err != nil {
		t.Fatal(err)
	}
	if dg.Manifest != local.Platforms[1].Digest.String() {
		t.Errorf("pull --platform linux/arm64 pulled %s, want %s", dg.Manifest, local.Platforms[1].Digest)
	}
	// What the pull resolved is the index: its digest and pinned reference.
	if dg.Digest != local.Digest.String() || dg.Reference != back.Reference {
		t.Errorf("pull of an index: %+v, want the index %s", dg, back.Reference)
	}
	sameTree(t, m.Dir, dir)

	// As a --base, the index gives each platform its image, and a platform
	// it lacks fails naming those it has.
	base := reg.Ref("multi/direct") + ":v1"
	_, err = push.Pack(context.Background(), m.Dir, "oci:"+filepath.Join(t.TempDir(), "s390x"), []pack.Option{pack.WithCacheDir(""), pack.WithPlatform("linux/s390x")}, push.WithBase(base), push.WithPlainHTTP(true))
	if err == nil || !strings.Contains(err.Error(), "no image for platform linux/s390x (have linux/amd64, linux/arm64)") {
		t.Errorf("registry base without the platform: %v", err)
	}
	onBase, err := push.Pack(context.Background(), m.Dir, "oci:"+filepath.Join(t.TempDir(), "onbase"), []pack.Option{pack.WithCacheDir(""), pack.WithPlatform("linux/arm64,linux/amd64")}, push.WithBase(base), push.WithPlainHTTP(true))
	if err != nil || len(onBase.Platforms) != 2 || onBase.Platforms[1].BaseLayers != len(local.Layers) {
		t.Errorf("registry index as base: %+v, %v", onBase, err)
	}

	raw, err := push.ReadImage(context.Background(), reg.Ref("multi/direct")+":v1", v1.Platform{OS: "linux", Architecture: "arm64"}, push.WithPlainHTTP(true))
	if err != nil {
		t.Fatal(err)
	}
	if raw.Digest != local.Platforms[1].Digest || raw.IndexDigest != local.Digest {
		t.Errorf("ReadImage arm64: image %s in index %s", raw.Digest, raw.IndexDigest)
	}
}
