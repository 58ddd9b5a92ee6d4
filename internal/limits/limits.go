// Package limits owns the bounds modelcar puts on what it reads from a
// registry, an OCI image layout or an OCI archive, so that a hostile or
// broken source costs bounded memory and time: every reader (pull, inspect,
// mirror, verify, and internal/ocilayout under them) imports these instead
// of keeping its own, so that an image one of them refuses all refuse.
//
// What stays bounded, at the default parallelism (4 to 8 jobs): the peak
// memory of pull, mirror and verify stays under MemoryBound whatever the
// input (the README's reliability section states the same figures).
package limits

import "fmt"

// MaxManifestBytes bounds every JSON document read whole into memory: an
// image manifest, an image index, an image config, a layout's (or an
// archive's) index.json and oci-layout file. A document over it is
// refused, never read in part.
const MaxManifestBytes = 8 << 20

// MaxIndexDepth bounds how deeply image indexes nested in image indexes are
// followed (a layout's index.json is depth 0).
const MaxIndexDepth = 4

// MaxListedEntries bounds the tar entries inspect lists from one layer's
// headers, and MaxListedNameBytes the bytes of their names it keeps: a
// layer of millions of empty files costs inspect bounded memory, and its
// listing says where it stopped. Each header itself is bounded by
// archive/tar (1 MiB of PAX records).
const (
	MaxListedEntries   = 100_000
	MaxListedNameBytes = 8 << 20
)

// ZstdWindowBudget is the memory the zstd decoders of the layers decoded at
// the same time share for their windows (the history a zstd frame may refer
// back to, which the decoder keeps in memory: a frame of a few bytes may
// declare 512 MiB and more). 128 MiB is the largest window the zstd command
// line decodes without --long or --memory.
const ZstdWindowBudget = 128 << 20

// ZstdMinWindow is the window each decoder may use however many run at
// once: 8 MiB, what every zstd level up to 19 (and klauspost/compress, and
// so containerd, moby and modelcar's own pack, at every level) writes, and
// what the zstd format asks every decoder to support.
const ZstdMinWindow = 8 << 20

// MemoryBound is the peak memory (RSS) pull, mirror and verify stay under
// at the default parallelism, whatever the input; the hostile-input tests
// measure it.
const MemoryBound = 256 << 20

// MaxBundleItemBytes bounds one item of a measure bundle's JSON Lists (a
// Pod, an Event, a Node as kubectl prints it, or a bare object): measure
// streams the Lists item by item, so this, not the file's size, is what one
// item may cost. A Node with its 50 images is well under 1 MiB.
const MaxBundleItemBytes = 8 << 20

// MaxEventsPerPod bounds how many events measure keeps about one pod. The
// kubelet and the scheduler fold repeats into one event with a count: a
// real cold start has tens of them.
const MaxEventsPerPod = 10_000

// MaxLogLines and MaxLogBytes bound what measure keeps of one container
// log of a pod it measures: the lines up to either bound are kept, the rest
// is not read. A vLLM start-up to Ready is a few hundred lines.
const (
	MaxLogLines = 100_000
	MaxLogBytes = 16 << 20
)

// MaxLogLineBytes bounds what measure keeps of one line of a container log:
// the rest of a longer line (a vLLM config dump) is dropped. Every line
// measure reads is far shorter.
const MaxLogLineBytes = 64 << 10

// ZstdWindow returns the largest window one of n layers decoded at the same
// time may use: ZstdWindowBudget shared by n, and at least ZstdMinWindow.
func ZstdWindow(n int) uint64 {
	w := uint64(ZstdWindowBudget)
	if n > 1 {
		w /= uint64(n)
	}
	return max(w, ZstdMinWindow)
}

// TooLargeError is a document or blob over a limit.
type TooLargeError struct {
	// What names it: "manifest sha256:...", "layout DIR: index.json".
	What  string
	Size  int64 // its size, or -1 when it was cut off while reading
	Limit int64
}

func (e *TooLargeError) Error() string {
	if e.Size < 0 {
		return fmt.Sprintf("%s is over the %s limit", e.What, Bytes(e.Limit))
	}
	return fmt.Sprintf("%s is %d bytes, over the %s limit", e.What, e.Size, Bytes(e.Limit))
}

// CheckJobs refuses a parallelism under 1, for pack's WithJobs (layers
// built at once) and push's (blobs moved at once) alike.
func CheckJobs(n int) error {
	if n < 1 {
		return fmt.Errorf("--jobs must be at least 1")
	}
	return nil
}

// Bytes formats n as the limits are written: 8 MiB, 512 KiB, 100 B.
//
// Kept rather than go-units' CustomSize: a limit prints as a whole number
// of its unit when it is one ("8 MiB", not "8.0 MiB"), which no single
// format string of CustomSize does. Sizes that are not limits are printed
// by internal/human.
func Bytes(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10 && n%(1<<10) == 0:
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}
