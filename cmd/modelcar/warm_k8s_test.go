package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	corev1 "k8s.io/api/core/v1"

	"github.com/modelcar/modelcar/internal/kube"
	"github.com/modelcar/modelcar/warm"
)

const (
	k8sTestDigest = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	k8sTestImage  = "registry.modelcar.test/models/llama@" + k8sTestDigest
	k8sModelcar   = "registry.modelcar.test/modelcar@sha256:fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210"
)

// k8sRoot is the root command with warm's cluster subcommands, whether or
// not newWarmCmd adds them yet.
func k8sRoot() *cobra.Command {
	root := warmRoot()
	w, _, _ := root.Find([]string{"warm"})
	for _, c := range w.Commands() {
		if c.Name() == "prepull" {
			return root
		}
	}
	addWarmK8sCmds(w)
	return root
}

// runK8s runs modelcar in-process with no kubeconfig: rendering must not
// need a cluster.
func runK8s(t *testing.T, args ...string) result {
	t.Helper()
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
	root := k8sRoot()
	var so, se bytes.Buffer
	root.SetArgs(args)
	root.SetOut(&so)
	root.SetErr(&se)
	err := root.ExecuteContext(context.Background())
	if err != nil {
		fmt.Fprintln(&se, "Error:", err)
	}
	return result{stdout: so.String(), stderr: se.String(), code: exitCode(err)}
}

// rendered renders what a warm constructor returned, as the CLI should.
func rendered(t *testing.T) func([]warm.Object, error) string {
	return func(objs []warm.Object, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		var b bytes.Buffer
		if err := kube.Render(&b, objs); err != nil {
			t.Fatal(err)
		}
		return b.String()
	}
}

func TestWarmPrepullYAML(t *testing.T) {
	r := runK8s(t, "warm", "prepull", "--image", k8sTestImage, "-n", "inference",
		"--node-selector", "nvidia.com/gpu.present=true", "--toleration", "nvidia.com/gpu:NoSchedule")
	if r.code != 2 || !strings.Contains(r.stderr, "choose -o yaml") {
		t.Errorf("no output mode: %+v", r)
	}
	r = runK8s(t, "warm", "prepull", "--image", k8sTestImage, "-n", "inference",
		"--node-selector", "nvidia.com/gpu.present=true", "--toleration", "nvidia.com/gpu:NoSchedule", "-o", "yaml")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("-o yaml: %+v", r)
	}
	want := rendered(t)(warm.PrepullObjects(warm.PrepullOptions{
		Image: k8sTestImage, Namespace: "inference",
		NodeSelector: map[string]string{"nvidia.com/gpu.present": "true"},
		Tolerations:  []corev1.Toleration{{Key: "nvidia.com/gpu", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoSchedule}},
	}))
	if r.stdout != want {
		t.Errorf("-o yaml printed\n%s\nwant\n%s", r.stdout, want)
	}
	for _, s := range []string{"kind: DaemonSet", "name: modelcar-prepull-llama", "namespace: inference", "reference: " + k8sTestImage,
		"modelcar.dev/image-digest: " + k8sTestDigest, "app.kubernetes.io/managed-by: modelcar", "pullPolicy: IfNotPresent"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("-o yaml lacks %q", s)
		}
	}

	// Init-container mode, a mirrored pause image, and no kubeconfig: the
	// namespace is "default".
	r = runK8s(t, "warm", "prepull", "--image", k8sTestImage, "--name", "llama", "--mode", "init-container",
		"--init-command", "/bin/sh", "--init-command", "-c", "--init-command", "exit 0", "--pause-image", "mirror.internal/pause:3.10@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a", "-o", "yaml")
	if r.code != 0 {
		t.Fatalf("init-container: %+v", r)
	}
	for _, s := range []string{"name: llama\n", "namespace: default", "initContainers:", "- /bin/sh\n        - -c\n        - exit 0", "image: mirror.internal/pause:3.10@sha256:ee6521f290b2168b6e0935a181d4cff9be1ac3f505666ef0e3c98fae8199917a"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("init-container -o yaml lacks %q:\n%s", s, r.stdout)
		}
	}
}

// TestWarmPrepullRefusesTag: a reference without a digest is a usage error
// that says how to fix it, unless --allow-tag.
func TestWarmPrepullRefusesTag(t *testing.T) {
	tag := "registry.modelcar.test/models/llama:v1"
	r := runK8s(t, "warm", "prepull", "--image", tag, "-o", "yaml")
	if r.code != 2 || r.stdout != "" {
		t.Fatalf("tag accepted: %+v", r)
	}
	for _, s := range []string{"--image", "has no digest", tag, "REPO@sha256:", "--allow-tag"} {
		if !strings.Contains(r.stderr, s) {
			t.Errorf("error lacks %q: %s", s, r.stderr)
		}
	}
	if r := runK8s(t, "warm", "prepull", "--image", tag, "--allow-tag", "-o", "yaml"); r.code != 0 || !strings.Contains(r.stdout, "reference: "+tag) ||
		strings.Contains(r.stdout, "image-digest") {
		t.Errorf("--allow-tag: %+v", r)
	}
	if r := runK8s(t, "warm", "pool", "--replicas", "1", "--gpus-per-pod", "1", "-n", "x", "--schedule", "@daily=0",
		"--modelcar-image", "registry.modelcar.test/modelcar:v1", "-o", "yaml"); r.code != 2 || !strings.Contains(r.stderr, "--modelcar-image") ||
		!strings.Contains(r.stderr, "has no digest") {
		t.Errorf("pool with a tagged modelcar image: %+v", r)
	}
}

func TestWarmPoolYAML(t *testing.T) {
	r := runK8s(t, "warm", "pool", "--replicas", "2", "--gpus-per-pod", "8", "-n", "inference",
		"--node-selector", "nvidia.com/gpu.present=true", "--schedule", "0 8 * * 1-5=4", "--schedule", "0 20 * * *=0",
		"--modelcar-image", k8sModelcar, "--time-zone", "Europe/Paris", "-o", "yaml")
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("-o yaml: %+v", r)
	}
	want := rendered(t)(warm.Pool(warm.PoolOptions{
		Namespace: "inference", Replicas: 2, GPUsPerPod: 8,
		NodeSelector:  map[string]string{"nvidia.com/gpu.present": "true"},
		Schedules:     []warm.Schedule{{Cron: "0 8 * * 1-5", Replicas: 4}, {Cron: "0 20 * * *", Replicas: 0}},
		ModelcarImage: k8sModelcar, TimeZone: "Europe/Paris",
	}))
	if r.stdout != want {
		t.Errorf("-o yaml printed\n%s\nwant\n%s", r.stdout, want)
	}
	for _, s := range []string{"kind: PriorityClass", "value: -10", "preemptionPolicy: Never", "kind: CronJob", "schedule: 0 8 * * 1-5",
		"- scale\n", "resourceNames:\n  - modelcar-pool\n", "- deployments/scale"} {
		if !strings.Contains(r.stdout, s) {
			t.Errorf("-o yaml lacks %q", s)
		}
	}
}

func TestWarmK8sUsageErrors(t *testing.T) {
	for _, args := range [][]string{
		{"warm", "prepull", "--image", k8sTestImage, "-o", "yaml", "--apply"},
		{"warm", "prepull", "--image", k8sTestImage, "-o", "json"},
		{"warm", "prepull", "--image", k8sTestImage, "--apply", "--dry-run=client"},
		{"warm", "prepull", "--image", k8sTestImage, "-o", "yaml", "--dry-run=server"},
		{"warm", "prepull", "--image", k8sTestImage, "-o", "yaml", "--wait"},
		{"warm", "prepull", "-o", "yaml"},
		{"warm", "prepull", "--delete"},
		{"warm", "prepull", "--image", k8sTestImage, "--mode", "sidecar", "-o", "yaml"},
		{"warm", "prepull", "--image", k8sTestImage, "--toleration", "k=v:Sometimes", "-o", "yaml"},
		{"warm", "pool", "--replicas", "1", "-o", "yaml"},
		{"warm", "pool", "--replicas", "1", "--gpus-per-pod", "1", "--schedule", "0 8 * * *", "-o", "yaml"},
		{"warm", "pool", "--replicas", "1", "--gpus-per-pod", "1", "--schedule", "0 8 * * *=1", "-o", "yaml"},
		{"warm", "pool", "--replicas", "1", "--gpus-per-pod", "1", "--priority", "5", "-o", "yaml"},
		{"warm", "scale", "--replicas", "1"},
	} {
		if r := runK8s(t, args...); r.code != 2 || r.stdout != "" {
			t.Errorf("%q: %+v, want a usage error", args, r)
		}
	}
	// Cluster commands without a kubeconfig fail clearly (exit 1).
	if r := runK8s(t, "warm", "status"); r.code != 1 || !strings.Contains(r.stderr, "Kubernetes client configuration") {
		t.Errorf("status without a cluster: %+v", r)
	}
}

// runK8sOn runs modelcar in-process against the cluster of kubeconfig.
func runK8sOn(t *testing.T, kubeconfig string, args ...string) result {
	t.Helper()
	root := k8sRoot()
	var so, se bytes.Buffer
	root.SetArgs(append(args, "--kubeconfig", kubeconfig))
	root.SetOut(&so)
	root.SetErr(&se)
	err := root.ExecuteContext(context.Background())
	if err != nil {
		fmt.Fprintln(&se, "Error:", err)
	}
	return result{stdout: so.String(), stderr: se.String(), code: exitCode(err)}
}

// TestWarmK8sOnCluster drives prepull --apply --wait, status, --delete and
// pool --apply (dry run and real) through the CLI on the shared test
// cluster (clusterForCLI: under MODELCAR_E2E=1, or with
// MODELCAR_CLUSTER_KUBECONFIG); the warm package's tests cover the same
// through the library.
func TestWarmK8sOnCluster(t *testing.T) {
	c := clusterForCLI(t)
	kc := c.Kubeconfig
	ns := c.Namespace(t, "warm-cli")
	prepull := []string{"warm", "prepull", "--image", k8sTestImage, "-n", ns, "--node-selector", "nvidia.com/gpu.present=true", "--toleration", "nvidia.com/gpu=present:NoSchedule"}

	r := runK8sOn(t, kc, append(prepull, "--apply", "--dry-run=server")...)
	if r.code != 0 || r.stdout != "daemonset.apps/modelcar-prepull-llama created (server dry run)\n" {
		t.Fatalf("dry run: %+v", r)
	}
	r = runK8sOn(t, kc, append(prepull, "--apply", "--wait", "--timeout", "1m", "--interval", "200ms")...)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "daemonset.apps/modelcar-prepull-llama created\n") ||
		!strings.Contains(r.stdout, "2/2 target nodes have "+k8sTestImage) || !strings.Contains(r.stderr, "gpu-0: pulled (pod modelcar-prepull-llama-") ||
		!strings.Contains(r.stderr, "gpu-1: pulled") || strings.Contains(r.stderr, "cpu-0") {
		t.Fatalf("apply --wait: %+v", r)
	}
	t.Logf("apply --wait:\n%s%s", r.stdout, r.stderr)
	if r = runK8sOn(t, kc, append(prepull, "--apply")...); r.code != 0 || r.stdout != "daemonset.apps/modelcar-prepull-llama unchanged\n" {
		t.Errorf("re-apply: %+v", r)
	}
	r = runK8sOn(t, kc, "warm", "status", "-n", ns)
	if r.code != 0 || !regexp.MustCompile(`(?m)^gpu-0 +pulled +20\d\d-`).MatchString(r.stdout) ||
		!regexp.MustCompile(`(?m)^cpu-0 +not targeted +- +no label nvidia.com/gpu.present=true$`).MatchString(r.stdout) {
		t.Errorf("status: %+v", r)
	}
	t.Logf("status:\n%s", r.stdout)
	if r = runK8sOn(t, kc, "warm", "prepull", "--name", "modelcar-prepull-llama", "-n", ns, "--delete"); r.code != 0 || r.stdout != "daemonset.apps/modelcar-prepull-llama deleted\n" {
		t.Errorf("delete: %+v", r)
	}

	pool := []string{"warm", "pool", "--replicas", "0", "--gpus-per-pod", "4", "-n", ns, "--schedule", "0 8 * * 1-5=2",
		"--modelcar-image", k8sModelcar, "--priority-class", "modelcar-placeholder"}
	if r = runK8sOn(t, kc, append(pool, "--apply", "--dry-run=server")...); r.code != 0 || strings.Count(r.stdout, "(server dry run)") != 6 {
		t.Errorf("pool dry run: %+v", r)
	}
	if r = runK8sOn(t, kc, append(pool, "--apply")...); r.code != 0 || !strings.Contains(r.stdout, "role.rbac.authorization.k8s.io/modelcar-pool-scaler created") {
		t.Errorf("pool apply: %+v", r)
	}
	if r = runK8sOn(t, kc, "warm", "scale", "--name", "modelcar-pool", "-n", ns, "--replicas", "1"); r.code != 0 || r.stdout != "pool "+ns+"/modelcar-pool scaled from 0 to 1 replicas\n" {
		t.Errorf("scale: %+v", r)
	}
	if r = runK8sOn(t, kc, append(pool, "--apply")...); r.code != 0 || !strings.Contains(r.stdout, "deployment.apps/modelcar-pool ") {
		t.Errorf("pool re-apply after scale: %+v", r)
	}
	if r = runK8sOn(t, kc, append(pool, "--apply")...); r.code != 0 || strings.Count(r.stdout, " unchanged\n") != 6 {
		t.Errorf("pool third apply: %+v", r)
	}
	if r = runK8sOn(t, kc, "warm", "pool", "-n", ns, "--delete"); r.code != 0 || !strings.Contains(r.stdout, "deployment.apps/modelcar-pool deleted") {
		t.Errorf("pool delete: %+v", r)
	}
}

// TestWarmRefusesWhatTheAPIServerRefuses: values the API server would
// refuse (a cron field out of range, an unknown time zone, a name that is
// not DNS-1123) are usage errors naming the flag and the value, before
// anything is rendered, and with --apply before connecting (no cluster
// here: a later check would fail on the kubeconfig instead, exit 1).
func TestWarmRefusesWhatTheAPIServerRefuses(t *testing.T) {
	with := func(base []string, more ...string) []string { return append(slices.Clone(base), more...) }
	pool := []string{"warm", "pool", "--replicas", "1", "--gpus-per-pod", "8", "-n", "inference"}
	sched := with(pool, "--modelcar-image", k8sModelcar)
	prepull := []string{"warm", "prepull", "--image", k8sTestImage}
	long := strings.Repeat("a", 64)
	for _, tc := range []struct {
		args []string
		want []string
	}{
		{with(sched, "--schedule", "61 8 * * *=4"), []string{"--schedule", "61 8 * * *", "minute", "0-59"}},
		{with(sched, "--schedule", "0 24 * * *=4"), []string{"--schedule", "0 24 * * *", "hour"}},
		{with(sched, "--schedule", "0 8 0 * *=4"), []string{"--schedule", "day-of-month"}},
		{with(sched, "--schedule", "0 8 * 13 *=4"), []string{"--schedule", "month"}},
		{with(sched, "--schedule", "0 8 * * 7=4"), []string{"--schedule", "0 8 * * 7", "day-of-week", "0-6"}},
		{with(sched, "--schedule", "0 8 * * mon-fry=4"), []string{"--schedule", "fry"}},
		{with(sched, "--schedule", "*/0 8 * * *=4"), []string{"--schedule", "*/0"}},
		{with(sched, "--schedule", "TZ=UTC @daily=4"), []string{`--schedule "TZ=UTC @daily=4"`, "--time-zone"}},
		{with(sched, "--schedule", "@daily=1", "--time-zone", "Mars/Olympus"), []string{"--time-zone", "Mars/Olympus"}},
		{with(sched, "--schedule", "@daily=1", "--time-zone", "Local"), []string{"--time-zone", "Local"}},
		{with(pool, "--name", "Bad_Name"), []string{"--name", "Bad_Name"}},
		{with(sched, "--schedule", "@daily=1", "--name", strings.Repeat("p", 45)), []string{"--name", strings.Repeat("p", 45), "CronJob", "at most 44"}},
		{with(pool, "--priority-class", "Bad_Class"), []string{"--priority-class", "Bad_Class"}},
		{with(prepull, "--name", "Bad_Name"), []string{"--name", "Bad_Name"}},
		{with(prepull, "--name", long), []string{"--name", long, "63"}},
		{with(prepull, "--priority-class", "Bad_Class"), []string{"--priority-class", "Bad_Class"}},
		{with(prepull, "-n", "Bad_NS"), []string{"--namespace", "Bad_NS"}},
	} {
		for _, mode := range [][]string{{"-o", "yaml"}, {"--apply"}} {
			args := with(tc.args, mode...)
			r := runK8s(t, args...)
			if r.code != 2 || r.stdout != "" {
				t.Errorf("%q: %+v, want a usage error (exit 2) and nothing rendered", args, r)
				continue
			}
			for _, s := range tc.want {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("%q: error lacks %q: %s", args, s, r.stderr)
				}
			}
		}
	}
	// Names are checked for the subcommands that only look objects up too.
	for _, args := range [][]string{
		{"warm", "prepull", "--name", "Bad_Name", "--delete"},
		{"warm", "prepull", "--name", "Bad_Name", "--wait"},
		{"warm", "pool", "--name", "Bad_Name", "--delete"},
		{"warm", "status", "--name", "Bad_Name"},
		{"warm", "scale", "--name", "Bad_Name", "--replicas", "1"},
		{"warm", "status", "-n", "Bad_NS"},
	} {
		if r := runK8s(t, args...); r.code != 2 || !strings.Contains(r.stderr, "Bad_") {
			t.Errorf("%q: %+v, want a usage error naming the value", args, r)
		}
	}
	// What the API server accepts still renders: lists, ranges, steps,
	// names, ?, macros, a time zone from the embedded database, a dotted
	// pre-pull name, the longest names.
	r := runK8s(t, with(sched, "--schedule", "*/15 9-17/2 1,15 JAN-jun MON-FRI=2", "--schedule", "0 0 ? * sun=0",
		"--schedule", "@every 90m=1", "--time-zone", "America/Argentina/Buenos_Aires", "--name", strings.Repeat("p", 44), "-o", "yaml")...)
	if r.code != 0 || !strings.Contains(r.stdout, "schedule: '*/15 9-17/2 1,15 JAN-jun MON-FRI'") || !strings.Contains(r.stdout, "timeZone: America/Argentina/Buenos_Aires") {
		t.Errorf("valid schedules: %+v", r)
	}
	if r := runK8s(t, with(prepull, "--name", "llama-3.1-8b", "-o", "yaml")...); r.code != 0 || !strings.Contains(r.stdout, "name: llama-3.1-8b\n") {
		t.Errorf("dotted pre-pull name: %+v", r)
	}
	if r := runK8s(t, with(prepull, "--name", long[:63], "-o", "yaml")...); r.code != 0 {
		t.Errorf("63-character pre-pull name: %+v", r)
	}
}

// TestWarmPauseImageRefusesTag: --pause-image without a digest is refused
// like --image (same error, same --allow-tag escape), and the default is
// pinned by digest.
func TestWarmPauseImageRefusesTag(t *testing.T) {
	const tag = "registry.k8s.io/pause:3.10"
	for _, args := range [][]string{
		{"warm", "prepull", "--image", k8sTestImage, "--pause-image", tag, "-o", "yaml"},
		{"warm", "prepull", "--image", k8sTestImage, "--pause-image", tag, "--apply"},
		{"warm", "pool", "--replicas", "1", "--gpus-per-pod", "8", "--pause-image", tag, "-o", "yaml"},
		{"warm", "pool", "--replicas", "1", "--gpus-per-pod", "8", "--pause-image", tag, "--apply"},
	} {
		r := runK8s(t, args...)
		if r.code != 2 || r.stdout != "" {
			t.Errorf("%q: %+v, want a usage error", args, r)
			continue
		}
		for _, s := range []string{"--pause-image", "has no digest", tag, "REPO@sha256:", "--allow-tag"} {
			if !strings.Contains(r.stderr, s) {
				t.Errorf("%q: error lacks %q: %s", args, s, r.stderr)
			}
		}
		if args[len(args)-1] == "yaml" {
			allow := append(slices.Clone(args[:len(args)-2]), "--allow-tag", "-o", "yaml")
			if r := runK8s(t, allow...); r.code != 0 || !strings.Contains(r.stdout, "image: "+tag+"\n") {
				t.Errorf("%q: %+v", allow, r)
			}
		}
	}
	for _, sub := range []string{"prepull", "pool"} {
		c, _, err := k8sRoot().Find([]string{"warm", sub})
		if err != nil {
			t.Fatal(err)
		}
		def := c.Flags().Lookup("pause-image").DefValue
		if def != warm.DefaultPauseImage || !regexp.MustCompile(`^registry\.k8s\.io/pause:[0-9.]+@sha256:[0-9a-f]{64}$`).MatchString(def) {
			t.Errorf("warm %s --pause-image default %q is not pinned by digest", sub, def)
		}
	}
}

// TestFieldFlagsImageHint: a *FieldError for an image without a digest
// becomes a usage error naming the flag, the value and the fix, which
// mentions --allow-tag only when the command has that flag (plan has
// none).
func TestFieldFlagsImageHint(t *testing.T) {
	const tag = "r.test/m:v1"
	refused := (warm.PrepullOptions{Image: tag}).Validate()
	with, without := prepullFlags.usage(refused), planFieldFlags.usage(refused)
	for _, err := range []error{with, without} {
		if exitCode(err) != 2 || !strings.Contains(err.Error(), `--image "`+tag+`": image reference has no digest`) ||
			!strings.Contains(err.Error(), "pin the image as REPO@sha256:... ('modelcar push' prints the digest)") || !errors.Is(err, warm.ErrNoDigest) {
			t.Errorf("%v", err)
		}
	}
	if !strings.HasSuffix(with.Error(), " or pass --allow-tag") {
		t.Errorf("with the hint: %v", with)
	}
	if strings.Contains(without.Error(), "allow-tag") || !strings.HasSuffix(without.Error(), "prints the digest)") {
		t.Errorf("without the hint: %v", without)
	}
}

// TestFieldFlagsNameTheFlag: each field the library's Validate names is
// written as the flag that sets it, with its value; a field no flag sets,
// and an error that is no *FieldError, pass as they are.
func TestFieldFlagsNameTheFlag(t *testing.T) {
	for _, tc := range []struct {
		flags fieldFlags
		err   error
		want  string
	}{
		{prepullFlags, (warm.PrepullOptions{Image: k8sTestImage, Name: "Bad_Name"}).Validate(), `--name "Bad_Name": `},
		{prepullFlags, (warm.PrepullOptions{Image: k8sTestImage, Namespace: "Bad_NS"}).Validate(), `--namespace "Bad_NS": `},
		{prepullFlags, (warm.PrepullOptions{}).Validate(), "--image is required: the modelcar to pull"},
		{poolFlags, (warm.PoolOptions{GPUsPerPod: 1, Priority: 3}).Validate(), "--priority 3: must be negative"},
		{poolFlags, (warm.PoolOptions{GPUsPerPod: 1, Namespace: "x", ModelcarImage: k8sModelcar,
			Schedules: []warm.Schedule{{Cron: "@daily", Replicas: 1}, {Cron: "@daily", Replicas: 2}}}).Validate(), `--schedule "@daily=2": two windows start at "@daily"`},
		{probeFlags, (warm.ProbeConfig{API: "grpc"}).Validate(), `--api "grpc": unknown API`},
		{probeFlags, (warm.ProbeConfig{Workload: []warm.Request{{PromptTokens: 1, MaxTokens: 1, Concurrency: 1}, {PromptTokens: 1, MaxTokens: 1, Concurrency: 0}}}).Validate(), `--workload "1x1@0": concurrency 0 out of range`},
		{fieldFlags{}, (warm.PrepullOptions{Image: k8sTestImage, Name: "Bad_Name"}).Validate(), `Name "Bad_Name": `},
		{prepullFlags, errors.New("not a field"), "not a field"},
	} {
		got := tc.flags.usage(tc.err)
		if exitCode(got) != 2 || !strings.HasPrefix(got.Error(), tc.want) {
			t.Errorf("usage(%v) = %v, want a usage error starting %q", tc.err, got, tc.want)
		}
	}
}
