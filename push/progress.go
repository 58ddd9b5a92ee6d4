package push

import "sync"

// Tally adds a transfer's events up into bytes done of a total, for a
// progress display: the total is the sum of the Plan events (the whole
// image, known before any blob moves); a blob counts its bytes as they are
// sent, the offset an upload resumed from at once, and its whole size when
// it is done, skipped or mounted, never more than its size however often a
// retry sends it again. The zero Tally is ready; it is safe for
// concurrent use.
type Tally struct {
	mu          sync.Mutex
	total, done int64
	blobs       map[string]int64
}

// Add counts e and returns the bytes done and the total so far.
func (t *Tally) Add(e Event) (done, total int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if e.Plan {
		t.total += e.Total
		return t.done, t.total
	}
	if t.blobs == nil {
		t.blobs = map[string]int64{}
	}
	had := t.blobs[e.Digest]
	n := had
	switch {
	case e.Done || e.Skipped || e.Mounted:
		n = e.Size
	case e.Resumed > 0:
		n = max(n, e.Resumed)
	default:
		n += e.Sent
	}
	n = min(n, e.Size)
	t.blobs[e.Digest] = n
	t.done += n - had
	return t.done, t.total
}
