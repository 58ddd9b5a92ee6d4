package warm

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	autoscalingv1ac "k8s.io/client-go/applyconfigurations/autoscaling/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/modelcar/modelcar/internal/kube"
)

// Names and defaults of node-pool warmers.
const (
	// PoolComponent is the app.kubernetes.io/component label value of the
	// placeholder Deployment and its pods.
	PoolComponent = "pool"
	// PoolScalerComponent labels the schedule's CronJobs and RBAC objects.
	PoolScalerComponent = "pool-scaler"

	DefaultPoolName    = "modelcar-pool"
	DefaultGPUResource = "nvidia.com/gpu"
	// DefaultPlaceholderPriorityClass is the PriorityClass of placeholder
	// pods, shared by every pool (it is cluster-scoped).
	DefaultPlaceholderPriorityClass = "modelcar-placeholder"
	// DefaultPlaceholderPriority is its value: below every real workload
	// (0 without a priority class), and not below cluster-autoscaler's
	// default --expendable-pods-priority-cutoff (-10), under which the
	// autoscaler neither adds nodes for a pod nor keeps nodes for it.
	DefaultPlaceholderPriority int32 = -10

	poolAppName      = "modelcar-pool"
	scalerSuffix     = "-scaler"
	scaleJobInfix    = "-scale-"
	scalerContainer  = "scale"
	scheduleAnnot    = "modelcar.dev/schedule"
	maxCronJobName   = 52 // CronJob names leave 11 characters for the Jobs' suffix
	replicasSchedule = "schedule"
)

// Schedule is one time window of a pool: at Cron (a standard five-field
// cron expression, or a macro like @daily) the pool is scaled to Replicas.
type Schedule struct {
	Cron     string
	Replicas int32
}

func (s Schedule) String() string { return s.Cron + "=" + strconv.Itoa(int(s.Replicas)) }

// ParseSchedule parses "CRON=REPLICAS", e.g. "0 8 * * 1-5=4".
func ParseSchedule(s string) (Schedule, error) {
	i := strings.LastIndex(s, "=")
	if i < 0 {
		return Schedule{}, fmt.Errorf("schedule %q: want CRON=REPLICAS, e.g. \"0 8 * * 1-5=4\"", s)
	}
	cron := strings.Join(strings.Fields(s[:i]), " ")
	n, err := strconv.ParseInt(strings.TrimSpace(s[i+1:]), 10, 32)
	if err != nil || n < 0 {
		return Schedule{}, fmt.Errorf("schedule %q: replicas %q is not a count", s, s[i+1:])
	}
	if err := checkCron(cron); err != nil {
		return Schedule{}, fmt.Errorf("schedule %q: %q is not a five-field cron expression (minute hour day-of-month month day-of-week) or @hourly/@daily/@weekly/...: %w", s, cron, err)
	}
	return Schedule{Cron: cron, Replicas: int32(n)}, nil
}

// PoolOptions describes a node-pool warmer.
type PoolOptions struct {
	// Name of the Deployment (a DNS label); default DefaultPoolName.
	Name      string
	Namespace string
	// Replicas placeholder pods, each requesting GPUsPerPod of GPUResource
	// (default DefaultGPUResource). With GPUsPerPod equal to the GPUs of a
	// node, Replicas is the number of nodes kept up.
	Replicas    int32
	GPUsPerPod  int64
	GPUResource string
	// NodeSelector and Tolerations place the placeholders. A toleration
	// of the taint KEY=GPUResource (any value, effect NoSchedule) is always
	// added, as the ExtendedResourceToleration admission plugin does.
	NodeSelector map[string]string
	Tolerations  []corev1.Toleration
	// PauseImage is the placeholders' container; default DefaultPauseImage.
	// Like ModelcarImage, it must be pinned by digest unless AllowTag.
	PauseImage string
	// PriorityClass names the placeholders' class, default
	// DefaultPlaceholderPriorityClass, with value Priority (default
	// DefaultPlaceholderPriority; must be negative). A PriorityClass's value
	// cannot change: pick another name for another value.
	PriorityClass string
	Priority      int32

	// Schedules scale the pool over time: one CronJob per window runs
	// ModelcarImage (modelcar's own image, by digest unless AllowTag) as
	// `modelcar warm scale`, with a service account that may only get this
	// Deployment and patch its scale. Once a window has run, it owns the
	// Deployment's replicas: re-applying the pool leaves them as they are.
	Schedules     []Schedule
	ModelcarImage string
	// AllowTag accepts ModelcarImage and PauseImage without a digest.
	AllowTag bool
	// TimeZone of the schedules (an IANA name such as Europe/Paris, not
	// Local, checked as the API server does, with the time zone database
	// this package embeds); default the controller manager's.
	TimeZone string
	// ImagePullSecrets name Secrets in Namespace for private registries
	// (a mirrored pause image, modelcar's image), used by every pod.
	ImagePullSecrets []string
}

// withDefaults fills the empty fields with their defaults (see Validate).
func (o PoolOptions) withDefaults() PoolOptions {
	if o.Name == "" {
		o.Name = DefaultPoolName
	}
	if o.GPUResource == "" {
		o.GPUResource = DefaultGPUResource
	}
	if o.PauseImage == "" {
		o.PauseImage = DefaultPauseImage
	}
	if o.PriorityClass == "" {
		o.PriorityClass = DefaultPlaceholderPriorityClass
	}
	if o.Priority == 0 {
		o.Priority = DefaultPlaceholderPriority
	}
	return o
}

func cronJobName(pool string, i int) string { return pool + scaleJobInfix + strconv.Itoa(i) }

// ScalerName is the name of a scheduled pool's ServiceAccount, Role and
// RoleBinding.
func ScalerName(pool string) string { return pool + scalerSuffix }

func poolLabels(name, component string) map[string]string {
	return map[string]string{
		ManagedByLabel: ManagedByValue,
		NameLabel:      poolAppName,
		InstanceLabel:  name,
		ComponentLabel: component,
	}
}

// Pool returns the objects of a node-pool warmer, in apply order:
//
//   - a PriorityClass with a negative value, preemptionPolicy Never and
//     globalDefault false: placeholders never preempt anything, and any pod
//     of higher priority preempts them;
//   - a Deployment of Replicas pause pods each requesting GPUsPerPod GPUs
//     (and 1m CPU, 8Mi memory), with terminationGracePeriodSeconds 0 so a
//     preempted placeholder frees its GPUs at once; Recreate strategy, so
//     an update never needs room for extra GPUs;
//   - with Schedules: a ServiceAccount, a Role that allows get on this one
//     Deployment and patch on its scale subresource (resourceNames), a
//     RoleBinding, and one CronJob per window running `modelcar warm scale`.
//
// It refuses options that Validate refuses, with its *FieldError.
func Pool(opts PoolOptions) ([]Object, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	o := opts.withDefaults()
	pc := &schedulingv1.PriorityClass{
		TypeMeta: metav1.TypeMeta{APIVersion: "scheduling.k8s.io/v1", Kind: "PriorityClass"},
		ObjectMeta: metav1.ObjectMeta{
			Name:   o.PriorityClass,
			Labels: map[string]string{ManagedByLabel: ManagedByValue, NameLabel: poolAppName},
		},
		Value:            o.Priority,
		GlobalDefault:    false,
		PreemptionPolicy: new(corev1.PreemptNever),
		Description:      "modelcar warm pool placeholders: keep GPU nodes up; any real pod preempts them.",
	}

	gpus := *resource.NewQuantity(o.GPUsPerPod, resource.DecimalSI)
	res := tinyResources()
	res.Requests[corev1.ResourceName(o.GPUResource)] = gpus
	res.Limits[corev1.ResourceName(o.GPUResource)] = gpus
	tols := append([]corev1.Toleration(nil), o.Tolerations...)
	gpuTol := corev1.Toleration{Key: o.GPUResource, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}
	if !tolerated(tols, corev1.Taint{Key: o.GPUResource, Effect: corev1.TaintEffectNoSchedule}) {
		tols = append(tols, gpuTol)
	}
	var annotations map[string]string
	if len(o.Schedules) > 0 {
		annotations = map[string]string{ReplicasAnnotation: replicasSchedule}
	}
	dep := &appsv1.Deployment{
		TypeMeta: metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{
			Name:        o.Name,
			Namespace:   o.Namespace,
			Labels:      poolLabels(o.Name, PoolComponent),
			Annotations: annotations,
		},
		Spec: appsv1.DeploymentSpec{
			Replicas:             new(o.Replicas),
			Selector:             &metav1.LabelSelector{MatchLabels: map[string]string{NameLabel: poolAppName, InstanceLabel: o.Name}},
			Strategy:             appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType},
			RevisionHistoryLimit: new(int32(2)),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: poolLabels(o.Name, PoolComponent)},
				Spec: corev1.PodSpec{
					PriorityClassName:             o.PriorityClass,
					TerminationGracePeriodSeconds: new(int64(0)),
					NodeSelector:                  copyMap(o.NodeSelector),
					Tolerations:                   tols,
					AutomountServiceAccountToken:  new(false),
					EnableServiceLinks:            new(false),
					SecurityContext:               restrictedPod(),
					ImagePullSecrets:              pullSecrets(o.ImagePullSecrets),
					Containers: []corev1.Container{{
						Name:                     "placeholder",
						Image:                    o.PauseImage,
						ImagePullPolicy:          corev1.PullIfNotPresent,
						Resources:                res,
						SecurityContext:          restrictedContainer(),
						TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
					}},
				},
			},
		},
	}
	objs := []Object{pc, dep}
	if len(o.Schedules) == 0 {
		return objs, nil
	}
	return append(objs, poolScaler(o)...), nil
}

// poolScaler returns the RBAC objects and CronJobs of a scheduled pool.
func poolScaler(o PoolOptions) []Object {
	sa := ScalerName(o.Name)
	lbl := func() map[string]string { return poolLabels(o.Name, PoolScalerComponent) }
	objs := []Object{
		&corev1.ServiceAccount{
			TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"},
			ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: o.Namespace, Labels: lbl()},
			// Only the scaler's pods mount a token, and they ask for it.
			AutomountServiceAccountToken: new(false),
		},
		&rbacv1.Role{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"},
			ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: o.Namespace, Labels: lbl()},
			Rules:      ScalerRules(o.Name),
		},
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: sa, Namespace: o.Namespace, Labels: lbl()},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: sa},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: o.Namespace}},
		},
	}
	var tz *string
	if o.TimeZone != "" {
		tz = new(o.TimeZone)
	}
	for i, s := range o.Schedules {
		args := []string{"warm", "scale", "--name", o.Name, "--namespace", o.Namespace, "--replicas", strconv.Itoa(int(s.Replicas))}
		objs = append(objs, &batchv1.CronJob{
			TypeMeta: metav1.TypeMeta{APIVersion: "batch/v1", Kind: "CronJob"},
			ObjectMeta: metav1.ObjectMeta{
				Name: cronJobName(o.Name, i), Namespace: o.Namespace, Labels: lbl(),
				Annotations: map[string]string{scheduleAnnot: s.String()},
			},
			Spec: batchv1.CronJobSpec{
				Schedule: s.Cron,
				TimeZone: tz,
				// A newer window wins over a scaler still retrying.
				ConcurrencyPolicy: batchv1.ReplaceConcurrent,
				// A window missed while the controller was down still runs
				// within half an hour.
				StartingDeadlineSeconds:    new(int64(1800)),
				SuccessfulJobsHistoryLimit: new(int32(1)),
				FailedJobsHistoryLimit:     new(int32(1)),
				JobTemplate: batchv1.JobTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: lbl()},
					Spec: batchv1.JobSpec{
						BackoffLimit:          new(int32(3)),
						ActiveDeadlineSeconds: new(int64(300)),
						Template: corev1.PodTemplateSpec{
							ObjectMeta: metav1.ObjectMeta{Labels: lbl()},
							Spec: corev1.PodSpec{
								ServiceAccountName:           sa,
								AutomountServiceAccountToken: new(true),
								RestartPolicy:                corev1.RestartPolicyNever,
								ImagePullSecrets:             pullSecrets(o.ImagePullSecrets),
								EnableServiceLinks:           new(false),
								SecurityContext: &corev1.PodSecurityContext{
									// modelcar's image runs as 65532 (nonroot).
									RunAsNonRoot:   new(true),
									SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
								},
								Containers: []corev1.Container{{
									Name:            scalerContainer,
									Image:           o.ModelcarImage,
									ImagePullPolicy: corev1.PullIfNotPresent,
									Args:            args,
									Resources: corev1.ResourceRequirements{
										Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("10m"), corev1.ResourceMemory: resource.MustParse("32Mi")},
										Limits:   corev1.ResourceList{corev1.ResourceMemory: resource.MustParse("128Mi")},
									},
									SecurityContext:          restrictedContainer(),
									TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
								}},
							},
						},
					},
				},
			},
		})
	}
	return objs
}

// ScalerRules are the only permissions of a scheduled pool's scaler: get
// the pool's Deployment (Scale checks it is a modelcar pool) and patch its
// scale subresource, both limited to that one Deployment by name.
func ScalerRules(pool string) []rbacv1.PolicyRule {
	return []rbacv1.PolicyRule{
		{APIGroups: []string{appsv1.GroupName}, Resources: []string{"deployments"}, ResourceNames: []string{pool}, Verbs: []string{"get"}},
		{APIGroups: []string{appsv1.GroupName}, Resources: []string{"deployments/scale"}, ResourceNames: []string{pool}, Verbs: []string{"patch"}},
	}
}

// Scale sets the replicas of the pool Deployment namespace/name, as the
// schedule's CronJobs do (`modelcar warm scale`), and returns the replicas
// it had. It uses exactly what ScalerRules grant: a get of the Deployment,
// which must be a modelcar pool, then a server-side apply of its scale
// subresource as field manager ScaleFieldManager, forced: from then on the
// schedule owns .spec.replicas.
func Scale(ctx context.Context, cs kubernetes.Interface, namespace, name string, replicas int32) (int32, error) {
	if replicas < 0 {
		return 0, fmt.Errorf("scaling pool %s/%s: replicas %d must not be negative", namespace, name, replicas)
	}
	d, err := cs.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return 0, fmt.Errorf("getting pool Deployment %s/%s: %w", namespace, name, err)
	}
	if d.Labels[ManagedByLabel] != ManagedByValue || d.Labels[ComponentLabel] != PoolComponent {
		return 0, fmt.Errorf("scaling %s/%s: not a modelcar pool Deployment (labels %s=%s, %s=%s expected)",
			namespace, name, ManagedByLabel, ManagedByValue, ComponentLabel, PoolComponent)
	}
	prev := int32(1)
	if d.Spec.Replicas != nil {
		prev = *d.Spec.Replicas
	}
	sc := autoscalingv1ac.Scale().WithSpec(autoscalingv1ac.ScaleSpec().WithReplicas(replicas))
	if _, err := cs.AppsV1().Deployments(namespace).ApplyScale(ctx, name, sc, metav1.ApplyOptions{FieldManager: ScaleFieldManager, Force: true}); err != nil {
		return prev, fmt.Errorf("scaling pool %s/%s to %d: %w", namespace, name, replicas, err)
	}
	return prev, nil
}

// ApplyPool applies Pool(opts) (see Apply) and then deletes the pool's
// scaler objects that opts no longer asks for: CronJobs of windows removed
// since the last apply and, without schedules, the scaler's RBAC. The
// shared PriorityClass is applied but never deleted.
func ApplyPool(ctx context.Context, c *kube.Client, opts PoolOptions, ao ApplyOptions) ([]kube.Applied, []kube.Deleted, error) {
	objs, err := Pool(opts)
	if err != nil {
		return nil, nil, err
	}
	applied, err := Apply(ctx, c, objs, ao)
	if err != nil {
		return applied, nil, err
	}
	o := opts.withDefaults()
	stale, err := poolScalerObjects(ctx, c.Clientset, o.Namespace, o.Name)
	if err != nil {
		return applied, nil, err
	}
	keep := map[string]bool{}
	for _, ob := range objs {
		keep[kube.KindOf(ob)+"/"+ob.GetName()] = true
	}
	var prune []Object
	for _, ob := range stale {
		if !keep[kube.KindOf(ob)+"/"+ob.GetName()] {
			prune = append(prune, ob)
		}
	}
	deleted, err := deleteOurs(ctx, c, prune, ao.DryRun)
	return applied, onlyDeleted(deleted), err
}

// DeletePool deletes the pool namespace/name: its Deployment and, if it
// has schedules, their CronJobs, ServiceAccount, Role and RoleBinding. The
// PriorityClass is shared by every pool and stays.
func DeletePool(ctx context.Context, c *kube.Client, namespace, name string, dryRun bool) ([]kube.Deleted, error) {
	objs, err := poolScalerObjects(ctx, c.Clientset, namespace, name)
	if err != nil {
		return nil, err
	}
	objs = append(objs, &appsv1.Deployment{
		TypeMeta:   metav1.TypeMeta{APIVersion: "apps/v1", Kind: "Deployment"},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace},
	})
	return deleteOurs(ctx, c, objs, dryRun)
}

// poolScalerObjects returns the scaler objects that may exist for a pool:
// its CronJobs (found by label) and its RBAC objects (by name).
func poolScalerObjects(ctx context.Context, cs kubernetes.Interface, namespace, name string) ([]Object, error) {
	sel := labels.SelectorFromSet(poolLabels(name, PoolScalerComponent)).String()
	list, err := cs.BatchV1().CronJobs(namespace).List(ctx, metav1.ListOptions{LabelSelector: sel})
	if err != nil && !apierrors.IsNotFound(err) {
		return nil, fmt.Errorf("listing the CronJobs of pool %s/%s: %w", namespace, name, err)
	}
	var objs []Object
	if list != nil {
		for _, cj := range list.Items {
			objs = append(objs, &batchv1.CronJob{
				TypeMeta:   metav1.TypeMeta{APIVersion: "batch/v1", Kind: "CronJob"},
				ObjectMeta: metav1.ObjectMeta{Name: cj.Name, Namespace: namespace},
			})
		}
	}
	sa := ScalerName(name)
	meta := metav1.ObjectMeta{Name: sa, Namespace: namespace}
	objs = append(objs,
		&rbacv1.RoleBinding{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "RoleBinding"}, ObjectMeta: meta},
		&rbacv1.Role{TypeMeta: metav1.TypeMeta{APIVersion: "rbac.authorization.k8s.io/v1", Kind: "Role"}, ObjectMeta: meta},
		&corev1.ServiceAccount{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "ServiceAccount"}, ObjectMeta: meta},
	)
	return objs, nil
}

func onlyDeleted(rs []kube.Deleted) []kube.Deleted {
	var out []kube.Deleted
	for _, r := range rs {
		if r.Deleted {
			out = append(out, r)
		}
	}
	return out
}
