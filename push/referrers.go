package push

import (
	"context"
	"encoding/json"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/modelcar/modelcar/internal/limits"
	"github.com/modelcar/modelcar/internal/ocilayout"
)

// localReferrers lists the manifests in a layout's or archive's index.json
// whose subject is desc: that is where OCI layouts keep referrers.
func localReferrers(r ocilayout.Reader, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error {
	idx, err := r.Index()
	if err != nil {
		return err
	}
	var out []ocispec.Descriptor
	for _, d := range idx.Manifests {
		if !d.MediaType.IsImage() && d.MediaType != "application/vnd.oci.artifact.manifest.v1+json" {
			continue
		}
		b, err := r.ReadBlob(d.Digest, limits.MaxManifestBytes)
		if err != nil {
			return err
		}
		var m struct {
			ArtifactType string              `json:"artifactType"`
			Config       ocispec.Descriptor  `json:"config"`
			Subject      *ocispec.Descriptor `json:"subject"`
			Annotations  map[string]string   `json:"annotations"`
		}
		if json.Unmarshal(b, &m) != nil || m.Subject == nil || m.Subject.Digest != desc.Digest {
			continue
		}
		at := m.ArtifactType
		if at == "" {
			at = m.Config.MediaType
		}
		if artifactType != "" && at != artifactType {
			continue
		}
		out = append(out, ocispec.Descriptor{MediaType: string(d.MediaType), Digest: desc.Digest.Algorithm().FromBytes(b),
			Size: d.Size, ArtifactType: at, Annotations: m.Annotations})
	}
	if len(out) == 0 {
		return nil
	}
	return fn(out)
}

func (t *layoutTarget) Referrers(ctx context.Context, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error {
	return localReferrers(t.l, desc, artifactType, fn)
}

func (t *archiveTarget) Referrers(ctx context.Context, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error {
	return localReferrers(t.a, desc, artifactType, fn)
}
