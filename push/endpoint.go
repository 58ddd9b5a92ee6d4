package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/modelcar/modelcar/internal/limits"
	"github.com/modelcar/modelcar/internal/ocilayout"
	"github.com/modelcar/modelcar/internal/redact"
	"github.com/modelcar/modelcar/internal/ref"
)

// endpoint is one side of a transfer.
type endpoint struct {
	ref ref.Ref
	// target reads (and for destinations writes) content.
	target oras.Target
	// repo is the registry repository (registry endpoints only).
	repo *remote.Repository
	// finish completes a destination after the root is tagged (archives
	// are written here); abort discards a failed one.
	finish func() error
	abort  func()
	// tag is the name the root resolved by (see resolveRoot): the
	// reference's tag, or the ref name of the one image a layout or
	// archive named by path alone holds; empty for a digest.
	tag string
}

// refName is the tag or digest that selects the image at this endpoint.
func (e *endpoint) refName() string {
	switch {
	case e.ref.Digest != nil:
		return e.ref.Digest.String()
	case e.ref.Tag != "":
		return e.ref.Tag
	}
	return ""
}

// resolve resolves the endpoint's tag or digest. Its error is prefixed
// with label once: oras-go already names the registry reference in its
// own errors ("REG/REPO:TAG: not found"), which is not repeated.
func (e *endpoint) resolve(ctx context.Context, label string) (ocispec.Descriptor, error) {
	d, err := e.target.Resolve(ctx, e.refName())
	if err != nil {
		names := []string{label, e.ref.String()}
		if e.repo != nil {
			names = append(names, e.repo.Reference.String())
		} else {
			names = append(names, e.ref.Path) // layouts and archives name their path
		}
		return d, labeled(label, names, err)
	}
	return d, nil
}

// manifests fetches what sits where a manifest or index must be (a root,
// an index's entry, a subject), whatever its descriptor's media type says:
// from a registry's manifests endpoint, from a layout or archive as any
// blob.
func (e *endpoint) manifests() content.Fetcher {
	if t, ok := e.target.(*registryTarget); ok {
		return content.FetcherFunc(t.fetchManifest)
	}
	return e.target
}

// resolveRoot resolves the endpoint's tag or digest (see resolve) to the
// root manifest or index, identified by its content: its media type is the
// content's, whatever the registry or index.json said.
func (e *endpoint) resolveRoot(ctx context.Context, label string) (ocispec.Descriptor, error) {
	d, err := e.resolve(ctx, label)
	if err != nil {
		return d, err
	}
	e.tag = e.ref.Tag
	if e.ref.Tag == "" && e.ref.Digest == nil {
		e.tag = d.Annotations[ocilayout.AnnotationRefName]
	}
	d.Annotations = nil
	if d, err = identified(ctx, e.manifests(), d); err != nil {
		return d, labeled(label, []string{e.ref.String()}, err)
	}
	return d, nil
}

// labeledError is err with its message prefixed by a label, less a
// leading repetition of that label (or of another name for the same thing).
type labeledError struct {
	msg string
	err error
}

func (e *labeledError) Error() string { return e.msg }
func (e *labeledError) Unwrap() error { return e.err }

// labeled prefixes err with label, dropping any of names (the label
// included) that err's message already starts with.
func labeled(label string, names []string, err error) error {
	msg := err.Error()
	for trimmed := true; trimmed; {
		trimmed = false
		for _, n := range names {
			if n != "" && strings.HasPrefix(msg, n+": ") {
				msg, trimmed = msg[len(n)+2:], true
			}
		}
	}
	return &labeledError{msg: label + ": " + msg, err: err}
}

// registryClient is the pair of authenticated clients of one operation:
// api for oras-go (manifests, tags, reads, mounts, existence checks) and
// upload for the resumable uploader. They share credentials, the token
// cache and the connections, and differ only in what their transport
// re-sends after a stall (see stall.go).
type registryClient struct {
	api, upload *auth.Client
}

// httpClient builds the authenticated, retrying clients for registries.
func (o *options) httpClient() (*registryClient, error) {
	store := o.creds
	if store == nil {
		s, err := credentials.NewStoreFromDocker(credentials.StoreOptions{})
		if err != nil {
			return nil, fmt.Errorf("reading docker credentials: %w", err)
		}
		store = s
	}
	// A connection on which nothing moves for idleTimeout fails its
	// request, so a stalled registry or network is noticed (and the
	// uploader resumes) instead of hanging; big blobs keep flowing.
	// Every credential sent is known to internal/redact before the answer,
	// which may echo it, is read.
	apiTransport, uploadTransport := registryTransports(redact.Transport(baseTransport(o.idleTimeout, o.insecure)))
	api := &auth.Client{
		Client:     &http.Client{Transport: apiTransport},
		Cache:      auth.NewCache(),
		Credential: credentials.Credential(store),
		Header:     http.Header{"User-Agent": {"modelcar"}},
	}
	upload := *api
	upload.Client = &http.Client{Transport: uploadTransport}
	return &registryClient{api: api, upload: &upload}, nil
}

func openRegistry(r ref.Ref, o *options, client *registryClient) (*endpoint, error) {
	rr, err := registry.ParseReference(r.Name.String())
	if err != nil {
		return nil, fmt.Errorf("parsing reference %q: %w", r.Name.String(), err)
	}
	repo := &remote.Repository{Client: client.api, Reference: rr, PlainHTTP: o.plainHTTP, MaxMetadataBytes: limits.MaxManifestBytes}
	up := &uploader{client: client.upload, plainHTTP: o.plainHTTP, chunkSize: o.chunkSize, monolithic: o.monolithic,
		state: newUploadState(o.stateDir), retries: o.retries, progress: o.progress}
	if up.chunkSize == 0 {
		up.chunkSize = DefaultChunkSize
		if c, ok := knownChunkCaps[rr.Registry]; ok {
			up.chunkSize = c
		}
	}
	return &endpoint{ref: r, repo: repo, target: &registryTarget{Repository: repo, up: up},
		finish: func() error { return nil }, abort: func() {}}, nil
}

// blobSize is how many bytes of the blob desc the endpoint holds, asked
// without reading it (a HEAD, a stat).
func (e *endpoint) blobSize(ctx context.Context, desc ocispec.Descriptor) (int64, error) {
	h, err := toHash(desc.Digest)
	if err != nil {
		return 0, err
	}
	switch t := e.target.(type) {
	case *registryTarget:
		d, err := t.Repository.Blobs().Resolve(ctx, desc.Digest.String())
		return d.Size, err
	case *layoutTarget:
		return t.l.BlobSize(h)
	case *archiveTarget:
		s, err := t.a.Blob(h)
		if err != nil {
			return 0, err
		}
		return s.Size(), nil
	}
	return 0, fmt.Errorf("%s: cannot tell blob sizes", e.ref)
}

// registryTarget is a remote repository whose blob pushes go through the
// resumable uploader; manifests, tags, reads and mounts are oras-go's.
type registryTarget struct {
	*remote.Repository
	up *uploader
}

// Fetch reads desc no further than its size (see sized): a manifest or
// index (by its media type) from the manifests endpoint, anything else as
// a blob.
func (t *registryTarget) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	if isManifest(baseType(desc.MediaType)) {
		return t.fetchManifest(ctx, desc)
	}
	rc, err := t.Repository.Fetch(ctx, desc)
	if err != nil {
		return nil, err
	}
	return sized(rc, desc)
}

// fetchManifest reads desc from the manifests endpoint by digest, whatever
// its media type and whatever Content-Type the registry answers: readers
// identify a manifest by its content (see identify), and the content is
// checked against desc's size and digest.
func (t *registryTarget) fetchManifest(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	_, rc, err := t.Repository.FetchReference(ctx, desc.Digest.String())
	if err != nil {
		return nil, err
	}
	return sized(rc, desc)
}

func (t *registryTarget) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	if isManifest(desc.MediaType) {
		return t.Repository.Push(ctx, desc, r)
	}
	return t.up.upload(ctx, t.Reference, desc, r)
}

// openSource opens a ref for reading.
func openSource(ctx context.Context, r ref.Ref, o *options, client *registryClient) (*endpoint, error) {
	switch r.Kind {
	case ref.Registry:
		return openRegistry(r, o, client)
	case ref.Layout:
		l, err := ocilayout.Open(r.Path)
		if err != nil {
			return nil, err
		}
		return &endpoint{ref: r, target: &layoutTarget{l: l}, finish: func() error { return nil }, abort: func() {}}, nil
	case ref.Archive:
		a, err := ocilayout.OpenArchive(r.Path)
		if err != nil {
			return nil, err
		}
		return &endpoint{ref: r, target: &archiveTarget{a: a}, finish: a.Close, abort: func() { a.Close() }}, nil
	}
	return nil, fmt.Errorf("unsupported source %s", r)
}

// openDest opens a ref for writing, with the one staging policy of every
// writer (Copy, Pack): an existing layout is updated in place (blobs
// appear atomically under their digest, index.json is replaced last, so it
// is valid at every instant); a new layout is staged beside its path and
// renamed into place by finish; an archive is staged the same way and
// written out (in volumes with WithSplitSize) by finish. abort removes
// what was staged. Nothing appears under a new name until it is complete.
func openDest(ctx context.Context, r ref.Ref, o *options, client *registryClient) (*endpoint, error) {
	switch r.Kind {
	case ref.Registry:
		return openRegistry(r, o, client)
	case ref.Layout:
		return openLayoutDest(r)
	case ref.Archive:
		if err := ocilayout.CheckArchiveTarget(r.Path); err != nil {
			return nil, err
		}
		return staged(r, func(staging string) error {
			defer os.RemoveAll(staging)
			return ocilayout.WriteArchiveSplit(staging, r.Path, o.splitSize)
		})
	}
	return nil, fmt.Errorf("unsupported destination %s", r)
}

// layoutTarget adapts an OCI layout to oras-go's Target.
type layoutTarget struct {
	l *ocilayout.Layout
}

func toHash(d digest.Digest) (v1.Hash, error) { return v1.NewHash(d.String()) }

// Exists reports blobs the layout has. A manifest or index is reported
// absent, so that a copy walks its children again: a layout, unlike a
// registry, may hold a manifest without them (one an earlier version
// mirrored without its layers, or one copied in by hand), and its tag
// must not be written over them. Pushing it again writes nothing.
func (t *layoutTarget) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	h, err := toHash(desc.Digest)
	if err != nil {
		return false, err
	}
	if isManifest(baseType(desc.MediaType)) {
		return false, nil
	}
	return t.l.Has(h, desc.Size), nil
}

func (t *layoutTarget) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	h, err := toHash(desc.Digest)
	if err != nil {
		return nil, err
	}
	if !t.l.Has(h, -1) {
		return nil, fmt.Errorf("%s: %w", desc.Digest, errdef.ErrNotFound)
	}
	rc, err := t.l.OpenBlob(h)
	if err != nil {
		return nil, err
	}
	return sized(rc, desc)
}

func (t *layoutTarget) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	h, err := toHash(desc.Digest)
	if err != nil {
		return err
	}
	return t.l.CopyBlob(ctx, h, desc.Size, r)
}

func (t *layoutTarget) Resolve(ctx context.Context, reference string) (ocispec.Descriptor, error) {
	return resolveLocal(t.l, t.l.Dir, reference, t.l.ReadBlob)
}

func (t *layoutTarget) Tag(ctx context.Context, desc ocispec.Descriptor, reference string) error {
	h, err := toHash(desc.Digest)
	if err != nil {
		return err
	}
	d := v1.Descriptor{MediaType: typesOf(desc.MediaType), Digest: h, Size: desc.Size, ArtifactType: desc.ArtifactType}
	if reference == "" || reference == desc.Digest.String() {
		return t.l.Tag(d)
	}
	return t.l.Tag(d, reference)
}

// archiveTarget adapts an OCI archive, read in place, to a read-only Target.
type archiveTarget struct {
	a *ocilayout.Archive
}

func (t *archiveTarget) Exists(ctx context.Context, desc ocispec.Descriptor) (bool, error) {
	h, err := toHash(desc.Digest)
	if err != nil {
		return false, err
	}
	_, err = t.a.Blob(h)
	return err == nil, nil
}

func (t *archiveTarget) Fetch(ctx context.Context, desc ocispec.Descriptor) (io.ReadCloser, error) {
	h, err := toHash(desc.Digest)
	if err != nil {
		return nil, err
	}
	s, err := t.a.Blob(h)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", err, errdef.ErrNotFound)
	}
	return sized(readSeekNopCloser{s}, desc)
}

type readSeekNopCloser struct{ io.ReadSeeker }

func (readSeekNopCloser) Close() error { return nil }

func (t *archiveTarget) Push(ctx context.Context, desc ocispec.Descriptor, r io.Reader) error {
	return errors.New("an OCI archive is read-only here")
}

func (t *archiveTarget) Resolve(ctx context.Context, reference string) (ocispec.Descriptor, error) {
	return resolveLocal(t.a, t.a.File, reference, t.a.ReadBlob)
}

func (t *archiveTarget) Tag(ctx context.Context, desc ocispec.Descriptor, reference string) error {
	return errors.New("an OCI archive is read-only here")
}

// resolveLocal resolves a tag or digest in a layout or archive. A digest
// not listed in index.json is looked up as a blob (a child of an index).
func resolveLocal(r ocilayout.Reader, where, reference string, read func(v1.Hash, int64) ([]byte, error)) (ocispec.Descriptor, error) {
	var tag string
	var dg *v1.Hash
	if strings.Contains(reference, ":") {
		h, err := v1.NewHash(reference)
		if err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("%s: bad digest %q: %w", where, reference, err)
		}
		dg = &h
	} else {
		tag = reference
	}
	d, err := ocilayout.Resolve(r, where, tag, dg)
	var nf *ocilayout.NotFoundError
	if err != nil && !errors.As(err, &nf) {
		return ocispec.Descriptor{}, err // index.json cannot be read: it says why
	}
	if err != nil && dg != nil {
		b, rerr := read(*dg, limits.MaxManifestBytes)
		if rerr != nil {
			return ocispec.Descriptor{}, fmt.Errorf("%w: %w", err, errdef.ErrNotFound)
		}
		d := ocispec.Descriptor{Digest: digest.Digest(dg.String()), Size: int64(len(b))}
		if d.MediaType, err = identify(d, b); err != nil {
			return ocispec.Descriptor{}, fmt.Errorf("%s: %w", where, err)
		}
		return d, nil
	}
	if err != nil {
		return ocispec.Descriptor{}, fmt.Errorf("%w: %w", err, errdef.ErrNotFound)
	}
	return ocispec.Descriptor{MediaType: string(d.MediaType), Digest: digest.Digest(d.Digest.String()), Size: d.Size,
		ArtifactType: d.ArtifactType, Annotations: d.Annotations}, nil
}

// openLayoutDest opens the layout destination r (see openDest).
func openLayoutDest(r ref.Ref) (*endpoint, error) {
	if l, err := ocilayout.Open(r.Path); err == nil {
		return &endpoint{ref: r, target: &layoutTarget{l: l}, finish: func() error { l.Cleanup(); return nil }, abort: l.Cleanup}, nil
	} else if errors.Is(err, fs.ErrPermission) {
		return nil, err
	}
	if st, err := os.Lstat(r.Path); err == nil && !st.IsDir() {
		return nil, fmt.Errorf("%s exists and is not a directory (an archive is written with oci-archive:%s)", r.Path, r.Path)
	}
	if ents, err := os.ReadDir(r.Path); err == nil && len(ents) > 0 {
		return nil, fmt.Errorf("%s: directory exists, is not empty and is not an OCI image layout", r.Path)
	}
	return staged(r, func(staging string) error {
		// An empty directory given as the destination makes way; anything
		// else there now fails the rename below.
		if st, err := os.Lstat(r.Path); err == nil && st.IsDir() {
			os.Remove(r.Path)
		}
		if err := os.Rename(staging, r.Path); err != nil {
			os.RemoveAll(staging)
			return err
		}
		return nil
	})
}

// staged is a destination built in a staged layout (see stage) that
// publish makes visible under r's name when it is complete; abort removes
// it.
func staged(r ref.Ref, publish func(staging string) error) (*endpoint, error) {
	l, err := stage(r.Path)
	if err != nil {
		return nil, err
	}
	staging := l.Dir
	return &endpoint{ref: r, target: &layoutTarget{l: l},
		finish: func() error { l.Cleanup(); return publish(staging) },
		abort:  func() { os.RemoveAll(staging) },
	}, nil
}

// stage makes the layout a new destination is built in, as a hidden
// sibling of path (its parent made if missing), so that the final rename
// is atomic and a crash leaves nothing under the destination's name.
func stage(path string) (*ocilayout.Layout, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, err
	}
	return ocilayout.Stage(path)
}
