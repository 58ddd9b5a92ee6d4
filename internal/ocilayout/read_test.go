package ocilayout

import (
	"path/filepath"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/modelcar/modelcar/internal/limits"
)

// A digest of a platform image inside an index listed in index.json (or of
// an image in an index nested in that one) resolves to that image's
// descriptor, with its media type, in a layout and in an archive; a digest
// found nowhere is still an error.
func TestResolveDigestInsideIndex(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "layout")
	l, err := Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	amd := writeImage(t, l, "amd64", 100, &v1.Platform{OS: "linux", Architecture: "amd64"})
	arm := writeImage(t, l, "arm64", 100, &v1.Platform{OS: "linux", Architecture: "arm64"})
	deep := writeImage(t, l, "riscv64", 100, &v1.Platform{OS: "linux", Architecture: "riscv64"})
	// A child descriptor without a media type: Resolve reads it from the blob.
	bare := writeImage(t, l, "s390x", 100, nil)
	bare.MediaType = ""
	inner := writeIndex(t, l, deep, bare)
	outer := writeIndex(t, l, amd, arm, inner)
	if err := l.Tag(outer, "multi"); err != nil {
		t.Fatal(err)
	}
	other := writeImage(t, l, "single", 100, nil)
	if err := l.Tag(other, "single"); err != nil {
		t.Fatal(err)
	}
	l.Cleanup()
	file := filepath.Join(t.TempDir(), "x.tar")
	if err := WriteArchive(dir, file); err != nil {
		t.Fatal(err)
	}
	a, err := OpenArchive(file)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	for name, r := range map[string]Reader{"layout": l, "archive": a} {
		t.Run(name, func(t *testing.T) {
			for _, want := range []v1.Descriptor{outer, other, arm, amd, deep, inner} {
				h := want.Digest
				got, err := Resolve(r, name, "", &h)
				if err != nil {
					t.Errorf("resolving %s: %v", h, err)
					continue
				}
				if got.Digest != want.Digest || got.Size != want.Size || got.MediaType != want.MediaType {
					t.Errorf("resolving %s: got %s %s %d, want %s %s %d", h, got.MediaType, got.Digest, got.Size, want.MediaType, want.Digest, want.Size)
				}
				if want.Platform != nil && (got.Platform == nil || got.Platform.Architecture != want.Platform.Architecture) {
					t.Errorf("resolving %s: platform %v, want %v", h, got.Platform, want.Platform)
				}
			}
			h := bare.Digest
			if got, err := Resolve(r, name, "", &h); err != nil || got.MediaType != types.OCIManifestSchema1 {
				t.Errorf("resolving %s (no media type in its index): %s, %v", h, got.MediaType, err)
			}
			missing := v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("0", 64)}
			if _, err := Resolve(r, name, "", &missing); err == nil || !strings.Contains(err.Error(), "no image with digest") {
				t.Errorf("resolving an absent digest: %v", err)
			}
		})
	}
}

// The search into nested indexes is bounded, and an index whose blob is
// missing (a partial copy) is skipped rather than failing the lookup.
func TestResolveNestedBounded(t *testing.T) {
	l, err := Init(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	img := writeImage(t, l, "leaf", 10, nil)
	d := img
	for range limits.MaxIndexDepth + 1 {
		d = writeIndex(t, l, d)
	}
	if err := l.Tag(d, "deep"); err != nil {
		t.Fatal(err)
	}
	h := img.Digest
	if _, err := Resolve(l, "l", "", &h); err == nil {
		t.Errorf("found an image %d indexes deep; the bound is %d", limits.MaxIndexDepth+1, limits.MaxIndexDepth)
	}
	// Within the bound it is found, past an index whose blob is missing.
	absent := v1.Descriptor{MediaType: types.OCIImageIndex, Size: 2, Digest: v1.Hash{Algorithm: "sha256", Hex: strings.Repeat("1", 64)}}
	shallow := writeIndex(t, l, writeIndex(t, l, img))
	idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{absent, shallow}}
	if err := l.WriteIndex(&idx); err != nil {
		t.Fatal(err)
	}
	if got, err := Resolve(l, "l", "", &h); err != nil || got.Digest != h {
		t.Errorf("resolving %s two indexes deep: %v, %v", h, got.Digest, err)
	}
}
