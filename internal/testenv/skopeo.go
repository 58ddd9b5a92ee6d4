package testenv

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// skopeoSandbox is a private configuration and scratch area for skopeo.
type skopeoSandbox struct {
	dir  string   // root of the sandbox
	args []string // global flags, before the subcommand
	env  []string // environment
}

// newSkopeoSandbox lays out a private skopeo configuration under a fresh
// test temporary directory:
//
//   - --tmpdir: big temporary files (oci-archive extraction, layer buffering);
//   - --policy: a policy.json accepting anything (tests sign nothing);
//   - --registries.d: an empty lookaside/sigstore configuration directory;
//   - CONTAINERS_REGISTRIES_CONF: a registries.conf with no search
//     registries, no mirrors and no aliases, so /etc/containers is not read;
//   - REGISTRY_AUTH_FILE, DOCKER_CONFIG, HOME, XDG_*: empty credentials;
//   - the blob info cache: containers/image keeps it in
//     /var/lib/containers/cache for euid 0 and skopeo has no flag for it.
//     _CONTAINERS_ROOTLESS_UID (which containers/image reads in place of
//     the euid for exactly this decision) makes it use
//     $XDG_DATA_HOME/containers/cache instead, inside the sandbox. It changes
//     nothing else for the transports used here (docker, oci, oci-archive,
//     dir); containers-storage must not be used through this helper.
func newSkopeoSandbox(t testing.TB) skopeoSandbox {
	t.Helper()
	dir := t.TempDir()
	mk := func(parts ...string) string {
		p := filepath.Join(append([]string{dir}, parts...)...)
		if err := os.MkdirAll(p, 0o700); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		return p
	}
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatalf("testenv: %v", err)
		}
		return p
	}
	tmp := mk("tmp")
	registriesD := mk("registries.d")
	home := mk("home")
	data := mk("data")
	runtimeDir := mk("run")
	config := mk("config")
	dockerCfg := mk("docker")
	policy := write("policy.json", `{"default":[{"type":"insecureAcceptAnything"}]}`+"\n")
	registries := write("registries.conf", "unqualified-search-registries = []\nshort-name-mode = \"disabled\"\n")
	auth := write("auth.json", "{}\n")
	write("docker/config.json", "{}\n")
	containersConf := write("containers.conf", "")

	overrides := map[string]string{
		"HOME":                       home,
		"XDG_DATA_HOME":              data,
		"XDG_RUNTIME_DIR":            runtimeDir,
		"XDG_CONFIG_HOME":            config,
		"DOCKER_CONFIG":              dockerCfg,
		"REGISTRY_AUTH_FILE":         auth,
		"CONTAINERS_REGISTRIES_CONF": registries,
		"CONTAINERS_CONF":            containersConf,
		"TMPDIR":                     tmp,
		"_CONTAINERS_ROOTLESS_UID":   "65534",
	}
	env := sandboxEnv(overrides, "CONTAINERS_STORAGE_CONF", "CONTAINERS_POLICY_JSON", "_CONTAINERS_USERNS_CONFIGURED")
	return skopeoSandbox{
		dir:  dir,
		args: []string{"--tmpdir", tmp, "--policy", policy, "--registries.d", registriesD},
		env:  env,
	}
}

// blobInfoCacheDir is where skopeo keeps its blob info cache in this sandbox.
func (s skopeoSandbox) blobInfoCacheDir() string {
	return filepath.Join(s.dir, "data", "containers", "cache")
}

// run runs skopeo with the sandbox's global flags and environment, returning
// stdout or failing the test with stdout and stderr.
func (s skopeoSandbox) run(t testing.TB, bin string, args ...string) string {
	t.Helper()
	full := append(append([]string{}, s.args...), args...)
	r := run(context.Background(), s.env, bin, full...)
	if r.err != nil {
		t.Fatalf("testenv: %s: %v\n%s", quoteArgs("skopeo", full), r.err, r.combined())
	}
	return string(r.stdout)
}

// Skopeo runs skopeo with args and returns its stdout, or fails the test
// with stdout and stderr. It runs with a private --tmpdir, policy,
// registries.d, registries.conf, credentials and blob info cache under the
// test's temporary directory, so nothing global is read or written. The
// registries.conf knows no insecure registries: for the plain-HTTP
// registries tests start on 127.0.0.1, pass --tls-verify=false (or
// --src-tls-verify/--dest-tls-verify) explicitly.
func Skopeo(t testing.TB, args ...string) string {
	t.Helper()
	bin := LookPath(t, "skopeo")
	return newSkopeoSandbox(t).run(t, bin, args...)
}
