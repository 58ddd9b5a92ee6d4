package standin_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/modelcar/modelcar/internal/standin"
)

func TestParseArgs(t *testing.T) {
	// As deploy/charts/vllm-modelcar/templates/deployment.yaml passes them.
	chart := []string{"--model", "/models/models", "--served-model-name", "org/llama", "--port", "8000",
		"--tensor-parallel-size", "2", "--load-format", "runai_streamer", "--max-model-len", "8192",
		"--gpu-memory-utilization", "0.85", "--enable-prefix-caching", "--max-num-seqs", "128", "--kv-cache-dtype", "fp8"}
	a, err := standin.ParseArgs(chart)
	if err != nil {
		t.Fatal(err)
	}
	if a.Model != "/models/models" || !reflect.DeepEqual(a.ServedModelNames, []string{"org/llama"}) || a.Port != 8000 ||
		a.TensorParallel != 2 || a.LoadFormat != "runai_streamer" || a.MaxModelLen != 8192 || a.GPUMemoryUtil != 0.85 ||
		a.MaxNumSeqs != 128 || a.Host != "" || a.EnforceEager {
		t.Errorf("%+v", a)
	}
	if !reflect.DeepEqual(a.Ignored, []string{"--enable-prefix-caching", "--kv-cache-dtype fp8"}) {
		t.Errorf("ignored %q", a.Ignored)
	}
	if got := strings.Join(a.NonDefault, ", "); !strings.Contains(got, "'model': '/models/models'") || !strings.Contains(got, "'tensor_parallel_size': 2") ||
		!strings.Contains(got, "'served_model_name': ['org/llama']") {
		t.Errorf("non-default args %s", got)
	}

	a, err = standin.ParseArgs([]string{"serve", "/m", "--served-model-name", "a", "b", "--port=9000", "-tp", "4",
		"--max_model_len", "32k", "--enforce-eager", "--api-key", "s3cret", "--disable-uvicorn-access-log"})
	if err != nil {
		t.Fatal(err)
	}
	if a.Model != "/m" || !reflect.DeepEqual(a.ServedModelNames, []string{"a", "b"}) || a.Port != 9000 || a.TensorParallel != 4 ||
		a.MaxModelLen != 32000 || !a.EnforceEager || a.APIKey != "s3cret" || !a.DisableAccessLog || a.LoadFormat != "auto" {
		t.Errorf("%+v", a)
	}
	if strings.Contains(strings.Join(a.NonDefault, " "), "s3cret") {
		t.Errorf("the API key is logged: %q", a.NonDefault)
	}
	if a, err = standin.ParseArgs([]string{"--model", "/m"}); err != nil || a.ServedModelNames[0] != "/m" || a.MaxModelLen != 0 || a.MaxNumSeqs != 256 {
		t.Errorf("defaults: %+v %v", a, err)
	}
	for _, bad := range [][]string{
		nil, {"--port", "80x", "--model", "/m"}, {"--model"}, {"/a", "/b"}, {"/a", "--model", "/b"},
		{"--model", "/m", "--tensor-parallel-size", "0"}, {"--model", "/m", "--gpu-memory-utilization", "1.5"},
		{"--model", "/m", "--max-model-len", "lots"}, {"--model", "/m", "--enforce-eager=yes"},
	} {
		if _, err := standin.ParseArgs(bad); err == nil {
			t.Errorf("ParseArgs(%q) accepted", bad)
		}
	}
}

func TestWeightFiles(t *testing.T) {
	dir := t.TempDir()
	touch := func(names ...string) {
		for _, n := range names {
			if err := os.WriteFile(filepath.Join(dir, n), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	touch("pytorch_model.bin", "training_args.bin", "optimizer.pt", "consolidated.pt")
	check := func(format string, want ...string) {
		t.Helper()
		got, err := standin.WeightFiles(dir, format)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s: %q, %v; want %q", format, got, err, want)
		}
	}
	check("auto", "pytorch_model.bin")
	check("pt", "consolidated.pt")
	check("dummy")
	if _, err := standin.WeightFiles(dir, "safetensors"); err == nil || !strings.Contains(err.Error(), "cannot find any model weights (*.safetensors) in "+dir) {
		t.Errorf("safetensors without any: %v", err)
	}
	touch("b.safetensors", "a.safetensors")
	check("auto", "a.safetensors", "b.safetensors")
	check("runai_streamer", "a.safetensors", "b.safetensors")
	// An index keeps the shards it names.
	if err := os.WriteFile(filepath.Join(dir, "model.safetensors.index.json"), []byte(`{"weight_map":{"x":"b.safetensors","y":"b.safetensors"}}`), 0o644); err != nil {
		t.Fatal(err)
	}
	check("auto", "b.safetensors")
	if _, err := standin.WeightFiles(filepath.Join(dir, "none"), "auto"); err == nil {
		t.Error("a missing directory was accepted")
	}
}
