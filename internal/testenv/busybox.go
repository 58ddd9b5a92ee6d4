package testenv

import (
	"archive/tar"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// BusyboxApplets are the commands BusyboxBase links to /bin/busybox: what a
// KServe modelcar sidecar (sh, ln, sleep) and the tests' readers use.
var BusyboxApplets = []string{"sh", "ln", "sleep", "cat", "ls", "sha256sum", "true", "wc", "find", "test"}

// BusyboxBase writes a one-layer linux image of Debian's static busybox
// (/bin/busybox, applets linked in /bin) into an OCI layout and returns it as
// a reference `modelcar pack --base` takes: oci:DIR:busybox. A missing
// busybox-static skips the test (fails it under MODELCAR_E2E=1).
func BusyboxBase(t testing.TB) string {
	t.Helper()
	bin := LookPath(t, "busybox")
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0)
	hdrs := []*tar.Header{
		{Name: "bin/", Mode: 0o755, Typeflag: tar.TypeDir, ModTime: epoch},
		{Name: "tmp/", Mode: 0o1777, Typeflag: tar.TypeDir, ModTime: epoch},
		{Name: "bin/busybox", Mode: 0o755, Size: int64(len(exe)), Typeflag: tar.TypeReg, ModTime: epoch},
	}
	for _, a := range BusyboxApplets {
		hdrs = append(hdrs, &tar.Header{Name: "bin/" + a, Linkname: "busybox", Typeflag: tar.TypeSymlink, Mode: 0o777, ModTime: epoch})
	}
	for _, h := range hdrs {
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Name == "bin/busybox" {
			if _, err := tw.Write(exe); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(buf.Bytes())), nil
	})
	if err != nil {
		t.Fatal(err)
	}
	img, err := mutate.AppendLayers(empty.Image, layer)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", runtime.GOARCH
	cf.Created = v1.Time{Time: epoch}
	cf.Config.Cmd = []string{"/bin/sh"}
	cf.Config.Env = []string{"PATH=/bin"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "busybox")
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "busybox"}),
		layout.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH})); err != nil {
		t.Fatal(err)
	}
	return "oci:" + dir + ":busybox"
}
