package standin

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"

	"golang.org/x/sync/errgroup"

	"github.com/modelcar/modelcar/pack"
)

// Limits on the JSON files read before the weights: far above what real
// models have, low enough that a hostile file cannot exhaust memory.
const (
	maxConfigSize = 16 << 20
	maxIndexSize  = 64 << 20
)

// safetensorsIndex is the shard index vLLM filters safetensors files with.
const safetensorsIndex = "model.safetensors.index.json"

// ModelConfig is what the stand-in reads from a model's config.json.
type ModelConfig struct {
	Architectures         []string `json:"architectures"`
	MaxPositionEmbeddings int      `json:"max_position_embeddings"`
}

// ReadModelConfig reads dir/config.json, which vLLM needs before anything
// else.
func ReadModelConfig(dir string) (ModelConfig, error) {
	var c ModelConfig
	err := readJSON(filepath.Join(dir, "config.json"), maxConfigSize, &c)
	return c, err
}

// readJSON decodes the file at path, refusing one over limit bytes.
func readJSON(path string, limit int64, v any) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if st.Size() > limit {
		return fmt.Errorf("%s: %d bytes, over the %d-byte limit", path, st.Size(), limit)
	}
	if err := json.NewDecoder(io.LimitReader(f, limit)).Decode(v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// WeightFiles lists the files vLLM's default loader reads from dir for a
// --load-format, as names relative to dir in the order it reads them:
//   - "dummy": none (the weights are random);
//   - "pt": *.pt;
//   - otherwise (auto, safetensors, and the safetensors streamers):
//     *.safetensors, only those the model.safetensors.index.json names
//     when there is one; with none, "auto" falls back to *.bin.
//
// Like vLLM it looks only at the top of dir, and skips the training state
// (optimizer, scheduler, scaler, training_args) that checkpoints carry.
// No weight file is an error.
func WeightFiles(dir, loadFormat string) ([]string, error) {
	if loadFormat == "dummy" {
		return nil, nil
	}
	patterns := []string{"*.safetensors"}
	switch loadFormat {
	case "pt":
		patterns = []string{"*.pt"}
	case "auto":
		patterns = append(patterns, "*.bin")
	}
	for _, p := range patterns {
		names, err := glob(dir, p)
		if err != nil {
			return nil, err
		}
		if len(names) == 0 {
			continue
		}
		if p == "*.safetensors" {
			return filterIndexed(dir, names)
		}
		return names, nil
	}
	return nil, fmt.Errorf("cannot find any model weights (%s) in %s", strings.Join(patterns, ", "), dir)
}

// glob returns the regular files at the top of dir matching pattern,
// sorted, less those inference never reads.
func glob(dir, pattern string) ([]string, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var names []string
	for _, e := range ents {
		if ok, _ := filepath.Match(pattern, e.Name()); !ok || e.IsDir() || notForInference(e.Name()) {
			continue
		}
		names = append(names, e.Name())
	}
	return names, nil
}

func notForInference(name string) bool {
	switch name {
	case "training_args.bin", "optimizer.bin", "optimizer.pt", "scheduler.pt", "scaler.pt":
		return true
	}
	return false
}

// filterIndexed keeps the safetensors files the index names, when dir has
// one; a file it names that is not there is an error.
func filterIndexed(dir string, names []string) ([]string, error) {
	var index struct {
		WeightMap map[string]string `json:"weight_map"`
	}
	err := readJSON(filepath.Join(dir, safetensorsIndex), maxIndexSize, &index)
	if errors.Is(err, fs.ErrNotExist) {
		return names, nil
	}
	if err != nil {
		return nil, err
	}
	var keep []string
	for _, f := range index.WeightMap {
		if !slices.Contains(keep, f) {
			keep = append(keep, f)
		}
	}
	slices.Sort(keep)
	for _, f := range keep {
		if !slices.Contains(names, f) {
			return nil, fmt.Errorf("%s names %s, which is not in %s", safetensorsIndex, f, dir)
		}
	}
	return keep, nil
}

// A WeightFile is one file ReadWeights read.
type WeightFile struct {
	Name string
	Size int64
}

// ReadWeights reads every byte of each named file under dir, as vLLM's
// loader does when it copies the tensors to the GPU: a safetensors file's
// header is parsed and checked first (a file too short for its tensors,
// for one, is an error naming it), then the whole file is mapped and every
// byte read from the mapping, faulting it in from the page cache or the
// disk. Files are read one after the other; done, when set, is called after
// each. It stops early when ctx ends.
func ReadWeights(ctx context.Context, dir string, names []string, streams int, done func(WeightFile)) ([]WeightFile, error) {
	var read []WeightFile
	for _, name := range names {
		wf, err := readWeightFile(ctx, filepath.Join(dir, name), streams)
		if err != nil {
			return read, fmt.Errorf("%s: %w", name, err)
		}
		wf.Name = name
		read = append(read, wf)
		if done != nil {
			done(wf)
		}
	}
	return read, nil
}

func readWeightFile(ctx context.Context, path string, streams int) (WeightFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return WeightFile{}, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return WeightFile{}, err
	}
	if !st.Mode().IsRegular() {
		return WeightFile{}, fmt.Errorf("not a regular file (%s)", st.Mode().Type())
	}
	if strings.HasSuffix(path, ".safetensors") {
		if _, err := pack.ReadSafetensorsHeader(f, st.Size()); err != nil {
			return WeightFile{}, fmt.Errorf("safetensors header: %w", err)
		}
	}
	read := touchAll
	if streams > 1 {
		read = func(ctx context.Context, f *os.File, size int64) error { return readStreamed(ctx, f, size, streams) }
	}
	if err := read(ctx, f, st.Size()); err != nil {
		return WeightFile{}, err
	}
	return WeightFile{Size: st.Size()}, nil
}

// streamChunk is how much one stream reads at a time (--load-format
// runai_streamer).
const streamChunk = 8 << 20

// readStreamed reads f's first size bytes as the Run:ai model streamer
// does (vLLM --load-format runai_streamer): streams readers at once, each
// reading whole chunks into its own buffer, instead of faulting pages in
// one at a time through a mapping. A file that shrinks while read is an
// error.
func readStreamed(ctx context.Context, f *os.File, size int64, streams int) error {
	g, ctx := errgroup.WithContext(ctx)
	var next atomic.Int64
	for range streams {
		g.Go(func() error {
			buf := make([]byte, streamChunk)
			var s uint64
			defer func() { sink.Add(s) }()
			for {
				off := next.Add(streamChunk) - streamChunk
				if off >= size {
					return nil
				}
				if err := ctx.Err(); err != nil {
					return err
				}
				want := min(int64(streamChunk), size-off)
				n, err := f.ReadAt(buf[:want], off)
				s += sum(buf[:n])
				if int64(n) < want {
					if err == nil || err == io.EOF {
						return fmt.Errorf("file shrank to %d bytes while read (%d expected)", off+int64(n), size)
					}
					return err
				}
			}
		})
	}
	return g.Wait()
}

// sink keeps the sum of the bytes read, so reading them is not optimised
// away.
var sink atomic.Uint64

// sum adds up b as little-endian 64-bit words, its tail bytewise.
func sum(b []byte) uint64 {
	var s uint64
	for len(b) >= 64 {
		s += le.Uint64(b[0:]) + le.Uint64(b[8:]) + le.Uint64(b[16:]) + le.Uint64(b[24:]) +
			le.Uint64(b[32:]) + le.Uint64(b[40:]) + le.Uint64(b[48:]) + le.Uint64(b[56:])
		b = b[64:]
	}
	for _, c := range b {
		s += uint64(c)
	}
	return s
}

var le = binary.LittleEndian

// readBufSize is the buffer of the read(2) path.
const readBufSize = 4 << 20

// readAll reads f's first size bytes through a bounded buffer: the path for
// files that cannot be mapped.
func readAll(ctx context.Context, f *os.File, size int64) error {
	buf := make([]byte, readBufSize)
	var s uint64
	for off := int64(0); off < size; {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := f.ReadAt(buf[:min(int64(len(buf)), size-off)], off)
		s += sum(buf[:n])
		off += int64(n)
		if err == io.EOF && off < size {
			return fmt.Errorf("file shrank to %d bytes while read (%d expected)", off, size)
		}
		if err != nil && err != io.EOF {
			return err
		}
	}
	sink.Add(s)
	return nil
}
