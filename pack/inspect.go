package pack

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/modelcar/modelcar/internal/ocilayout"
	"github.com/modelcar/modelcar/internal/ref"
)

// maxManifestSize bounds manifests and configs read into memory.
const maxManifestSize = 8 << 20

// ImageInfo is what Inspect reports about a modelcar.
type ImageInfo struct {
	Reference   string            `json:"reference"`
	Digest      v1.Hash           `json:"digest"`
	MediaType   types.MediaType   `json:"mediaType"`
	Size        int64             `json:"size"`
	Platform    string            `json:"platform"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Layers      []LayerInfo       `json:"layers"`
	// TotalSize is the sum of the layer sizes.
	TotalSize int64 `json:"totalSize"`
}

// LayerInfo describes one layer of an inspected image.
type LayerInfo struct {
	Digest      v1.Hash           `json:"digest"`
	DiffID      v1.Hash           `json:"diffID"`
	Size        int64             `json:"size"`
	MediaType   types.MediaType   `json:"mediaType"`
	Format      Format            `json:"format"`
	Files       []string          `json:"files,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Inspect reads the manifest and config of an image in an OCI layout or
// archive without reading its layers.
func Inspect(ctx context.Context, s string) (*ImageInfo, error) {
	r, err := ref.Parse(s)
	if err != nil {
		return nil, err
	}
	var rd ocilayout.Reader
	switch r.Kind {
	case ref.Layout:
		l, err := ocilayout.Open(r.Path)
		if err != nil {
			return nil, err
		}
		rd = l
	case ref.Archive:
		a, err := ocilayout.OpenArchive(r.Path)
		if err != nil {
			return nil, err
		}
		defer a.Close()
		rd = a
	default:
		return nil, fmt.Errorf("inspecting %s: pack reads only oci:PATH and oci-archive:FILE; registry images are read by push.ReadImage", s)
	}
	desc, err := ocilayout.Resolve(rd, s, r.Tag, r.Digest)
	if err != nil {
		return nil, err
	}
	if desc.MediaType.IsIndex() {
		return nil, fmt.Errorf("%s is an image index; inspect one of its images by @DIGEST", s)
	}
	mb, err := rd.ReadBlob(desc.Digest, maxManifestSize)
	if err != nil {
		return nil, err
	}
	var m v1.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", s, desc.Digest, err)
	}
	cb, err := rd.ReadBlob(m.Config.Digest, maxManifestSize)
	if err != nil {
		return nil, err
	}
	return Describe(s, desc.Digest, mb, cb)
}

// Describe builds the inspection of an image from its raw manifest and
// config (wherever they were read from).
func Describe(reference string, dg v1.Hash, manifest, config []byte) (*ImageInfo, error) {
	var m v1.Manifest
	if err := json.Unmarshal(manifest, &m); err != nil {
		return nil, fmt.Errorf("%s: manifest %s: %w", reference, dg, err)
	}
	var cfg v1.ConfigFile
	if err := json.Unmarshal(config, &cfg); err != nil {
		return nil, fmt.Errorf("%s: config %s: %w", reference, m.Config.Digest, err)
	}
	info := &ImageInfo{Reference: reference, Digest: dg, MediaType: m.MediaType, Size: int64(len(manifest)),
		Platform: "unknown", Annotations: m.Annotations}
	if p := cfg.Platform(); p != nil { // a config without os and architecture has none
		info.Platform = p.String()
	}
	for i, l := range m.Layers {
		li := LayerInfo{Digest: l.Digest, Size: l.Size, MediaType: l.MediaType,
			Format: FormatOf(l.MediaType, l.Annotations), Annotations: l.Annotations}
		if i < len(cfg.RootFS.DiffIDs) {
			li.DiffID = cfg.RootFS.DiffIDs[i]
		}
		if t := l.Annotations[AnnotationTitle]; t != "" {
			li.Files = strings.Split(t, ",")
		}
		info.Layers = append(info.Layers, li)
		info.TotalSize += l.Size
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return info, fmt.Errorf("%s: config lists %d diffIDs for %d layers", reference, len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	return info, nil
}
