package push

import (
	"context"
	"encoding/json"
	"fmt"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/modelcar/modelcar/internal/limits"
)

// fetchDocument reads a manifest, index or config (what says which) whole:
// refused over limits.MaxManifestBytes before anything is read, and
// verified against desc's size and digest.
func fetchDocument(ctx context.Context, f content.Fetcher, what string, desc ocispec.Descriptor) ([]byte, error) {
	if desc.Size > limits.MaxManifestBytes {
		return nil, &limits.TooLargeError{What: what + " " + desc.Digest.String(), Size: desc.Size, Limit: limits.MaxManifestBytes}
	}
	b, err := content.FetchAll(ctx, f, desc)
	if err != nil {
		return nil, fmt.Errorf("fetching %s %s: %w", what, desc.Digest, err)
	}
	return b, nil
}

// children returns what the manifest or index desc refers to (as
// content.Successors does: an index's manifests; a manifest's subject,
// config and layers; nothing for other media types), reading desc with
// fetchDocument. A manifest's config must be within the same limit, since
// every reader reads it whole.
func children(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	if !isManifest(desc.MediaType) {
		return nil, nil
	}
	what := docKind(desc.MediaType)
	b, err := fetchDocument(ctx, f, what, desc)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Manifests []ocispec.Descriptor `json:"manifests"`
		Subject   *ocispec.Descriptor  `json:"subject"`
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s %s: %w", what, desc.Digest, err)
	}
	check := func(role string, ds ...ocispec.Descriptor) error {
		for _, d := range ds {
			if err := checkDescriptor(role, d); err != nil {
				return fmt.Errorf("%s %s: %w", what, desc.Digest, err)
			}
		}
		return nil
	}
	if what == "index" {
		if err := check("manifest", doc.Manifests...); err != nil {
			return nil, err
		}
		return doc.Manifests, nil
	}
	var out []ocispec.Descriptor
	if doc.Subject != nil {
		if err := check("subject", *doc.Subject); err != nil {
			return nil, err
		}
		out = append(out, *doc.Subject)
	}
	if doc.Config != nil {
		if err := check("config", *doc.Config); err != nil {
			return nil, err
		}
		if doc.Config.Size > limits.MaxManifestBytes {
			return nil, fmt.Errorf("manifest %s: %w", desc.Digest,
				&limits.TooLargeError{What: "config " + doc.Config.Digest.String(), Size: doc.Config.Size, Limit: limits.MaxManifestBytes})
		}
		out = append(out, *doc.Config)
	}
	if err := check("layer", doc.Layers...); err != nil {
		return nil, err
	}
	return append(out, doc.Layers...), nil
}

// docKind names a manifest or index in errors.
func docKind(mt string) string {
	if isIndex(mt) {
		return "index"
	}
	return "manifest"
}

func isIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == "application/vnd.docker.distribution.manifest.list.v2+json"
}
