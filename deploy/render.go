package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"helm.sh/helm/v3/pkg/ignore"
	"helm.sh/helm/v3/pkg/releaseutil"
	"helm.sh/helm/v3/pkg/strvals"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/yaml"

	"github.com/modelcar/modelcar/internal/fielderr"
	"github.com/modelcar/modelcar/internal/kube"
	"github.com/modelcar/modelcar/warm"
)

// DefaultKubeVersion is the Kubernetes version Render assumes
// (.Capabilities.KubeVersion, and the chart's kubeVersion constraint) when
// RenderOptions.KubeVersion is empty: the test cluster's.
const DefaultKubeVersion = "1.37.2"

// RenderOptions configures Render.
type RenderOptions struct {
	// ReleaseName is .Release.Name (helm template's NAME). Required.
	ReleaseName string
	// Namespace is .Release.Namespace, the namespace every object names.
	// Empty means "default", as helm's.
	Namespace string
	// Values are the user's values, merged over the chart's values.yaml
	// the way helm does (MergeValues builds them from -f files and --set).
	Values map[string]any
	// KubeVersion is .Capabilities.KubeVersion ("1.37.2" or "v1.37.2");
	// empty means DefaultKubeVersion.
	KubeVersion string
}

// notesSuffix ends the rendered name of a chart's NOTES.txt.
const notesSuffix = "NOTES.txt"

// LoadChart loads the embedded vllm-modelcar chart (Chart) the way `helm`
// loads a chart directory: .helmignore and helm's default ignores apply.
// Each call loads a fresh copy (a millisecond), which the caller may change.
func LoadChart() (*chart.Chart, error) {
	sub, err := fs.Sub(Chart, ChartDir)
	if err != nil {
		return nil, err
	}
	rules := ignore.Empty()
	if data, err := fs.ReadFile(sub, ignore.HelmIgnore); err == nil {
		if rules, err = ignore.Parse(bytes.NewReader(data)); err != nil {
			return nil, fmt.Errorf("chart %s: %s: %w", ChartName, ignore.HelmIgnore, err)
		}
	}
	rules.AddDefaults()
	var files []*loader.BufferedFile
	err = fs.WalkDir(sub, ".", func(name string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if name == "." {
			return nil
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		if rules.Ignore(name, fi) {
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() {
			return nil
		}
		data, err := fs.ReadFile(sub, name)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: name, Data: bytes.TrimPrefix(data, []byte("\xef\xbb\xbf"))})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the embedded chart %s: %w", ChartName, err)
	}
	c, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("loading the embedded chart %s: %w", ChartName, err)
	}
	return c, nil
}

// Render renders the embedded chart as `helm template RELEASE CHART
// --namespace NS --kube-version V` with the same values does (Helm's own
// Go packages, the same capabilities and checks): it returns helm
// template's output byte for byte (documents in helm's install order, each
// headed by "# Source: ..."; NOTES.txt left out) and the same objects
// decoded, in that order.
//
// The options are checked first (Validate: the release name, the Kubernetes
// version, the images in the values, as typed errors); then
// values.schema.json: a value it rejects fails Render with an error naming
// the field ("at '/replicas': ...", helm's message), as do the templates'
// own checks (required, fail).
func Render(ctx context.Context, opts RenderOptions) ([]byte, []*unstructured.Unstructured, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	if err := opts.Validate(); err != nil {
		return nil, nil, err
	}
	return renderChart(opts)
}

// renderChart is Render of options already validated.
func renderChart(opts RenderOptions) ([]byte, []*unstructured.Unstructured, error) {
	if opts.Namespace == "" {
		opts.Namespace = "default"
	}
	kv := opts.KubeVersion
	if kv == "" {
		kv = DefaultKubeVersion
	}
	kubeVersion, err := chartutil.ParseKubeVersion(kv)
	if err != nil { // checked by Validate
		return nil, nil, fielderr.New("KubeVersion", kv, err)
	}
	ch, err := LoadChart()
	if err != nil {
		return nil, nil, err
	}
	vals := opts.Values
	if vals == nil {
		vals = map[string]any{}
	}
	// As helm's install action: the chart's dependencies (none today)
	// first, then the values coalesced with values.yaml and checked against
	// values.schema.json.
	if err := chartutil.ProcessDependenciesWithMerge(ch, vals); err != nil {
		return nil, nil, fmt.Errorf("render: %w", err)
	}
	caps := chartutil.DefaultCapabilities.Copy()
	caps.KubeVersion = *kubeVersion
	if ch.Metadata.KubeVersion != "" && !chartutil.IsCompatibleRange(ch.Metadata.KubeVersion, caps.KubeVersion.String()) {
		return nil, nil, fmt.Errorf("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", ch.Metadata.KubeVersion, caps.KubeVersion.String())
	}
	top, err := chartutil.ToRenderValues(ch, vals, chartutil.ReleaseOptions{
		Name: opts.ReleaseName, Namespace: opts.Namespace, Revision: 1, IsInstall: true,
	}, caps)
	if err != nil {
		return nil, nil, fmt.Errorf("chart %s: %w", ChartName, err)
	}
	var e engine.Engine // no cluster: lookup returns nothing, as in helm template
	files, err := e.Render(ch, top)
	if err != nil {
		return nil, nil, fmt.Errorf("chart %s: %w", ChartName, err)
	}
	for name := range files {
		if strings.HasSuffix(name, notesSuffix) {
			delete(files, name)
		}
	}
	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return nil, nil, fmt.Errorf("chart %s: %w", ChartName, err)
	}
	if len(hooks) > 0 {
		return nil, nil, fmt.Errorf("chart %s renders hooks (%s), which modelcar deploy does not run", ChartName, hooks[0].Path)
	}
	var b bytes.Buffer
	objs := make([]*unstructured.Unstructured, 0, len(manifests))
	for _, m := range manifests {
		fmt.Fprintf(&b, "---\n# Source: %s\n%s\n", m.Name, m.Content)
		obj, err := decode(m.Content)
		if err != nil {
			return nil, nil, fmt.Errorf("chart %s: %s: %w", ChartName, m.Name, err)
		}
		if obj != nil {
			objs = append(objs, obj)
		}
	}
	// helm template prints the manifest trimmed, with one final newline.
	out := strings.TrimSpace(b.String())
	if out != "" {
		out += "\n"
	}
	return []byte(out), objs, nil
}

// decode parses one rendered document (nil for an empty one).
func decode(doc string) (*unstructured.Unstructured, error) {
	js, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		return nil, err
	}
	if s := strings.TrimSpace(string(js)); s == "null" || s == "{}" {
		return nil, nil
	}
	obj := &unstructured.Unstructured{}
	if err := obj.UnmarshalJSON(js); err != nil {
		return nil, err
	}
	return obj, nil
}

// MergeValues merges values the way helm's -f/--values, --set and
// --set-string flags do: each file in order (later keys win, maps merged
// deeply), then each --set KEY=VALUE (helm's strvals syntax: a.b=c,
// list[0]=x, {a,b} lists, comma-separated pairs, numbers and booleans
// typed), then each --set-string (values kept as strings).
func MergeValues(files, sets, stringSets []string) (map[string]any, error) {
	base := map[string]any{}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("values file: %w", err)
		}
		cur := map[string]any{}
		if err := yaml.Unmarshal(data, &cur); err != nil {
			return nil, fmt.Errorf("failed to parse %s: %w", f, err)
		}
		base = mergeMaps(base, cur)
	}
	for _, s := range sets {
		if err := strvals.ParseInto(s, base); err != nil {
			return nil, fmt.Errorf("failed parsing --set %q: %w", s, err)
		}
	}
	for _, s := range stringSets {
		if err := strvals.ParseIntoString(s, base); err != nil {
			return nil, fmt.Errorf("failed parsing --set-string %q: %w", s, err)
		}
	}
	return base, nil
}

// mergeMaps is helm's (pkg/cli/values): b over a, maps merged recursively.
// helm does not export it, and MergeValues is not values.Options.MergeValues
// because that changes what users see: a missing -f file's error loses its
// "values file:" prefix, a bad --set no longer quotes its value ("failed
// parsing --set data: ..."), and "-f -" would read standard input.
func mergeMaps(a, b map[string]any) map[string]any {
	out := make(map[string]any, len(a))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		if v, ok := v.(map[string]any); ok {
			if bv, ok := out[k]; ok {
				if bv, ok := bv.(map[string]any); ok {
					out[k] = mergeMaps(bv, v)
					continue
				}
			}
		}
		out[k] = v
	}
	return out
}

// Lookup returns the value at a dotted path (model.image) in values, and
// whether it is set.
func Lookup(values map[string]any, dotted string) (any, bool) {
	var cur any = values
	for _, k := range strings.Split(dotted, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[k]; !ok {
			return nil, false
		}
	}
	return cur, true
}

// SetDefault sets the value at a dotted path in values unless it is
// already set.
func SetDefault(values map[string]any, dotted string, v any) {
	if _, ok := Lookup(values, dotted); !ok {
		SetValue(values, dotted, v)
	}
}

// SetValue sets the value at a dotted path in values, creating the maps on
// the way (and replacing what is not a map there).
func SetValue(values map[string]any, dotted string, v any) {
	keys := strings.Split(dotted, ".")
	m := values
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = v
}

// Release is what `modelcar deploy` renders: the chart's manifests and
// objects and, when asked for, the warm package's objects that go with
// them (a pre-pull DaemonSet, a node-pool warmer).
type Release struct {
	Name, Namespace string
	// Manifests is Render's YAML (helm template's output).
	Manifests []byte
	// Objects are the chart's objects, in helm's install order.
	Objects []*unstructured.Unstructured
	// Warm are the warm objects, in the order kube.Sort gives.
	Warm []warm.Object
}

// ReleaseOptions configures NewRelease.
type ReleaseOptions struct {
	RenderOptions
	// Prepull adds a warm pre-pull DaemonSet for model.image on the nodes
	// the chart's pods may run on (their nodeSelector, tolerations and node
	// affinity; GPUNodeLabel=true when they request GPUs and choose no
	// nodes), so every such node has the modelcar before a replica lands
	// there. Only
	// for the imageVolume (pulled through an image volume) and modelcar
	// (through an init container; the image has a shell) deliveries: with
	// initCopy the kubelet never pulls the model image.
	Prepull bool
	// WarmPool, when set, adds a node-pool warmer named NAME-pool: placeholder
	// pods holding GPUs on the chart pods' nodes (their nodeSelector,
	// tolerations and node affinity), which any vLLM pod preempts.
	WarmPool *WarmPool
}

// WarmPool sizes a node-pool warmer.
type WarmPool struct {
	// Replicas placeholder pods (0 keeps the objects and scales to none).
	Replicas int32
	// GPUsPerPod GPUs each; 0 means the vLLM container's GPU limit.
	GPUsPerPod int64
}

// PoolName is the name of the node-pool warmer of release name.
func PoolName(release string) string { return release + "-pool" }

// NewRelease renders the chart (Render) and builds the warm objects
// opts asks for. It refuses options that Validate refuses; a warm object
// that cannot be built is a *FieldError for Prepull or WarmPool.
func NewRelease(ctx context.Context, opts ReleaseOptions) (*Release, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	out, objs, err := renderChart(opts.RenderOptions)
	if err != nil {
		return nil, err
	}
	ns := opts.Namespace
	if ns == "" {
		ns = "default"
	}
	r := &Release{Name: opts.ReleaseName, Namespace: ns, Manifests: out, Objects: objs}
	if !opts.Prepull && opts.WarmPool == nil {
		return r, nil
	}
	dep, err := deployment(objs)
	if err != nil {
		return nil, err
	}
	pod := dep.Spec.Template.Spec
	place := placement(pod)
	if opts.Prepull {
		mode, _ := prepullMode(opts.Values) // checked by Validate
		image, _ := Lookup(opts.Values, "model.image")
		allowTag, _ := Lookup(opts.Values, "model.allowTag")
		img, _ := image.(string)
		at, _ := allowTag.(bool)
		ds, err := warm.Prepull(warm.PrepullOptions{
			Image: img, AllowTag: at, Namespace: ns, Mode: mode,
			NodeSelector: place.nodeSelector, Tolerations: pod.Tolerations,
		})
		if err != nil {
			return nil, fielderr.New("Prepull", nil, err)
		}
		ds.Spec.Template.Spec.Affinity = place.affinity()
		r.Warm = append(r.Warm, ds)
	}
	if p := opts.WarmPool; p != nil {
		gpus := p.GPUsPerPod
		if gpus == 0 {
			gpus = gpuLimit(pod)
			if gpus == 0 {
				return nil, fielderr.Required("WarmPool.GPUsPerPod", "the vLLM container requests no nvidia.com/gpu to take it from")
			}
		}
		objs, err := warm.Pool(warm.PoolOptions{
			Name: PoolName(opts.ReleaseName), Namespace: ns, Replicas: p.Replicas, GPUsPerPod: gpus,
			NodeSelector: pod.NodeSelector, Tolerations: pod.Tolerations,
		})
		if err != nil {
			return nil, fielderr.New("WarmPool", nil, err)
		}
		// The placeholders hold GPUs, so they land on GPU nodes by
		// themselves; the chart pods' node affinity narrows them further.
		for _, o := range objs {
			if d, ok := o.(*appsv1.Deployment); ok && d.Spec.Template.Spec.Affinity == nil {
				d.Spec.Template.Spec.Affinity = place.affinity()
			}
		}
		r.Warm = append(r.Warm, objs...)
	}
	kube.Sort(r.Warm)
	return r, nil
}

// prepullMode picks how the pre-pull DaemonSet pulls model.image for the
// chart's delivery.
func prepullMode(values map[string]any) (warm.PrepullMode, error) {
	d, ok := Lookup(values, "model.delivery")
	if !ok {
		d = "imageVolume" // values.yaml's default
	}
	switch d {
	case "imageVolume":
		return warm.ImageVolumeMode, nil
	case "modelcar":
		return warm.InitContainerMode, nil
	}
	return "", &ValueError{Key: "model.delivery", Value: d, Err: errors.New("does not pull the model image through the kubelet (initCopy runs modelcar pull), so there is nothing to pre-pull")}
}

// deployment returns the chart's Deployment, typed.
func deployment(objs []*unstructured.Unstructured) (*appsv1.Deployment, error) {
	for _, o := range objs {
		if o.GetKind() == "Deployment" && o.GroupVersionKind().Group == "apps" {
			var d appsv1.Deployment
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
				return nil, fmt.Errorf("chart %s: Deployment %s: %w", ChartName, o.GetName(), err)
			}
			return &d, nil
		}
	}
	return nil, fmt.Errorf("chart %s rendered no Deployment", ChartName)
}

// GPUNodeLabel is the label of GPU nodes, "true" on each: what NVIDIA's GPU
// feature discovery (the GPU operator) sets, and the label the test
// cluster's GPU nodes, `modelcar warm`'s examples and `modelcar plan`'s
// default --node-selector use. When the chart's pods request
// nvidia.com/gpu and set no nodeSelector, the pre-pull DaemonSet selects
// the nodes labeled GPUNodeLabel=true: a DaemonSet requests no GPU, so the
// GPU toleration alone would also put it on every untainted CPU node. A
// nodeSelector in the values replaces it (for GPU nodes labeled otherwise).
const GPUNodeLabel = "nvidia.com/gpu.present"

// podPlacement is where the chart's pods may run, as the warm objects
// that go with them get it.
type podPlacement struct {
	// nodeSelector is the pods' nodeSelector or, when the pods request
	// GPUs and have none, GPUNodeLabel=true.
	nodeSelector map[string]string
	// nodeAffinity is the pods' node affinity (not their pod affinity or
	// anti-affinity, which are about the vLLM pods, not the nodes).
	nodeAffinity *corev1.NodeAffinity
}

func placement(pod corev1.PodSpec) podPlacement {
	p := podPlacement{nodeSelector: pod.NodeSelector}
	if pod.Affinity != nil && pod.Affinity.NodeAffinity != nil {
		p.nodeAffinity = pod.Affinity.NodeAffinity.DeepCopy()
	}
	if len(pod.NodeSelector) == 0 && requestsGPUs(pod) {
		p.nodeSelector = map[string]string{GPUNodeLabel: "true"}
	}
	return p
}

// affinity is the Affinity of a warm pod: the chart pods' node affinity,
// or nil.
func (p podPlacement) affinity() *corev1.Affinity {
	if p.nodeAffinity == nil {
		return nil
	}
	return &corev1.Affinity{NodeAffinity: p.nodeAffinity.DeepCopy()}
}

// requestsGPUs reports whether a container of pod (init containers
// included) requests or is limited to nvidia.com/gpu.
func requestsGPUs(pod corev1.PodSpec) bool {
	for _, cs := range [][]corev1.Container{pod.InitContainers, pod.Containers} {
		for _, c := range cs {
			for _, rl := range []corev1.ResourceList{c.Resources.Limits, c.Resources.Requests} {
				if q, ok := rl[warm.DefaultGPUResource]; ok && !q.IsZero() {
					return true
				}
			}
		}
	}
	return false
}

// gpuLimit is the nvidia.com/gpu limit (else request) of the vllm container.
func gpuLimit(pod corev1.PodSpec) int64 {
	for _, c := range pod.Containers {
		if c.Name != "vllm" {
			continue
		}
		for _, rl := range []corev1.ResourceList{c.Resources.Limits, c.Resources.Requests} {
			if q, ok := rl[warm.DefaultGPUResource]; ok {
				return q.Value()
			}
		}
	}
	return 0
}

// WriteYAML writes the release as one YAML stream: the chart's manifests
// (helm template's output), then the warm objects (kube.Render).
func (r *Release) WriteYAML(w io.Writer) error {
	if _, err := w.Write(r.Manifests); err != nil {
		return err
	}
	if len(r.Warm) == 0 {
		return nil
	}
	var b bytes.Buffer
	if err := kube.Render(&b, r.Warm); err != nil {
		return err
	}
	if _, err := io.WriteString(w, "---\n"); err != nil {
		return err
	}
	_, err := w.Write(b.Bytes())
	return err
}
