package plan

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestPlanReadFacts(t *testing.T) {
	f, err := ReadFacts(filepath.Join(fixtures, "facts-stargz.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if f.KubernetesVersion != "1.35.1" || f.Snapshotter != "stargz" || f.ImageVolumes != nil || f.GPUsPerNode != 8 ||
		f.NodeImageCacheGiB != 500 || f.GPUNodeWarmPool == nil || *f.GPUNodeWarmPool || f.LinkMbit != 10000 {
		t.Errorf("facts = %+v", f)
	}
	if got := f.Known(); strings.Join(got, ",") != "kubernetesVersion,containerRuntime,snapshotter,nodeImageCacheGiB,gpusPerNode,gpuNodeWarmPool,prepull,linkMbit" {
		t.Errorf("known = %q", got)
	}
	j, err := ReadFacts(filepath.Join(fixtures, "facts-old-overlayfs.json"))
	if err != nil || j.KubernetesVersion != "1.30.4" || j.Snapshotter != "overlayfs" || j.GPUsPerNode != 4 {
		t.Errorf("JSON facts = %+v, %v", j, err)
	}
}

// TestPlanReadFactsErrors: every error names the file and the key.
func TestPlanReadFactsErrors(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct{ content, want string }{
		{"kubernetesVersion: \"1.33.2\"\nsnapshoter: stargz\n", `unknown key "snapshoter" (known: kubernetesVersion, containerRuntime, snapshotter,`},
		{"gpusPerNode: eight\n", "gpusPerNode: eight is not a whole number"},
		{"gpusPerNode: 2.5\n", "gpusPerNode: 2.5 is not a whole number"},
		{"imageVolumes: 3\n", "imageVolumes: 3 is not a boolean"},
		{"kubernetesVersion: 1.33\n", `kubernetesVersion: 1.33 is not a string (quote it: "1.33.2")`},
		{"kubernetesVersion: banana\n", `kubernetesVersion: "banana" is not a version like 1.33.2`},
		{"snapshotter: btrfs\n", `snapshotter: "btrfs" is not one of overlayfs, native, stargz, nydus, soci`},
		{"nodeImageCacheGiB: -5\n", "nodeImageCacheGiB: must not be negative"},
		{"linkMbit:\n", "linkMbit: no value"},
		{"- a list\n", "cannot unmarshal"},
	} {
		path := filepath.Join(dir, "facts.yaml")
		if err := os.WriteFile(path, []byte(tc.content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := ReadFacts(path)
		if err == nil || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: err = %v, want %s: ...%s", tc.content, err, path, tc.want)
		}
	}
	if _, err := ReadFacts(filepath.Join(dir, "missing.yaml")); err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Errorf("missing file: %v", err)
	}
}

func TestPlanSetFactAndMerge(t *testing.T) {
	var f Facts
	src := Sources{}
	f.Merge(Facts{Snapshotter: "overlayfs", GPUsPerNode: 4}, src, "live")
	for _, kv := range []string{"snapshotter=stargz", "imageVolumes=false", "gpusPerNode=8", "containerRuntime=cri-o://1.33.0"} {
		var one Facts
		if _, err := one.SetFact(kv); err != nil {
			t.Fatalf("%s: %v", kv, err)
		}
		f.Merge(one, src, "--fact")
	}
	if f.Snapshotter != "stargz" || f.ImageVolumes == nil || *f.ImageVolumes || f.GPUsPerNode != 8 || src["snapshotter"] != "--fact" {
		t.Errorf("facts %+v, sources %v", f, src)
	}
	// A later source without a fact keeps the earlier one.
	f.Merge(Facts{LinkMbit: 25000}, src, "file")
	if f.Snapshotter != "stargz" || f.LinkMbit != 25000 || src["linkMbit"] != "file" {
		t.Errorf("after merge: %+v, %v", f, src)
	}
	for _, kv := range []string{"snapshotter", "=stargz", "color=blue", "gpusPerNode=lots"} {
		var one Facts
		if _, err := one.SetFact(kv); err == nil {
			t.Errorf("SetFact(%q) did not fail", kv)
		}
	}
}

func TestPlanImageVolumesFromVersion(t *testing.T) {
	for v, want := range map[string]string{"1.35.0": "true", "1.37.2": "true", "v1.36.1-gke.100": "true", "1.30.4": "false", "1.33.2": "unknown", "1.31.0": "unknown", "": "unknown"} {
		f := Facts{KubernetesVersion: v}
		src := Sources{}
		f.imageVolumesFromVersion(src)
		got := "unknown"
		if f.ImageVolumes != nil {
			got = map[bool]string{true: "true", false: "false"}[*f.ImageVolumes]
		}
		if got != want || (got != "unknown") != (src["imageVolumes"] != "") {
			t.Errorf("%q: imageVolumes %s (source %q), want %s", v, got, src["imageVolumes"], want)
		}
	}
	// Given facts win over the version.
	f := Facts{KubernetesVersion: "1.36.0", ImageVolumes: new(false)}
	f.imageVolumesFromVersion(Sources{})
	if *f.ImageVolumes {
		t.Error("the version overrode a given imageVolumes")
	}
}

func TestPlanReadBench(t *testing.T) {
	b := loadBench(t)
	if r, ok := b.result("estargz"); !ok || r.AllWeightsReadS != 24 || r.ConfigReadableS != 0.8 {
		t.Errorf("estargz = %+v, %v", r, ok)
	}
	if r, ok := b.tarRatio("gzip-single"); !ok || !r.measured || math.Abs(r.v-16.0/140) > 1e-9 {
		t.Errorf("tar ratio = %+v", r)
	}
	var none *Bench
	if r, ok := none.tarRatio("gzip-single"); !ok || r.measured || r.v != DefaultTarRatio || !strings.Contains(r.source, "default, not measured") {
		t.Errorf("default tar ratio = %+v", r)
	}
	if _, ok := none.tarRatio("zstd"); ok {
		t.Error("a default ratio of tar to zstd")
	}
	// Several runs of a format: the median of each time.
	b2 := &Bench{Results: []BenchResult{{Format: "tar", AllWeightsReadS: 10}, {Format: "tar", AllWeightsReadS: 30}, {Format: "tar", AllWeightsReadS: 12}}}
	if r, _ := b2.result("tar"); r.AllWeightsReadS != 12 {
		t.Errorf("median of runs = %v", r.AllWeightsReadS)
	}

	dir := t.TempDir()
	const head = `{"version": 1, "link_mbit": 1000, "model_bytes": 2147165748, `
	report, err := os.ReadFile(filepath.Join(fixtures, "pull-gzip.json"))
	if err != nil {
		t.Fatal(err)
	}
	for content, want := range map[string]string{
		`{"version": 2, "results": []}`:                                   "benchmark results version 2: this modelcar reads version 1",
		head + `"results": [{"format": "tar", "all_weights_read_s": 0}]}`: "results[0] (tar): times must be positive",
		`{"version": 1, "results": [`:                                     "decoding the benchmark results",
		`[1, 2]`:                                                          "decoding the benchmark results",
		// Not the benchmark's results: each field it must have, by name.
		`{"version": 1}`: `no "link_mbit": not the node-side benchmark's results`,
		string(report):   `no "link_mbit": a cold-start report, not the node-side benchmark's results (pass a report as --from)`,
		`{"version": 1, "link_mbit": 1000, "results": []}`:                                         `no "model_bytes"`,
		`{"version": 1, "link_mbit": 1000, "model_bytes": 5}`:                                      `no "results"`,
		head[:len(head)-2] + `}`:                                                                   `no "results"`,
		`{"version": 1, "link_mbit": 0, "model_bytes": 5, "results": []}`:                          "link_mbit 0: must be positive",
		`{"version": 1, "link_mbit": 10, "model_bytes": 0, "results": []}`:                         "model_bytes 0: must be positive",
		head + `"results": []}`:                                                                    "results is empty",
		head + `"results": [{"all_weights_read_s": 3}]}`:                                           `results[0]: no "format"`,
		head + `"results": [{"format": "lz4-future", "all_weights_read_s": 3}]}`:                   "results: no run of a format plan uses (gzip-single, ",
		head + `"results": [{"format": "tar", "all_weights_read_s": 3, "config_readable_s": -1}]}`: "results[0] (tar): times must be positive",
	} {
		path := filepath.Join(dir, "bench.json")
		os.WriteFile(path, []byte(content), 0o644)
		if _, err := ReadBench(path); err == nil || !strings.HasPrefix(err.Error(), path+": ") || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: err = %v, want %q", content, err, want)
		}
	}
	// Formats plan does not know are kept and not checked.
	path := filepath.Join(dir, "future.json")
	os.WriteFile(path, []byte(head+`"results": [{"format": "lz4-future", "all_weights_read_s": 0}, {"format": "tar", "all_weights_read_s": 9}]}`), 0o644)
	if b, err := ReadBench(path); err != nil || len(b.Results) != 2 {
		t.Errorf("unknown format: %v", err)
	}
	// The benchmark's recorded results, and the tests' own, pass.
	files, _ := filepath.Glob("../../testdata/coldstart/results-*.json")
	if len(files) == 0 {
		t.Fatal("no testdata/coldstart/results-*.json")
	}
	for _, f := range append(files, filepath.Join(fixtures, "bench.json")) {
		if b, err := ReadBench(f); err != nil || b.LinkMbit <= 0 || b.ModelBytes <= 0 || len(b.Results) == 0 {
			t.Errorf("%s: %+v, %v", f, b, err)
		}
	}
}
