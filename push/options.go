package push

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"oras.land/oras-go/v2/registry/remote/credentials"

	"github.com/modelcar/modelcar/internal/limits"
)

// DefaultChunkSize is the size of each PATCH of a chunked blob upload: an
// interruption costs at most this much re-sent data, and 64 MiB keeps the
// request overhead negligible. Registries known to cap chunks get less.
const DefaultChunkSize int64 = 64 << 20

// knownChunkCaps are registries that reject larger chunks.
var knownChunkCaps = map[string]int64{
	"ghcr.io": 4 << 20,
}

// DefaultIdleTimeout is how long a registry connection may move no byte,
// either way, before its request fails with a *StallError and is resumed,
// re-sent or reported (see stall.go for the bounds).
const DefaultIdleTimeout = 2 * time.Minute

// WithIdleTimeout sets how long a registry connection may stall: no byte
// sent or received, whether connecting, sending, awaiting the answer or
// reading it (default DefaultIdleTimeout; 0 waits forever). A request that
// stalls is sent at most twice, so a path that stalls for good ends a pull
// within 2 × d + 250 ms, and a push or mirror within
// (retries+1) × (2 × d + 250 ms) plus the uploader's backoffs (see
// WithRetries and stall.go).
func WithIdleTimeout(d time.Duration) Option {
	return func(o *options) error {
		if d < 0 {
			return fmt.Errorf("--idle-timeout must not be negative")
		}
		o.idleTimeout = d
		return nil
	}
}

// Option configures Copy, Pull and Verify.
type Option func(*options) error

type options struct {
	plainHTTP  bool
	insecure   bool
	jobs       int
	chunkSize  int64
	stateDir   string
	creds      credentials.Store
	progress   func(Event)
	referrers  bool
	retries    int
	monolithic bool
	splitSize  int64
	// listFiles makes ReadImage list each layer's files, the model
	// being under listPrefix (see WithListFiles).
	listFiles  bool
	listPrefix string
	// base is the image Pack builds on (see WithBase).
	base string
	// idleTimeout drops a registry connection on which nothing moved.
	idleTimeout time.Duration
}

func defaultOptions() options {
	return options{
		jobs:        min(max(runtime.GOMAXPROCS(0), 4), 8),
		chunkSize:   0,
		stateDir:    defaultStateDir(),
		progress:    func(Event) {},
		retries:     DefaultRetries,
		idleTimeout: DefaultIdleTimeout,
	}
}

// newOptions applies opts over the defaults.
func newOptions(opts []Option) (*options, error) {
	o := defaultOptions()
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	return &o, nil
}

func defaultStateDir() string {
	d, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(d, "modelcar", "uploads")
}

// WithPlainHTTP talks HTTP instead of HTTPS to registries.
func WithPlainHTTP(b bool) Option { return func(o *options) error { o.plainHTTP = b; return nil } }

// WithInsecure skips TLS certificate verification.
func WithInsecure(b bool) Option { return func(o *options) error { o.insecure = b; return nil } }

// WithJobs sets how many blobs move at once (default: CPUs, 4 to 8).
func WithJobs(n int) Option {
	return func(o *options) error { o.jobs = n; return limits.CheckJobs(n) }
}

// WithChunkSize sets the PATCH size of blob uploads (default
// DefaultChunkSize, less for registries known to cap chunks).
func WithChunkSize(n int64) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("--chunk-size must not be negative")
		}
		o.chunkSize = n
		return nil
	}
}

// WithMonolithic uploads every blob in a single PUT (no chunks, no resume
// inside a blob), for registries that mishandle chunked uploads.
func WithMonolithic(b bool) Option { return func(o *options) error { o.monolithic = b; return nil } }

// WithStateDir sets where upload sessions are remembered for resume
// (default $XDG_CACHE_HOME/modelcar/uploads); "" disables cross-run resume.
func WithStateDir(dir string) Option { return func(o *options) error { o.stateDir = dir; return nil } }

// WithCredentials sets the credential store (default: docker config.json
// and its credential helpers, as DOCKER_CONFIG selects).
func WithCredentials(s credentials.Store) Option {
	return func(o *options) error { o.creds = s; return nil }
}

// WithSplitSize cuts an oci-archive destination into volumes FILE.000,
// FILE.001... of at most n bytes (for media with file size limits); an
// archive source named FILE is read from its volumes when FILE is absent.
func WithSplitSize(n int64) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("--split-size must not be negative")
		}
		o.splitSize = n
		return nil
	}
}

// WithReferrers also copies the referrers (signatures, SBOMs) of the image.
func WithReferrers(b bool) Option { return func(o *options) error { o.referrers = b; return nil } }

// DefaultRetries is how many failed requests in a row one blob upload
// survives unless WithRetries says otherwise.
const DefaultRetries = 6

// WithRetries sets how many failed requests in a row, none of which moved
// the upload on, one blob upload survives (default 6): each costs at most
// the idle timeout plus a backoff of 0.2 s doubling up to 5 s.
func WithRetries(n int) Option {
	return func(o *options) error {
		if n < 0 {
			return fmt.Errorf("retries must not be negative")
		}
		o.retries = n
		return nil
	}
}

// Event reports transfer progress. Safe to aggregate across goroutines.
type Event struct {
	Digest string
	Size   int64
	// Sent is bytes moved since the last event for this blob.
	Sent int64
	// Start, Done, Skipped (destination had it) and Mounted mark the blob's
	// life; Resumed is the offset an interrupted upload continued from.
	Start, Done, Skipped, Mounted bool
	Resumed                       int64
	// Plan, sent before the blobs of a graph move (the image, then each
	// referrer copied), has no Digest: Total is the bytes of every
	// manifest and blob of that graph that no earlier Plan of the same
	// transfer counted, whether it will be sent, skipped (the destination
	// has it) or mounted. Every digest planned is then reported Done once,
	// so the bytes of a transfer's Done, Skipped and Mounted blobs add up
	// to the sum of its Plans (see Tally).
	Plan  bool
	Total int64
}

// WithProgress receives transfer events; fn must be safe for concurrent use.
func WithProgress(fn func(Event)) Option {
	return func(o *options) error { o.progress = fn; return nil }
}
