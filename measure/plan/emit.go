package plan

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/modelcar/modelcar/deploy"
	"github.com/modelcar/modelcar/internal/fielderr"
	"github.com/modelcar/modelcar/internal/kube"
	"github.com/modelcar/modelcar/warm"
)

// The files Emit writes.
const (
	// PrepullFile: the pre-pull DaemonSets (modelcar warm prepull), when
	// the prepull lever applies.
	PrepullFile = "prepull.yaml"
	// PoolFile: the node-pool warmer (modelcar warm pool), when warm-pool
	// applies.
	PoolFile = "pool.yaml"
	// ValuesFile: values for the vllm-modelcar chart, to pass after your
	// own (-f yours.yaml -f values.yaml).
	ValuesFile = "values.yaml"
	// PackFlagsFile: the `modelcar pack` flags, on the first line that is
	// not a comment.
	PackFlagsFile = "pack-flags.txt"
)

// EmitFiles lists every file Emit may write.
var EmitFiles = []string{PrepullFile, PoolFile, ValuesFile, PackFlagsFile}

// EmitOptions configures Emit.
type EmitOptions struct {
	// Image is the modelcar, REPO@sha256:...; a tag is refused
	// (warm.ErrNoDigest).
	Image string
	// Namespace of the pre-pull and pool objects.
	Namespace string
	// NodeSelector and Tolerations place the pre-pull and pool pods.
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	// PoolReplicas placeholder pods (default 1) of GPUsPerPod GPUs each
	// (default the gpusPerNode fact, else 1).
	PoolReplicas int32
	GPUsPerPod   int64
}

// Validate checks the options as Files uses them: Image is required and
// pinned by digest, Namespace a namespace name, and PoolReplicas and
// GPUsPerPod not negative. It returns a *FieldError naming the field (the
// pre-pull's image and namespace are checked as warm checks them).
func (o EmitOptions) Validate() error {
	if err := (warm.PrepullOptions{Image: o.Image, Namespace: o.Namespace}).Validate(); err != nil {
		return err
	}
	if o.PoolReplicas < 0 {
		return fielderr.New("PoolReplicas", o.PoolReplicas, errors.New("must not be negative"))
	}
	if o.GPUsPerPod < 0 {
		return fielderr.New("GPUsPerPod", o.GPUsPerPod, errors.New("must not be negative"))
	}
	return nil
}

// Files returns what Emit writes, by file name. It refuses options that
// Validate refuses.
func Files(p *Plan, o EmitOptions) (map[string][]byte, error) {
	if err := o.Validate(); err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	if l := p.Lever(LeverPrepull); l != nil && l.Status == Apply {
		data, err := prepullFile(p, l, o)
		if err != nil {
			return nil, err
		}
		files[PrepullFile] = data
	}
	if l := p.Lever(LeverWarmPool); l != nil && l.Status == Apply {
		gpus := cmp.Or(o.GPUsPerPod, p.Facts.GPUsPerNode, 1)
		objs, err := warm.Pool(warm.PoolOptions{Namespace: o.Namespace, Replicas: cmp.Or(o.PoolReplicas, 1), GPUsPerPod: gpus,
			NodeSelector: o.NodeSelector, Tolerations: o.Tolerations})
		if err != nil {
			return nil, err
		}
		head := header(p, l) + fmt.Sprintf("# %d placeholder pod(s) of %d GPUs each", cmp.Or(o.PoolReplicas, 1), gpus)
		if o.GPUsPerPod == 0 && p.Facts.GPUsPerNode == 0 {
			head += " (gpusPerNode unknown: --fact gpusPerNode=N keeps whole nodes)"
		}
		data, err := renderObjects(head+"\n", objs)
		if err != nil {
			return nil, err
		}
		files[PoolFile] = data
	}
	values, err := valuesFile(p, o.Image)
	if err != nil {
		return nil, err
	}
	files[ValuesFile] = values
	files[PackFlagsFile] = fmt.Appendf(nil, "# modelcar pack flags from modelcar plan: %s\n%s# modelcar pack MODEL_DIR $(grep -v '^#' %s) --output REGISTRY/REPO:TAG\n%s\n",
		p.Pack.Why, warningComments(p), PackFlagsFile, strings.Join(p.Pack.Flags, " "))
	return files, nil
}

func header(p *Plan, l *Lever) string {
	return fmt.Sprintf("# modelcar plan: %s (%s), %s, %s confidence\n%s# %s\n", l.Name, l.Phase, amount(l), l.Confidence, warningComments(p), l.Arithmetic)
}

// warningComments is the plan's warnings as comment lines.
func warningComments(p *Plan) string {
	var b strings.Builder
	for _, w := range p.Warnings {
		fmt.Fprintf(&b, "# warning: %s\n", w)
	}
	return b.String()
}

// isDigest says whether ref is pinned by digest.
func isDigest(ref string) bool {
	r, err := name.ParseReference(ref, name.WeakValidation)
	if err != nil {
		return false
	}
	_, ok := r.(name.Digest)
	return ok
}

// A prepullSet is what the pre-pull covers: the images of its DaemonSets
// (the modelcar first, then the report's other pulled images pinned by
// digest) and each one's DaemonSet name ("" for warm's default); and the
// pulled images it leaves out: those the modelcar replaces (the model
// images, when the report has none of its repository) and the unpinned.
type prepullSet struct {
	images, names      []string
	replaced, unpinned []string
}

// prepullImages is the pre-pull of modelcar ("" for none) and images.
func prepullImages(images []Image, modelcar string) prepullSet {
	var set prepullSet
	matched := false
	if modelcar != "" {
		set.images = []string{modelcar}
		for _, im := range images {
			matched = matched || repository(im.Image) == repository(modelcar)
		}
	}
	for _, im := range images {
		switch {
		case im.Pulled == 0 || modelcar != "" && repository(im.Image) == repository(modelcar):
		case modelcar != "" && !matched && im.Role == "model":
			set.replaced = append(set.replaced, im.Image)
		case im.Digest:
			set.images = append(set.images, im.Image)
		default:
			set.unpinned = append(set.unpinned, im.Image)
		}
	}
	seen := map[string]bool{}
	for i, img := range set.images {
		n, named := warm.PrepullName(img), ""
		if seen[n] {
			named = fmt.Sprintf("%s-%d", strings.TrimSuffix(n[:min(len(n), 52)], "-"), i)
			n = named
		}
		seen[n] = true
		set.names = append(set.names, named)
	}
	return set
}

// warmFlags are the `modelcar warm` flags that place the pre-pull and pool
// as o says, each with a leading space.
func warmFlags(o Options) string {
	var b strings.Builder
	if o.Namespace != "" {
		b.WriteString(" -n " + shellQuote(o.Namespace))
	}
	for _, k := range sortedKeys(o.NodeSelector) {
		b.WriteString(" --node-selector " + shellQuote(k+"="+o.NodeSelector[k]))
	}
	for _, t := range o.Tolerations {
		b.WriteString(" --toleration " + shellQuote(formatToleration(t)))
	}
	return b.String()
}

// formatToleration writes t as warm.ParseToleration reads it:
// KEY[=VALUE][:EFFECT].
func formatToleration(t corev1.Toleration) string {
	s := t.Key
	if t.Operator != corev1.TolerationOpExists {
		s += "=" + t.Value
	}
	if t.Effect != "" {
		s += ":" + string(t.Effect)
	}
	return s
}

// shellQuote quotes s for a POSIX shell when it needs it.
func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_./:=@%+,-") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func renderObjects(head string, objs []warm.Object) ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(head)
	if err := kube.Render(&b, objs); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// prepullFile renders a DaemonSet for the modelcar and for every other
// image the report pulled that is pinned by digest; the others are named
// in a comment.
func prepullFile(p *Plan, l *Lever, o EmitOptions) ([]byte, error) {
	mode := warm.ImageVolumeMode
	if p.Facts.ImageVolumes != nil && !*p.Facts.ImageVolumes {
		mode = warm.InitContainerMode
	}
	set := prepullImages(p.Images, o.Image)
	head := header(p, l)
	for _, r := range set.replaced {
		head += fmt.Sprintf("# not pre-pulled: %s, taken for the model image, which %s replaces\n", r, o.Image)
	}
	for _, u := range set.unpinned {
		head += fmt.Sprintf("# not pre-pulled, not pinned by digest: %s (modelcar warm prepull --image %s@sha256:... -o yaml)\n", u, untagged(u))
	}
	var objs []warm.Object
	for i, img := range set.images {
		po := warm.PrepullOptions{Image: img, Name: set.names[i], Namespace: o.Namespace, NodeSelector: o.NodeSelector, Tolerations: o.Tolerations, Mode: mode}
		ds, err := warm.PrepullObjects(po)
		if err != nil {
			return nil, fmt.Errorf("pre-pull of %s: %w", img, err)
		}
		objs = append(objs, ds...)
	}
	return renderObjects(head, objs)
}

// valuesFile is the chart values the levers set, each key with its reason.
func valuesFile(p *Plan, image string) ([]byte, error) {
	vals := map[string]any{}
	var why []string
	set := func(key string, v any, reason string) {
		deploy.SetValue(vals, key, v)
		why = append(why, fmt.Sprintf("# %s: %s", key, reason))
	}
	set("model.image", image, "the modelcar (--image)")
	switch iv := p.Facts.ImageVolumes; {
	case iv == nil:
		why = append(why, "# model.delivery: left to the chart (imageVolume), which needs image volumes: unknown here")
	case *iv:
		set("model.delivery", "imageVolume", "image volumes are on (facts): no copy, no shell needed")
	default:
		set("model.delivery", "modelcar", "image volumes are off (facts): the KServe-style sidecar; the image needs a shell (modelcar pack --base)")
	}
	for _, l := range p.Levers {
		switch {
		case l.Name == LeverStreamingLoad && l.Status == Apply:
			set("vllm.loadFormat", "runai_streamer", fmt.Sprintf("%s, %s", l.Name, amount(&l)))
		case l.Name == LeverReadinessProbe && l.Status == Apply:
			set("vllm.readinessProbe.periodSeconds", 1, fmt.Sprintf("%s, %s", l.Name, amount(&l)))
		case l.Name == LeverWarmupProbe && l.Status == Advice:
			set("warmProbe.enabled", true, l.Name+": Ready means warmed")
		}
	}
	data, err := yaml.Marshal(vals)
	if err != nil {
		return nil, err
	}
	head := "# vllm-modelcar chart values from modelcar plan; pass after your own values:\n" +
		"#   modelcar deploy --name NAME -f yours.yaml -f values.yaml ...\n" + warningComments(p) + strings.Join(why, "\n") + "\n"
	return append([]byte(head), data...), nil
}

// writeFile is os.WriteFile; tests make it fail.
var writeFile = os.WriteFile

// Emit writes Files into dir as a whole: they are written into a hidden
// sibling directory, which is renamed to dir once complete. An existing dir
// is replaced only when it holds nothing but files Emit writes; anything
// else there is refused. It returns the names written, sorted.
func Emit(dir string, p *Plan, o EmitOptions) ([]string, error) {
	files, err := Files(p, o)
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	exists := false
	if ents, err := os.ReadDir(dir); err == nil {
		exists = true
		for _, e := range ents {
			if !slices.Contains(EmitFiles, e.Name()) || !e.Type().IsRegular() {
				return nil, fmt.Errorf("%s holds %s, which modelcar plan does not write: refusing to replace it (pick an empty or new directory)", dir, e.Name())
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, err
	}
	parent, base := filepath.Dir(dir), filepath.Base(dir)
	tmp, err := os.MkdirTemp(parent, "."+base+".modelcar-plan-partial-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp) // a no-op once renamed
	names := sortedKeys(files)
	for _, n := range names {
		if err := writeFile(filepath.Join(tmp, n), files[n], 0o644); err != nil {
			return nil, err
		}
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, err
	}
	if !exists {
		return names, os.Rename(tmp, dir)
	}
	old := tmp + "-old"
	if err := os.Rename(dir, old); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, dir); err != nil {
		return nil, errors.Join(err, os.Rename(old, dir))
	}
	return names, os.RemoveAll(old)
}
