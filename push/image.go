package push

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2/content"

	"github.com/modelcar/modelcar/internal/limits"
	"github.com/modelcar/modelcar/internal/ref"
	"github.com/modelcar/modelcar/pack"
)

// imageOf returns the image at desc in e, picking the platform from an
// index (its only image, or the first for platform): manifests and indexes
// are read and identified by their content (see readNode), layers are
// fetched from e when read.
func imageOf(ctx context.Context, e *endpoint, desc ocispec.Descriptor, platform v1.Platform) (v1.Image, error) {
	for depth := 0; ; depth++ {
		n, err := readNode(ctx, e.manifests(), desc)
		if err != nil {
			return nil, err
		}
		if !isIndex(n.desc.MediaType) {
			return imageOfManifest(ctx, e, n)
		}
		if depth >= limits.MaxIndexDepth {
			return nil, fmt.Errorf("index %s: indexes nested more than %d deep", desc.Digest, limits.MaxIndexDepth)
		}
		var idx v1.IndexManifest
		if err := json.Unmarshal(n.raw, &idx); err != nil {
			return nil, fmt.Errorf("index %s: %w", desc.Digest, err)
		}
		var have []string
		picked := false
		for i, m := range idx.Manifests {
			if len(idx.Manifests) == 1 || (m.Platform != nil && pack.PlatformMatches(*m.Platform, platform)) {
				desc, picked = n.manifests[i], true
				break
			}
			if m.Platform != nil {
				have = append(have, m.Platform.String())
			}
		}
		if !picked {
			return nil, fmt.Errorf("index %s has no image for platform %s (have %s)", desc.Digest, platform.String(), strings.Join(have, ", "))
		}
	}
}

// imageOfManifest is the image of the manifest n.
func imageOfManifest(ctx context.Context, e *endpoint, n *node) (v1.Image, error) {
	desc := n.desc
	var m v1.Manifest
	if err := json.Unmarshal(n.raw, &m); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	cfg, err := fetchDocument(ctx, e.target, "config", *n.config)
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", desc.Digest, err)
	}
	var cf v1.ConfigFile
	if err := json.Unmarshal(cfg, &cf); err != nil {
		return nil, fmt.Errorf("config of %s: %w", desc.Digest, err)
	}
	if len(cf.RootFS.DiffIDs) != len(m.Layers) {
		return nil, fmt.Errorf("image %s: config lists %d diffIDs for %d layers", desc.Digest, len(cf.RootFS.DiffIDs), len(m.Layers))
	}
	core := &fetchedImage{ctx: ctx, f: e.target, raw: n.raw, manifest: &m, config: cfg, diffIDs: cf.RootFS.DiffIDs, mt: types.MediaType(desc.MediaType)}
	return partial.CompressedToImage(core)
}

// ociOf is d as oras-go and image-spec spell it.
func ociOf(d v1.Descriptor) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: string(d.MediaType), Digest: digest.Digest(d.Digest.String()), Size: d.Size,
		ArtifactType: d.ArtifactType, Annotations: d.Annotations}
}

// checkPlatform refuses a platform that cannot name an image: one with an
// OS but no architecture, or the reverse, or a variant with neither.
// The zero platform is left to the caller's default.
func checkPlatform(p v1.Platform) error {
	if p.OS == "" && p.Architecture == "" && p.Variant == "" && p.OSVersion == "" && len(p.OSFeatures) == 0 && len(p.Features) == 0 {
		return nil
	}
	if p.OS == "" || p.Architecture == "" {
		return fmt.Errorf("platform %q: want OS/ARCHITECTURE[/VARIANT], e.g. linux/amd64", p.String())
	}
	return nil
}

// fetchedImage is a go-containerregistry image whose blobs come from an
// oras-go fetcher (registry, layout or archive).
type fetchedImage struct {
	ctx      context.Context
	f        content.Fetcher
	raw      []byte
	manifest *v1.Manifest
	config   []byte
	diffIDs  []v1.Hash
	mt       types.MediaType
}

func (i *fetchedImage) RawConfigFile() ([]byte, error)      { return i.config, nil }
func (i *fetchedImage) MediaType() (types.MediaType, error) { return i.mt, nil }
func (i *fetchedImage) RawManifest() ([]byte, error)        { return i.raw, nil }

func (i *fetchedImage) LayerByDigest(h v1.Hash) (partial.CompressedLayer, error) {
	for k, l := range i.manifest.Layers {
		if l.Digest == h {
			return &fetchedLayer{img: i, desc: l, diffID: i.diffIDs[k]}, nil
		}
	}
	if i.manifest.Config.Digest == h {
		return &fetchedLayer{img: i, desc: i.manifest.Config}, nil
	}
	return nil, fmt.Errorf("blob %s is not in manifest", h)
}

type fetchedLayer struct {
	img    *fetchedImage
	desc   v1.Descriptor
	diffID v1.Hash
}

// DiffID comes from the config, so nothing is read to learn it.
func (l *fetchedLayer) DiffID() (v1.Hash, error) { return l.diffID, nil }

func (l *fetchedLayer) Digest() (v1.Hash, error)            { return l.desc.Digest, nil }
func (l *fetchedLayer) Size() (int64, error)                { return l.desc.Size, nil }
func (l *fetchedLayer) MediaType() (types.MediaType, error) { return l.desc.MediaType, nil }
func (l *fetchedLayer) Compressed() (io.ReadCloser, error) {
	if l.desc.Digest == l.img.manifest.Config.Digest {
		return io.NopCloser(bytes.NewReader(l.img.config)), nil
	}
	return l.img.f.Fetch(l.img.ctx, ociOf(l.desc))
}

// RawImage is an image as stored, for inspection: its manifest and config,
// and the index it was picked from when the reference names one.
type RawImage struct {
	Digest   v1.Hash
	Manifest []byte
	Config   []byte
	// IndexDigest and Index are set when the reference names an index.
	IndexDigest v1.Hash
	Index       []byte
	// Layers lists each layer's files, in manifest order, with
	// WithListFiles.
	Layers []LayerFiles
}

// ReadImage reads the image src (any reference kind) for inspection. An
// index is resolved to the platform's image.
func ReadImage(ctx context.Context, src string, platform v1.Platform, opts ...Option) (*RawImage, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := checkPlatform(platform); err != nil {
		return nil, err
	}
	sr, err := ref.Parse(src)
	if err != nil {
		return nil, err
	}
	client, err := o.httpClient()
	if err != nil {
		return nil, err
	}
	s, err := openSource(ctx, sr, o, client)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	defer s.finish()
	root, err := s.resolveRoot(ctx, src)
	if err != nil {
		return nil, err
	}
	var out RawImage
	if isIndex(root.MediaType) {
		if out.Index, err = fetchDocument(ctx, s.manifests(), "index", root); err != nil {
			return nil, fmt.Errorf("%s: %w", src, err)
		}
		if out.IndexDigest, err = v1.NewHash(root.Digest.String()); err != nil {
			return nil, err
		}
	}
	img, err := imageOf(ctx, s, root, platform)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	if out.Digest, err = img.Digest(); err != nil {
		return nil, err
	}
	if out.Manifest, err = img.RawManifest(); err != nil {
		return nil, err
	}
	if out.Config, err = img.RawConfigFile(); err != nil {
		return nil, err
	}
	// Layers are not read, but their sizes are shown: they must be what the
	// source holds.
	m, err := img.Manifest()
	if err != nil {
		return nil, err
	}
	if err := checkStoredSizes(ctx, s, m.Layers, o.jobs); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", src, out.Digest, err)
	}
	if o.listFiles {
		if out.Layers, err = listLayers(ctx, s.target, m.Layers, o.listPrefix); err != nil {
			return nil, fmt.Errorf("%s: manifest %s: %w", src, out.Digest, err)
		}
	}
	return &out, nil
}

// Inspect reads the image src (any reference kind) as ReadImage does and
// describes it (pack.Describe): an index first, then the image picked for
// platform and its layers, with the files each layer holds when
// WithListFiles is given (else the files its title claims).
func Inspect(ctx context.Context, src string, platform v1.Platform, opts ...Option) (*pack.ImageInfo, error) {
	raw, err := ReadImage(ctx, src, platform, opts...)
	if err != nil {
		return nil, err
	}
	info, err := pack.Describe(src, raw.Digest, raw.Manifest, raw.Config)
	if err != nil {
		return info, err
	}
	for i, l := range raw.Layers {
		info.Layers[i].SetFiles(l.Files, l.Truncated)
	}
	if raw.Index == nil {
		return info, nil
	}
	info.Index, _, err = pack.ParseIndex(src, raw.IndexDigest, raw.Index, platform)
	return info, err
}

// checkStoredSizes compares what e holds of each layer with its
// descriptor's size, jobs at a time, without reading the layers.
func checkStoredSizes(ctx context.Context, e *endpoint, layers []v1.Descriptor, jobs int) error {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(jobs)
	for _, l := range layers {
		g.Go(func() error {
			d := ociOf(l)
			n, err := e.blobSize(ctx, d)
			switch {
			case err != nil:
				return fmt.Errorf("layer %s: %w", d.Digest, err)
			case n != d.Size:
				return fmt.Errorf("layer %s: %w", d.Digest, &BlobSizeError{Digest: d.Digest, Size: d.Size, Read: n})
			}
			return nil
		})
	}
	return g.Wait()
}
