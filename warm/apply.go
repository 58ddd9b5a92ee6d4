package warm

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/modelcar/modelcar/internal/kube"
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
)

// DefaultPauseImage is the container that idles in pre-pull and placeholder
// pods: registry.k8s.io/pause 3.10 pinned by the digest of its multi-arch
// index. Air-gapped sites mirror it and pass their own reference.
const DefaultPauseImage = "registry.k8s.io/pause:3.10@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a"

// ErrNoDigest is returned for an image reference without a digest where a
// digest is required.
var ErrNoDigest = errors.New("image reference has no digest")

// Object is a Kubernetes object modelcar renders or applies (see
// internal/kube, which renders, applies and deletes them).
type Object = kube.Object

// ReplicasAnnotation on a Deployment modelcar renders says who sets its
// replicas: "schedule" when CronJobs scale it (see PoolOptions.Schedules).
const ReplicasAnnotation = "modelcar.dev/replicas"

// ScaleFieldManager is the field manager of Scale's updates.
const ScaleFieldManager = "modelcar-scale"

// YieldScheduledReplicas is the kube.ApplyOptions.Yield of every apply of
// warm objects: a Deployment annotated ReplicasAnnotation=schedule (a
// node-pool warmer with schedules) whose apply conflicts on .spec.replicas
// alone yields it to the schedule's scaler once it has run, and is sent
// again without it.
func YieldScheduledReplicas(obj *unstructured.Unstructured, err error) *unstructured.Unstructured {
	if obj.GetKind() != "Deployment" || obj.GetAnnotations()[ReplicasAnnotation] != "schedule" || !apierrors.IsConflict(err) {
		return nil
	}
	if _, ok, _ := unstructured.NestedFieldNoCopy(obj.Object, "spec", "replicas"); !ok {
		return nil
	}
	var se apierrors.APIStatus
	if !errors.As(err, &se) || se.Status().Details == nil || len(se.Status().Details.Causes) == 0 {
		return nil
	}
	for _, c := range se.Status().Details.Causes {
		if c.Type != metav1.CauseTypeFieldManagerConflict || c.Field != ".spec.replicas" {
			return nil
		}
	}
	unstructured.RemoveNestedField(obj.Object, "spec", "replicas")
	return obj
}

// ApplyOptions is what warm's appliers take: a dry run or not, and the
// field manager (default kube.FieldManager).
type ApplyOptions struct {
	DryRun       bool
	FieldManager string
}

// Apply applies warm objects through c (kube.Client.Apply) with
// YieldScheduledReplicas.
func Apply(ctx context.Context, c *kube.Client, objs []Object, opts ApplyOptions) ([]kube.Applied, error) {
	return c.Apply(ctx, objs, kube.ApplyOptions{DryRun: opts.DryRun, FieldManager: opts.FieldManager, Yield: YieldScheduledReplicas})
}

// deleteOurs deletes objs through c, refusing any that modelcar did not
// create (without ManagedByLabel=ManagedByValue).
func deleteOurs(ctx context.Context, c *kube.Client, objs []Object, dryRun bool) ([]kube.Deleted, error) {
	return c.Delete(ctx, objs, kube.DeleteOptions{DryRun: dryRun, Labels: map[string]string{ManagedByLabel: ManagedByValue}})
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
		return "", ErrRequired
	}
	if strings.HasPrefix(image, "oci:") || strings.HasPrefix(image, "oci-archive:") {
		return "", errors.New("a local OCI layout: push it to a registry the nodes can pull from first")
	}
	ref, err := name.ParseReference(image, name.WeakValidation)
	if err != nil {
		return "", fmt.Errorf("not an image reference: %w", err)
	}
	if d, ok := ref.(name.Digest); ok {
		return d.DigestStr(), nil
	}
	if allowTag {
		return "", nil
	}
	return "", ErrNoDigest
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
