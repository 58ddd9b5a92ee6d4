package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/testenv"
	"github.com/modelcar/modelcar/pack"
)

// runWith runs modelcar with extra environment and stdin.
func runWith(t *testing.T, env []string, stdin string, args ...string) result {
	t.Helper()
	cmd := exec.Command(binary, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &so, &se, strings.NewReader(stdin)
	cmd.Env = append(append(os.Environ(), "XDG_CACHE_HOME="+t.TempDir()), env...)
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

// TestPushLoginPullWithAuth: against a registry with htpasswd auth, an
// anonymous push fails clearly, login saves credentials, push prints the
// pinned reference and writes the digest file, pull and verify work, and
// the password never appears in any output.
func TestPushLoginPullWithAuth(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registry with htpasswd auth")
	}
	const user = "ci-bot"
	secret, wrong := testenv.NewSecret(t, user), testenv.NewSecret(t, user)
	reg := testenv.StartRegistry(t, testenv.WithHtpasswd(user, secret))
	m := genModel(t)
	layout := "oci:" + filepath.Join(t.TempDir(), "oci") + ":v1"
	var outputs []string
	check := func(r result) result {
		outputs = append(outputs, r.stdout, r.stderr)
		return r
	}
	pack := check(run(t, nil, "pack", m.Dir, "--output", layout))
	_, digest, _ := strings.Cut(strings.TrimSpace(pack.stdout), "@")
	dst := reg.Ref("models/m") + ":v1"

	anon := check(runWith(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, "", "push", layout, dst, "--plain-http"))
	if anon.code != 1 || !strings.Contains(anon.stderr, "modelcar login") {
		t.Errorf("anonymous push: %+v", anon)
	}
	dockerConfig := []string{"DOCKER_CONFIG=" + t.TempDir()}
	bad := check(runWith(t, dockerConfig, wrong+"\n", "login", reg.Addr, "-u", user, "--password-stdin", "--plain-http"))
	if bad.code != 1 {
		t.Errorf("login with a wrong password: %+v", bad)
	}
	login := check(runWith(t, dockerConfig, secret+"\n", "login", reg.Addr, "-u", user, "--password-stdin", "--plain-http"))
	if login.code != 0 {
		t.Fatalf("login: %+v", login)
	}
	digestFile := filepath.Join(t.TempDir(), "digest")
	p := check(runWith(t, dockerConfig, "", "push", layout, dst, "--plain-http", "--digest-file", digestFile))
	if p.code != 0 || strings.TrimSpace(p.stdout) != reg.Ref("models/m")+"@"+digest {
		t.Fatalf("push: %+v (want %s@%s)", p, reg.Ref("models/m"), digest)
	}
	if b, _ := os.ReadFile(digestFile); strings.TrimSpace(string(b)) != digest {
		t.Errorf("digest file holds %q", b)
	}
	// One-off credentials, nothing saved.
	p2 := check(runWith(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, secret+"\n", "push", layout, reg.Ref("other/m")+":v1", "--plain-http", "-u", user, "--password-stdin"))
	if p2.code != 0 {
		t.Errorf("push with --password-stdin: %+v", p2)
	}
	dir := filepath.Join(t.TempDir(), "pulled")
	pl := check(runWith(t, dockerConfig, "", "pull", strings.TrimSpace(p.stdout), dir, "--plain-http"))
	if pl.code != 0 || strings.TrimSpace(pl.stdout) != strings.TrimSpace(p.stdout) {
		t.Errorf("pull: %+v", pl)
	}
	v := check(runWith(t, dockerConfig, "", "verify", dst, "--plain-http", "--against", m.Dir))
	if v.code != 0 || strings.TrimSpace(v.stdout) != strings.TrimSpace(p.stdout) || !strings.Contains(v.stderr, "files match") {
		t.Errorf("verify: %+v", v)
	}
	for _, o := range outputs {
		for _, pw := range []string{secret, wrong} {
			if strings.Contains(o, pw) {
				t.Errorf("a password appears in output: %q", testenv.Mask(o))
			}
		}
	}
}

// TestFaultStallIdleTimeoutFlag: with --idle-timeout 1s, a push whose
// manifest PUT the registry never answers (a proxy holds it) exits 1
// within the documented bound (a request is sent at most twice: 2 × 1 s
// plus 250 ms, plus slack) with an error naming the destination and saying
// "no data for 1s", leaves no tag, and succeeds once the stall is gone.
func TestFaultStallIdleTimeoutFlag(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registry behind a stalling proxy")
	}
	reg := testenv.StartRegistry(t)
	proxy := testenv.StartProxy(t, reg.Addr)
	m := genModel(t)
	layout := "oci:" + filepath.Join(t.TempDir(), "oci") + ":v1"
	if r := run(t, nil, "pack", m.Dir, "--output", layout); r.code != 0 {
		t.Fatalf("pack: %+v", r)
	}
	dst := proxy.Ref("stall/m") + ":v1"
	proxy.Inject(testenv.Fault{Method: http.MethodPut, PathContains: "/manifests/", Times: 1000, Stall: time.Hour})
	begin := time.Now()
	r := run(t, nil, "push", layout, dst, "--plain-http", "--idle-timeout", "1s")
	elapsed := time.Since(begin)
	if r.code != 1 || !strings.Contains(r.stderr, "no data for 1s") || !strings.Contains(r.stderr, proxy.Addr) {
		t.Fatalf("push with every manifest PUT stalled, after %v: %+v", elapsed, r)
	}
	if bound := 2*time.Second + 250*time.Millisecond + 10*time.Second; elapsed > bound {
		t.Errorf("the push took %v to fail, more than %v", elapsed, bound)
	}
	resp, err := http.Head(reg.URL() + "/v2/stall/m/manifests/v1")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("after the stalled push, the tag answers %s, want 404", resp.Status)
	}
	proxy.ClearFaults()
	if r := run(t, nil, "push", layout, dst, "--plain-http", "--idle-timeout", "1s"); r.code != 0 {
		t.Fatalf("push without the stall: %+v", r)
	}
	t.Logf("FAULT name=http/stall-put-manifests-cli/push outcome=failed-clearly bytes_lost=0")
}

// TestTransferCommandsPrintPinnedReference: push, mirror, verify and pull
// each print the pinned reference REPO@sha256:... of the image they
// produced or checked, alone on stdout, and sentences only on stderr; for
// a multi-platform image that is the index's digest, pull included. Their
// --json has the camelCase reference, digest, mediaType and size, and
// --digest-file gets the same digest.
func TestTransferCommandsPrintPinnedReference(t *testing.T) {
	reg := testenv.StartRegistry(t)
	m := genModel(t)
	layout := "oci:" + filepath.Join(t.TempDir(), "oci") + ":v1"
	r := run(t, nil, "pack", m.Dir, "--output", layout, "--platform", "linux/amd64,linux/arm64")
	if r.code != 0 {
		t.Fatalf("pack: %+v", r)
	}
	_, index, ok := strings.Cut(strings.TrimSpace(r.stdout), "@") // pack prints oci:DIR@sha256:...
	if !ok {
		t.Fatalf("pack printed %q, want a pinned reference", r.stdout)
	}
	repo := reg.Ref("models/m")
	archive := filepath.Join(t.TempDir(), "m.tar")
	only := func(what string, r result, want string) {
		t.Helper()
		if r.code != 0 || r.stdout != want+"\n" {
			t.Errorf("%s: stdout %q (exit %d, stderr %q), want the pinned reference %s alone", what, r.stdout, r.code, r.stderr, want)
		}
	}
	only("push", run(t, nil, "push", layout, repo+":v1", "--plain-http"), repo+"@"+index)
	only("mirror", run(t, nil, "mirror", repo+":v1", "oci-archive:"+archive, "--plain-http"), "oci-archive:"+archive+"@"+index)

	v := run(t, nil, "verify", repo+":v1", "--plain-http", "--against", m.Dir)
	only("verify", v, repo+"@"+index)
	if !strings.Contains(v.stderr, "verified") || !strings.Contains(v.stderr, "files match") {
		t.Errorf("verify: the summary sentence is not on stderr: %q", v.stderr)
	}

	digestFile := filepath.Join(t.TempDir(), "digest")
	p := run(t, nil, "pull", repo+":v1", filepath.Join(t.TempDir(), "arm"), "--plain-http", "--platform", "linux/arm64", "--digest-file", digestFile)
	only("pull of an index", p, repo+"@"+index)
	if b, _ := os.ReadFile(digestFile); string(b) != index+"\n" {
		t.Errorf("pull --digest-file holds %q, want the index digest %s", b, index)
	}

	type jsonResult struct {
		Reference, Digest, MediaType, Manifest string
		Size                                   int64
	}
	for _, args := range [][]string{
		{"pull", "oci-archive:" + archive, filepath.Join(t.TempDir(), "amd"), "--json"},
		{"verify", "oci-archive:" + archive, "--json"},
		{"mirror", "oci-archive:" + archive, "oci:" + filepath.Join(t.TempDir(), "copy"), "--json"},
	} {
		r := run(t, nil, args...)
		var got jsonResult
		if err := json.Unmarshal([]byte(r.stdout), &got); r.code != 0 || err != nil {
			t.Errorf("%s --json: %v, %+v", args[0], err, r)
			continue
		}
		if !strings.HasSuffix(got.Reference, "@"+index) || got.Digest != index || got.MediaType != "application/vnd.oci.image.index.v1+json" || got.Size <= 0 {
			t.Errorf("%s --json: %+v, want the index %s with its media type and size", args[0], got, index)
		}
		if args[0] == "pull" && (got.Manifest == "" || got.Manifest == index) {
			t.Errorf("pull --json: manifest %q, want the platform image's digest", got.Manifest)
		}
		if !strings.Contains(r.stdout, `"mediaType"`) {
			t.Errorf("%s --json is not camelCase: %s", args[0], r.stdout)
		}
	}
}

// TestPackBaseOverPlainHTTPWithCredentials: --base is opened by the same
// transfer layer as every other reference, so --plain-http, -u and
// --password-stdin apply to it: a base in a plain-HTTP registry behind
// htpasswd is refused without credentials (saying how to log in) and packed
// on with them, its layers first in the image.
func TestPackBaseOverPlainHTTPWithCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registry with htpasswd auth")
	}
	const user = "ci-bot"
	secret := testenv.NewSecret(t, user)
	reg := testenv.StartRegistry(t, testenv.WithHtpasswd(user, secret))
	base := reg.Ref("base/busybox") + ":v1"
	if p := runWith(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, secret+"\n", "push", testenv.BusyboxBase(t), base, "--plain-http", "-u", user, "--password-stdin"); p.code != 0 {
		t.Fatalf("pushing the base: %+v", p)
	}
	m := genModel(t)
	out := "oci:" + filepath.Join(t.TempDir(), "out") + ":v1"
	anon := runWith(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, "", "pack", m.Dir, "--base", base, "--plain-http", "--output", out)
	if anon.code == 0 || !strings.Contains(anon.stderr, "--base \""+base+"\"") || !strings.Contains(anon.stderr, "modelcar login") {
		t.Errorf("pack on a base without credentials: %+v", anon)
	}
	r := runWith(t, []string{"DOCKER_CONFIG=" + t.TempDir()}, secret+"\n", "pack", m.Dir, "--base", base, "--plain-http", "-u", user, "--password-stdin", "--output", out, "--json")
	if r.code != 0 {
		t.Fatalf("pack on a base with credentials: %+v", r)
	}
	var res pack.Result
	if err := json.Unmarshal([]byte(r.stdout), &res); err != nil || res.BaseLayers == 0 {
		t.Errorf("pack --json: %v, base layers %d\n%s", err, res.BaseLayers, r.stdout)
	}
	if strings.Contains(r.stdout+r.stderr+anon.stdout+anon.stderr, secret) {
		t.Error("the password reached the output")
	}
}
