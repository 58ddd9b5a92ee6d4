package ocilayout

import (
	"bytes"
	"encoding/json"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// writeImage stores a small image (config, one layer of about layerBytes
// bytes, manifest) in l and returns the manifest's descriptor; name makes
// the content, hence the digests, distinct.
func writeImage(t *testing.T, l *Layout, name string, layerBytes int, platform *v1.Platform) v1.Descriptor {
	t.Helper()
	must := func(h v1.Hash, err error) v1.Hash {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return h
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"config":{"Labels":{"name":"` + name + `"}}}`)
	layer := bytes.Repeat([]byte(name+"\n"), layerBytes/(len(name)+1)+1)
	m := v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: must(l.WriteBlob(cfg)), Size: int64(len(cfg))},
		Layers:        []v1.Descriptor{{MediaType: types.OCILayer, Digest: must(l.WriteBlob(layer)), Size: int64(len(layer))}},
	}
	mb, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: types.OCIManifestSchema1, Digest: must(l.WriteBlob(mb)), Size: int64(len(mb)), Platform: platform}
}

// writeIndex stores an image index of children in l and returns its descriptor.
func writeIndex(t *testing.T, l *Layout, children ...v1.Descriptor) v1.Descriptor {
	t.Helper()
	b, err := json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: children})
	if err != nil {
		t.Fatal(err)
	}
	h, err := l.WriteBlob(b)
	if err != nil {
		t.Fatal(err)
	}
	return v1.Descriptor{MediaType: types.OCIImageIndex, Digest: h, Size: int64(len(b))}
}

// newLayout makes a layout at dir holding one image tagged tag and returns
// the image's descriptor.
func newLayout(t *testing.T, dir, name, tag string, layerBytes int) v1.Descriptor {
	t.Helper()
	l, err := Init(dir)
	if err != nil {
		t.Fatal(err)
	}
	d := writeImage(t, l, name, layerBytes, nil)
	if err := l.Tag(d, tag); err != nil {
		t.Fatal(err)
	}
	l.Cleanup()
	return d
}
