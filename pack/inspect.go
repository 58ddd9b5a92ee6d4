package pack

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// ImageInfo is what Inspect reports about a modelcar.
type ImageInfo struct {
	Reference string `json:"reference"`
	// Index is set when the reference names an image index (a
	// multi-platform modelcar): its digest is the one to pin. The fields
	// below then describe the image picked from it for the requested
	// platform.
	Index       *IndexInfo        `json:"index,omitempty"`
	Digest      v1.Hash           `json:"digest"`
	MediaType   types.MediaType   `json:"mediaType"`
	Size        int64             `json:"size"`
	Platform    string            `json:"platform"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Layers      []LayerInfo       `json:"layers"`
	// TotalSize is the sum of the layer sizes.
	TotalSize int64 `json:"totalSize"`
}

// IndexInfo describes an image index and the image of each platform.
type IndexInfo struct {
	Digest      v1.Hash           `json:"digest"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Images      []PlatformResult  `json:"images"`
}

// ParseIndex reads an image index and returns its description and the
// descriptor of the image for platform.
func ParseIndex(reference string, dg v1.Hash, raw []byte, platform v1.Platform) (*IndexInfo, v1.Descriptor, error) {
	var idx v1.IndexManifest
	if err := json.Unmarshal(raw, &idx); err != nil {
		return nil, v1.Descriptor{}, fmt.Errorf("%s: index %s: %w", reference, dg, err)
	}
	info := &IndexInfo{Digest: dg, Annotations: idx.Annotations}
	var picked *v1.Descriptor
	for i, d := range idx.Manifests {
		pl := "unknown"
		if d.Platform != nil {
			pl = d.Platform.String()
			if picked == nil && PlatformMatches(*d.Platform, platform) && !d.MediaType.IsIndex() {
				picked = &idx.Manifests[i]
			}
		}
		info.Images = append(info.Images, PlatformResult{Platform: pl, Digest: d.Digest, Size: d.Size})
	}
	if picked == nil {
		var have []string
		for _, im := range info.Images {
			have = append(have, im.Platform)
		}
		return info, v1.Descriptor{}, fmt.Errorf("%s: index %s has no image for platform %s (have %s); pick one with --platform",
			reference, dg, platform.String(), strings.Join(have, ", "))
	}
	return info, *picked, nil
}

// LayerInfo describes one layer of an inspected image.
type LayerInfo struct {
	Layer
	// Files are the layer's files: read from its tar headers (see
	// SetFiles), or, with FilesClaimed, only what its title annotation
	// says, which nothing checked against the layer.
	Files        []string `json:"files,omitempty"`
	FilesClaimed bool     `json:"filesClaimed,omitempty"`
	// FilesTruncated says the listing stopped at a limit (see
	// internal/limits) before the end of the layer.
	FilesTruncated bool `json:"filesTruncated,omitempty"`
	// ClaimedFiles is the title annotation's list when the files read
	// from the layer are not what it claims.
	ClaimedFiles []string          `json:"claimedFiles,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
}

// SetFiles replaces the claimed file list with files, read from the
// layer's tar headers (truncated when the listing stopped at a limit), and
// keeps the claim in ClaimedFiles when it names other files (in any
// order: eStargz puts the prefetched files first).
func (l *LayerInfo) SetFiles(files []string, truncated bool) {
	if l.FilesClaimed && !truncated && !slices.Equal(slices.Sorted(slices.Values(l.Files)), slices.Sorted(slices.Values(files))) {
		l.ClaimedFiles = l.Files
	}
	l.Files, l.FilesClaimed, l.FilesTruncated = files, false, truncated
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
		li := LayerInfo{Layer: Layer{Digest: l.Digest, Size: l.Size, MediaType: l.MediaType,
			Format: FormatOf(l.MediaType, l.Annotations)}, Annotations: l.Annotations}
		if i < len(cfg.RootFS.DiffIDs) {
			li.DiffID = cfg.RootFS.DiffIDs[i]
		}
		if li.Files = TitleFiles(l.Annotations[AnnotationTitle]); li.Files != nil {
			li.FilesClaimed = true
		}
		info.Layers = append(info.Layers, li)
		info.TotalSize += l.Size
	}
	if len(cfg.RootFS.DiffIDs) != len(m.Layers) {
		return info, fmt.Errorf("%s: config lists %d diffIDs for %d layers", reference, len(cfg.RootFS.DiffIDs), len(m.Layers))
	}
	return info, nil
}
