package kube

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
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
)

// FieldManager is the server-side apply field manager of what modelcar
// applies.
const FieldManager = "modelcar"

// Client talks to one cluster: Clientset reads, Apply and Delete write.
type Client struct {
	Config    *rest.Config
	Clientset kubernetes.Interface
	dyn       dynamic.Interface
	mapper    meta.ResettableRESTMapper
}

// New returns a Client for the cluster cfg points at. Nothing is sent
// until it is used.
func New(cfg *rest.Config) (*Client, error) {
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Client{Config: cfg, Clientset: cs, dyn: dyn, mapper: restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc))}, nil
}

// mapping finds gvk's resource, reloading discovery once when the kind is
// unknown (a CRD installed since the last look).
func (c *Client) mapping(gvk schema.GroupVersionKind) (*meta.RESTMapping, error) {
	m, err := c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if meta.IsNoMatchError(err) {
		c.mapper.Reset()
		m, err = c.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	}
	if meta.IsNoMatchError(err) && gvk.Group != "" {
		return nil, &UnknownKindError{GroupVersionKind: gvk, Err: err}
	}
	return m, err
}

// UnknownKindError is the cluster not knowing a kind of a non-core group:
// its CRD is not installed.
type UnknownKindError struct {
	GroupVersionKind schema.GroupVersionKind
	Err              error
}

func (e *UnknownKindError) Error() string { return fmt.Sprintf("%v (install its CRD first)", e.Err) }
func (e *UnknownKindError) Unwrap() error { return e.Err }

// Namespaced reports whether the cluster keeps gvk's objects in namespaces.
func (c *Client) Namespaced(gvk schema.GroupVersionKind) (bool, error) {
	m, err := c.mapping(gvk)
	if err != nil {
		return false, err
	}
	return m.Scope.Name() == meta.RESTScopeNameNamespace, nil
}

// resource is the dynamic client for obj's kind and namespace (defaulted
// to namespace for namespaced kinds that name none; cluster-scoped kinds
// lose theirs). obj is updated in place.
func (c *Client) resource(obj *unstructured.Unstructured, namespace string) (dynamic.ResourceInterface, error) {
	m, err := c.mapping(obj.GroupVersionKind())
	if err != nil {
		return nil, err
	}
	if m.Scope.Name() != meta.RESTScopeNameNamespace {
		obj.SetNamespace("")
		return c.dyn.Resource(m.Resource), nil
	}
	if obj.GetNamespace() == "" {
		if namespace == "" {
			return nil, errors.New("no namespace")
		}
		obj.SetNamespace(namespace)
	}
	return c.dyn.Resource(m.Resource).Namespace(obj.GetNamespace()), nil
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
	Object *unstructured.Unstructured
}

// String is the kubectl-style line: "daemonset.apps/NAME created", with
// " (server dry run)" for a dry run.
func (a Applied) String() string {
	s := resourceName(a.GroupVersionKind, a.Name) + " " + string(a.Action)
	if a.DryRun {
		s += " (server dry run)"
	}
	return s
}

// ApplyOptions configures Apply.
type ApplyOptions struct {
	// DryRun asks the server to validate, default and admit every object
	// without storing anything.
	DryRun bool
	// FieldManager defaults to FieldManager ("modelcar").
	FieldManager string
	// Namespace is given to namespaced objects that name none.
	Namespace string
	// Yield, when set, is asked about a failed apply: it returns the object
	// to send again (for example without a field another manager owns by
	// design), or nil to fail.
	Yield func(obj *unstructured.Unstructured, err error) *unstructured.Unstructured
}

// Apply sends objs with server-side apply, in the order Sort gives, as
// field manager opts.FieldManager without forcing conflicts (a field
// another manager owns fails the object, unless opts.Yield resends it),
// with strict field validation. Applying the same objects again changes
// nothing: the resourceVersions stay, and each reports Unchanged. It stops
// at the first error and returns what was applied before it.
func (c *Client) Apply(ctx context.Context, objs []Object, opts ApplyOptions) ([]Applied, error) {
	if opts.FieldManager == "" {
		opts.FieldManager = FieldManager
	}
	sorted := append([]Object(nil), objs...)
	Sort(sorted)
	var out []Applied
	for _, o := range sorted {
		a, err := c.applyOne(ctx, o, opts)
		if err != nil {
			return out, err
		}
		out = append(out, a)
	}
	return out, nil
}

func (c *Client) applyOne(ctx context.Context, o Object, opts ApplyOptions) (Applied, error) {
	gvk := o.GetObjectKind().GroupVersionKind()
	what := describe(gvk.Kind, o.GetNamespace(), o.GetName())
	m, err := toUnstructured(o)
	if err != nil {
		return Applied{}, err
	}
	obj := &unstructured.Unstructured{Object: m}
	ri, err := c.resource(obj, opts.Namespace)
	if err != nil {
		return Applied{}, fmt.Errorf("applying %s: %w", what, err)
	}
	what = describe(gvk.Kind, obj.GetNamespace(), obj.GetName())
	before, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		before = nil
	case err != nil:
		return Applied{}, fmt.Errorf("getting %s: %w", what, err)
	}
	po := metav1.PatchOptions{FieldManager: opts.FieldManager, Force: new(false), FieldValidation: metav1.FieldValidationStrict}
	if opts.DryRun {
		po.DryRun = []string{metav1.DryRunAll}
	}
	send := func(obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
		data, err := obj.MarshalJSON()
		if err != nil {
			return nil, err
		}
		return ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, po)
	}
	after, err := send(obj)
	if err != nil && opts.Yield != nil {
		if again := opts.Yield(obj.DeepCopy(), err); again != nil {
			after, err = send(again)
		}
	}
	if err != nil {
		return Applied{}, fmt.Errorf("applying %s: %w", what, err)
	}
	a := Applied{GroupVersionKind: gvk, Namespace: obj.GetNamespace(), Name: obj.GetName(), DryRun: opts.DryRun, Object: after}
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
func sameObject(before, after *unstructured.Unstructured) bool {
	return equality.Semantic.DeepEqual(comparableForm(before), comparableForm(after))
}

func comparableForm(o *unstructured.Unstructured) map[string]any {
	c := o.DeepCopy()
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
	delete(c.Object, "status")
	return c.Object
}

// Deleted reports one object Delete looked at.
type Deleted struct {
	GroupVersionKind schema.GroupVersionKind
	Namespace, Name  string
	// Deleted is false when the object did not exist.
	Deleted bool
	DryRun  bool
}

// String is the kubectl-style line: "deployment.apps/NAME deleted", or
// "... not found".
func (d Deleted) String() string {
	s := resourceName(d.GroupVersionKind, d.Name) + " deleted"
	if !d.Deleted {
		s = resourceName(d.GroupVersionKind, d.Name) + " not found"
	}
	if d.DryRun {
		s += " (server dry run)"
	}
	return s
}

// DeleteOptions configures Delete.
type DeleteOptions struct {
	DryRun bool
	// Labels an existing object must carry to be deleted (what the caller
	// puts on the objects it creates); one without them is refused.
	Labels map[string]string
}

// Delete deletes objs (identified by kind, namespace and name) in the
// reverse of the apply order, with background propagation and the UID it
// looked at as a precondition. An object that does not exist is reported
// as not deleted; one without opts.Labels is refused, so Delete never
// removes what the caller did not create.
func (c *Client) Delete(ctx context.Context, objs []Object, opts DeleteOptions) ([]Deleted, error) {
	sorted := append([]Object(nil), objs...)
	Sort(sorted)
	var out []Deleted
	for i := len(sorted) - 1; i >= 0; i-- {
		o := sorted[i]
		gvk := o.GetObjectKind().GroupVersionKind()
		what := describe(gvk.Kind, o.GetNamespace(), o.GetName())
		obj := &unstructured.Unstructured{}
		obj.SetGroupVersionKind(gvk)
		obj.SetName(o.GetName())
		obj.SetNamespace(o.GetNamespace())
		ri, err := c.resource(obj, "")
		if err != nil {
			return out, fmt.Errorf("deleting %s: %w", what, err)
		}
		r := Deleted{GroupVersionKind: gvk, Namespace: obj.GetNamespace(), Name: obj.GetName(), DryRun: opts.DryRun}
		cur, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			out = append(out, r)
			continue
		} else if err != nil {
			return out, fmt.Errorf("getting %s: %w", what, err)
		}
		for k, v := range opts.Labels {
			if cur.GetLabels()[k] != v {
				return out, &NotOursError{Object: what, Label: k, Value: v}
			}
		}
		bg := metav1.DeletePropagationBackground
		do := metav1.DeleteOptions{PropagationPolicy: &bg, Preconditions: &metav1.Preconditions{UID: new(cur.GetUID())}}
		if opts.DryRun {
			do.DryRun = []string{metav1.DryRunAll}
		}
		if err := ri.Delete(ctx, obj.GetName(), do); apierrors.IsNotFound(err) {
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

// NotOursError is Delete's refusal of an object without the caller's
// label: something else created it.
type NotOursError struct {
	Object       string
	Label, Value string
}

func (e *NotOursError) Error() string {
	return fmt.Sprintf("deleting %s: it is not labeled %s=%s, so modelcar did not create it; not deleting", e.Object, e.Label, e.Value)
}
