package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

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
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
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

func TestPackPrintsDigestAndJSON(t *testing.T) {
	m := genModel(t)
	out := filepath.Join(t.TempDir(), "oci")
	r := run(t, nil, "pack", m.Dir, "--output", "oci:"+out+":v1")
	if r.code != 0 {
		t.Fatalf("pack: %+v", r)
	}
	digest := strings.TrimSpace(r.stdout)
	if !strings.HasPrefix(digest, "sha256:") || len(digest) != 71 || strings.Count(r.stdout, "\n") != 1 {
		t.Errorf("stdout %q is not one digest line", r.stdout)
	}
	if r.stderr != "" {
		t.Errorf("progress written to a non-terminal stderr: %q", r.stderr)
	}
	r = run(t, nil, "pack", m.Dir, "--json", "--output", "oci:"+out+":v2")
	var res struct {
		Digest    string
		Reference string
		Layers    []struct {
			MediaType string
			Size      int64
			Files     []string
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
		t.Fatalf("--json: %v\n%s", err, r.stdout)
	}
	if res.Digest != digest || res.Reference != "oci:"+out+":v2" || len(res.Layers) != 3 || res.Layers[1].Files[0] != m.Shards[0] {
		t.Errorf("--json result %+v", res)
	}
	r = run(t, nil, "inspect", "oci:"+out+":v1")
	if r.code != 0 || !strings.Contains(r.stdout, digest) || !strings.Contains(r.stdout, m.Shards[1]) {
		t.Errorf("inspect: %+v", r)
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
