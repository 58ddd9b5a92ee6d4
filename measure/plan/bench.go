package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
)

// BenchVersion is the version of the benchmark JSON ReadBench reads.
const BenchVersion = 1

// Bench is the node-side cold-start benchmark's result (tools/coldstart):
// for each layer format, how long after the pull began a node could read
// the model's config, its first weight shard and all of its weights, on a
// link of LinkMbit. Plan uses the ratios between formats, scaled to the
// pull the report measured, never the absolute times.
//
//	{"version": 1, "link_mbit": 1000, "model_bytes": N,
//	 "results": [{"format": "gzip-single", "lazy": false, "config_readable_s": F,
//	              "first_shard_read_s": F, "all_weights_read_s": F}, ...]}
type Bench struct {
	Version    int           `json:"version"`
	LinkMbit   float64       `json:"link_mbit"`
	ModelBytes int64         `json:"model_bytes"`
	Results    []BenchResult `json:"results"`
}

// A BenchResult is one format's run. Format is gzip-single (one gzip
// stream, as a Dockerfile COPY of the weights makes), tar, zstd, estargz,
// zstd-chunked, or estargz-prefetch / zstd-chunked-prefetch (packed with
// --prefetch all, the snapshotter prefetching asynchronously); other
// formats are kept and not used.
type BenchResult struct {
	Format          string  `json:"format"`
	Lazy            bool    `json:"lazy"`
	ConfigReadableS float64 `json:"config_readable_s"`
	FirstShardReadS float64 `json:"first_shard_read_s"`
	AllWeightsReadS float64 `json:"all_weights_read_s"`
}

// Defaults used without a benchmark, each shown as "default, not measured"
// wherever it enters a saving.
const (
	// DefaultSingleStreamMBps: a model image that pulled (transfer, gunzip,
	// SHA-256 and unpack) no faster than this is taken for a single gzip
	// stream, which one core decompresses at about this rate, unless
	// --current-format says what it is.
	DefaultSingleStreamMBps = 250.0
	// DefaultTarRatio: uncompressed per-file tar layers pull and unpack in
	// this share of a single gzip stream's time (parallel layers, no
	// decompression), on a link faster than one core's gunzip.
	DefaultTarRatio = 0.5
	// DefaultGzipRatio: gzip's output over its input for model weights
	// (bf16 safetensors compress to about 0.78); with linkMbit known, the
	// tar image's bytes are the gzip image's over this.
	DefaultGzipRatio = 0.78
	// DefaultLazyFirstRead: with lazy pulling, the first file (config,
	// tokenizer) is readable after this share of the full pull.
	DefaultLazyFirstRead = 0.02
	// DefaultLazyAllWeights: fetching all weights lazily takes this share
	// of the full pull: as long, at best (the same bytes over the same link).
	DefaultLazyAllWeights = 1.0
	// DefaultStreamingGiBps: the weight-loading rate assumed for vLLM's
	// runai_streamer load format from a local disk or image volume.
	DefaultStreamingGiBps = 2.0
)

// ReadBench reads the benchmark's JSON and checks its shape: version 1, a
// positive link_mbit and model_bytes, and results, each with a format, at
// least one of a format plan uses, every one of those with a positive
// all_weights_read_s. Errors name the file and the field.
func ReadBench(path string) (*Bench, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b, err := decodeBench(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// decodeBench decodes and checks the benchmark's JSON.
func decodeBench(data []byte) (*Bench, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return nil, fmt.Errorf("decoding the benchmark results: %w", err)
	}
	var b Bench
	if err := json.Unmarshal(data, &b); err != nil {
		return nil, fmt.Errorf("decoding the benchmark results: %w", err)
	}
	if b.Version != BenchVersion {
		return nil, fmt.Errorf("benchmark results version %d: this modelcar reads version %d", b.Version, BenchVersion)
	}
	notBench := "not the node-side benchmark's results (results-*.json from tools/coldstart)"
	if _, ok := fields["cold_starts"]; ok {
		notBench = "a cold-start report, not the node-side benchmark's results (pass a report as --from)"
	}
	for _, k := range []string{"link_mbit", "model_bytes", "results"} {
		if _, ok := fields[k]; !ok {
			return nil, fmt.Errorf("no %q: %s", k, notBench)
		}
	}
	switch {
	case !(b.LinkMbit > 0):
		return nil, fmt.Errorf("link_mbit %g: must be positive", b.LinkMbit)
	case b.ModelBytes <= 0:
		return nil, fmt.Errorf("model_bytes %d: must be positive", b.ModelBytes)
	case len(b.Results) == 0:
		return nil, errors.New("results is empty: the benchmark ran no format")
	}
	used := 0
	for i, r := range b.Results {
		if r.Format == "" {
			return nil, fmt.Errorf("results[%d]: no \"format\"", i)
		}
		if !slices.Contains(formats, r.Format) {
			continue
		}
		used++
		if !(r.AllWeightsReadS > 0) || r.ConfigReadableS < 0 || r.FirstShardReadS < 0 {
			return nil, fmt.Errorf("results[%d] (%s): times must be positive (all_weights_read_s %g, config_readable_s %g, first_shard_read_s %g)",
				i, r.Format, r.AllWeightsReadS, r.ConfigReadableS, r.FirstShardReadS)
		}
	}
	if used == 0 {
		return nil, fmt.Errorf("results: no run of a format plan uses (%s)", strings.Join(formats, ", "))
	}
	return &b, nil
}

// formats are the layer formats plan knows: the bench's, and modelcar's
// parallel per-file gzip.
var formats = []string{"gzip-single", "gzip", "tar", "zstd", "estargz", "zstd-chunked", "estargz-prefetch", "zstd-chunked-prefetch"}

// result returns format's run; several runs give the median of each time.
func (b *Bench) result(format string) (BenchResult, bool) {
	if b == nil {
		return BenchResult{}, false
	}
	var cfg, all []float64
	for _, r := range b.Results {
		if r.Format == format {
			cfg = append(cfg, r.ConfigReadableS)
			all = append(all, r.AllWeightsReadS)
		}
	}
	if len(all) == 0 {
		return BenchResult{}, false
	}
	return BenchResult{Format: format, ConfigReadableS: median(cfg), AllWeightsReadS: median(all)}, true
}

// A ratio is a time relative to another format's, and where it came from.
type ratio struct {
	v        float64
	measured bool
	source   string
}

// tarRatio: tar's all-weights time over base's.
func (b *Bench) tarRatio(base string) (ratio, bool) {
	t, ok1 := b.result("tar")
	r, ok2 := b.result(base)
	if ok1 && ok2 {
		return ratio{t.AllWeightsReadS / r.AllWeightsReadS, true,
			fmt.Sprintf("bench: tar %s s / %s %s s all weights read", fsec(t.AllWeightsReadS), base, fsec(r.AllWeightsReadS))}, true
	}
	if base == "gzip-single" {
		return ratio{DefaultTarRatio, false, "default, not measured: pass --bench"}, true
	}
	return ratio{}, false
}

// lazyRatios: lazy's config-readable and all-weights times over base's
// all-weights time.
//
// The lever recommends --prefetch all, so the benchmark's run of that
// (format "LAZY-prefetch") is used when it has one.
func (b *Bench) lazyRatios(lazy, base string) (first, all ratio) {
	l, ok1 := b.result(lazy + "-prefetch")
	if ok1 {
		lazy += "-prefetch"
	} else {
		l, ok1 = b.result(lazy)
	}
	r, ok2 := b.result(base)
	if ok1 && ok2 {
		src := fmt.Sprintf("bench: %s config readable %s s, all weights %s s / %s all weights %s s",
			lazy, fsec(l.ConfigReadableS), fsec(l.AllWeightsReadS), base, fsec(r.AllWeightsReadS))
		return ratio{l.ConfigReadableS / r.AllWeightsReadS, true, src}, ratio{l.AllWeightsReadS / r.AllWeightsReadS, true, src}
	}
	const src = "default, not measured: pass --bench"
	return ratio{DefaultLazyFirstRead, false, src}, ratio{DefaultLazyAllWeights, false, src}
}
