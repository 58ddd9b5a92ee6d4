package testenv

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/modelcar/modelcar/internal/toolcache"
)

// ToolsBinEnv names the directory peer binaries are cached in; when unset it
// is ~/.cache/modelcar-testenv/tools. .ci/install-deps.sh fills the same
// directory; internal/toolcache owns it.
const ToolsBinEnv = toolcache.DirEnv

// ToolsModuleDir is the module that pins the peer tools (tool directives in
// its go.mod), relative to the repository root.
const ToolsModuleDir = "tools"

// peerTool is a client modelcar is tested against that is built from source
// at the version tools/go.mod pins, rather than installed from Debian.
type peerTool struct {
	pkg    string // main package to build
	module string // module whose version tools/go.mod pins
	// version is used when tools/go.mod cannot be found (a cached binary
	// of this version may still exist). Keep it equal to tools/go.mod.
	version string
}

var peerTools = map[string]peerTool{
	"crane": {pkg: "github.com/google/go-containerregistry/cmd/crane", module: "github.com/google/go-containerregistry", version: "v0.22.1"},
	"oras":  {pkg: "oras.land/oras/cmd/oras", module: "oras.land/oras", version: "v1.3.6"},
}

// peerBuildTimeout bounds one cold `go build` of a peer tool (oras, with its
// dependencies, takes a few minutes on two cores with an empty build cache).
const peerBuildTimeout = 15 * time.Minute

// peerBuild is the once-per-process result of finding or building one tool.
type peerBuild struct {
	once sync.Once
	path string
	err  error
	skip string // non-empty: the tool cannot be had here (reason)
}

var (
	peerBuildsMu sync.Mutex
	peerBuilds   = map[string]*peerBuild{}
)

// PeerBinary returns the path of the pinned peer tool name ("crane" or
// "oras"). The binary is cached as <dir>/<name>-<version>, dir being
// $MODELCAR_TOOLS_BIN or ~/.cache/modelcar-testenv/tools and version the one
// tools/go.mod requires for the tool's module. When no cached binary exists it
// is built once per process (and once per machine: builds are serialised by
// a lock file and installed by rename) with `go build -o` in the tools module,
// found by walking up from the current directory to the repository root.
//
// A missing go command or tools module skips the test (fails it under
// MODELCAR_E2E=1); a failing build fails it.
func PeerBinary(t testing.TB, name string) string {
	t.Helper()
	tool, ok := peerTools[name]
	if !ok {
		t.Fatalf("testenv: unknown peer tool %q (known: crane, oras)", name)
	}
	peerBuildsMu.Lock()
	b := peerBuilds[name]
	if b == nil {
		b = &peerBuild{}
		peerBuilds[name] = b
	}
	peerBuildsMu.Unlock()
	b.once.Do(func() { b.path, b.skip, b.err = findOrBuildPeer(t, name, tool) })
	if b.skip != "" {
		missing(t, b.skip)
	}
	if b.err != nil {
		t.Fatalf("testenv: %v", b.err)
	}
	return b.path
}

// findToolsModule walks up from the working directory (a package directory
// under go test) to the repository root, looking for tools/go.mod.
func findToolsModule() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if fi, err := os.Stat(filepath.Join(dir, ToolsModuleDir, "go.mod")); err == nil && fi.Mode().IsRegular() {
			return filepath.Join(dir, ToolsModuleDir), nil
		}
		// The repository root is the last place to look.
		if _, err := os.Stat(filepath.Join(dir, ".git")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			break
		}
		dir = parent
	}
	return "", fmt.Errorf("no %s/go.mod above the working directory", ToolsModuleDir)
}

// findOrBuildPeer returns the cached binary for tool, building it first when
// it is missing. skip is set when it cannot be built here for want of tools.
func findOrBuildPeer(t testing.TB, name string, tool peerTool) (path, skip string, err error) {
	t.Helper()
	return buildPinned(t, name, tool.module, tool.version, findToolsModule, func(_, out string) []string {
		return []string{"build", "-trimpath", "-o", out, tool.pkg}
	})
}

// peerSandbox is the private HOME and DOCKER_CONFIG one test's peer tools
// share, so that `crane auth login` or `oras login` in a test are seen by its
// later calls and by nothing else.
type peerSandbox struct {
	env []string
}

var (
	peerSandboxesMu sync.Mutex
	peerSandboxes   = map[testing.TB]*peerSandbox{}
)

// sandboxFor returns t's peer sandbox, making it on first use.
func sandboxFor(t testing.TB) *peerSandbox {
	t.Helper()
	peerSandboxesMu.Lock()
	defer peerSandboxesMu.Unlock()
	if s := peerSandboxes[t]; s != nil {
		return s
	}
	dir := t.TempDir()
	home := filepath.Join(dir, "home")
	dockerCfg := filepath.Join(dir, "docker")
	xdgConfig := filepath.Join(home, ".config")
	xdgCache := filepath.Join(home, ".cache")
	tmp := filepath.Join(dir, "tmp")
	for _, d := range []string{home, dockerCfg, xdgConfig, xdgCache, tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			t.Fatalf("testenv: %v", err)
		}
	}
	if err := os.WriteFile(filepath.Join(dockerCfg, "config.json"), []byte("{}\n"), 0o600); err != nil {
		t.Fatalf("testenv: %v", err)
	}
	overrides := map[string]string{
		"HOME":            home,
		"DOCKER_CONFIG":   dockerCfg,
		"XDG_CONFIG_HOME": xdgConfig,
		"XDG_CACHE_HOME":  xdgCache,
		"TMPDIR":          tmp,
	}
	// Also dropped: credentials and caches from elsewhere.
	env := sandboxEnv(overrides, "REGISTRY_AUTH_FILE", "ORAS_CACHE", "XDG_RUNTIME_DIR")
	s := &peerSandbox{env: env}
	peerSandboxes[t] = s
	t.Cleanup(func() {
		peerSandboxesMu.Lock()
		delete(peerSandboxes, t)
		peerSandboxesMu.Unlock()
	})
	return s
}

// RunPeer runs the pinned peer tool name ("crane" or "oras") with args in the
// test's peer sandbox and returns its stdout, stderr and error without
// failing the test: for tests that expect the tool to fail.
func RunPeer(t testing.TB, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	bin := PeerBinary(t, name)
	r := run(context.Background(), sandboxFor(t).env, bin, args...)
	return string(r.stdout), string(r.stderr), r.err
}

// runPeer is RunPeer that fails the test with the tool's output on error.
func runPeer(t testing.TB, name string, args ...string) string {
	t.Helper()
	stdout, stderr, err := RunPeer(t, name, args...)
	if err != nil {
		t.Fatalf("testenv: %s: %v\n%s%s", quoteArgs(name, args), err, stdout, stderr)
	}
	return stdout
}

// Crane runs the pinned crane (see PeerBinary) with args and returns its
// stdout, or fails the test with its stdout and stderr. HOME, DOCKER_CONFIG
// and XDG directories point into a temporary directory shared by the test's
// Crane and Oras calls, so no credentials or configuration leak in or out.
// For the plain-HTTP registries StartRegistry starts pass --insecure.
func Crane(t testing.TB, args ...string) string {
	t.Helper()
	return runPeer(t, "crane", args...)
}

// Oras runs the pinned oras (see PeerBinary) like Crane runs crane. For the
// plain-HTTP registries StartRegistry starts pass --plain-http.
func Oras(t testing.TB, args ...string) string {
	t.Helper()
	return runPeer(t, "oras", args...)
}
