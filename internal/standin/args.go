package standin

import (
	"fmt"
	"strconv"
	"strings"
)

// Args is what the stand-in takes from vLLM serve's command line.
type Args struct {
	Model             string   // --model, or the positional model
	ServedModelNames  []string // --served-model-name (one or more; the API serves the first); default: Model
	Host              string   // --host; default all interfaces
	Port              int      // --port; default 8000
	TensorParallel    int      // --tensor-parallel-size / -tp; default 1
	LoadFormat        string   // --load-format; default auto
	MaxModelLen       int      // --max-model-len; 0: the model's own
	GPUMemoryUtil     float64  // --gpu-memory-utilization; default 0.9
	MaxNumSeqs        int      // --max-num-seqs; default 256
	APIKey            string   // --api-key
	EnforceEager      bool     // --enforce-eager: no torch.compile, no CUDA graphs
	DisableAccessLog  bool     // --disable-uvicorn-access-log
	Ignored           []string // flags vLLM knows and the stand-in does not use, or does not know
	NonDefault        []string // "'name': value" of each flag given, in order, as vLLM logs them
	explicitModelFlag bool
}

// valueFlags are vLLM flags that take one value and that the stand-in
// reads; boolFlags take none.
var (
	valueFlags = map[string]bool{"--model": true, "--served-model-name": true, "--host": true, "--port": true,
		"--tensor-parallel-size": true, "-tp": true, "--load-format": true, "--max-model-len": true,
		"--gpu-memory-utilization": true, "--max-num-seqs": true, "--api-key": true}
	boolFlags = map[string]bool{"--enforce-eager": true, "--disable-uvicorn-access-log": true}
)

// ParseArgs reads vLLM serve's command line as the vllm-modelcar chart
// passes it: an optional leading "serve", an optional positional model,
// then flags as "--flag value" or "--flag=value". A flag it does not use is
// listed in Args.Ignored, never an error, and its value (the next word, when
// that does not start with "-") is skipped with it.
func ParseArgs(argv []string) (Args, error) {
	a := Args{Port: 8000, TensorParallel: 1, LoadFormat: "auto", GPUMemoryUtil: 0.9, MaxNumSeqs: 256}
	if len(argv) > 0 && argv[0] == "serve" {
		argv = argv[1:]
	}
	var positional []string
	for i := 0; i < len(argv); i++ {
		arg := argv[i]
		if !strings.HasPrefix(arg, "-") || arg == "-" {
			positional = append(positional, arg)
			continue
		}
		name, value, hasValue := strings.Cut(arg, "=")
		name = strings.Replace(name, "_", "-", -1) // vLLM accepts --max_model_len too
		switch {
		case boolFlags[name]:
			if hasValue {
				return Args{}, fmt.Errorf("flag %s takes no value, got %q", name, value)
			}
			a.NonDefault = append(a.NonDefault, pyKey(name)+": True")
			switch name {
			case "--enforce-eager":
				a.EnforceEager = true
			case "--disable-uvicorn-access-log":
				a.DisableAccessLog = true
			}
			continue
		case valueFlags[name]:
			if !hasValue {
				if i+1 >= len(argv) {
					return Args{}, fmt.Errorf("flag %s needs a value", name)
				}
				i++
				value = argv[i]
			}
			if name == "--served-model-name" { // nargs="+"
				names := []string{value}
				for ; !hasValue && i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-"); i++ {
					names = append(names, argv[i+1])
				}
				a.ServedModelNames = names
				quoted := make([]string, len(names))
				for i, n := range names {
					quoted[i] = pyValue(n)
				}
				a.NonDefault = append(a.NonDefault, fmt.Sprintf("%s: [%s]", pyKey(name), strings.Join(quoted, ", ")))
				continue
			}
			if err := a.set(name, value); err != nil {
				return Args{}, err
			}
			if name == "--api-key" {
				value = "<redacted>"
			}
			a.NonDefault = append(a.NonDefault, pyKey(name)+": "+pyValue(value))
		default:
			if !hasValue && i+1 < len(argv) && !strings.HasPrefix(argv[i+1], "-") {
				i++
				arg += " " + argv[i]
			}
			a.Ignored = append(a.Ignored, arg)
		}
	}
	switch {
	case len(positional) > 1:
		return Args{}, fmt.Errorf("unexpected arguments %q: want at most one positional model", positional[1:])
	case len(positional) == 1 && a.explicitModelFlag && positional[0] != a.Model:
		return Args{}, fmt.Errorf("model given twice: positional %q and --model %q", positional[0], a.Model)
	case len(positional) == 1:
		a.Model = positional[0]
	}
	if a.Model == "" {
		return Args{}, fmt.Errorf("no model: give --model PATH or the model as the first argument")
	}
	if len(a.ServedModelNames) == 0 {
		a.ServedModelNames = []string{a.Model}
	}
	return a, nil
}

func (a *Args) set(name, value string) error {
	var err error
	switch name {
	case "--model":
		a.Model, a.explicitModelFlag = value, true
	case "--host":
		a.Host = value
	case "--port":
		a.Port, err = strconv.Atoi(value)
		if err == nil && (a.Port < 0 || a.Port > 65535) {
			err = fmt.Errorf("out of range")
		}
	case "--tensor-parallel-size", "-tp":
		a.TensorParallel, err = strconv.Atoi(value)
		if err == nil && a.TensorParallel < 1 {
			err = fmt.Errorf("want 1 or more")
		}
	case "--load-format":
		a.LoadFormat = value
	case "--max-model-len":
		a.MaxModelLen, err = parseTokens(value)
	case "--gpu-memory-utilization":
		a.GPUMemoryUtil, err = strconv.ParseFloat(value, 64)
		if err == nil && (a.GPUMemoryUtil <= 0 || a.GPUMemoryUtil > 1) {
			err = fmt.Errorf("want a fraction in (0, 1]")
		}
	case "--max-num-seqs":
		a.MaxNumSeqs, err = strconv.Atoi(value)
		if err == nil && a.MaxNumSeqs < 1 {
			err = fmt.Errorf("want 1 or more")
		}
	case "--api-key":
		a.APIKey = value
	}
	if err != nil {
		return fmt.Errorf("flag %s %q: %w", name, value, err)
	}
	return nil
}

// parseTokens reads a token count as vLLM's --max-model-len does: an
// integer, or one with a k/m suffix (k = 1000, K = 1024, m = 10^6, M = 2^20);
// "auto" and -1 are 0, the model's own.
func parseTokens(s string) (int, error) {
	if s == "auto" || s == "-1" { // the model's own
		return 0, nil
	}
	mult := 1
	switch {
	case strings.HasSuffix(s, "k"):
		mult = 1000
	case strings.HasSuffix(s, "K"):
		mult = 1024
	case strings.HasSuffix(s, "m"):
		mult = 1000 * 1000
	case strings.HasSuffix(s, "M"):
		mult = 1 << 20
	}
	if mult > 1 {
		s = s[:len(s)-1]
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("want a positive token count such as 4096 or 32k")
	}
	return n * mult, nil
}

// pyKey is a flag's name as vLLM logs its non-default arguments.
func pyKey(flag string) string {
	if flag == "-tp" {
		flag = "--tensor-parallel-size"
	}
	return "'" + strings.ReplaceAll(strings.TrimLeft(flag, "-"), "-", "_") + "'"
}

// pyValue is a value as Python prints it: numbers bare, strings quoted.
func pyValue(v string) string {
	if _, err := strconv.ParseFloat(v, 64); err == nil {
		return v
	}
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(v) + "'"
}
