package pack

import (
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ociLayerType maps Docker layer media types to their OCI equivalents so
// the output manifest is a consistent OCI manifest (digests are unchanged).
func ociLayerType(mt types.MediaType) types.MediaType {
	switch mt {
	case types.DockerLayer:
		return types.OCILayer
	case types.DockerUncompressedLayer:
		return types.OCIUncompressedLayer
	case types.DockerForeignLayer:
		return types.OCIRestrictedLayer
	}
	return mt
}

// baseParts are the base image's layers and config, ready to extend.
type baseParts struct {
	img    v1.Image
	layers []v1.Descriptor
	config *v1.ConfigFile
}

func loadBase(img v1.Image) (*baseParts, error) {
	m, err := img.Manifest()
	if err != nil {
		return nil, fmt.Errorf("reading its manifest: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("reading its config: %w", err)
	}
	bp := &baseParts{img: img, config: cfg.DeepCopy()}
	for _, l := range m.Layers {
		d := v1.Descriptor{MediaType: ociLayerType(l.MediaType), Digest: l.Digest, Size: l.Size, Annotations: l.Annotations}
		bp.layers = append(bp.layers, d)
	}
	return bp, nil
}

// copyBaseBlobs streams the base layers into the output layout.
func copyBaseBlobs(ctx context.Context, bp *baseParts, out Store) error {
	for _, d := range bp.layers {
		if out.Has(ctx, d.Digest, d.Size) {
			continue
		}
		l, err := bp.img.LayerByDigest(d.Digest)
		if err != nil {
			return fmt.Errorf("base layer %s: %w", d.Digest, err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("base layer %s: %w", d.Digest, err)
		}
		err = out.PutBlob(ctx, d.Digest, d.Size, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("base layer %s: %w", d.Digest, err)
		}
	}
	return nil
}
