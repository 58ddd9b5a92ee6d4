package warm_test

import (
	"context"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/modelcar/modelcar/internal/kube"
	"github.com/modelcar/modelcar/internal/testcluster"
	"github.com/modelcar/modelcar/warm"
)

func TestPoolObjects(t *testing.T) {
	objs, err := warm.Pool(warm.PoolOptions{Namespace: "ns", Replicas: 3, GPUsPerPod: 8})
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 {
		t.Fatalf("%d objects without schedules, want PriorityClass and Deployment", len(objs))
	}
	out := render(t, objs)
	for _, want := range []string{"value: -10", "preemptionPolicy: Never", "globalDefault: false", "replicas: 3", "nvidia.com/gpu: \"8\"",
		"priorityClassName: modelcar-placeholder", "terminationGracePeriodSeconds: 0", "key: nvidia.com/gpu\n        operator: Exists"} {
		if !strings.Contains(out, want) {
			t.Errorf("pool lacks %q:\n%s", want, out)
		}
	}
	for _, bad := range []warm.PoolOptions{
		{Replicas: 1}, // no GPUs per pod
		{Replicas: 1, GPUsPerPod: 1, Priority: 5},                                                   // positive priority
		{Name: "Bad_Name", Replicas: 1, GPUsPerPod: 1},                                              // not a DNS label
		{Namespace: "ns", Replicas: 1, GPUsPerPod: 1, Schedules: []warm.Schedule{{Cron: "@daily"}}}, // no modelcar image
		{Namespace: "ns", Replicas: 1, GPUsPerPod: 1, Schedules: []warm.Schedule{{Cron: "@daily"}}, ModelcarImage: "registry.modelcar.test/modelcar:v1"}, // tag
	} {
		if _, err := warm.Pool(bad); err == nil {
			t.Errorf("accepted %+v", bad)
		}
	}
}

// TestPoolPreemption: on a private GPU node, the placeholders take the
// GPUs; a real GPU pod preempts one, runs, and the replaced placeholder
// stays Pending.
func TestPoolPreemption(t *testing.T) {
	c := testcluster.Shared(t)
	t.Parallel()
	cs, kc, ctx := c.Client(), c.Kube(), kctx(t)
	ns := c.Namespace(t, "pool")
	private := corev1.Taint{Key: "modelcar.test/private", Value: ns, Effect: corev1.TaintEffectNoSchedule}
	nodes := c.Nodes(t, testcluster.NodePool{Name: ns, Count: 1, GPUs: 4, Taints: []corev1.Taint{private}})
	selector := map[string]string{testcluster.PoolLabel: ns}
	tols := []corev1.Toleration{{Key: private.Key, Operator: corev1.TolerationOpEqual, Value: ns, Effect: corev1.TaintEffectNoSchedule}}

	objs, err := warm.Pool(warm.PoolOptions{
		Name: "warm", Namespace: ns, Replicas: 2, GPUsPerPod: 2,
		NodeSelector: selector, Tolerations: tols,
	})
	if err != nil {
		t.Fatal(err)
	}
	applied, err := warm.Apply(ctx, kc, objs, warm.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	placeholders := labels.SelectorFromSet(map[string]string{warm.InstanceLabel: "warm", warm.ComponentLabel: warm.PoolComponent}).String()
	waitPods(t, ctx, cs, ns, placeholders, "both placeholders running on "+nodes[0], func(pods []corev1.Pod) bool {
		return len(pods) == 2 && phase(pods, corev1.PodRunning) == 2
	})

	// Re-applying changes nothing, once the controller has written the
	// Deployment's status.
	rv := settledRV(t, ctx, func(ctx context.Context) (string, error) {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, "warm", metav1.GetOptions{})
		if err != nil {
			return "", err
		}
		return d.ResourceVersion, nil
	})
	again, err := warm.Apply(ctx, kc, objs, warm.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range again {
		want := applied[i].Object.GetResourceVersion()
		if again[i].GroupVersionKind.Kind == "Deployment" {
			want = rv
		}
		if again[i].Action != kube.Unchanged || again[i].Object.GetResourceVersion() != want {
			t.Errorf("re-apply of %s: %s, resourceVersion %s -> %s", again[i].Name, again[i].Action, want, again[i].Object.GetResourceVersion())
		}
	}

	begin := time.Now()
	gpus := *resource.NewQuantity(2, resource.DecimalSI)
	real := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "vllm", Namespace: ns},
		Spec: corev1.PodSpec{
			NodeSelector: selector,
			Tolerations:  append(tols, testcluster.GPUToleration()),
			Containers: []corev1.Container{{
				Name: "vllm", Image: testImage,
				Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("1"), testcluster.GPUResource: gpus},
					Limits:   corev1.ResourceList{testcluster.GPUResource: gpus},
				},
			}},
		},
	}
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, real, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitPods(t, ctx, cs, ns, "!"+warm.InstanceLabel, "the real pod running", func(pods []corev1.Pod) bool {
		return len(pods) == 1 && pods[0].Status.Phase == corev1.PodRunning && pods[0].Spec.NodeName == nodes[0]
	})
	t.Logf("real GPU pod running %v after creation", time.Since(begin).Round(time.Millisecond))
	waitPods(t, ctx, cs, ns, placeholders, "one placeholder running and its replacement pending", func(pods []corev1.Pod) bool {
		return len(pods) == 2 && phase(pods, corev1.PodRunning) == 1 && phase(pods, corev1.PodPending) == 1
	})
}

func phase(pods []corev1.Pod, p corev1.PodPhase) int {
	n := 0
	for _, pod := range pods {
		if pod.Status.Phase == p && pod.DeletionTimestamp == nil {
			n++
		}
	}
	return n
}

func waitPods(t *testing.T, ctx context.Context, cs kubernetes.Interface, ns, selector, what string, ok func([]corev1.Pod) bool) {
	t.Helper()
	var last []string
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 45*time.Second, true, func(ctx context.Context) (bool, error) {
		list, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: selector})
		if err != nil {
			return false, nil
		}
		last = last[:0]
		for _, p := range list.Items {
			last = append(last, fmt.Sprintf("%s %s on %q", p.Name, p.Status.Phase, p.Spec.NodeName))
		}
		return ok(list.Items), nil
	})
	if err != nil {
		t.Fatalf("%s: %v (pods: %v)", what, err, last)
	}
}

// TestPoolScheduleRBAC: a scheduled pool's Role grants exactly what Scale
// uses on exactly its Deployment; the service account can scale the pool
// and nothing else; re-applying changes nothing and leaves the replicas to
// the schedule once it has run; dropped windows are pruned.
func TestPoolScheduleRBAC(t *testing.T) {
	c := testcluster.Shared(t)
	t.Parallel()
	cs, kc, ctx := c.Client(), c.Kube(), kctx(t)
	ns := c.Namespace(t, "pool-sched")
	opts := scheduledPool(ns)
	applied, _, err := warm.ApplyPool(ctx, kc, opts, warm.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	rv := map[string]string{}
	for _, a := range applied {
		rv[a.GroupVersionKind.Kind+"/"+a.Name] = a.Object.GetResourceVersion()
	}
	if len(rv) != 7 {
		t.Fatalf("applied %d objects: %v", len(rv), applied)
	}

	role, err := cs.RbacV1().Roles(ns).Get(ctx, "sched-scaler", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	wantRules := []rbacv1.PolicyRule{
		{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, ResourceNames: []string{"sched"}, Verbs: []string{"get"}},
		{APIGroups: []string{"apps"}, Resources: []string{"deployments/scale"}, ResourceNames: []string{"sched"}, Verbs: []string{"patch"}},
	}
	if !reflect.DeepEqual(role.Rules, wantRules) {
		t.Errorf("Role rules:\n%+v\nwant\n%+v", role.Rules, wantRules)
	}
	rb, err := cs.RbacV1().RoleBindings(ns).Get(ctx, "sched-scaler", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if rb.RoleRef != (rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "sched-scaler"}) ||
		!reflect.DeepEqual(rb.Subjects, []rbacv1.Subject{{Kind: "ServiceAccount", Name: "sched-scaler", Namespace: ns}}) {
		t.Errorf("RoleBinding: %+v %+v", rb.RoleRef, rb.Subjects)
	}
	cjs, err := cs.BatchV1().CronJobs(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(cjs.Items) != 2 {
		t.Fatalf("CronJobs: %v %v", cjs, err)
	}
	for i, cj := range cjs.Items {
		pod := cj.Spec.JobTemplate.Spec.Template.Spec
		want := []string{"warm", "scale", "--name", "sched", "--namespace", ns, "--replicas", fmt.Sprint(opts.Schedules[i].Replicas)}
		if cj.Spec.Schedule != opts.Schedules[i].Cron || *cj.Spec.TimeZone != "Europe/Paris" || pod.ServiceAccountName != "sched-scaler" ||
			pod.Containers[0].Image != testModelcar || !slices.Equal(pod.Containers[0].Args, want) {
			t.Errorf("CronJob %s: schedule %q sa %q image %q args %q", cj.Name, cj.Spec.Schedule, pod.ServiceAccountName, pod.Containers[0].Image, pod.Containers[0].Args)
		}
	}
	// Only the scaler's pods get a token.
	sa, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "sched-scaler", metav1.GetOptions{})
	if err != nil || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken {
		t.Errorf("service account automounts its token: %+v %v", sa, err)
	}

	// The service account, as the CronJob's pod would use it.
	cfg := c.RESTConfig()
	cfg.Impersonate = rest.ImpersonationConfig{
		UserName: "system:serviceaccount:" + ns + ":sched-scaler",
		Groups:   []string{"system:serviceaccounts", "system:serviceaccounts:" + ns, "system:authenticated"},
	}
	scaler, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	prev, err := warm.Scale(ctx, scaler, ns, "sched", 0)
	if err != nil || prev != 1 {
		t.Fatalf("scale as the service account: %d %v", prev, err)
	}
	d, err := cs.AppsV1().Deployments(ns).Get(ctx, "sched", metav1.GetOptions{})
	if err != nil || *d.Spec.Replicas != 0 {
		t.Fatalf("replicas after scale: %v %v", d.Spec.Replicas, err)
	}
	// ... and nothing else: no other Deployment, no list, no change to the
	// Deployment itself, nothing in other resources.
	other := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: ns, Labels: map[string]string{warm.ManagedByLabel: "modelcar", warm.ComponentLabel: warm.PoolComponent}},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32(0)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "other"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "other"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: warm.DefaultPauseImage}}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, other, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	forbidden := map[string]error{}
	_, forbidden["scale another Deployment"] = warm.Scale(ctx, scaler, ns, "other", 1)
	_, forbidden["list Deployments"] = scaler.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	_, forbidden["update the Deployment"] = scaler.AppsV1().Deployments(ns).Update(ctx, d, metav1.UpdateOptions{})
	_, forbidden["get its scale"] = scaler.AppsV1().Deployments(ns).GetScale(ctx, "sched", metav1.GetOptions{})
	_, forbidden["list pods"] = scaler.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	_, forbidden["get the Role"] = scaler.RbacV1().Roles(ns).Get(ctx, "sched-scaler", metav1.GetOptions{})
	for what, err := range forbidden {
		if !apierrors.IsForbidden(err) && !strings.Contains(fmt.Sprint(err), "forbidden") {
			t.Errorf("the scaler could %s: %v", what, err)
		}
	}

	// Re-applying leaves the replicas to the schedule (the first re-apply
	// gives up ownership of .spec.replicas); after that, nothing changes.
	if _, _, err := warm.ApplyPool(ctx, kc, opts, warm.ApplyOptions{}); err != nil {
		t.Fatalf("re-apply after scale: %v", err)
	}
	if d, _ := cs.AppsV1().Deployments(ns).Get(ctx, "sched", metav1.GetOptions{}); *d.Spec.Replicas != 0 {
		t.Errorf("re-apply reset the scheduled replicas to %d", *d.Spec.Replicas)
	}
	again, _, err := warm.ApplyPool(ctx, kc, opts, warm.ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range again {
		key := a.GroupVersionKind.Kind + "/" + a.Name
		if a.Action != kube.Unchanged {
			t.Errorf("third apply of %s: %s", key, a.Action)
		}
		if a.GroupVersionKind.Kind != "Deployment" && a.Object.GetResourceVersion() != rv[key] {
			t.Errorf("%s resourceVersion %s -> %s", key, rv[key], a.Object.GetResourceVersion())
		}
	}

	// One window fewer: its CronJob goes.
	opts.Schedules = opts.Schedules[:1]
	_, pruned, err := warm.ApplyPool(ctx, kc, opts, warm.ApplyOptions{})
	if err != nil || len(pruned) != 1 || pruned[0].Name != "sched-scale-1" {
		t.Fatalf("prune: %v %v", pruned, err)
	}
	res, err := warm.DeletePool(ctx, kc, ns, "sched", false)
	if err != nil {
		t.Fatal(err)
	}
	var deleted []string
	for _, r := range res {
		if r.Deleted {
			deleted = append(deleted, r.GroupVersionKind.Kind+"/"+r.Name)
		}
	}
	want := []string{"CronJob/sched-scale-0", "Deployment/sched", "RoleBinding/sched-scaler", "Role/sched-scaler", "ServiceAccount/sched-scaler"}
	if !slices.Equal(deleted, want) {
		t.Errorf("deleted %v, want %v", deleted, want)
	}
}
