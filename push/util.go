package push

import (
	"bytes"
	"encoding/json"
	"io"

	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func typesOf(mt string) types.MediaType { return types.MediaType(mt) }

// sniffMediaType reads the mediaType field of a manifest or index.
func sniffMediaType(b []byte) string {
	var m struct {
		MediaType string `json:"mediaType"`
		Manifests []any  `json:"manifests"`
	}
	if json.Unmarshal(b, &m) == nil {
		if m.MediaType != "" {
			return m.MediaType
		}
		if m.Manifests != nil {
			return ocispec.MediaTypeImageIndex
		}
	}
	return ocispec.MediaTypeImageManifest
}

func bytesReader(b []byte) io.Reader { return bytes.NewReader(b) }
