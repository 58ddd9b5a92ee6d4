package pack

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// vtSourceFiles lists the regular files under dir as SourceFiles.
func vtSourceFiles(t testing.TB, dir string) []SourceFile {
	t.Helper()
	var out []SourceFile
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		out = append(out, SourceFile{
			Rel: filepath.ToSlash(rel), Path: p,
			Size: info.Size(), Mode: info.Mode(), ModTime: info.ModTime(),
		})
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// vtIndex renders an index file; weightMap is a list of tensor, shard pairs
// in file order.
func vtIndex(totalSize string, weightMap ...string) []byte {
	var b strings.Builder
	b.WriteString("{\n  \"metadata\": {")
	if totalSize != "" {
		fmt.Fprintf(&b, "\"total_size\": %s", totalSize)
	}
	b.WriteString("},\n  \"weight_map\": {")
	for i := 0; i+1 < len(weightMap); i += 2 {
		if i > 0 {
			b.WriteString(",")
		}
		fmt.Fprintf(&b, "\n    %q: %q", weightMap[i], weightMap[i+1])
	}
	b.WriteString("\n  }\n}\n")
	return []byte(b.String())
}

const (
	vtShard1 = "model-00001-of-00002.safetensors"
	vtShard2 = "model-00002-of-00002.safetensors"
)

// vtTwoShards writes a valid two-shard model with its index. The index lists
// a tensor of shard 2 first (as sorted real indexes often do), so shard 2
// loads first.
func vtTwoShards(t testing.TB, dir string) {
	stWrite(t, dir, vtShard1, stFile(t,
		stTensor{"model.embed_tokens.weight", "BF16", []int64{32, 8}},
		stTensor{"model.layers.0.mlp.up_proj.weight", "BF16", []int64{16, 8}},
	))
	stWrite(t, dir, vtShard2, stFile(t,
		stTensor{"lm_head.weight", "BF16", []int64{32, 8}},
		stTensor{"model.norm.weight", "F32", []int64{8}},
	))
	stWrite(t, dir, "model.safetensors.index.json", vtIndex("1234", // deliberately not the real total
		"lm_head.weight", vtShard2,
		"model.embed_tokens.weight", vtShard1,
		"model.layers.0.mlp.up_proj.weight", vtShard1,
		"model.norm.weight", vtShard2,
	))
	stWrite(t, dir, "config.json", []byte(`{"architectures": ["LlamaForCausalLM"], "hidden_size": 8}`))
}

func TestValidateModelValid(t *testing.T) {
	tests := []struct {
		name      string
		setup     func(t *testing.T, dir string)
		wantOrder []string
	}{
		{"single shard", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.safetensors", stFile(t, stTensor{"w", "F16", []int64{4, 4}}))
			stWrite(t, dir, "config.json", []byte(`{"a": [1, 2.5e300, -3, true, null, {"b": "c"}]}`))
			stWrite(t, dir, "tokenizer.json", []byte("  \n[]\n\n"))
			stWrite(t, dir, "README.md", []byte("not json {"))
		}, []string{"model.safetensors"}},
		{"index with two shards", func(t *testing.T, dir string) {
			vtTwoShards(t, dir)
		}, []string{vtShard2, vtShard1}},
		{"index, subdirectory index, and loose files", func(t *testing.T, dir string) {
			vtTwoShards(t, dir)
			stWrite(t, dir, "a-extra.safetensors", stFile(t, stTensor{"x", "U8", []int64{3}}))
			stWrite(t, dir, "unet/diffusion_pytorch_model.safetensors", stFile(t, stTensor{"conv.weight", "F32", []int64{2, 2}}))
			stWrite(t, dir, "unet/diffusion_pytorch_model.safetensors.index.json", vtIndex("",
				"conv.weight", "diffusion_pytorch_model.safetensors"))
			stWrite(t, dir, "vae/diffusion_pytorch_model.safetensors", stFile(t, stTensor{"z", "F32", []int64{2}}))
			// A pytorch index only needs its shards to exist; they
			// join the order after the earlier indexes' shards.
			stWrite(t, dir, "pytorch_model-00001-of-00001.bin", []byte("pickle"))
			stWrite(t, dir, "pytorch_model.bin.index.json", vtIndex("6", "w", "pytorch_model-00001-of-00001.bin"))
		}, []string{
			vtShard2, vtShard1,
			"pytorch_model-00001-of-00001.bin",
			"unet/diffusion_pytorch_model.safetensors",
			"a-extra.safetensors",
			"vae/diffusion_pytorch_model.safetensors",
		}},
		{"no weights", func(t *testing.T, dir string) {
			stWrite(t, dir, "config.json", []byte(`{}`))
		}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			files := vtSourceFiles(t, dir)
			info, err := ValidateModel(context.Background(), files)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(info.ShardOrder, tc.wantOrder) {
				t.Errorf("ShardOrder = %q, want %q", info.ShardOrder, tc.wantOrder)
			}
			var nst int
			for _, f := range files {
				if strings.HasSuffix(f.Rel, ".safetensors") {
					nst++
					h := info.Headers[f.Rel]
					if h == nil {
						t.Errorf("no header for %s", f.Rel)
						continue
					}
					if end := h.Tensors[len(h.Tensors)-1].End; 8+h.HeaderSize+end != f.Size {
						t.Errorf("%s: header %d + data %d != size %d", f.Rel, h.HeaderSize, end, f.Size)
					}
				}
			}
			if len(info.Headers) != nst {
				t.Errorf("%d headers for %d safetensors files", len(info.Headers), nst)
			}
		})
	}
}

func TestValidateModelErrors(t *testing.T) {
	tests := []struct {
		name     string
		setup    func(t *testing.T, dir string)
		wantFile string
		want     string
	}{
		{"truncated shard", func(t *testing.T, dir string) {
			vtTwoShards(t, dir)
			p := filepath.Join(dir, vtShard2)
			st, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(p, st.Size()-5); err != nil {
				t.Fatal(err)
			}
		}, vtShard2, "truncated: tensors need 544 bytes of data but only 539 follow the header"},
		{"corrupt header JSON", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.safetensors", stRaw(`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},,}`, 1))
		}, "model.safetensors", "invalid JSON at byte"},
		{"header length beyond file", func(t *testing.T, dir string) {
			f := stFile(t, stTensor{"w", "U8", []int64{1}})
			stWrite(t, dir, "model.safetensors", f[:30])
		}, "model.safetensors", "runs past the end of the file: only 22 bytes follow"},
		{"huge header length", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.safetensors", []byte{0, 0, 0, 0, 0, 1, 0, 0, '{', '}'})
		}, "model.safetensors", "header length 1099511627776 exceeds limit"},
		{"too short", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.safetensors", nil)
		}, "model.safetensors", "file is 0 bytes, too short"},
		{"duplicate key", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.safetensors", stRaw(
				`{"w":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"w":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, 2))
		}, "model.safetensors", `duplicate key "w"`},
		{"unknown dtype", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.safetensors", stRaw(`{"w":{"dtype":"Q4_K","shape":[1],"data_offsets":[0,1]}}`, 1))
		}, "model.safetensors", `tensor "w": unknown dtype "Q4_K"`},
		{"shape/offset mismatch", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.safetensors", stRaw(
				`{"model.layers.0.mlp.up_proj.weight":{"dtype":"BF16","shape":[16,64],"data_offsets":[0,1024]}}`, 1024))
		}, "model.safetensors", `tensor "model.layers.0.mlp.up_proj.weight": data_offsets [0 1024] hold 1024 bytes but shape [16 64] of BF16 needs 2048`},
		{"overlapping offsets", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.safetensors", stRaw(
				`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, 12))
		}, "model.safetensors", `tensor "b": data_offsets [4 12] overlap tensor "a", which ends at 8`},
		{"hole between tensors", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.safetensors", stRaw(
				`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}`, 24))
		}, "model.safetensors", `hole in data: bytes [8 16) between tensor "a" and tensor "b"`},
		{"index names missing shard", func(t *testing.T, dir string) {
			vtTwoShards(t, dir)
			if err := os.Remove(filepath.Join(dir, vtShard2)); err != nil {
				t.Fatal(err)
			}
		}, "model.safetensors.index.json", `weight_map names shard "model-00002-of-00002.safetensors", which is not among the model's files`},
		{"subdirectory index names missing shard", func(t *testing.T, dir string) {
			stWrite(t, dir, "diffusion_pytorch_model.safetensors", stFile(t, stTensor{"w", "U8", []int64{1}}))
			stWrite(t, dir, "unet/diffusion_pytorch_model.safetensors.index.json", vtIndex("1",
				"w", "diffusion_pytorch_model.safetensors"))
		}, "unet/diffusion_pytorch_model.safetensors.index.json", `(looked for unet/diffusion_pytorch_model.safetensors)`},
		{"index shard escapes directory", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.safetensors", stFile(t, stTensor{"w", "U8", []int64{1}}))
			stWrite(t, dir, "sub/model.safetensors.index.json", vtIndex("", "w", "../../model.safetensors"))
		}, "sub/model.safetensors.index.json", `outside the model directory`},
		{"index tensor missing from shard", func(t *testing.T, dir string) {
			vtTwoShards(t, dir)
			stWrite(t, dir, "model.safetensors.index.json", vtIndex("1",
				"lm_head.weight", vtShard2,
				"model.embed_tokens.weight", vtShard1,
				"model.layers.0.mlp.gate_proj.weight", vtShard1,
				"model.layers.0.mlp.up_proj.weight", vtShard1,
				"model.norm.weight", vtShard2,
			))
		}, "model.safetensors.index.json", `weight_map puts tensor "model.layers.0.mlp.gate_proj.weight" in shard "model-00001-of-00002.safetensors", but that shard has no such tensor`},
		{"index tensor in wrong shard", func(t *testing.T, dir string) {
			vtTwoShards(t, dir)
			stWrite(t, dir, "model.safetensors.index.json", vtIndex("1",
				"lm_head.weight", vtShard1,
				"model.embed_tokens.weight", vtShard1,
				"model.layers.0.mlp.up_proj.weight", vtShard1,
				"model.norm.weight", vtShard2,
			))
		}, "model.safetensors.index.json", `weight_map puts tensor "lm_head.weight" in shard "model-00001-of-00002.safetensors", but that shard has no such tensor`},
		{"shard tensor missing from index", func(t *testing.T, dir string) {
			vtTwoShards(t, dir)
			stWrite(t, dir, "model.safetensors.index.json", vtIndex("1",
				"lm_head.weight", vtShard2,
				"model.embed_tokens.weight", vtShard1,
				"model.layers.0.mlp.up_proj.weight", vtShard1,
			))
		}, "model.safetensors.index.json", `shard "model-00002-of-00002.safetensors" has tensor "model.norm.weight", which weight_map does not name`},
		{"index shard not safetensors", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.bin", []byte("x"))
			stWrite(t, dir, "model.safetensors.index.json", vtIndex("", "w", "model.bin"))
		}, "model.safetensors.index.json", `weight_map names shard "model.bin", which is not a .safetensors file`},
		{"index missing weight_map", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.safetensors.index.json", []byte(`{"metadata": {"total_size": 4}}`))
		}, "model.safetensors.index.json", `missing "weight_map"`},
		{"index total_size not a number", func(t *testing.T, dir string) {
			vtTwoShards(t, dir)
			stWrite(t, dir, "model.safetensors.index.json", vtIndex(`"big"`, "lm_head.weight", vtShard2))
		}, "model.safetensors.index.json", `metadata: total_size is a string, want a number`},
		{"bin index names missing shard", func(t *testing.T, dir string) {
			stWrite(t, dir, "pytorch_model-00001-of-00002.bin", []byte("x"))
			stWrite(t, dir, "pytorch_model.bin.index.json", vtIndex("2",
				"a", "pytorch_model-00001-of-00002.bin", "b", "pytorch_model-00002-of-00002.bin"))
		}, "pytorch_model.bin.index.json", `weight_map names shard "pytorch_model-00002-of-00002.bin", which is not among the model's files`},
		{"invalid JSON file", func(t *testing.T, dir string) {
			stWrite(t, dir, "model.safetensors", stFile(t, stTensor{"w", "U8", []int64{1}}))
			stWrite(t, dir, "config.json", []byte(`{"hidden_size": 8,}`))
		}, "config.json", `invalid JSON at byte 18: invalid character '}'`},
		{"truncated JSON file", func(t *testing.T, dir string) {
			stWrite(t, dir, "tokenizer.json", []byte(`{"model": {"vocab": {"a": 1`))
		}, "tokenizer.json", `unexpected end of JSON`},
		{"trailing garbage JSON", func(t *testing.T, dir string) {
			stWrite(t, dir, "generation_config.json", []byte("{\"do_sample\": true}\n}"))
		}, "generation_config.json", `unexpected data after the JSON value at byte 19`},
		{"two JSON values", func(t *testing.T, dir string) {
			stWrite(t, dir, "config.json", []byte("{} {}"))
		}, "config.json", `unexpected data after the JSON value`},
		{"empty JSON file", func(t *testing.T, dir string) {
			stWrite(t, dir, "special_tokens_map.json", []byte(" \n"))
		}, "special_tokens_map.json", `no JSON value`},
		{"first failing file in Rel order", func(t *testing.T, dir string) {
			for i := range 20 {
				stWrite(t, dir, fmt.Sprintf("z%02d.json", i), []byte("{"))
				stWrite(t, dir, fmt.Sprintf("m%02d.safetensors", i), stFile(t, stTensor{"w", "U8", []int64{1}}))
			}
			stWrite(t, dir, "m07.safetensors", []byte("short"))
			stWrite(t, dir, "m13.safetensors", []byte("shorter"))
		}, "m07.safetensors", "file is 5 bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			tc.setup(t, dir)
			files := vtSourceFiles(t, dir)
			info, err := ValidateModel(context.Background(), files)
			if err == nil {
				t.Fatalf("no error; info %+v", info)
			}
			t.Log(err)
			var ie *InputError
			if !errors.As(err, &ie) {
				t.Fatalf("error %q (%T) is not an *InputError", err, err)
			}
			if ie.File != tc.wantFile {
				t.Errorf("InputError.File = %q, want %q", ie.File, tc.wantFile)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q\ndoes not contain %q", err, tc.want)
			}
			if !strings.HasPrefix(err.Error(), tc.wantFile+": ") {
				t.Errorf("error %q does not start with the file name", err)
			}
		})
	}
}

func TestValidateModelDeterministic(t *testing.T) {
	dir := t.TempDir()
	for i := range 40 {
		data := stFile(t, stTensor{"w", "U8", []int64{int64(i + 1)}})
		if i%3 == 2 {
			data = data[:len(data)-1] // truncated
		}
		stWrite(t, dir, fmt.Sprintf("shard-%02d.safetensors", i), data)
	}
	files := vtSourceFiles(t, dir)
	// Present them out of order.
	for i, j := 0, len(files)-1; i < j; i, j = i+1, j-1 {
		files[i], files[j] = files[j], files[i]
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(8))
	for range 20 {
		_, err := ValidateModel(context.Background(), files)
		var ie *InputError
		if !errors.As(err, &ie) || ie.File != "shard-02.safetensors" {
			t.Fatalf("err = %v, want an InputError for shard-02.safetensors", err)
		}
	}
}

func TestValidateModelSizeChanged(t *testing.T) {
	dir := t.TempDir()
	stWrite(t, dir, "model.safetensors", stFile(t, stTensor{"w", "U8", []int64{4}}))
	files := vtSourceFiles(t, dir)
	files[0].Size += 3
	_, err := ValidateModel(context.Background(), files)
	var ie *InputError
	if !errors.As(err, &ie) || ie.File != "model.safetensors" || !strings.Contains(err.Error(), "file changed while packing: size 65, was 68") {
		t.Fatalf("err = %v, want a size-change InputError", err)
	}
}

func TestValidateModelCanceled(t *testing.T) {
	dir := t.TempDir()
	vtTwoShards(t, dir)
	files := vtSourceFiles(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := ValidateModel(ctx, files)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	var ie *InputError
	if errors.As(err, &ie) {
		t.Errorf("cancellation reported as an input error: %v", err)
	}
}

func TestParseIndex(t *testing.T) {
	tests := []struct {
		name      string
		in        string
		wantOrder []string
		wantErr   string
	}{
		{"order of first appearance", `{"metadata":{"total_size":10,"format":"pt","x":{"y":[1]}},"extra":[{}],"weight_map":{"a":"s2","b":"s1","c":"s2","d":"s3"}}`,
			[]string{"s2", "s1", "s3"}, ""},
		{"no metadata", `{"weight_map":{}}`, nil, ""},
		{"float total_size", `{"metadata":{"total_size":1.5e10},"weight_map":{"a":"s"}}`, []string{"s"}, ""},
		{"empty", ``, nil, "unexpected end of JSON"},
		{"not object", `[]`, nil, "index is an array, want an object"},
		{"weight_map not object", `{"weight_map":["a"]}`, nil, "weight_map is an array, want an object"},
		{"metadata not object", `{"metadata":1,"weight_map":{}}`, nil, "metadata is a number, want an object"},
		{"total_size null", `{"metadata":{"total_size":null},"weight_map":{}}`, nil, "metadata: total_size is null, want a number"},
		{"shard not string", `{"weight_map":{"a":1}}`, nil, `weight_map: tensor "a" maps to a number, want a shard file name`},
		{"shard empty", `{"weight_map":{"a":""}}`, nil, `weight_map: tensor "a" maps to an empty shard file name`},
		{"duplicate tensor", `{"weight_map":{"a":"s","a":"t"}}`, nil, `weight_map: tensor "a" listed twice`},
		{"duplicate weight_map", `{"weight_map":{},"weight_map":{}}`, nil, `duplicate key "weight_map"`},
		{"trailing garbage", `{"weight_map":{}} ,`, nil, "unexpected data after the JSON value"},
		{"syntax error", `{"weight_map":{"a" "s"}}`, nil, "invalid JSON at byte"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			order, wm, err := parseIndex(strings.NewReader(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(order, tc.wantOrder) {
				t.Errorf("order = %q, want %q", order, tc.wantOrder)
			}
			if wm == nil {
				t.Errorf("weightMap is nil")
			}
		})
	}
}
