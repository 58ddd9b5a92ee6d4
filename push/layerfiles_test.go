package push

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/modelcar/modelcar/internal/limits"
)

// TestListTarStopsAtLimits: a layer of more entries than
// limits.MaxListedEntries, or of longer names than
// limits.MaxListedNameBytes, is listed up to the limit and marked
// truncated, reading no further.
func TestListTarStopsAtLimits(t *testing.T) {
	// Names outside the prefix are listed with a leading "/".
	cases := map[string]struct{ entries, nameLen int }{
		"entries":    {limits.MaxListedEntries + 10, 8},
		"name bytes": {limits.MaxListedNameBytes/2000 + 10, 2000},
	}
	for name, tc := range cases {
		want := min(limits.MaxListedEntries, limits.MaxListedNameBytes/(tc.nameLen+1))
		t.Run(name, func(t *testing.T) {
			pr, pw := io.Pipe()
			go func() {
				tw := tar.NewWriter(pw)
				for i := range tc.entries {
					n := fmt.Sprintf("%0*d", tc.nameLen, i)
					if err := tw.WriteHeader(&tar.Header{Name: n, Typeflag: tar.TypeReg, Mode: 0o644}); err != nil {
						pw.CloseWithError(err)
						return
					}
				}
				pw.CloseWithError(tw.Close())
			}()
			lf, err := listTar(context.Background(), pr, "models")
			pr.CloseWithError(io.ErrClosedPipe)
			if err != nil || !lf.Truncated || len(lf.Files) != want {
				t.Errorf("listed %d files, truncated %v, err %v; want %d, truncated", len(lf.Files), lf.Truncated, err, want)
			}
		})
	}
}

// bytesFetcher serves one blob, without seeking.
type bytesFetcher []byte

func (b bytesFetcher) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b)), nil
}

// TestListLayerChecksDigest: a layer read whole (compressed, or from a
// registry) is listed only if it is the blob its digest names.
func TestListLayerChecksDigest(t *testing.T) {
	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	tw.WriteHeader(&tar.Header{Name: "models/config.json", Typeflag: tar.TypeReg, Mode: 0o644})
	tw.Close()
	var blob bytes.Buffer
	zw, _ := zstd.NewWriter(&blob)
	zw.Write(tarBuf.Bytes())
	zw.Close()
	desc := ocispec.Descriptor{MediaType: ocispec.MediaTypeImageLayerZstd, Digest: digest.FromBytes(blob.Bytes()), Size: int64(blob.Len())}
	d := newLayerDecoder(1)
	defer d.close()
	lf, err := listLayer(context.Background(), bytesFetcher(blob.Bytes()), desc, "models", d)
	if err != nil || len(lf.Files) != 1 || lf.Files[0] != "config.json" {
		t.Fatalf("listLayer: %+v, %v", lf, err)
	}
	desc.Digest = digest.NewDigestFromBytes(digest.SHA256, sha256.New().Sum(nil))
	if _, err := listLayer(context.Background(), bytesFetcher(blob.Bytes()), desc, "models", d); err == nil || !strings.Contains(err.Error(), "digest mismatch") {
		t.Errorf("a layer that is not the blob its digest names: %v", err)
	}
}

// TestListedName: entries under the prefix are named relative to it, others
// from the image root, and names that leave the root as the tar spells
// them; eStargz's metadata is no file.
func TestListedName(t *testing.T) {
	for name, want := range map[string]string{
		"models/config.json":       "config.json",
		"./models/sub/a,b.json":    "sub/a,b.json",
		"etc/passwd":               "/etc/passwd",
		"models/../etc/passwd":     "/etc/passwd",
		"/abs/file":                "/abs/file",
		"../escape":                "../escape",
		"models/../../escape":      "models/../../escape",
		"models":                   "/models",
		"stargz.index.json":        "",
		".no.prefetch.landmark":    "",
		"models/stargz.index.json": "stargz.index.json",
		"modelsX/config.json":      "/modelsX/config.json",
	} {
		if got := listedName(name, "models"); got != want {
			t.Errorf("listedName(%q) = %q, want %q", name, got, want)
		}
	}
	if got := listedName("etc/passwd", ""); got != "etc/passwd" {
		t.Errorf("listedName with no prefix = %q", got)
	}
}
