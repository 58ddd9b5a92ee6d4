package warm

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/yaml"
)

// Labels, annotations and the field manager of every object modelcar
// renders or applies.
const (
	ManagedByLabel = "app.kubernetes.io/managed-by"
	ManagedByValue = "modelcar"
	NameLabel      = "app.kubernetes.io/name"
	InstanceLabel  = "app.kubernetes.io/instance"
	ComponentLabel = "app.kubernetes.io/component"

	// ImageAnnotation holds the image reference a pre-pull DaemonSet (and
	// its pods) pulls, as given.
	ImageAnnotation = "modelcar.dev/image"
	// ImageDigestAnnotation holds its digest (absent for a tag allowed
	// with PrepullOptions.AllowTag).
	ImageDigestAnnotation = "modelcar.dev/image-digest"

	// FieldManager is the server-side apply field manager.
	FieldManager = "modelcar"
)

// DefaultPauseImage is the container that idles in pre-pull and placeholder
// pods: registry.k8s.io/pause 3.10 pinned by the digest of its multi-arch
// index. Air-gapped sites mirror it and pass their own reference.
const DefaultPauseImage = "registry.k8s.io/pause:3.10@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a"

// ErrNoDigest is returned for an image reference without a digest where a
// digest is required.
var ErrNoDigest = errors.New("image reference has no digest")

// Object is a Kubernetes object modelcar renders or applies: a typed API
// object (*appsv1.DaemonSet, ...) with its TypeMeta set.
type Object interface {
	metav1.Object
	runtime.Object
}

// kindOrder is the order objects are rendered and applied in: what others
// refer to first (priority classes and RBAC before the pods that use them).
// Deletion goes the other way.
var kindOrder = map[string]int{
	"PriorityClass":  0,
	"ServiceAccount": 1,
	"Role":           2,
	"RoleBinding":    3,
	"DaemonSet":      4,
	"Deployment":     5,
	"CronJob":        6,
}

// Sort sorts objs in the stable order Render and Apply use: by kind (see
// above), then namespace, then name.
func Sort(objs []Object) {
	rank := func(o Object) int {
		if r, ok := kindOrder[kindOf(o)]; ok {
			return r
		}
		return len(kindOrder)
	}
	sort.SliceStable(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if ra, rb := rank(a), rank(b); ra != rb {
			return ra < rb
		}
		if ka, kb := kindOf(a), kindOf(b); ka != kb {
			return ka < kb
		}
		if a.GetNamespace() != b.GetNamespace() {
			return a.GetNamespace() < b.GetNamespace()
		}
		return a.GetName() < b.GetName()
	})
}

func kindOf(o Object) string { return o.GetObjectKind().GroupVersionKind().Kind }

// Marshal returns obj as the JSON document that Render writes and Apply
// sends: apiVersion and kind set, no status, no null fields (such as an
// unset creationTimestamp), keys sorted.
func Marshal(obj Object) ([]byte, error) {
	gvk := obj.GetObjectKind().GroupVersionKind()
	if gvk.Kind == "" || gvk.Version == "" {
		return nil, fmt.Errorf("marshaling %T %s: apiVersion and kind are not set", obj, obj.GetName())
	}
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, fmt.Errorf("marshaling %s %s: %w", gvk.Kind, obj.GetName(), err)
	}
	delete(m, "status")
	pruneNulls(m)
	if gvk.Kind == "PriorityClass" {
		// Say it, rather than leave it to the reader to know the default.
		if _, ok := m["globalDefault"]; !ok {
			m["globalDefault"] = false
		}
	}
	return json.Marshal(m)
}

// pruneNulls removes null values from maps, recursively.
func pruneNulls(v any) {
	switch v := v.(type) {
	case map[string]any:
		for k, e := range v {
			if e == nil {
				delete(v, k)
				continue
			}
			pruneNulls(e)
		}
	case []any:
		for _, e := range v {
			pruneNulls(e)
		}
	}
}

// Render writes objs to w as a YAML stream, one document per object
// separated by "---", in the order Sort gives (objs itself is not
// reordered). The same objects always render to the same bytes.
func Render(w io.Writer, objs []Object) error {
	sorted := append([]Object(nil), objs...)
	Sort(sorted)
	var buf bytes.Buffer
	for i, o := range sorted {
		js, err := Marshal(o)
		if err != nil {
			return err
		}
		y, err := yaml.JSONToYAML(js)
		if err != nil {
			return fmt.Errorf("rendering %s %s: %w", kindOf(o), o.GetName(), err)
		}
		if i > 0 {
			buf.WriteString("---\n")
		}
		buf.Write(y)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// Action is what applying an object did.
type Action string

const (
	Created    Action = "created"
	Configured Action = "configured"
	Unchanged  Action = "unchanged"
)

// Applied reports one object Apply sent.
type Applied struct {
	GroupVersionKind schema.GroupVersionKind
	Namespace, Name  string
	Action           Action
	// DryRun is set when the server only validated the change.
	DryRun bool
	// Object is what the server returned (for a dry run: what it would
	// have stored).
	Object Object
}

// String describes what happened the way kubectl does:
// "daemonset.apps/NAME created".
func (a Applied) String() string {
	kind := strings.ToLower(a.GroupVersionKind.Kind)
	if g := a.GroupVersionKind.Group; g != "" {
		kind += "." + g
	}
	s := kind + "/" + a.Name + " " + string(a.Action)
	if a.DryRun {
		s += " (server dry run)"
	}
	return s
}

// ApplyOptions configures Apply.
type ApplyOptions struct {
	// DryRun asks the server to validate and default every object (admission
	// included) without storing anything (--dry-run=server).
	DryRun bool
	// FieldManager defaults to FieldManager ("modelcar").
	FieldManager string
}

// Apply sends objs to the cluster with server-side apply, in the order Sort
// gives, as field manager opts.FieldManager without forcing conflicts: a
// field another manager owns is left alone and reported as an error.
// Applying the same objects again changes nothing (the resourceVersions
// stay). It stops at the first error and returns what was applied before.
//
// One exception to the conflict rule: a Deployment annotated
// ReplicasAnnotation=schedule (a node-pool warmer with schedules) yields
// .spec.replicas to the schedule's scaler once it has run.
func Apply(ctx context.Context, cs kubernetes.Interface, objs []Object, opts ApplyOptions) ([]Applied, error) {
	if opts.FieldManager == "" {
		opts.FieldManager = FieldManager
	}
	sorted := append([]Object(nil), objs...)
	Sort(sorted)
	var out []Applied
	for _, o := range sorted {
		a, err := applyOne(ctx, cs, o, opts)
		if err != nil {
			return out, err
		}
		out = append(out, a)
	}
	return out, nil
}

func applyOne(ctx context.Context, cs kubernetes.Interface, o Object, opts ApplyOptions) (Applied, error) {
	gvk := o.GetObjectKind().GroupVersionKind()
	what := describeObject(o)
	rc, err := clientFor(cs, o)
	if err != nil {
		return Applied{}, err
	}
	before, err := rc.get(ctx, o.GetName())
	switch {
	case apierrors.IsNotFound(err):
		before = nil
	case err != nil:
		return Applied{}, fmt.Errorf("getting %s: %w", what, err)
	}
	data, err := Marshal(o)
	if err != nil {
		return Applied{}, err
	}
	po := metav1.PatchOptions{FieldManager: opts.FieldManager, Force: new(false), FieldValidation: "Strict"}
	if opts.DryRun {
		po.DryRun = []string{metav1.DryRunAll}
	}
	after, err := rc.apply(ctx, o.GetName(), data, po)
	if err != nil && yieldsReplicas(o, err) {
		d := o.DeepCopyObject().(*appsv1.Deployment)
		d.Spec.Replicas = nil
		if data, err = Marshal(d); err != nil {
			return Applied{}, err
		}
		after, err = rc.apply(ctx, o.GetName(), data, po)
	}
	if err != nil {
		return Applied{}, fmt.Errorf("applying %s: %w", what, err)
	}
	a := Applied{GroupVersionKind: gvk, Namespace: o.GetNamespace(), Name: o.GetName(), DryRun: opts.DryRun, Object: after}
	switch {
	case before == nil:
		a.Action = Created
	case sameObject(before, after):
		a.Action = Unchanged
	default:
		a.Action = Configured
	}
	return a, nil
}

// sameObject reports whether apply left the object as it was: the same
// metadata (but resourceVersion and managedFields timestamps) and spec.
// Status is ignored, since controllers write it concurrently. (Dry runs do
// not bump resourceVersion, so it cannot tell by itself.)
func sameObject(before, after Object) bool {
	b, err1 := comparableForm(before)
	a, err2 := comparableForm(after)
	return err1 == nil && err2 == nil && equality.Semantic.DeepEqual(b, a)
}

func comparableForm(o Object) (map[string]any, error) {
	c, ok := o.DeepCopyObject().(Object)
	if !ok {
		return nil, fmt.Errorf("%T: not an Object", o)
	}
	c.SetResourceVersion("")
	// Entries for subresources (status, scale) are controllers' writes,
	// which move on while a rollout runs: they are not what was applied.
	var mf []metav1.ManagedFieldsEntry
	for _, e := range c.GetManagedFields() {
		if e.Subresource != "" {
			continue
		}
		e.Time = nil
		mf = append(mf, e)
	}
	c.SetManagedFields(mf)
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(c)
	delete(m, "status")
	return m, err
}

// ReplicasAnnotation on a Deployment modelcar renders says who sets its
// replicas: "schedule" when CronJobs scale it (see PoolOptions.Schedules).
const ReplicasAnnotation = "modelcar.dev/replicas"

// ScaleFieldManager is the field manager of Scale's updates.
const ScaleFieldManager = "modelcar-scale"

// yieldsReplicas reports whether err is a conflict on .spec.replicas alone
// for a Deployment whose replicas a schedule sets.
func yieldsReplicas(o Object, err error) bool {
	d, ok := o.(*appsv1.Deployment)
	if !ok || d.Annotations[ReplicasAnnotation] != "schedule" || d.Spec.Replicas == nil || !apierrors.IsConflict(err) {
		return false
	}
	var se apierrors.APIStatus
	if !errors.As(err, &se) || se.Status().Details == nil || len(se.Status().Details.Causes) == 0 {
		return false
	}
	for _, c := range se.Status().Details.Causes {
		if c.Type != metav1.CauseTypeFieldManagerConflict || c.Field != ".spec.replicas" {
			return false
		}
	}
	return true
}

// DeleteResult reports one object Delete looked at.
type DeleteResult struct {
	GroupVersionKind schema.GroupVersionKind
	Namespace, Name  string
	// Deleted is false when the object did not exist.
	Deleted bool
	DryRun  bool
}

func (d DeleteResult) String() string {
	kind := strings.ToLower(d.GroupVersionKind.Kind)
	if g := d.GroupVersionKind.Group; g != "" {
		kind += "." + g
	}
	s := kind + "/" + d.Name + " deleted"
	if !d.Deleted {
		s = kind + "/" + d.Name + " not found"
	}
	if d.DryRun {
		s += " (server dry run)"
	}
	return s
}

// Delete deletes objs (identified by kind, namespace and name) in the
// reverse of the apply order, with background propagation. An object that
// does not exist is skipped; one that exists but does not carry
// app.kubernetes.io/managed-by=modelcar is refused, so Delete never removes
// what modelcar did not create.
func Delete(ctx context.Context, cs kubernetes.Interface, objs []Object, dryRun bool) ([]DeleteResult, error) {
	sorted := append([]Object(nil), objs...)
	Sort(sorted)
	var out []DeleteResult
	for i := len(sorted) - 1; i >= 0; i-- {
		o := sorted[i]
		what := describeObject(o)
		rc, err := clientFor(cs, o)
		if err != nil {
			return out, err
		}
		r := DeleteResult{GroupVersionKind: o.GetObjectKind().GroupVersionKind(), Namespace: o.GetNamespace(), Name: o.GetName(), DryRun: dryRun}
		cur, err := rc.get(ctx, o.GetName())
		if apierrors.IsNotFound(err) {
			out = append(out, r)
			continue
		} else if err != nil {
			return out, fmt.Errorf("getting %s: %w", what, err)
		}
		if cur.GetLabels()[ManagedByLabel] != ManagedByValue {
			return out, fmt.Errorf("deleting %s: it is not labeled %s=%s, so modelcar did not create it; not deleting", what, ManagedByLabel, ManagedByValue)
		}
		bg := metav1.DeletePropagationBackground
		do := metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: new(cur.GetUID())}}
		if dryRun {
			do.DryRun = []string{metav1.DryRunAll}
		}
		if err := rc.delete(ctx, o.GetName(), do); apierrors.IsNotFound(err) {
			out = append(out, r)
			continue
		} else if err != nil {
			return out, fmt.Errorf("deleting %s: %w", what, err)
		}
		r.Deleted = true
		out = append(out, r)
	}
	return out, nil
}

func describeObject(o Object) string {
	s := kindOf(o) + " " + o.GetName()
	if ns := o.GetNamespace(); ns != "" {
		s = kindOf(o) + " " + ns + "/" + o.GetName()
	}
	return s
}

// typedClient is what every generated typed client of client-go offers.
type typedClient[T Object] interface {
	Get(ctx context.Context, name string, opts metav1.GetOptions) (T, error)
	Patch(ctx context.Context, name string, pt types.PatchType, data []byte, opts metav1.PatchOptions, subresources ...string) (T, error)
	Delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

// resourceClient is a typedClient for any kind.
type resourceClient interface {
	get(ctx context.Context, name string) (Object, error)
	apply(ctx context.Context, name string, data []byte, opts metav1.PatchOptions) (Object, error)
	delete(ctx context.Context, name string, opts metav1.DeleteOptions) error
}

type adapter[T Object] struct{ c typedClient[T] }

func (a adapter[T]) get(ctx context.Context, name string) (Object, error) {
	o, err := a.c.Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, err
	}
	return o, nil
}

func (a adapter[T]) apply(ctx context.Context, name string, data []byte, opts metav1.PatchOptions) (Object, error) {
	o, err := a.c.Patch(ctx, name, types.ApplyPatchType, data, opts)
	if err != nil {
		return nil, err
	}
	return o, nil
}

func (a adapter[T]) delete(ctx context.Context, name string, opts metav1.DeleteOptions) error {
	return a.c.Delete(ctx, name, opts)
}

// clientFor returns the typed client for o's kind and namespace.
func clientFor(cs kubernetes.Interface, o Object) (resourceClient, error) {
	ns := o.GetNamespace()
	switch o.(type) {
	case *appsv1.DaemonSet:
		return adapter[*appsv1.DaemonSet]{cs.AppsV1().DaemonSets(ns)}, nil
	case *appsv1.Deployment:
		return adapter[*appsv1.Deployment]{cs.AppsV1().Deployments(ns)}, nil
	case *batchv1.CronJob:
		return adapter[*batchv1.CronJob]{cs.BatchV1().CronJobs(ns)}, nil
	case *corev1.ServiceAccount:
		return adapter[*corev1.ServiceAccount]{cs.CoreV1().ServiceAccounts(ns)}, nil
	case *rbacv1.Role:
		return adapter[*rbacv1.Role]{cs.RbacV1().Roles(ns)}, nil
	case *rbacv1.RoleBinding:
		return adapter[*rbacv1.RoleBinding]{cs.RbacV1().RoleBindings(ns)}, nil
	case *schedulingv1.PriorityClass:
		return adapter[*schedulingv1.PriorityClass]{cs.SchedulingV1().PriorityClasses()}, nil
	}
	return nil, fmt.Errorf("modelcar does not apply %T objects", o)
}

// KubeConfig loads the client configuration the way kubectl does: the
// kubeconfig file at path (when "", $KUBECONFIG or ~/.kube/config) and its
// context (when "", the current one); without any kubeconfig, inside a pod,
// the in-cluster configuration (the pod's service account). It returns the
// configuration and the namespace to use: the context's, the pod's, or
// "default".
func KubeConfig(path, context string) (*rest.Config, string, error) {
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	if path != "" {
		rules.ExplicitPath = path
	}
	cc := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: context})
	cfg, err := cc.ClientConfig()
	if err != nil {
		return nil, "", fmt.Errorf("loading the Kubernetes client configuration (the kubeconfig: --kubeconfig, $KUBECONFIG or ~/.kube/config; in a pod, the in-cluster config): %w", err)
	}
	ns, _, err := cc.Namespace()
	if err != nil {
		return nil, "", fmt.Errorf("loading the Kubernetes client configuration (the kubeconfig: --kubeconfig, $KUBECONFIG or ~/.kube/config; in a pod, the in-cluster config): %w", err)
	}
	if ns == "" {
		ns = metav1.NamespaceDefault
	}
	cfg.UserAgent = "modelcar"
	return cfg, ns, nil
}

// ParseNodeSelector parses KEY=VALUE pairs into a node selector.
func ParseNodeSelector(pairs []string) (map[string]string, error) {
	if len(pairs) == 0 {
		return nil, nil
	}
	m := map[string]string{}
	for _, p := range pairs {
		k, v, ok := strings.Cut(p, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("node selector %q: want KEY=VALUE", p)
		}
		if old, dup := m[k]; dup && old != v {
			return nil, fmt.Errorf("node selector %q: %s is already %q", p, k, old)
		}
		m[k] = v
	}
	return m, nil
}

// ParseToleration parses KEY[=VALUE][:EFFECT] (EFFECT one of NoSchedule,
// PreferNoSchedule, NoExecute; without it, every effect) into a toleration:
// operator Equal with a value, Exists without.
func ParseToleration(s string) (corev1.Toleration, error) {
	rest, effect, hasEffect := strings.Cut(s, ":")
	t := corev1.Toleration{Operator: corev1.TolerationOpExists}
	if hasEffect {
		switch e := corev1.TaintEffect(effect); e {
		case corev1.TaintEffectNoSchedule, corev1.TaintEffectPreferNoSchedule, corev1.TaintEffectNoExecute:
			t.Effect = e
		default:
			return t, fmt.Errorf("toleration %q: effect %q is not NoSchedule, PreferNoSchedule or NoExecute", s, effect)
		}
	}
	k, v, hasValue := strings.Cut(rest, "=")
	if k == "" {
		return t, fmt.Errorf("toleration %q: want KEY[=VALUE][:EFFECT]", s)
	}
	t.Key = k
	if hasValue {
		t.Operator, t.Value = corev1.TolerationOpEqual, v
	}
	return t, nil
}

// ParseTolerations parses each of specs with ParseToleration.
func ParseTolerations(specs []string) ([]corev1.Toleration, error) {
	var out []corev1.Toleration
	for _, s := range specs {
		t, err := ParseToleration(s)
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

// imageDigest checks an image reference for a container or an image
// volume and returns its digest ("" for a tag when allowTag).
func imageDigest(image string, allowTag bool) (string, error) {
	if image == "" {
		return "", errors.New("no image reference")
	}
	if strings.HasPrefix(image, "oci:") || strings.HasPrefix(image, "oci-archive:") {
		return "", fmt.Errorf("image %q is a local OCI layout: push it to a registry the nodes can pull from first", image)
	}
	ref, err := name.ParseReference(image, name.WeakValidation)
	if err != nil {
		return "", fmt.Errorf("parsing image reference %q: %w", image, err)
	}
	if d, ok := ref.(name.Digest); ok {
		return d.DigestStr(), nil
	}
	if allowTag {
		return "", nil
	}
	return "", fmt.Errorf("%w: %q", ErrNoDigest, image)
}

// tinyResources are the requests of containers that only idle.
func tinyResources() corev1.ResourceRequirements {
	return corev1.ResourceRequirements{
		Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1m"), corev1.ResourceMemory: resource.MustParse("8Mi")},
		Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("8Mi")},
	}
}

// restrictedContainer is the container security context of everything
// modelcar runs: no privilege escalation, no capabilities, read-only root.
func restrictedContainer() *corev1.SecurityContext {
	return &corev1.SecurityContext{
		AllowPrivilegeEscalation: new(false),
		ReadOnlyRootFilesystem:   new(true),
		RunAsNonRoot:             new(true),
		Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
	}
}

// pauseUser is the user the pause container runs as (nobody on most
// distributions; the pause binary needs none).
const pauseUser = 65535

// restrictedPod is the pod security context of pods running the pause
// image: non-root user and group 65535, the runtime's seccomp profile.
func restrictedPod() *corev1.PodSecurityContext {
	return &corev1.PodSecurityContext{
		RunAsNonRoot:   new(true),
		RunAsUser:      new(int64(pauseUser)),
		RunAsGroup:     new(int64(pauseUser)),
		SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
	}
}

func copyMap(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func pullSecrets(names []string) []corev1.LocalObjectReference {
	var out []corev1.LocalObjectReference
	for _, n := range names {
		out = append(out, corev1.LocalObjectReference{Name: n})
	}
	return out
}
