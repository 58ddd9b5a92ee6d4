package testenv

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

type fileEntry struct {
	name string
	data []byte // nil: directory
}

// layerTar builds an uncompressed layer tarball.
func layerTar(t *testing.T, entries ...fileEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: 0o644, Typeflag: tar.TypeReg, Size: int64(len(e.data))}
		if e.data == nil {
			h = &tar.Header{Name: e.name, Mode: 0o755, Typeflag: tar.TypeDir}
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// testImage is a two-layer linux/GOARCH image: models/config.json in the
// first layer, models/weights.bin in the second (so that UnpackedRoot has to
// find the top of a real chain, not a single layer).
func testImage(t *testing.T, configJSON, weights []byte) v1.Image {
	t.Helper()
	var layers []v1.Layer
	for _, tb := range [][]byte{
		layerTar(t, fileEntry{name: "models/"}, fileEntry{name: "models/config.json", data: configJSON}),
		layerTar(t, fileEntry{name: "models/"}, fileEntry{name: "models/weights.bin", data: weights}),
	} {
		l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(tb)), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	// OCI media types throughout: skopeo 1.9's oci: transport ignores
	// Docker-typed manifests when it resolves a layout's tags.
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = runtime.GOOS, runtime.GOARCH
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// writeLayout writes img into a fresh OCI image layout tagged "latest".
func writeLayout(t *testing.T, img v1.Image) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "layout")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
		"org.opencontainers.image.ref.name": "latest",
	})); err != nil {
		t.Fatal(err)
	}
	return dir
}

// tarDir writes the tree under dir to a tar file with paths relative to dir.
func tarDir(t *testing.T, dir, archive string) {
	t.Helper()
	f, err := os.Create(archive)
	if err != nil {
		t.Fatal(err)
	}
	tw := tar.NewWriter(f)
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || p == dir {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		h, err := tar.FileInfoHeader(fi, "")
		if err != nil {
			return err
		}
		h.Name = filepath.ToSlash(rel)
		if d.IsDir() {
			h.Name += "/"
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if !fi.Mode().IsRegular() {
			return nil
		}
		src, err := os.Open(p)
		if err != nil {
			return err
		}
		defer src.Close()
		_, err = io.Copy(tw, src)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestRequire(t *testing.T) {
	t.Setenv(E2EEnv, "1")
	if !Require() {
		t.Errorf("Require() = false with %s=1", E2EEnv)
	}
	t.Setenv(E2EEnv, "")
	if Require() {
		t.Errorf("Require() = true with %s unset", E2EEnv)
	}
}

func TestLookPath(t *testing.T) {
	if p := LookPath(t, "tar"); !filepath.IsAbs(p) {
		t.Errorf("LookPath(tar) = %q, want an absolute path", p)
	}
}

func TestLookPathMissingSkips(t *testing.T) {
	t.Setenv(E2EEnv, "")
	ran := false
	t.Run("missing", func(t *testing.T) {
		ran = true
		LookPath(t, "modelcar-no-such-tool")
		t.Error("LookPath returned for a missing tool")
	})
	if !ran {
		t.Fatal("subtest did not run")
	}
}

func TestChainID(t *testing.T) {
	a := "sha256:" + strings.Repeat("a", 64)
	b := "sha256:" + strings.Repeat("b", 64)
	if got := chainID([]string{a}); got != a {
		t.Errorf("chainID(one) = %s, want %s", got, a)
	}
	// printf '%s %s' "$a" "$b" | sha256sum
	want := "sha256:ccd722928bd92476ba1745586fed6e45a102504185ad88cd89e01ff116fd146c"
	if got := chainID([]string{a, b}); got != want {
		t.Errorf("chainID(two) = %s, want %s", got, want)
	}
}

func TestContainerdImportUnpackedRoot(t *testing.T) {
	LookPath(t, "containerd")
	configJSON := []byte(`{"architectures":["TestModel"],"hidden_size":8}` + "\n")
	weights := bytes.Repeat([]byte{0xAB, 0x00, 0x17}, 1000)

	dir := writeLayout(t, testImage(t, configJSON, weights))
	archive := filepath.Join(t.TempDir(), "image.tar")
	tarDir(t, dir, archive)

	c := StartContainerd(t)
	names := c.ImportArchive(t, archive)
	if len(names) != 1 || !strings.HasSuffix(names[0], ":latest") {
		t.Fatalf("ImportArchive = %q, want one name ending in :latest", names)
	}
	if out := c.Ctr(t, "images", "ls", "-q"); !strings.Contains(out, names[0]) {
		t.Errorf("ctr images ls -q does not list %s:\n%s", names[0], out)
	}

	root := c.UnpackedRoot(t, names[0])
	got, err := os.ReadFile(filepath.Join(root, "models", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, configJSON) {
		t.Errorf("models/config.json = %q, want %q", got, configJSON)
	}
	got, err = os.ReadFile(filepath.Join(root, "models", "weights.bin"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, weights) {
		t.Errorf("models/weights.bin differs (%d bytes, want %d)", len(got), len(weights))
	}
	if !strings.HasPrefix(root, c.Root+string(filepath.Separator)) {
		t.Errorf("UnpackedRoot = %s, not under containerd root %s", root, c.Root)
	}

	// A second call (a second view) must work too and see the same tree.
	if root2 := c.UnpackedRoot(t, names[0]); root2 != root {
		t.Errorf("second UnpackedRoot = %s, want %s", root2, root)
	}

	// The views are GC roots: removing the image and collecting garbage
	// synchronously must leave the unpacked tree in place.
	c.Ctr(t, "images", "rm", "--sync", names[0])
	if got, err := os.ReadFile(filepath.Join(root, "models", "config.json")); err != nil || !bytes.Equal(got, configJSON) {
		t.Errorf("after image removal and GC: models/config.json = %q, %v", got, err)
	}
}

func TestSkopeoInspectLayout(t *testing.T) {
	img := testImage(t, []byte("{}\n"), []byte("w"))
	dir := writeLayout(t, img)
	out := Skopeo(t, "inspect", "oci:"+dir)
	var inspect struct {
		Digest       string
		Architecture string
		Os           string
		Layers       []string
	}
	if err := json.Unmarshal([]byte(out), &inspect); err != nil {
		t.Fatalf("skopeo inspect output: %v\n%s", err, out)
	}
	want, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if inspect.Digest != want.String() {
		t.Errorf("skopeo inspect digest = %s, want %s", inspect.Digest, want)
	}
	if inspect.Architecture != runtime.GOARCH || inspect.Os != runtime.GOOS || len(inspect.Layers) != 2 {
		t.Errorf("skopeo inspect = %+v", inspect)
	}
}

func TestSkopeoCopyStaysInSandbox(t *testing.T) {
	bin := LookPath(t, "skopeo")
	const systemCache = "/var/lib/containers/cache"
	_, statErr := os.Stat(systemCache)
	systemCacheExisted := statErr == nil

	src := writeLayout(t, testImage(t, []byte("{}\n"), []byte("w")))
	dst := filepath.Join(t.TempDir(), "copy")
	s := newSkopeoSandbox(t)
	s.run(t, bin, "copy", "oci:"+src+":latest", "oci:"+dst+":latest")
	s.run(t, bin, "copy", "oci:"+src+":latest", "oci-archive:"+filepath.Join(t.TempDir(), "copy.tar")+":latest")

	if _, err := os.Stat(filepath.Join(dst, "index.json")); err != nil {
		t.Errorf("copy produced no layout: %v", err)
	}
	if _, err := os.Stat(s.blobInfoCacheDir()); err != nil {
		t.Errorf("blob info cache is not in the sandbox: %v", err)
	}
	if _, err := os.Stat(systemCache); err == nil && !systemCacheExisted {
		t.Errorf("skopeo created %s", systemCache)
	}
	entries, _ := os.ReadDir(filepath.Join(s.dir, "tmp"))
	for _, e := range entries {
		t.Logf("left in sandbox tmpdir: %s", e.Name())
	}
}
