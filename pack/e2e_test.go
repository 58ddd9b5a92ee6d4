package pack_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/pack"
)

// TestSkopeoReadsLayout: skopeo inspects the layout and copies it to a dir:
// transport; the copied layers are the same blobs, and GNU tar extracts
// every model file byte-identical to the source.
func TestSkopeoReadsLayout(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with skopeo and tar")
	}
	tarBin := testenv.LookPath(t, "tar")
	m := genModel(t, 11, 3<<20, 3)
	out := filepath.Join(t.TempDir(), "oci")
	res := packT(t, m.Dir, "oci:"+out+":v1")

	var inspect struct {
		Digest string
		Layers []string
		Os     string
	}
	if err := json.Unmarshal([]byte(testenv.Skopeo(t, "inspect", "oci:"+out+":v1")), &inspect); err != nil {
		t.Fatal(err)
	}
	if inspect.Digest != res.Digest.String() || len(inspect.Layers) != len(res.Layers) || inspect.Os != "linux" {
		t.Fatalf("skopeo inspect: %+v, packed %s with %d layers", inspect, res.Digest, len(res.Layers))
	}
	dirCopy := filepath.Join(t.TempDir(), "dircopy")
	testenv.Skopeo(t, "copy", "--preserve-digests", "oci:"+out+":v1", "dir:"+dirCopy)
	root := filepath.Join(t.TempDir(), "root")
	if err := os.MkdirAll(root, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, l := range res.Layers {
		blob := filepath.Join(dirCopy, l.Digest.Hex)
		if _, err := os.Stat(blob); err != nil {
			t.Fatalf("layer %d not copied by skopeo: %v", i, err)
		}
		if b, err := exec.Command(tarBin, "-xf", blob, "-C", root).CombinedOutput(); err != nil {
			t.Fatalf("tar -xf layer %d: %v\n%s", i, err, b)
		}
	}
	assertSameTree(t, m.Dir, filepath.Join(root, "models"))
}

func assertSameTree(t *testing.T, want, got string) {
	t.Helper()
	w, g := fileSums(t, want), fileSums(t, got)
	if len(w) != len(g) {
		t.Errorf("%s has %d files, %s has %d", got, len(g), want, len(w))
	}
	for k, v := range w {
		if g[k] != v {
			t.Errorf("%s: differs or missing in %s", k, got)
		}
	}
}

// TestContainerdUnpacksArchive: a private containerd imports the
// oci-archive and unpacks it with the native snapshotter; the root
// filesystem has the model under /models, for plain, zstd and eStargz
// layers.
func TestContainerdUnpacksArchive(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test with containerd")
	}
	ctd := testenv.StartContainerd(t)
	m := genModel(t, 12, 3<<20, 2)
	for _, f := range []pack.Format{pack.FormatTar, pack.FormatZstd, pack.FormatEstargz} {
		t.Run(string(f), func(t *testing.T) {
			archive := filepath.Join(t.TempDir(), "model.tar")
			packT(t, m.Dir, "oci-archive:"+archive+":"+string(f), pack.WithFormat(f))
			names := ctd.ImportArchive(t, archive)
			if len(names) != 1 {
				t.Fatalf("imported %v", names)
			}
			root := ctd.UnpackedRoot(t, names[0])
			got := filepath.Join(root, "models")
			assertSameTree(t, m.Dir, got)
			if f == pack.FormatEstargz {
				// eStargz metadata entries must not leak into /models.
				ents, _ := os.ReadDir(got)
				for _, e := range ents {
					if strings.HasPrefix(e.Name(), ".") {
						t.Errorf("unexpected %s in /models", e.Name())
					}
				}
			}
		})
	}
	// A multi-platform index: containerd imports it and unpacks this
	// machine's platform.
	t.Run("two-platforms", func(t *testing.T) {
		archive := filepath.Join(t.TempDir(), "model.tar")
		packT(t, m.Dir, "oci-archive:"+archive+":multi", pack.WithPlatform("linux/amd64,linux/arm64"))
		names := ctd.ImportArchive(t, archive)
		if len(names) != 1 {
			t.Fatalf("imported %v", names)
		}
		assertSameTree(t, m.Dir, filepath.Join(ctd.UnpackedRoot(t, names[0]), "models"))
	})
}
