package pack

import (
	"context"
	"io"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/modelcar/modelcar/internal/ocilayout"
)

// Store receives what Pack produces. Pack writes layer blobs as streams
// (their digest is known only at the end), the config as bytes, and
// publishes the manifest last, so a store never exposes a tag before all
// its content is in place. The OCI layout and archive stores live here; a
// registry store (push.RegistryStore) uploads without touching local disk.
type Store interface {
	// Has reports whether the blob is already stored (digest cache hits
	// are reused only then).
	Has(ctx context.Context, h v1.Hash, size int64) bool
	// NewBlob starts a blob whose digest is computed while it is written.
	NewBlob(ctx context.Context) (BlobWriter, error)
	// PutBlob stores a blob whose digest is known (config, base layers).
	PutBlob(ctx context.Context, h v1.Hash, size int64, r io.Reader) error
	// PutManifest stores a manifest that an index published later refers
	// to (one platform's image), untagged.
	PutManifest(ctx context.Context, desc v1.Descriptor, manifest []byte) error
	// Publish stores the manifest (or index) and points the tags at it.
	Publish(ctx context.Context, desc v1.Descriptor, manifest []byte, tags []string) error
	// Abort discards what a failed pack left that could look complete.
	Abort()
}

// BlobWriter is a blob being written.
type BlobWriter interface {
	io.Writer
	// Digest and Size describe what was written so far.
	Digest() v1.Hash
	Size() int64
	// Commit publishes the blob, checking it has digest want.
	Commit(ctx context.Context, want v1.Hash) error
	// Abort discards it.
	Abort()
}

// NewLayoutStore is a Store that writes into the OCI layout l; finish runs
// after Publish (renaming a staged layout into place, writing an archive),
// abort after a failure (removing a staged layout, or the layout's
// temporary files). The transfer layer (push) decides where l lives.
func NewLayoutStore(l *ocilayout.Layout, finish func() error, abort func()) Store {
	return &layoutStore{l: l, finish: finish, abort: abort}
}

// layoutStore writes into an OCI layout directory; finish runs after
// Publish (renaming a staged layout, or writing the archive).
type layoutStore struct {
	l      *ocilayout.Layout
	finish func() error
	abort  func()
}

func (s *layoutStore) Has(_ context.Context, h v1.Hash, size int64) bool { return s.l.Has(h, size) }

func (s *layoutStore) NewBlob(context.Context) (BlobWriter, error) {
	w, err := s.l.NewBlob()
	if err != nil {
		return nil, err
	}
	return layoutBlob{w}, nil
}

type layoutBlob struct{ *ocilayout.BlobWriter }

// preallocator is a BlobWriter that can reserve disk for a blob whose size
// is known before it is written (layout blobs; registry uploads cannot).
type preallocator interface{ Preallocate(n int64) }

func (b layoutBlob) Commit(_ context.Context, want v1.Hash) error {
	_, err := b.BlobWriter.Commit(want)
	return err
}

func (s *layoutStore) PutBlob(ctx context.Context, h v1.Hash, size int64, r io.Reader) error {
	return s.l.CopyBlob(ctx, h, size, r)
}

func (s *layoutStore) PutManifest(_ context.Context, _ v1.Descriptor, manifest []byte) error {
	_, err := s.l.WriteBlob(manifest)
	return err
}

func (s *layoutStore) Publish(_ context.Context, desc v1.Descriptor, manifest []byte, tags []string) error {
	if _, err := s.l.WriteBlob(manifest); err != nil {
		return err
	}
	if err := s.l.Tag(desc, tags...); err != nil {
		return err
	}
	s.l.Cleanup()
	return s.finish()
}

func (s *layoutStore) Abort() { s.abort() }
