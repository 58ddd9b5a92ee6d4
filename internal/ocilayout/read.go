package ocilayout

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/modelcar/modelcar/internal/limits"
)

// Reader is a layout or an archive opened for reading.
type Reader interface {
	// Index reads index.json.
	Index() (*v1.IndexManifest, error)
	// ReadBlob reads a small blob, verifying its digest; max bounds its size.
	ReadBlob(h v1.Hash, max int64) ([]byte, error)
	// OpenBlob opens a blob for streaming; the caller verifies the digest.
	OpenBlob(h v1.Hash) (io.ReadCloser, error)
}

// OpenBlob opens a blob of the archive.
func (a *Archive) OpenBlob(h v1.Hash) (io.ReadCloser, error) {
	s, err := a.Blob(h)
	if err != nil {
		return nil, err
	}
	return io.NopCloser(s), nil
}

// ReadBlob reads a small blob of the archive, verifying its digest.
func (a *Archive) ReadBlob(h v1.Hash, max int64) ([]byte, error) {
	s, err := a.Blob(h)
	if err != nil {
		return nil, err
	}
	if s.Size() > max {
		return nil, fmt.Errorf("archive %s: blob %s is larger than %d bytes", a.File, h, max)
	}
	b, err := io.ReadAll(s)
	if err != nil {
		return nil, fmt.Errorf("archive %s: blob %s: %w", a.File, h, err)
	}
	if got := sha256.Sum256(b); h.Algorithm != "sha256" || hex.EncodeToString(got[:]) != h.Hex {
		return nil, fmt.Errorf("archive %s: blob %s does not match its digest", a.File, h)
	}
	return b, nil
}

// NotFoundError is a tag or digest that a layout or archive does not
// hold (or, with neither, no single image it holds).
type NotFoundError struct{ msg string }

func (e *NotFoundError) Error() string { return e.msg }

// Resolve picks the index.json entry named by tag or digest. With neither,
// a store holding exactly one image, or exactly one tagged image, yields it.
// A digest not in index.json is also looked up in the image indexes it
// lists (and the indexes those list, down to limits.MaxIndexDepth), so a platform
// image inside a multi-platform index can be named by its digest.
func Resolve(r Reader, where, tag string, dgst *v1.Hash) (v1.Descriptor, error) {
	idx, err := r.Index()
	if err != nil {
		return v1.Descriptor{}, err
	}
	switch {
	case dgst != nil:
		for _, d := range idx.Manifests {
			if d.Digest == *dgst {
				return d, nil
			}
		}
		if d, ok := findInIndexes(r, idx.Manifests, *dgst, 1, map[v1.Hash]bool{}); ok {
			return d, nil
		}
		return v1.Descriptor{}, &NotFoundError{fmt.Sprintf("%s: no image with digest %s", where, dgst)}
	case tag != "":
		for _, d := range idx.Manifests {
			if d.Annotations[AnnotationRefName] == tag {
				return d, nil
			}
		}
		return v1.Descriptor{}, &NotFoundError{fmt.Sprintf("%s: no image tagged %q (have: %s)", where, tag, tagList(idx))}
	}
	if len(idx.Manifests) == 1 {
		return idx.Manifests[0], nil
	}
	// Untagged entries beside one tagged image are usually its referrers
	// (signatures, SBOMs): the tagged image is the one meant.
	var tagged []v1.Descriptor
	for _, d := range idx.Manifests {
		if _, ok := d.Annotations[AnnotationRefName]; ok {
			tagged = append(tagged, d)
		}
	}
	if len(tagged) == 1 {
		return tagged[0], nil
	}
	if len(idx.Manifests) == 0 {
		return v1.Descriptor{}, &NotFoundError{fmt.Sprintf("%s: holds no image", where)}
	}
	return v1.Descriptor{}, &NotFoundError{fmt.Sprintf("%s: holds %d images; name one with :TAG (have: %s)", where, len(idx.Manifests), tagList(idx))}
}

// findInIndexes looks for want among the children of the image indexes in
// descs, breadth first. Indexes that cannot be read (a blob left out of a
// partial copy) are skipped.
func findInIndexes(r Reader, descs []v1.Descriptor, want v1.Hash, depth int, seen map[v1.Hash]bool) (v1.Descriptor, bool) {
	if depth > limits.MaxIndexDepth {
		return v1.Descriptor{}, false
	}
	var next []v1.Descriptor
	for _, d := range descs {
		if !d.MediaType.IsIndex() || seen[d.Digest] {
			continue
		}
		seen[d.Digest] = true
		b, err := r.ReadBlob(d.Digest, limits.MaxManifestBytes)
		if err != nil {
			continue
		}
		var child v1.IndexManifest
		if json.Unmarshal(b, &child) != nil {
			continue
		}
		for _, c := range child.Manifests {
			if c.Digest == want {
				if c.MediaType == "" {
					c.MediaType = sniffMediaType(r, c.Digest)
				}
				return c, true
			}
		}
		next = append(next, child.Manifests...)
	}
	if len(next) == 0 {
		return v1.Descriptor{}, false
	}
	return findInIndexes(r, next, want, depth+1, seen)
}

// sniffMediaType reads the mediaType field of a manifest or index blob, for
// a descriptor that lacks one.
func sniffMediaType(r Reader, h v1.Hash) types.MediaType {
	b, err := r.ReadBlob(h, limits.MaxManifestBytes)
	if err != nil {
		return ""
	}
	var m struct {
		MediaType types.MediaType `json:"mediaType"`
		Manifests json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(b, &m) != nil {
		return ""
	}
	if m.MediaType == "" && m.Manifests != nil {
		return types.OCIImageIndex
	}
	if m.MediaType == "" {
		return types.OCIManifestSchema1
	}
	return m.MediaType
}

func tagList(idx *v1.IndexManifest) string {
	var tags []string
	for _, d := range idx.Manifests {
		if n, ok := d.Annotations[AnnotationRefName]; ok {
			tags = append(tags, n)
		} else {
			tags = append(tags, "@"+d.Digest.String())
		}
	}
	sort.Strings(tags)
	if len(tags) == 0 {
		return "none"
	}
	return strings.Join(tags, ", ")
}
