package testmodel

import (
	"bytes"
	"compress/flate"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// shardTensor is one tensor entry as parsed back from a shard header.
type shardTensor struct {
	Name        string
	DType       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// parseShard checks a safetensors file the way a strict reader would and
// returns its tensors in data order.
func parseShard(t *testing.T, path string) []shardTensor {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	var lenBuf [8]byte
	if _, err := io.ReadFull(f, lenBuf[:]); err != nil {
		t.Fatalf("%s: header length: %v", path, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n == 0 || n%8 != 0 || int64(n) > st.Size()-8 {
		t.Fatalf("%s: bad header length %d (file %d bytes)", path, n, st.Size())
	}
	hdr := make([]byte, n)
	if _, err := io.ReadFull(f, hdr); err != nil {
		t.Fatal(err)
	}
	trimmed := bytes.TrimRight(hdr, " ")
	if len(hdr)-len(trimmed) >= 8 || trimmed[len(trimmed)-1] != '}' {
		t.Fatalf("%s: header not space-padded JSON to a multiple of 8: %q", path, hdr[max(0, len(hdr)-16):])
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(hdr, &raw); err != nil {
		t.Fatalf("%s: header JSON: %v", path, err)
	}
	var meta map[string]string
	if err := json.Unmarshal(raw["__metadata__"], &meta); err != nil || meta["format"] != "pt" {
		t.Fatalf("%s: __metadata__ = %s (%v), want format pt", path, raw["__metadata__"], err)
	}
	var ts []shardTensor
	for name, r := range raw {
		if name == "__metadata__" {
			continue
		}
		var e shardTensor
		dec := json.NewDecoder(bytes.NewReader(r))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			t.Fatalf("%s: tensor %s: %v", path, name, err)
		}
		e.Name = name
		if len(e.DataOffsets) != 2 {
			t.Fatalf("%s: tensor %s: data_offsets %v", path, name, e.DataOffsets)
		}
		ts = append(ts, e)
	}
	if len(ts) == 0 {
		t.Fatalf("%s: no tensors", path)
	}
	slices.SortFunc(ts, func(a, b shardTensor) int { return int(a.DataOffsets[0] - b.DataOffsets[0]) })
	var off int64
	for _, e := range ts {
		if e.DataOffsets[0] != off {
			t.Fatalf("%s: tensor %s starts at %d, want %d (offsets not contiguous)", path, e.Name, e.DataOffsets[0], off)
		}
		if want := (Tensor{e.Name, e.DType, e.Shape}).Size(); e.DataOffsets[1]-e.DataOffsets[0] != want || want <= 0 {
			t.Fatalf("%s: tensor %s %s%v spans %v, want %d bytes", path, e.Name, e.DType, e.Shape, e.DataOffsets, want)
		}
		off = e.DataOffsets[1]
	}
	if want := 8 + int64(n) + off; st.Size() != want {
		t.Fatalf("%s: file is %d bytes, want 8+%d+%d = %d", path, st.Size(), n, off, want)
	}
	return ts
}

func generate(t testing.TB, opts Options) *Model {
	t.Helper()
	m, err := Generate(filepath.Join(t.TempDir(), "model"), opts)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func hashes(t *testing.T, m *Model) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, f := range m.Files {
		b, err := os.ReadFile(filepath.Join(m.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		s := sha256.Sum256(b)
		out[f] = hex.EncodeToString(s[:])
	}
	return out
}

func TestDeterministic(t *testing.T) {
	opts := Options{Seed: 7, TotalSize: 3 << 20, Shards: 3}
	a, b := hashes(t, generate(t, opts)), hashes(t, generate(t, opts))
	if len(a) == 0 || !equalMaps(a, b) {
		t.Fatalf("same options, different files:\n%v\n%v", a, b)
	}
	opts.Seed = 8
	c := hashes(t, generate(t, opts))
	if len(c) != len(a) {
		t.Fatalf("different seed changed the file set: %v vs %v", a, c)
	}
	for f, h := range a {
		if strings.HasSuffix(f, ".safetensors") && c[f] == h {
			t.Errorf("%s: same bytes for seeds 7 and 8", f)
		}
	}
}

func equalMaps(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if b[k] != v {
			return false
		}
	}
	return true
}

func TestShardsAndIndex(t *testing.T) {
	for _, shards := range []int{2, 3, 4, 7} {
		m := generate(t, Options{Seed: 1, TotalSize: 2 << 20, Shards: shards})
		if len(m.Shards) != shards {
			t.Fatalf("%d shards: got %v", shards, m.Shards)
		}
		var idx struct {
			Metadata struct {
				TotalSize int64 `json:"total_size"`
			} `json:"metadata"`
			WeightMap map[string]string `json:"weight_map"`
		}
		b, err := os.ReadFile(filepath.Join(m.Dir, "model.safetensors.index.json"))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &idx); err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		var total int64
		for i, s := range m.Shards {
			if want := ShardName(i, shards); s != want {
				t.Errorf("shard %d named %s, want %s", i, s, want)
			}
			for _, e := range parseShard(t, filepath.Join(m.Dir, s)) {
				seen[e.Name] = s
				total += e.DataOffsets[1] - e.DataOffsets[0]
				if e.DType != "BF16" {
					t.Errorf("%s: dtype %s", e.Name, e.DType)
				}
			}
		}
		if !equalMaps(seen, idx.WeightMap) {
			t.Errorf("%d shards: weight_map %v\ndoes not match the shards %v", shards, idx.WeightMap, seen)
		}
		if idx.Metadata.TotalSize != total {
			t.Errorf("%d shards: total_size %d, shards hold %d", shards, idx.Metadata.TotalSize, total)
		}
		// weight_map lists tensors in shard order.
		dec := json.NewDecoder(bytes.NewReader(b))
		var order []string
		for {
			tok, err := dec.Token()
			if err != nil {
				break
			}
			if s, ok := tok.(string); ok && strings.HasSuffix(s, ".safetensors") {
				order = append(order, s)
			}
		}
		if !slices.IsSorted(order) || len(order) != len(seen) {
			t.Errorf("%d shards: weight_map not in shard order", shards)
		}
	}
}

func TestModelFiles(t *testing.T) {
	m := generate(t, Options{Seed: 3})
	entries, err := os.ReadDir(m.Dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	var size, weights int64
	for _, e := range entries {
		names = append(names, e.Name())
		info, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if info.Mode() != 0o644 {
			t.Errorf("%s: mode %v, want 0644", e.Name(), info.Mode())
		}
		size += info.Size()
	}
	want := []string{"config.json", "generation_config.json", "model-00001-of-00002.safetensors",
		"model-00002-of-00002.safetensors", "model.safetensors.index.json", "special_tokens_map.json",
		"tokenizer.json", "tokenizer_config.json"}
	if !slices.Equal(names, want) || !slices.Equal(m.Files, want) {
		t.Errorf("files on disk %v, Model.Files %v, want %v", names, m.Files, want)
	}
	if m.Size != size {
		t.Errorf("Model.Size = %d, files hold %d", m.Size, size)
	}

	// Every JSON file is valid, and config.json matches the tensors.
	for _, f := range m.Files {
		if !strings.HasSuffix(f, ".json") {
			continue
		}
		b, err := os.ReadFile(filepath.Join(m.Dir, f))
		if err != nil {
			t.Fatal(err)
		}
		if !json.Valid(b) {
			t.Errorf("%s: invalid JSON", f)
		}
	}
	var cfg struct {
		Architectures []string `json:"architectures"`
		Hidden        int64    `json:"hidden_size"`
		Intermediate  int64    `json:"intermediate_size"`
		Layers        int      `json:"num_hidden_layers"`
		Heads         int64    `json:"num_attention_heads"`
		KVHeads       int64    `json:"num_key_value_heads"`
		HeadDim       int64    `json:"head_dim"`
		Vocab         int64    `json:"vocab_size"`
		DType         string   `json:"torch_dtype"`
	}
	readJSON(t, filepath.Join(m.Dir, "config.json"), &cfg)
	if cfg.DType != "bfloat16" || len(cfg.Architectures) != 1 || cfg.Heads*cfg.HeadDim != cfg.Hidden {
		t.Errorf("implausible config %+v", cfg)
	}
	shapes := map[string][]int64{}
	for _, s := range m.Shards {
		for _, e := range parseShard(t, filepath.Join(m.Dir, s)) {
			shapes[e.Name] = e.Shape
			weights += e.DataOffsets[1] - e.DataOffsets[0]
		}
	}
	kv := cfg.KVHeads * cfg.HeadDim
	wantShapes := map[string][]int64{
		"model.embed_tokens.weight": {cfg.Vocab, cfg.Hidden},
		"lm_head.weight":            {cfg.Vocab, cfg.Hidden},
		"model.norm.weight":         {cfg.Hidden},
	}
	for i := range cfg.Layers {
		p := "model.layers." + strconv.Itoa(i) + "."
		wantShapes[p+"input_layernorm.weight"] = []int64{cfg.Hidden}
		wantShapes[p+"post_attention_layernorm.weight"] = []int64{cfg.Hidden}
		wantShapes[p+"self_attn.q_proj.weight"] = []int64{cfg.Hidden, cfg.Hidden}
		wantShapes[p+"self_attn.k_proj.weight"] = []int64{kv, cfg.Hidden}
		wantShapes[p+"self_attn.v_proj.weight"] = []int64{kv, cfg.Hidden}
		wantShapes[p+"self_attn.o_proj.weight"] = []int64{cfg.Hidden, cfg.Hidden}
		wantShapes[p+"mlp.gate_proj.weight"] = []int64{cfg.Intermediate, cfg.Hidden}
		wantShapes[p+"mlp.up_proj.weight"] = []int64{cfg.Intermediate, cfg.Hidden}
		wantShapes[p+"mlp.down_proj.weight"] = []int64{cfg.Hidden, cfg.Intermediate}
	}
	if len(shapes) != len(wantShapes) {
		t.Errorf("%d tensors, config implies %d", len(shapes), len(wantShapes))
	}
	for name, want := range wantShapes {
		if !slices.Equal(shapes[name], want) {
			t.Errorf("%s: shape %v, config implies %v", name, shapes[name], want)
		}
	}
	if d := math.Abs(float64(weights)/DefaultTotalSize - 1); d > 0.1 {
		t.Errorf("default model has %d weight bytes, want about %d", weights, DefaultTotalSize)
	}
}

func readJSON(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func TestTokenizer(t *testing.T) {
	m := generate(t, Options{Seed: 5, TotalSize: 1 << 20})
	var tok struct {
		Version     string `json:"version"`
		AddedTokens []struct {
			ID      int    `json:"id"`
			Content string `json:"content"`
			Special bool   `json:"special"`
		} `json:"added_tokens"`
		Model struct {
			Type   string         `json:"type"`
			Vocab  map[string]int `json:"vocab"`
			Merges []string       `json:"merges"`
		} `json:"model"`
	}
	readJSON(t, filepath.Join(m.Dir, "tokenizer.json"), &tok)
	if tok.Version != "1.0" || tok.Model.Type != "BPE" || len(tok.AddedTokens) != 3 {
		t.Fatalf("tokenizer: version %q, model %q, %d added tokens", tok.Version, tok.Model.Type, len(tok.AddedTokens))
	}
	ids := map[int]bool{}
	for _, id := range tok.Model.Vocab {
		ids[id] = true
	}
	for i := range len(tok.Model.Vocab) {
		if !ids[i] {
			t.Fatalf("vocab ids not 0..%d: %d missing", len(tok.Model.Vocab)-1, i)
		}
	}
	for _, a := range tok.AddedTokens {
		if tok.Model.Vocab[a.Content] != a.ID || !a.Special {
			t.Errorf("added token %+v not in vocab", a)
		}
	}
	if len(tok.Model.Merges) == 0 {
		t.Fatal("no merges")
	}
	for _, mg := range tok.Model.Merges {
		l, r, ok := strings.Cut(mg, " ")
		_, okl := tok.Model.Vocab[l]
		_, okr := tok.Model.Vocab[r]
		_, okm := tok.Model.Vocab[l+r]
		if !ok || !okl || !okr || !okm {
			t.Errorf("merge %q: parts or result missing from vocab", mg)
		}
	}
	var cfg struct {
		Vocab int `json:"vocab_size"`
	}
	readJSON(t, filepath.Join(m.Dir, "config.json"), &cfg)
	if len(tok.Model.Vocab) > cfg.Vocab {
		t.Errorf("tokenizer has %d tokens, config vocab_size %d", len(tok.Model.Vocab), cfg.Vocab)
	}
}

func TestSingleShard(t *testing.T) {
	m := generate(t, Options{Seed: 1, TotalSize: 1 << 20, Shards: 1})
	if !slices.Equal(m.Shards, []string{"model.safetensors"}) {
		t.Fatalf("Shards = %v", m.Shards)
	}
	if slices.Contains(m.Files, "model.safetensors.index.json") {
		t.Error("index written for a single shard")
	}
	if _, err := os.Stat(filepath.Join(m.Dir, "model.safetensors.index.json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("index file: %v", err)
	}
	ts := parseShard(t, filepath.Join(m.Dir, "model.safetensors"))
	if ts[0].Name != "model.embed_tokens.weight" || ts[len(ts)-1].Name != "lm_head.weight" {
		t.Errorf("tensor order: first %s, last %s", ts[0].Name, ts[len(ts)-1].Name)
	}
}

func TestRefusesNonEmptyDir(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "x"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Generate(dir, Options{}); err == nil {
		t.Fatal("Generate into a non-empty directory succeeded")
	}
	// An existing empty directory is fine.
	empty := t.TempDir()
	if _, err := Generate(empty, Options{TotalSize: 1 << 16}); err != nil {
		t.Fatal(err)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{TotalSize: -1}, {Shards: -1}, {Layers: -1},
		{TotalSize: 1 << 20, Layers: 2, Shards: 50}, // more shards than tensors
	} {
		dir := filepath.Join(t.TempDir(), "m")
		if _, err := Generate(dir, o); err == nil {
			t.Errorf("Generate(%+v) succeeded", o)
		}
	}
	// Without Layers, enough layers are made for the shards.
	m := generate(t, Options{TotalSize: 1 << 20, Shards: 50})
	for _, s := range m.Shards {
		parseShard(t, filepath.Join(m.Dir, s))
	}
}

func TestPlanArchSizes(t *testing.T) {
	for size := int64(1 << 20); size <= 1<<40; size *= 3 {
		a, err := PlanArch(Options{TotalSize: size})
		if err != nil {
			t.Fatal(err)
		}
		got := 2 * a.Params()
		if d := math.Abs(float64(got)/float64(size) - 1); d > 0.1 {
			t.Errorf("size %d: plan %+v holds %d bytes (%.0f%% off)", size, a, got, 100*d)
		}
		if a.Heads*a.HeadDim != a.Hidden || a.Heads%a.KVHeads != 0 || a.Vocab < minVocab {
			t.Errorf("size %d: inconsistent plan %+v", size, a)
		}
	}
	a, err := PlanArch(Options{TotalSize: 1 << 30, Layers: 3})
	if err != nil || a.Layers != 3 {
		t.Errorf("PlanArch with 3 layers: %+v, %v", a, err)
	}
	// Tiny sizes round up to the smallest model.
	m := generate(t, Options{TotalSize: 1})
	if m.Size <= 0 {
		t.Error("empty tiny model")
	}
}

func TestRandomData(t *testing.T) {
	var b bytes.Buffer
	data := RandomData(1)
	if err := data("model.layers.0.mlp.up_proj.weight", 1<<20, &b); err != nil {
		t.Fatal(err)
	}
	var sum, sq float64
	n := b.Len() / 2
	for i := 0; i < b.Len(); i += 2 {
		v := float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(b.Bytes()[i:])) << 16))
		sum += v
		sq += v * v
	}
	mean, std := sum/float64(n), math.Sqrt(sq/float64(n))
	if math.Abs(mean) > 0.001 || math.Abs(std-0.02) > 0.001 {
		t.Errorf("weights: mean %g, stddev %g, want about 0 and 0.02", mean, std)
	}
	// They compress a little, like real bf16 weights: neither constant nor
	// incompressible noise.
	var z bytes.Buffer
	fw, _ := flate.NewWriter(&z, flate.BestSpeed)
	fw.Write(b.Bytes())
	fw.Close()
	if r := float64(z.Len()) / float64(b.Len()); r < 0.7 || r > 0.95 {
		t.Errorf("flate ratio %.3f, want 0.7-0.95", r)
	}
	// A tensor's data depends only on the seed and its name, however it is
	// written.
	var b2 bytes.Buffer
	if err := data("model.layers.0.mlp.up_proj.weight", 1<<20, &b2); err != nil || !bytes.Equal(b.Bytes(), b2.Bytes()) {
		t.Errorf("RandomData not repeatable (%v)", err)
	}
	var odd bytes.Buffer
	if err := data("x", 13, &odd); err != nil || odd.Len() != 13 {
		t.Errorf("odd length: %d bytes, %v", odd.Len(), err)
	}
}

func TestEncodeHeader(t *testing.T) {
	ts := []Tensor{{"a", "F32", []int64{2, 3}}, {"b<&>", "I64", nil}, {"c", "BF16", []int64{0}}}
	h, err := EncodeHeader(ts, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	if len(h)%8 != 0 || binary.LittleEndian.Uint64(h) != uint64(len(h)-8) {
		t.Fatalf("header length prefix %d for %d bytes", binary.LittleEndian.Uint64(h), len(h))
	}
	want := `{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,24]},` +
		`"b<&>":{"dtype":"I64","shape":[],"data_offsets":[24,32]},"c":{"dtype":"BF16","shape":[0],"data_offsets":[32,32]}}`
	if got := strings.TrimRight(string(h[8:]), " "); got != want {
		t.Errorf("header\n%s\nwant\n%s", got, want)
	}
	for _, bad := range [][]Tensor{
		{{"a", "F32", nil}, {"a", "F32", nil}},
		{{"a", "F99", nil}},
		{{"", "F32", nil}},
		{{"__metadata__", "F32", nil}},
		{{"a", "F32", []int64{-1}}},
	} {
		if _, err := EncodeHeader(bad, nil); err == nil {
			t.Errorf("EncodeHeader(%v) succeeded", bad)
		}
	}
}

func TestWriteSafetensors(t *testing.T) {
	ts := []Tensor{{"x", "F32", []int64{4}}, {"y", "U8", []int64{3}}}
	path := filepath.Join(t.TempDir(), "z.safetensors")
	var b bytes.Buffer
	if err := WriteSafetensors(&b, ts, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if got := parseShard(t, path); len(got) != 2 {
		t.Errorf("parsed %v", got)
	}
	short := func(_ string, n int64, w io.Writer) error {
		_, err := w.Write(make([]byte, n-1))
		return err
	}
	if err := WriteSafetensors(io.Discard, ts, short); err == nil {
		t.Error("short tensor data accepted")
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int64{
		"1000000": 1000000, "512MiB": 512 << 20, "2GiB": 2 << 30, "2gib": 2 << 30, "64k": 64 << 10,
		"1.5GB": 1500000000, "1.5GiB": 3 << 29, "3MB": 3000000, "7B": 7, "1 TiB": 1 << 40,
	} {
		if got, err := ParseSize(in); err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GiB", "12XB", "-1", "1e3", "99999999999TiB"} {
		if got, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) = %d, want error", bad, got)
		}
	}
}

// BenchmarkGenerate writes a 256 MiB model in four shards per iteration; its
// MB/s includes the file writes.
func BenchmarkGenerate(b *testing.B) {
	opts := Options{Seed: 1, TotalSize: 256 << 20, Shards: 4}
	for range b.N {
		dir := filepath.Join(b.TempDir(), "m")
		m, err := Generate(dir, opts)
		if err != nil {
			b.Fatal(err)
		}
		b.SetBytes(m.Size)
		b.StopTimer()
		os.RemoveAll(dir)
		b.StartTimer()
	}
}

// BenchmarkRandomData measures weight generation alone.
func BenchmarkRandomData(b *testing.B) {
	data := RandomData(1)
	b.SetBytes(64 << 20)
	for b.Loop() {
		if err := data("w", 64<<20, io.Discard); err != nil {
			b.Fatal(err)
		}
	}
}
