package deploy

import (
	"context"
	"errors"
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcar/modelcar/internal/kube"
	"github.com/modelcar/modelcar/warm"
)

// ApplyOptions configures Release.Apply.
type ApplyOptions struct {
	// DryRun asks the server to validate, default and admit every object
	// without storing anything.
	DryRun bool
	// FieldManager defaults to kube.FieldManager ("modelcar").
	FieldManager string
	// CreateNamespace makes Release.Apply create the release's namespace
	// when it does not exist (in a dry run the server only checks the
	// creation). Without it Release.Apply refuses a missing namespace
	// before applying anything (NamespaceNotFoundError).
	CreateNamespace bool
}

// NamespaceNotFoundError is Release.Apply's refusal of a release whose
// namespace does not exist (and ApplyOptions.CreateNamespace unset):
// nothing was applied.
type NamespaceNotFoundError struct {
	Namespace string
}

func (e *NamespaceNotFoundError) Error() string {
	return fmt.Sprintf("namespace %q not found, so nothing was applied: create it (kubectl create namespace %s), or let the apply create it", e.Namespace, e.Namespace)
}

// crdHint says where an optional kind of the chart comes from, and which
// value leaves it out.
func crdHint(gvk schema.GroupVersionKind) string {
	switch gvk.Kind {
	case "ScaledObject":
		return "KEDA; or set keda.enabled=false"
	case "ServiceMonitor":
		return "prometheus-operator; or set serviceMonitor.enabled=false"
	}
	return ""
}

// ReleaseApplied reports what Release.Apply sent.
type ReleaseApplied struct {
	// Namespace reports the namespace Apply created (CreateNamespace),
	// kubectl-style ("namespace/NAME created"); empty when it existed.
	Namespace string
	Warm      []kube.Applied // the warm objects, applied first
	Chart     []kube.Applied
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

// Apply applies the release through c: the warm objects first (a
// pre-pull starts on every node while the Deployment's pods are scheduled;
// placeholders yield to them; warm.YieldScheduledReplicas), then the
// chart's objects. opts.FieldManager applies to both.
//
// First it checks that the release's namespace exists, so that nothing
// (not even a cluster-scoped PriorityClass) is applied for a release that
// cannot be: a missing namespace fails with NamespaceNotFoundError, or is
// created with opts.CreateNamespace. A dry run checks the same and, with
// CreateNamespace, has the server check the namespace's creation; the
// objects inside the namespace it would create cannot be checked, and are
// reported in NotChecked. (Without the right to get namespaces, Apply
// cannot tell and goes on.)
func (r *Release) Apply(ctx context.Context, c *kube.Client, opts ApplyOptions) (*ReleaseApplied, error) {
	res := &ReleaseApplied{}
	if opts.FieldManager == "" {
		opts.FieldManager = kube.FieldManager
	}
	var (
		missing bool
		err     error
	)
	res.Namespace, missing, err = ensureNamespace(ctx, c.Clientset, r.Namespace, opts)
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
			if namespaced, err := c.Namespaced(o.GroupVersionKind()); err != nil || !namespaced {
				chartObjs = append(chartObjs, o)
			} else {
				res.NotChecked = append(res.NotChecked, notChecked(o.GroupVersionKind(), o.GetName(), r.Namespace))
			}
		}
	}
	if len(warmObjs) > 0 {
		res.Warm, err = warm.Apply(ctx, c, warmObjs, warm.ApplyOptions{DryRun: opts.DryRun, FieldManager: opts.FieldManager})
		if err != nil {
			return res, err
		}
	}
	if len(chartObjs) == 0 {
		return res, nil
	}
	objs := make([]kube.Object, len(chartObjs))
	for i, o := range chartObjs {
		objs[i] = o
	}
	res.Chart, err = c.Apply(ctx, objs, kube.ApplyOptions{DryRun: opts.DryRun, FieldManager: opts.FieldManager, Namespace: r.Namespace})
	var uk *kube.UnknownKindError
	if errors.As(err, &uk) {
		if h := crdHint(uk.GroupVersionKind); h != "" {
			err = fmt.Errorf("%w: it comes from %s", err, h)
		}
	}
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
