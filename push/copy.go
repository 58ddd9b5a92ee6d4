package push

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"

	"github.com/modelcar/modelcar/internal/limits"
	"github.com/modelcar/modelcar/internal/ref"
)

// Result describes a finished transfer.
type Result struct {
	// Reference is the pinned destination: REGISTRY/REPO@sha256:... for
	// registries, oci:PATH@sha256:... and oci-archive:FILE@sha256:... else.
	Reference string `json:"reference"`
	// Tagged is the destination reference with its tag, when it has one.
	Tagged    string `json:"tagged,omitempty"`
	Digest    string `json:"digest"`
	MediaType string `json:"mediaType"`
	Size      int64  `json:"size"`
	// Blob counts: copied, skipped (destination had them), mounted.
	Copied    int   `json:"copied"`
	Skipped   int   `json:"skipped"`
	Mounted   int   `json:"mounted"`
	BytesSent int64 `json:"bytesSent"`
}

// Copy copies the image src to dst (registry, oci:PATH or oci-archive:FILE
// on either side) with every manifest and blob byte-identical, so the
// digest is preserved. Blobs the destination has are skipped; blobs in
// another repository of the same registry are mounted; large blobs go first.
// A destination tag is written only after everything it points to is there.
func Copy(ctx context.Context, src, dst string, opts ...Option) (*Result, error) {
	o, err := newOptions(opts)
	if err != nil {
		return nil, err
	}
	sr, err := ref.Parse(src)
	if err != nil {
		return nil, fmt.Errorf("source: %w", err)
	}
	dr, err := ref.Parse(dst)
	if err != nil {
		return nil, fmt.Errorf("destination: %w", err)
	}
	if dr.Digest != nil {
		return nil, fmt.Errorf("destination %s: name it by repository and optional tag, not by digest", dst)
	}
	if o.splitSize > 0 && dr.Kind != ref.Archive {
		return nil, fmt.Errorf("--split-size applies only to an oci-archive: destination, not %s", dst)
	}
	client, err := o.httpClient()
	if err != nil {
		return nil, err
	}
	// Count the bytes sent before any endpoint is opened: the registry
	// uploader keeps o.progress, and reports every byte it sends there.
	sent := o.countSent()
	s, err := openSource(ctx, sr, o, client)
	if err != nil {
		return nil, fmt.Errorf("source %s: %w", src, err)
	}
	defer s.finish()
	root, err := s.resolveRoot(ctx, "source "+src)
	if err != nil {
		return nil, err
	}
	d, err := openDest(ctx, dr, o, client)
	if err != nil {
		return nil, fmt.Errorf("destination %s: %w", dst, err)
	}
	tag := destTag(dr, s.tag)
	res, err := copyGraph(ctx, s, d, root, tag, o)
	if err != nil {
		d.abort()
		return nil, fmt.Errorf("copying %s to %s: %w", src, dst, err)
	}
	if err := d.finish(); err != nil {
		return nil, fmt.Errorf("destination %s: %w", dst, err)
	}
	res.BytesSent = sent.Load()
	res.Reference, res.Tagged = pinned(dr, root.Digest.String(), tag)
	return res, nil
}

// destTag is the one rule that names the destination, for every kind of
// source and destination: the tag dst names, else the tag the source
// resolved by (its reference's, or the one ref name of a layout or
// archive named by path alone), else none: an image named only by digest
// is copied untagged (a registry manifest pushed by digest, an index.json
// entry with no ref name) and known by its pinned reference, as oras cp
// and skopeo's oci: transport do. A registry destination's implied latest
// counts as naming no tag.
func destTag(dst ref.Ref, srcTag string) string {
	if dst.Tag != "" && !(dst.Kind == ref.Registry && dst.DefaultTag) {
		return dst.Tag
	}
	return srcTag
}

// countSent makes o.progress count the bytes that events report sent, and
// returns the counter. Call it before opening the endpoints: their
// uploaders keep the o.progress they are opened with.
func (o *options) countSent() *atomic.Int64 {
	var n atomic.Int64
	progress := o.progress
	o.progress = func(e Event) {
		if e.Sent > 0 {
			n.Add(e.Sent)
		}
		progress(e)
	}
	return &n
}

// pinned formats the digest reference, and the tagged one if any.
func pinned(r ref.Ref, dg, tag string) (string, string) {
	return r.Pinned(dg), r.Tagged(tag)
}

// copyRun is what one Copy tallies across the graphs it copies (the image,
// then its referrers): the result's counts, and which digests progress
// has heard of, so that each is planned once and reported done once.
type copyRun struct {
	res      *Result
	progress func(Event)
	mu       sync.Mutex
	planned  map[digest.Digest]int64
	reported map[digest.Digest]bool
}

// mark marks d reported, counting it with count.
func (r *copyRun) mark(d digest.Digest, count func(*Result)) {
	r.mu.Lock()
	r.reported[d] = true
	count(r.res)
	r.mu.Unlock()
}

// report marks e's blob reported, counting it with count, and sends e.
func (r *copyRun) report(e Event, count func(*Result)) {
	r.mark(digest.Digest(e.Digest), count)
	r.progress(e)
}

// plan sends the Plan event of the graph of root before it is copied: the
// bytes of every manifest and blob it holds that no earlier graph of this
// Copy held, read from the source's manifests. A graph that cannot be read
// here is not planned: the copy that follows says why.
func (r *copyRun) plan(ctx context.Context, s *endpoint, root ocispec.Descriptor) {
	seen := map[digest.Digest]int64{}
	if walkGraph(ctx, s.manifests(), root, seen, nil) != nil {
		return
	}
	var total int64
	r.mu.Lock()
	for d, n := range seen {
		if _, ok := r.planned[d]; !ok {
			r.planned[d] = n
			total += n
		}
	}
	r.mu.Unlock()
	r.progress(Event{Plan: true, Total: total})
}

// settle reports the blobs of a copied graph (seen, as complete found them
// at the destination) that oras-go never reported: it skips whatever a
// manifest the destination already has refers to without walking it, so
// those were skipped too.
func (r *copyRun) settle(seen map[digest.Digest]int64) {
	for d, n := range seen {
		r.mu.Lock()
		done := r.reported[d]
		r.mu.Unlock()
		if !done {
			r.report(Event{Digest: d.String(), Size: n, Skipped: true, Done: true}, func(res *Result) { res.Skipped++ })
		}
	}
}

func copyGraph(ctx context.Context, s, d *endpoint, root ocispec.Descriptor, tag string, o *options) (*Result, error) {
	run := &copyRun{res: &Result{Digest: root.Digest.String(), MediaType: root.MediaType, Size: root.Size},
		progress: o.progress, planned: map[digest.Digest]int64{}, reported: map[digest.Digest]bool{}}
	// Blobs uploaded to a registry report their bytes through the
	// uploader; everything else is reported here once written.
	g := newGraphWalk(s)
	gopts := oras.CopyGraphOptions{
		Concurrency: o.jobs,
		// oras-go caches the manifests it walks; the same limit as every reader.
		MaxMetadataBytes: limits.MaxManifestBytes,
		FindSuccessors:   g.successors,
		PreCopy:          func(ctx context.Context, desc ocispec.Descriptor) error { return nil },
		PostCopy: func(ctx context.Context, desc ocispec.Descriptor) error {
			run.mark(desc.Digest, func(res *Result) { res.Copied++ })
			if d.repo == nil || isManifest(desc.MediaType) {
				run.progress(Event{Digest: desc.Digest.String(), Size: desc.Size, Sent: desc.Size, Done: true})
			}
			return nil
		},
		OnCopySkipped: func(ctx context.Context, desc ocispec.Descriptor) error {
			run.report(Event{Digest: desc.Digest.String(), Size: desc.Size, Skipped: true, Done: true}, func(res *Result) { res.Skipped++ })
			return nil
		},
		OnMounted: func(ctx context.Context, desc ocispec.Descriptor) error {
			run.report(Event{Digest: desc.Digest.String(), Size: desc.Size, Mounted: true, Done: true}, func(res *Result) { res.Mounted++ })
			return nil
		},
	}
	if s.repo != nil && d.repo != nil && s.repo.Reference.Registry == d.repo.Reference.Registry &&
		s.repo.Reference.Repository != d.repo.Reference.Repository {
		from := s.repo.Reference.Repository
		gopts.MountFrom = func(ctx context.Context, desc ocispec.Descriptor) ([]string, error) {
			return []string{from}, nil
		}
	}
	if err := copyTagged(ctx, s, d, g, root, tag, gopts, run); err != nil {
		return nil, err
	}
	if o.referrers {
		if err := copyReferrers(ctx, s, d, g, root, gopts, run); err != nil {
			return nil, err
		}
	}
	return run.res, nil
}

// copyTagged copies the graph of root and then, only once the destination
// holds everything root refers to (see complete), tags it (layouts list an
// untagged root in index.json).
func copyTagged(ctx context.Context, s, d *endpoint, g *graphWalk, root ocispec.Descriptor, tag string, gopts oras.CopyGraphOptions, run *copyRun) error {
	g.markManifest(root.Digest, 0)
	run.plan(ctx, s, root)
	if err := oras.CopyGraph(ctx, s.target, d.target, root, gopts); err != nil {
		return copyError(err)
	}
	seen := map[digest.Digest]int64{}
	if err := complete(ctx, d, root, gopts.Concurrency, seen); err != nil {
		return fmt.Errorf("destination: %w; not tagged", err)
	}
	run.settle(seen)
	if tag == "" && d.repo != nil {
		return nil
	}
	if err := d.target.Tag(ctx, root, tag); err != nil {
		return fmt.Errorf("destination: tagging %s: %w", root.Digest, err)
	}
	return nil
}

// graphWalk is the FindSuccessors of a copy: it knows which digests sit
// where a manifest must be (the roots, indexes' entries, subjects) and
// reads those by their content (see readNode); everything else is a blob,
// with no successors.
type graphWalk struct {
	src *endpoint
	mu  sync.Mutex
	// manifests maps the digests in a manifest's place to their depth
	// (roots 0), so that indexes nest no deeper than pull and verify read.
	manifests map[string]int
}

func newGraphWalk(src *endpoint) *graphWalk {
	return &graphWalk{src: src, manifests: map[string]int{}}
}

func (g *graphWalk) markManifest(d digest.Digest, depth int) {
	g.mu.Lock()
	if old, ok := g.manifests[d.String()]; !ok || depth < old {
		g.manifests[d.String()] = depth
	}
	g.mu.Unlock()
}

// depth is d's depth, or -1 when d is not in a manifest's place (a blob).
func (g *graphWalk) depth(d digest.Digest) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	if n, ok := g.manifests[d.String()]; ok {
		return n
	}
	return -1
}

// successors returns what desc refers to, largest blobs first so the long
// transfers start at once. Entries of an index whose media type is not
// plainly a manifest's are identified by their content first, so that they
// are copied as manifests.
func (g *graphWalk) successors(ctx context.Context, f content.Fetcher, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
	depth := g.depth(desc.Digest)
	if depth < 0 {
		return nil, nil
	}
	n, err := readNode(ctx, f, desc)
	if err != nil {
		return nil, err
	}
	if isIndex(n.desc.MediaType) && depth >= limits.MaxIndexDepth {
		return nil, fmt.Errorf("index %s: indexes nested more than %d deep", desc.Digest, limits.MaxIndexDepth)
	}
	var succ []ocispec.Descriptor
	for _, c := range n.manifestChildren() {
		if c, err = identified(ctx, g.src.manifests(), c); err != nil {
			return nil, err
		}
		g.markManifest(c.Digest, depth+1)
		succ = append(succ, c)
	}
	blobs := n.blobChildren()
	slices.SortStableFunc(blobs, func(a, b ocispec.Descriptor) int { return int(min(max(b.Size-a.Size, -1), 1)) })
	return append(succ, blobs...), nil
}

// complete checks that d holds everything root refers to, walking it as
// it stands at d (the manifests read back from d, the blobs asked after,
// jobs at a time): a tag is written only over a whole image. seen gets
// every digest found, with its size.
func complete(ctx context.Context, d *endpoint, root ocispec.Descriptor, jobs int, seen map[digest.Digest]int64) error {
	return walkGraph(ctx, d.manifests(), root, seen, func(n *node) error {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(jobs)
		for _, c := range n.blobChildren() {
			g.Go(func() error {
				ok, err := d.target.Exists(gctx, c)
				if err != nil {
					return fmt.Errorf("%s %s: blob %s: %w", docKind(n.desc.MediaType), n.desc.Digest, c.Digest, err)
				}
				if !ok {
					return fmt.Errorf("%s %s: blob %s is missing", docKind(n.desc.MediaType), n.desc.Digest, c.Digest)
				}
				return nil
			})
		}
		return g.Wait()
	})
}

// walkGraph reads root and, depth first, the manifests it refers to from f
// (each manifest once, indexes nested at most limits.MaxIndexDepth deep),
// records every manifest and blob digest with its size in seen, and calls
// blobs (when set) on each manifest read, after its children.
func walkGraph(ctx context.Context, f content.Fetcher, root ocispec.Descriptor, seen map[digest.Digest]int64, blobs func(*node) error) error {
	walked := map[digest.Digest]bool{}
	var walk func(desc ocispec.Descriptor, depth int) error
	walk = func(desc ocispec.Descriptor, depth int) error {
		if walked[desc.Digest] {
			return nil
		}
		walked[desc.Digest] = true
		n, err := readNode(ctx, f, desc)
		if err != nil {
			return err
		}
		if isIndex(n.desc.MediaType) && depth >= limits.MaxIndexDepth {
			return fmt.Errorf("index %s: indexes nested more than %d deep", desc.Digest, limits.MaxIndexDepth)
		}
		seen[desc.Digest] = desc.Size
		for _, c := range n.manifestChildren() {
			if c, err = identified(ctx, f, c); err != nil {
				return err
			}
			if err := walk(c, depth+1); err != nil {
				return err
			}
		}
		for _, c := range n.blobChildren() {
			seen[c.Digest] = c.Size
		}
		if blobs == nil {
			return nil
		}
		return blobs(n)
	}
	return walk(root, 0)
}

// copyError unwraps oras-go's CopyError into which side failed.
func copyError(err error) error {
	var ce *oras.CopyError
	if errors.As(err, &ce) {
		side := "destination"
		if ce.Origin == oras.CopyErrorOriginSource {
			side = "source"
		}
		if ce.Op == "FindSuccessors" { // reading a manifest: its error says so
			return fmt.Errorf("%s: %w", side, ce.Err)
		}
		return fmt.Errorf("%s: %s: %w", side, ce.Op, ce.Err)
	}
	return err
}

// copyReferrers copies the artifacts that refer to root (signatures,
// SBOMs) with their own graphs.
func copyReferrers(ctx context.Context, s, d *endpoint, g *graphWalk, root ocispec.Descriptor, gopts oras.CopyGraphOptions, run *copyRun) error {
	lister, ok := s.target.(interface {
		Referrers(ctx context.Context, desc ocispec.Descriptor, artifactType string, fn func([]ocispec.Descriptor) error) error
	})
	if !ok {
		return fmt.Errorf("--referrers: the source %s cannot list referrers", s.ref)
	}
	var refs []ocispec.Descriptor
	if err := lister.Referrers(ctx, root, "", func(r []ocispec.Descriptor) error { refs = append(refs, r...); return nil }); err != nil {
		return fmt.Errorf("--referrers: listing referrers of %s: %w", root.Digest, err)
	}
	for _, r := range refs {
		r, err := identified(ctx, s.manifests(), r)
		if err != nil {
			return fmt.Errorf("--referrers: %w", err)
		}
		// Layouts keep referrers as untagged entries of index.json.
		if err := copyTagged(ctx, s, d, g, r, "", gopts, run); err != nil {
			return fmt.Errorf("--referrers: copying %s: %w", r.Digest, err)
		}
		// Referrers of referrers (a signature of an SBOM) come along too.
		if err := copyReferrers(ctx, s, d, g, r, gopts, run); err != nil {
			return err
		}
	}
	return nil
}
