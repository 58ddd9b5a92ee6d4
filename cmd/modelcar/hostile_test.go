package main

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/modelcar/modelcar/internal/testenv"
)

// Hostile inputs to the CLI (issue 18): each logs a FAULT line in the
// hostile suite, which `make test-faults` counts. "failed-clearly" means
// refused with an error that names the input and what is wrong with it,
// nothing written.

// TestHostilePackSymlinkOutside: a model directory (as a git clone keeps
// it) whose tokenizer.model links to a file outside it. pack refuses,
// naming the link and its target and the flag that follows it anyway, and
// writes nothing; with --follow-external-symlinks it packs the file.
func TestHostilePackSymlinkOutside(t *testing.T) {
	for _, tc := range []struct{ name, target string }{
		{"absolute", "%s/shadow"},
		{"relative", "../secrets/shadow"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := genModel(t)
			secrets := filepath.Join(filepath.Dir(m.Dir), "secrets")
			os.MkdirAll(secrets, 0o755)
			if err := os.WriteFile(filepath.Join(secrets, "shadow"), []byte("root:$6$hash:19000::::::\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			target := strings.ReplaceAll(tc.target, "%s", secrets)
			if err := os.Symlink(target, filepath.Join(m.Dir, "tokenizer.model")); err != nil {
				t.Fatal(err)
			}
			parent := t.TempDir()
			r := run(t, nil, "pack", m.Dir, "--output", "oci:"+parent+"/out", "-q")
			if r.code != 1 || r.stdout != "" {
				t.Fatalf("pack of a link outside the model: %+v", r)
			}
			for _, want := range []string{"tokenizer.model: symlink to " + target, "outside the model directory", "--follow-external-symlinks"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			if ents, _ := os.ReadDir(parent); len(ents) != 0 {
				t.Errorf("refused pack left %d entries", len(ents))
			}
			t.Logf("FAULT name=hostile/pack-symlink-outside-%s/pack outcome=failed-clearly bytes_lost=0", tc.name)
			r = run(t, nil, "pack", m.Dir, "--output", "oci:"+parent+"/out", "-q", "--follow-external-symlinks", "--json")
			if r.code != 0 || !strings.Contains(r.stdout, `"tokenizer.model"`) {
				t.Errorf("pack --follow-external-symlinks: %+v", r)
			}
		})
	}
}

// cliChildEnv makes the test binary run the CLI on its arguments instead of
// the tests, and report its peak memory (cliChild).
const cliChildEnv = "MODELCAR_TEST_CLI_CHILD"

// cliChild runs the CLI when the test binary was started by runPeak, and
// then prints the process's peak resident memory (VmHWM: that of this
// program, unlike getrusage's ru_maxrss, which also counts the parent's
// memory the child shared until exec).
func cliChild() (int, bool) {
	if os.Getenv(cliChildEnv) == "" {
		return 0, false
	}
	code := execute(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading VmHWM:", err)
		return 3, true
	}
	for _, line := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			fmt.Fprintln(os.Stderr, "VmHWM:", strings.TrimSpace(v))
		}
	}
	return code, true
}

// runPeak runs modelcar (as the test binary, see cliChild) with args and
// returns its result and peak resident memory in bytes.
func runPeak(t *testing.T, args ...string) (result, int64) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, args...)
	var so, se bytes.Buffer
	cmd.Stdout, cmd.Stderr = &so, &se
	cmd.Env = append(os.Environ(), cliChildEnv+"=1", "XDG_CACHE_HOME="+t.TempDir())
	err = cmd.Run()
	r := result{stdout: so.String()}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	stderr, hwm, ok := strings.Cut(se.String(), "VmHWM:")
	r.stderr = stderr
	var kb int64
	if _, err := fmt.Sscanf(strings.TrimSpace(hwm), "%d kB", &kb); !ok || err != nil {
		t.Fatalf("no VmHWM from the child (%v): %s", err, se.String())
	}
	return r, kb << 10
}

// hostileJSONRSSBound is the peak resident memory allowed to a pack of a
// 1 MiB model beside one hostile JSON file of up to 80 MiB. The same pack
// of the model alone peaks at 45-52 MiB (measured; the test binary that
// runs it is larger than modelcar); before JSON was validated in bounded
// memory, 64 MiB of nested brackets took 2.2 GiB, the 64 MiB string 246 MiB
// and the 80 MiB index 334 MiB.
const hostileJSONRSSBound = 96 << 20

// TestHostilePackJSON: JSON files crafted to make validation take memory
// in proportion to their size (64 MiB of nested brackets, a 64 MiB string,
// an index whose metadata nests deeply, an index over the size limit) are
// refused (or, for the string, packed) with the pack's peak memory under
// hostileJSONRSSBound.
func TestHostilePackJSON(t *testing.T) {
	const size = 64 << 20
	for _, tc := range []struct {
		name, file string
		content    func(w *bufio.Writer)
		want       string // "" when the pack succeeds
	}{
		{"alone", "", nil, ""},
		{"nested-arrays", "tokenizer.json", func(w *bufio.Writer) {
			for range size {
				w.WriteByte('[')
			}
		}, "tokenizer.json: invalid JSON at byte 10000: nested deeper than 10000 levels"},
		{"huge-string", "tokenizer.json", func(w *bufio.Writer) {
			w.WriteString(`{"merges": "`)
			for range size {
				w.WriteByte('a')
			}
			w.WriteString(`"}`)
		}, ""},
		{"index-nested-metadata", "model.safetensors.index.json", func(w *bufio.Writer) {
			w.WriteString(`{"metadata": {"x": `)
			for range 16 << 20 {
				w.WriteByte('[')
			}
		}, "model.safetensors.index.json: metadata: x: invalid JSON at byte 10019: nested deeper than 10000 levels"},
		{"index-over-limit", "model.safetensors.index.json", func(w *bufio.Writer) {
			w.WriteString(`{"weight_map": {`)
			for i := range size / 40 {
				fmt.Fprintf(w, `"model.layers.%d.weight": "model.safetensors",`, i)
			}
			w.WriteString(`"x": "model.safetensors"}}`)
		}, "model.safetensors.index.json: shard index is 84452703 bytes, over the 64 MiB limit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := genModel(t)
			if tc.content != nil {
				f, err := os.Create(filepath.Join(m.Dir, tc.file))
				if err != nil {
					t.Fatal(err)
				}
				w := bufio.NewWriter(f)
				tc.content(w)
				if err := w.Flush(); err != nil {
					t.Fatal(err)
				}
				f.Close()
			}
			parent := t.TempDir()
			r, peak := runPeak(t, "pack", m.Dir, "--output", "oci:"+parent+"/out", "-q", "--no-cache")
			t.Logf("pack with %s: peak RSS %.1f MiB; %s", tc.name, float64(peak)/(1<<20), strings.TrimSpace(r.stderr+r.stdout))
			if tc.want == "" {
				if r.code != 0 {
					t.Fatalf("pack: %+v", r)
				}
			} else {
				if r.code != 1 {
					t.Fatalf("pack of %s: %+v", tc.name, r)
				}
				if !strings.Contains(r.stderr, tc.want) {
					t.Errorf("error lacks %q: %s", tc.want, r.stderr)
				}
				if ents, _ := os.ReadDir(parent); len(ents) != 0 {
					t.Errorf("refused pack left %d entries", len(ents))
				}
			}
			if peak > hostileJSONRSSBound {
				t.Errorf("pack with %s: peak RSS %d MiB, over the bound of %d MiB", tc.name, peak>>20, hostileJSONRSSBound>>20)
			}
			if tc.content == nil {
				return
			}
			outcome := "failed-clearly"
			if tc.want == "" {
				outcome = "survived"
			}
			t.Logf("FAULT name=hostile/pack-json-%s/pack outcome=%s bytes_lost=0 peak_rss=%d", tc.name, outcome, peak)
		})
	}
}

// TestHostileRegistryEchoesCredentials: a registry (in front of a real one,
// testenv.Reflector) that echoes the request's credentials in its error
// bodies: the Authorization header (basic, or the bearer token of a token
// registry), the password and "user:password" it decodes to, in JSON and
// as plain text. login, push (a manifest refused: oras-go's error; a blob
// upload refused: modelcar's own), pull, verify and pack --base (go-
// containerregistry's) fail naming the registry's answer, with every
// credential redacted and the quoted body capped; the outputs are logged,
// so that leakcheck checks them too under make test-faults.
func TestHostileRegistryEchoesCredentials(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: real registries behind a reflecting proxy")
	}
	const user = "ci-bot"
	m := genModel(t)
	layout := "oci:" + filepath.Join(t.TempDir(), "oci") + ":v1"
	if r := run(t, nil, "pack", m.Dir, "--output", layout, "-q"); r.code != 0 {
		t.Fatalf("pack: %+v", r)
	}
	for _, kind := range []string{"basic", "token"} {
		t.Run(kind, func(t *testing.T) {
			secret := testenv.NewSecret(t, user)
			var reg *testenv.Registry
			if kind == "basic" {
				reg = testenv.StartRegistry(t, testenv.WithHtpasswd(user, secret))
			} else {
				reg = testenv.StartRegistry(t, testenv.WithTokenAuth(user, secret))
			}
			if r := runWith(t, nil, secret+"\n", "push", layout, reg.Ref("models/m")+":v1", "--plain-http", "-u", user, "--password-stdin", "-q"); r.code != 0 {
				t.Fatalf("push: %+v", r)
			}
			authed := func(method, path string) func(*http.Request) bool {
				return func(r *http.Request) bool {
					return r.Header.Get("Authorization") != "" && (method == "" || r.Method == method) && strings.Contains(r.URL.Path, path)
				}
			}
			stdin := []string{"-u", user, "--password-stdin"}
			for _, tc := range []struct {
				op     string
				status int
				pick   func(*http.Request) bool
				args   func(addr string) []string
			}{
				{"login", http.StatusUnauthorized, authed(http.MethodGet, "/v2/"), func(a string) []string { return []string{"login", a} }},
				{"push", http.StatusBadRequest, authed(http.MethodPut, "/manifests/"), func(a string) []string { return []string{"push", layout, a + "/models/m:v2"} }},
				{"push-upload", http.StatusBadRequest, authed("", "/blobs/uploads/"), func(a string) []string { return []string{"push", layout, a + "/fresh/m:v1"} }},
				{"pull", http.StatusForbidden, authed(http.MethodGet, "/manifests/"), func(a string) []string {
					return []string{"pull", a + "/models/m:v1", filepath.Join(t.TempDir(), "pulled")}
				}},
				{"verify", http.StatusForbidden, authed(http.MethodGet, "/blobs/"), func(a string) []string {
					return []string{"verify", a + "/models/m:v1", "--against", m.Dir}
				}},
				{"pack-base", http.StatusForbidden, authed(http.MethodGet, "/manifests/"), func(a string) []string {
					return []string{"pack", m.Dir, "--base", a + "/models/m:v1", "--output", "oci:" + filepath.Join(t.TempDir(), "b")}
				}},
			} {
				t.Run(tc.op, func(t *testing.T) {
					refl := testenv.StartReflector(t, reg.Addr, tc.status, tc.pick)
					args := append(tc.args(refl.Addr), "-q")
					if tc.op == "login" {
						args = args[:len(args)-1]
					}
					in, env := "", []string{"DOCKER_CONFIG=" + t.TempDir()}
					// --base goes through the transfer layer too: the same
					// credentials and --plain-http as every other reference.
					in = secret + "\n"
					args = append(args, stdin...)
					args = append(args, "--plain-http")
					r := runWith(t, env, in, args...)
					out := r.stdout + r.stderr
					if r.code != 1 {
						t.Errorf("exit %d, want 1", r.code)
					}
					var leaks []string
					for _, f := range testenv.SecretForms(secret, user) {
						if strings.Contains(out, f[1]) {
							leaks = append(leaks, f[0])
						}
					}
					for _, tok := range reg.IssuedTokens() {
						if strings.Contains(out, tok) {
							leaks = append(leaks, "an issued token")
						}
					}
					if strings.Contains(out, testenv.SecretMarker) || strings.Contains(out, user+":") {
						leaks = append(leaks, "the marker or user:password")
					}
					if len(leaks) > 0 {
						t.Errorf("the output shows credentials: %v\n%s", leaks, testenv.Mask(out))
					} else {
						// As printed: leakcheck searches it too.
						t.Logf("modelcar %s: exit %d\n%s", strings.Join(args, " "), r.code, out)
					}
					if !strings.Contains(out, "[redacted]") {
						t.Errorf("the registry's echo is not quoted, redacted (did the reflector answer?)")
					}
					if len(r.stderr) > 2048 {
						t.Errorf("stderr is %d bytes: the quoted body is not capped", len(r.stderr))
					}
					t.Logf("FAULT name=hostile/registry-echoes-credentials-%s/%s outcome=failed-clearly bytes_lost=0", kind, tc.op)
				})
			}
		})
	}
}
