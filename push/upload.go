package push

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2/registry"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// uploader pushes one blob with the OCI distribution upload protocol:
// POST to open a session, PATCH chunks (each acknowledged with a Range),
// PUT ?digest= to commit. After any failure it asks the registry how much
// it holds (GET on the session) and continues from there; the session URL
// is saved so a new process can do the same.
type uploader struct {
	client     *auth.Client
	plainHTTP  bool
	chunkSize  int64
	monolithic bool
	state      *uploadState
	retries    int
	progress   func(Event)
}

// errChunkRefused means the registry does not take PATCH chunks.
var errChunkRefused = errors.New("registry refused a chunked upload")

func (u *uploader) base(ref registry.Reference) string {
	scheme := "https"
	if u.plainHTTP {
		scheme = "http"
	}
	return scheme + "://" + ref.Host() + "/v2/" + ref.Repository
}

// upload sends desc's content from r. r is read once from the start; it
// must be an io.Seeker to resume within a blob after a failure.
//
// Every request that fails counts against u.retries; one that finds the
// registry holding more of the blob than before starts the count again.
// After a failure it waits (backoff), then asks the registry how much of
// the session it holds and continues from there, so a stalled or dropped
// connection costs at most one idle timeout per failed request.
func (u *uploader) upload(ctx context.Context, ref registry.Reference, desc ocispec.Descriptor, r io.Reader) error {
	ctx = auth.AppendRepositoryScope(ctx, ref, "pull", "push")
	dg := desc.Digest.String()
	where := ref.Registry + "/" + ref.Repository
	src := &sourceReader{r: r}
	u.progress(Event{Digest: dg, Size: desc.Size, Start: true})

	var loc string
	var offset int64
	resync := false   // ask the registry where the session is before sending
	resuming := false // that session is one a previous run saved
	if saved, ok := u.state.load(ref.Registry, ref.Repository, dg); ok && !u.monolithic {
		loc, resync, resuming = saved.Location, true, true
	}
	// restart drops the session: the next round opens a new one.
	restart := func() bool {
		if !src.canSeekTo(0) {
			return false
		}
		u.state.drop(ref.Registry, ref.Repository, dg)
		loc, offset, resync = "", 0, false
		return true
	}
	failures := 0
	var lastErr error // the last failure, for messages
	for {
		var err error
		switch {
		case loc == "":
			var l string
			if l, err = u.open(ctx, ref); err == nil {
				loc, offset = l, 0
				if !u.monolithic {
					u.state.save(savedUpload{Registry: ref.Registry, Repo: ref.Repository, Digest: dg, Location: loc})
				}
				continue
			}
		case resync:
			var n int64
			var l string
			n, l, err = u.status(ctx, loc)
			var se *statusError
			switch {
			case err == nil && src.canSeekTo(n):
				if n > offset {
					failures = 0 // the registry holds more than before
				}
				if resuming && n > 0 {
					u.progress(Event{Digest: dg, Size: desc.Size, Resumed: n})
				}
				loc, offset, resync, resuming = l, n, false, false
				continue
			case err == nil || resuming || (errors.As(err, &se) && (se.code == http.StatusNotFound || se.code == http.StatusRequestedRangeNotSatisfiable)):
				// Out of reach for this source, a saved session that
				// does not answer, or a session that is gone (expired,
				// the registry restarted): start again.
				resuming = false
				if !restart() {
					return fmt.Errorf("pushing blob %s to %s: the registry holds %d bytes of the upload, and the source cannot be re-read from there (last failure: %v)", dg, where, n, lastErr)
				}
				if err == nil || errors.As(err, &se) {
					continue
				}
				// No answer at all (a stall): counted as a failure.
			}
		case u.monolithic:
			if err = u.putWhole(ctx, loc, desc, src); err == nil {
				return u.done(ref, desc)
			}
		default:
			loc, offset, err = u.sendChunks(ctx, ref, loc, offset, desc, src)
			if errors.Is(err, errChunkRefused) && offset == 0 {
				u.monolithic = true
				loc = ""
				continue
			}
			if err == nil {
				if err = u.commit(ctx, loc, desc); err == nil {
					return u.done(ref, desc)
				}
			}
		}
		if ctx.Err() != nil || isPermanent(err) {
			var se *statusError
			if errors.As(err, &se) && se.code == http.StatusBadRequest {
				// The registry refused the session's content (a digest it
				// computed differently): resuming it would fail again.
				// Auth refusals keep it, to resume once credentials work.
				u.state.drop(ref.Registry, ref.Repository, dg)
			}
			return fmt.Errorf("pushing blob %s to %s: %w", dg, where, err)
		}
		lastErr = err
		if !src.canSeek() && src.dirty {
			return fmt.Errorf("pushing blob %s to %s: %w (the source cannot be re-read to resume)", dg, where, err)
		}
		failures++
		if failures > u.retries {
			return fmt.Errorf("pushing blob %s to %s: giving up after %d failures: %w", dg, where, failures, err)
		}
		if serr := sleepCtx(ctx, backoff(failures)); serr != nil {
			return fmt.Errorf("pushing blob %s to %s: %w (after: %v)", dg, where, serr, err)
		}
		switch {
		case loc == "":
		case u.monolithic:
			// The PUT that failed ended nothing: a new session, from 0.
			if !restart() {
				return fmt.Errorf("pushing blob %s to %s: %w (the source cannot be re-read)", dg, where, err)
			}
		default:
			resync = true
		}
	}
}

// done records a committed blob.
func (u *uploader) done(ref registry.Reference, desc ocispec.Descriptor) error {
	u.state.drop(ref.Registry, ref.Repository, desc.Digest.String())
	u.progress(Event{Digest: desc.Digest.String(), Size: desc.Size, Done: true})
	return nil
}

// open starts an upload session and returns its absolute URL.
func (u *uploader) open(ctx context.Context, ref registry.Reference) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.base(ref)+"/blobs/uploads/", nil)
	if err != nil {
		return "", err
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return "", fmt.Errorf("starting upload: %w", err)
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusAccepted {
		return "", httpError("starting upload", resp)
	}
	if min := resp.Header.Get("OCI-Chunk-Min-Length"); min != "" {
		if n, err := strconv.ParseInt(min, 10, 64); err == nil && n > u.chunkSize {
			u.chunkSize = n
		}
	}
	return location(req.URL, resp)
}

// status asks the registry how many bytes of the session it holds.
func (u *uploader) status(ctx context.Context, loc string) (int64, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, loc, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := u.client.Do(req)
	if err != nil {
		return 0, "", fmt.Errorf("checking upload: %w", err)
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusNoContent {
		return 0, "", httpError("checking upload", resp)
	}
	n, err := rangeEnd(resp.Header.Get("Range"))
	if err != nil {
		return 0, "", err
	}
	l, err := location(req.URL, resp)
	if err != nil {
		l = loc
	}
	return n, l, nil
}

// sendChunks PATCHes the rest of the blob from offset.
func (u *uploader) sendChunks(ctx context.Context, ref registry.Reference, loc string, offset int64, desc ocispec.Descriptor, src *sourceReader) (string, int64, error) {
	if err := src.seekTo(offset); err != nil {
		return loc, offset, err
	}
	dg := desc.Digest.String()
	for offset < desc.Size {
		n := min(u.chunkSize, desc.Size-offset)
		sent := func(k int64) { u.progress(Event{Digest: dg, Size: desc.Size, Sent: k}) }
		body := &countingReader{r: io.LimitReader(src, n), fn: sent}
		req, err := http.NewRequestWithContext(ctx, http.MethodPatch, loc, body)
		if err != nil {
			return loc, offset, err
		}
		src.replayable(req, offset, n, &body, sent)
		req.ContentLength = n
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", offset, offset+n-1))
		resp, err := u.client.Do(req)
		if err != nil {
			src.dirty = src.dirty || body.n > 0
			return loc, offset, fmt.Errorf("uploading bytes %d-%d: %w", offset, offset+n-1, err)
		}
		drain(resp)
		switch {
		case resp.StatusCode == http.StatusAccepted:
		case offset == 0 && (resp.StatusCode == http.StatusMethodNotAllowed || resp.StatusCode == http.StatusNotImplemented ||
			resp.StatusCode == http.StatusBadRequest || resp.StatusCode == http.StatusRequestEntityTooLarge):
			return loc, offset, fmt.Errorf("%w: %w", errChunkRefused, httpError("uploading chunk", resp))
		default:
			src.dirty = true
			return loc, offset, httpError("uploading chunk", resp)
		}
		if body.n != n {
			return loc, offset, fmt.Errorf("source ended after %d of %d bytes", offset+body.n, desc.Size)
		}
		if l, err := location(req.URL, resp); err == nil {
			loc = l
		}
		end, err := rangeEnd(resp.Header.Get("Range"))
		if err != nil || end != offset+n {
			// The registry holds something else than we sent: re-sync.
			src.dirty = true
			return loc, offset, fmt.Errorf("registry acknowledged %d bytes after a chunk ending at %d", end, offset+n)
		}
		offset = end
		u.state.save(savedUpload{Registry: ref.Registry, Repo: ref.Repository, Digest: dg, Location: loc})
	}
	return loc, offset, nil
}

// commit closes the session with the digest; the registry verifies it.
func (u *uploader) commit(ctx context.Context, loc string, desc ocispec.Descriptor) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, withDigest(loc, desc.Digest.String()), nil)
	if err != nil {
		return err
	}
	req.ContentLength = 0
	resp, err := u.client.Do(req)
	if err != nil {
		return fmt.Errorf("committing upload: %w", err)
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return httpError("committing upload", resp)
	}
	return nil
}

// putWhole sends the blob in the single PUT that ends the session.
func (u *uploader) putWhole(ctx context.Context, loc string, desc ocispec.Descriptor, src *sourceReader) error {
	if err := src.seekTo(0); err != nil {
		return err
	}
	dg := desc.Digest.String()
	sent := func(k int64) { u.progress(Event{Digest: dg, Size: desc.Size, Sent: k}) }
	body := &countingReader{r: io.LimitReader(src, desc.Size), fn: sent}
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, withDigest(loc, dg), body)
	if err != nil {
		return err
	}
	src.replayable(req, 0, desc.Size, &body, sent)
	req.ContentLength = desc.Size
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := u.client.Do(req)
	src.dirty = true
	if err != nil {
		return fmt.Errorf("uploading blob: %w", err)
	}
	defer drain(resp)
	if resp.StatusCode != http.StatusCreated {
		return httpError("uploading blob", resp)
	}
	return nil
}

// sourceReader tracks the read position of a blob source so an upload can
// resume from any offset when the source is seekable.
type sourceReader struct {
	r     io.Reader
	pos   int64
	dirty bool // a request failed mid-body: pos is not where the registry is
}

func (s *sourceReader) Read(p []byte) (int, error) {
	n, err := s.r.Read(p)
	s.pos += int64(n)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("reading the source: %w", err)
	}
	return n, err
}

func (s *sourceReader) canSeek() bool {
	_, ok := s.r.(io.Seeker)
	return ok
}

func (s *sourceReader) canSeekTo(off int64) bool {
	return s.canSeek() || (!s.dirty && off == s.pos)
}

func (s *sourceReader) seekTo(off int64) error {
	if off == s.pos && !s.dirty {
		return nil
	}
	sk, ok := s.r.(io.Seeker)
	if !ok {
		if off > s.pos && !s.dirty {
			n, err := io.CopyN(io.Discard, s.r, off-s.pos)
			s.pos += n
			return err
		}
		return fmt.Errorf("cannot rewind the source to offset %d", off)
	}
	if _, err := sk.Seek(off, io.SeekStart); err != nil {
		return err
	}
	s.pos, s.dirty = off, false
	return nil
}

// replayable lets the auth client resend req after a 401 (an expired
// token): the same body if the registry read none of it, else a fresh one
// from off when the source can seek. For a source that cannot, it asks the
// registry to answer before the body is sent (Expect: 100-continue).
func (s *sourceReader) replayable(req *http.Request, off, n int64, body **countingReader, fn func(int64)) {
	first := *body
	req.GetBody = func() (io.ReadCloser, error) {
		if first.n == 0 && *body == first {
			return io.NopCloser(first), nil
		}
		s.dirty = true
		if err := s.seekTo(off); err != nil {
			return nil, err
		}
		nb := &countingReader{r: io.LimitReader(s, n), fn: fn}
		*body = nb
		return io.NopCloser(nb), nil
	}
	if _, ok := s.r.(io.Seeker); !ok {
		req.Header.Set("Expect", "100-continue")
	}
}

type countingReader struct {
	r  io.Reader
	n  int64
	fn func(int64)
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	if n > 0 {
		c.fn(int64(n))
	}
	return n, err
}

// statusError is an HTTP error from the registry.
type statusError struct {
	op     string
	code   int
	detail string
}

func (e *statusError) Error() string {
	if e.detail != "" {
		return fmt.Sprintf("%s: registry answered %d %s: %s", e.op, e.code, http.StatusText(e.code), e.detail)
	}
	return fmt.Sprintf("%s: registry answered %d %s", e.op, e.code, http.StatusText(e.code))
}

func httpError(op string, resp *http.Response) error {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	return &statusError{op: op, code: resp.StatusCode, detail: strings.TrimSpace(string(b))}
}

// isPermanent reports errors a retry cannot fix: auth and client errors
// other than timeouts, throttling and a digest the registry rejected.
func isPermanent(err error) bool {
	var be *BlobSizeError
	if errors.As(err, &be) {
		return true // the source lies about the blob: no retry reads it better
	}
	var se *statusError
	if !errors.As(err, &se) {
		return false
	}
	switch {
	case se.code == http.StatusRequestTimeout, se.code == http.StatusTooManyRequests, se.code >= 500:
		return false
	case se.code == http.StatusNotFound, se.code == http.StatusRequestedRangeNotSatisfiable:
		return false // session expired or out of sync: start again
	}
	return true
}

func drain(resp *http.Response) {
	io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
}

// location resolves the Location header against the request URL.
func location(base *url.URL, resp *http.Response) (string, error) {
	l := resp.Header.Get("Location")
	if l == "" {
		return "", fmt.Errorf("registry sent no upload Location")
	}
	u, err := base.Parse(l)
	if err != nil {
		return "", fmt.Errorf("bad upload Location %q: %w", l, err)
	}
	return u.String(), nil
}

// rangeEnd parses the Range header of an upload ("0-N", inclusive) into the
// number of bytes held. A missing header means none.
func rangeEnd(h string) (int64, error) {
	if h == "" {
		return 0, nil
	}
	h = strings.TrimPrefix(h, "bytes=")
	_, end, ok := strings.Cut(h, "-")
	if !ok {
		return 0, fmt.Errorf("bad upload Range %q", h)
	}
	n, err := strconv.ParseInt(end, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("bad upload Range %q", h)
	}
	if h == "0-0" {
		// distribution sends 0-0 for an empty session (and for one byte,
		// which chunked uploads never leave): treat it as empty.
		return 0, nil
	}
	return n + 1, nil
}

func withDigest(loc, dg string) string {
	u, err := url.Parse(loc)
	if err != nil {
		return loc
	}
	q := u.Query()
	q.Set("digest", dg)
	u.RawQuery = q.Encode()
	return u.String()
}

func backoff(failures int) time.Duration {
	d := 200 * time.Millisecond << min(failures-1, 5)
	return min(d, 5*time.Second)
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
