package plan

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/util/version"
	"sigs.k8s.io/yaml"
)

// Facts is what the plan knows of the cluster; a zero field is unknown. The
// facts file (YAML or JSON) has these keys and no others:
//
//	kubernetesVersion: "1.33.2"        # the API server's version
//	containerRuntime: containerd://2.1.1  # a GPU node's nodeInfo.containerRuntimeVersion
//	snapshotter: overlayfs             # overlayfs, native, stargz, nydus or soci
//	imageVolumes: true                 # pods may use volumes[].image
//	nodeImageCacheGiB: 400             # disk for images on a GPU node
//	gpusPerNode: 8                     # nvidia.com/gpu of a GPU node
//	gpuNodeWarmPool: false             # a `modelcar warm pool` runs already
//	prepull: false                     # a `modelcar warm prepull` runs already
//	linkMbit: 10000                    # a GPU node's network bandwidth
type Facts struct {
	KubernetesVersion string  `json:"kubernetesVersion,omitempty"`
	ContainerRuntime  string  `json:"containerRuntime,omitempty"`
	Snapshotter       string  `json:"snapshotter,omitempty"`
	ImageVolumes      *bool   `json:"imageVolumes,omitempty"`
	NodeImageCacheGiB float64 `json:"nodeImageCacheGiB,omitempty"`
	GPUsPerNode       int64   `json:"gpusPerNode,omitempty"`
	GPUNodeWarmPool   *bool   `json:"gpuNodeWarmPool,omitempty"`
	Prepull           *bool   `json:"prepull,omitempty"`
	LinkMbit          float64 `json:"linkMbit,omitempty"`
}

// FactKeys lists the keys of a facts file, in the order Facts declares them.
var FactKeys = []string{"kubernetesVersion", "containerRuntime", "snapshotter", "imageVolumes",
	"nodeImageCacheGiB", "gpusPerNode", "gpuNodeWarmPool", "prepull", "linkMbit"}

// Snapshotters are the values of the snapshotter fact.
var Snapshotters = []string{"overlayfs", "native", "stargz", "nydus", "soci"}

// Sources says where each fact came from, by key ("file facts.yaml",
// "--fact", "live: server version", ...).
type Sources map[string]string

// ReadFacts reads a facts file (YAML or JSON). Errors name the file and the
// key: an unknown key, a value of the wrong type, a bad version or
// snapshotter.
func ReadFacts(path string) (Facts, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Facts{}, err
	}
	var raw map[string]any
	if err := yaml.Unmarshal(data, &raw); err != nil {
		return Facts{}, fmt.Errorf("%s: %w", path, err)
	}
	var f Facts
	for _, k := range sortedKeys(raw) {
		if err := f.set(k, raw[k]); err != nil {
			return Facts{}, fmt.Errorf("%s: %w", path, err)
		}
	}
	return f, nil
}

// SetFact sets one fact from "KEY=VALUE", VALUE being a YAML scalar
// (snapshotter=stargz, imageVolumes=true, gpusPerNode=8).
func (f *Facts) SetFact(kv string) (key string, err error) {
	k, v, ok := strings.Cut(kv, "=")
	if !ok || k == "" {
		return "", fmt.Errorf("%q: want KEY=VALUE (keys: %s)", kv, strings.Join(FactKeys, ", "))
	}
	var val any
	if err := yaml.Unmarshal([]byte(v), &val); err != nil {
		return k, fmt.Errorf("%s: %w", k, err)
	}
	return k, f.set(k, val)
}

// set sets key to a decoded YAML value, checking its type and content.
func (f *Facts) set(key string, val any) error {
	if !slices.Contains(FactKeys, key) {
		return fmt.Errorf("unknown key %q (known: %s)", key, strings.Join(FactKeys, ", "))
	}
	if val == nil {
		return fmt.Errorf("%s: no value", key)
	}
	// Decode {key: val} strictly into Facts: JSON's type checks name the
	// key, and the other fields stay as they are.
	data, err := json.Marshal(map[string]any{key: val})
	if err != nil {
		return fmt.Errorf("%s: %w", key, err)
	}
	var one Facts
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&one); err != nil {
		return fmt.Errorf("%s: %v is not a %s", key, val, factType(key))
	}
	switch key {
	case "kubernetesVersion":
		if _, err := version.ParseGeneric(one.KubernetesVersion); err != nil {
			return fmt.Errorf("kubernetesVersion: %q is not a version like 1.33.2", one.KubernetesVersion)
		}
	case "snapshotter":
		if !slices.Contains(Snapshotters, one.Snapshotter) {
			return fmt.Errorf("snapshotter: %q is not one of %s", one.Snapshotter, strings.Join(Snapshotters, ", "))
		}
	case "nodeImageCacheGiB", "linkMbit":
		if one.NodeImageCacheGiB < 0 || one.LinkMbit < 0 {
			return fmt.Errorf("%s: must not be negative", key)
		}
	case "gpusPerNode":
		if one.GPUsPerNode < 0 {
			return fmt.Errorf("gpusPerNode: must not be negative")
		}
	}
	f.merge(one)
	return nil
}

func factType(key string) string {
	switch key {
	case "imageVolumes", "gpuNodeWarmPool", "prepull":
		return "boolean"
	case "nodeImageCacheGiB", "linkMbit":
		return "number"
	case "gpusPerNode":
		return "whole number"
	}
	if key == "kubernetesVersion" {
		return `string (quote it: "1.33.2")`
	}
	return "string"
}

// merge sets every fact o knows, keeping the others.
func (f *Facts) merge(o Facts) {
	if o.KubernetesVersion != "" {
		f.KubernetesVersion = o.KubernetesVersion
	}
	if o.ContainerRuntime != "" {
		f.ContainerRuntime = o.ContainerRuntime
	}
	if o.Snapshotter != "" {
		f.Snapshotter = o.Snapshotter
	}
	if o.ImageVolumes != nil {
		f.ImageVolumes = o.ImageVolumes
	}
	if o.NodeImageCacheGiB != 0 {
		f.NodeImageCacheGiB = o.NodeImageCacheGiB
	}
	if o.GPUsPerNode != 0 {
		f.GPUsPerNode = o.GPUsPerNode
	}
	if o.GPUNodeWarmPool != nil {
		f.GPUNodeWarmPool = o.GPUNodeWarmPool
	}
	if o.Prepull != nil {
		f.Prepull = o.Prepull
	}
	if o.LinkMbit != 0 {
		f.LinkMbit = o.LinkMbit
	}
}

// Merge sets every fact o knows over f's, recording source for each in src.
func (f *Facts) Merge(o Facts, src Sources, source string) {
	f.merge(o)
	for _, k := range o.Known() {
		src[k] = source
	}
}

// Known lists the keys of the facts that are set, in FactKeys order.
func (f Facts) Known() []string {
	data, _ := json.Marshal(f)
	var m map[string]any
	_ = json.Unmarshal(data, &m)
	var out []string
	for _, k := range FactKeys {
		if _, ok := m[k]; ok {
			out = append(out, k)
		}
	}
	return out
}

// imageVolumesFromVersion fills ImageVolumes from KubernetesVersion when it
// is unknown: beta and on by default from 1.35; alpha or beta behind the
// ImageVolume feature gate in 1.31-1.34 (not observable from the API:
// unknown); absent before 1.31.
func (f *Facts) imageVolumesFromVersion(src Sources) {
	if f.ImageVolumes != nil || f.KubernetesVersion == "" {
		return
	}
	v, err := version.ParseGeneric(f.KubernetesVersion)
	if err != nil {
		return
	}
	switch {
	case v.AtLeast(version.MajorMinor(1, 35)):
		f.ImageVolumes = new(true)
		src["imageVolumes"] = "kubernetesVersion " + f.KubernetesVersion + " ≥ 1.35: on by default"
	case !v.AtLeast(version.MajorMinor(1, 31)):
		f.ImageVolumes = new(false)
		src["imageVolumes"] = "kubernetesVersion " + f.KubernetesVersion + " < 1.31: no image volumes"
	}
}

// lazyRuntime says which lazy-pull format the node's runtime reads with the
// facts' snapshotter: "estargz" (containerd + stargz snapshotter),
// "zstd-chunked" (CRI-O, whose containers-storage pulls zstd:chunked
// partially), or "" with the reason it cannot.
func (f Facts) lazyRuntime() (format, why string) {
	// zstd:chunked for containerd's stargz snapshotter too: bench-coldstart
	// measured it reading all weights 1.1-2.5x sooner than estargz (zstd
	// decompresses several times faster than gzip), CRI-O reads only it.
	switch {
	case f.Snapshotter == "stargz":
		return "zstd-chunked", ""
	case f.Snapshotter == "":
		return "", "the stargz snapshotter on the GPU nodes (snapshotter unknown: --fact snapshotter=stargz, or label the nodes modelcar.dev/snapshotter=stargz and use --discover)"
	}
	return "", fmt.Sprintf("the stargz snapshotter on the GPU nodes (they use %s)", f.Snapshotter)
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
