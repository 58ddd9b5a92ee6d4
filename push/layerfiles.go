package push

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/modelcar/modelcar/internal/limits"
)

// LayerFiles is what one layer's tar headers name.
type LayerFiles struct {
	// Files are the names of the entries other than directories, in tar
	// order: relative to the model prefix for those under it (as pack's
	// title annotation names them), else from the image root with a
	// leading "/" (or as the tar spells a name that leaves the root).
	Files []string
	// Truncated says the listing stopped at limits.MaxListedEntries or
	// limits.MaxListedNameBytes.
	Truncated bool
}

// WithListFiles makes ReadImage read every layer of the image and list
// the files its tar headers name (RawImage.Layers); prefix is the model's
// directory in the image ("" for /models). A plain tar layer that can be
// read at any offset (in a layout or archive) is listed from its headers
// alone; any other layer is read whole, decompressed with bounded memory,
// and its digest checked.
func WithListFiles(prefix string) Option {
	return func(o *options) error {
		p, err := extractPrefix(prefix)
		o.listFiles, o.listPrefix = true, p
		return err
	}
}

// listLayers lists the files of each layer, one layer at a time.
func listLayers(ctx context.Context, f content.Fetcher, layers []v1.Descriptor, prefix string) ([]LayerFiles, error) {
	d := newLayerDecoder(1)
	defer d.close()
	out := make([]LayerFiles, len(layers))
	for i, l := range layers {
		var err error
		if out[i], err = listLayer(ctx, f, ociOf(l), prefix, d); err != nil {
			return nil, fmt.Errorf("layer %s: %w", l.Digest, err)
		}
	}
	return out, nil
}

func listLayer(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor, prefix string, d *layerDecoder) (LayerFiles, error) {
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		return LayerFiles{}, err
	}
	defer rc.Close()
	if rs, ok := rc.(io.ReadSeeker); ok {
		magic := make([]byte, len(zstdMagic))
		n, _ := io.ReadFull(rs, magic)
		if _, err := rs.Seek(0, io.SeekStart); err != nil {
			return LayerFiles{}, err
		}
		if !bytes.HasPrefix(magic[:n], gzipMagic) && !bytes.HasPrefix(magic[:n], zstdMagic) {
			// archive/tar seeks over the contents.
			return listTar(ctx, rs, prefix)
		}
	}
	want, err := v1.NewHash(desc.Digest.String())
	if err != nil {
		return LayerFiles{}, err
	}
	h, err := extractNewHash(want)
	if err != nil {
		return LayerFiles{}, err
	}
	blob, tr, err := d.open(io.TeeReader(&extractCtxReader{ctx: ctx, r: rc}, h))
	if err != nil {
		return LayerFiles{}, err
	}
	lf, err := listTar(ctx, tr, prefix)
	if err != nil || lf.Truncated {
		return lf, err
	}
	// What follows the tar (its padding, an eStargz footer, a
	// zstd:chunked manifest) counts in the digest.
	if _, err := io.CopyBuffer(io.Discard, blob, d.buf); err != nil {
		return LayerFiles{}, err
	}
	return lf, extractCheckHash("layer", h, want)
}

// listTar reads the tar headers of r to the end of the archive, or to the
// listing limits.
func listTar(ctx context.Context, r io.Reader, prefix string) (LayerFiles, error) {
	var lf LayerFiles
	tr := tar.NewReader(r)
	kept, last := 0, ""
	for {
		if err := context.Cause(ctx); err != nil {
			return lf, err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return lf, nil
		}
		if err != nil && (hdr == nil || !errors.Is(err, tar.ErrInsecurePath)) {
			if last != "" {
				return lf, fmt.Errorf("reading tar header after entry %q: %w", last, err)
			}
			return lf, fmt.Errorf("reading tar header: %w", err)
		}
		last = hdr.Name
		if hdr.Typeflag == tar.TypeDir || hdr.Typeflag == tar.TypeXGlobalHeader {
			continue
		}
		name := listedName(hdr.Name, prefix)
		if name == "" {
			continue
		}
		if len(lf.Files) == limits.MaxListedEntries || kept+len(name) > limits.MaxListedNameBytes {
			lf.Truncated = true
			return lf, nil
		}
		lf.Files = append(lf.Files, name)
		kept += len(name)
	}
}

// listedName is how a listing names the tar entry name: relative to
// prefix under it, else from the image root; "" for eStargz's metadata.
func listedName(name, prefix string) string {
	clean := path.Clean(name)
	switch {
	case extractSkipNames[clean]:
		return ""
	case prefix == "":
		return clean
	case strings.HasPrefix(clean, prefix+"/"):
		return clean[len(prefix)+1:]
	case !path.IsAbs(clean) && clean != ".." && !strings.HasPrefix(clean, "../"):
		return "/" + clean
	}
	return name
}
