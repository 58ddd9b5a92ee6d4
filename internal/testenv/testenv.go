// Package testenv owns the shared end-to-end test environment: it finds the
// real peer tools modelcar is tested against (containerd/ctr, skopeo,
// docker-registry, tar), decides whether a missing tool skips or fails a test,
// and starts private, throw-away instances of those tools for one test.
//
// Everything it starts listens only on 127.0.0.1 or on unix sockets inside
// temporary directories, keeps its state (root, state, caches, configuration)
// in temporary directories, and is stopped by PID from t.Cleanup. Nothing
// global is touched: not /run/containerd, not /var/lib/containerd, not
// /var/lib/containers, not /etc/containers.
//
// Tools are installed by .ci/install-deps.sh (Debian packages containerd,
// skopeo, docker-registry and tar). CI sets MODELCAR_E2E=1, which turns every
// "tool missing" skip into a failure; see Require.
package testenv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// E2EEnv is the environment variable that makes missing tools fatal.
const E2EEnv = "MODELCAR_E2E"

// InstallScript is the script that installs every tool this package needs,
// relative to the repository root.
const InstallScript = ".ci/install-deps.sh"

// Require reports whether missing tools must fail tests instead of skipping
// them: true when MODELCAR_E2E=1 (CI sets it).
func Require() bool {
	return os.Getenv(E2EEnv) == "1"
}

// debianPackage names the Debian package that ships each tool.
var debianPackage = map[string]string{
	"containerd":      "containerd",
	"ctr":             "containerd",
	"skopeo":          "skopeo",
	"docker-registry": "docker-registry",
	"registry":        "docker-registry",
	"tar":             "tar",
}

// extraDirs are searched after PATH: root's tools live in sbin directories
// that a minimal PATH may miss.
var extraDirs = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// LookPath returns the absolute path of tool. When the tool cannot be found
// the test is skipped with a message naming the tool and how to install it,
// or fails with that message when Require() is true.
func LookPath(t testing.TB, tool string) string {
	t.Helper()
	if p, err := exec.LookPath(tool); err == nil {
		if abs, err := filepath.Abs(p); err == nil {
			return abs
		}
		return p
	}
	if !strings.ContainsRune(tool, '/') {
		for _, d := range extraDirs {
			p := filepath.Join(d, tool)
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				return p
			}
		}
	}
	hint := "run " + InstallScript
	if pkg, ok := debianPackage[tool]; ok {
		hint = fmt.Sprintf("run %s (Debian package %q)", InstallScript, pkg)
	}
	missing(t, fmt.Sprintf("testenv: %s not found in PATH; %s", tool, hint))
	return ""
}

// requireRoot skips (or fails, see Require) a test that needs root.
func requireRoot(t testing.TB, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		missing(t, fmt.Sprintf("testenv: %s needs root (running as uid %d)", what, os.Geteuid()))
	}
}

// missing skips t with msg, or fails it when Require() is true.
func missing(t testing.TB, msg string) {
	t.Helper()
	if Require() {
		t.Fatalf("%s (%s=1: missing tools fail instead of skipping)", msg, E2EEnv)
	}
	t.Skip(msg + " (set " + E2EEnv + "=1 to fail instead of skipping)")
}

// commandTimeout bounds every tool invocation so that a wedged peer fails the
// test instead of hanging it until the go test deadline.
const commandTimeout = 5 * time.Minute

// runResult is what one tool invocation produced.
type runResult struct {
	stdout, stderr []byte
	err            error
}

func (r runResult) combined() string {
	var b strings.Builder
	b.Write(r.stdout)
	if len(r.stderr) > 0 && len(r.stdout) > 0 && !bytes.HasSuffix(r.stdout, []byte("\n")) {
		b.WriteByte('\n')
	}
	b.Write(r.stderr)
	return b.String()
}

// run executes name with args and env (nil: inherit) and collects its output.
// It never fails the test; callers decide.
func run(ctx context.Context, env []string, name string, args ...string) runResult {
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, commandTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	err := cmd.Run()
	if err != nil && errors.Is(ctx.Err(), context.DeadlineExceeded) {
		err = fmt.Errorf("%w (timed out after %v)", err, commandTimeout)
	}
	return runResult{stdout: stdout.Bytes(), stderr: stderr.Bytes(), err: err}
}

// quoteArgs renders a command line for messages, secrets masked (Mask).
func quoteArgs(name string, args []string) string {
	parts := make([]string, 0, len(args)+1)
	for _, a := range append([]string{name}, args...) {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$") {
			a = fmt.Sprintf("%q", a)
		}
		parts = append(parts, a)
	}
	return Mask(strings.Join(parts, " "))
}

// tailFile returns at most the last n lines of the file at path.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = append([]string{fmt.Sprintf("... (%d earlier lines omitted)", len(lines)-n)}, lines[len(lines)-n:]...)
	}
	return strings.Join(lines, "\n")
}

// cleanupServiceDir registers the cleanup of the temporary directory dir of
// a service (kind: "registry", ...) whose log is logFile: the log's last
// lines go to t.Log when t failed (secrets masked), a copy is kept for the
// leak checks (keepLog), and dir is removed unless MODELCAR_KEEP_TMP is set.
// Register it before the service's stop, so that it runs after it.
func cleanupServiceDir(t testing.TB, kind, dir, logFile string, lines int) {
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("testenv: %s log %s (tail):\n%s", kind, logFile, Mask(tailFile(logFile, lines)))
		}
		keepLog(t, kind, logFile)
		if os.Getenv("MODELCAR_KEEP_TMP") != "" {
			t.Logf("testenv: keeping %s (MODELCAR_KEEP_TMP set)", dir)
			return
		}
		if err := os.RemoveAll(dir); err != nil {
			t.Logf("testenv: removing %s: %v", dir, err)
		}
	})
}

// shortTempDir makes a temporary directory whose path is short enough for
// unix socket addresses (108 bytes on Linux, including the socket's name),
// which t.TempDir's paths, built from the test's name, may not be.
func shortTempDir(t testing.TB, prefix string) string {
	t.Helper()
	base := os.TempDir()
	if len(base) > 40 {
		base = "/tmp"
	}
	dir, err := os.MkdirTemp(base, prefix)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return dir
}
