package push

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/content"

	"github.com/modelcar/modelcar/internal/limits"
	"github.com/modelcar/modelcar/internal/ref"
)

// VerifyResult says what Verify checked.
type VerifyResult struct {
	// Reference pins what was verified: REGISTRY/REPO@sha256:...,
	// oci:PATH@sha256:... or oci-archive:FILE@sha256:...
	Reference string `json:"reference"`
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
	// Blobs and Bytes count every manifest and blob checked.
	Blobs int   `json:"blobs"`
	Bytes int64 `json:"bytes"`
	// Files compared with the --against directory.
	Files int `json:"files,omitempty"`
}

// Verify re-reads every manifest and blob of the image ref and checks each
// against its descriptor's digest and size. With against set, it also
// compares the model files in the layers (under prefix) with that
// directory, file by file.
func Verify(ctx context.Context, src, against, prefix string, opts ...Option) (*VerifyResult, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
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
	reference, _ := pinned(sr, root.Digest.String(), "")
	res := &VerifyResult{Reference: reference, Digest: root.Digest.String(), MediaType: root.MediaType, Size: root.Size}
	var (
		mu   sync.Mutex
		seen = map[string]bool{}
		wg   sync.WaitGroup
		errs []error
		sem  = make(chan struct{}, o.jobs)
	)
	fail := func(err error) {
		mu.Lock()
		errs = append(errs, err)
		mu.Unlock()
	}
	// walk verifies desc: a manifest or index (where one must be: the
	// root, an index's entries, a subject) identified by its content and
	// walked, whatever its descriptor's media type says; a blob re-hashed.
	var walk func(desc ocispec.Descriptor, manifest bool, depth int)
	walk = func(desc ocispec.Descriptor, manifest bool, depth int) {
		mu.Lock()
		if seen[desc.Digest.String()] {
			mu.Unlock()
			return
		}
		seen[desc.Digest.String()] = true
		mu.Unlock()
		if !manifest {
			wg.Go(func() {
				sem <- struct{}{}
				defer func() { <-sem }()
				if err := verifyBlob(ctx, s.target, desc); err != nil {
					fail(err)
					return
				}
				mu.Lock()
				defer mu.Unlock()
				res.Blobs++
				res.Bytes += desc.Size
			})
			return
		}
		// readNode fetches and verifies it, within the limit.
		n, err := readNode(ctx, s.manifests(), desc)
		if err != nil {
			fail(err) // it names the manifest
			return
		}
		if isIndex(n.desc.MediaType) && depth >= limits.MaxIndexDepth {
			fail(fmt.Errorf("index %s: indexes nested more than %d deep", desc.Digest, limits.MaxIndexDepth))
			return
		}
		mu.Lock()
		res.Blobs++
		res.Bytes += desc.Size
		mu.Unlock()
		for _, c := range n.manifestChildren() {
			walk(c, true, depth+1)
		}
		for _, c := range n.blobChildren() {
			walk(c, false, depth+1)
		}
	}
	walk(root, true, 0)
	wg.Wait()
	if len(errs) > 0 {
		sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
		return nil, fmt.Errorf("%s: %d of %d blobs failed verification: %w", src, len(errs), len(seen), errs[0])
	}
	if against != "" {
		n, err := compareFiles(ctx, s, root, against, prefix)
		if err != nil {
			return nil, fmt.Errorf("%s against %s: %w", src, against, err)
		}
		res.Files = n
	}
	return res, nil
}

func verifyBlob(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor) error {
	rc, err := f.Fetch(ctx, desc)
	if err != nil {
		return labeled("blob "+desc.Digest.String(), nil, err)
	}
	defer rc.Close()
	// The source's Fetch stops at the descriptor's size (see sized).
	h := desc.Digest.Algorithm().Hash() // an available one: sized validated the digest
	if _, err := io.CopyBuffer(h, rc, make([]byte, 1<<20)); err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	if got := digest.NewDigest(desc.Digest.Algorithm(), h); got != desc.Digest {
		return fmt.Errorf("blob %s: content hashes to %s", desc.Digest, got)
	}
	return nil
}

// compareFiles hashes every regular file under prefix in the image's
// layers and every regular file of dir (following symlinks), and reports
// the first difference.
func compareFiles(ctx context.Context, e *endpoint, root ocispec.Descriptor, dir, prefix string) (int, error) {
	if prefix == "" {
		prefix = "/models"
	}
	prefix = strings.Trim(path.Clean("/"+prefix), "/")
	img, err := imageOf(ctx, e, root, v1.Platform{OS: "linux", Architecture: "amd64"})
	if err != nil {
		return 0, err
	}
	layers, err := img.Layers()
	if err != nil {
		return 0, err
	}
	inImage := map[string]string{}
	d := newLayerDecoder(1)
	defer d.close()
	for _, l := range layers {
		if err := layerFiles(l, d, prefix, inImage); err != nil {
			d, _ := l.Digest()
			return 0, fmt.Errorf("layer %s: %w", d, err)
		}
	}
	inDir := map[string]bool{}
	err = filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		rel = filepath.ToSlash(rel)
		if rel == PullStamp {
			return nil
		}
		inDir[rel] = true
		want, ok := inImage[rel]
		if !ok {
			return fmt.Errorf("%s is in the directory but not in the image", rel)
		}
		fh, err := os.Open(p)
		if err != nil {
			return err
		}
		defer fh.Close()
		hs := sha256.New()
		if _, err := io.Copy(hs, fh); err != nil {
			return err
		}
		if hex.EncodeToString(hs.Sum(nil)) != want {
			return fmt.Errorf("%s differs between the directory and the image", rel)
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	for rel := range inImage {
		if !inDir[rel] {
			return 0, fmt.Errorf("%s is in the image but not in the directory", rel)
		}
	}
	return len(inImage), nil
}

// layerFiles hashes the regular files under prefix in the layer l into
// files (path relative to prefix -> hex SHA-256), decompressing it with d.
func layerFiles(l v1.Layer, d *layerDecoder, prefix string, files map[string]string) error {
	rc, err := l.Compressed()
	if err != nil {
		return err
	}
	defer rc.Close()
	_, dec, err := d.open(rc)
	if err != nil {
		return err
	}
	tr := tar.NewReader(dec)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		rel, ok := strings.CutPrefix(name, prefix+"/")
		if !ok || h.Typeflag != tar.TypeReg {
			continue
		}
		hs := sha256.New()
		if _, err := io.CopyBuffer(hs, tr, d.buf); err != nil {
			return err
		}
		files[rel] = hex.EncodeToString(hs.Sum(nil))
	}
}
