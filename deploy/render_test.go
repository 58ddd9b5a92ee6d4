package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/modelcar/modelcar/internal/kube"
	"github.com/modelcar/modelcar/internal/testcluster"
	"github.com/modelcar/modelcar/measure"
	"github.com/modelcar/modelcar/warm"
)

// caseValues merges a golden case's values files as helm's -f does.
func caseValues(t *testing.T, name string, sets ...string) map[string]any {
	t.Helper()
	return caseValuesString(t, name, sets, nil)
}

// caseValuesString is caseValues with --set-string values too.
func caseValuesString(t *testing.T, name string, sets, stringSets []string) map[string]any {
	t.Helper()
	vals, err := MergeValues([]string{filepath.Join(testdataDir, "base.values.yaml"), filepath.Join(testdataDir, name+".values.yaml")}, sets, stringSets)
	if err != nil {
		t.Fatal(err)
	}
	return vals
}

func render(t *testing.T, release, namespace string, vals map[string]any) ([]byte, []*unstructured.Unstructured) {
	t.Helper()
	out, objs, err := Render(context.Background(), RenderOptions{ReleaseName: release, Namespace: namespace, Values: vals, KubeVersion: kubeVersion()})
	if err != nil {
		t.Fatalf("Render: %v", err)
	}
	return out, objs
}

// checkObjects: the objects Render returns are the documents of its YAML,
// in order, NOTES.txt left out.
func checkObjects(t *testing.T, out []byte, objs []*unstructured.Unstructured) {
	t.Helper()
	docs := documents(t, string(out))
	if len(docs) != len(objs) {
		t.Fatalf("%d documents, %d objects", len(docs), len(objs))
	}
	for i, d := range docs {
		if d["kind"] != objs[i].GetKind() || get(d, "metadata", "name") != objs[i].GetName() {
			t.Errorf("object %d is %s %s, document %v %v", i, objs[i].GetKind(), objs[i].GetName(), d["kind"], get(d, "metadata", "name"))
		}
	}
	if bytes.Contains(out, []byte("NOTES.txt")) || bytes.Contains(out, []byte("port-forward")) {
		t.Error("NOTES.txt rendered among the manifests")
	}
}

// TestRenderGolden: Render of every golden case is byte for byte the
// golden file, which is `helm template`'s output (TestChartGolden checks
// that against the pinned helm binary); no helm binary needed here.
func TestRenderGolden(t *testing.T) {
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			golden, err := os.ReadFile(filepath.Join(testdataDir, c.name+".golden.yaml"))
			if err != nil {
				t.Fatal(err)
			}
			out, objs := render(t, releaseName, goldenNamespace, caseValues(t, c.name))
			if string(out) != string(golden) {
				t.Fatalf("Render differs from %s.golden.yaml:\n%s", c.name, firstDifference(string(golden), string(out)))
			}
			checkObjects(t, out, objs)
			var kinds []string
			for _, o := range objs {
				kinds = append(kinds, o.GetKind())
			}
			// helm's install order.
			want := []string{"Service", "Deployment"}
			if c.keda {
				want = []string{"PodDisruptionBudget", "Service", "Deployment", "ScaledObject", "ServiceMonitor"}
			}
			if !slices.Equal(kinds, want) {
				t.Errorf("kinds %q, want %q", kinds, want)
			}
		})
	}
}

// TestRenderMatchesHelmTemplate renders values given the other ways
// (--set syntax, lists, a release name holding the chart name, another
// namespace and Kubernetes version) with Render and the pinned helm binary.
func TestRenderMatchesHelmTemplate(t *testing.T) {
	h := newHelm(t, "")
	cases := []struct {
		name, release, namespace, kube string
		golden                         string
		sets, stringSets               []string
	}{
		{"set-lists-and-numbers", releaseName, "serving", kubeVersion(), "image-volume",
			[]string{"replicas=3", "vllm.extraArgs={--enable-prefix-caching,--enforce-eager}", "vllm.maxModelLen=8192"},
			[]string{"nodeSelector.nvidia\\.com/gpu\\.present=true", "vllm.extraArgs[2]=128"}},
		{"modelcar-sidecar", "vllm-modelcar-phi", "phi", kubeVersion(), "modelcar",
			[]string{"model.servedModelName=phi", "podAnnotations.modelcar\\.test/ready-delay=2s"}, nil},
		{"init-copy-older-kube", releaseName, "llm", "1.33.0", "init-copy",
			[]string{"model.cache.hostPath=/var/lib/modelcar", "initCopy.extraArgs=null"}, nil},
		{"keda-from-zero", "x", "default", kubeVersion(), "image-volume-keda",
			[]string{"keda.minReplicaCount=0", "podDisruptionBudget.enabled=false"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"template", c.release, ChartDir, "--namespace", c.namespace, "--kube-version", c.kube}
			args = append(args, valuesFiles(c.golden)...)
			for _, s := range c.sets {
				args = append(args, "--set", s)
			}
			for _, s := range c.stringSets {
				args = append(args, "--set-string", s)
			}
			want, errOut, err := h.run(args...)
			if err != nil {
				t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, errOut)
			}
			out, objs, err := Render(context.Background(), RenderOptions{ReleaseName: c.release, Namespace: c.namespace, Values: caseValuesString(t, c.golden, c.sets, c.stringSets), KubeVersion: c.kube})
			if err != nil {
				t.Fatalf("Render: %v", err)
			}
			if string(out) != want {
				t.Fatalf("Render differs from helm template:\n%s", firstDifference(want, string(out)))
			}
			checkObjects(t, out, objs)
		})
	}
}

// TestRenderRejects: values.schema.json and the templates' own checks fail
// Render with helm's messages, naming the field (the images, which
// Validate checks first, are TestValidateValues's).
func TestRenderRejects(t *testing.T) {
	for _, c := range []struct {
		name string
		sets []string
		want []string
	}{
		{"negative replicas", []string{"replicas=-1"}, []string{"at '/replicas'", "minimum: got -1, want 0"}},
		{"unknown top-level key", []string{"replica=2"}, []string{"additional properties 'replica' not allowed"}},
		{"unknown delivery", []string{"model.delivery=hostCopy"}, []string{"at '/model/delivery'"}},
		{"KEDA without Prometheus", []string{"keda.enabled=true"}, []string{"keda.prometheus.serverAddress is required"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := Render(context.Background(), RenderOptions{ReleaseName: releaseName, Values: caseValues(t, "image-volume", c.sets...)})
			if err == nil {
				t.Fatalf("Render accepted %q", c.sets)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q:\n%v", w, err)
				}
			}
		})
	}
	t.Run("tag with allowTag", func(t *testing.T) {
		render(t, releaseName, "default", caseValues(t, "image-volume", "model.image=registry.modelcar.test/models/tiny-llama:v1", "model.allowTag=true"))
	})
	t.Run("kube version below the chart's", func(t *testing.T) {
		_, _, err := Render(context.Background(), RenderOptions{ReleaseName: releaseName, Values: caseValues(t, "image-volume"), KubeVersion: "1.28.0"})
		if err == nil || !strings.Contains(err.Error(), "chart requires kubeVersion: >=1.29.0-0") {
			t.Errorf("err = %v", err)
		}
	})
	t.Run("no values", func(t *testing.T) {
		_, _, err := Render(context.Background(), RenderOptions{ReleaseName: releaseName})
		var ve *ValueError
		if !errors.As(err, &ve) || ve.Key != "model.image" || !errors.Is(err, warm.ErrRequired) {
			t.Errorf("err = %v, want a *ValueError for model.image", err)
		}
	})
}

// TestMergeValues: -f files in order, maps merged deeply, then --set.
func TestMergeValues(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.yaml"), filepath.Join(dir, "b.yaml")
	os.WriteFile(a, []byte("model: {image: a, servedModelName: x}\nvllm: {extraArgs: [--a]}\n"), 0o644)
	os.WriteFile(b, []byte("model: {image: b}\nvllm: {extraArgs: [--b]}\n"), 0o644)
	vals, err := MergeValues([]string{a, b}, []string{"model.delivery=modelcar,replicas=2", "vllm.extraArgs={--c,--d}"}, []string{"vllm.maxModelLen=4096"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"model":    map[string]any{"image": "b", "servedModelName": "x", "delivery": "modelcar"},
		"vllm":     map[string]any{"extraArgs": []any{"--c", "--d"}, "maxModelLen": "4096"},
		"replicas": int64(2),
	}
	if fmt.Sprint(vals) != fmt.Sprint(want) {
		t.Errorf("merged %v\nwant   %v", vals, want)
	}
	if _, err := MergeValues([]string{filepath.Join(dir, "missing.yaml")}, nil, nil); err == nil {
		t.Error("a missing values file merged")
	}
	if _, err := MergeValues(nil, []string{"a.b"}, nil); err == nil {
		t.Error("--set without = merged")
	}
}

// TestNewReleaseWarm: --prepull and --warm-pool add the warm objects on the
// chart pods' nodes.
func TestNewReleaseWarm(t *testing.T) {
	vals := caseValuesString(t, "image-volume", nil, []string{"nodeSelector.nvidia\\.com/gpu\\.present=true"})
	rel, err := NewRelease(context.Background(), ReleaseOptions{
		RenderOptions: RenderOptions{ReleaseName: releaseName, Namespace: "llm", Values: vals},
		Prepull:       true, WarmPool: &WarmPool{Replicas: 2},
	})
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, o := range rel.Warm {
		kinds = append(kinds, o.GetObjectKind().GroupVersionKind().Kind+"/"+o.GetName())
	}
	if want := []string{"PriorityClass/" + warm.DefaultPlaceholderPriorityClass, "DaemonSet/modelcar-prepull-tiny-llama", "Deployment/llm-pool"}; !slices.Equal(kinds, want) {
		t.Fatalf("warm objects %q, want %q", kinds, want)
	}
	var y bytes.Buffer
	if err := rel.WriteYAML(&y); err != nil {
		t.Fatal(err)
	}
	docs := documents(t, y.String())
	if len(docs) != len(rel.Objects)+len(rel.Warm) || !strings.HasPrefix(y.String(), string(rel.Manifests)) {
		t.Errorf("WriteYAML: %d documents for %d+%d objects", len(docs), len(rel.Objects), len(rel.Warm))
	}
	ds := byKind(docs, "DaemonSet")[0]
	spec := get(ds, "spec", "template", "spec")
	if get(spec, "nodeSelector", "nvidia.com/gpu.present") != "true" || get(spec, "tolerations", 0, "key") != "nvidia.com/gpu" ||
		get(named(get(spec, "volumes"), "modelcar"), "image", "reference") != modelImage {
		t.Errorf("pre-pull pod spec %v", spec)
	}
	pool := byKind(docs, "Deployment")[1]
	c := get(pool, "spec", "template", "spec", "containers", 0)
	if fmt.Sprint(get(c, "resources", "limits", "nvidia.com/gpu")) != "1" || fmt.Sprint(get(pool, "spec", "replicas")) != "2" ||
		get(pool, "spec", "template", "spec", "nodeSelector", "nvidia.com/gpu.present") != "true" {
		t.Errorf("pool Deployment %v", pool)
	}

	// modelcar delivery pre-pulls through an init container; initCopy has
	// nothing for the kubelet to pull.
	rel, err = NewRelease(context.Background(), ReleaseOptions{RenderOptions: RenderOptions{ReleaseName: releaseName, Values: caseValues(t, "modelcar")}, Prepull: true})
	if err != nil || len(rel.Warm) != 1 {
		t.Fatalf("modelcar delivery: %v", err)
	}
	if ds, ok := rel.Warm[0].(*appsv1.DaemonSet); !ok || len(ds.Spec.Template.Spec.InitContainers) != 1 || ds.Spec.Template.Spec.InitContainers[0].Image != modelImage {
		t.Errorf("modelcar delivery pre-pull: %#v", rel.Warm[0])
	}
	_, err = NewRelease(context.Background(), ReleaseOptions{RenderOptions: RenderOptions{ReleaseName: releaseName, Values: caseValues(t, "init-copy")}, Prepull: true})
	var fe *FieldError
	var ve *ValueError
	if !errors.As(err, &fe) || fe.Field != "Prepull" || !errors.As(err, &ve) || ve.Key != "model.delivery" || ve.Value != "initCopy" ||
		!strings.Contains(err.Error(), "nothing to pre-pull") {
		t.Errorf("initCopy --prepull: %v, want a *FieldError for Prepull about model.delivery", err)
	}
}

// TestApplyOnCluster applies a release with server-side apply to the test
// cluster: its pod becomes Ready on a kwok GPU node, a second apply changes
// no resourceVersion, and a server dry run stores nothing.
func TestApplyOnCluster(t *testing.T) {
	c := testcluster.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ns := c.Namespace(t, "deploy-apply")
	newRelease := func(ns string, sets ...string) *Release {
		t.Helper()
		rel, err := NewRelease(ctx, ReleaseOptions{
			RenderOptions: RenderOptions{ReleaseName: releaseName, Namespace: ns, Values: caseValues(t, "image-volume",
				// kwok's stages: a 2 s image pull and Ready 1 s after start, so
				// the cold start measured below has a length.
				append([]string{`podAnnotations.modelcar\.test/pull-delay=2s`, `podAnnotations.modelcar\.test/ready-delay=1s`}, sets...)...)},
			Prepull: true, WarmPool: &WarmPool{Replicas: 0},
		})
		if err != nil {
			t.Fatal(err)
		}
		return rel
	}
	rel := newRelease(ns)
	res, err := rel.Apply(ctx, c.Kube(), ApplyOptions{})
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	wantLines := []string{
		"priorityclass.scheduling.k8s.io/" + warm.DefaultPlaceholderPriorityClass,
		"daemonset.apps/modelcar-prepull-tiny-llama created",
		"deployment.apps/llm-pool created",
		"service/" + fullname + " created",
		"deployment.apps/" + fullname + " created",
	}
	lines := res.Lines()
	if len(lines) != len(wantLines) {
		t.Fatalf("applied %q", lines)
	}
	for i, w := range wantLines {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d %q, want %q", i, lines[i], w)
		}
	}
	dep := res.Chart[1].Object
	if mf := dep.GetManagedFields(); len(mf) != 1 || mf[0].Manager != kube.FieldManager || mf[0].Operation != metav1.ManagedFieldsOperationApply {
		t.Errorf("managedFields %+v, want one Apply entry by %s", mf, kube.FieldManager)
	}

	// The pod becomes Ready on a GPU node (kwok's stages; probes do not run).
	cs := c.Client()
	sel := "app.kubernetes.io/instance=" + releaseName + ",app.kubernetes.io/name=vllm-modelcar"
	var ready *corev1.Pod
	for ready == nil {
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			t.Fatal(err)
		}
		for i, p := range pods.Items {
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodReady && cond.Status == corev1.ConditionTrue {
					ready = &pods.Items[i]
				}
			}
		}
		if ready == nil {
			select {
			case <-ctx.Done():
				t.Fatalf("no Ready pod of %s: %+v", sel, pods.Items)
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	node, err := cs.CoreV1().Nodes().Get(ctx, ready.Spec.NodeName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if node.Labels["nvidia.com/gpu.present"] != "true" {
		t.Errorf("pod %s is Ready on %s, not a GPU node (labels %v)", ready.Name, node.Name, node.Labels)
	}

	// The pre-pull targets the GPU nodes, where the pods can run, and none
	// of the CPU nodes (which its GPU toleration alone would let it onto):
	// by modelcar warm's reckoning and by the DaemonSet controller's.
	const prepull = "modelcar-prepull-tiny-llama"
	st, err := warm.GetPrepullStatus(ctx, cs, ns, prepull)
	if err != nil {
		t.Fatal(err)
	}
	targeted := map[string]bool{}
	for _, n := range st.Nodes {
		targeted[n.Node] = n.State != warm.NodeNotTargeted
	}
	for _, n := range []string{"gpu-0", "gpu-1"} {
		if !targeted[n] {
			t.Errorf("the pre-pull does not target GPU node %s: %v", n, st.Nodes)
		}
	}
	for _, n := range []string{"cpu-0", "cpu-1"} {
		if v, ok := targeted[n]; !ok || v {
			t.Errorf("the pre-pull targets CPU node %s (or it is missing): %v", n, st.Nodes)
		}
	}
	for {
		ds, err := cs.AppsV1().DaemonSets(ns).Get(ctx, prepull, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		pods, err := cs.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/instance=" + prepull})
		if err != nil {
			t.Fatal(err)
		}
		if ds.Status.ObservedGeneration == ds.Generation && ds.Status.DesiredNumberScheduled > 0 && len(pods.Items) == int(ds.Status.DesiredNumberScheduled) {
			for _, p := range pods.Items {
				node := p.Spec.NodeName
				if a := p.Spec.Affinity; node == "" && a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
					for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
						for _, f := range term.MatchFields {
							node = f.Values[0]
						}
					}
				}
				n, err := cs.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
				if err != nil {
					t.Fatalf("pre-pull pod %s: node %q: %v", p.Name, node, err)
				}
				if n.Labels[GPUNodeLabel] != "true" {
					t.Errorf("pre-pull pod %s is on %s, not a GPU node (labels %v)", p.Name, n.Name, n.Labels)
				}
			}
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("pre-pull DaemonSet never settled: %+v, %d pods", ds.Status, len(pods.Items))
		case <-time.After(200 * time.Millisecond):
		}
	}

	// measure watch on the deployed pod produces a report whose phases add
	// up (kwok runs no container, so its logs are missing: load and warmup
	// stay unattributed, which the report says).
	b, err := measure.Watch(ctx, cs, measure.WatchOptions{Namespace: ns, Selector: sel, Timeout: time.Minute,
		LogSource: func(context.Context, *corev1.Pod, string) ([]measure.LogLine, error) { return nil, nil }})
	if err != nil {
		t.Fatalf("measure watch: %v", err)
	}
	report, err := measure.Analyze(b)
	if err != nil {
		t.Fatalf("measure: %v", err)
	}
	if len(report.ColdStarts) != 1 {
		t.Fatalf("measure reported %d cold starts", len(report.ColdStarts))
	}
	cold := report.ColdStarts[0]
	ph := cold.Phases
	sum := cold.UnattributedSeconds + ph.Provision + ph.Pull + ph.Load + ph.Warmup
	if cold.TotalSeconds < 2 || ph.Pull < 1 || sum < cold.TotalSeconds-0.01 || sum > cold.TotalSeconds+0.01 {
		t.Errorf("measure: phases %+v + unattributed %.3f != total %.3f", ph, cold.UnattributedSeconds, cold.TotalSeconds)
	}

	// Once the Deployment controller has recorded the pod (it changes the
	// status, hence the resourceVersion), applying the same release again
	// changes nothing.
	var settled *appsv1.Deployment
	for settled == nil {
		d, err := cs.AppsV1().Deployments(ns).Get(ctx, fullname, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if d.Status.ObservedGeneration == d.Generation && d.Status.AvailableReplicas == 1 && d.Status.UpdatedReplicas == 1 && d.Status.Replicas == 1 {
			settled = d
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("Deployment never available: %+v", d.Status)
		case <-time.After(200 * time.Millisecond):
		}
	}
	svc, err := cs.CoreV1().Services(ns).Get(ctx, fullname, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	again, err := newRelease(ns).Apply(ctx, c.Kube(), ApplyOptions{})
	if err != nil {
		t.Fatalf("second Apply: %v", err)
	}
	for i, before := range []string{svc.ResourceVersion, settled.ResourceVersion} {
		if a := again.Chart[i]; a.Object.GetResourceVersion() != before || a.Action != kube.Unchanged {
			t.Errorf("%s: resourceVersion %s became %s", a, before, a.Object.GetResourceVersion())
		}
	}
	// (warm.Apply calls an object whose status a controller changed
	// meanwhile "configured"; its spec, hence generation, stays.)
	for i, a := range again.Warm {
		if before, after := res.Warm[i].Object.GetGeneration(), a.Object.GetGeneration(); a.Action == kube.Created || before != after {
			t.Errorf("second apply: %s, generation %d → %d", a, before, after)
		}
	}

	// A server dry run: in a fresh namespace nothing appears; a changed
	// value in the applied one changes nothing either.
	dryNS := c.Namespace(t, "deploy-dry")
	dry, err := newRelease(dryNS).Apply(ctx, c.Kube(), ApplyOptions{DryRun: true})
	if err != nil {
		t.Fatalf("dry run: %v", err)
	}
	for _, l := range dry.Lines() {
		if !strings.HasSuffix(l, " (server dry run)") {
			t.Errorf("dry-run line %q", l)
		}
	}
	if deps, err := cs.AppsV1().Deployments(dryNS).List(ctx, metav1.ListOptions{}); err != nil || len(deps.Items) != 0 {
		t.Errorf("dry run created Deployments: %v %v", deps, err)
	}
	if svcs, err := cs.CoreV1().Services(dryNS).List(ctx, metav1.ListOptions{}); err != nil || len(svcs.Items) != 0 {
		t.Errorf("dry run created Services: %v %v", svcs, err)
	}
	if dss, err := cs.AppsV1().DaemonSets(dryNS).List(ctx, metav1.ListOptions{}); err != nil || len(dss.Items) != 0 {
		t.Errorf("dry run created DaemonSets: %v %v", dss, err)
	}
	changed, err := newRelease(ns, "replicas=2").Apply(ctx, c.Kube(), ApplyOptions{DryRun: true})
	if err != nil {
		t.Fatalf("dry run of a change: %v", err)
	}
	if r, _, _ := unstructured.NestedInt64(changed.Chart[1].Object.Object, "spec", "replicas"); r != 2 {
		t.Errorf("dry run answered replicas %d, want 2", r)
	}
	got, err := cs.AppsV1().Deployments(ns).Get(ctx, fullname, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if *got.Spec.Replicas != 1 || got.ResourceVersion != settled.ResourceVersion {
		t.Errorf("dry run changed the Deployment: replicas %d, resourceVersion %s (was %s)", *got.Spec.Replicas, got.ResourceVersion, settled.ResourceVersion)
	}
}

// TestApplyNamespacePreflight: applying into a namespace that does not
// exist applies nothing (not even the cluster-scoped PriorityClass) and
// says to add --create-namespace, in a server dry run too; with
// CreateNamespace a dry run has the namespace's creation checked and lists
// what it could not check inside it, storing nothing, and a real apply
// creates the namespace first, then everything.
func TestApplyNamespacePreflight(t *testing.T) {
	c := testcluster.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cs := c.Client()
	ns := fmt.Sprintf("deploy-new-%d", time.Now().UnixNano()%1_000_000_000)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := cs.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Logf("deleting namespace %s: %v", ns, err)
		}
	})
	rel, err := NewRelease(ctx, ReleaseOptions{
		RenderOptions: RenderOptions{ReleaseName: releaseName, Namespace: ns, Values: caseValues(t, "image-volume")},
		Prepull:       true, WarmPool: &WarmPool{Replicas: 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	nsExists := func() bool {
		t.Helper()
		_, err := cs.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Fatal(err)
		}
		return err == nil
	}
	_, pcErr := cs.SchedulingV1().PriorityClasses().Get(ctx, warm.DefaultPlaceholderPriorityClass, metav1.GetOptions{})
	pcMissing := apierrors.IsNotFound(pcErr)

	for _, dry := range []bool{true, false} {
		res, err := rel.Apply(ctx, c.Kube(), ApplyOptions{DryRun: dry})
		var nf *NamespaceNotFoundError
		if !errors.As(err, &nf) || nf.Namespace != ns || !strings.Contains(err.Error(), "kubectl create namespace") || !strings.Contains(err.Error(), "nothing was applied") {
			t.Errorf("dry run %v: err = %v, want a NamespaceNotFoundError saying how to create it", dry, err)
		}
		if lines := res.Lines(); len(lines) != 0 {
			t.Errorf("dry run %v: applied %q into a missing namespace", dry, lines)
		}
	}
	if _, err := cs.SchedulingV1().PriorityClasses().Get(ctx, warm.DefaultPlaceholderPriorityClass, metav1.GetOptions{}); pcMissing && !apierrors.IsNotFound(err) {
		t.Errorf("the PriorityClass was created for a release into a missing namespace: %v", err)
	}
	if nsExists() {
		t.Fatal("the namespace appeared")
	}

	res, err := rel.Apply(ctx, c.Kube(), ApplyOptions{DryRun: true, CreateNamespace: true})
	if err != nil {
		t.Fatalf("dry run with CreateNamespace: %v", err)
	}
	want := []string{
		"namespace/" + ns + " created (server dry run)",
		"priorityclass.scheduling.k8s.io/" + warm.DefaultPlaceholderPriorityClass + " ",
		"daemonset.apps/modelcar-prepull-tiny-llama not checked (server dry run: namespace " + ns + " does not exist yet)",
		"deployment.apps/llm-pool not checked (server dry run: namespace " + ns + " does not exist yet)",
		"service/" + fullname + " not checked (server dry run: namespace " + ns + " does not exist yet)",
		"deployment.apps/" + fullname + " not checked (server dry run: namespace " + ns + " does not exist yet)",
	}
	lines := res.Lines()
	if len(lines) != len(want) || !strings.HasSuffix(lines[1], " (server dry run)") {
		t.Fatalf("dry run with CreateNamespace: %q", lines)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d %q, want %q", i, lines[i], w)
		}
	}
	if nsExists() {
		t.Fatal("the dry run created the namespace")
	}

	res, err = rel.Apply(ctx, c.Kube(), ApplyOptions{CreateNamespace: true})
	if err != nil {
		t.Fatalf("Apply with CreateNamespace: %v", err)
	}
	if lines := res.Lines(); len(lines) != 6 || lines[0] != "namespace/"+ns+" created" || len(res.Warm) != 3 || len(res.Chart) != 2 {
		t.Errorf("Apply with CreateNamespace: %q", lines)
	}
	if _, err := cs.AppsV1().Deployments(ns).Get(ctx, fullname, metav1.GetOptions{}); err != nil {
		t.Errorf("Deployment: %v", err)
	}
	res, err = rel.Apply(ctx, c.Kube(), ApplyOptions{CreateNamespace: true})
	if err != nil || res.Namespace != "" || len(res.Lines()) != 5 {
		t.Errorf("second Apply with CreateNamespace: %v %q", err, res.Lines())
	}
}

// TestApplyMissingCRD: a kind the cluster does not serve fails, saying
// to install its CRD and, for the chart's optional kinds, which value
// renders it.
func TestApplyMissingCRD(t *testing.T) {
	c := testcluster.Shared(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		apiVersion, kind, hint string
	}{
		{"nothing.modelcar.test/v1", "Widget", ""},
		{"keda.sh/v9", "ScaledObject", "it comes from KEDA; or set keda.enabled=false"}, // a version no KEDA serves
	} {
		obj := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": tc.apiVersion, "kind": tc.kind,
			"metadata": map[string]any{"name": "x"},
		}}
		rel := &Release{Namespace: "default", Objects: []*unstructured.Unstructured{obj}}
		_, err := rel.Apply(ctx, c.Kube(), ApplyOptions{DryRun: true})
		if err == nil || !strings.Contains(err.Error(), `no matches for kind "`+tc.kind+`"`) || !strings.Contains(err.Error(), "install its CRD first") {
			t.Errorf("%s: err = %v", tc.kind, err)
			continue
		}
		if got := strings.Contains(err.Error(), "comes from"); got != (tc.hint != "") || !strings.Contains(err.Error(), tc.hint) {
			t.Errorf("%s: err = %v, want the hint %q", tc.kind, err, tc.hint)
		}
	}
}

// placementNodes are nodes of a cluster with GPU nodes labeled as the GPU
// operator labels them, tainted, in two zones; a dedicated GPU node with a
// second taint; and untainted CPU nodes.
func placementNodes() []*corev1.Node {
	gpu := func(name, zone string, extra ...corev1.Taint) *corev1.Node {
		return &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
				GPUNodeLabel: "true", "topology.kubernetes.io/zone": zone, "node.kubernetes.io/instance-type": "g5.12xlarge",
			}},
			Spec:   corev1.NodeSpec{Taints: append([]corev1.Taint{{Key: "nvidia.com/gpu", Value: "present", Effect: corev1.TaintEffectNoSchedule}}, extra...)},
			Status: corev1.NodeStatus{Allocatable: corev1.ResourceList{warm.DefaultGPUResource: resource.MustParse("4")}},
		}
	}
	cpu := func(name, zone string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"topology.kubernetes.io/zone": zone, "node.kubernetes.io/instance-type": "m6i.4xlarge",
		}}}
	}
	return []*corev1.Node{
		gpu("gpu-a", "a"), gpu("gpu-b", "b"),
		gpu("gpu-dedicated", "a", corev1.Taint{Key: "dedicated", Value: "llm", Effect: corev1.TaintEffectNoSchedule}),
		cpu("cpu-a", "a"), cpu("cpu-b", "b"),
	}
}

// fits reports whether the scheduler could put a pod of spec on n, as far
// as placement goes: nodeSelector, required node affinity, NoSchedule and
// NoExecute taints, and nvidia.com/gpu (the one resource the nodes differ
// in).
func fits(t *testing.T, spec corev1.PodSpec, n *corev1.Node) bool {
	t.Helper()
	for k, v := range spec.NodeSelector {
		if n.Labels[k] != v {
			return false
		}
	}
	if a := spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
		any := false
		for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
			all := true
			for _, e := range term.MatchExpressions {
				v, has := n.Labels[e.Key]
				switch e.Operator {
				case corev1.NodeSelectorOpIn:
					all = all && has && slices.Contains(e.Values, v)
				case corev1.NodeSelectorOpNotIn:
					all = all && !(has && slices.Contains(e.Values, v))
				case corev1.NodeSelectorOpExists:
					all = all && has
				case corev1.NodeSelectorOpDoesNotExist:
					all = all && !has
				default:
					t.Fatalf("operator %s: not handled by the test", e.Operator)
				}
			}
			any = any || all
		}
		if !any {
			return false
		}
	}
	for _, taint := range n.Spec.Taints {
		if taint.Effect != corev1.TaintEffectNoSchedule && taint.Effect != corev1.TaintEffectNoExecute {
			continue
		}
		tolerated := false
		for _, tol := range spec.Tolerations {
			tolerated = tolerated || tolerates(tol, taint)
		}
		if !tolerated {
			return false
		}
	}
	if requestsGPUs(spec) {
		q, ok := n.Status.Allocatable[warm.DefaultGPUResource]
		return ok && !q.IsZero()
	}
	return true
}

// tolerates is the scheduler's match of a toleration and a taint.
func tolerates(tol corev1.Toleration, taint corev1.Taint) bool {
	if tol.Effect != "" && tol.Effect != taint.Effect {
		return false
	}
	if tol.Key == "" {
		return tol.Operator == corev1.TolerationOpExists
	}
	if tol.Key != taint.Key {
		return false
	}
	return tol.Operator == corev1.TolerationOpExists || tol.Value == taint.Value
}

// TestPrepullPlacement: the pre-pull DaemonSet of `deploy --prepull -o yaml`
// runs exactly on the nodes the chart's pods can run on: the values'
// nodeSelector, tolerations and node affinity, and GPU nodes only (by
// GPUNodeLabel) when the pods request GPUs and set no nodeSelector. The
// node-pool warmer gets the same node affinity.
func TestPrepullPlacement(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		name, delivery, values string
		want                   []string // the nodes both run on
	}{
		{"defaults", "image-volume", ``, []string{"gpu-a", "gpu-b"}},
		{"modelcar-delivery", "modelcar", ``, []string{"gpu-a", "gpu-b"}},
		{"node-selector", "image-volume", `
nodeSelector:
  node.kubernetes.io/instance-type: g5.12xlarge
  topology.kubernetes.io/zone: b`, []string{"gpu-b"}},
		{"tolerations", "image-volume", `
tolerations:
  - {key: nvidia.com/gpu, operator: Exists, effect: NoSchedule}
  - {key: dedicated, operator: Equal, value: llm, effect: NoSchedule}`, []string{"gpu-a", "gpu-b", "gpu-dedicated"}},
		{"node-affinity", "image-volume", `
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - {key: topology.kubernetes.io/zone, operator: In, values: [a]}
    preferredDuringSchedulingIgnoredDuringExecution:
      - weight: 1
        preference:
          matchExpressions:
            - {key: node.kubernetes.io/instance-type, operator: Exists}
  podAntiAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      - topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels: {app.kubernetes.io/instance: llm}`, []string{"gpu-a"}},
		{"no-gpus", "image-volume", `
vllm:
  resources:
    requests: {nvidia.com/gpu: null}
    limits: {nvidia.com/gpu: null}`, []string{"cpu-a", "cpu-b", "gpu-a", "gpu-b"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			extra := filepath.Join(dir, c.name+".yaml")
			if err := os.WriteFile(extra, []byte(c.values+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			vals, err := MergeValues([]string{filepath.Join(testdataDir, "base.values.yaml"), filepath.Join(testdataDir, c.delivery+".values.yaml"), extra}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			rel, err := NewRelease(context.Background(), ReleaseOptions{
				RenderOptions: RenderOptions{ReleaseName: releaseName, Namespace: "llm", Values: vals},
				Prepull:       true, WarmPool: &WarmPool{Replicas: 1, GPUsPerPod: 1},
			})
			if err != nil {
				t.Fatal(err)
			}
			var y bytes.Buffer
			if err := rel.WriteYAML(&y); err != nil {
				t.Fatal(err)
			}
			var dep, pool *appsv1.Deployment
			var ds *appsv1.DaemonSet
			for _, d := range documents(t, y.String()) {
				var into any
				switch {
				case d["kind"] == "DaemonSet":
					ds = &appsv1.DaemonSet{}
					into = ds
				case d["kind"] == "Deployment" && get(d, "metadata", "name") == fullname:
					dep = &appsv1.Deployment{}
					into = dep
				case d["kind"] == "Deployment" && get(d, "metadata", "name") == PoolName(releaseName):
					pool = &appsv1.Deployment{}
					into = pool
				default:
					continue
				}
				if err := runtime.DefaultUnstructuredConverter.FromUnstructured(d, into); err != nil {
					t.Fatal(err)
				}
			}
			if dep == nil || ds == nil || pool == nil {
				t.Fatalf("-o yaml lacks the Deployment, the DaemonSet or the pool:\n%s", y.String())
			}
			pod, pre := dep.Spec.Template.Spec, ds.Spec.Template.Spec

			// The DaemonSet's constraints are the Deployment's ...
			if !equality.Semantic.DeepEqual(pre.Tolerations, pod.Tolerations) {
				t.Errorf("DaemonSet tolerations %v, Deployment's %v", pre.Tolerations, pod.Tolerations)
			}
			var podNA, preNA *corev1.NodeAffinity
			if pod.Affinity != nil {
				podNA = pod.Affinity.NodeAffinity
			}
			if pre.Affinity != nil {
				preNA = pre.Affinity.NodeAffinity
				if pre.Affinity.PodAffinity != nil || pre.Affinity.PodAntiAffinity != nil {
					t.Errorf("DaemonSet has the vLLM pods' pod (anti-)affinity: %+v", pre.Affinity)
				}
			}
			if !equality.Semantic.DeepEqual(preNA, podNA) {
				t.Errorf("DaemonSet node affinity %+v, Deployment's %+v", preNA, podNA)
			}
			if pool.Spec.Template.Spec.Affinity != nil || podNA != nil {
				if pa := pool.Spec.Template.Spec.Affinity; pa == nil || !equality.Semantic.DeepEqual(pa.NodeAffinity, podNA) || pa.PodAntiAffinity != nil {
					t.Errorf("pool affinity %+v, Deployment's node affinity %+v", pa, podNA)
				}
			}
			// ... and its nodeSelector too, or, for GPU pods without one,
			// the GPU node label, which their nvidia.com/gpu request implies.
			wantSel := pod.NodeSelector
			if len(wantSel) == 0 && requestsGPUs(pod) {
				wantSel = map[string]string{GPUNodeLabel: "true"}
			}
			if !equality.Semantic.DeepEqual(pre.NodeSelector, wantSel) {
				t.Errorf("DaemonSet nodeSelector %v, want %v (Deployment's %v)", pre.NodeSelector, wantSel, pod.NodeSelector)
			}

			// On the nodes: the DaemonSet targets exactly the nodes a
			// vLLM pod fits on.
			var podNodes, preNodes []string
			for _, n := range placementNodes() {
				if fits(t, pod, n) {
					podNodes = append(podNodes, n.Name)
				}
				if fits(t, pre, n) {
					preNodes = append(preNodes, n.Name)
				}
			}
			slices.Sort(podNodes)
			slices.Sort(preNodes)
			if !slices.Equal(podNodes, c.want) {
				t.Errorf("vLLM pods fit on %q, want %q (the test's cases are off)", podNodes, c.want)
			}
			if !slices.Equal(preNodes, podNodes) {
				t.Errorf("the pre-pull DaemonSet targets %q, the vLLM pods fit on %q", preNodes, podNodes)
			}
		})
	}
}

// TestRenderImageVolumeKubeVersion: image volumes exist from Kubernetes
// 1.31, so the imageVolume delivery fails rendering for an older target
// (saying what to use instead), while modelcar and initCopy still render
// for 1.29 and 1.30.
func TestRenderImageVolumeKubeVersion(t *testing.T) {
	for _, c := range []struct {
		delivery, version string
		ok                bool
	}{
		{"image-volume", "1.29.0", false},
		{"image-volume", "1.30.0", false},
		{"image-volume", "v1.30.14-eks-931bdca", false},
		{"image-volume", "1.31.0", true},
		{"image-volume", "v1.31.1-gke.1146000", true},
		{"image-volume", "1.35.0", true},
		{"modelcar", "1.29.0", true},
		{"modelcar", "1.30.0", true},
		{"init-copy", "1.29.0", true},
		{"init-copy", "1.30.0", true},
	} {
		_, _, err := Render(context.Background(), RenderOptions{ReleaseName: releaseName, Values: caseValues(t, c.delivery), KubeVersion: c.version})
		switch {
		case c.ok && err != nil:
			t.Errorf("%s on %s: %v", c.delivery, c.version, err)
		case !c.ok && err == nil:
			t.Errorf("%s on %s rendered", c.delivery, c.version)
		case !c.ok:
			for _, w := range []string{"model.delivery=imageVolume needs Kubernetes 1.31 or later", "ImageVolume feature gate", "model.delivery=modelcar or initCopy"} {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%s on %s: error does not say %q:\n%v", c.delivery, c.version, w, err)
				}
			}
		}
	}
}

// TestValidateValues: a model image or a modelcar image without a digest,
// and a modelcar image missing where the chart runs it, are *ValueErrors
// naming the value's key (all of them, joined), before anything renders;
// allowTag accepts a tag, and the options' own fields are *FieldErrors.
func TestValidateValues(t *testing.T) {
	const tag = "registry.modelcar.test/models/tiny-llama:v1"
	const mcTag = "registry.modelcar.test/modelcar:v1"
	type want struct {
		key   string
		value any
		is    error
	}
	for _, c := range []struct {
		name string
		sets []string
		want []want
	}{
		{"model image", []string{"model.image=" + tag}, []want{{"model.image", tag, warm.ErrNoDigest}}},
		{"modelcar image", []string{"modelcar.image=" + mcTag}, []want{{"modelcar.image", mcTag, warm.ErrNoDigest}}},
		{"both", []string{"model.image=" + tag, "modelcar.image=" + mcTag}, []want{{"model.image", tag, warm.ErrNoDigest}, {"modelcar.image", mcTag, warm.ErrNoDigest}}},
		{"no model image", []string{"model.image="}, []want{{"model.image", nil, warm.ErrRequired}}},
		{"no modelcar image", []string{"modelcar.image="}, []want{{"modelcar.image", nil, warm.ErrRequired}}},
		{"no modelcar image, no warm-up", []string{"modelcar.image=", "warmProbe.enabled=false"}, nil},
		{"tags allowed", []string{"model.image=" + tag, "model.allowTag=true", "modelcar.image=" + mcTag, "modelcar.allowTag=true"}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			opts := RenderOptions{ReleaseName: releaseName, Values: caseValues(t, "image-volume", c.sets...)}
			err := opts.Validate()
			if _, _, rerr := Render(context.Background(), opts); c.want != nil && fmt.Sprint(rerr) != fmt.Sprint(err) {
				t.Errorf("Render: %v, Validate: %v", rerr, err)
			}
			var got []*ValueError
			errs := []error{err}
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				errs = j.Unwrap()
			}
			for _, e := range errs {
				var ve *ValueError
				if errors.As(e, &ve) {
					got = append(got, ve)
				}
			}
			if len(got) != len(c.want) {
				t.Fatalf("Validate: %v, want %d *ValueErrors", err, len(c.want))
			}
			for i, w := range c.want {
				if got[i].Key != w.key || got[i].Value != w.value || !errors.Is(got[i], w.is) {
					t.Errorf("error %d: %#v (%v), want %s %v: %v", i, got[i], got[i], w.key, w.value, w.is)
				}
			}
		})
	}
	for _, c := range []struct {
		opts  RenderOptions
		field string
	}{
		{RenderOptions{Values: caseValues(t, "image-volume")}, "ReleaseName"},
		{RenderOptions{ReleaseName: releaseName, KubeVersion: "one", Values: caseValues(t, "image-volume")}, "KubeVersion"},
	} {
		var fe *FieldError
		if err := c.opts.Validate(); !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%+v: %v, want a *FieldError for %s", c.opts, err, c.field)
		}
	}
	for _, c := range []struct {
		pool  WarmPool
		field string
	}{{WarmPool{Replicas: -1}, "WarmPool.Replicas"}, {WarmPool{GPUsPerPod: -1}, "WarmPool.GPUsPerPod"}} {
		var fe *FieldError
		opts := ReleaseOptions{RenderOptions: RenderOptions{ReleaseName: releaseName, Values: caseValues(t, "image-volume")}, WarmPool: &c.pool}
		if _, err := NewRelease(context.Background(), opts); !errors.As(err, &fe) || fe.Field != c.field {
			t.Errorf("%+v: %v, want a *FieldError for %s", c.pool, err, c.field)
		}
	}
}
