package pack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/modelcar/modelcar/internal/limits"
)

// InputError says which input file is bad and why.
type InputError struct {
	File string // the Rel path
	Err  error
}

func (e *InputError) Error() string { return e.File + ": " + e.Err.Error() }
func (e *InputError) Unwrap() error { return e.Err }

// ModelInfo is what validation learned about a model directory.
type ModelInfo struct {
	// ShardOrder is the Rel paths of weight shards in load order: the
	// shards named by each *.safetensors.index.json or *.bin.index.json
	// (indexes in Rel order, shards in order of first appearance in the
	// index's weight_map), then every other .safetensors file in Rel order.
	// A path appears at most once.
	ShardOrder []string
	// Headers holds the header of every .safetensors file, by Rel.
	Headers map[string]*SafetensorsHeader
}

const (
	safetensorsSuffix      = ".safetensors"
	safetensorsIndexSuffix = ".safetensors.index.json"
	binIndexSuffix         = ".bin.index.json"
)

type validateKind int

const (
	validateSafetensors validateKind = iota
	validateSafetensorsIndex
	validateBinIndex
	validateJSON
)

type validateJob struct {
	f    *SourceFile
	kind validateKind
	// results, written only by the worker that ran the job
	header    *SafetensorsHeader
	order     []string
	weightMap map[string]string
	err       error
}

// ValidateModel checks a model's files before anything is written:
//
//   - every .safetensors file's header (see ReadSafetensorsHeader) against
//     the file's size;
//   - every .json file is one well-formed JSON value, nested at most
//     MaxJSONDepth deep (streamed in constant memory, however large the file
//     or any string in it);
//   - every *.safetensors.index.json and *.bin.index.json is at most
//     MaxShardIndexSize bytes and names only shards
//     that are among files, and for safetensors indexes weight_map and the
//     shards' headers agree tensor for tensor.
//
// Files are checked in parallel, but the error is deterministic: an
// *InputError for the first failing file in Rel order, and only if no file
// fails on its own, the first index (in Rel order) that disagrees with its
// shards. If ctx ends first, ctx.Err() is returned.
func ValidateModel(ctx context.Context, files []SourceFile) (*ModelInfo, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	sorted := make([]*SourceFile, len(files))
	for i := range files {
		sorted[i] = &files[i]
	}
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].Rel < sorted[j].Rel })
	byRel := make(map[string]*SourceFile, len(sorted))
	var jobs []*validateJob
	for i, f := range sorted {
		if i > 0 && sorted[i-1].Rel == f.Rel {
			return nil, &InputError{File: f.Rel, Err: errors.New("listed more than once")}
		}
		byRel[f.Rel] = f
		var kind validateKind
		switch {
		case strings.HasSuffix(f.Rel, safetensorsSuffix):
			kind = validateSafetensors
		case strings.HasSuffix(f.Rel, safetensorsIndexSuffix):
			kind = validateSafetensorsIndex
		case strings.HasSuffix(f.Rel, binIndexSuffix):
			kind = validateBinIndex
		case strings.HasSuffix(f.Rel, ".json"):
			kind = validateJSON
		default:
			continue
		}
		jobs = append(jobs, &validateJob{f: f, kind: kind})
	}

	runValidateJobs(ctx, jobs)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	for _, j := range jobs {
		if j.err != nil {
			return nil, &InputError{File: j.f.Rel, Err: j.err}
		}
	}

	info := &ModelInfo{Headers: make(map[string]*SafetensorsHeader)}
	for _, j := range jobs {
		if j.kind == validateSafetensors {
			info.Headers[j.f.Rel] = j.header
		}
	}
	inOrder := make(map[string]bool)
	for _, j := range jobs {
		if j.kind != validateSafetensorsIndex && j.kind != validateBinIndex {
			continue
		}
		shards, err := checkIndex(j, byRel, info.Headers)
		if err != nil {
			return nil, &InputError{File: j.f.Rel, Err: err}
		}
		for _, s := range shards {
			if !inOrder[s] {
				inOrder[s] = true
				info.ShardOrder = append(info.ShardOrder, s)
			}
		}
	}
	for _, j := range jobs {
		if j.kind == validateSafetensors && !inOrder[j.f.Rel] {
			inOrder[j.f.Rel] = true
			info.ShardOrder = append(info.ShardOrder, j.f.Rel)
		}
	}
	return info, nil
}

// runValidateJobs runs jobs on up to GOMAXPROCS workers. Jobs are taken in
// order; once a job has failed, later jobs are skipped, since only the first
// failure in order is reported and every earlier job still runs.
func runValidateJobs(ctx context.Context, jobs []*validateJob) {
	workers := min(runtime.GOMAXPROCS(0), len(jobs))
	var next atomic.Int64
	var firstFail atomic.Int64
	firstFail.Store(int64(len(jobs)))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(jobs)) || i > firstFail.Load() || ctx.Err() != nil {
					return
				}
				j := jobs[i]
				j.err = runValidateJob(ctx, j)
				if j.err == nil {
					continue
				}
				for {
					cur := firstFail.Load()
					if i >= cur || firstFail.CompareAndSwap(cur, i) {
						break
					}
				}
			}
		})
	}
	wg.Wait()
}

func runValidateJob(ctx context.Context, j *validateJob) error {
	fh, err := j.f.open()
	if err != nil {
		return err
	}
	defer fh.Close()
	size := j.f.Size
	r := &validateCtxReader{ctx: ctx, r: fh}
	switch j.kind {
	case validateSafetensors:
		j.header, err = ReadSafetensorsHeader(fh, size)
	case validateSafetensorsIndex, validateBinIndex:
		if size > MaxShardIndexSize {
			return &limits.TooLargeError{What: "shard index", Size: size, Limit: MaxShardIndexSize}
		}
		j.order, j.weightMap, err = parseIndex(r)
	default:
		err = checkJSON(r)
	}
	return err
}

// checkIndex checks an index against the model's files and, for a
// safetensors index, its shards' headers. It returns the index's shards as Rel
// paths in order of first appearance.
func checkIndex(j *validateJob, byRel map[string]*SourceFile, headers map[string]*SafetensorsHeader) ([]string, error) {
	dir := path.Dir(j.f.Rel)
	rels := make([]string, len(j.order))
	relOf := make(map[string]string, len(j.order)) // weight_map value -> Rel
	for i, shard := range j.order {
		rel := path.Join(dir, shard)
		if path.IsAbs(shard) || rel == ".." || strings.HasPrefix(rel, "../") {
			return nil, fmt.Errorf("weight_map names shard %q outside the model directory", shard)
		}
		if byRel[rel] == nil {
			return nil, fmt.Errorf("weight_map names shard %q, which is not among the model's files (looked for %s)", shard, rel)
		}
		rels[i] = rel
		relOf[shard] = rel
	}
	if j.kind != validateSafetensorsIndex {
		return rels, nil
	}
	// Tensor names per shard, in header order.
	names := make(map[string]map[string]bool, len(rels))
	for i, rel := range rels {
		h := headers[rel]
		if h == nil {
			return nil, fmt.Errorf("weight_map names shard %q, which is not a .safetensors file", j.order[i])
		}
		if names[rel] != nil {
			continue
		}
		set := make(map[string]bool, len(h.Tensors))
		for _, t := range h.Tensors {
			set[t.Name] = true
		}
		names[rel] = set
	}
	tensors := make([]string, 0, len(j.weightMap))
	for t := range j.weightMap {
		tensors = append(tensors, t)
	}
	sort.Strings(tensors)
	for _, t := range tensors {
		shard := j.weightMap[t]
		if !names[relOf[shard]][t] {
			return nil, fmt.Errorf("weight_map puts tensor %q in shard %q, but that shard has no such tensor", t, shard)
		}
	}
	done := make(map[string]bool, len(rels))
	for i, rel := range rels {
		if done[rel] {
			continue
		}
		done[rel] = true
		for _, t := range headers[rel].Tensors {
			want, ok := j.weightMap[t.Name]
			switch {
			case !ok:
				return nil, fmt.Errorf("shard %q has tensor %q, which weight_map does not name", j.order[i], t.Name)
			case relOf[want] != rel:
				return nil, fmt.Errorf("shard %q has tensor %q, but weight_map puts it in shard %q", j.order[i], t.Name, want)
			}
		}
	}
	return rels, nil
}

// parseIndex decodes a shard index (model.safetensors.index.json or
// pytorch_model.bin.index.json): a JSON object with an optional "metadata"
// object, whose "total_size", if present, must be a number, and a required
// "weight_map" object from tensor name to shard file name (relative to the
// index's directory). Other top-level keys are ignored. order is the shard
// names in order of first appearance in weight_map.
//
// total_size is not compared with the shards: real indexes often disagree
// with them slightly, and servers ignore it.
func parseIndex(data io.Reader) (order []string, weightMap map[string]string, err error) {
	dec := json.NewDecoder(data)
	dec.UseNumber()
	if err := jsonExpectDelim(dec, '{', "index"); err != nil {
		return nil, nil, err
	}
	seen := make(map[string]bool)
	for dec.More() {
		key, err := jsonKey(dec)
		if err != nil {
			return nil, nil, err
		}
		if seen[key] {
			return nil, nil, fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		switch key {
		case "metadata":
			if err := parseIndexMetadata(dec); err != nil {
				return nil, nil, err
			}
		case "weight_map":
			if err := jsonExpectDelim(dec, '{', "weight_map"); err != nil {
				return nil, nil, err
			}
			weightMap = make(map[string]string)
			shards := make(map[string]bool)
			for dec.More() {
				tensor, err := jsonKey(dec)
				if err != nil {
					return nil, nil, fmt.Errorf("weight_map: %w", err)
				}
				if _, dup := weightMap[tensor]; dup {
					return nil, nil, fmt.Errorf("weight_map: tensor %q listed twice", tensor)
				}
				tok, err := dec.Token()
				if err != nil {
					return nil, nil, fmt.Errorf("weight_map: %w", jsonErr(dec, err))
				}
				shard, ok := tok.(string)
				if !ok {
					return nil, nil, fmt.Errorf("weight_map: tensor %q maps to %s, want a shard file name", tensor, jsonKind(tok))
				}
				if shard == "" {
					return nil, nil, fmt.Errorf("weight_map: tensor %q maps to an empty shard file name", tensor)
				}
				weightMap[tensor] = shard
				if !shards[shard] {
					shards[shard] = true
					order = append(order, shard)
				}
			}
			if err := jsonExpectDelim(dec, '}', "weight_map"); err != nil {
				return nil, nil, err
			}
		default:
			if err := jsonSkipValue(dec); err != nil {
				return nil, nil, fmt.Errorf("%s: %w", key, err)
			}
		}
	}
	if err := jsonExpectDelim(dec, '}', "index"); err != nil {
		return nil, nil, err
	}
	if err := jsonExpectEOF(dec); err != nil {
		return nil, nil, err
	}
	if weightMap == nil {
		return nil, nil, errors.New(`missing "weight_map"`)
	}
	return order, weightMap, nil
}

func parseIndexMetadata(dec *json.Decoder) error {
	if err := jsonExpectDelim(dec, '{', "metadata"); err != nil {
		return err
	}
	seen := make(map[string]bool)
	for dec.More() {
		key, err := jsonKey(dec)
		if err != nil {
			return fmt.Errorf("metadata: %w", err)
		}
		if seen[key] {
			return fmt.Errorf("metadata: duplicate key %q", key)
		}
		seen[key] = true
		if key != "total_size" {
			if err := jsonSkipValue(dec); err != nil {
				return fmt.Errorf("metadata: %s: %w", key, err)
			}
			continue
		}
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("metadata: total_size: %w", jsonErr(dec, err))
		}
		if _, ok := tok.(json.Number); !ok {
			return fmt.Errorf("metadata: total_size is %s, want a number", jsonKind(tok))
		}
	}
	return jsonExpectDelim(dec, '}', "metadata")
}

// jsonSkipValue reads and discards one complete JSON value, nested at most
// MaxJSONDepth deep.
func jsonSkipValue(dec *json.Decoder) error {
	depth := 0
	for {
		tok, err := dec.Token()
		if err != nil {
			return jsonErr(dec, err)
		}
		switch tok {
		case json.Delim('{'), json.Delim('['):
			depth++
			if depth > MaxJSONDepth {
				return fmt.Errorf("invalid JSON at byte %d: nested deeper than %d levels", dec.InputOffset()-1, MaxJSONDepth)
			}
		case json.Delim('}'), json.Delim(']'):
			depth--
		}
		if depth == 0 {
			return nil
		}
	}
}

// validateCtxReader fails reads once ctx is done, so a long scan of a large
// file stops promptly.
type validateCtxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c *validateCtxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
