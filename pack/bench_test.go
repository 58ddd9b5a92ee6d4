package pack_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/modelcar/modelcar/internal/testmodel"
	"github.com/modelcar/modelcar/pack"
	"github.com/modelcar/modelcar/push"
)

// BenchmarkPack packs a generated 512 MiB model per format into a fresh
// layout each iteration (the digest cache is off). `make bench` runs the
// fuller packbench harness, which also reports the SHA-256 limit and RSS.
func BenchmarkPack(b *testing.B) {
	dir := filepath.Join(b.TempDir(), "model")
	m, err := testmodel.Generate(dir, testmodel.Options{Seed: 1, TotalSize: 512 << 20, Shards: 4})
	if err != nil {
		b.Fatal(err)
	}
	for _, f := range []pack.Format{pack.FormatTar, pack.FormatZstd, pack.FormatZstdChunked, pack.FormatEstargz} {
		b.Run(string(f), func(b *testing.B) {
			b.SetBytes(m.Size)
			for i := 0; b.Loop(); i++ {
				out := filepath.Join(b.TempDir(), "oci")
				if _, err := push.Pack(context.Background(), dir, "oci:"+out, []pack.Option{pack.WithFormat(f), pack.WithCacheDir("")}); err != nil {
					b.Fatal(err)
				}
				os.RemoveAll(out)
			}
		})
	}
}
