package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/modelcar/modelcar/internal/testcluster"
	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/internal/testmodel"
)

var binary string

// TestMain builds the modelcar binary once; the tests run it as users do.
func TestMain(m *testing.M) {
	if code, ok := cliChild(); ok {
		os.Exit(code)
	}
	dir, err := os.MkdirTemp("", "modelcar-cli-")
	if err != nil {
		panic(err)
	}
	os.Chmod(dir, 0o755) // other users run it too
	binary = filepath.Join(dir, "modelcar")
	if out, err := exec.Command("go", "build", "-ldflags", "-X main.version=v9.9.9-test", "-o", binary, ".").CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		panic(string(out))
	}
	code := testcluster.Run(m) // stops the cluster clusterForCLI started
	os.RemoveAll(dir)
	os.Exit(code)
}

// clusterForCLI gives a test the shared test cluster (testcluster.Shared:
// the cluster of MODELCAR_CLUSTER_KUBECONFIG, else one started from the
// cached binaries, stopped after the tests). Without either
// MODELCAR_CLUSTER_KUBECONFIG or MODELCAR_E2E=1 the test is skipped, so that
// a plain go test does not start a control plane for the CLI's few cluster
// tests; under MODELCAR_E2E=1 a cluster that cannot start fails them.
func clusterForCLI(t *testing.T) *testcluster.Cluster {
	t.Helper()
	if os.Getenv(testcluster.KubeconfigEnv) == "" && os.Getenv(testcluster.E2EEnv) != "1" {
		t.Skipf("set %s=1 to run on the shared test cluster, or %s to the kubeconfig of a `make cluster-up` cluster",
			testcluster.E2EEnv, testcluster.KubeconfigEnv)
	}
	return testcluster.Shared(t)
}

type result struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, cred *syscall.Credential, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	cmd.Env = append(os.Environ(), "XDG_CACHE_HOME="+t.TempDir())
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
		cmd.Env = append(cmd.Env, "HOME=/nonexistent", "XDG_CACHE_HOME=")
	}
	err := cmd.Run()
	r := result{stdout: so.String(), stderr: se.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

func genModel(t *testing.T) *testmodel.Model {
	t.Helper()
	m, err := testmodel.Generate(filepath.Join(t.TempDir(), "model"), testmodel.Options{Seed: 1, TotalSize: 1 << 20, Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestVersionHelpCompletion(t *testing.T) {
	if r := run(t, nil, "--version"); r.code != 0 || r.stdout != "modelcar v9.9.9-test\n" {
		t.Errorf("--version: %+v", r)
	}
	if r := run(t, nil, "pack", "--help"); r.code != 0 || !strings.Contains(r.stdout, "modelcar pack ./") || !strings.Contains(r.stdout, "--format") {
		t.Errorf("pack --help lacks examples: %s", r.stdout)
	}
	if r := run(t, nil, "completion", "bash"); r.code != 0 || !strings.Contains(r.stdout, "__start_modelcar") {
		t.Errorf("completion bash: code %d", r.code)
	}
	if r := run(t, nil, "pack", "somedir"); r.code != 2 || !strings.Contains(r.stderr, "--output is required") {
		t.Errorf("missing --output: %+v", r)
	}
	if r := run(t, nil, "pack", "d", "-o", "oci:x", "--format", "rar"); r.code != 2 || !strings.Contains(r.stderr, `unknown format "rar"`) {
		t.Errorf("bad --format: %+v", r)
	}
}

// TestPackStdoutContract: pack prints the pinned reference of what it wrote
// on stdout, one line, for every output kind (as push and mirror do), and
// --json gives one shape for all of them: the pinned reference, the tagged
// one, the manifest's digest, media type and size, and the layers. Nothing
// else reaches stdout, and a non-terminal stderr gets no progress.
func TestPackStdoutContract(t *testing.T) {
	m := genModel(t)
	dir := t.TempDir()
	type kind struct{ output, pinned, tagged string }
	kinds := []kind{
		{"oci:" + dir + "/oci:v1", "oci:" + dir + "/oci@", "oci:" + dir + "/oci:v1"},
		{"oci-archive:" + dir + "/m.tar:v1", "oci-archive:" + dir + "/m.tar@", "oci-archive:" + dir + "/m.tar:v1"},
	}
	var plainHTTP []string
	if !testing.Short() {
		reg := testenv.StartRegistry(t)
		kinds = append(kinds, kind{reg.Ref("models/m") + ":v1", reg.Ref("models/m") + "@", reg.Ref("models/m") + ":v1"})
		plainHTTP = []string{"--plain-http"}
	}
	var keys []string
	for _, k := range kinds {
		args := append([]string{"pack", m.Dir, "--output", k.output}, plainHTTP...)
		r := run(t, nil, args...)
		if r.code != 0 {
			t.Fatalf("pack --output %s: %+v", k.output, r)
		}
		pinned := strings.TrimSuffix(r.stdout, "\n")
		digest := strings.TrimPrefix(pinned, k.pinned)
		if !strings.HasPrefix(pinned, k.pinned) || !strings.HasPrefix(digest, "sha256:") || len(digest) != 71 || strings.Count(r.stdout, "\n") != 1 {
			t.Errorf("pack --output %s: stdout %q is not one line %s<digest>", k.output, r.stdout, k.pinned)
		}
		if r.stderr != "" {
			t.Errorf("pack --output %s: stderr %q (progress on a non-terminal, or a sentence)", k.output, r.stderr)
		}
		r = run(t, nil, append(args, "--json")...)
		var raw map[string]json.RawMessage
		if err := json.Unmarshal([]byte(r.stdout), &raw); err != nil || r.stderr != "" {
			t.Fatalf("pack --output %s --json: %v\nstdout %s\nstderr %s", k.output, err, r.stdout, r.stderr)
		}
		var res struct {
			Reference, Tagged, Digest, MediaType string
			Size                                 int64
			Layers                               []struct {
				MediaType string
				Size      int64
				Files     []string
			}
		}
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatal(err)
		}
		if res.Reference != pinned || res.Tagged != k.tagged || res.Digest != digest || res.Size == 0 ||
			res.MediaType != "application/vnd.oci.image.manifest.v1+json" || len(res.Layers) != 3 || res.Layers[1].Files[0] != m.Shards[0] {
			t.Errorf("pack --output %s --json: %+v; want reference %s, tagged %s", k.output, res, pinned, k.tagged)
		}
		var ks []string
		for key := range raw {
			ks = append(ks, key)
		}
		sort.Strings(ks)
		if keys == nil {
			keys = ks
		} else if !slices.Equal(keys, ks) {
			t.Errorf("pack --output %s --json has the fields %v, not %v as the first output", k.output, ks, keys)
		}
		r = run(t, nil, append([]string{"inspect", pinned}, plainHTTP...)...)
		if r.code != 0 || !strings.Contains(r.stdout, digest) || !strings.Contains(r.stdout, m.Shards[1]) {
			t.Errorf("inspect %s: %+v", pinned, r)
		}
	}
}

func TestPackReportsUnreadableFile(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run modelcar as another user (root reads any file)")
	}
	m := genModel(t)
	// Let the unprivileged user reach the model and write the output.
	for d := m.Dir; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		os.Chmod(d, 0o755)
	}
	if err := os.Chmod(filepath.Join(m.Dir, "tokenizer.json"), 0o000); err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	os.Chmod(parent, 0o777)
	r := run(t, &syscall.Credential{Uid: 65534, Gid: 65534}, "pack", m.Dir, "--output", "oci:"+parent+"/out")
	if r.code != 1 || !strings.Contains(r.stderr, "tokenizer.json") || !strings.Contains(r.stderr, "permission denied") {
		t.Errorf("unreadable file: %+v", r)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("failed pack left %d entries", len(ents))
	}
}

func TestPackBadInputExitCode(t *testing.T) {
	m := genModel(t)
	os.Truncate(filepath.Join(m.Dir, m.Shards[0]), 100)
	parent := t.TempDir()
	r := run(t, nil, "pack", m.Dir, "--output", "oci-archive:"+parent+"/m.tar")
	if r.code != 1 || !strings.Contains(r.stderr, m.Shards[0]) || r.stdout != "" {
		t.Errorf("truncated shard: %+v", r)
	}
	if ents, _ := os.ReadDir(parent); len(ents) != 0 {
		t.Errorf("failed pack left %d entries", len(ents))
	}
}

// TestInspectIndexShowsIndexFirst: inspect of a multi-platform modelcar
// names the index digest (the one pack prints and users pin) before
// anything else, then each platform's image, then the picked image.
func TestInspectIndexShowsIndexFirst(t *testing.T) {
	m := genModel(t)
	out := "oci:" + filepath.Join(t.TempDir(), "oci")
	r := run(t, nil, "pack", m.Dir, "--platform", "linux/amd64,linux/arm64", "--output", out+":v1", "--json")
	var res struct {
		Digest    string
		Platforms []struct{ Platform, Digest string }
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || len(res.Platforms) != 2 {
		t.Fatalf("pack: %v %+v", err, r)
	}
	r = run(t, nil, "inspect", out+":v1", "--platform", "linux/arm64")
	if r.code != 0 {
		t.Fatalf("inspect: %+v", r)
	}
	first := strings.Index(r.stdout, "sha256:")
	if first < 0 || !strings.HasPrefix(r.stdout[first:], res.Digest) {
		t.Errorf("inspect of an index: the first digest shown is not the index %s:\n%s", res.Digest, r.stdout)
	}
	last := first
	for _, p := range res.Platforms {
		i := strings.Index(r.stdout, p.Platform+" ")
		if i < last || !strings.Contains(r.stdout[i:], p.Digest) {
			t.Errorf("inspect of an index: %s %s not listed in order after the index:\n%s", p.Platform, p.Digest, r.stdout)
		}
		last = i
	}
	if i := strings.Index(r.stdout, "Digest:    "+res.Platforms[1].Digest); i < last {
		t.Errorf("inspect of an index: the picked image (linux/arm64, %s) is not described after the index's images:\n%s", res.Platforms[1].Digest, r.stdout)
	}
}
