package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/modelcar/modelcar/internal/testcluster"
	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/internal/testmodel"
	"github.com/modelcar/modelcar/measure"
)

// buildImage builds one of the project's images (internal/cmd/image -target
// NAME) for this machine's platform and pushes it to reg, returning the
// pinned reference.
func buildImage(t *testing.T, target, reg string) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), target)
	cmd := exec.Command("go", "run", "github.com/modelcar/modelcar/internal/cmd/image",
		"-target", target, "-platforms", "linux/amd64", "-version", "e2e", "-out", out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the %s image: %v\n%s", target, err, b)
	}
	return run(t, modelcar(t), "push", "--plain-http", "oci:"+out+":e2e", reg+"/"+target+":e2e")
}

// TestRealNodeServes: the vllm-modelcar chart, deployed by `modelcar deploy`
// in image-volume mode onto the real node, serves: the kubelet pulls the
// modelcar over the node's shaped link and mounts it, the vLLM stand-in
// reads every weight file under /models, the warm-up probe holds the pod
// un-Ready until its workload is done; then `modelcar measure run` makes a
// cold start (the image removed from the node first) and splits it into
// pull, load and warm-up that match what the kubelet and the server logged.
func TestRealNodeServes(t *testing.T) {
	reg := testenv.StartRegistry(t)
	c := testcluster.Shared(t)
	node := c.RealNode(t, testcluster.RealNodeOptions{Registries: []string{reg.Addr}})
	bin := modelcar(t)
	work := t.TempDir()

	m, err := testmodel.Generate(filepath.Join(work, "model"), testmodel.Options{TotalSize: 96 << 20})
	if err != nil {
		t.Fatal(err)
	}
	run(t, bin, "pack", m.Dir, "--output", "oci:"+filepath.Join(work, "layout")+":v1")
	image := run(t, bin, "push", "--plain-http", "oci:"+filepath.Join(work, "layout")+":v1", reg.Addr+"/models/serve:v1")
	standin := buildImage(t, "vllm-standin", reg.Addr)
	mcImage := buildImage(t, "modelcar", reg.Addr)

	ns := c.Namespace(t, "serve")
	kubeconfig := c.Kubeconfig
	deploy := append([]string{"deploy", "--kubeconfig", kubeconfig, "-n", ns, "--name", "llm", "--image", image, "--modelcar-image", mcImage},
		node.ChartFlags(standin, "1Gi")...)
	run(t, bin, append(deploy, "--set", "warmProbe.workload=16x16@1\\,64x16@2", "--apply")...)

	// One cold start, the image removed from the node first: the kubelet
	// pulls it again through the shaped link.
	report := filepath.Join(work, "report.json")
	_, imageDigest, _ := strings.Cut(image, "@")
	rmi := node.RemoveImageScript(imageDigest)
	cmd := exec.Command(bin, "measure", "run", "--kubeconfig", kubeconfig, "-n", ns, "--deployment", "llm",
		"--times", "1", "--timeout", "4m", "--before-each", rmi, "-o", report, "--record", filepath.Join(work, "runs"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("measure run: %v\n%s\n%s", err, stderr.String(), podsDescribe(t, c, ns))
	}
	t.Logf("measure run:\n%s", stderr.String())
	data, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep measure.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.ColdStarts) != 1 {
		t.Fatalf("report has %d cold starts: %s", len(rep.ColdStarts), data)
	}
	cs := rep.ColdStarts[0]
	if cs.Node != node.Name || cs.Ready.IsZero() {
		t.Fatalf("cold start on %q, ready %v: %s", cs.Node, cs.Ready, data)
	}
	if cs.Phases.Pull <= 0 || cs.Phases.Load <= 0 || cs.Phases.Warmup <= 0 {
		t.Errorf("phases %+v: want a pull, a load and a warm-up", cs.Phases)
	}

	// The load the server logged, against the load measure attributed.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pods, err := c.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var logged float64
	for _, p := range pods.Items {
		if "" == p.Spec.NodeName || p.DeletionTimestamp != nil || !strings.HasPrefix(p.Name, "llm") {
			continue
		}
		b, err := c.Client().CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: "vllm"}).DoRaw(ctx)
		if err != nil {
			t.Fatalf("log of %s: %v", p.Name, err)
		}
		if mm := regexp.MustCompile(`Loading weights took ([0-9.]+) seconds`).FindSubmatch(b); mm != nil {
			logged, _ = strconv.ParseFloat(string(mm[1]), 64)
		}
		t.Logf("vllm log of %s:\n%s", p.Name, b)
	}
	if logged <= 0 {
		t.Fatalf("no 'Loading weights took' line in the stand-in's log")
	}
	t.Logf("phases: pull %.2f s, load %.2f s (the server logged %.2f s of weight loading), warm-up %.2f s, total %.2f s",
		cs.Phases.Pull, cs.Phases.Load, logged, cs.Phases.Warmup, cs.TotalSeconds)
	// measure's load runs from the container's start to the logged line: it
	// holds the server's own load, and at most a couple of seconds more
	// (process start, log timestamps to the millisecond, kubelet's Started).
	if cs.Phases.Load+0.05 < logged || cs.Phases.Load > logged+3 {
		t.Errorf("measured load %.2f s against %.2f s logged", cs.Phases.Load, logged)
	}

	// The other two deliveries serve the same model on the real node: the
	// modelcar as a KServe-style sidecar (the model packed on a busybox
	// base), and initCopy (`modelcar pull` in an init container, from the
	// registry at the node's address) into an emptyDir or a hostPath cache.
	podReg := node.PodRegistry(reg.Addr)
	run(t, bin, "pack", m.Dir, "--base", testenv.BusyboxBase(t), "--output", "oci:"+filepath.Join(work, "sidecar")+":v1")
	sidecarImage := run(t, bin, "push", "--plain-http", "oci:"+filepath.Join(work, "sidecar")+":v1", reg.Addr+"/models/serve-sidecar:v1")
	podImage := strings.Replace(image, reg.Addr, podReg, 1)
	cache := filepath.Join(work, "cache")
	if err := os.MkdirAll(cache, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cache, 0o777); err != nil { // initCopy runs as 65532
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, image string
		set         []string
	}{
		{"modelcar-sidecar", sidecarImage, []string{"model.delivery=modelcar", "vllm.securityContext.runAsUser=65532", "vllm.securityContext.runAsGroup=65532"}},
		{"initCopy-emptyDir", podImage, []string{"model.delivery=initCopy", "initCopy.extraArgs={--plain-http}", "initCopy.resources.requests.cpu=100m"}},
		{"initCopy-hostPath", podImage, []string{"model.delivery=initCopy", "initCopy.extraArgs={--plain-http}", "initCopy.resources.requests.cpu=100m", "model.cache.hostPath=" + cache}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns := c.Namespace(t, "serve")
			args := append([]string{"deploy", "--kubeconfig", kubeconfig, "-n", ns, "--name", "llm", "--image", tc.image, "--modelcar-image", mcImage},
				node.ChartFlags(standin, "1Gi")...)
			args = append(args, "--set", "warmProbe.workload=16x16@1", "--apply")
			for _, kv := range tc.set {
				args = append(args, "--set", kv)
			}
			run(t, bin, args...)
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
			defer cancel()
			err := wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, 4*time.Minute, true, func(ctx context.Context) (bool, error) {
				d, err := c.Client().AppsV1().Deployments(ns).Get(ctx, "llm", metav1.GetOptions{})
				if err != nil {
					return false, nil
				}
				return d.Status.ReadyReplicas == 1, nil
			})
			if err != nil {
				t.Fatalf("%s: the deployment never became Ready: %v\n%s", tc.name, err, podsDescribe(t, c, ns))
			}
			pods, err := c.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil || len(pods.Items) == 0 {
				t.Fatalf("pods: %v", err)
			}
			b, err := c.Client().CoreV1().Pods(ns).GetLogs(pods.Items[0].Name, &corev1.PodLogOptions{Container: "vllm"}).DoRaw(ctx)
			if err != nil {
				t.Fatal(err)
			}
			// The stand-in read every weight byte: its GiB is the model's.
			mm := regexp.MustCompile(`Model loading took ([0-9.]+) GiB`).FindSubmatch(b)
			if mm == nil {
				t.Fatalf("no 'Model loading took' line:\n%s", b)
			}
			gib, _ := strconv.ParseFloat(string(mm[1]), 64)
			var weights int64
			for _, sh := range m.Shards {
				fi, err := os.Stat(filepath.Join(m.Dir, sh))
				if err != nil {
					t.Fatal(err)
				}
				weights += fi.Size()
			}
			if want := float64(weights) / (1 << 30); gib < want*0.99 || gib > want*1.01+0.0001 {
				t.Errorf("the stand-in loaded %.4f GiB, the model's weights are %.4f GiB", gib, want)
			}
			if strings.HasSuffix(tc.name, "hostPath") {
				_, d, _ := strings.Cut(image, "@sha256:")
				if _, err := os.Stat(filepath.Join(cache, "sha256-"+d, "config.json")); err != nil {
					t.Errorf("the hostPath cache holds no copy of the model: %v", err)
				}
			}
		})
	}
}

// podsDescribe sums up the namespace's pods and events for a failure.
func podsDescribe(t *testing.T, c *testcluster.Cluster, ns string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var b strings.Builder
	pods, _ := c.Client().CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	for _, p := range pods.Items {
		fmt.Fprintf(&b, "pod %s on %q: %s\n", p.Name, p.Spec.NodeName, p.Status.Phase)
		for _, s := range append(p.Status.InitContainerStatuses, p.Status.ContainerStatuses...) {
			fmt.Fprintf(&b, "  %s ready=%v state=%+v\n", s.Name, s.Ready, s.State)
			for _, previous := range []bool{false, true} {
				tail := int64(15)
				if log, err := c.Client().CoreV1().Pods(ns).GetLogs(p.Name, &corev1.PodLogOptions{Container: s.Name, Previous: previous, TailLines: &tail}).DoRaw(ctx); err == nil && len(log) > 0 {
					fmt.Fprintf(&b, "  log of %s (previous %v):\n%s\n", s.Name, previous, log)
				}
			}
		}
	}
	evs, _ := c.Client().CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	for _, e := range evs.Items {
		fmt.Fprintf(&b, "event %s %s: %s\n", e.InvolvedObject.Name, e.Reason, e.Message)
	}
	return b.String()
}
