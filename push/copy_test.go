package push_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/internal/testmodel"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// packed packs a generated model into a layout and returns its reference.
func packed(t *testing.T, seed int64, size int64, f pack.Format) (*testmodel.Model, *pack.Result) {
	t.Helper()
	m, err := testmodel.Generate(filepath.Join(t.TempDir(), "model"), testmodel.Options{Seed: seed, TotalSize: size, Shards: 3})
	if err != nil {
		t.Fatal(err)
	}
	res, err := push.Pack(context.Background(), m.Dir, "oci:"+filepath.Join(t.TempDir(), "oci")+":v1", []pack.Option{pack.WithFormat(f), pack.WithCacheDir("")})
	if err != nil {
		t.Fatal(err)
	}
	return m, res
}

func copyT(t *testing.T, src, dst string, opts ...push.Option) *push.Result {
	t.Helper()
	opts = append([]push.Option{push.WithPlainHTTP(true), push.WithStateDir(t.TempDir())}, opts...)
	res, err := push.Copy(context.Background(), src, dst, opts...)
	if err != nil {
		t.Fatalf("Copy(%s, %s): %v", src, dst, err)
	}
	return res
}

func TestPushToRegistryPeersReadSameDigest(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registry, crane, oras, skopeo")
	}
	reg := testenv.StartRegistry(t)
	_, p := packed(t, 1, 4<<20, pack.FormatTar)
	dst := reg.Ref("models/llama") + ":v1"
	res := copyT(t, p.Tagged, dst)
	want := p.Digest.String()
	if res.Digest != want || res.Reference != reg.Ref("models/llama")+"@"+want {
		t.Fatalf("result %+v, packed %s", res, want)
	}
	if got := strings.TrimSpace(testenv.Crane(t, "digest", "--insecure", dst)); got != want {
		t.Errorf("crane digest %s, want %s", got, want)
	}
	mf := testenv.Oras(t, "manifest", "fetch", "--plain-http", res.Reference)
	sum := sha256.Sum256([]byte(mf))
	if "sha256:"+hex.EncodeToString(sum[:]) != want {
		t.Errorf("oras fetched manifest with another digest")
	}
	var insp struct{ Digest string }
	json.Unmarshal([]byte(testenv.Skopeo(t, "inspect", "--tls-verify=false", "docker://"+dst)), &insp)
	if insp.Digest != want {
		t.Errorf("skopeo digest %s, want %s", insp.Digest, want)
	}
	// A second push sends no blob again.
	again := copyT(t, p.Tagged, dst)
	if again.Copied != 0 || again.BytesSent != 0 {
		t.Errorf("re-push copied %d blobs, %d bytes", again.Copied, again.BytesSent)
	}
	// Another repository of the same registry mounts instead of uploading.
	mounted := copyT(t, res.Reference, reg.Ref("mirror/llama")+":v1")
	if mounted.Mounted == 0 || mounted.Digest != want {
		t.Errorf("cross-repo copy: %+v", mounted)
	}
}

func TestMirrorRegistryArchiveRegistryKeepsDigest(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registries")
	}
	a, b := testenv.StartRegistry(t), testenv.StartRegistry(t)
	for _, f := range []pack.Format{pack.FormatTar, pack.FormatZstdChunked} {
		t.Run(string(f), func(t *testing.T) {
			_, p := packed(t, 2, 3<<20, f)
			want := p.Digest.String()
			copyT(t, p.Tagged, a.Ref("src/m")+":v1")
			archive := filepath.Join(t.TempDir(), "m.tar")
			r1 := copyT(t, a.Ref("src/m")+":v1", "oci-archive:"+archive+":v1")
			r2 := copyT(t, "oci-archive:"+archive+":v1", b.Ref("airgap/m")+":v1")
			if r1.Digest != want || r2.Digest != want {
				t.Fatalf("digests: archive %s, second registry %s, packed %s", r1.Digest, r2.Digest, want)
			}
			if got := strings.TrimSpace(testenv.Crane(t, "digest", "--insecure", b.Ref("airgap/m")+":v1")); got != want {
				t.Errorf("crane digest on the second registry %s, want %s", got, want)
			}
		})
	}
}

func TestMirrorSplitArchiveVolumes(t *testing.T) {
	m, p := packed(t, 6, 3<<20, pack.FormatTar)
	archive := filepath.Join(t.TempDir(), "m.tar")
	r := copyT(t, p.Tagged, "oci-archive:"+archive, push.WithSplitSize(1<<20))
	if _, err := os.Stat(archive); !os.IsNotExist(err) {
		t.Errorf("a split archive also wrote %s", archive)
	}
	vols, _ := filepath.Glob(archive + ".*")
	if len(vols) < 3 {
		t.Fatalf("volumes %v", vols)
	}
	for _, v := range vols[:len(vols)-1] {
		if st, _ := os.Stat(v); st.Size() != 1<<20 {
			t.Errorf("%s is %d bytes", v, st.Size())
		}
	}
	// Read back from the volumes, and from their plain concatenation.
	dir := filepath.Join(t.TempDir(), "out")
	if _, err := push.Pull(context.Background(), "oci-archive:"+archive, dir, push.PullOptions{}); err != nil {
		t.Fatal(err)
	}
	sameTree(t, m.Dir, dir)
	joined := filepath.Join(t.TempDir(), "joined.tar")
	var all []byte
	for _, v := range vols {
		b, _ := os.ReadFile(v)
		all = append(all, b...)
	}
	os.WriteFile(joined, all, 0o644)
	if vr, err := push.Verify(context.Background(), "oci-archive:"+joined, "", ""); err != nil || vr.Digest != r.Digest {
		t.Errorf("joined archive: %+v %v", vr, err)
	}
}

// TestMirrorKeepsReferrers: a signature attached with oras survives
// registry -> archive -> registry with --referrers.
func TestMirrorKeepsReferrers(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registries and oras")
	}
	a, b := testenv.StartRegistry(t), testenv.StartRegistry(t)
	_, p := packed(t, 7, 1<<20, pack.FormatTar)
	src := copyT(t, p.Tagged, a.Ref("models/m")+":v1")
	sig := filepath.Join(t.TempDir(), "sig.json")
	os.WriteFile(sig, []byte(`{"signed":"yes"}`), 0o644)
	testenv.Oras(t, "attach", "--plain-http", "--disable-path-validation", "--artifact-type", "application/vnd.example.signature", src.Reference, sig+":application/json")
	archive := filepath.Join(t.TempDir(), "m.tar")
	copyT(t, a.Ref("models/m")+":v1", "oci-archive:"+archive, push.WithReferrers(true))
	copyT(t, "oci-archive:"+archive, b.Ref("airgap/m")+":v1", push.WithReferrers(true))
	out := testenv.Oras(t, "discover", "--plain-http", "--format", "json", b.Ref("airgap/m")+"@"+src.Digest)
	if !strings.Contains(out, "application/vnd.example.signature") {
		t.Errorf("the signature did not survive the mirror: %s", out)
	}
}

// TestPackStraightToRegistry: pack streams layers to the registry, with the
// same digest as packing to a layout, each layer uploaded exactly once.
func TestPackStraightToRegistry(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registry")
	}
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartProxy(t, reg.Addr)
	for _, f := range []pack.Format{pack.FormatTar, pack.FormatZstd, pack.FormatEstargz} {
		t.Run(string(f), func(t *testing.T) {
			m, p := packed(t, 10, 3<<20, f)
			dst := proxy.Ref("direct/"+string(f)) + ":v1"
			res, err := push.Pack(context.Background(), m.Dir, dst, []pack.Option{pack.WithFormat(f), pack.WithCacheDir("")},
				push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()))
			if err != nil {
				t.Fatal(err)
			}
			if res.Digest != p.Digest || res.Reference != proxy.Ref("direct/"+string(f))+"@"+p.Digest.String() {
				t.Fatalf("packed to registry %s (%s), to layout %s", res.Digest, res.Reference, p.Digest)
			}
			for _, l := range res.Layers {
				if n := proxy.BytesUpFor(l.Digest.String()); n != l.Size {
					t.Errorf("layer %v: %d bytes uploaded for %d", l.Files, n, l.Size)
				}
			}
			if _, err := push.Verify(context.Background(), reg.Ref("direct/"+string(f))+":v1", m.Dir, "", push.WithPlainHTTP(true)); err != nil {
				t.Errorf("verify: %v", err)
			}
		})
	}
	// A dropped upload is retried by rebuilding the layer.
	m, p := packed(t, 11, 3<<20, pack.FormatTar)
	proxy.Inject(testenv.Fault{Method: "PATCH", PathContains: "/blobs/uploads/", ResetAfterBytes: 100 << 10})
	res, err := push.Pack(context.Background(), m.Dir, proxy.Ref("direct/retry")+":v1", []pack.Option{pack.WithCacheDir("")},
		push.WithPlainHTTP(true), push.WithStateDir(t.TempDir()))
	if err != nil || res.Digest != p.Digest {
		t.Fatalf("pack through a dropped connection: %v", err)
	}
}
