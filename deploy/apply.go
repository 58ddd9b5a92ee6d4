package deploy

import (
	"context"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"

	"github.com/modelcar/modelcar/warm"
)

// FieldManager is the server-side apply field manager of what modelcar
// applies (the same as the warm package's).
const FieldManager = "modelcar"

// ApplyOptions configures Apply.
type ApplyOptions struct {
	// DryRun asks the server to validate, default and admit every object
	// without storing anything (--dry-run=server).
	DryRun bool
	// FieldManager defaults to FieldManager ("modelcar").
	FieldManager string
	// Namespace is given to namespaced objects that name none (the chart's
	// all do).
	Namespace string
	// CreateNamespace makes Release.Apply create the release's namespace
	// when it does not exist (helm's --create-namespace; in a dry run the
	// server only checks the creation). Without it Release.Apply refuses a
	// missing namespace before applying anything (NamespaceNotFoundError).
	CreateNamespace bool
}

// NamespaceNotFoundError is Release.Apply's refusal of a release whose
// namespace does not exist: nothing was applied.
type NamespaceNotFoundError struct {
	Namespace string
}

func (e *NamespaceNotFoundError) Error() string {
	return fmt.Sprintf("namespace %q not found, so nothing was applied: add --create-namespace to create it, or create it first (kubectl create namespace %s)", e.Namespace, e.Namespace)
}

// Applied reports one object Apply sent.
type Applied struct {
	GroupVersionKind schema.GroupVersionKind
	Namespace, Name  string
	// DryRun is set when the server only validated the object.
	DryRun bool
	// Object is what the server returned (for a dry run: what it would
	// have stored).
	Object *unstructured.Unstructured
}

// String describes a as `kubectl apply --server-side` does:
// "deployment.apps/NAME serverside-applied", with " (server dry run)"
// for a dry run.
func (a Applied) String() string {
	kind := strings.ToLower(a.GroupVersionKind.Kind)
	if g := a.GroupVersionKind.Group; g != "" {
		kind += "." + g
	}
	s := kind + "/" + a.Name + " serverside-applied"
	if a.DryRun {
		s += " (server dry run)"
	}
	return s
}

// Applier applies unstructured objects with server-side apply through the
// dynamic client, finding each kind's resource by discovery (so CRDs such
// as KEDA's ScaledObject work once installed).
type Applier struct {
	dyn    dynamic.Interface
	mapper meta.ResettableRESTMapper
}

// NewApplier returns an Applier for the cluster cfg points at.
func NewApplier(cfg *rest.Config) (*Applier, error) {
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Applier{dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// Apply is NewApplier(cfg).Apply(ctx, objs, opts).
func Apply(ctx context.Context, cfg *rest.Config, objs []*unstructured.Unstructured, opts ApplyOptions) ([]Applied, error) {
	a, err := NewApplier(cfg)
	if err != nil {
		return nil, err
	}
	return a.Apply(ctx, objs, opts)
}

// Apply sends objs in their order (Render's: helm's install order) with
// server-side apply as opts.FieldManager, without forcing conflicts (a
// field another manager owns fails the object), with strict field
// validation. Applying the same objects again changes nothing: the
// resourceVersions stay. It stops at the first error and returns what was
// applied before it.
func (a *Applier) Apply(ctx context.Context, objs []*unstructured.Unstructured, opts ApplyOptions) ([]Applied, error) {
	if opts.FieldManager == "" {
		opts.FieldManager = FieldManager
	}
	var out []Applied
	for _, o := range objs {
		r, err := a.applyOne(ctx, o, opts)
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
	return out, nil
}

func (a *Applier) applyOne(ctx context.Context, o *unstructured.Unstructured, opts ApplyOptions) (Applied, error) {
	gvk := o.GroupVersionKind()
	what := gvk.Kind + " " + o.GetName()
	mapping, err := a.mapping(gvk)
	if err != nil {
		return Applied{}, fmt.Errorf("applying %s: %w", what, err)
	}
	obj := o.DeepCopy()
	var ri dynamic.ResourceInterface
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		if obj.GetNamespace() == "" {
			if opts.Namespace == "" {
				return Applied{}, fmt.Errorf("applying %s: no namespace", what)
			}
			obj.SetNamespace(opts.Namespace)
		}
		ri = a.dyn.Resource(mapping.Resource).Namespace(obj.GetNamespace())
		what = gvk.Kind + " " + obj.GetNamespace() + "/" + obj.GetName()
	} else {
		obj.SetNamespace("")
		ri = a.dyn.Resource(mapping.Resource)
	}
	data, err := obj.MarshalJSON()
	if err != nil {
		return Applied{}, fmt.Errorf("applying %s: %w", what, err)
	}
	po := metav1.PatchOptions{FieldManager: opts.FieldManager, Force: new(false), FieldValidation: metav1.FieldValidationStrict}
	if opts.DryRun {
		po.DryRun = []string{metav1.DryRunAll}
	}
	got, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, po)
	if err != nil {
		return Applied{}, fmt.Errorf("applying %s: %w", what, err)
	}
	return Applied{GroupVersionKind: gvk, Namespace: obj.GetNamespace(), Name: obj.GetName(), DryRun: opts.DryRun, Object: got}, nil
}

// mapping finds gvk's resource, reloading discovery once when the kind is
// unknown (a CRD installed since the last look).
func (a *Applier) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		a.mapper.Reset()
		m, err = a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if meta.IsNoMatchError(err) && gvk.Group != "" {
		return nil, fmt.Errorf("%w (install its CRD first%s)", err, crdHint(gvk))
	}
	return m, err
}

// crdHint names the chart value that renders an optional CRD kind.
func crdHint(gvk schema.GroupVersionKind) string {
	switch gvk.Kind {
	case "ScaledObject":
		return ": KEDA; or set keda.enabled=false"
	case "ServiceMonitor":
		return ": prometheus-operator; or set serviceMonitor.enabled=false"
	}
	return ""
}

// ReleaseApplied reports what Release.Apply sent.
type ReleaseApplied struct {
	// Namespace reports the namespace Apply created (CreateNamespace),
	// kubectl-style ("namespace/NAME created"); empty when it existed.
	Namespace string
	Warm      []warm.Applied // warm.Apply's reports, applied first
	Chart     []Applied
	// NotChecked are the namespaced objects a server dry run did not send
	// because their namespace does not exist yet (CreateNamespace: the dry
	// run does not create it, and the apiserver refuses objects in a
	// missing namespace), one kubectl-style line each.
	NotChecked []string
}

// Lines are one kubectl-style line per object, in the order applied.
func (r *ReleaseApplied) Lines() []string {
	var out []string
	if r.Namespace != "" {
		out = append(out, r.Namespace)
	}
	for _, a := range r.Warm {
		out = append(out, a.String())
	}
	for _, a := range r.Chart {
		out = append(out, a.String())
	}
	return append(out, r.NotChecked...)
}

// Apply applies the release to the cluster cfg points at: the warm objects
// first (warm.Apply: a pre-pull starts on every node while the
// Deployment's pods are scheduled; placeholders yield to them), then the
// chart's objects (Applier.Apply). opts.FieldManager applies to both.
//
// First it checks that the release's namespace exists, so that nothing
// (not even a cluster-scoped PriorityClass) is applied for a release that
// cannot be: a missing namespace fails with NamespaceNotFoundError, or is
// created with opts.CreateNamespace. A dry run checks the same and, with
// CreateNamespace, has the server check the namespace's creation; the
// objects inside the namespace it would create cannot be checked, and are
// reported in NotChecked. (Without the right to get namespaces, Apply
// cannot tell and goes on.)
func (r *Release) Apply(ctx context.Context, cfg *rest.Config, opts ApplyOptions) (*ReleaseApplied, error) {
	res := &ReleaseApplied{}
	if opts.FieldManager == "" {
		opts.FieldManager = FieldManager
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return res, err
	}
	var missing bool
	res.Namespace, missing, err = ensureNamespace(ctx, cs, r.Namespace, opts)
	if err != nil {
		return res, err
	}
	a, err := NewApplier(cfg)
	if err != nil {
		return res, err
	}
	warmObjs, chartObjs := r.Warm, r.Objects
	if missing { // a dry run of a namespace it would create
		warmObjs, chartObjs = nil, nil
		for _, o := range r.Warm {
			if o.GetNamespace() == "" {
				warmObjs = append(warmObjs, o)
			} else {
				res.NotChecked = append(res.NotChecked, notChecked(o.GetObjectKind().GroupVersionKind(), o.GetName(), r.Namespace))
			}
		}
		for _, o := range r.Objects {
			// An unknown kind goes on, to fail saying which CRD is missing.
			if m, err := a.mapping(o.GroupVersionKind()); err != nil || m.Scope.Name() != meta.RESTScopeNameNamespace {
				chartObjs = append(chartObjs, o)
			} else {
				res.NotChecked = append(res.NotChecked, notChecked(o.GroupVersionKind(), o.GetName(), r.Namespace))
			}
		}
	}
	if len(warmObjs) > 0 {
		res.Warm, err = warm.Apply(ctx, cs, warmObjs, warm.ApplyOptions{DryRun: opts.DryRun, FieldManager: opts.FieldManager})
		if err != nil {
			return res, err
		}
	}
	if opts.Namespace == "" {
		opts.Namespace = r.Namespace
	}
	if len(chartObjs) == 0 {
		return res, nil
	}
	res.Chart, err = a.Apply(ctx, chartObjs, opts)
	return res, err
}

// ensureNamespace checks that namespace ns exists and, if not, creates it
// (opts.CreateNamespace; only checked by the server in a dry run, which
// then reports it still missing) or fails with NamespaceNotFoundError.
// line reports a creation, kubectl-style.
func ensureNamespace(ctx context.Context, cs kubernetes.Interface, ns string, opts ApplyOptions) (line string, missing bool, err error) {
	_, err = cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case err == nil:
		return "", false, nil
	case apierrors.IsForbidden(err):
		// Namespace-scoped rights: the apply itself will say.
		return "", false, nil
	case !apierrors.IsNotFound(err):
		return "", false, fmt.Errorf("checking namespace %s: %w", ns, err)
	}
	if !opts.CreateNamespace {
		return "", false, &NamespaceNotFoundError{Namespace: ns}
	}
	co := metav1.CreateOptions{FieldManager: opts.FieldManager, FieldValidation: metav1.FieldValidationStrict}
	if opts.DryRun {
		co.DryRun = []string{metav1.DryRunAll}
	}
	_, err = cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, co)
	switch {
	case apierrors.IsAlreadyExists(err): // created meanwhile
		return "", false, nil
	case err != nil:
		return "", false, fmt.Errorf("creating namespace %s: %w", ns, err)
	}
	line = "namespace/" + ns + " created"
	if opts.DryRun {
		line += " (server dry run)"
	}
	return line, opts.DryRun, nil
}

// notChecked is the NotChecked line of an object in namespace ns.
func notChecked(gvk schema.GroupVersionKind, name, ns string) string {
	kind := strings.ToLower(gvk.Kind)
	if g := gvk.Group; g != "" {
		kind += "." + g
	}
	return fmt.Sprintf("%s/%s not checked (server dry run: namespace %s does not exist yet)", kind, name, ns)
}
