package push

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"net/http"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry/remote/auth"

	"github.com/modelcar/modelcar/internal/fielderr"
	"github.com/modelcar/modelcar/internal/ref"
	"github.com/modelcar/modelcar/pack"
)

// Pack packs the model directory dir into dst, any kind of reference:
//
//   - REGISTRY/REPO[:TAG]: each layer streams to the registry while it is
//     built and hashed, in one read of the model and without touching local
//     disk; the manifest is pushed (and tagged) last. Layers the digest
//     cache knows and the registry has are not read at all.
//   - oci:PATH[:TAG], oci-archive:FILE[:TAG]: written as every layout or
//     archive destination is (see openDest): an existing layout is updated
//     in place, index.json last; a new one is staged beside PATH and renamed
//     into place; an archive is staged and written out whole.
//
// With WithBase the base image is opened here too, with the same transfer
// options (credentials, plain HTTP, TLS, idle timeout, retries) as dst. The
// tags are dst's, then pack.WithTags's; a layout or archive without one
// gets "latest", a registry image without one is pushed by digest.
func Pack(ctx context.Context, dir, dst string, packOpts []pack.Option, opts ...Option) (*pack.Result, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	r, err := ref.Parse(dst)
	if err != nil {
		return nil, refError("Output", dst, err)
	}
	if r.Digest != nil {
		return nil, refError("Output", dst, errors.New("an output is named by a tag, not a digest"))
	}
	if r.Kind == ref.Registry && o.splitSize > 0 {
		return nil, fmt.Errorf("--split-size applies only to an oci-archive: destination, not %s", dst)
	}
	if r.Kind != ref.Registry {
		packOpts = append(packOpts[:len(packOpts):len(packOpts)], pack.WithDefaultTag("latest"))
	}
	tags, err := pack.Tags(r.Tag, packOpts...)
	if err != nil {
		return nil, err
	}
	client, err := o.httpClient()
	if err != nil {
		return nil, err
	}
	if o.base != "" {
		base, closeBase, err := openBase(ctx, o.base, o, client)
		if err != nil {
			return nil, err
		}
		defer closeBase()
		packOpts = append(packOpts[:len(packOpts):len(packOpts)], pack.WithBase(base))
	}
	name := r.String()
	var open func() (pack.Store, error)
	switch r.Kind {
	case ref.Registry:
		name = r.Name.Context().Name()
		open = func() (pack.Store, error) {
			e, err := openRegistry(r, o, client)
			if err != nil {
				return nil, err
			}
			return &registryStore{e: e, up: e.target.(*registryTarget).up}, nil
		}
	default:
		if len(tags) > 0 {
			name = r.Tagged(tags[0])
		}
		open = func() (pack.Store, error) {
			e, err := openDest(ctx, r, o, client)
			if err != nil {
				return nil, refError("Output", dst, err)
			}
			return pack.NewLayoutStore(e.target.(*layoutTarget).l, e.finish, e.abort), nil
		}
	}
	res, err := pack.PackTo(ctx, dir, open, name, tags, packOpts...)
	if err != nil {
		return nil, err
	}
	first := ""
	if len(tags) > 0 {
		first = tags[0]
	}
	res.Reference, res.Tagged = pinned(r, res.Digest.String(), first)
	return res, nil
}

// refError is err about the reference ref that the option field names
// (Output, Base): a *fielderr.Error, which the CLI writes with its flag.
// Its message does not repeat ref, which the endpoint's errors start with.
func refError(field, ref string, err error) error {
	return fielderr.New(field, ref, &labeledError{msg: strings.TrimPrefix(err.Error(), ref+": "), err: err})
}

// WithBase names the image Pack builds on: any reference kind, opened with
// the same transfer options as the destination.
func WithBase(src string) Option { return func(o *options) error { o.base = src; return nil } }

// openBase opens src for reading as pack's base: its root is resolved at
// once (a missing tag fails before anything is read from the model), and
// each platform's image is picked from it and read through the same
// hardened readers as pull (content-identified manifests, sizes and
// digests checked, limits). close releases the source (an archive's file).
func openBase(ctx context.Context, src string, o *options, client *registryClient) (pack.Base, func() error, error) {
	r, err := ref.Parse(src)
	if err != nil {
		return pack.Base{}, nil, refError("Base", src, err)
	}
	e, err := openSource(ctx, r, o, client)
	if err != nil {
		return pack.Base{}, nil, refError("Base", src, err)
	}
	root, err := e.resolveRoot(ctx, src)
	if err != nil {
		e.abort()
		return pack.Base{}, nil, refError("Base", src, err)
	}
	return pack.Base{Name: src, Image: func(ctx context.Context, platform v1.Platform) (v1.Image, error) {
		return imageOf(ctx, e, root, platform)
	}}, e.finish, nil
}

// registryStore is a pack.Store that uploads to a registry repository.
type registryStore struct {
	e  *endpoint
	up *uploader
}

func ociDesc(h v1.Hash, size int64, mt string) ocispec.Descriptor {
	return ocispec.Descriptor{MediaType: mt, Digest: digest.Digest(h.String()), Size: size}
}

func (s *registryStore) Has(ctx context.Context, h v1.Hash, size int64) bool {
	ok, err := s.e.repo.Blobs().Exists(ctx, ociDesc(h, size, "application/octet-stream"))
	return err == nil && ok
}

func (s *registryStore) PutBlob(ctx context.Context, h v1.Hash, size int64, r io.Reader) error {
	if s.Has(ctx, h, size) {
		return nil
	}
	return s.up.upload(ctx, s.e.repo.Reference, ociDesc(h, size, "application/octet-stream"), r)
}

func (s *registryStore) PutManifest(ctx context.Context, desc v1.Descriptor, manifest []byte) error {
	d := ociDesc(desc.Digest, desc.Size, string(desc.MediaType))
	if err := s.e.repo.Push(ctx, d, bytesReader(manifest)); err != nil {
		return fmt.Errorf("pushing manifest %s: %w", desc.Digest, err)
	}
	return nil
}

func (s *registryStore) Publish(ctx context.Context, desc v1.Descriptor, manifest []byte, tags []string) error {
	d := ociDesc(desc.Digest, desc.Size, string(desc.MediaType))
	if len(tags) == 0 {
		return s.e.repo.Push(ctx, d, bytesReader(manifest))
	}
	for _, t := range tags {
		if err := s.e.repo.PushReference(ctx, d, bytesReader(manifest), t); err != nil {
			return fmt.Errorf("pushing manifest %s as %s: %w", desc.Digest, t, err)
		}
	}
	return nil
}

func (s *registryStore) Abort() {}

// NewBlob opens an upload session and streams what is written into one
// PATCH with no length (a streamed upload); Commit ends it with the digest.
func (s *registryStore) NewBlob(ctx context.Context) (pack.BlobWriter, error) {
	ctx = auth.AppendRepositoryScope(ctx, s.e.repo.Reference, "pull", "push")
	loc, err := s.up.open(ctx, s.e.repo.Reference)
	if err != nil {
		return nil, err // open names the operation: "starting upload: ..."
	}
	pr, pw := io.Pipe()
	b := &streamBlob{s: s, pw: pw, h: sha256.New(), done: make(chan struct{})}
	req, err := http.NewRequestWithContext(ctx, http.MethodPatch, loc, pr)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	go func() {
		defer close(b.done)
		resp, err := s.up.client.Do(req)
		if err != nil {
			b.err = err
			pr.CloseWithError(err)
			return
		}
		defer drain(resp)
		if resp.StatusCode != http.StatusAccepted {
			b.err = httpError("streaming layer", resp)
			pr.CloseWithError(b.err)
			return
		}
		if l, err := location(req.URL, resp); err == nil {
			b.loc = l
		} else {
			b.loc = loc
		}
	}()
	return b, nil
}

type streamBlob struct {
	s    *registryStore
	pw   *io.PipeWriter
	h    hash.Hash
	n    int64
	done chan struct{}
	err  error
	loc  string
}

func (b *streamBlob) Write(p []byte) (int, error) {
	n, err := b.pw.Write(p)
	b.h.Write(p[:n])
	b.n += int64(n)
	return n, err
}

func (b *streamBlob) Digest() v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(b.h.Sum(nil))}
}

func (b *streamBlob) Size() int64 { return b.n }

func (b *streamBlob) Commit(ctx context.Context, want v1.Hash) error {
	b.pw.Close()
	<-b.done
	if b.err != nil {
		return b.err
	}
	if got := b.Digest(); got != want {
		return fmt.Errorf("streamed %s, expected %s", got, want)
	}
	ctx = auth.AppendRepositoryScope(ctx, b.s.e.repo.Reference, "pull", "push")
	if err := b.s.up.commit(ctx, b.loc, ociDesc(want, b.n, "application/octet-stream")); err != nil {
		return err
	}
	b.s.up.progress(Event{Digest: want.String(), Size: b.n, Sent: 0, Done: true})
	return nil
}

func (b *streamBlob) Abort() {
	b.pw.CloseWithError(fmt.Errorf("layer aborted"))
	<-b.done
}
