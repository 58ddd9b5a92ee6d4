package main

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	eventsv1 "k8s.io/api/events/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	k8stypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/modelcar/modelcar/internal/kube"
	"github.com/modelcar/modelcar/measure"
)

// fakeCluster replaces the kubeconfig client with a fake clientset for t.
func fakeCluster(t *testing.T, objs ...runtime.Object) *fake.Clientset {
	t.Helper()
	client := fake.NewClientset(objs...)
	old := measureKubeClient
	measureKubeClient = func(f *kube.Flags) (kubernetes.Interface, string, error) {
		if ns := f.NamespaceFlag(); ns != "" {
			return client, ns, nil
		}
		return client, "llm", nil
	}
	t.Cleanup(func() { measureKubeClient = old })
	return client
}

// readyVLLMPod: created at t, scheduled at +1 s, pulled from +2 s to +12 s,
// started at +13 s, weights loaded at +20 s, Ready at +30 s.
func readyVLLMPod(t time.Time) []runtime.Object {
	at := func(s float64) time.Time { return t.Add(time.Duration(s * float64(time.Second))) }
	ref := corev1.ObjectReference{Kind: "Pod", Namespace: "llm", Name: "vllm-a", UID: "p1", FieldPath: "spec.containers{vllm}"}
	ev := func(uid, reason, msg string, s float64) *corev1.Event {
		return &corev1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "llm", Name: "vllm-a." + uid, UID: k8stypes.UID("e-" + uid)},
			InvolvedObject: ref, Reason: reason, Message: msg, Source: corev1.EventSource{Component: "kubelet"},
			FirstTimestamp: metav1.NewTime(at(s)), LastTimestamp: metav1.NewTime(at(s)), Count: 1}
	}
	return []runtime.Object{
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Namespace: "llm", Name: "vllm-a", UID: "p1", Labels: map[string]string{"app": "vllm"}, CreationTimestamp: metav1.NewTime(t)},
			Spec:       corev1.PodSpec{NodeName: "gpu-0", Containers: []corev1.Container{{Name: "vllm", Image: "vllm/vllm-openai:v0.8.5"}}},
			Status: corev1.PodStatus{
				Phase: corev1.PodRunning,
				Conditions: []corev1.PodCondition{
					{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(at(1))},
					{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(at(30))},
				},
				ContainerStatuses: []corev1.ContainerStatus{{Name: "vllm", Ready: true,
					State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(at(13))}}}},
			},
		},
		&eventsv1.Event{ObjectMeta: metav1.ObjectMeta{Namespace: "llm", Name: "vllm-a.s", UID: "e-s"}, Regarding: ref, Reason: "Scheduled",
			Note: "Successfully assigned llm/vllm-a to gpu-0", EventTime: metav1.NewMicroTime(at(1)), ReportingController: "default-scheduler", Action: "Binding", Type: "Normal"},
		ev("1", "Pulling", `Pulling image "vllm/vllm-openai:v0.8.5"`, 2),
		ev("2", "Pulled", `Successfully pulled image "vllm/vllm-openai:v0.8.5" in 10s (10s including waiting). Image size: 9000000000 bytes.`, 12),
		&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "gpu-0", CreationTimestamp: metav1.NewTime(t.Add(-time.Hour))}},
	}
}

func vllmLogReactor(t time.Time) k8stesting.ReactionFunc {
	line := func(s float64, text string) string {
		return t.Add(time.Duration(s*float64(time.Second))).Format(time.RFC3339Nano) + " " + text + "\n"
	}
	log := line(14, "INFO vLLM API server version 0.8.5") +
		line(20, "INFO Model loading took 15.0 GiB and 6.5 seconds") +
		line(28, "INFO:     Application startup complete.")
	return func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "log" {
			return false, nil, nil
		}
		return true, &runtime.Unknown{Raw: []byte(log)}, nil
	}
}

// TestMeasureWatchCommand: `measure watch` reports the pods it followed,
// records the bundle, and `measure --from` reads it back to the same report.
func TestMeasureWatchCommand(t *testing.T) {
	start := time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC)
	client := fakeCluster(t, readyVLLMPod(start)...)
	client.PrependReactor("get", "pods", vllmLogReactor(start))
	dir := t.TempDir()
	bundle := filepath.Join(dir, "bundle")
	out, err := runMeasure(t, "watch", "-l", "app=vllm", "--record", bundle, "--format", "json", "-q")
	if err != nil {
		t.Fatal(err)
	}
	var rep measure.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not a JSON report: %v\n%s", err, out)
	}
	want := measure.Phases{Provision: 1, Pull: 10, Load: 7, Warmup: 10}
	if len(rep.ColdStarts) != 1 || rep.ColdStarts[0].Pod != "llm/vllm-a" || rep.ColdStarts[0].Phases != want || rep.ColdStarts[0].UnattributedSeconds != 2 {
		t.Errorf("report = %+v; want phases %+v and 2 s unattributed", rep.ColdStarts, want)
	}
	back, err := runMeasure(t, "--from", bundle, "--format", "json")
	if err != nil || back != out {
		t.Errorf("measure --from the recorded bundle: %v\n%s\nwant\n%s", err, back, out)
	}

	// --pod, -n, and a report file.
	report := filepath.Join(dir, "report.md")
	if out, err := runMeasure(t, "watch", "-n", "llm", "--pod", "vllm-a", "--container", "vllm", "-o", report, "-q"); err != nil || out != "" {
		t.Fatalf("--pod: %v, stdout %q", err, out)
	}
	if md, err := os.ReadFile(report); err != nil || !strings.Contains(string(md), "| Phase | Seconds | Share | What it was |") {
		t.Errorf("report.md: %v\n%s", err, md)
	}
}

// TestMeasureWatchNotReady: a pod not Ready within --timeout is still
// reported, and the command fails.
func TestMeasureWatchNotReady(t *testing.T) {
	objs := readyVLLMPod(time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC))
	pod := objs[0].(*corev1.Pod)
	pod.Status.Conditions[1].Status = corev1.ConditionFalse
	fakeCluster(t, objs...)
	out, err := runMeasure(t, "watch", "-l", "app=vllm", "--timeout", "100ms", "-q")
	if err == nil || !strings.Contains(err.Error(), "1 of 1 pods did not become Ready within --timeout 100ms") {
		t.Errorf("err = %v", err)
	}
	if !strings.Contains(out, "llm/vllm-a on gpu-0") || !strings.Contains(out, "not Ready after 100ms") {
		t.Errorf("stdout:\n%s", out)
	}
}

func TestMeasureLiveUsage(t *testing.T) {
	for _, args := range [][]string{
		{"watch"},
		{"watch", "-l", "app=x", "extra"},
		{"watch", "-l", "app=x", "--timeout", "-1s"},
		{"run"},
		{"run", "--deployment", "d", "--times", "0"},
		{"run", "--deployment", "d", "--mode", "restart"},
		{"run", "--deployment", "d", "--timeout", "0s"},
	} {
		_, err := runMeasure(t, args...)
		var ue usageError
		if !errors.As(err, &ue) {
			t.Errorf("%q: %v; want a usage error", args, err)
		}
	}
	if _, err := runMeasure(t, "watch", "-l", "app=x", "--format", "pdf"); err == nil {
		t.Error("--format pdf: nil error")
	}
}

// TestMeasureWatchExampleSelector: the help's example selectors are the
// chart's labels (app.kubernetes.io/instance is modelcar deploy's --name).
func TestMeasureWatchExampleSelector(t *testing.T) {
	ex := newMeasureWatchCmd().Example
	if strings.Contains(ex, "app=vllm") || strings.Contains(ex, "app.kubernetes.io/name=vllm ") ||
		!strings.Contains(ex, "-l app.kubernetes.io/instance=llama") {
		t.Errorf("example selectors are not the chart's labels:\n%s", ex)
	}
}
