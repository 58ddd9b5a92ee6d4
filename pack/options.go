package pack

import (
	"context"
	"fmt"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/modelcar/modelcar/internal/limits"
	"github.com/modelcar/modelcar/internal/ref"
)

// DefaultMaxLayerSize stays below the smallest common registry cap for a
// single layer that matters for models: ECR's 52,000 MiB.
const DefaultMaxLayerSize int64 = 50 << 30

// DefaultLargeFileThreshold is the size from which a file gets its own
// layer even when it is not a weights file.
const DefaultLargeFileThreshold int64 = 64 << 20

// DefaultPrefix is where the model files land in the image.
const DefaultPrefix = "/models"

// Option configures Pack.
type Option func(*options) error

type options struct {
	format       Format
	level        int
	levelSet     bool
	prefetch     Prefetch
	prefix       string
	scan         ScanOptions
	maxLayerSize int64
	threshold    int64
	epoch        time.Time
	annotations  map[string]string
	tags         []string
	base         *Base
	defaultTag   string
	platforms    []v1.Platform
	jobs         int
	cacheDir     string
	progress     func(ProgressEvent)
}

func defaults() options {
	return options{
		format:       FormatTar,
		prefetch:     PrefetchSmall,
		prefix:       DefaultPrefix,
		maxLayerSize: DefaultMaxLayerSize,
		threshold:    DefaultLargeFileThreshold,
		epoch:        time.Unix(0, 0).UTC(),
		platforms:    []v1.Platform{{OS: "linux", Architecture: "amd64"}},
		jobs:         runtime.GOMAXPROCS(0),
		cacheDir:     DefaultCacheDir(),
		progress:     func(ProgressEvent) {},
	}
}

// WithFormat sets the layer format (default FormatTar).
func WithFormat(f Format) Option {
	return func(o *options) error {
		if _, err := ParseFormat(string(f)); err != nil {
			return err
		}
		o.format = f
		return nil
	}
}

// WithCompressionLevel sets the compression level (default: the format's
// DefaultLevel).
func WithCompressionLevel(level int) Option {
	return func(o *options) error { o.level, o.levelSet = level, true; return nil }
}

// Prefetch says which files of a lazily pulled layer (estargz,
// zstd-chunked) are prioritized: put before the prefetch landmark, which
// stargz-snapshotter fetches when it mounts the layer.
type Prefetch string

const (
	// PrefetchSmall prioritizes the small files (configs, tokenizer,
	// index): the server can read its configuration as soon as the
	// container starts, and weights are fetched as they are read. The
	// default: it needs no snapshotter setting.
	PrefetchSmall Prefetch = "small"
	// PrefetchAll prioritizes every file, weights included, so the
	// snapshotter streams each whole layer at mount instead of fetching
	// 4 MiB chunks one read at a time. Use it with the snapshotter's
	// prefetch_async_size set (for example 1 MiB), or the container start
	// waits for the weights (up to prefetch_timeout_sec).
	PrefetchAll Prefetch = "all"
)

// CheckPrefetch reports whether p is a known prefetch choice that format f
// can carry.
func CheckPrefetch(f Format, p Prefetch) error {
	if p != PrefetchSmall && p != PrefetchAll {
		return fmt.Errorf("%q: want %q or %q", p, PrefetchSmall, PrefetchAll)
	}
	if p != PrefetchSmall && !f.lazy() {
		return fmt.Errorf("%q needs a lazily pulled format (estargz or zstd-chunked), not %s", p, f)
	}
	return nil
}

// WithPrefetch sets which files lazily pulled layers prioritize (default
// PrefetchSmall). It applies to estargz and zstd-chunked only.
func WithPrefetch(p Prefetch) Option {
	return func(o *options) error {
		if err := CheckPrefetch(FormatEstargz, p); err != nil {
			return fmt.Errorf("prefetch %w", err)
		}
		o.prefetch = p
		return nil
	}
}

// WithPrefix sets the directory the model lands in (default /models).
func WithPrefix(p string) Option {
	return func(o *options) error {
		clean := path.Clean("/" + strings.TrimSpace(p))
		if p == "" || clean == "/" || strings.Contains(p, "..") {
			return fmt.Errorf("--prefix %q: want an absolute directory such as /models", p)
		}
		o.prefix = clean
		return nil
	}
}

// WithInclude keeps only files matching one of the patterns.
func WithInclude(patterns ...string) Option {
	return func(o *options) error { o.scan.Include = append(o.scan.Include, patterns...); return nil }
}

// WithExclude drops files matching the patterns (on top of DefaultExcludes).
func WithExclude(patterns ...string) Option {
	return func(o *options) error { o.scan.Exclude = append(o.scan.Exclude, patterns...); return nil }
}

// WithFollowExternalSymlinks follows symlinks in the model directory whose
// target resolves outside it (ScanOptions.FollowExternalSymlinks). By
// default such a link fails the pack with an *ExternalSymlinkError.
func WithFollowExternalSymlinks() Option {
	return func(o *options) error { o.scan.FollowExternalSymlinks = true; return nil }
}

// WithMaxLayerSize sets the largest layer allowed (default
// DefaultMaxLayerSize); a file that would exceed it fails before anything is
// written.
func WithMaxLayerSize(n int64) Option {
	return func(o *options) error {
		if n <= 0 {
			return fmt.Errorf("--max-layer-size must be positive")
		}
		o.maxLayerSize = n
		return nil
	}
}

// WithLargeFileThreshold sets the size from which any file gets its own
// layer (default DefaultLargeFileThreshold). Weight files always do.
func WithLargeFileThreshold(n int64) Option {
	return func(o *options) error { o.threshold = n; return nil }
}

// WithEpoch sets every timestamp in the image (default the Unix epoch; the
// CLI passes SOURCE_DATE_EPOCH when set).
func WithEpoch(t time.Time) Option {
	return func(o *options) error {
		if t.Unix() < 0 {
			return fmt.Errorf("epoch %v is before 1970", t)
		}
		o.epoch = t.UTC().Truncate(time.Second)
		return nil
	}
}

// WithAnnotations adds manifest annotations.
func WithAnnotations(a map[string]string) Option {
	return func(o *options) error {
		if o.annotations == nil {
			o.annotations = map[string]string{}
		}
		for k, v := range a {
			if k == "" {
				return fmt.Errorf("annotation with an empty key")
			}
			o.annotations[k] = v
		}
		return nil
	}
}

// WithTags adds ref names for the image in an OCI layout, beside the one in
// the output reference.
func WithTags(tags ...string) Option {
	return func(o *options) error { o.tags = append(o.tags, tags...); return nil }
}

// Base is the image a pack builds on, already opened by the caller (the
// transfer layer, push.WithBase, opens any reference with its credentials
// and transport): Name names it in errors, Image returns its image for a
// platform (picked from an index).
type Base struct {
	Name  string
	Image func(ctx context.Context, platform v1.Platform) (v1.Image, error)
}

// WithBase puts the model on top of base; the model layers stay
// byte-identical.
func WithBase(base Base) Option {
	return func(o *options) error {
		if base.Image == nil {
			return fmt.Errorf("base %s: no image", base.Name)
		}
		o.base = &base
		return nil
	}
}

// WithDefaultTag is the tag an output gets when neither its reference nor
// WithTags names one (layouts and archives: "latest"; a registry image may
// be pushed by digest alone).
func WithDefaultTag(tag string) Option {
	return func(o *options) error { o.defaultTag = tag; return nil }
}

// Tags returns the tags an output named with tag (its reference's, or "")
// gets under opts: tag, then WithTags's, else WithDefaultTag's; each
// checked.
func Tags(tag string, opts ...Option) ([]string, error) {
	o, err := parseOptions(opts)
	if err != nil {
		return nil, err
	}
	var tags []string
	if tag != "" {
		tags = append(tags, tag)
	}
	tags = append(tags, o.tags...)
	if len(tags) == 0 && o.defaultTag != "" {
		tags = []string{o.defaultTag}
	}
	for _, t := range tags {
		if !ref.ValidTag(t) {
			return nil, fmt.Errorf("tag %q: not a valid tag", t)
		}
	}
	return tags, nil
}

// Platforms: parsing, normalizing and matching stay ours, not
// github.com/containerd/platforms (v1.0.0-rc.5 compared case by case):
// its answers would change what pack records in configs and indexes, and
// so the digests, and which base manifest --base picks.
//   - platforms.Parse("linux/arm64/v8") keeps v8 (we record linux/arm64, as
//     for "linux/arm64"); Normalize turns linux/arm into linux/arm/v7 and
//     drops amd64's v1, which we record as given.
//   - Parse takes "linux" or "amd64" alone and fills in the host's half,
//     and takes any OS or architecture ("linux/bogus"), where ours refuses
//     a platform no node reports, with its own error text.
//   - NewMatcher(linux/amd64) does not match an index entry linux/amd64/v3,
//     nor NewMatcher(linux/arm) linux/arm/v6; ours, like
//     go-containerregistry's Satisfies, leaves a variant not asked for
//     uncompared. Only(linux/amd64/v3) matches linux/amd64, which ours does
//     not.

// ParsePlatform parses OS/ARCH[/VARIANT] and returns it in the names
// images use (NormalizePlatform). OS and architecture must be ones Go and
// container runtimes know: a platform no node reports would give an image
// no node pulls.
func ParsePlatform(s string) (v1.Platform, error) {
	bad := fmt.Errorf("%q: want OS/ARCH[/VARIANT], such as linux/amd64 or linux/arm64", s)
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 || strings.ContainsAny(s, " \t,:") {
		return v1.Platform{}, bad
	}
	for _, p := range parts {
		if p == "" {
			return v1.Platform{}, bad
		}
	}
	p := v1.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	p = NormalizePlatform(p)
	if !knownOS[p.OS] {
		return v1.Platform{}, fmt.Errorf("%q: unknown OS %q (want linux, or another GOOS such as windows)", s, p.OS)
	}
	if !knownArch[p.Architecture] {
		return v1.Platform{}, fmt.Errorf("%q: unknown architecture %q (want amd64, arm64, or another GOARCH)", s, p.Architecture)
	}
	return p, nil
}

// knownOS and knownArch are the GOOS and GOARCH values images use.
var (
	knownOS   = map[string]bool{"linux": true, "windows": true, "darwin": true, "freebsd": true, "netbsd": true, "openbsd": true, "solaris": true, "illumos": true, "aix": true, "plan9": true}
	knownArch = map[string]bool{"amd64": true, "arm64": true, "arm": true, "386": true, "ppc64le": true, "ppc64": true, "s390x": true, "riscv64": true, "mips64le": true, "mips64": true, "mipsle": true, "mips": true, "loong64": true, "wasm": true}
)

// NormalizePlatform gives a platform the names images use, as containerd
// normalizes them: lower case; x86_64 and x86-64 are amd64, aarch64 is
// arm64, i386 is 386; a numeric variant gets its "v"; arm64's default
// variant v8 is dropped, so linux/arm64/v8 and linux/arm64 name one
// platform.
func NormalizePlatform(p v1.Platform) v1.Platform {
	p.OS = strings.ToLower(p.OS)
	p.Architecture = strings.ToLower(p.Architecture)
	p.Variant = strings.ToLower(p.Variant)
	switch p.Architecture {
	case "x86_64", "x86-64":
		p.Architecture = "amd64"
	case "aarch64":
		p.Architecture = "arm64"
	case "i386":
		p.Architecture = "386"
	}
	if p.Variant != "" && p.Variant[0] >= '0' && p.Variant[0] <= '9' {
		p.Variant = "v" + p.Variant
	}
	if p.Architecture == "arm64" && p.Variant == "v8" {
		p.Variant = ""
	}
	return p
}

// PlatformMatches reports whether have, an index entry's platform,
// satisfies want, the platform asked for (fields want leaves empty are not
// compared). As in containerd and docker, arm64 with no variant and
// arm64/v8 are the same platform: v8 is arm64's default variant. No other
// default is assumed (arm with no variant is not arm/v7).
func PlatformMatches(have, want v1.Platform) bool {
	if have.Satisfies(want) {
		return true
	}
	arm64v8 := func(p v1.Platform) bool { return p.Architecture == "arm64" && (p.Variant == "" || p.Variant == "v8") }
	if arm64v8(have) && arm64v8(want) {
		have.Variant = want.Variant
		return have.Satisfies(want)
	}
	return false
}

// WithPlatform sets the platforms, comma-separated, recorded in the config
// and used to pick each base image from an index (default linux/amd64). One
// platform gives an image manifest; several give an image index with one
// manifest per platform, all sharing the same model layers, listed in
// sorted order so the index digest does not depend on the flag's order.
func WithPlatform(list string) Option {
	return func(o *options) error {
		pls, err := ParsePlatforms(list)
		if err != nil {
			return err
		}
		o.platforms = pls
		return nil
	}
}

// ParsePlatforms parses a comma-separated --platform list: each one with
// ParsePlatform, none twice, in sorted order.
func ParsePlatforms(list string) ([]v1.Platform, error) {
	var pls []v1.Platform
	seen := map[string]bool{}
	for _, p := range strings.Split(list, ",") {
		pl, err := ParsePlatform(strings.TrimSpace(p))
		if err != nil {
			return nil, fmt.Errorf("--platform %w", err)
		}
		if seen[pl.String()] {
			return nil, fmt.Errorf("--platform %s: named twice", pl.String())
		}
		seen[pl.String()] = true
		pls = append(pls, pl)
	}
	sort.Slice(pls, func(i, j int) bool { return pls[i].String() < pls[j].String() })
	return pls, nil
}

// WithJobs sets how many layers are built at once (default GOMAXPROCS).
func WithJobs(n int) Option {
	return func(o *options) error { o.jobs = n; return limits.CheckJobs(n) }
}

// WithCacheDir sets the layer digest cache directory; "" disables it.
func WithCacheDir(dir string) Option {
	return func(o *options) error { o.cacheDir = dir; return nil }
}

// ProgressEvent reports pack progress for one layer.
type ProgressEvent struct {
	// Plan marks the first event, sent once before any layer starts:
	// Total is then the content size of the whole model.
	Plan   bool
	Layer  int      // layer index among the model layers
	Files  []string // model-relative paths in the layer
	Total  int64    // bytes of file content to read
	Read   int64    // bytes read since the last event
	Start  bool     // the layer started
	Done   bool     // the layer is finished
	Reused bool     // with Done: taken from the digest cache, nothing read
}

// WithProgress receives progress events; fn must be safe for concurrent use.
func WithProgress(fn func(ProgressEvent)) Option {
	return func(o *options) error { o.progress = fn; return nil }
}
