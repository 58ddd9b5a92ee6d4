package pack

import (
	"path"
	"sort"
	"strings"
)

// weightExts are file types that always get a layer of their own, whatever
// their size: a server reads them after the configs, one by one.
var weightExts = map[string]bool{
	".safetensors": true, ".bin": true, ".gguf": true, ".pt": true, ".pth": true,
	".ckpt": true, ".onnx": true, ".msgpack": true, ".h5": true, ".nemo": true,
}

// layerPlan is one layer to build.
type layerPlan struct {
	Entries []tarEntry
	// Small marks the first layer: configs, tokenizer and index files that
	// a server reads before the weights (prefetched in lazy formats).
	Small bool
}

// files lists the layer's model-relative paths.
func (p layerPlan) files() []string {
	out := make([]string, len(p.Entries))
	for i, e := range p.Entries {
		out[i] = e.File.Rel
	}
	return out
}

func (p layerPlan) bytes() int64 {
	var n int64
	for _, e := range p.Entries {
		n += e.File.Size
	}
	return n
}

// isLarge reports whether f gets a layer of its own.
func isLarge(f SourceFile, threshold int64) bool {
	return weightExts[strings.ToLower(path.Ext(f.Rel))] || f.Size >= threshold
}

// planLayers orders the model into layers: the small files together first,
// then one layer per large file in load order (shards in the order their
// index names them, then other large files by name).
func planLayers(files []SourceFile, info *ModelInfo, prefix string, threshold int64) []layerPlan {
	var small []tarEntry
	large := map[string]SourceFile{}
	for _, f := range files {
		if isLarge(f, threshold) {
			large[f.Rel] = f
		} else {
			small = append(small, tarEntry{Name: layerName(prefix, f.Rel), File: f})
		}
	}
	var plans []layerPlan
	if len(small) > 0 {
		plans = append(plans, layerPlan{Entries: small, Small: true})
	}
	add := func(rel string) {
		if f, ok := large[rel]; ok {
			plans = append(plans, layerPlan{Entries: []tarEntry{{Name: layerName(prefix, rel), File: f}}})
			delete(large, rel)
		}
	}
	if info != nil {
		for _, rel := range info.ShardOrder {
			add(rel)
		}
	}
	rest := make([]string, 0, len(large))
	for rel := range large {
		rest = append(rest, rel)
	}
	sort.Strings(rest)
	for _, rel := range rest {
		add(rel)
	}
	return plans
}
