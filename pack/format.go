package pack

import (
	"fmt"
	"strings"

	"github.com/containerd/stargz-snapshotter/estargz"
	"github.com/containerd/stargz-snapshotter/estargz/zstdchunked"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Format is the encoding of the model layers.
type Format string

const (
	// FormatTar stores plain tar layers: no decompression on the node and
	// the fastest pack; the default.
	FormatTar Format = "tar"
	// FormatGzip stores tar+gzip layers (compressed in parallel blocks).
	FormatGzip Format = "gzip"
	// FormatZstd stores tar+zstd layers.
	FormatZstd Format = "zstd"
	// FormatEstargz stores eStargz layers for lazy pulling through
	// stargz-snapshotter, with the small files prefetched.
	FormatEstargz Format = "estargz"
	// FormatZstdChunked stores zstd:chunked layers (lazy pulling in
	// CRI-O/containers-storage and stargz-snapshotter).
	FormatZstdChunked Format = "zstd-chunked"
)

// Formats lists every supported format.
var Formats = []Format{FormatTar, FormatGzip, FormatZstd, FormatEstargz, FormatZstdChunked}

// ParseFormat parses a --format value.
func ParseFormat(s string) (Format, error) {
	for _, f := range Formats {
		if string(f) == s {
			return f, nil
		}
	}
	if s == "zstd:chunked" {
		return FormatZstdChunked, nil
	}
	names := make([]string, len(Formats))
	for i, f := range Formats {
		names[i] = string(f)
	}
	return "", fmt.Errorf("unknown format %q (want one of %s)", s, strings.Join(names, ", "))
}

// MediaType is the OCI layer media type of the format.
func (f Format) MediaType() types.MediaType {
	switch f {
	case FormatGzip, FormatEstargz:
		return types.OCILayer
	case FormatZstd, FormatZstdChunked:
		return types.OCILayerZStd
	default:
		return types.OCIUncompressedLayer
	}
}

// GzipHuffmanOnly is the gzip "level" that entropy-codes without searching
// for repeats. bf16 weights have almost no repeats, so it reaches gzip -1's
// ratio (about 0.78) several times faster, while gzip's fast LZ levels
// store weights uncompressed.
const GzipHuffmanOnly = -2

// defaultLevel is the compression level of a layer when none is given:
// text (configs, tokenizer) gets a normal level, weights the level that
// compresses them best per CPU second: Huffman-only for gzip formats, and
// zstd's default with entropy-coded literals.
func (f Format) defaultLevel(text bool) int {
	switch f {
	case FormatGzip, FormatEstargz:
		if text {
			return 6
		}
		return GzipHuffmanOnly
	case FormatZstd, FormatZstdChunked:
		return 3
	default:
		return 0
	}
}

// checkLevel validates a compression level for f.
func (f Format) checkLevel(level int) error {
	switch f {
	case FormatTar:
		if level != 0 {
			return fmt.Errorf("--compression-level %d: format tar is not compressed", level)
		}
	case FormatGzip, FormatEstargz:
		if level != GzipHuffmanOnly && (level < 1 || level > 9) {
			return fmt.Errorf("--compression-level %d: gzip levels are 1 to 9, or -2 for Huffman-only", level)
		}
	case FormatZstd, FormatZstdChunked:
		if level < 1 || level > 22 {
			return fmt.Errorf("--compression-level %d: zstd levels are 1 to 22", level)
		}
	}
	return nil
}

// Layer annotations read by stargz-snapshotter and containers-storage.
const (
	AnnotationTOCDigest        = estargz.TOCJSONDigestAnnotation
	AnnotationUncompressedSize = estargz.StoreUncompressedSizeAnnotation
	AnnotationZstdChunkedSum   = zstdchunked.ManifestChecksumAnnotation
	AnnotationZstdChunkedPos   = zstdchunked.ManifestPositionAnnotation
	AnnotationTitle            = "org.opencontainers.image.title"
)

// FormatOf tells a layer's format from its media type and annotations.
func FormatOf(mt types.MediaType, annotations map[string]string) Format {
	_, toc := annotations[AnnotationTOCDigest]
	_, chunked := annotations[AnnotationZstdChunkedSum]
	switch mt {
	case types.OCIUncompressedLayer, types.DockerUncompressedLayer:
		return FormatTar
	case types.OCILayer, types.DockerLayer:
		if toc {
			return FormatEstargz
		}
		return FormatGzip
	case types.OCILayerZStd:
		if chunked || toc {
			return FormatZstdChunked
		}
		return FormatZstd
	}
	return Format(mt)
}

// lazy reports whether the format can be pulled lazily (it has a TOC
// stargz-snapshotter reads), so prioritized files and prefetch apply.
func (f Format) lazy() bool {
	return f == FormatEstargz || f == FormatZstdChunked
}
