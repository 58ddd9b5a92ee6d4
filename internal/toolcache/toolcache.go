// Package toolcache owns the cache of pinned Go tools that modelcar's tests
// and test cluster run: binaries built from source, with `go build`, in the
// nested modules under tools/ at the version each module's go.mod requires,
// and kept as NAME-VERSION in one directory, $MODELCAR_TOOLS_BIN or
// ~/.cache/modelcar-testenv/tools.
//
// It owns where the cache is (Dir, Path), how a binary is named in it
// (Name), how a pinned version is read from a go.mod (RequiredVersion), how
// `go build` is run for it (FindGo, BuildEnv, GoCommand) and how a build is
// installed (Install: once per machine, under a lock file, by rename). What
// to build, with which flags, and what to tell the user belong to the
// callers: internal/testenv (crane, oras, toxiproxy-server, for tests) and
// internal/testcluster (the Kubernetes binaries, for tests and for
// internal/cmd/testcluster). .ci/install-deps.sh fills the same cache with
// the same names.
//
// Errors are plain errors: the package knows nothing of testing.TB.
package toolcache

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"time"
)

// DirEnv names the directory the binaries are cached in; when unset it is
// ~/.cache/modelcar-testenv/tools.
const DirEnv = "MODELCAR_TOOLS_BIN"

// Dir returns the binary cache directory: $MODELCAR_TOOLS_BIN (made
// absolute) or ~/.cache/modelcar-testenv/tools. It does not create it.
func Dir() (string, error) {
	if d := os.Getenv(DirEnv); d != "" {
		return filepath.Abs(d)
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no %s and no home directory: %w", DirEnv, err)
	}
	return filepath.Join(home, ".cache", "modelcar-testenv", "tools"), nil
}

// Name is the file name of tool at version in the cache: NAME-VERSION.
func Name(tool, version string) string {
	return tool + "-" + version
}

// Path returns where tool at version is cached (whether or not it is there).
func Path(tool, version string) (string, error) {
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, Name(tool, version)), nil
}

// Install makes the executable path exist, calling build to make it unless
// it already does. build writes the binary to tmp (path.tmp-PID, removed
// afterwards whatever happens), which Install then renames onto path. The
// directory of path is created if need be. Builds of one path are
// serialised across processes by an exclusive lock on path.lock, and path is
// looked for again once the lock is held, so concurrent callers build it
// once. built reports whether this call built it.
func Install(path string, build func(tmp string) error) (built bool, err error) {
	if IsExecutable(path) {
		return false, nil
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return false, err
	}
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return false, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return false, fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if IsExecutable(path) { // another process built it while we waited
		return false, nil
	}
	tmp := fmt.Sprintf("%s.tmp-%d", path, os.Getpid())
	defer os.Remove(tmp)
	if err := build(tmp); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, path); err != nil {
		return false, err
	}
	return true, nil
}

// GoCommand is `goBin args...` run in the module directory dir with
// BuildEnv, bounded by ctx (and 10 seconds more for its output to drain).
// Its stdout and stderr are for the caller to set.
func GoCommand(ctx context.Context, goBin, dir string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, goBin, args...)
	cmd.Dir = dir
	cmd.Env = BuildEnv()
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// BuildEnv is the environment of `go build` for a pinned tool: the
// caller's, building for this machine (no GOOS/GOARCH from a cross test
// run), without cgo (static binaries, no C compiler needed), without a
// workspace, and with -mod=mod so that a go.sum missing a line is completed
// rather than fatal. Other GOFLAGS are kept.
func BuildEnv() []string {
	var env []string
	goflags := []string{"-mod=mod"}
	for _, kv := range os.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		switch k {
		case "GOOS", "GOARCH", "GOARM", "GOAMD64", "CGO_ENABLED", "GOWORK":
			continue
		case "GOFLAGS":
			for _, f := range strings.Fields(v) {
				if !strings.HasPrefix(f, "-mod=") && !strings.HasPrefix(f, "-modfile=") {
					goflags = append(goflags, f)
				}
			}
			continue
		}
		env = append(env, kv)
	}
	return append(env, "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS="+strings.Join(goflags, " "))
}

// FindGo returns the go command: the one in PATH (under go test, GOROOT/bin
// is first in it), made absolute, else the one in GOROOT.
func FindGo() (string, error) {
	if p, err := exec.LookPath("go"); err == nil {
		return filepath.Abs(p)
	}
	p := filepath.Join(runtime.GOROOT(), "bin", "go")
	if IsExecutable(p) {
		return p, nil
	}
	return "", errors.New("go command not found in PATH")
}

// RequiredVersion returns the version the go.mod at gomod requires of module.
// It understands the go.mod require syntax, both single-line and block.
func RequiredVersion(gomod, module string) (string, error) {
	f, err := os.Open(gomod)
	if err != nil {
		return "", err
	}
	defer f.Close()
	inBlock := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if i := strings.Index(line, "//"); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		switch {
		case len(fields) == 0:
			continue
		case inBlock && fields[0] == ")":
			inBlock = false
			continue
		case fields[0] == "require" && len(fields) == 2 && fields[1] == "(":
			inBlock = true
			continue
		case fields[0] == "require":
			fields = fields[1:]
		case !inBlock:
			continue
		}
		if len(fields) == 2 && fields[0] == module {
			return fields[1], nil
		}
	}
	if err := sc.Err(); err != nil {
		return "", err
	}
	return "", fmt.Errorf("%s does not require %s", gomod, module)
}

// IsExecutable reports whether p is a regular file with an execute bit set.
func IsExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}
