package testmodel

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/bits"
	"os"
	"path/filepath"
	"slices"
)

// Defaults for the zero Options fields.
const (
	DefaultTotalSize = 8 << 20
	DefaultShards    = 2
)

// maxTotalSize bounds Options.TotalSize so the sizing arithmetic cannot
// overflow.
const maxTotalSize = 1 << 50

// Options say what model Generate writes. Zero fields take their defaults.
type Options struct {
	Seed      int64 // everything derives from it; same options => byte-identical directory
	TotalSize int64 // approximate total bytes of weights (sum of shard data); default 8 MiB
	Shards    int   // number of safetensors shards; default 2; 1 means a single "model.safetensors" and no index file
	Layers    int   // transformer layers to spread across shards (default derived from size)
}

// Model is what Generate wrote.
type Model struct {
	Dir    string
	Files  []string // slash-separated relative paths of every file written, sorted
	Shards []string // shard file names in index order
	Size   int64    // total bytes written
}

// Arch is the Llama-like architecture of a generated model, as written to
// config.json.
type Arch struct {
	Hidden       int64 // hidden_size
	Intermediate int64 // intermediate_size
	Layers       int64 // num_hidden_layers
	Heads        int64 // num_attention_heads
	KVHeads      int64 // num_key_value_heads
	HeadDim      int64 // head_dim
	Vocab        int64 // vocab_size
}

// minVocab leaves room in the embeddings for the tokenizer's special and
// byte-level tokens.
const minVocab = 320

// PlanArch is the architecture Generate uses for opts: the layer count (from
// opts.Layers, or growing with the size), then the largest hidden size that
// leaves about a tenth of the parameters to the embeddings, then the
// vocabulary that brings the weights closest to opts.TotalSize. Tiny sizes
// are rounded up to the smallest model it makes.
func PlanArch(opts Options) (Arch, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return Arch{}, err
	}
	params := opts.TotalSize / 2 // bf16
	layers := int64(opts.Layers)
	if layers == 0 {
		layers = int64(2 * bits.Len64(uint64(params>>20)))
		layers = min(max(layers, 2), 80)
		// Enough tensors for every shard to get one.
		layers = max(layers, (int64(opts.Shards)-3+tensorsPerLayer-1)/tensorsPerLayer)
	}
	// A layer holds about 10.5 h² parameters (q, o: h²; k, v: h²/4 each
	// with grouped-query attention; gate, up, down: 8/3 h² each).
	h := roundHidden(isqrt(params * 9 / 10 / layers * 2 / 21))
	for {
		a := newArch(h, layers)
		rest := params - layers*a.layerParams() - h
		a.Vocab = max(rest/(2*h), 0) / 64 * 64
		if a.Vocab >= minVocab || h <= 16 {
			a.Vocab = max(a.Vocab, minVocab)
			return a, nil
		}
		h = roundHidden(h - 1)
	}
}

const tensorsPerLayer = 9

func (o Options) withDefaults() (Options, error) {
	switch {
	case o.TotalSize < 0 || o.TotalSize > maxTotalSize:
		return o, fmt.Errorf("testmodel: total size %d out of range [0, %d]", o.TotalSize, int64(maxTotalSize))
	case o.Shards < 0 || o.Shards > 99999:
		return o, fmt.Errorf("testmodel: shard count %d out of range [0, 99999]", o.Shards)
	case o.Layers < 0 || o.Layers > 10000:
		return o, fmt.Errorf("testmodel: layer count %d out of range [0, 10000]", o.Layers)
	}
	if o.TotalSize == 0 {
		o.TotalSize = DefaultTotalSize
	}
	if o.Shards == 0 {
		o.Shards = DefaultShards
	}
	return o, nil
}

// roundHidden rounds h down to a valid hidden size: a multiple of 128 from
// 2048, of 64 from 128, else of 16 (at least 16).
func roundHidden(h int64) int64 {
	switch {
	case h >= 2048:
		return h / 128 * 128
	case h >= 128:
		return h / 64 * 64
	default:
		return max(h/16*16, 16)
	}
}

func newArch(h, layers int64) Arch {
	a := Arch{Hidden: h, Layers: layers, HeadDim: 16}
	switch {
	case h >= 2048 && h%128 == 0:
		a.HeadDim = 128
	case h >= 128 && h%64 == 0:
		a.HeadDim = 64
	}
	a.Heads = h / a.HeadDim
	a.KVHeads = a.Heads
	if a.Heads >= 8 && a.Heads%4 == 0 {
		a.KVHeads = a.Heads / 4
	}
	m := int64(16)
	if h >= 1024 {
		m = 256
	}
	a.Intermediate = (8*h + 3*m - 1) / (3 * m) * m // Llama's multiple_of rounding
	return a
}

func (a Arch) layerParams() int64 {
	h, kv := a.Hidden, a.KVHeads*a.HeadDim
	q := a.Heads * a.HeadDim
	return 2*h*q + 2*h*kv + 3*h*a.Intermediate + 2*h
}

// Params is the number of weights of the model.
func (a Arch) Params() int64 {
	return a.Layers*a.layerParams() + 2*a.Vocab*a.Hidden + a.Hidden
}

// Tensors lists the model's tensors in model order: embeddings, the layers,
// the final norm and lm_head, all bf16.
func (a Arch) Tensors() []Tensor {
	h, q, kv, in := a.Hidden, a.Heads*a.HeadDim, a.KVHeads*a.HeadDim, a.Intermediate
	ts := make([]Tensor, 0, 3+tensorsPerLayer*a.Layers)
	add := func(name string, shape ...int64) {
		ts = append(ts, Tensor{Name: name, DType: "BF16", Shape: shape})
	}
	add("model.embed_tokens.weight", a.Vocab, h)
	for i := range a.Layers {
		p := fmt.Sprintf("model.layers.%d.", i)
		add(p+"input_layernorm.weight", h)
		add(p+"self_attn.q_proj.weight", q, h)
		add(p+"self_attn.k_proj.weight", kv, h)
		add(p+"self_attn.v_proj.weight", kv, h)
		add(p+"self_attn.o_proj.weight", h, q)
		add(p+"mlp.gate_proj.weight", in, h)
		add(p+"mlp.up_proj.weight", in, h)
		add(p+"mlp.down_proj.weight", h, in)
		add(p+"post_attention_layernorm.weight", h)
	}
	add("model.norm.weight", h)
	add("lm_head.weight", a.Vocab, h)
	return ts
}

// splitShards cuts tensors, in order, into n non-empty runs of about equal
// data size.
func splitShards(tensors []Tensor, n int) ([][]Tensor, error) {
	if len(tensors) < n {
		return nil, fmt.Errorf("testmodel: %d shards for %d tensors", n, len(tensors))
	}
	var total int64
	for _, t := range tensors {
		total += t.Size()
	}
	shards := make([][]Tensor, n)
	var off int64
	cur := 0
	for i, t := range tensors {
		// Where the tensor's start falls, moving on by at most one shard
		// (no shard left empty) and leaving a tensor for every later shard.
		s := int(off * int64(n) / max(total, 1))
		s = min(max(s, cur), cur+1, n-1)
		if i > 0 {
			s = max(s, n-(len(tensors)-i))
		}
		cur = s
		shards[s] = append(shards[s], t)
		off += t.Size()
	}
	return shards, nil
}

// Generate writes a deterministic Hugging Face style model directory to dir
// (created if needed; it must be empty): config.json,
// generation_config.json, the tokenizer files, and bf16 safetensors shards
// named model-0000i-of-0000N.safetensors with a
// model.safetensors.index.json, or a single model.safetensors when
// opts.Shards is 1. The same opts always give the same bytes. On error the
// files it wrote are removed.
func Generate(dir string, opts Options) (m *Model, err error) {
	opts, err = opts.withDefaults()
	if err != nil {
		return nil, err
	}
	a, err := PlanArch(opts)
	if err != nil {
		return nil, err
	}
	shards, err := splitShards(a.Tensors(), opts.Shards)
	if err != nil {
		return nil, err
	}
	if err := prepareDir(dir); err != nil {
		return nil, err
	}

	m = &Model{Dir: dir}
	defer func() {
		if err != nil {
			for _, f := range m.Files {
				os.Remove(filepath.Join(dir, f))
			}
			m = nil
		}
	}()
	bw := bufio.NewWriterSize(nil, chunkSize)
	write := func(name string, fill func(w io.Writer) error) error {
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			return err
		}
		m.Files = append(m.Files, name)
		if err := f.Chmod(0o644); err != nil { // whatever the umask
			f.Close()
			return err
		}
		cw := &countingWriter{w: f}
		bw.Reset(cw)
		err = fill(bw)
		if err == nil {
			err = bw.Flush()
		}
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		m.Size += cw.n
		if err != nil {
			return fmt.Errorf("testmodel: write %s: %w", name, err)
		}
		return nil
	}

	for _, jf := range jsonFiles(a, opts.Seed) {
		if err := write(jf.name, func(w io.Writer) error {
			_, err := w.Write(jf.data)
			return err
		}); err != nil {
			return m, err
		}
	}

	data := RandomData(opts.Seed)
	if len(shards) == 1 {
		m.Shards = []string{"model.safetensors"}
	} else {
		for i := range shards {
			m.Shards = append(m.Shards, ShardName(i, len(shards)))
		}
		idx, err := indexJSON(shards, m.Shards)
		if err != nil {
			return m, err
		}
		if err := write("model.safetensors.index.json", func(w io.Writer) error {
			_, err := w.Write(idx)
			return err
		}); err != nil {
			return m, err
		}
	}
	for i, ts := range shards {
		if err := write(m.Shards[i], func(w io.Writer) error {
			return WriteSafetensors(w, ts, data)
		}); err != nil {
			return m, err
		}
	}
	slices.Sort(m.Files)
	return m, nil
}

// prepareDir creates dir or checks that it is an empty directory.
func prepareDir(dir string) error {
	if dir == "" {
		return errors.New("testmodel: empty directory name")
	}
	entries, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("testmodel: %w", err)
		}
		return nil
	case err != nil:
		return fmt.Errorf("testmodel: %w", err)
	case len(entries) > 0:
		return fmt.Errorf("testmodel: %s is not empty", dir)
	}
	return nil
}

// isqrt is the integer square root of n >= 0.
func isqrt(n int64) int64 {
	if n < 2 {
		return max(n, 0)
	}
	x := int64(1) << ((bits.Len64(uint64(n)) + 1) / 2)
	for {
		y := (x + n/x) / 2
		if y >= x {
			return x
		}
		x = y
	}
}
