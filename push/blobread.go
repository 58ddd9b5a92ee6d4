package push

import (
	"errors"
	"fmt"
	"io"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// BlobSizeError is a blob whose content is not the size its descriptor
// says: the source (a registry, a layout, an archive) had more, or less.
type BlobSizeError struct {
	Digest digest.Digest
	// Size is what the descriptor says.
	Size int64
	// Read is how many bytes the source had, when it ended early; with
	// More, it had more than Size (reading stopped at Size+1).
	Read int64
	More bool
}

func (e *BlobSizeError) Error() string {
	// Whoever reads the blob names it.
	if e.More {
		return fmt.Sprintf("the source has more than the %d bytes its descriptor says", e.Size)
	}
	return fmt.Sprintf("the source has %d bytes, its descriptor says %d", e.Read, e.Size)
}

// checkDescriptor refuses a descriptor that cannot describe any blob: a
// malformed digest or one of an unknown algorithm, a negative size, or a
// size of 0 for a digest other than that of no bytes. what names the
// blob's role ("layer", "config", "manifest") in the error.
func checkDescriptor(what string, d ocispec.Descriptor) error {
	if err := d.Digest.Validate(); err != nil {
		return fmt.Errorf("%s %q: %w", what, d.Digest, err)
	}
	if p := sizeProblem(d); p != "" {
		return fmt.Errorf("%s %s: %s", what, d.Digest, p)
	}
	return nil
}

// sizeProblem says what is wrong with a valid digest's descriptor size.
func sizeProblem(d ocispec.Descriptor) string {
	switch {
	case d.Size < 0:
		return fmt.Sprintf("its descriptor says %d bytes", d.Size)
	case d.Size == 0 && d.Digest != d.Digest.Algorithm().FromBytes(nil):
		return "its descriptor says 0 bytes, but that digest is not the one of no bytes"
	}
	return ""
}

// sized returns rc read as the blob desc: it never returns more than
// desc.Size bytes, fails with a *BlobSizeError as soon as the source shows
// a byte more (it reads at most desc.Size+1) or ends before desc.Size, and
// keeps rc's Seek (used to resume uploads). The digest is left to whoever
// reads (they hash as they go). Every Fetch of a source goes through it, so
// a registry streaming past the size, or a layout or archive whose blob
// does not match its descriptor, is refused on every path.
func sized(rc io.ReadCloser, desc ocispec.Descriptor) (io.ReadCloser, error) {
	// Whoever reads the blob names it; manifests' children were checked
	// with checkDescriptor when they were read.
	if err := desc.Digest.Validate(); err != nil {
		rc.Close()
		return nil, err
	}
	if p := sizeProblem(desc); p != "" {
		rc.Close()
		return nil, errors.New(p)
	}
	s := &sizedReader{rc: rc, desc: desc}
	if sk, ok := rc.(io.Seeker); ok {
		return &sizedReadSeeker{s, sk}, nil
	}
	return s, nil
}

type sizedReader struct {
	rc   io.ReadCloser
	desc ocispec.Descriptor
	n    int64 // read so far
	eof  bool  // the source ended exactly at desc.Size
}

func (s *sizedReader) Read(p []byte) (int, error) {
	left := s.desc.Size - s.n
	if left <= 0 {
		if s.eof {
			return 0, io.EOF
		}
		if err := s.atEnd(); err != nil {
			return 0, err
		}
		return 0, io.EOF
	}
	if int64(len(p)) > left {
		p = p[:left]
	}
	k, err := s.rc.Read(p)
	s.n += int64(k)
	switch {
	case errors.Is(err, io.EOF) && s.n < s.desc.Size:
		return k, &BlobSizeError{Digest: s.desc.Digest, Size: s.desc.Size, Read: s.n}
	case err != nil:
		return k, err
	case s.n == s.desc.Size:
		// The last byte the descriptor allows: the source must end here.
		return k, s.atEnd()
	}
	return k, nil
}

// atEnd reads one byte past desc.Size: the source must have none.
func (s *sizedReader) atEnd() error {
	var one [1]byte
	for {
		k, err := s.rc.Read(one[:])
		switch {
		case k > 0:
			return &BlobSizeError{Digest: s.desc.Digest, Size: s.desc.Size, More: true}
		case errors.Is(err, io.EOF):
			s.eof = true
			return nil
		case err != nil:
			return err
		}
	}
}

func (s *sizedReader) Close() error { return s.rc.Close() }

type sizedReadSeeker struct {
	*sizedReader
	sk io.Seeker
}

func (s *sizedReadSeeker) Seek(off int64, whence int) (int64, error) {
	n, err := s.sk.Seek(off, whence)
	if err == nil {
		s.n, s.eof = n, false
	}
	return n, err
}
