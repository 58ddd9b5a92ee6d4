package pack

import (
	"context"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/authn"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/modelcar/modelcar/internal/ocilayout"
	"github.com/modelcar/modelcar/internal/redact"
	"github.com/modelcar/modelcar/internal/ref"
)

// resolveBase opens the --base image for the platform.
func resolveBase(ctx context.Context, s string, platform v1.Platform) (v1.Image, error) {
	r, err := ref.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("--base: %w", err)
	}
	switch r.Kind {
	case ref.Registry:
		// The registry's error answers may echo the credentials sent:
		// internal/redact learns them as they are sent and redacts and caps
		// the answers (go-containerregistry's errors quote them whole).
		desc, err := remote.Get(r.Name, remote.WithContext(ctx), remote.WithAuthFromKeychain(authn.DefaultKeychain),
			remote.WithTransport(redact.Transport(remote.DefaultTransport)))
		if err != nil {
			return nil, fmt.Errorf("--base %s: %w", s, err)
		}
		if desc.MediaType.IsIndex() {
			idx, err := desc.ImageIndex()
			if err != nil {
				return nil, fmt.Errorf("--base %s: %w", s, err)
			}
			return imageForPlatform(idx, platform, s)
		}
		img, err := desc.Image()
		if err != nil {
			return nil, fmt.Errorf("--base %s: %w", s, err)
		}
		return img, nil
	case ref.Layout:
		l, err := ocilayout.Open(r.Path)
		if err != nil {
			return nil, fmt.Errorf("--base: %w", err)
		}
		desc, err := ocilayout.Resolve(l, s, r.Tag, r.Digest)
		if err != nil {
			return nil, fmt.Errorf("--base: %w", err)
		}
		p := layout.Path(r.Path)
		if desc.MediaType.IsIndex() {
			idx, err := p.ImageIndex()
			if err != nil {
				return nil, fmt.Errorf("--base %s: %w", s, err)
			}
			child, err := idx.ImageIndex(desc.Digest)
			if err != nil {
				return nil, fmt.Errorf("--base %s: %w", s, err)
			}
			return imageForPlatform(child, platform, s)
		}
		img, err := layoutImage(p, desc.Digest)
		if err != nil {
			return nil, fmt.Errorf("--base %s: %w", s, err)
		}
		return img, nil
	default:
		return nil, fmt.Errorf("--base %s: oci-archive bases are not supported; use oci:PATH or a registry reference", s)
	}
}

func imageForPlatform(idx v1.ImageIndex, platform v1.Platform, where string) (v1.Image, error) {
	im, err := idx.IndexManifest()
	if err != nil {
		return nil, fmt.Errorf("--base %s: %w", where, err)
	}
	var have []string
	for _, d := range im.Manifests {
		if d.Platform != nil && PlatformMatches(*d.Platform, platform) {
			return idx.Image(d.Digest)
		}
		if d.Platform != nil {
			have = append(have, d.Platform.String())
		}
	}
	return nil, fmt.Errorf("--base %s: no image for platform %s (have %s)", where, platform.String(), strings.Join(have, ", "))
}

// layoutImage opens the image h of a layout, listed in index.json or in
// an image index it lists (a platform's image named by its digest).
func layoutImage(p layout.Path, h v1.Hash) (v1.Image, error) {
	root, err := p.ImageIndex()
	if err != nil {
		return nil, err
	}
	var find func(idx v1.ImageIndex, depth int) (v1.Image, error)
	find = func(idx v1.ImageIndex, depth int) (v1.Image, error) {
		im, err := idx.IndexManifest()
		if err != nil {
			return nil, err
		}
		for _, d := range im.Manifests {
			if d.Digest == h && !d.MediaType.IsIndex() {
				return idx.Image(h)
			}
		}
		for _, d := range im.Manifests {
			if d.MediaType.IsIndex() && depth < 4 {
				child, err := idx.ImageIndex(d.Digest)
				if err != nil {
					continue
				}
				if img, err := find(child, depth+1); err == nil {
					return img, nil
				}
			}
		}
		return nil, fmt.Errorf("no image %s in the layout", h)
	}
	return find(root, 0)
}

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
		return nil, fmt.Errorf("--base: reading manifest: %w", err)
	}
	cfg, err := img.ConfigFile()
	if err != nil {
		return nil, fmt.Errorf("--base: reading config: %w", err)
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
			return fmt.Errorf("--base: layer %s: %w", d.Digest, err)
		}
		rc, err := l.Compressed()
		if err != nil {
			return fmt.Errorf("--base: layer %s: %w", d.Digest, err)
		}
		err = out.PutBlob(ctx, d.Digest, d.Size, rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("--base: %w", err)
		}
	}
	return nil
}
