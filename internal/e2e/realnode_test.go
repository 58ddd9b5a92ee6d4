// Package e2e holds end-to-end tests that need a real Kubernetes node: a
// kubelet with containerd and runc (internal/testcluster's real node) beside
// the test cluster's kwok nodes. They build and run the modelcar binary as a
// user would.
package e2e

import (
	"context"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"

	"github.com/modelcar/modelcar/internal/testcluster"
	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/internal/testmodel"
	"github.com/modelcar/modelcar/warm"
)

func TestMain(m *testing.M) { testcluster.Main(m) }

var modelcarBin struct {
	once sync.Once
	path string
	err  error
}

// modelcar builds the modelcar binary once per test process.
func modelcar(t *testing.T) string {
	t.Helper()
	modelcarBin.once.Do(func() {
		dir, err := os.MkdirTemp("", "modelcar-e2e-bin-")
		if err != nil {
			modelcarBin.err = err
			return
		}
		modelcarBin.path = filepath.Join(dir, "modelcar")
		out, err := exec.Command("go", "build", "-o", modelcarBin.path, "github.com/modelcar/modelcar/cmd/modelcar").CombinedOutput()
		if err != nil {
			modelcarBin.err = err
			modelcarBin.path = string(out)
		}
	})
	if modelcarBin.err != nil {
		t.Fatalf("building modelcar: %v\n%s", modelcarBin.err, modelcarBin.path)
	}
	return modelcarBin.path
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	cmd := exec.Command(name, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, stderr.String())
	}
	return strings.TrimSpace(string(out))
}

// onRealNode places a pod on the real node: its name, and the GPU taint
// tolerated.
func onRealNode(spec *corev1.PodSpec, node string) {
	spec.NodeSelector = map[string]string{"kubernetes.io/hostname": node}
	spec.Tolerations = append(spec.Tolerations, corev1.Toleration{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule})
}

// TestRealNodeSmoke: on a real kubelet node, `modelcar warm prepull --apply
// --wait` of a small modelcar makes the kubelet pull it and counts the node
// (its digest appears in the Node's status.images, which alone counts the
// node for a pre-pull whose pod cannot start), and a pod with an image volume of the same modelcar reads
// the model's files under /models, byte for byte.
func TestRealNodeSmoke(t *testing.T) {
	reg := testenv.StartRegistry(t)
	c := testcluster.Shared(t)
	node := c.RealNode(t, testcluster.RealNodeOptions{Registries: []string{reg.Addr}})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// A small model on a busybox base, pushed as a user would.
	work := t.TempDir()
	m, err := testmodel.Generate(filepath.Join(work, "model"), testmodel.Options{TotalSize: 4 << 20})
	if err != nil {
		t.Fatal(err)
	}
	bin := modelcar(t)
	run(t, bin, "pack", m.Dir, "--base", testenv.BusyboxBase(t), "--output", "oci:"+filepath.Join(work, "layout")+":smoke")
	image := run(t, bin, "push", "--plain-http", "oci:"+filepath.Join(work, "layout")+":smoke", reg.Addr+"/smoke/model:v1")
	if !strings.Contains(image, "@sha256:") {
		t.Fatalf("push printed %q, want a digest reference", image)
	}
	digest := image[strings.Index(image, "@")+1:]

	ns := c.Namespace(t, "realnode")
	cs := c.Client()

	// Pre-pull, as a user runs it: the kubelet pulls the modelcar for the
	// DaemonSet pod's image volume, and --wait counts the node once it has.
	prepull := func(name, pause string) string {
		return run(t, bin, "warm", "prepull", "--kubeconfig", c.Kubeconfig, "-n", ns, "--name", name, "--image", image,
			"--node-selector", "kubernetes.io/hostname="+node.Name, "--toleration", "nvidia.com/gpu:NoSchedule",
			"--pause-image", pause, "--allow-tag", "--apply", "--wait", "--timeout", "3m")
	}
	if out := prepull("smoke", testcluster.PauseImage); !strings.Contains(out, "1/1 target nodes have") {
		t.Fatalf("warm prepull --wait printed %q, want the real node counted", out)
	}
	var images []string
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		n, err := cs.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		images = images[:0]
		for _, img := range n.Status.Images {
			images = append(images, img.Names...)
		}
		return warm.NodeHasDigest(n, digest), nil
	})
	if err != nil {
		t.Fatalf("node %s never listed %s in status.images (it lists %v): %v", node.Name, digest, images, err)
	}
	// A second pre-pull whose pod can never start (its pause image does
	// not exist) still counts the node: the kubelet lists the digest in
	// node.status.images, as it names images there.
	dead := "127.0.0.1:1/none@sha256:" + strings.Repeat("0", 64)
	if out := prepull("smoke-listed", dead); !strings.Contains(out, "1/1 target nodes have") {
		t.Fatalf("warm prepull --wait with a pod that cannot start printed %q, want the node counted from status.images", out)
	}
	st, err := warm.GetPrepullStatus(ctx, cs, ns, "smoke-listed")
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range st.Nodes {
		if n.Node == node.Name && (n.State != warm.NodePulled || !strings.Contains(n.Detail, "node.status.images")) {
			t.Errorf("pre-pull status of %s: %+v, want pulled from node.status.images", node.Name, n)
		}
	}

	// A pod reads the model through an image volume of the same modelcar.
	want, err := os.ReadFile(filepath.Join(m.Dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "reader", Namespace: ns},
		Spec: corev1.PodSpec{
			RestartPolicy: corev1.RestartPolicyNever,
			Containers: []corev1.Container{{
				Name: "reader", Image: image, ImagePullPolicy: corev1.PullIfNotPresent,
				Command:      []string{"/bin/sh", "-c", "cat /mnt/model/models/config.json"},
				VolumeMounts: []corev1.VolumeMount{{Name: "model", MountPath: "/mnt/model", ReadOnly: true}},
			}},
			Volumes: []corev1.Volume{{Name: "model", VolumeSource: corev1.VolumeSource{
				Image: &corev1.ImageVolumeSource{Reference: image, PullPolicy: corev1.PullIfNotPresent},
			}}},
		},
	}
	onRealNode(&pod.Spec, node.Name)
	if _, err := cs.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var phase corev1.PodPhase
	err = wait.PollUntilContextTimeout(ctx, 250*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		p, err := cs.CoreV1().Pods(ns).Get(ctx, "reader", metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		phase = p.Status.Phase
		return phase == corev1.PodSucceeded || phase == corev1.PodFailed, nil
	})
	if err != nil || phase != corev1.PodSucceeded {
		t.Fatalf("reader pod ended %q: %v", phase, err)
	}
	// The log comes from the kubelet, through the apiserver, over the veth.
	rc, err := cs.CoreV1().Pods(ns).GetLogs("reader", &corev1.PodLogOptions{}).Stream(ctx)
	if err != nil {
		t.Fatalf("reading the reader pod's log: %v", err)
	}
	defer rc.Close()
	got, err := io.ReadAll(io.LimitReader(rc, 1<<20))
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != string(want) {
		t.Errorf("the pod read config.json as %q, want %q", got, want)
	}
}
