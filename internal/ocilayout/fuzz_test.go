package ocilayout

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzResolve feeds arbitrary index.json files to a layout: reading and
// resolving never panics, and a resolved descriptor is one of the index's.
func FuzzResolve(f *testing.F) {
	d := "sha256:" + strings.Repeat("a", 64)
	f.Add(`{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"`+d+`","size":2,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}`, "v1")
	f.Add(`{"manifests":[{"digest":"sha256:zz","size":-1},{"digest":"`+d+`"}]}`, "")
	f.Add(`{"manifests":null}`, "x")
	f.Add(`[]`, "")
	f.Fuzz(func(t *testing.T, index, tag string) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "oci-layout"), []byte(`{"imageLayoutVersion":"1.0.0"}`), 0o644)
		os.WriteFile(filepath.Join(dir, "index.json"), []byte(index), 0o644)
		l, err := Open(dir)
		if err != nil {
			t.Fatal(err)
		}
		idx, err := l.Index()
		if err != nil {
			return
		}
		desc, err := Resolve(l, dir, tag, nil)
		if err != nil {
			return
		}
		for _, m := range idx.Manifests {
			if m.Digest == desc.Digest && m.Size == desc.Size {
				return
			}
		}
		t.Fatalf("resolved %v, not in the index", desc)
	})
}
