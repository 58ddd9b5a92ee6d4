package main

import (
	"bytes"
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	versionpkg "k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"sigs.k8s.io/yaml"

	"github.com/modelcar/modelcar/measure/plan"
	"github.com/modelcar/modelcar/warm"
)

const planFixtures = "../../testdata/plan"

const planImage = "registry.example.com/models/qwen2.5-32b-instruct@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// runPlanCmd runs `modelcar plan ARGS` in-process through the root
// command, with no kubeconfig.
func runPlanCmd(t *testing.T, args ...string) result {
	t.Helper()
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "missing"))
	root := newRootCmd()
	var so, se bytes.Buffer
	root.SetArgs(append([]string{"plan"}, args...))
	root.SetOut(&so)
	root.SetErr(&se)
	err := root.ExecuteContext(context.Background())
	if err != nil {
		se.WriteString("Error: " + err.Error() + "\n")
	}
	return result{stdout: so.String(), stderr: se.String(), code: exitCode(err)}
}

func planJSON(t *testing.T, r result) *plan.Plan {
	t.Helper()
	if r.code != 0 {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	var p plan.Plan
	if err := json.Unmarshal([]byte(r.stdout), &p); err != nil {
		t.Fatalf("not a JSON plan: %v\n%s", err, r.stdout)
	}
	return &p
}

func applyOrder(p *plan.Plan) []string {
	var out []string
	for _, l := range p.Levers {
		if l.Status == plan.Apply {
			out = append(out, l.Name)
		}
	}
	return out
}

func TestPlanFromReport(t *testing.T) {
	r := runPlanCmd(t, "--from", filepath.Join(planFixtures, "provision-scaleup.json"))
	if r.code != 0 || !strings.Contains(r.stdout, "\n 1. warm-pool (provision): up to 160.0 s, high confidence, measured\n") ||
		!strings.Contains(r.stdout, "\n 2. prepull (pull): up to 72.5 s, medium confidence, measured\n") {
		t.Errorf("text plan: %+v", r)
	}
	// Facts from a file, one overridden by --fact; the bench; JSON from -o's extension.
	out := filepath.Join(t.TempDir(), "plan.json")
	r = runPlanCmd(t, "--from", filepath.Join(planFixtures, "pull-gzip.json"), "--cluster-facts", filepath.Join(planFixtures, "facts-stargz.yaml"),
		"--fact", "containerRuntime=cri-o://1.33.0", "--bench", filepath.Join(planFixtures, "bench.json"), "-o", out)
	if r.code != 0 || r.stdout != "" {
		t.Fatalf("-o: %+v", r)
	}
	data, _ := os.ReadFile(out)
	p := planJSON(t, result{stdout: string(data)})
	if got := applyOrder(p); !slices.Equal(got, []string{"prepull", "lazy-pull", "repack-tar", "streaming-load", "compile-cache", "readiness-probe"}) {
		t.Errorf("ranking %q", got)
	}
	if p.Facts.ContainerRuntime != "cri-o://1.33.0" || p.FactSources["containerRuntime"] != "--fact" ||
		p.FactSources["snapshotter"] != "file "+filepath.Join(planFixtures, "facts-stargz.yaml") || strings.Join(p.Pack.Flags, " ") != "--format zstd-chunked --prefetch all" {
		t.Errorf("facts %+v from %v; pack %v", p.Facts, p.FactSources, p.Pack)
	}
	// --current-format and --image steer the model image's levers.
	r = runPlanCmd(t, "--from", filepath.Join(planFixtures, "slow-pull.json"), "--current-format", "gzip-single", "--format", "json",
		"--image", "registry.example.com/models/llama-3.1-70b-instruct@sha256:"+strings.Repeat("ab", 32))
	if l := planJSON(t, r).Lever(plan.LeverRepackTar); l.Status != plan.Apply || l.SavingSeconds != 174.851 {
		t.Errorf("repack-tar with --current-format: %+v", l)
	}
}

// TestPlanFromBundle: a bundle directory is measured first, to the same
// plan as its recorded report.
func TestPlanFromBundle(t *testing.T) {
	fromDir := planJSON(t, runPlanCmd(t, "--from", filepath.Join(measureFixtures, "slow-pull"), "--format", "json"))
	fromJSON := planJSON(t, runPlanCmd(t, "--from", filepath.Join(planFixtures, "slow-pull.json"), "--format", "json"))
	a, _ := json.Marshal(fromDir.Levers)
	b, _ := json.Marshal(fromJSON.Levers)
	if !bytes.Equal(a, b) || fromDir.Basis != fromJSON.Basis {
		t.Errorf("bundle and report plans differ:\n%s\n%s", a, b)
	}
}

func TestPlanUsageErrors(t *testing.T) {
	report := filepath.Join(planFixtures, "pull-gzip.json")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "--from is required"},
		{[]string{"--from", report, "extra"}, "plan takes no arguments"},
		{[]string{"--from", report, "--format", "svg"}, "a plan renders as text, md or json"},
		{[]string{"--from", report, "-o", "plan.svg"}, "a plan renders as text, md or json"},
		{[]string{"--from", report, "--format", "html"}, `--format "html": a plan renders as text, md or json`},
		{[]string{"--from", report, "--format", "yaml"}, `--format "yaml": a plan renders as text, md or json`},
		{[]string{"--from", report, "--current-format", "lz4"}, `--current-format "lz4"`},
		{[]string{"--from", report, "--fact", "snapshoter=stargz"}, `--fact: unknown key "snapshoter"`},
		{[]string{"--from", report, "--fact", "gpusPerNode=many"}, "--fact: gpusPerNode: many is not a whole number"},
		{[]string{"--from", report, "--emit", "dir"}, "--emit needs --image"},
		{[]string{"--from", report, "--emit", "dir", "--image", "registry.example.com/models/qwen:v3"}, "pin the image as REPO@sha256"},
		{[]string{"--from", report, "--node-selector", "novalue"}, "--node-selector"},
		{[]string{"--from", report, "--toleration", "k:Sometimes"}, "--toleration"},
		{[]string{"--from", report, "--pool-replicas", "0"}, "--pool-replicas 0"},
	} {
		r := runPlanCmd(t, tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("%q: exit %d, stderr %q; want exit 2 and %q", tc.args, r.code, r.stderr, tc.want)
		}
		// Only what plan takes: no svg, no --allow-tag (plan has none).
		for _, not := range []string{"or svg", "--allow-tag"} {
			if strings.Contains(r.stderr, not) {
				t.Errorf("%q: stderr %q offers %s", tc.args, r.stderr, not)
			}
		}
	}
	if _, err := os.Stat("dir"); !os.IsNotExist(err) {
		t.Error("a refused --emit created its directory")
	}
}

// TestPlanBadInputs: bad files fail (exit 1) naming the file and what is
// wrong with it.
func TestPlanBadInputs(t *testing.T) {
	report := filepath.Join(planFixtures, "pull-gzip.json")
	dir := t.TempDir()
	badBench := filepath.Join(dir, "bench.json")
	os.WriteFile(badBench, []byte(`{"version": 3, "results": []}`), 0o644)
	empty := filepath.Join(dir, "empty.json")
	os.WriteFile(empty, []byte(`{"version": 1, "cold_starts": []}`), 0o644)
	versionOnly := filepath.Join(dir, "b.json")
	os.WriteFile(versionOnly, []byte(`{"version": 1}`), 0o644)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--from", filepath.Join(planFixtures, "report-v2.json")}, "report-v2.json: report version 2: this modelcar reads version 1"},
		{[]string{"--from", filepath.Join(dir, "nope.json")}, "nope.json: no such file or directory"},
		{[]string{"--from", empty}, "empty.json: the report has no cold starts"},
		{[]string{"--from", report, "--cluster-facts", filepath.Join(planFixtures, "facts-unknown-key.yaml")}, `facts-unknown-key.yaml: unknown key "snapshoter"`},
		{[]string{"--from", report, "--cluster-facts", filepath.Join(dir, "facts.yaml")}, "facts.yaml: no such file or directory"},
		{[]string{"--from", report, "--bench", badBench}, "bench.json: benchmark results version 3"},
		// A report, or any version 1 JSON, is not the benchmark's results.
		{[]string{"--from", report, "--bench", report}, `pull-gzip.json: no "link_mbit": a cold-start report, not the node-side benchmark's results`},
		{[]string{"--from", report, "--bench", versionOnly}, `b.json: no "link_mbit": not the node-side benchmark's results`},
		// -o names the file given, not the temporary file written first.
		{[]string{"--from", report, "-o", filepath.Join(dir, "nope", "x.txt")}, "-o " + filepath.Join(dir, "nope", "x.txt") + ": no such file or directory"},
	} {
		r := runPlanCmd(t, tc.args...)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) || r.stdout != "" || strings.Contains(r.stderr, ".modelcar-") {
			t.Errorf("%q: exit %d, stderr %q; want exit 1 and %q", tc.args, r.code, r.stderr, tc.want)
		}
	}
}

// TestPlanExitCodes: the binary exits 2 for usage and 1 for bad input.
func TestPlanExitCodes(t *testing.T) {
	if r := run(t, nil, "plan"); r.code != 2 || !strings.Contains(r.stderr, "--from is required") {
		t.Errorf("no --from: %+v", r)
	}
	if r := run(t, nil, "plan", "--from", filepath.Join(planFixtures, "report-v2.json")); r.code != 1 || !strings.Contains(r.stderr, "report-v2.json") {
		t.Errorf("version 2: %+v", r)
	}
	if r := run(t, nil, "plan", "--help"); r.code != 0 || !strings.Contains(r.stdout, "--cluster-facts") || !strings.Contains(r.stdout, "modelcar plan --from cold-start.json") {
		t.Errorf("help: %+v", r)
	}
}

func TestPlanEmit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	r := runPlanCmd(t, "--from", filepath.Join(planFixtures, "provision-scaleup.json"), "--image", planImage, "-n", "llm",
		"--fact", "gpusPerNode=4", "--fact", "imageVolumes=false", "--emit", dir, "--format", "md")
	if r.code != 0 || !strings.HasPrefix(r.stdout, "## Cold-start plan\n") || r.stderr != "wrote "+dir+": pack-flags.txt, pool.yaml, prepull.yaml, values.yaml\n" {
		t.Fatalf("emit: %+v", r)
	}
	for _, name := range plan.EmitFiles {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == plan.PackFlagsFile {
			continue
		}
		for _, doc := range strings.Split(string(data), "\n---\n") {
			var m map[string]any
			if err := yaml.Unmarshal([]byte(doc), &m); err != nil || len(m) == 0 {
				t.Errorf("%s: not YAML: %v\n%s", name, err, doc)
			}
		}
	}
	pre, _ := os.ReadFile(filepath.Join(dir, plan.PrepullFile))
	var ds map[string]any
	yaml.Unmarshal(pre, &ds)
	spec := ds["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)
	init := spec["initContainers"].([]any)[0].(map[string]any)
	if init["image"] != planImage || ds["metadata"].(map[string]any)["namespace"] != "llm" || spec["nodeSelector"].(map[string]any)["nvidia.com/gpu.present"] != "true" {
		t.Errorf("prepull.yaml:\n%s", pre)
	}
	pool, _ := os.ReadFile(filepath.Join(dir, plan.PoolFile))
	if !strings.Contains(string(pool), "# 1 placeholder pod(s) of 4 GPUs each\n") || !strings.Contains(string(pool), `nvidia.com/gpu: "4"`) {
		t.Errorf("pool.yaml:\n%s", pool)
	}
	values, _ := os.ReadFile(filepath.Join(dir, plan.ValuesFile))
	if !strings.Contains(string(values), "  delivery: modelcar\n  image: "+planImage+"\n") {
		t.Errorf("values.yaml:\n%s", values)
	}
}

// TestPlanDiscover: --discover reads the cluster (a fake clientset here;
// measure/plan's TestDiscoverLive reads the real test cluster), and --fact
// overrides what it found.
func TestPlanDiscover(t *testing.T) {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "gpu-0", Labels: map[string]string{"nvidia.com/gpu.present": "true", plan.SnapshotterLabel: "stargz"}},
		Status: corev1.NodeStatus{
			NodeInfo:    corev1.NodeSystemInfo{ContainerRuntimeVersion: "containerd://2.1.3"},
			Allocatable: corev1.ResourceList{"nvidia.com/gpu": resource.MustParse("8")},
		},
	}
	client := fakeCluster(t, node)
	client.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &versionpkg.Info{GitVersion: "v1.33.4"}
	p := planJSON(t, runPlanCmd(t, "--from", filepath.Join(planFixtures, "pull-gzip.json"), "--discover", "--format", "json"))
	if p.Facts.KubernetesVersion != "1.33.4" || p.Facts.Snapshotter != "stargz" || p.Facts.GPUsPerNode != 8 || p.Facts.ImageVolumes != nil ||
		p.Lever(plan.LeverLazyPull).Status != plan.Apply {
		t.Errorf("discovered %+v; lazy-pull %s", p.Facts, p.Lever(plan.LeverLazyPull).Status)
	}
	p = planJSON(t, runPlanCmd(t, "--from", filepath.Join(planFixtures, "pull-gzip.json"), "--discover", "--fact", "snapshotter=overlayfs", "--format", "json"))
	if p.Facts.Snapshotter != "overlayfs" || p.FactSources["snapshotter"] != "--fact" || p.Lever(plan.LeverLazyPull).Status != plan.Needs {
		t.Errorf("--fact over discovery: %+v %v", p.Facts, p.FactSources)
	}
}

// TestPlanImageNotInReport: an --image whose repository none of the cold
// starts used (a new image, not deployed yet) is not taken for "no model
// image pulled": the report's model image stands in for it, and the plan
// and every emitted file warn that the numbers are measured on that image.
func TestPlanImageNotInReport(t *testing.T) {
	other := "registry.example.com/models/qwen@sha256:" + strings.Repeat("ab", 32)
	dir := filepath.Join(t.TempDir(), "out")
	report := filepath.Join(planFixtures, "pull-gzip.json")
	r := runPlanCmd(t, "--from", report, "--image", other, "--emit", dir)
	const warning = "--image's repository registry.example.com/models/qwen is in none of these cold starts"
	const measuredOn = "measured on registry.example.com/models/qwen2.5-32b-instruct:v3, taken for the image --image replaces"
	if r.code != 0 || !strings.Contains(r.stdout, "\nwarning: "+warning) || !strings.Contains(r.stdout, measuredOn) || strings.Contains(r.stdout, "no model image") {
		t.Fatalf("plan: %+v", r)
	}
	// The same levers as the image the report pulled, named.
	same := planJSON(t, runPlanCmd(t, "--from", report, "--format", "json",
		"--image", "registry.example.com/models/qwen2.5-32b-instruct@sha256:"+strings.Repeat("ab", 32)))
	p := planJSON(t, runPlanCmd(t, "--from", report, "--format", "json", "--image", other))
	if len(same.Warnings) != 0 || len(p.Warnings) != 1 || !slices.Equal(applyOrder(p), applyOrder(same)) ||
		p.Lever(plan.LeverRepackTar).SavingSeconds != same.Lever(plan.LeverRepackTar).SavingSeconds || p.Pack.Why != same.Pack.Why {
		t.Errorf("warnings %q and %q; ranking %q and %q", p.Warnings, same.Warnings, applyOrder(p), applyOrder(same))
	}
	for _, name := range plan.EmitFiles {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if os.IsNotExist(err) && name == plan.PoolFile {
			continue
		}
		if err != nil || !strings.Contains(string(data), "\n# warning: "+warning) {
			t.Errorf("%s has no warning (%v):\n%s", name, err, data)
		}
	}
	pack, _ := os.ReadFile(filepath.Join(dir, plan.PackFlagsFile))
	if !strings.Contains(string(pack), "plan: repack-tar saves up to 106.0 s\n") {
		t.Errorf("pack-flags.txt:\n%s", pack)
	}
	pre, _ := os.ReadFile(filepath.Join(dir, plan.PrepullFile))
	if !strings.Contains(string(pre), "\n# not pre-pulled: registry.example.com/models/qwen2.5-32b-instruct:v3, taken for the model image, which "+other+" replaces\n") ||
		strings.Contains(string(pre), "not pinned by digest: registry.example.com/models/qwen2.5") || !strings.Contains(string(pre), "reference: "+other+"\n") {
		t.Errorf("prepull.yaml:\n%s", pre)
	}
}

// shellWords splits a printed command line as a POSIX shell would, for
// the words plan writes: plain, or in single quotes.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var w strings.Builder
	in, quoted := false, false
	for _, c := range line {
		switch {
		case c == '\'':
			quoted, in = !quoted, true
		case c == ' ' && !quoted:
			if in {
				words = append(words, w.String())
			}
			w.Reset()
			in = false
		default:
			w.WriteRune(c)
			in = true
		}
	}
	if quoted {
		t.Fatalf("unbalanced quote: %s", line)
	}
	if in {
		words = append(words, w.String())
	}
	return words
}

// TestPlanPrintedWarmCommands: the warm commands plan prints make the
// objects --emit writes: their --node-selector and --toleration flags are
// the emitted objects' nodeSelector and tolerations, and run with -o yaml in
// place of --apply they render what prepull.yaml and pool.yaml hold.
func TestPlanPrintedWarmCommands(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "out")
	pinned := "registry.example.com/models/llama-3.1-70b-instruct@sha256:" + strings.Repeat("cd", 32)
	custom := []string{"-n", "llm", "--fact", "imageVolumes=false", "--fact", "gpusPerNode=4", "--pool-replicas", "2",
		"--node-selector", "pool=gpu h100", "--node-selector", "nvidia.com/gpu.present=true",
		"--toleration", "nvidia.com/gpu:NoSchedule", "--toleration", "dedicated=llm:NoExecute", "--toleration", "spot"}
	for _, tc := range []struct {
		name, report, image string
		args                []string
		commands            int // the runnable commands printed: pre-pull and pool
	}{
		// The defaults: the GPU nodes, their taint, the context's namespace.
		{"defaults", "provision-scaleup.json", planImage, nil, 2},
		{"custom", "provision-scaleup.json", planImage, custom, 2},
		// --image pinned, of the report's model image: pulled in its place.
		{"custom, the model image pinned", "slow-pull.json", pinned, custom, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"--from", filepath.Join(planFixtures, tc.report), "--image", tc.image, "--format", "json", "--emit", dir}, tc.args...)
			p := planJSON(t, runPlanCmd(t, args...))
			checked := 0
			for lever, file := range map[string]string{plan.LeverPrepull: plan.PrepullFile, plan.LeverWarmPool: plan.PoolFile} {
				l := p.Lever(lever)
				if l == nil || l.Status != plan.Apply {
					continue
				}
				data, err := os.ReadFile(filepath.Join(dir, file))
				if err != nil {
					t.Fatal(err)
				}
				var want []map[string]any
				for _, doc := range strings.Split(string(data), "\n---\n") {
					var m map[string]any
					if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
						t.Fatal(err)
					}
					want = append(want, m)
				}
				var got []map[string]any
				for _, line := range l.Apply {
					before, _, ok := strings.Cut(line, " --apply")
					if !strings.HasPrefix(line, "modelcar warm ") || !ok || strings.Contains(line, "<digest of") {
						continue
					}
					words := shellWords(t, before)[1:]
					var sel, tols []string
					for i, w := range words {
						switch w {
						case "--node-selector":
							sel = append(sel, words[i+1])
						case "--toleration":
							tols = append(tols, words[i+1])
						}
					}
					// The flags, parsed as warm parses them, are the objects'.
					wantSel, err1 := warm.ParseNodeSelector(sel)
					wantTols, err2 := warm.ParseTolerations(tols)
					if err1 != nil || err2 != nil {
						t.Fatalf("%s: %v %v", line, err1, err2)
					}
					for _, obj := range want {
						var podSpec struct {
							Spec struct {
								Template struct {
									Spec corev1.PodSpec `json:"spec"`
								} `json:"template"`
							} `json:"spec"`
						}
						js, _ := json.Marshal(obj)
						json.Unmarshal(js, &podSpec)
						if obj["kind"] == "PriorityClass" {
							continue
						}
						ps := podSpec.Spec.Template.Spec
						var tolsOf []corev1.Toleration
						for _, t := range ps.Tolerations { // the pool adds its GPU resource's
							if slices.ContainsFunc(wantTols, func(w corev1.Toleration) bool { return w == t }) || lever != plan.LeverWarmPool {
								tolsOf = append(tolsOf, t)
							}
						}
						if !maps.Equal(ps.NodeSelector, wantSel) || !slices.Equal(tolsOf, wantTols) || len(wantSel) == 0 || len(wantTols) == 0 {
							t.Errorf("%s: %s %s has node selector %v, tolerations %v; the command's flags say %v, %v",
								line, file, obj["kind"], ps.NodeSelector, ps.Tolerations, wantSel, wantTols)
						}
					}
					// Run, it renders what the file holds.
					root := newRootCmd()
					var so, se bytes.Buffer
					root.SetArgs(append(words, "-o", "yaml"))
					root.SetOut(&so)
					root.SetErr(&se)
					if err := root.ExecuteContext(context.Background()); err != nil {
						t.Fatalf("%s: %v\n%s", line, err, se.String())
					}
					for _, doc := range strings.Split(so.String(), "\n---\n") {
						var m map[string]any
						if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
							t.Fatal(err)
						}
						got = append(got, m)
					}
					checked++
				}
				g, _ := json.Marshal(got)
				w, _ := json.Marshal(want)
				if !bytes.Equal(g, w) {
					t.Errorf("%s: the printed commands render\n%s\nthe file holds\n%s", lever, g, w)
				}
			}
			if checked != tc.commands {
				t.Errorf("%d printed commands checked: %+v", checked, p.Levers)
			}
		})
	}
}
