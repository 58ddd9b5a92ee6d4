package push

import (
	"context"
	"encoding/json"
	"fmt"
	"mime"
	"strings"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/modelcar/modelcar/internal/limits"
)

// An image is a graph: manifests and indexes (read whole, identified by
// their content) refer to blobs (configs and layers, streamed) and to other
// manifests. Where a descriptor sits says what it must be: the root, an
// index's entries and a manifest's subject are manifests or indexes; a
// manifest's config and layers are blobs. What a manifest's descriptor says
// of its media type is not trusted to tell: a missing, unknown or
// parameterised media type, or a registry answering application/octet-stream,
// made such manifests pass for leaves, so that verify skipped their layers
// and mirror tagged them without copying their children.

// Media types of the manifests and indexes modelcar reads.
const (
	mediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	mediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	mediaTypeArtifactManifest   = "application/vnd.oci.artifact.manifest.v1+json"
)

func isManifest(mt string) bool {
	switch mt {
	case ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, mediaTypeDockerManifest, mediaTypeDockerManifestList,
		mediaTypeArtifactManifest:
		return true
	}
	return false
}

func isIndex(mt string) bool {
	return mt == ocispec.MediaTypeImageIndex || mt == mediaTypeDockerManifestList
}

// docKind names a manifest or index in errors.
func docKind(mt string) string {
	if isIndex(baseType(mt)) {
		return "index"
	}
	return "manifest"
}

// baseType is mt without parameters ("; charset=utf-8").
func baseType(mt string) string {
	if t, _, err := mime.ParseMediaType(mt); err == nil {
		return t
	}
	t, _, _ := strings.Cut(mt, ";")
	return strings.ToLower(strings.TrimSpace(t))
}

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

// identify tells what the manifest or index b (the content of desc) is:
// its mediaType field, or without one its schema (manifests: an OCI
// index; config and layers: an OCI image manifest). Anything else, a
// document that is both, or one whose descriptor names another kind of
// manifest than the content, is refused; a descriptor whose media type is
// missing, unknown or has parameters defers to the content.
func identify(desc ocispec.Descriptor, b []byte) (string, error) {
	var doc struct {
		SchemaVersion *int            `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
		Config        json.RawMessage `json:"config"`
		Layers        json.RawMessage `json:"layers"`
		Blobs         json.RawMessage `json:"blobs"`
	}
	what := docKind(desc.MediaType) + " " + desc.Digest.String()
	if err := json.Unmarshal(b, &doc); err != nil {
		return "", fmt.Errorf("%s: not an image manifest or index: %w", what, err)
	}
	index, image := doc.Manifests != nil, doc.Config != nil || doc.Layers != nil
	mt := doc.MediaType
	switch {
	case mt == mediaTypeArtifactManifest:
		image = image || doc.Blobs != nil
	case doc.SchemaVersion == nil || *doc.SchemaVersion != 2:
		return "", fmt.Errorf("%s: schemaVersion is not 2: not an image manifest or index modelcar reads", what)
	case mt == "" && index && !image:
		mt = ocispec.MediaTypeImageIndex
	case mt == "" && image && !index:
		mt = ocispec.MediaTypeImageManifest
	case mt == "":
		return "", fmt.Errorf("%s: its content has no mediaType and is not plainly an image manifest (config, layers) or an index (manifests)", what)
	case !isManifest(mt):
		return "", fmt.Errorf("%s: its content's mediaType %q is not an image manifest or index", what, mt)
	}
	if isIndex(mt) && image || !isIndex(mt) && index {
		return "", fmt.Errorf("%s: its content says %s but holds both manifests and config or layers", what, mt)
	}
	if d := baseType(desc.MediaType); isManifest(d) && d != mt {
		return "", fmt.Errorf("%s: its descriptor says %s, its content is %s", what, d, mt)
	}
	return mt, nil
}

// node is a manifest or index read whole and identified by its content.
type node struct {
	// desc is the node's descriptor, its media type the content's.
	desc ocispec.Descriptor
	raw  []byte
	// manifests are an index's entries, subject a manifest's subject:
	// manifests in turn. config and blobs (a manifest's layers, an
	// artifact manifest's blobs) are blobs.
	manifests []ocispec.Descriptor
	subject   *ocispec.Descriptor
	config    *ocispec.Descriptor
	blobs     []ocispec.Descriptor
}

// readNode reads the manifest or index desc with fetchDocument from f,
// identifies it (see identify) and checks the descriptors it holds (see
// checkDescriptor; a config over limits.MaxManifestBytes is refused, since
// every reader reads it whole).
func readNode(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor) (*node, error) {
	b, err := fetchDocument(ctx, f, docKind(desc.MediaType), desc)
	if err != nil {
		return nil, err
	}
	mt, err := identify(desc, b)
	if err != nil {
		return nil, err
	}
	n := &node{desc: desc, raw: b}
	n.desc.MediaType = mt
	var doc struct {
		Manifests []ocispec.Descriptor `json:"manifests"`
		Subject   *ocispec.Descriptor  `json:"subject"`
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
		Blobs     []ocispec.Descriptor `json:"blobs"`
	}
	what := docKind(mt) + " " + desc.Digest.String()
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	n.manifests, n.subject, n.config, n.blobs = doc.Manifests, doc.Subject, doc.Config, append(doc.Layers, doc.Blobs...)
	check := func(role string, ds ...ocispec.Descriptor) error {
		for _, d := range ds {
			if err := checkDescriptor(role, d); err != nil {
				return fmt.Errorf("%s: %w", what, err)
			}
		}
		return nil
	}
	if err := check("manifest", n.manifests...); err != nil {
		return nil, err
	}
	if err := check("layer", n.blobs...); err != nil {
		return nil, err
	}
	if n.subject != nil {
		if err := check("subject", *n.subject); err != nil {
			return nil, err
		}
	}
	if n.config != nil {
		if err := check("config", *n.config); err != nil {
			return nil, err
		}
		if n.config.Size > limits.MaxManifestBytes {
			return nil, fmt.Errorf("%s: %w", what,
				&limits.TooLargeError{What: "config " + n.config.Digest.String(), Size: n.config.Size, Limit: limits.MaxManifestBytes})
		}
	}
	if mt == ocispec.MediaTypeImageManifest || mt == mediaTypeDockerManifest {
		if n.config == nil {
			return nil, fmt.Errorf("%s: an image manifest without a config", what)
		}
	}
	return n, nil
}

// manifestChildren are the manifests n refers to (an index's entries, a
// manifest's subject).
func (n *node) manifestChildren() []ocispec.Descriptor {
	out := append([]ocispec.Descriptor(nil), n.manifests...)
	if n.subject != nil {
		out = append(out, *n.subject)
	}
	return out
}

// blobChildren are the blobs n refers to (its config, then its layers).
func (n *node) blobChildren() []ocispec.Descriptor {
	var out []ocispec.Descriptor
	if n.config != nil {
		out = append(out, *n.config)
	}
	return append(out, n.blobs...)
}

// identified returns desc with its media type read from the content, when
// the descriptor's own is not plainly a manifest's: missing, unknown, with
// parameters. f must fetch desc as a manifest whatever its media type (see
// endpoint.manifests).
func identified(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor) (ocispec.Descriptor, error) {
	if isManifest(desc.MediaType) {
		return desc, nil
	}
	b, err := fetchDocument(ctx, f, docKind(desc.MediaType), desc)
	if err != nil {
		return desc, err
	}
	mt, err := identify(desc, b)
	if err != nil {
		return desc, err
	}
	desc.MediaType = mt
	return desc, nil
}
