package testenv

import (
	"archive/tar"
	"os"
	"path/filepath"
	"runtime"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
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
	files := []TarFile{
		{Header: tar.Header{Name: "bin/", Mode: 0o755, Typeflag: tar.TypeDir}},
		{Header: tar.Header{Name: "tmp/", Mode: 0o1777, Typeflag: tar.TypeDir}},
		{Header: tar.Header{Name: "bin/busybox", Mode: 0o755, Typeflag: tar.TypeReg}, Data: exe},
	}
	for _, a := range BusyboxApplets {
		files = append(files, TarFile{Header: tar.Header{Name: "bin/" + a, Linkname: "busybox", Typeflag: tar.TypeSymlink, Mode: 0o777}})
	}
	img, err := OneLayerImage(files, func(c *v1.Config) {
		c.Cmd = []string{"/bin/sh"}
		c.Env = []string{"PATH=/bin"}
	})
	if err != nil {
		t.Fatal(err)
	}
	return WriteLayout(t, img, "busybox", "busybox", layout.WithPlatform(v1.Platform{OS: "linux", Architecture: runtime.GOARCH}))
}

// WriteLayout writes img into a new OCI layout DIR (named name, in a test
// temporary directory) under tag, and returns oci:DIR:TAG.
func WriteLayout(t testing.TB, img v1.Image, name, tag string, opts ...layout.Option) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), name)
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	opts = append([]layout.Option{layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": tag})}, opts...)
	if err := p.AppendImage(img, opts...); err != nil {
		t.Fatal(err)
	}
	return "oci:" + dir + ":" + tag
}
