package push

import (
	"context"
	"fmt"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/modelcar/modelcar/internal/ref"
)

// PullStamp is the name of the state file Pull kept in DIR before it moved
// beside DIR (see PullStatePath), and still keeps there where DIR's parent
// cannot hold it: its resume state while it runs, then the record that DIR
// holds a complete pull of that manifest.
const PullStamp = extractStateName

// PullOptions selects what Pull extracts.
type PullOptions struct {
	// Prefix is the model directory inside the image (default /models).
	Prefix string
	// Platform picks an image from an index (default linux/amd64, when
	// zero). A platform with an OS but no architecture, or the reverse, is
	// an error. arm64 and arm64/v8 are the same platform.
	Platform v1.Platform
	// Progress receives bytes read.
	Progress func(n int64)
	// Total, called once before any layer is read, receives the bytes
	// Progress reports in all (see ExtractOptions.Total).
	Total func(n int64)
}

// PullResult describes a finished Pull.
type PullResult struct {
	// Reference pins what the source reference resolved to:
	// REGISTRY/REPO@sha256:..., oci:PATH@sha256:... or
	// oci-archive:FILE@sha256:...; for a multi-platform image, the index.
	Reference string `json:"reference"`
	// Digest, MediaType and Size are those of that root (the index's).
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
	// Manifest is the digest of the image extracted: the platform's image
	// picked from an index, else Digest.
	Manifest string `json:"manifest"`
	// Directory is where the model files are.
	Directory string `json:"directory"`
}

// Pull extracts the model files of the image src (registry, oci:PATH or
// oci-archive:FILE) into dir: layers downloaded in parallel, streamed into
// place, every blob digest and diffID verified, nothing written outside dir.
// Re-running an interrupted pull skips the layers already in place, and
// pulling an image DIR already holds returns at once (see PullStatePath).
// It returns the pinned reference of what src resolved to (an index's,
// for a multi-platform image) and the digest of the image extracted.
func Pull(ctx context.Context, src, dir string, po PullOptions, opts ...Option) (*PullResult, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	if err := checkPlatform(po.Platform); err != nil {
		return nil, err
	}
	if po.Platform.OS == "" {
		po.Platform = v1.Platform{OS: "linux", Architecture: "amd64"}
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
	img, err := imageOf(ctx, s, root, po.Platform)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	if err := Extract(ctx, img, dir, ExtractOptions{Prefix: po.Prefix, Jobs: o.jobs, Progress: po.Progress, Total: po.Total}); err != nil {
		return nil, fmt.Errorf("pulling %s: %w", src, err) // Extract's errors name dir where it matters
	}
	d, err := img.Digest()
	if err != nil {
		return nil, err
	}
	ref, _ := pinned(sr, root.Digest.String(), "")
	return &PullResult{Reference: ref, Digest: root.Digest.String(), MediaType: root.MediaType, Size: root.Size,
		Manifest: d.String(), Directory: dir}, nil
}
