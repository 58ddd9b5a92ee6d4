package main

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/testmodel"
)

// runInProcess runs the command tree in this process, as main does, and
// returns its output and exit status.
func runInProcess(t *testing.T, stdin string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var so, se bytes.Buffer
	code := execute(ctx, args, strings.NewReader(stdin), &so, &se)
	return result{stdout: so.String(), stderr: se.String(), code: code}
}

// TestUsageErrorsExit2: cobra's own errors (an unknown flag, a flag value
// that does not parse, an unknown command) and invalid --jobs and
// --platform values exit 2 with the reason, in every command that has the
// flag, before anything is read or sent; failures exit 1.
func TestUsageErrorsExit2(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	missing := "oci:" + t.TempDir() + "/missing:v1"
	dir := t.TempDir() + "/pulled"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"push", "--bogus", missing, "localhost:5000/x:v1"}, "unknown flag: --bogus"},
		{[]string{"push", "--jobs", "abc", missing, "localhost:5000/x:v1"}, `invalid argument "abc" for "--jobs"`},
		{[]string{"push", "--jobs", "0", missing, "localhost:5000/x:v1"}, `invalid argument "0" for "--jobs" flag: want at least 1`},
		{[]string{"push", "--jobs=-3", missing, "localhost:5000/x:v1"}, `invalid argument "-3" for "--jobs" flag: want at least 1`},
		{[]string{"push", "--idle-timeout", "xyz", missing, "localhost:5000/x:v1"}, `invalid argument "xyz" for "--idle-timeout"`},
		{[]string{"push", "--retries", "-1", missing, "localhost:5000/x:v1"}, `--retries -1: want 0 or more`},
		{[]string{"mirror", "--jobs", "0", missing, "oci:" + t.TempDir() + "/m"}, `"--jobs" flag: want at least 1`},
		{[]string{"pull", "--jobs", "0", missing, dir}, `"--jobs" flag: want at least 1`},
		{[]string{"verify", "--jobs", "-1", missing}, `"--jobs" flag: want at least 1`},
		{[]string{"pull", "--platform", "bogus", missing, dir}, `invalid argument "bogus" for "--platform" flag: "bogus": want OS/ARCH[/VARIANT]`},
		{[]string{"pull", "--platform", "linux/", missing, dir}, `want OS/ARCH[/VARIANT]`},
		{[]string{"pull", "--platform", "/amd64", missing, dir}, `want OS/ARCH[/VARIANT]`},
		{[]string{"pull", "--platform", "linux/arm64/", missing, dir}, `want OS/ARCH[/VARIANT]`},
		{[]string{"pull", "--platform", "linux/arm/v7/x", missing, dir}, `want OS/ARCH[/VARIANT]`},
		{[]string{"inspect", "--platform", "bogus", missing}, `invalid argument "bogus" for "--platform" flag`},
		{[]string{"inspect", "--platform", "linux/amd64,linux/arm64", missing}, `want OS/ARCH[/VARIANT]`},
		{[]string{"pull", "--platform", "linux/x86_65", missing, dir}, `unknown architecture "x86_65"`},
		{[]string{"pack", "m", "--output", "oci:x", "--platform", "linux/amd64,linux/x86_64"}, `--platform linux/amd64: named twice`},
		{[]string{"pack", "m", "--output", "oci:x", "--platform", "LINUX/AMD64,linux/amd64"}, `--platform linux/amd64: named twice`},
		{[]string{"pull", "--chunk-size", "4MiB", missing, dir}, "unknown flag: --chunk-size"},
		{[]string{"pack", "hf:noslash", "--output", "oci:x"}, "hf:noslash: want hf:ORG/NAME[@REVISION]"},
		{[]string{"pack", "m", "--output", "oci:"}, "--output: "},
		{[]string{"pack", "m", "--output", "oci:x", "--tag", "bad tag"}, `--tag "bad tag": not a valid tag`},
		{[]string{"verify", "--monolithic", missing}, "unknown flag: --monolithic"},
		{[]string{"pack", "--bogus", "d", "-o", "oci:x"}, "unknown flag: --bogus"},
		{[]string{"login", "localhost:5000", "--idle-timeout", "xyz"}, `invalid argument "xyz" for "--idle-timeout"`},
		{[]string{"nosuchcmd"}, `unknown command "nosuchcmd" for "modelcar"`},
		{[]string{"pul", missing, dir}, `unknown command "pul" for "modelcar"`},
	} {
		r := runInProcess(t, "", tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) || r.stdout != "" {
			t.Errorf("modelcar %s: exit %d, stdout %q, stderr %q; want exit 2 and stderr containing %q",
				strings.Join(tc.args, " "), r.code, r.stdout, r.stderr, tc.want)
		}
	}
	// Valid values pass the flag checks; the missing image then fails (1).
	for _, args := range [][]string{
		{"pull", "--jobs", "3", "--platform", "linux/arm64/v8", missing, dir},
		{"inspect", "--platform", "linux/arm64", missing},
		{"push", "--jobs", "1", "--chunk-size", "4MiB", "--monolithic", missing, "localhost:5000/x:v1"},
		{"verify", "--jobs", "2", missing},
	} {
		if r := runInProcess(t, "", args...); r.code != 1 || !strings.Contains(r.stderr, "Error:") {
			t.Errorf("modelcar %s: exit %d, stderr %q; want exit 1", strings.Join(args, " "), r.code, r.stderr)
		}
	}
}

// TestHostlessReferencesAreUsageErrors: registry references without a
// registry host fail with one message naming the oci: and oci-archive:
// spellings, exit 2, and never reach the network (no "https://", no host
// named "." or "models" looked up).
func TestHostlessReferencesAreUsageErrors(t *testing.T) {
	t.Setenv("XDG_CACHE_HOME", t.TempDir())
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"pack", t.TempDir(), "--output", "./out"},
			"./out: not a registry reference (REGISTRY/REPO[:TAG|@DIGEST]); for a local layout write oci:./out, for an archive oci-archive:./out.tar"},
		{[]string{"pack", t.TempDir(), "--output", "qwen:v1"},
			"qwen:v1: not a registry reference (REGISTRY/REPO[:TAG|@DIGEST]); for a local layout write oci:qwen:v1, for an archive oci-archive:qwen.tar:v1"},
		{[]string{"inspect", "models/qwen:v1"}, "models/qwen:v1: not a registry reference"},
		{[]string{"push", "oci:" + t.TempDir() + ":v1", "models/qwen:v1"}, "models/qwen:v1: not a registry reference"},
		{[]string{"pull", "../qwen:v1", t.TempDir() + "/x"}, "for an archive oci-archive:../qwen.tar:v1"},
	} {
		r := runInProcess(t, "", tc.args...)
		if r.code != 2 || !strings.Contains(r.stderr, tc.want) || strings.Contains(r.stderr, "https://") || strings.Contains(r.stderr, "lookup") {
			t.Errorf("modelcar %s: exit %d, stderr %q; want exit 2 and %q", strings.Join(tc.args, " "), r.code, r.stderr, tc.want)
		}
	}
}

// TestLoginWrongPasswordSaysRejected: when the registry answers 401 to the
// credentials, login says the registry rejected the credentials of that
// user at that registry, does not suggest running 'modelcar login', never
// prints the password, and saves nothing.
func TestLoginWrongPasswordSaysRejected(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("WWW-Authenticate", `Basic realm="test"`)
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`))
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	cfg := t.TempDir()
	t.Setenv("DOCKER_CONFIG", cfg)
	const password = "wrong-password-7f3a"
	r := runInProcess(t, password+"\n", "login", host, "-u", "ci-bot", "--password-stdin", "--plain-http")
	if r.code != 1 || !strings.Contains(r.stderr, "login "+host+": the registry rejected the credentials of user \"ci-bot\"") {
		t.Errorf("login with a wrong password: %+v", r)
	}
	if strings.Contains(r.stderr, "modelcar login") || !strings.Contains(r.stderr, "Hint: check the user name and the password") {
		t.Errorf("login with a wrong password gives the wrong hint: %q", r.stderr)
	}
	t.Logf("login stderr: %s", r.stderr)
	if strings.Contains(r.stderr+r.stdout, password) {
		t.Errorf("the password appears in the output: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(cfg, "config.json")); !os.IsNotExist(err) {
		t.Errorf("a rejected login wrote config.json (%v)", err)
	}
	// An anonymous push to the same registry still points at login.
	if hint := hintFor(errString(`HEAD "http://` + host + `/v2/m/blobs/sha256:0": response status code 401: unauthorized: authentication required`)); !strings.Contains(hint, "modelcar login") {
		t.Errorf("push hint: %q", hint)
	}
}

type errString string

func (e errString) Error() string { return string(e) }

// TestHelpMatchesFlags: login says -u is saved; pull and verify, which only
// download, have no upload flags while push and mirror do; inspect's usage
// line shows @DIGEST for archives too.
func TestHelpMatchesFlags(t *testing.T) {
	help := func(cmd string) string {
		t.Helper()
		r := runInProcess(t, "", cmd, "--help")
		if r.code != 0 {
			t.Fatalf("%s --help: %+v", cmd, r)
		}
		return r.stdout
	}
	login := help("login")
	if strings.Contains(login, "not saved") || !strings.Contains(login, "saved with the password") {
		t.Errorf("login --help on -u:\n%s", login)
	}
	if push := help("push"); !strings.Contains(push, "not saved") {
		t.Errorf("push --help does not say -u is not saved:\n%s", push)
	}
	for _, cmd := range []string{"pull", "verify"} {
		h := help(cmd)
		if strings.Contains(h, "--chunk-size") || strings.Contains(h, "--monolithic") || !strings.Contains(h, "--jobs") {
			t.Errorf("%s --help:\n%s", cmd, h)
		}
	}
	for _, cmd := range []string{"push", "mirror"} {
		if h := help(cmd); !strings.Contains(h, "--chunk-size") || !strings.Contains(h, "--monolithic") || !strings.Contains(h, "--jobs int") {
			t.Errorf("%s --help:\n%s", cmd, h)
		}
	}
	if h := help("inspect"); !strings.Contains(h, "oci-archive:FILE[:TAG|@DIGEST]") || !strings.Contains(h, `--platform string`) || !strings.Contains(h, `(default "linux/amd64")`) {
		t.Errorf("inspect --help:\n%s", h)
	}
}

// TestInterruptedSaysSo: a command stopped by SIGINT or SIGTERM (its
// context canceled) says it was interrupted, exits 1, and publishes
// nothing under the output name.
func TestInterruptedSaysSo(t *testing.T) {
	m, err := testmodel.Generate(filepath.Join(t.TempDir(), "model"), testmodel.Options{Seed: 3, TotalSize: 1 << 20, Shards: 1})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var so, se bytes.Buffer
	code := execute(ctx, []string{"pack", m.Dir, "--format", "estargz", "--no-cache", "--output", "oci:" + out}, strings.NewReader(""), &so, &se)
	if code != 1 || !strings.HasPrefix(se.String(), "Error: interrupted (context canceled)") || so.Len() != 0 {
		t.Fatalf("exit %d, stdout %q, stderr %q", code, so.String(), se.String())
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("output published after an interrupt: %v", err)
	}
}

// TestPackFromHFCache: pack hf:ORG/NAME@REV reads the snapshot from the
// Hugging Face cache (HF_HUB_CACHE), gives the model layers the snapshot
// directory gives, and records the source and the commit, which
// --annotation can override.
func TestPackFromHFCache(t *testing.T) {
	m, err := testmodel.Generate(filepath.Join(t.TempDir(), "model"), testmodel.Options{Seed: 9, TotalSize: 1 << 20, Shards: 2})
	if err != nil {
		t.Fatal(err)
	}
	cache := t.TempDir()
	commit := strings.Repeat("1f", 20)
	snap, err := m.WriteHFCache(cache, "org/llm", commit, "main")
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv("HF_HUB_CACHE", cache)
	packJSON := func(args ...string) (digests []string, ann map[string]string) {
		t.Helper()
		out := filepath.Join(t.TempDir(), "oci")
		r := runInProcess(t, "", append([]string{"pack", "--no-cache", "--json", "--output", "oci:" + out}, args...)...)
		if r.code != 0 {
			t.Fatalf("pack %v: exit %d: %s", args, r.code, r.stderr)
		}
		var res struct{ Layers []struct{ Digest string } }
		if err := json.Unmarshal([]byte(r.stdout), &res); err != nil {
			t.Fatal(err)
		}
		for _, l := range res.Layers {
			digests = append(digests, l.Digest)
		}
		info := runInProcess(t, "", "inspect", "--json", "oci:"+out)
		var ii struct{ Annotations map[string]string }
		if err := json.Unmarshal([]byte(info.stdout), &ii); err != nil {
			t.Fatalf("inspect: %v: %s", err, info.stderr)
		}
		return digests, ii.Annotations
	}
	want, _ := packJSON(snap)
	got, ann := packJSON("hf:org/llm@main")
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("hf:org/llm@main layers %v, the snapshot's %v", got, want)
	}
	if ann["org.opencontainers.image.source"] != "https://huggingface.co/org/llm" || ann["org.opencontainers.image.revision"] != commit {
		t.Errorf("annotations %v", ann)
	}
	_, ann = packJSON("hf:org/llm", "--annotation", "org.opencontainers.image.source=https://mirror.example/org/llm")
	if ann["org.opencontainers.image.source"] != "https://mirror.example/org/llm" {
		t.Errorf("--annotation did not override the source: %v", ann)
	}
	r := runInProcess(t, "", "pack", "hf:org/missing", "--output", "oci:"+filepath.Join(t.TempDir(), "x"))
	if r.code != 1 || !strings.Contains(r.stderr, "hf:org/missing: not in the Hugging Face cache "+cache) {
		t.Errorf("a model not in the cache: exit %d, %s", r.code, r.stderr)
	}
}

// TestPackWithoutOutputListsEveryForm: pack without --output is a usage
// error that names every output it can write, the registry included.
func TestPackWithoutOutputListsEveryForm(t *testing.T) {
	r := runInProcess(t, "", "pack", t.TempDir())
	for _, want := range []string{"--output is required", "oci:DIR[:TAG]", "oci-archive:FILE[:TAG]", "REGISTRY/REPO[:TAG]"} {
		if r.code != 2 || !strings.Contains(r.stderr, want) || r.stdout != "" {
			t.Errorf("pack without --output: exit %d, stdout %q, stderr %q; want exit 2 and %q", r.code, r.stdout, r.stderr, want)
		}
	}
}
